"""Refusing up front a run that cannot fit in memory, from the shapes alone (`jax.eval_shape`).

A size typed by mistake (`--config.model.latent_dim=1000000000`) would otherwise start allocating a
terabyte and hang the machine after writing to the workdir. `check_fits` adds up, per device, what one
training step holds at once: the train state (parameters, optimizer state, metric sums, for this
device's share of the members), one gradient per parameter, and the replicated datasets. It compares
that with the memory the device has free: an accelerator's `memory_stats()` (bytes_limit - bytes_in_use),
the host's available RAM for the CPU (MemAvailable in /proc/meminfo, else sysconf). Activations are not
counted (they depend on XLA's fusion), so passing this check is necessary, not sufficient.
"""

from __future__ import annotations

import math
import os

import jax
import numpy as np

from jaxae import errors


def available_bytes(device=None) -> int | None:
  """Free memory of `device` (default: the first local device) in bytes; None when unknown."""
  device = device or jax.local_devices()[0]
  if device.platform != "cpu":
    try:
      stats = device.memory_stats() or {}
      if "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    except Exception:  # noqa: BLE001 - a backend without memory statistics: unknown
      return None
    return None
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  try:
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  except (ValueError, OSError, AttributeError):
    return None


def _gib(n: float) -> str:
  for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
    if n >= size / 8 or unit == "MiB":
      return f"{n / size:.3g} {unit}"
  return ""


def _nbytes(a) -> int:
  try:
    itemsize = np.dtype(a.dtype).itemsize
  except TypeError:  # a typed PRNG key: its key data (2 x uint32 for the default threefry)
    itemsize = 8
  return int(math.prod(a.shape)) * itemsize


def requirement(abstract_state, data_bytes: int, devices: int = 1) -> tuple[int, str]:
  """(bytes per device, a breakdown naming the largest array) for a state of these shapes."""
  leaves = jax.tree_util.tree_flatten_with_path(abstract_state)[0]
  state = sum(_nbytes(a) for _, a in leaves)
  params = sum(_nbytes(a) for a in jax.tree.leaves(abstract_state.params))
  need = (state + params) / max(devices, 1) + data_bytes
  path, big = max(leaves, key=lambda kv: _nbytes(kv[1]))
  name = jax.tree_util.keystr(path)
  text = (f"state {_gib(state)} + gradients {_gib(params)} over {devices} device(s), data {_gib(data_bytes)}; "
          f"largest array {name} {big.dtype}{list(big.shape)} ({_gib(_nbytes(big))})")
  return int(need), text


def check_fits(abstract_state, data_bytes: int, devices: int = 1, available: int | None = None) -> None:
  """Raises ConfigError when the state, its gradients and the data cannot fit in the device's free memory."""
  available = available_bytes() if available is None else available
  need, text = requirement(abstract_state, data_bytes, devices)
  if available is not None and need > available:
    device = jax.local_devices()[0]
    raise errors.ConfigError(f"this config needs at least {_gib(need)} per device ({text}) but {device.platform} "
                             f"device {device.id} has {_gib(available)} free: reduce model sizes, num_seeds or the "
                             f"sweep")
