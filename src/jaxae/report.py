"""Metrics on disk and on screen: metrics.jsonl, summary.json and the final mean ± std table.

metrics.jsonl has one JSON record per epoch:
  {"epoch": 3, "step": 117, "seconds": 4.2,
   "train": {"loss": [one value per member], ...}, "eval": {...}}   (eval only on evaluation epochs)
"seconds" is the wall time from the previous epoch's results reaching the host to this epoch's (the loop
is pipelined, run.py). Members are listed once, in config.json's sibling `members.json`: [{"setting_index", "setting", "seed"}].
Diverged members (non-finite training loss) are excluded from means and listed in summary.json.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np

from jaxae import errors, files

METRICS = "metrics.jsonl"
SUMMARY = "summary.json"


def _jsonable(value):
  return _nan_to_none(np.asarray(value, dtype=np.float64).tolist())


def _to_json(obj):
  if isinstance(obj, dict):
    return {k: _to_json(v) for k, v in obj.items()}
  if isinstance(obj, (np.ndarray, np.generic, float)):
    return _jsonable(obj)
  return obj


def _nan_to_none(v):
  if isinstance(v, list):
    return [_nan_to_none(x) for x in v]
  return None if (v is None or not math.isfinite(v)) else v


def append_record(workdir: str, record: dict, write: bool = True) -> dict:
  """Appends one epoch record (NaN/Inf written as null, so the file stays strict JSON); returns it as JSON data.

  write=False only converts (processes other than 0 of a multi-host job keep the records in memory).
  """
  record = _to_json(record)
  if write:
    files.append_line(os.path.join(workdir, METRICS), json.dumps(record, allow_nan=False))
  return record


def _record_problem(record, epoch: int, num_members: int | None) -> str | None:
  """Why `record` is not the record jaxae writes for `epoch` (None when it is)."""
  if not isinstance(record, dict):
    return f"a JSON {type(record).__name__}, not a record"
  if record.get("epoch") != epoch or isinstance(record.get("epoch"), bool):
    return f"epoch {record.get('epoch')!r} where epoch {epoch} comes next"
  if not isinstance(record.get("step"), int):
    return f"step {record.get('step')!r} is not an integer"
  if not isinstance(record.get("train"), dict) or not isinstance(record.get("eval", {}), dict):
    return "'train' / 'eval' are not {metric: [value per member]}"
  for split in ("train", "eval"):
    for name, values in record.get(split, {}).items():
      if not isinstance(values, list) or not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
                                                 for v in values):
        return f"{split}/{name} is not a list of numbers"
      if num_members is not None and len(values) != num_members:
        return f"{split}/{name} has {len(values)} values for {num_members} members"
  return None


def read_records(workdir: str, num_members: int | None = None) -> list[dict]:
  """The epoch records of `workdir`'s metrics.jsonl ([] when there is none).

  A last line cut short by a kill (no newline, not JSON) is dropped. Anything else jaxae does not write
  (a line that is not JSON, epochs out of order or repeated, another number of members than
  `num_members`) raises WorkdirError naming the file and the line.
  """
  path = os.path.join(workdir, METRICS)
  if not os.path.lexists(path):
    return []
  text = files.read_text(path)
  lines = text.split("\n")
  records = []
  for i, line in enumerate(lines, 1):
    last = i == len(lines)
    if not line.strip():
      if last:
        break
      raise errors.WorkdirError(f"{path} line {i} is empty: not what jaxae wrote; restore the file, or use --fresh")
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      if last:  # cut short by a kill: the epoch is trained again from its checkpoint
        break
      raise errors.WorkdirError(f"{path} line {i} is not valid JSON ({e.msg}): not what jaxae wrote; restore the "
                                f"file, or use --fresh to discard the run") from None
    problem = _record_problem(record, len(records) + 1, num_members)
    if problem:
      raise errors.WorkdirError(f"{path} line {i}: {problem}: not what jaxae wrote (two runs on one workdir, or an "
                                f"edit); restore the file, or use --fresh to discard the run")
    records.append(record)
  return records


def truncate_records(workdir: str, last_epoch: int, write: bool = True) -> list[dict]:
  """Keeps records of epochs <= last_epoch (those the restored checkpoint has seen); returns them.

  write=False returns them without rewriting the file.
  """
  records = [r for r in read_records(workdir) if r["epoch"] <= last_epoch]
  if not write:
    return records
  files.write_text(os.path.join(workdir, METRICS), "".join(json.dumps(r, allow_nan=False) + "\n" for r in records))
  return records


def as_array(values) -> np.ndarray:
  """JSON list (nulls for non-finite) -> float64 array with NaN."""
  return np.asarray([np.nan if v is None else v for v in np.ravel(np.asarray(values, dtype=object))],
                    dtype=np.float64).reshape(np.shape(values))


def mean_std(values, healthy: np.ndarray | None = None) -> tuple[float, float]:
  """Mean and sample std (ddof=1; 0 for one value) over healthy members."""
  v = as_array(values)
  if healthy is not None:
    v = v[healthy]
  v = v[np.isfinite(v)] if v.ndim == 1 else v
  if v.size == 0:
    return float("nan"), float("nan")
  return float(np.mean(v)), float(np.std(v, ddof=1)) if v.size > 1 else 0.0


def summarize(records: list[dict], members: list[dict], diverged: dict[int, int], eval_name: str) -> dict:
  """summary.json: final train and held-out metrics per member, and per setting mean/std over healthy seeds.

  `diverged` maps member index -> first epoch with a non-finite training loss.
  """
  last_train = next((r["train"] for r in reversed(records) if "train" in r), {})
  last_eval = next((r["eval"] for r in reversed(records) if "eval" in r), {})
  settings = sorted({m["setting_index"] for m in members})
  out: dict[str, Any] = {
      "epochs": records[-1]["epoch"] if records else 0,
      "eval_data": eval_name,
      "members": members,
      "diverged": [{"member": i, "seed": members[i]["seed"], "setting": members[i]["setting"], "epoch": e}
                   for i, e in sorted(diverged.items())],
      "settings": [],
  }
  for g in settings:
    idx = [i for i, m in enumerate(members) if m["setting_index"] == g]
    healthy = np.asarray([i not in diverged for i in idx])
    entry = {"setting": members[idx[0]]["setting"], "seeds": [members[i]["seed"] for i in idx],
             "healthy_seeds": [members[i]["seed"] for i in idx if i not in diverged]}
    for split, last in (("train", last_train), ("eval", last_eval)):
      block = {}
      for name, values in last.items():
        v = as_array(values)
        if v.ndim != 1:
          continue
        per_seed = v[idx]
        m, s = mean_std(per_seed, healthy)
        block[name] = {"per_seed": _nan_to_none(per_seed.tolist()), "mean": _nan_to_none(m), "std": _nan_to_none(s)}
      entry[split] = block
    out["settings"].append(entry)
  return out


def write_summary(workdir: str, summary: dict) -> None:
  """summary.json, replaced atomically."""
  files.write_json(os.path.join(workdir, SUMMARY), summary, indent=1)


def _fmt(m, s) -> str:
  if m is None or not math.isfinite(m):
    return "diverged"
  return f"{m:.4g} ± {s:.2g}"


def format_table(summary: dict) -> str:
  """The final metrics: one row per seed, then mean ± std, for each setting (plain text)."""
  lines = []
  for entry in summary["settings"]:
    # Training loss and every held-out metric; summary.json has all training metrics too.
    cols = [("train", k) for k in entry["train"] if k == "loss"] + [("eval", k) for k in entry["eval"]]
    if entry["setting"]:
      lines.append("setting: " + ", ".join(f"{k}={v}" for k, v in entry["setting"].items()))
    header = ["seed"] + [f"{split}/{name}" for split, name in cols]
    rows = []
    for j, seed in enumerate(entry["seeds"]):
      row = [str(seed)]
      for split, name in cols:
        v = entry[split][name]["per_seed"][j]
        row.append("nan" if v is None else f"{v:.4g}")
      rows.append(row)
    rows.append(["mean±std"] + [_fmt(entry[s][n]["mean"], entry[s][n]["std"]) for s, n in cols])
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.rjust(w) for c, w in zip(r, widths))
    lines += [fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows] + [""]
  if summary["diverged"]:
    lines.append("diverged: " + ", ".join(f"seed {d['seed']} (epoch {d['epoch']})" for d in summary["diverged"]))
  return "\n".join(lines)


def parameter_lines(counts: dict[str, int]) -> str:
  """One line per module and one for the total: 'parameters  encoder  535,840'."""
  width = max(len(k) for k in counts)
  return "\n".join(f"parameters  {name:<{width}}  {n:>12,}" for name, n in counts.items())


def progress_line(epoch: int, epochs: int, train: dict, evals: dict | None, healthy: np.ndarray, seconds: float,
                  headline: str = "recon_mse") -> str:
  """One line per epoch: loss mean ± std across healthy members (and the held-out headline metric)."""
  m, s = mean_std(train["loss"], healthy)
  text = f"epoch {epoch:>3}/{epochs}  train loss {m:.5g} ± {s:.2g}"
  if evals:
    key = headline if headline in evals else "loss"
    em, es = mean_std(evals[key], healthy)
    text += f"  eval {key} {em:.5g} ± {es:.2g}"
  return text + f"  ({seconds:.1f}s)"
