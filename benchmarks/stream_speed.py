"""Streaming a training set larger than we want on the device: peak resident memory and throughput.

  flock /work/heavy.lock python -m benchmarks.stream_speed [--rows=500000] [--dim=1024] [--subset=100000]
      [--dir=/tmp] [--out=benchmarks/STREAM.md]

Writes a float32 `.npy` of rows x dim (500,000 x 1,024 = 2.0 GB by default) into --dir, piece by piece,
and its first --subset rows as a second file; trains the default MLP (configs/vanilla.py: dim-512-256-32,
Adam, batch 128) in fresh child processes and deletes both files at the end:

  streamed    the big file, data.stream=true: batches read from disk (pread) by a prefetch thread
  in memory   the subset file, data.stream=false: the whole training split copied to the device

with 1 and 4 seeds (members) in one program, and one end-to-end `python -m jaxae.main` run on the big
file (checkpoints, figures and all). Throughput is training examples per second (members x steps x
batch / seconds) of a whole epoch that follows a first, compiling one; held-out evaluation is timed
on its own. Peak resident memory is each child's `ru_maxrss` (os.wait4), the whole process (Python, jax,
XLA's buffers). The data: x = sigmoid(z W + noise), z ~ N(0, I_16), a fixed W (16 x dim): structured
inputs in (0, 1), so the autoencoder has something to learn.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PIECE = 10_000  # rows written at a time


def write_data(path: str, rows: int, dim: int, seed: int = 0) -> int:
  """A float32 .npy of `rows` x `dim`, written in pieces of PIECE rows (never held whole); its size in bytes."""
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(16, dim)).astype(np.float32) / 2
  with open(path, "wb") as f:
    np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (rows, dim)})
    for start in range(0, rows, PIECE):
      n = min(PIECE, rows - start)
      z = rng.normal(size=(n, 16)).astype(np.float32)
      (1 / (1 + np.exp(-(z @ w + 0.1 * rng.normal(size=(n, dim)).astype(np.float32))))).astype(np.float32).tofile(f)
  return os.path.getsize(path)


def _config(source: str, stream: str, seeds: int, epochs: int, max_train: int):
  sys.path.insert(0, ROOT)
  from benchmarks import common

  return common.load_config("vanilla", **{"data.source": f"npy:{source}", "data.stream": stream, "num_seeds": seeds,
                                          "train.epochs": epochs, "data.max_train": max_train,
                                          "train.progress": False, "train.figures": False})


def child(args) -> None:
  """Trains like run.train_group (same programs, same stream/in-memory code) and prints timings as JSON."""
  import jax

  from jaxae import configs, sharding, stream, sweep, train
  from jaxae import data as data_lib
  from jaxae.run import _labels

  config = _config(args.source, args.stream, args.seeds, args.epochs, args.max_train)
  configs.validate(config)
  t = time.perf_counter()
  data = data_lib.load(config.data)  # checks every row (finite) by reading the file in chunks
  load_s = time.perf_counter() - t
  group = sweep.groups(config)[0]
  mesh = sharding.member_mesh(len(group.members))
  program = train.build(group, data.train.x.shape[1:], len(data.train), mesh)
  streamed = stream.should_stream(config.data, data)
  t = time.perf_counter()
  if streamed:
    x, y, xe, ye = data.train.x, _labels(data.train), data.eval.x, _labels(data.eval)
  else:
    x, y = sharding.replicate((data.train.x, _labels(data.train)), mesh)
    xe, ye = sharding.replicate((data.eval.x, _labels(data.eval)), mesh)
  to_device_s = time.perf_counter() - t
  state = program.init_state()
  epochs = []
  for _ in range(config.train.epochs):
    t = time.perf_counter()
    state, _ = (stream.run_epoch if streamed else train.run_epoch)(program, state, x, y)
    state, means = train.take_epoch_metrics(program, state)  # a host transfer: the epoch is done
    epochs.append(time.perf_counter() - t)
  evals = []
  for _ in range(2):  # the first compiles
    t = time.perf_counter()
    jax.block_until_ready(stream.evaluate(program, state, xe, ye) if streamed else program.evaluate(state, xe, ye))
    evals.append(time.perf_counter() - t)
  examples = len(group.members) * program.steps_per_epoch * config.train.batch_size
  print(json.dumps({"streamed": streamed, "train": len(data.train), "eval": len(data.eval), "load_s": load_s,
                    "to_device_s": to_device_s, "epoch_s": epochs, "examples_per_epoch": examples,
                    "eval_s": evals[-1], "loss": float(np.mean(means["loss"])),
                    "block_steps": stream.block_steps(program.chunk, len(group.members), config.train.batch_size,
                                                      int(np.prod(x.shape[1:])) * x.dtype.itemsize)}))


def run_child(argv: list[str]) -> tuple[dict | None, float, float, str, int]:
  """(printed JSON or None, peak RSS bytes, wall s, stderr tail, exit code) of `python argv`, a fresh process.

  Waited for with os.wait4, so the peak RSS is this child's own.
  """
  t = time.perf_counter()
  with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
    proc = subprocess.Popen([sys.executable, *argv], stdout=out, stderr=err, text=True, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t
    out.seek(0)
    err.seek(0)
    lines = [line for line in out.read().strip().splitlines() if line.startswith("{")]
    return (json.loads(lines[-1]) if lines else None), usage.ru_maxrss * 1024, wall, err.read()[-2000:], proc.returncode


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--rows", type=int, default=500_000)
  p.add_argument("--dim", type=int, default=1024)
  p.add_argument("--subset", type=int, default=100_000, help="rows of the in-memory file")
  p.add_argument("--max_train_4", type=int, default=150_000, help="training rows of the streamed 4-seed run")
  p.add_argument("--dir", default="/tmp")
  p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "STREAM.md"))
  p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--source", help=argparse.SUPPRESS)
  p.add_argument("--stream", help=argparse.SUPPRESS)
  p.add_argument("--seeds", type=int, default=1, help=argparse.SUPPRESS)
  p.add_argument("--epochs", type=int, default=2, help=argparse.SUPPRESS)
  p.add_argument("--max_train", type=int, default=0, help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.child:
    return child(args)

  sys.path.insert(0, ROOT)
  from benchmarks import common

  info = common.machine()
  work = tempfile.mkdtemp(prefix="jaxae_stream_", dir=args.dir)
  big, small = os.path.join(work, "big.npy"), os.path.join(work, "subset.npy")
  written = []
  try:
    t = time.perf_counter()
    size = write_data(big, args.rows, args.dim)
    written.append(big)
    write_data(small, args.subset, args.dim)
    written.append(small)
    print(f"wrote {size / 1e9:.2f} GB in {time.perf_counter() - t:.0f} s", flush=True)
    me = ["-m", "benchmarks.stream_speed", "--child"]
    runs = {}
    plan = [("streamed", 1, big, "true", 2, 0), ("in memory", 1, small, "false", 3, 0),
            ("streamed", 4, big, "true", 2, args.max_train_4), ("in memory", 4, small, "false", 2, 0)]
    for name, seeds, source, mode, epochs, max_train in plan:
      result, rss, wall, err, rc = run_child(me + [f"--source={source}", f"--stream={mode}", f"--seeds={seeds}",
                                                          f"--epochs={epochs}", f"--max_train={max_train}"])
      if rc != 0 or result is None:
        raise RuntimeError(f"{name} x{seeds} failed ({rc}):\n{err}")
      result.update(rss=rss, wall=wall, file=os.path.getsize(source))
      runs[name, seeds] = result
      print(name, seeds, json.dumps(result), flush=True)
    workdir = os.path.join(work, "cli_run")
    cli = ["-m", "jaxae.main", f"--config={ROOT}/configs/vanilla.py", f"--workdir={workdir}",
           f"--config.data.source=npy:{big}", "--config.data.stream=true", "--config.num_seeds=1",
           "--config.train.epochs=1", "--config.train.progress=False"]
    _, cli_rss, cli_wall, err, rc = run_child(cli)
    if rc != 0:
      raise RuntimeError(f"the CLI run failed ({rc}):\n{err}")
    print("cli", cli_rss, cli_wall, flush=True)
    write_table(args, info, size, runs, cli_rss, cli_wall)
  finally:
    for path in written:
      os.remove(path)
    shutil.rmtree(work, ignore_errors=True)  # only the folder this benchmark made (mkdtemp)


def write_table(args, info, size, runs, cli_rss, cli_wall) -> None:
  gb = lambda b: f"{b / 1e9:.2f} GB"
  rows = []
  for seeds in (1, 4):
    s, m = runs["streamed", seeds], runs["in memory", seeds]
    rate = lambda r: r["examples_per_epoch"] / float(np.median(r["epoch_s"][1:]))
    for name, r in (("streamed", s), ("in memory", m)):
      rows.append([name, seeds, f"{r['train']:,} ({gb(r['train'] * args.dim * 4)})", r["block_steps"] if r["streamed"] else "-",
                   f"{r['epoch_s'][0]:.1f}", f"{np.median(r['epoch_s'][1:]):.1f}", f"{rate(r):,.0f}",
                   f"{rate(r) / rate(m):.2f}", f"{r['eval'] / r['eval_s']:,.0f}", f"{r['load_s'] + r['to_device_s']:.1f}",
                   gb(r["rss"]), gb(r["file"])])
  header = ["data", "seeds", "training rows (inputs)", "steps per block", "epoch 1 s (compiles)", "epoch s (later)",
            "train examples/s", "vs in memory", "eval examples/s", "load + to device s", "peak RSS", "file"]
  lines = [f"# Streaming from disk vs training in memory (generated by `python -m benchmarks.stream_speed`)", "",
           "| machine | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in info.items()]
  lines += [f"| numpy | {np.__version__} |", f"| load average (1 min) at end | {os.getloadavg()[0]:.2f} |", "",
            f"Data: float32 {args.rows:,} x {args.dim} `.npy` ({gb(size)}), the in-memory runs on a file of its first "
            f"{args.subset:,} rows; 10% held out. Model: configs/vanilla.py ({args.dim}-512-256-32 MLP, Adam 1e-3, "
            f"batch 128), `train.member_loop=auto` (lax.map on this CPU). Throughput: members x steps x 128 / seconds "
            f"of the epochs after the first (median), so compilation is excluded. Peak RSS: `ru_maxrss` of each "
            f"child process, everything included (Python, jax, XLA).", "",
            "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
  lines += ["", f"End to end, `python -m jaxae.main --config=configs/vanilla.py --config.data.source=npy:<the {gb(size)} "
            f"file> --config.data.stream=true --config.num_seeds=1 --config.train.epochs=1` (checks, training, held-out "
            f"evaluation, checkpoint, figures): peak RSS {gb(cli_rss)}, {cli_wall:.0f} s.", ""]
  with open(args.out, "w") as f:
    f.write("\n".join(lines))
  print("\n".join(lines))


if __name__ == "__main__":
  main()
