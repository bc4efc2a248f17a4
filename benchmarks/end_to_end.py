"""End to end: the whole `python -m jaxae.main` process against the PyTorch script of the same protocol.

    python -m benchmarks.end_to_end                     # 5 variants, 2 rounds -> benchmarks/END_TO_END.md
    python -m benchmarks.end_to_end --variants vanilla --rounds 1 --out ''
    python -m benchmarks.end_to_end --epochs 10         # fewer epochs for every row, both sides
    python -m benchmarks.end_to_end --device gpu --out benchmarks/END_TO_END_GPU.md   # jax and torch on the GPU

What a new user feels: wall seconds from launching the process to its exit, one seed. jaxae runs
`python -m jaxae.main --config=configs/<variant>.py --config.num_seeds=1` with its defaults (held-out
evaluation every epoch, checkpoints every 5 epochs and at the end, tensorboard events, summary and
figures); PyTorch runs benchmarks/torch_e2e.py (same data, hold-out, networks, losses, batch, epochs and
per-epoch held-out evaluation, no checkpoints, tensorboard or figures) at 1 thread and at torch's
default thread count. Rounds alternate the three commands per variant; each cell is the best of the
rounds, and the ratio divides jaxae's best by the faster PyTorch column. jax's persistent compilation
cache is a fresh directory for the session: a variant's first jaxae run compiles, later rounds load
from the cache, as a user's second run does (both numbers are in the table).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# variant: (config file, extra jaxae overrides, epochs, target ratio jaxae / PyTorch)
ROWS = {
  "vanilla": ("configs/vanilla.py", ["--config.model.latent_dim=32"], 30, 0.6),
  "conv": ("configs/conv.py", [], 30, 0.8),
  "contractive": ("configs/contractive.py", [], 2, 0.8),
  "vae": ("configs/vae.py", [], 30, 0.7),
  "denoising": ("configs/denoising.py", [], 30, 0.7),
}


def timed(cmd: list[str], env: dict) -> float:
  t = time.perf_counter()
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800)
  seconds = time.perf_counter() - t
  if proc.returncode != 0:
    raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
  return seconds


def jaxae_cmd(variant: str, epochs: int, workdir: str, extra: list[str]) -> list[str]:
  config, overrides, _, _ = ROWS[variant]
  return [sys.executable, "-m", "jaxae.main", f"--config={config}", f"--workdir={workdir}", "--config.num_seeds=1",
          f"--config.train.epochs={epochs}", *overrides, *extra]


def torch_cmd(variant: str, epochs: int, threads: int, device: str = "cpu") -> list[str]:
  return [sys.executable, "-m", "benchmarks.torch_e2e", f"--variant={variant}", f"--epochs={epochs}",
          f"--threads={threads}", f"--device={'cuda' if device == 'gpu' else 'cpu'}"]


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--variants", default=",".join(ROWS))
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--epochs", type=int, default=0, help="epochs for every row (0 = each row's protocol)")
  parser.add_argument("--out", default=os.path.join(HERE, "END_TO_END.md"), help="'' = print only")
  parser.add_argument("--device", default="cpu", choices=("cpu", "gpu"),
                      help="gpu: jaxae with JAX_PLATFORMS=cuda (pip install -e .[cuda]), torch on CUDA")
  parser.add_argument("--jaxae-args", default="", help="extra jaxae.main arguments for every row (space separated)")
  args = parser.parse_args(argv)
  sys.path.insert(0, ROOT)
  from benchmarks import common

  info = {"device": args.device, **common.machine()}
  cores = os.cpu_count() or 1
  variants = args.variants.split(",")
  extra = args.jaxae_args.split()
  times = {v: {"jaxae": [], "torch 1 thread": [], f"torch {cores} threads": []} for v in variants}
  t_all = time.perf_counter()
  with tempfile.TemporaryDirectory() as cache:
    env = dict(os.environ, JAXAE_COMPILATION_CACHE=cache, JAX_PLATFORMS="cuda" if args.device == "gpu" else "cpu")
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    for r in range(args.rounds):
      for v in variants:
        epochs = args.epochs or ROWS[v][2]
        with tempfile.TemporaryDirectory() as workdir:
          times[v]["jaxae"].append(timed(jaxae_cmd(v, epochs, workdir, extra), env))
        times[v]["torch 1 thread"].append(timed(torch_cmd(v, epochs, 1, args.device), env))
        times[v][f"torch {cores} threads"].append(timed(torch_cmd(v, epochs, cores, args.device), env))
        print(f"round {r + 1} {v}: " + ", ".join(f"{k} {s[-1]:.1f} s" for k, s in times[v].items()), flush=True)
  info["load average (1 min) at end"] = f"{os.getloadavg()[0]:.2f}"
  lines = ["# End to end: `python -m jaxae.main` vs a PyTorch eager script of the same protocol", "",
           "`python -m benchmarks.end_to_end" + (f" --epochs {args.epochs}" if args.epochs else "") + "` — " +
           ", ".join(f"{k}: {v}" for k, v in info.items()), "",
           "Whole-process wall seconds, one seed, launch to exit; best of " + f"{args.rounds} alternating rounds "
           "(per-round seconds in brackets, the first jaxae run of a variant compiles into an empty cache). jaxae "
           "writes checkpoints, tensorboard events and figures; the PyTorch script (benchmarks/torch_e2e.py) "
           "writes none of them. Ratio = jaxae / the faster PyTorch column.", "",
           "| variant | epochs | jaxae s | torch 1 thread s | " + f"torch {cores} threads s | ratio | target | met |",
           "|---|---|---|---|---|---|---|---|"]
  for v in variants:
    t = times[v]
    best = {k: min(s) for k, s in t.items()}
    ratio = best["jaxae"] / min(best["torch 1 thread"], best[f"torch {cores} threads"])
    target = ROWS[v][3]
    cell = lambda k: f"{best[k]:.1f} ({', '.join(f'{s:.1f}' for s in t[k])})"
    lines.append(f"| {v} | {args.epochs or ROWS[v][2]} | {cell('jaxae')} | {cell('torch 1 thread')} | "
                 f"{cell(f'torch {cores} threads')} | {ratio:.2f} | <= {target} | {'yes' if ratio <= target else 'no'} |")
  lines += ["", f"Harness wall time {time.perf_counter() - t_all:.0f} s."]
  common.emit(lines, args.out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
