"""The zoo against pythae itself: S seeds of each model, jaxae's one command against pythae training S models.

    python -m benchmarks.zoo_vs_pythae --pythae-python /path/to/venv/bin/python   # -> benchmarks/PYTHAE_ZOO.md
    python -m benchmarks.zoo_vs_pythae --pythae-python ... --models vae,iwae --epochs 2 --out ''

pythae lives in its own environment (`python -m venv v && v/bin/pip install torch==2.13.0 pythae`), never a
dependency of jaxae. Both sides: the 5,000 embedded MNIST images with jaxae's stratified 10% hold-out (written
once as an .npz for pythae), the MLP 784-512-256-32 (ReLU, sigmoid outputs; pythae's own discriminators),
Adam 1e-3, batch 128, `--epochs` epochs, held-out loss every epoch, S = `--seeds` seeds. jaxae runs
`python -m jaxae.main --config=configs/<model>.py --config.num_seeds=S` (one compiled program for all seeds;
checkpoints, TensorBoard events, summary and figures as by default); pythae runs benchmarks/pythae_zoo.py
(S TrainingPipelines one after another in one process, its final checkpoints). Whole-process wall seconds,
launch to exit; rounds alternate the two commands per model; each cell is the best of the rounds. Ratio =
jaxae / pythae; the goal is <= 0.5.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from benchmarks import common

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
GOAL = 0.5



def timed(cmd: list[str], env: dict) -> tuple[float, str]:
  t = time.perf_counter()
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=3600)
  seconds = time.perf_counter() - t
  if proc.returncode != 0:
    raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
  return seconds, proc.stdout


def write_data(path: str) -> None:
  """The embedded images split as jaxae splits them (data.stratified_split, seed 0), for pythae."""
  import numpy as np
  from jaxae import data

  split = data.embedded_mnist()
  tr, ho = data.stratified_split(split.labels, 0.1, 0)
  np.savez(path, x_train=split.x[tr], x_eval=split.x[ho])


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--pythae-python", required=True, help="the python of an environment with torch and pythae")
  parser.add_argument("--models", default=",".join(common.ZOO))
  parser.add_argument("--seeds", type=int, default=4)
  parser.add_argument("--epochs", type=int, default=5)
  parser.add_argument("--rounds", type=int, default=1)
  parser.add_argument("--out", default=os.path.join(HERE, "PYTHAE_ZOO.md"), help="'' = print only")
  args = parser.parse_args(argv)

  info = common.machine()
  version = subprocess.run([args.pythae_python, "-c", "import importlib.metadata as m; "
                            "print(m.version('pythae'), m.version('torch'))"], capture_output=True, text=True).stdout.split()
  info["pythae"], info["torch"] = (version + ["?", "?"])[:2]
  models = args.models.split(",")
  times = {m: {"jaxae": [], "pythae": []} for m in models}
  losses = {}
  t_all = time.perf_counter()
  with tempfile.TemporaryDirectory() as tmp:
    data_path = os.path.join(tmp, "mnist5k.npz")
    write_data(data_path)
    env = dict(os.environ, JAXAE_COMPILATION_CACHE=os.path.join(tmp, "cache"))
    for r in range(args.rounds):
      for m in models:
        with tempfile.TemporaryDirectory() as workdir:
          cmd = [sys.executable, "-m", "jaxae.main", f"--config=configs/{m}.py", f"--workdir={workdir}",
                 f"--config.num_seeds={args.seeds}", f"--config.train.epochs={args.epochs}",
                 *(f"--config.{k}={v}" for k, v in common.ZOO_PROTOCOL.items())]
          times[m]["jaxae"].append(timed(cmd, env)[0])
        seconds, out = timed([args.pythae_python, os.path.join(HERE, "pythae_zoo.py"), f"--model={m}",
                              f"--seeds={args.seeds}", f"--epochs={args.epochs}", f"--data={data_path}"], env)
        times[m]["pythae"].append(seconds)
        losses[m] = json.loads(out.strip().splitlines()[-1])["final_eval_loss"]
        print(f"round {r + 1} {m}: jaxae {times[m]['jaxae'][-1]:.1f} s, pythae {seconds:.1f} s", flush=True)
  info["load average (1 min) at end"] = f"{os.getloadavg()[0]:.2f}"
  lines = ["# The zoo: jaxae against pythae, S seeds of each model", "",
           f"`python -m benchmarks.zoo_vs_pythae --seeds {args.seeds} --epochs {args.epochs} --rounds {args.rounds}` — "
           + ", ".join(f"{k}: {v}" for k, v in info.items()), "",
           f"Whole-process wall seconds for {args.seeds} seeds x {args.epochs} epochs, launch to exit, best of "
           f"{args.rounds} round(s) (per-round seconds in brackets; jaxae's first round compiles into an empty "
           f"cache). jaxae: one command, all seeds in one program, with checkpoints, TensorBoard events and figures; "
           f"pythae: {args.seeds} TrainingPipelines in one process (benchmarks/pythae_zoo.py). Same data, hold-out, "
           f"MLP, optimizer, batch and epochs. Ratio = jaxae / pythae (goal <= {GOAL}).", "",
           "| model | jaxae s | pythae s | ratio | goal met | pythae held-out loss per seed |", "|---|---|---|---|---|---|"]
  for m in models:
    best = {k: min(v) for k, v in times[m].items()}
    cell = lambda k: f"{best[k]:.1f} ({', '.join(f'{s:.1f}' for s in times[m][k])})"
    ratio = best["jaxae"] / best["pythae"]
    lines.append(f"| {m} | {cell('jaxae')} | {cell('pythae')} | {ratio:.2f} | {'yes' if ratio <= GOAL else 'no'} | "
                 f"{', '.join(f'{v:.4g}' for v in losses[m])} |")
  lines += ["", f"Harness wall time {time.perf_counter() - t_all:.0f} s."]
  common.emit(lines, args.out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
