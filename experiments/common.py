"""Shared pieces of the studies: flags, the reference protocol, cached training, result files, loss curves.

Every study trains through the public API only (`jaxae.train_and_evaluate`, then `jaxae.load_run`), on
the 5,000 embedded real MNIST training images, and evaluates on the official MNIST test set (10,000
images, `t10k-*.gz` in `--mnist_dir`). A workdir whose finished run has the same config is reused, so a
study re-run redraws its figures without retraining.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import os
import pathlib
import shutil
import time

import numpy as np

import jaxae
from jaxae import configs, plots, report, workdir as workdir_lib
from jaxae import data as data_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_MNIST = ROOT.parent / "shared" / "data" / "mnist"


def count(text: str) -> int:
  """argparse type: an integer >= 1, so a bad flag is argparse's one-line error, not a traceback from training."""
  return _integer(text, 1)


def count0(text: str) -> int:
  """argparse type: an integer >= 0 (0 meaning "the default" or "all", as the flag's help says)."""
  return _integer(text, 0)


def _integer(text: str, least: int) -> int:
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
  if value < least:
    raise argparse.ArgumentTypeError(f"{value} is below {least}")
  return value


def parse_args(description: str, argv=None, runs: bool = False, extra=None) -> argparse.Namespace:
  """--out, --smoke, --seeds, --mnist_dir (and --runs: workdirs of the bottleneck study to reuse).

  `extra(parser)` adds a study's own flags.
  """
  p = argparse.ArgumentParser(description=description)
  p.add_argument("--out", required=True, help="output folder (results.md, results.json, PNG figures, runs/)")
  p.add_argument("--smoke", action="store_true", help="tiny settings for CI: 2 seeds, 1 epoch, 256 images")
  p.add_argument("--seeds", type=count0, default=0, help="seeds per setting (default 5, smoke 2)")
  p.add_argument("--mnist_dir", default=os.environ.get("JAXAE_MNIST_DIR", str(DEFAULT_MNIST)),
                 help="folder with the MNIST test set t10k-*-ubyte.gz (env JAXAE_MNIST_DIR)")
  if runs:
    p.add_argument("--runs", default="", help="the bottleneck study's runs/ folder to reuse (else train here)")
  if extra is not None:
    extra(p)
  args = p.parse_args(argv)
  args.seeds = args.seeds or (2 if args.smoke else 5)
  os.makedirs(args.out, exist_ok=True)
  return args


def chosen(flag: str, known) -> list[str]:
  """The names of a comma-separated --models flag ('' = all of `known`); SystemExit naming any unknown one."""
  names = [m for m in flag.split(",") if m] or list(known)
  unknown = sorted(set(names) - set(known))
  if unknown:
    raise SystemExit(f"--models: unknown {unknown}; choose from {', '.join(known)}")
  return names


