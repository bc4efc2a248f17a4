"""Command line: `python -m jaxae.main --config=configs/vae.py --workdir=runs/vae [--config.x=y ...]`.

Exit status: 0 on success; 2 for a bad config, dataset or checkpoint (one-line error, nothing trained);
1 when every member diverged; 128 + signal number after a polite stop (SIGINT 130, SIGTERM 143).
"""

from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

from jaxae import checkpoints, configs
from jaxae import data as data_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file in configs/.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and figures.")
_FRESH = flags.DEFINE_bool("fresh", False, "Discard what jaxae wrote in --workdir and start over.")
_ON_CORRUPT = flags.DEFINE_enum("on_corrupt", "fail", ["fail", "previous"],
                                "A damaged latest checkpoint: stop with an error, or resume from the previous one.")
flags.mark_flags_as_required(["config", "workdir"])


def _enable_compilation_cache() -> None:
  """jax's persistent compilation cache in ~/.cache/jaxae/xla unless the user configured one (or set
  JAXAE_COMPILATION_CACHE=''): a repeated or resumed run skips its compiles (startup 8.9 s -> 4.9 s,
  benchmarks/RESULTS.md)."""
  import os

  import jax

  path = os.environ.get("JAXAE_COMPILATION_CACHE", os.path.expanduser("~/.cache/jaxae/xla"))
  if path and not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def main(argv) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  import signal

  from absl import logging

  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  from jaxae import distributed

  distributed.maybe_initialize()  # a multi-host job (Slurm, TPU pod, JAXAE_COORDINATOR): before any device use
  _enable_compilation_cache()
  from jaxae import run as run_lib  # Imported after flag parsing: `--help` stays fast.

  try:
    summary = run_lib.train_and_evaluate(_CONFIG.value, _WORKDIR.value, fresh=_FRESH.value, on_corrupt=_ON_CORRUPT.value)
  except (configs.ConfigError, data_lib.DataError, checkpoints.CheckpointError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  from jaxae import sharding

  quiet = not sharding.is_primary()  # a multi-host job reports once, from process 0
  if "interrupted" in summary:
    import shlex

    resume = [a for a in sys.argv[1:] if a not in ("--fresh", "--fresh=true", "--fresh=True")]  # would wipe it
    if not quiet:
      print(f"to resume: {shlex.join([sys.executable, '-m', 'jaxae.main', *resume])}")
    return 128 + int(getattr(signal, summary["interrupted"]))
  summaries = summary["groups"].values() if "groups" in summary else [summary]
  from jaxae import report

  for s in summaries if not quiet else ():
    print(report.format_table(s))
  if all(len(e["healthy_seeds"]) == 0 for s in summaries for e in s["settings"]):
    print("error: every member diverged", file=sys.stderr)
    return 1
  if not quiet:
    print(f"wrote {_WORKDIR.value}/summary.json, metrics.jsonl, figures/ and checkpoints/")
  return 0


def _config_dir_on_path(argv: list[str]) -> None:
  """Puts the --config file's folder on sys.path, so the config can import the user's own modules
  (a variant or network defined beside it) wherever the command runs from."""
  import os

  for i, arg in enumerate(argv):
    value = arg.split("=", 1)[1] if arg.startswith("--config=") else (argv[i + 1] if arg == "--config" and i + 1 < len(argv) else None)
    if value:
      path = value.split(":", 1)[0]  # 'file.py:arg' passes `arg` to get_config
      if os.path.isfile(path):
        sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
      return


def run() -> None:
  _config_dir_on_path(sys.argv)
  app.run(lambda argv: sys.exit(main(argv)))


if __name__ == "__main__":
  run()
