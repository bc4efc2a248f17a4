"""The workdir of a run: what jaxae writes there, config safety on resume, and the resume policy.

One run, or one sweep group under `groups/<name>/`:
  config.json     the resolved config
  members.json    [{setting_index, setting, seed}] in member order
  metrics.jsonl   one record per epoch (report.py)
  summary.json    final train and held-out metrics per member, mean/std per setting
  checkpoints/    orbax steps (checkpoints.py)
  figures/        loss curves, reconstructions, sweep figures (eval_*.png: python -m jaxae.evaluate)
  tensorboard/    TensorBoard event files (tracking.py); wandb.json: the Weights & Biases run id
  evaluation.json, export/   what python -m jaxae.evaluate wrote
jaxae deletes only these names (`clear`), and only on `--fresh`.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Callable


from jaxae import checkpoints, configs, report

CONFIG = "config.json"
MEMBERS = "members.json"
NORMALIZER = "normalizer.json"
WRITTEN = (CONFIG, MEMBERS, NORMALIZER, report.METRICS, report.SUMMARY, checkpoints.CHECKPOINT_DIR, "figures",
           "groups", "sweep_summary.json", CONFIG + ".tmp", report.METRICS + ".tmp", "tensorboard", "wandb.json",
           "evaluation.json", "export")


def clear(workdir: str) -> None:
  """Removes what jaxae wrote in `workdir` (never anything else)."""
  for name in WRITTEN:
    path = os.path.join(workdir, name)
    if os.path.isdir(path):
      shutil.rmtree(path)
    elif os.path.exists(path):
      os.remove(path)


def write_config(workdir: str, config, members: list[dict], normalizer=None) -> None:
  """config.json (replaced atomically: a kill never leaves it cut short), members.json, and the fitted
  data.Normalizer (normalizer.json, when data.normalize is not 'none'; checkpoints hold it too)."""
  path = os.path.join(workdir, CONFIG)
  with open(path + ".tmp", "w") as f:
    f.write(config.to_json(indent=1))
  os.replace(path + ".tmp", path)
  with open(os.path.join(workdir, MEMBERS), "w") as f:
    json.dump(members, f, indent=1)
  if normalizer is not None:
    with open(os.path.join(workdir, NORMALIZER), "w") as f:
      f.write(normalizer.to_json())


def config_from_json(path: str) -> dict[str, Any]:
  """The flattened config saved at `path` (configs.flatten)."""
  with open(path) as f:
    return configs.flatten(configs.from_dict(json.load(f)))


def saved_config(mngr, config_path: str) -> dict[str, Any] | None:
  """Flattened config of the run in a workdir: from the latest readable checkpoint's metadata, else from
  `config_path` (config.json is rewritten at each start, so a checkpoint is the better witness).
  None when there is no checkpoint."""
  steps = sorted(mngr.all_steps(), reverse=True)
  for step in steps:
    try:
      return configs.flatten(configs.from_dict(checkpoints.read_meta(mngr, step)["config"]))
    except (checkpoints.CheckpointError, KeyError):
      continue  # damaged: restoring reports it (or falls back)
  if steps and os.path.exists(config_path):
    try:
      return config_from_json(config_path)
    except ValueError:  # cut short by a kill
      return None
  return None


def _unused_keys(flat: dict[str, Any]) -> set[str]:
  """Keys declared only by variants other than the config's own: they change nothing in its run."""
  from jaxae import variants

  try:
    own = set(variants.get(flat.get("variant")).options)
  except KeyError:  # a variant this process has not registered: compare every key
    return set()
  return {k for v in variants.all_variants() for k in v.options} - own


def incompatible_keys(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
  """Dotted config keys whose change alters what a checkpoint means (everything not RESUME_SAFE).

  Keys of other variants are ignored (a vanilla run does not read loss.beta).
  """
  ignored = _unused_keys(saved) & _unused_keys(current)
  keys = sorted((set(saved) | set(current)) - ignored)
  safe = set(configs.RESUME_SAFE)
  if saved.get("optimizer.schedule") != "constant" or current.get("optimizer.schedule") != "constant":
    safe.discard("train.epochs")  # a decaying schedule's length: more epochs change every remaining rate
  return [k for k in keys if k not in safe and saved.get(k, "<absent>") != current.get(k, "<absent>")]


def check_compatible(saved: dict[str, Any], current: dict[str, Any], workdir: str) -> None:
  """Raises CheckpointMismatch listing the keys (saved -> now) that forbid resuming."""
  bad = incompatible_keys(saved, current)
  if bad:
    diffs = "; ".join(f"{k}: {saved.get(k, '<absent>')!r} -> {current.get(k, '<absent>')!r}" for k in bad)
    raise checkpoints.CheckpointMismatch(f"{workdir} holds a run with a different config ({diffs}). Use another "
                                         f"--workdir, or --fresh to discard that run and start over.")


def restore_latest(mngr, abstract, on_corrupt: str, say: Callable[[str], None] = print):
  """(state, meta) of the latest complete checkpoint, or None when there is none.

  A damaged latest step raises CheckpointError (with a hint) unless on_corrupt='previous', which falls
  back to earlier steps and deletes the damaged later ones. A mismatch (another config or version of
  jaxae) always raises: earlier steps would not match either.
  """
  steps = sorted(mngr.all_steps(), reverse=True)
  for i, step in enumerate(steps):
    try:
      restored = checkpoints.restore(mngr, step, abstract)
    except checkpoints.CheckpointMismatch:
      raise
    except checkpoints.CheckpointError as e:
      if on_corrupt != "previous" or i == len(steps) - 1:
        hint = (" Re-run with --on_corrupt=previous to resume from the previous complete step "
                f"({steps[i + 1]})." if i + 1 < len(steps) and on_corrupt != "previous" else "")
        raise checkpoints.CheckpointError(str(e) + hint) from None
      say(f"warning: {e}; falling back to step {steps[i + 1]}")
      continue
    for bad in steps[:i]:  # damaged later steps would shadow the new ones (and block saving their step)
      say(f"deleting damaged checkpoint step {bad}")
      mngr.delete(bad)
    return restored
  return None
