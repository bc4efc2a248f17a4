"""Program structures for the conv backbone on XLA:CPU, and prototypes of alternatives to vmapping seeds.

  python -m benchmarks.conv_structures    # prints the table (train_speed.py adds it to RESULTS.md)

Axes measured:
  conv impl       'xla' (flax nn.Conv / nn.ConvTranspose: XLA convolutions) or 'patches' (models.py's
                  default: the same function as patches @ kernel, i.e. dense matmuls)
  upsample        transpose | resize | depth_to_space
  steps_per_call  0 = the epoch in one lax.scan; 1 = one step per call from Python; 13 = scan 13 steps
  seeds over      vmap    = train.build (the member axis vmapped: grouped convolutions)
                  lax.map = prototype: the unbatched member step mapped over members (a loop in XLA)
                  loop    = prototype: a Python loop over members inside one jit (S copies of the step)
The prototypes copy train.py's per-member step (`_member_chunk`); wiring one into train.py means
replacing `jax.vmap(chunk_member, ...)` in train.make_program's train_chunk (see benchmarks/README.md).
"""

from __future__ import annotations

import time

import jax
import numpy as np

import functools

from benchmarks import common
from jaxae import configs, train

WINDOW = 13  # steps timed per repeat for steps_per_call 1 and 13 (a third of the 39-step epoch)


def _member_chunk(config, model, num_train: int, chunk: int):
  """train.py's chunk_member (one member, unbatched): `chunk` steps from `offset` of its epoch order."""
  train_step = functools.partial(train.train_step, loss_fn=configs.variant_of(config).make_loss(config, model))

  def chunk_member(state, x_all, y_all, order, offset):
    idx = jax.lax.dynamic_slice_in_dim(order, offset, chunk, axis=0)
    if chunk == 1:
      return train_step(state, x_all, y_all, idx[0])
    return jax.lax.scan(lambda s, i: (train_step(s, x_all, y_all, i), None), state, idx)[0]

  return chunk_member


def members_fn(kind: str, config, model, num_train: int, chunk: int, num_members: int):
  """train_chunk with members mapped by `kind` ('lax.map' | 'loop'); same signature as Program.train_chunk."""
  chunk_member = _member_chunk(config, model, num_train, chunk)
  if kind == "lax.map":
    def fn(state, x, y, order, offset):
      return jax.lax.map(lambda so: chunk_member(so[0], x, y, so[1], offset), (state, order))
  else:
    def fn(state, x, y, order, offset):
      outs = [chunk_member(jax.tree.map(lambda a: a[i], state), x, y, order[i], offset) for i in range(num_members)]
      return jax.tree.map(lambda *a: jax.numpy.stack(a), *outs)
  return jax.jit(fn, donate_argnums=0)


def measure(x, y, impl: str, upsample: str, spc: int, seeds: int, members: str, repeats: int, variant: str = "conv") -> dict:
  """Compile seconds and seconds per epoch (window extrapolated) of one structure of configs/<variant>.py."""
  overrides = {"train.steps_per_call": spc}
  if upsample != "-":
    overrides["model.upsample"] = upsample
  config = common.load_config(variant, num_seeds=seeds, **overrides)
  c = common.compile_program(config, x, y, conv_impl=impl if impl != "-" else None)
  if members != "vmap":
    fn = members_fn(members, config, c.model, x.shape[0], c.program.chunk, seeds)
    t = time.perf_counter()
    c.chunk_fn = fn.lower(c.state, x, y, c.order, 0).compile()
    c.compile_s = time.perf_counter() - t
  spe = c.program.steps_per_epoch
  window = spe if c.program.chunk == spe else WINDOW
  t = common.time_window(c, x, y, window, repeats)
  row = dict(variant=variant, impl=impl, upsample=upsample, spc=spc, seeds=seeds, members=members, compile_s=c.compile_s,
             epoch_s=t * spe / window)
  print(f"  {variant} {impl:7s} {upsample:14s} {members:7s} spc={spc:2d} S={seeds}: compile {c.compile_s:5.2f} s, "
        f"{row['epoch_s'] / seeds:6.3f} s/epoch/seed", flush=True)
  return row


# (impl, upsample, steps_per_call, S, seeds over): the grid's informative cells on 2 cores (~5 min).
GRID = [
    ("xla", "transpose", 1, 1, "vmap"), ("xla", "transpose", 13, 1, "vmap"), ("xla", "transpose", 1, 4, "vmap"),
    ("xla", "depth_to_space", 1, 1, "vmap"), ("xla", "transpose", 1, 4, "lax.map"),
    ("patches", "transpose", 0, 1, "vmap"), ("patches", "transpose", 1, 1, "vmap"),
    ("patches", "transpose", 0, 4, "vmap"), ("patches", "transpose", 0, 4, "lax.map"),
    ("patches", "resize", 0, 1, "vmap"), ("patches", "depth_to_space", 0, 1, "vmap"),
    # The MLP: vmap (make_program) vs the lax.map prototype, for the S-scaling target.
    ("-", "-", 0, 1, "lax.map", "vanilla"), ("-", "-", 0, 8, "lax.map", "vanilla"),
]


def run(x=None, y=None, repeats: int = 2, grid=GRID) -> list[dict]:
  if x is None:
    x, y = common.protocol_data()
  return [measure(x, y, *cell[:5], repeats=repeats, variant=cell[5] if len(cell) > 5 else "conv") for cell in grid]


if __name__ == "__main__":
  rows = run()
  print("| variant | conv impl | upsample | seeds over | steps_per_call | S | compile s | s/epoch/seed |")
  print("|---|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['variant']} | {r['impl']} | {r['upsample']} | {r['members']} | {r['spc']} | {r['seeds']} | {r['compile_s']:.2f} | "
          f"{r['epoch_s'] / r['seeds']:.3f} |")
