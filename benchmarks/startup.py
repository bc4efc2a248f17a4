"""Start-up of `python -m jaxae.main`: seconds from process launch to the first training step, and to exit.

    python -m benchmarks.startup                       # configs/vanilla.py, 3 rounds -> benchmarks/STARTUP.md
    python -m benchmarks.startup --rounds 1 --out ''   # print only
    python -m benchmarks.startup -- --config.num_seeds=1   # extra arguments for jaxae.main after `--`

What a user feels when typing the command, so it runs the real CLI in a fresh process each time:
`python -c <probe>` wraps `jaxae.train.run_epoch` and `jaxae.data.load` to note the time (since the
parent launched the process) at which the imports were done, the data were loaded, the first train chunk
was called and returned (blocked until ready), and the parent notes when the process exited. The run is
`--config=configs/vanilla.py --config.train.epochs=1` (4 seeds, the default), so "exit" includes the
held-out evaluation, the checkpoint, tensorboard and the figures of one epoch. A chunk is one epoch
(`train.steps_per_call=0`, 35 steps after the 10% hold-out, 4 seeds): "first step done" is the end of
that first chunk, an upper bound of the first step.

Cold: `JAXAE_COMPILATION_CACHE` names a new, empty directory (every program compiles). Warm: the same
directory after the cold run filled it (jax's persistent compilation cache, which jaxae/main.py turns on
by default in ~/.cache/jaxae/xla). Rounds alternate cold and warm; the table gives medians.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

_PROBE = r"""
import json, os, sys, time
t0 = float(os.environ["STARTUP_T0"])
marks = {"python started": time.time() - t0}
import runpy
import jaxae.data as D, jaxae.train as T
load = D.load
def timed_load(*a, **k):
  marks.setdefault("imports done", time.time() - t0)
  out = load(*a, **k)
  marks.setdefault("data loaded", time.time() - t0)
  return out
D.load = timed_load
run_epoch = T.run_epoch
def timed_epoch(program, state, *a, **k):
  import jax
  first = "first step called" not in marks
  if first:
    marks["first step called"] = time.time() - t0
  out = run_epoch(program, state, *a, **k)
  if first:
    jax.block_until_ready(out)
    marks["first step done"] = time.time() - t0
    print("STARTUP " + json.dumps(marks), file=sys.stderr, flush=True)
  return out
T.run_epoch = timed_epoch
import jaxae.run as R
figures = R._figures
def timed_figures(*a, **k):
  marks["figures started"] = time.time() - t0
  figures(*a, **k)
  marks["figures done"] = time.time() - t0
  print("FIGURES " + json.dumps(marks), file=sys.stderr, flush=True)
R._figures = timed_figures
sys.argv = ["jaxae.main"] + sys.argv[1:]
runpy.run_module("jaxae.main", run_name="__main__")
"""

MILESTONES = ("python started", "imports done", "data loaded", "first step called", "first step done",
              "figures started", "figures done", "exit")


def launch(cache_dir: str, extra: list[str]) -> dict[str, float]:
  """One `python -m jaxae.main` process with the compilation cache in `cache_dir`; its milestones (seconds)."""
  with tempfile.TemporaryDirectory() as workdir:
    env = dict(os.environ, STARTUP_T0=repr(time.time()), JAXAE_COMPILATION_CACHE=cache_dir)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    t0 = float(env["STARTUP_T0"])
    proc = subprocess.run([sys.executable, "-c", _PROBE, "--config=configs/vanilla.py", f"--workdir={workdir}",
                           "--config.train.epochs=1", *extra], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=600)
    end = time.time() - t0
  if proc.returncode != 0:
    raise RuntimeError(f"jaxae.main exited {proc.returncode}:\n{proc.stderr[-3000:]}")
  marks = {}
  for line in proc.stderr.splitlines():
    if line.startswith(("STARTUP ", "FIGURES ")):
      marks.update(json.loads(line.split(" ", 1)[1]))
  if "first step done" in marks:
    return {**marks, "exit": end}
  raise RuntimeError(f"no STARTUP line:\n{proc.stderr[-3000:]}")


def import_seconds() -> dict[str, float]:
  """Cumulative import seconds (python -X importtime) of the modules a training run imports, biggest first."""
  proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import jaxae.main, jaxae.run"],
                        capture_output=True, text=True, cwd=ROOT, check=True)
  out = {}
  for line in proc.stderr.splitlines():
    if line.startswith("import time:") and "cumulative" not in line:
      _, cumulative, name = line.split("|")
      out.setdefault(name.strip(), int(cumulative) / 1e6)
  keep = ("jaxae.main", "jaxae.run", "jax", "flax", "orbax.checkpoint", "optax", "ml_collections", "matplotlib",
          "tensorboardX", "sklearn", "absl.flags", "numpy", "tqdm")
  return {k: out[k] for k in keep if k in out}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--rounds", type=int, default=3, help="cold + warm pairs (medians)")
  parser.add_argument("--out", default=os.path.join(HERE, "STARTUP.md"), help="'' = print only")
  parser.add_argument("extra", nargs="*", help="extra jaxae.main arguments (after --)")
  args = parser.parse_args(argv)
  sys.path.insert(0, ROOT)
  from benchmarks import common

  info = common.machine()
  runs = {"cold": [], "warm": []}
  for r in range(args.rounds):
    with tempfile.TemporaryDirectory() as cache:
      for kind in ("cold", "warm"):
        runs[kind].append(launch(cache, args.extra))
        print(f"round {r + 1} {kind}: " + ", ".join(f"{k} {v:.2f}" for k, v in runs[kind][-1].items()), flush=True)
  imports = import_seconds()
  info["load average (1 min) at end"] = f"{os.getloadavg()[0]:.2f}"
  med = {kind: {m: float(np.median([r.get(m, np.nan) for r in rs])) for m in MILESTONES} for kind, rs in runs.items()}
  command = "python -m jaxae.main --config=configs/vanilla.py --config.train.epochs=1 " + " ".join(args.extra)
  # later --config.KEY=VALUE arguments override earlier ones: `-- --config.train.epochs=30` times a whole run
  lines = ["# Start-up", "", "`python -m benchmarks.startup` — " + ", ".join(f"{k}: {v}" for k, v in info.items()), "",
           f"`{command.strip()}`, seconds since launch, median of {args.rounds} alternating cold/warm rounds "
           "(cold: empty compilation cache; warm: the cache the cold run filled). \"first step done\" is the end of "
           "the first train chunk (one epoch: 35 steps of every seed); \"exit\" includes the held-out evaluation, "
           "checkpoints, tensorboard and figures.", "",
           "| milestone | cold cache | warm cache |", "|---|---|---|"]
  lines += [f"| {m} | {med['cold'][m]:.2f} | {med['warm'][m]:.2f} |" for m in MILESTONES]
  lines += ["", "Imports of a training run (`python -X importtime -c 'import jaxae.main, jaxae.run'`, cumulative "
            "seconds, one process; absent = not imported):", "", "| module | s |", "|---|---|"]
  lines += [f"| {k} | {v:.3f} |" for k, v in imports.items()]
  common.emit(lines, args.out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