def load_config(name: str, setting: str = ""):
  """`configs/<name>.py`'s get_config() (get_config(setting): `--config=configs/<name>.py:<setting>`)."""
  spec = importlib.util.spec_from_file_location(f"configs.{name}", ROOT / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(setting) if setting else module.get_config()


def protocol(config, args, epochs: int = 30, eval_every: int = 5):
  """The reference protocol on `config`: embedded training images, MNIST test set, `args.seeds` seeds.

  --smoke shrinks it to 1 epoch on 256 training / 500 test images with a 784-64-32-d MLP.
  """
  config.data.source = "embedded"
  config.data.eval_source = f"idx:{args.mnist_dir}"
  config.data.eval_split = "test"
  config.num_seeds = args.seeds
  config.train.epochs = epochs
  config.train.eval_every = eval_every
  config.train.progress = False
  if args.smoke:
    config.train.epochs = 1
    config.train.eval_every = 1
    config.train.batch_size = 64
    config.train.figures = False
    config.data.max_train = 256
    config.data.max_eval = 500
    config.model.hidden = (64, 32)
    config.model.conv_channels = (4, 8)
  return config


def ensure_trained(config, workdir: str, reuse_only: bool = False) -> dict:
  """Trains `config` in `workdir` unless a finished run of the same config is there; returns its summary.

  reuse_only=True raises FileNotFoundError instead of training (a --runs folder is never overwritten).
  """
  configs.validate(config)
  summary_path = os.path.join(workdir, report.SUMMARY)
  config_path = os.path.join(workdir, "config.json")
  fresh = False
  if os.path.exists(config_path):
    saved, now = workdir_lib.config_from_json(config_path), configs.flatten(config)
    fresh = bool(workdir_lib.incompatible_keys(saved, now))
    if not fresh and os.path.exists(summary_path) and saved["train.epochs"] == now["train.epochs"]:
      with open(summary_path) as f:
        summary = json.load(f)
      if summary.get("epochs") == config.train.epochs:
        return summary
  if reuse_only:
    raise FileNotFoundError(f"{workdir} holds no finished run of this config (train it without --runs)")
  t0 = time.perf_counter()
  summary = jaxae.train_and_evaluate(config, workdir, fresh=fresh)
  stopped = [s for s in [summary, *summary.get("groups", {}).values()] if isinstance(s, dict) and "interrupted" in s]
  if stopped:  # a SIGINT/SIGTERM stopped training (checkpoint saved): stop the study too, not go on to the next run
    raise SystemExit(f"{workdir}: training stopped by {stopped[0]['interrupted']}; the same command resumes the study")
  with open(os.path.join(workdir, "train_seconds.json"), "w") as f:
    json.dump({"seconds": time.perf_counter() - t0}, f)
  return summary


def train_seeds(config, workdir: str, reuse_only: bool = False) -> list[tuple[str, int]]:
  """Trains every seed of `config` in one pass; returns [(workdir, seed)] of its members (setting 0)."""
  ensure_trained(config, workdir, reuse_only)
  return [(workdir, config.seed + i) for i in range(config.num_seeds)]


def read_config(path: str):
  """The config a run saved (`<workdir>/config.json`)."""
  import ml_collections
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def read_summary(workdir: str) -> dict:
  with open(os.path.join(workdir, report.SUMMARY)) as f:
    return json.load(f)


def member_values(pairs, split: str, metric: str, setting: int = 0) -> np.ndarray:
  """Final `split/metric` of each (workdir, seed) member of sweep setting `setting`, from summary.json."""
  out = []
  for workdir, seed in pairs:
    entry = read_summary(workdir)["settings"][setting]  # settings are listed by setting index
    out.append(report.as_array(entry[split][metric]["per_seed"])[entry["seeds"].index(seed)])
  return np.asarray(out, np.float64)


def code_scores(workdir: str, seed: int, train, test, held_out: dict[str, str]) -> tuple[dict, np.ndarray]:
  """One member's codes scored as the studies report them: ({seed, probe, knn, <name>: held-out metric for
  name, metric in held_out}, the (N, d) codes of `test`). Probe and 5-NN: jaxae.evaluate (fit on `train`)."""
  from jaxae import analysis
  from jaxae.evaluate import knn_accuracy, probe_accuracy

  run = jaxae.load_run(workdir, seed=seed)
  z_tr = analysis.encode(run.model, run.params, train.x, run.config)
  z_te = analysis.encode(run.model, run.params, test.x, run.config)
  row = {"seed": seed, "probe": probe_accuracy(z_tr, train.labels, z_te, test.labels),
         "knn": knn_accuracy(z_tr, train.labels, z_te, test.labels)}
  row.update({name: float(member_values([(workdir, seed)], "eval", metric)[0]) for name, metric in held_out.items()})
  return row, z_te


def merged_records(pairs) -> tuple[list[dict], list[dict]]:
  """(records, members) of the run that `pairs` (from train_seeds) come from."""
  workdir = pairs[0][0]
  with open(os.path.join(workdir, "members.json")) as f:
    return report.read_records(workdir), json.load(f)


def loss_curves(pairs, path: str, title: str, metric: str = "loss") -> str:
  """Training and held-out `metric` per epoch, mean line and ± std band over seeds (study 9)."""
  records, members = merged_records(pairs)
  return plots.loss_curves(records, members, path, metric=metric, title=title)


def test_split(args) -> data_lib.Split:
  """The MNIST test set: all 10,000 images; --smoke: the 500 that a smoke run's held-out metrics use.

  The subset follows jaxae.data.load's max_eval rule (tests check that metrics computed here and by the
  training program agree).
  """
  split = data_lib.idx_dataset(args.mnist_dir, "test")
  if args.smoke:
    split = data_lib.random_subset(split, 500, data_lib.EVAL_SUBSET_SEED)
  return split


def train_split(config) -> data_lib.Split:
  """Exactly the training images a config trained on (the embedded set, or its max_train subset)."""
  return data_lib.load(config.data).train


def fmt(mean: float, std: float, digits: int = 4) -> str:
  if mean is None or not math.isfinite(mean):
    return "n/a"
  return f"{mean:.{digits}f} ± {std:.{digits}f}"


def mean_std(values) -> tuple[float, float]:
  """Mean and sample std (ddof=1) of the finite values: the same statistic as summary.json's."""
  return report.mean_std(np.ravel(np.asarray(values, np.float64)))


def markdown_table(header: list[str], rows: list[list]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
  return "\n".join(lines) + "\n"


def write_csv(path: str, header: list[str], rows: list[list]) -> None:
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(rows)


def _plain(obj):
  if isinstance(obj, dict):
    return {str(k): _plain(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_plain(v) for v in obj]
  if isinstance(obj, np.ndarray):
    return _plain(obj.tolist())
  if isinstance(obj, (np.floating, float)):
    return float(obj) if math.isfinite(obj) else None
  if isinstance(obj, np.integer):
    return int(obj)
  return obj


def write_json(path: str, obj) -> None:
  with open(path, "w") as f:
    json.dump(_plain(obj), f, indent=1, allow_nan=False)


def write_results(out: str, title: str, sections: list[str], numbers: dict, started: float) -> None:
  """results.md (title, sections, wall time) and results.json (`numbers` + wall time) in `out`."""
  seconds = time.perf_counter() - started
  numbers = dict(numbers, wall_seconds=seconds)
  write_json(os.path.join(out, "results.json"), numbers)
  with open(os.path.join(out, "results.md"), "w") as f:
    f.write(f"# {title}\n\n" + "\n".join(sections) + f"\nWall time of this study: {seconds:.0f} s.\n")


def copy(src: str, dst: str) -> None:
  os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
  shutil.copyfile(src, dst)
