"""Shared pieces of the benchmarks: machine facts, the matmul peak, configs, AOT-compiled programs, timing."""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import os
import platform
import subprocess
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxae import models, train
from jaxae import data as data_lib

NUM_TRAIN = 5000  # the reference protocol: all 5,000 embedded MNIST images, batch 128 -> 39 steps/epoch


# The zoo's models, and the one protocol both zoo benchmarks run them on: each model's own objective and
# weights, with the classics' MLP 784-512-256-32, batch 128 and Adam 1e-3 (pythae_zoo.py's too; the wae, rae
# and vqvae configs use other latents, batches and rates).
ZOO = ("vae", "iwae", "beta_vae_capacity", "beta_tcvae", "factor_vae", "infovae", "vamp", "vae_flow", "wae", "rae",
       "aae", "vqvae")
ZOO_PROTOCOL = {"model.backbone": "mlp", "model.hidden": (512, 256), "model.latent_dim": 32, "train.batch_size": 128,
                "optimizer.learning_rate": 1e-3}


def machine() -> dict[str, str]:
  """CPU model, core count, versions, date and load average (other processes distort every number)."""
  model = platform.processor() or "?"
  try:
    for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
      if line.startswith("Model name:"):
        model = line.split(":", 1)[1].strip()
  except (OSError, subprocess.CalledProcessError):
    pass
  info = {"cpu": model, "cores": str(os.cpu_count()), "jax": jax.__version__,
          "backend": f"{jax.default_backend()} x{jax.device_count()}",
          "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
          "load average (1 min) at start": f"{os.getloadavg()[0]:.2f}"}
  try:
    import torch

    info["torch"] = torch.__version__
  except ImportError:
    info["torch"] = "not installed"
  return info


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
  """Median wall seconds of `fn()` (blocked until ready) over `repeats` calls after one warm-up call."""
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return float(np.median(times))


def matmul_peak(n: int = 2048, repeats: int = 10) -> float:
  """Measured dense f32 matmul FLOP/s: median of `repeats` (n x n) @ (n x n) products, 2 n^3 FLOPs each."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  f = jax.jit(jnp.dot).lower(a, b).compile()
  return 2 * n**3 / median_seconds(lambda: f(a, b), repeats)


def load_config(variant: str, **overrides):
  """configs/<variant>.py's config with dotted-key overrides ({'train.steps_per_call': 1})."""
  config = importlib.import_module(f"configs.{variant}").get_config()
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def protocol_data() -> tuple[jax.Array, jax.Array]:
  """The 5,000 embedded MNIST images (uint8 (N, 28, 28, 1)) and labels (int32 (N,)) on the device."""
  split = data_lib.embedded_mnist()
  return jnp.asarray(split.x[:NUM_TRAIN]), jnp.asarray(split.labels[:NUM_TRAIN])


@dataclasses.dataclass
class Compiled:
  """A config's real train program (train.build), its state and its AOT-compiled chunk."""

  config: Any
  model: Any  # models.Net
  program: train.Program
  state: train.TrainState
  order: jax.Array  # (M, steps, B) int32 batch indices of epoch 0
  chunk_fn: Any  # jax.stages.Compiled of program.train_chunk
  compile_s: float  # lower + compile of train_chunk, seconds


def compile_program(config, x, y, conv_impl: str | None = None, xla_options: dict | None = None) -> Compiled:
  """Builds the program exactly as run.py does (train.build) and AOT-compiles its train chunk (timed on its own).

  conv_impl: compute the 3x3 convolutions with 'patches' or 'xla' (models.with_conv_impl); None = the default.
  """
  net = train.build_net(config, x.shape[1:])
  if conv_impl:
    net = models.with_conv_impl(net, conv_impl)
  program = train.build(config, x.shape[1:], x.shape[0], xla_options=xla_options, net=net)
  state = program.init_state()
  order = program.epoch_order(state, 0)
  t = time.perf_counter()
  chunk_fn = program.train_chunk.lower(state, x, y, order, 0).compile()
  return Compiled(config, net, program, state, order, chunk_fn, time.perf_counter() - t)


def step_flops(compiled) -> float:
  """FLOPs that XLA's cost analysis counts for a compiled (unscanned) computation."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost.get("flops", float("nan")))


def time_window(c: Compiled, x, y, steps: int, repeats: int) -> float:
  """Median seconds of `steps` training steps (whole chunks) after one warm-up chunk; scales nothing.

  The state advances through the run, as in training (chunks donate their input state).
  """
  chunk = c.program.chunk
  if steps % chunk:
    raise ValueError(f"a window of {steps} steps is not a whole number of {chunk}-step chunks")
  state = jax.block_until_ready(c.chunk_fn(c.state, x, y, c.order, 0))
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    for off in range(0, steps, chunk):
      state = c.chunk_fn(state, x, y, c.order, off % c.program.steps_per_epoch)
    jax.block_until_ready(state)
    times.append(time.perf_counter() - t)
  c.state = state
  return float(np.median(times))


def emit(lines: list[str], out: str) -> str:
  """Prints a harness's markdown and writes it to `out` ('' = print only); returns the text."""
  text = "\n".join(lines) + "\n"
  print(text)
  if out:
    with open(out, "w") as f:
      f.write(text)
  return text
