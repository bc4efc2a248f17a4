"""How long a checkpoint save and restore take, and how large one is, for a whole vmapped run.

  python benchmarks/checkpoint_speed.py [--config=configs/vae.py] [--seeds=8] [--repeats=7]

Builds the real TrainState of the config (default model size, `--seeds` members, Adam state) without
training, then times `checkpoints.save` (the blocking part the training loop waits for, which includes the
checksum of every array, and until the asynchronous write is committed) and `checkpoints.restore` against the abstract state, median over
`--repeats`. Prints the size of one step directory on disk.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxae import checkpoints, train  # noqa: E402


def du(path: str) -> int:
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--config", default="configs/vae.py")
  parser.add_argument("--seeds", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=7)
  args = parser.parse_args()
  spec = importlib.util.spec_from_file_location("cfg", args.config)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.num_seeds = args.seeds
  config.checkpoint.keep = args.repeats + 1

  image_shape, num_train = (28, 28, 1), 54000  # MNIST train minus the 10% held out
  program = train.build(config, image_shape, num_train)
  seeds = list(program.seeds)
  state = program.init_state()
  # Adam's moments start at zero, which compresses to nothing; a trained run's do not.
  leaves, treedef = jax.tree.flatten(state.opt_state)
  keys = jax.random.split(jax.random.key(0), len(leaves))
  noisy = [a + 1e-3 * jax.random.normal(k, a.shape, a.dtype) if a.dtype == jnp.float32 and a.ndim > 1 else a
           for a, k in zip(leaves, keys)]
  state = state.replace(opt_state=jax.tree.unflatten(treedef, noisy))
  abstract = program.abstract_state()
  jax.block_until_ready(state)
  n_params = sum(a.size for a in jax.tree.leaves(state.params))
  meta = {"epoch": 0, "config": config.to_dict(), "members": [{"setting_index": 0, "setting": {}, "seed": s} for s in seeds],
          "diverged": {}, "data_shape": list(image_shape)}  # what the training loop stores (checkpoints.meta_problem)

  with tempfile.TemporaryDirectory() as workdir:
    mngr = checkpoints.manager(workdir, config)
    blocking, total, restore = [], [], []
    for i in range(args.repeats + 1):  # the first of each is a warm-up
      state = state.replace(step=state.step + 1)
      t0 = time.perf_counter()
      checkpoints.save(mngr, state, meta)
      t1 = time.perf_counter()
      mngr.wait_until_finished()
      t2 = time.perf_counter()
      step = int(state.step[0])
      t3 = time.perf_counter()
      restored, _ = checkpoints.restore(mngr, step, abstract)
      jax.block_until_ready(restored)
      t4 = time.perf_counter()
      if i:
        blocking.append(t1 - t0)
        total.append(t2 - t0)
        restore.append(t4 - t3)
    items = {"params": state.params, "state": checkpoints._state_item(state)}
    checksum = []
    for _ in range(args.repeats):
      t0 = time.perf_counter()
      checkpoints.checksums(items)
      checksum.append(time.perf_counter() - t0)
    size = du(os.path.join(workdir, checkpoints.CHECKPOINT_DIR, str(step)))
    mngr.close()

  ms = lambda xs: f"{1000 * statistics.median(xs):.0f} ms (min {1000 * min(xs):.0f}, max {1000 * max(xs):.0f})"
  print(f"{args.config}, {args.seeds} seeds, {n_params / args.seeds / 1e6:.2f} M params per seed, "
        f"{jax.devices()[0].platform}, median of {args.repeats}:")
  print(f"  save, blocking the training loop: {ms(blocking)}")
  print(f"  save, until committed on disk:    {ms(total)}")
  print(f"  restore (params + optimizer state): {ms(restore)}")
  print(f"  checksums of every array (in save and in restore): {ms(checksum)}")
  print(f"  one checkpoint on disk: {size / 2**20:.1f} MiB")


if __name__ == "__main__":
  main()
