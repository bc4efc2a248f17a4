"""Multi-host start-up: `maybe_initialize()` joins a multi-process JAX job when the environment describes one.

Members never communicate, so several hosts simply extend the member mesh (sharding.py): every process
runs the same command on the same (shared) workdir, `jax.devices()` then lists all hosts' devices, and
each host trains its own members and writes its own shards of each checkpoint; process 0 writes the
workdir's other files (run.py). Call `maybe_initialize()` once, before anything touches a device.

Recognized environments (checked in this order):
  JAXAE_COORDINATOR=host:port   explicit; with JAXAE_NUM_PROCESSES and JAXAE_PROCESS_ID (and optionally
                                JAXAE_LOCAL_DEVICE_IDS="0,1")
  Slurm                         SLURM_JOB_ID with SLURM_NTASKS > 1 (one task per host or per device)
  Cloud TPU pods                TPU_WORKER_HOSTNAMES / MEGASCALE_COORDINATOR_ADDRESS with more than one worker
For Slurm and TPU, jax.distributed.initialize() reads the rest of the environment itself.
"""

from __future__ import annotations

import os
from typing import Mapping

import jax

from jaxae import errors

_initialized = False


def detect(env: Mapping[str, str] | None = None) -> tuple[str, dict] | None:
  """(cluster kind, jax.distributed.initialize kwargs) the environment asks for, or None for one process.

  Raises ConfigError (a ValueError) when JAXAE_COORDINATOR is set without a valid process count and id.
  """
  env = os.environ if env is None else env
  if env.get("JAXAE_COORDINATOR"):
    try:
      kwargs = dict(coordinator_address=env["JAXAE_COORDINATOR"], num_processes=int(env["JAXAE_NUM_PROCESSES"]),
                    process_id=int(env["JAXAE_PROCESS_ID"]))
    except (KeyError, ValueError) as e:
      raise errors.ConfigError("JAXAE_COORDINATOR=host:port needs integer JAXAE_NUM_PROCESSES and JAXAE_PROCESS_ID "
                       f"({type(e).__name__}: {e})") from None
    if not 0 <= kwargs["process_id"] < kwargs["num_processes"]:
      raise errors.ConfigError(f"JAXAE_PROCESS_ID={kwargs['process_id']} must be in [0, JAXAE_NUM_PROCESSES={kwargs['num_processes']})")
    if env.get("JAXAE_LOCAL_DEVICE_IDS"):
      kwargs["local_device_ids"] = [int(i) for i in env["JAXAE_LOCAL_DEVICE_IDS"].split(",")]
    return "explicit", kwargs
  if env.get("SLURM_JOB_ID") and int(env.get("SLURM_NTASKS", "1") or 1) > 1:
    return "slurm", {}
  tpu_hosts = env.get("TPU_WORKER_HOSTNAMES", "")
  if len([h for h in tpu_hosts.split(",") if h]) > 1 or env.get("MEGASCALE_COORDINATOR_ADDRESS"):
    return "tpu", {}
  return None


def maybe_initialize(env: Mapping[str, str] | None = None) -> bool:
  """Calls jax.distributed.initialize() when `detect` finds a multi-process job; idempotent.

  Returns True when this process is part of a multi-process job. Must run before the first use of a
  device (jax raises otherwise).
  """
  global _initialized
  if _initialized:
    return True
  found = detect(env)
  if found is None:
    return False
  jax.distributed.initialize(**found[1])
  _initialized = True
  return True
