"""Sharding the member axis (seeds x hyperparameter settings) over a 1-D device mesh, on one host or many.

Members never talk to each other, so with the state's leading axis sharded and the data replicated,
XLA partitions the vmapped step without any cross-device collective: 8 devices train 8x the members in
the same wall time. tests/test_sharding.py checks the compiled HLO for all-gather / all-reduce.

Across hosts (after jax.distributed.initialize(), see distributed.py) the mesh spans every process's
devices and each process holds only its own members' shards. The only cross-host traffic is what the
host loop reads back once per epoch (`to_host`: metric means, evaluation results) and orbax's own
coordination when every process writes its shards of a checkpoint to the shared workdir.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxae import errors

AXIS = "members"


def member_mesh(num_members: int, devices=None) -> Mesh:
  """A 1-D mesh over the most devices that divide `num_members` evenly (1 device if none do).

  With several processes every process contributes the same number of devices (so each trains
  num_members / num_processes members). Raises ConfigError (a ValueError) when num_members is not a multiple of the
  number of processes: some process would have no member to train.
  """
  devices = list(devices if devices is not None else jax.devices())
  hosts = sorted({d.process_index for d in devices})
  if len(hosts) == 1:
    return Mesh(devices[:math.gcd(num_members, len(devices))], (AXIS,))
  if num_members % len(hosts):
    raise errors.ConfigError(f"{num_members} members (seeds x sweep settings) cannot be split evenly over {len(hosts)} "
                     f"processes: use a multiple of {len(hosts)} (e.g. num_seeds={len(hosts) * math.ceil(num_members / len(hosts))})")
  by_host = [[d for d in devices if d.process_index == h] for h in hosts]
  per_host = math.gcd(num_members // len(hosts), min(len(ds) for ds in by_host))
  return Mesh([d for ds in by_host for d in ds[:per_host]], (AXIS,))


def members_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def replicate(tree, mesh: Mesh):
  """Host arrays (the same on every process) copied to every device of the mesh."""
  sharding = replicated(mesh)
  return jax.tree.map(lambda a: _from_host(np.asarray(a), sharding), tree)


def _from_host(a: np.ndarray, sharding: NamedSharding) -> jax.Array:
  # Each process fills only its addressable shards: works on one host and across hosts alike.
  return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])


def abstract_members(abstract_tree, mesh: Mesh):
  """ShapeDtypeStructs with the members sharding attached: the restore target for orbax."""
  sharding = members_sharding(mesh)
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), abstract_tree)


def to_host(tree):
  """numpy copies of every member's values, on every process (a collective when arrays span hosts)."""
  leaves = jax.tree.leaves(tree)
  if all(getattr(a, "is_fully_addressable", True) for a in leaves):
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)


def first_local(a: jax.Array):
  """Element [0] of an array whose members all hold the same value (e.g. TrainState.step), read from
  this process's own first shard: no transfer between hosts."""
  return np.asarray(a.addressable_shards[0].data).reshape(-1)[0]


def any_process(flag: bool) -> bool:
  """True when `flag` is True on any process (a collective with several processes; local otherwise)."""
  if jax.process_count() == 1:
    return bool(flag)
  return bool(np.any(multihost_utils.process_allgather(np.asarray([flag], np.int32))))


def barrier(name: str) -> None:
  """Waits for every process (no-op with one)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def is_primary() -> bool:
  """The process that writes the workdir's own files (orbax coordinates checkpoints itself)."""
  return jax.process_index() == 0
