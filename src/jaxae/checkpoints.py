"""Orbax checkpoints of a whole vmapped run: the I/O only (resume policy: workdir.py; reading runs: load.py).

A checkpoint (one orbax step directory under `<workdir>/checkpoints/`, named by the global train step)
holds three items:
  params   the model parameters of every member (leading member axis)
  state    optimizer state, step, metric sums of the current epoch, hparams, the variant's running
           state (if any), and every member's PRNG key as raw key data (`jax.random.key_data`;
           rebuilt with `wrap_key_data`)
  meta     JSON: epoch, members, diverged members, image shape, the config, and a checksum of every
           array of the other two items, per member (`checksums`), verified on every restore
Everything later training depends on is in there (data order and noise are pure functions of key,
epoch and step), so a resumed run is bit-identical to an uninterrupted one.

Orbax writes each step to a temporary directory and renames it when complete, so a process killed
mid-save leaves no step that `all_steps()` lists; `cleanup_tmp_directories` removes the debris.

Orbax checks the shard index of its zarr3 arrays (crc32c) but not the array data, so a flipped bit in
a data file would restore silently. jaxae therefore stores its own checksum of every array's bytes,
computed on the device that holds the array (one jitted pass, a few integers per array come back to
the host): for member m and leaf x (its bits as uint32 words w_i, i = 0..n-1),
  checksum = sum_i fmix32(w_i XOR fmix32(i + 1)) mod 2^32
with fmix32 MurmurHash3's 32-bit finalizer (a bijection of uint32: any change to one word changes the
sum; words swapped in place change it too). A restore whose bytes do not match is damage
(`--on_corrupt=previous` falls back), as is metadata that is not what jaxae writes or whose own CRC-32
(`checksums.meta`, zlib over its canonical JSON) no longer matches.
"""

from __future__ import annotations

import os
import weakref
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxae import errors, sharding

CHECKPOINT_DIR = "checkpoints"


class CheckpointError(errors.BadInput, RuntimeError):
  """A checkpoint that cannot be used: damaged, or written by an incompatible config."""


class CheckpointMismatch(CheckpointError):
  """A readable checkpoint whose config or stored arrays do not match this config / code (not damage)."""


class _NoReadOnlyNotes:
  """Drops orbax's notes that a read-only manager is read-only (logged at every call)."""

  def filter(self, record) -> bool:
    return not any(s in record.getMessage() for s in ("read only", "read_only=True"))


def _quiet_read_only() -> None:
  import logging

  logger = logging.getLogger("absl")
  if not any(isinstance(f, _NoReadOnlyNotes) for f in logger.filters):
    logger.addFilter(_NoReadOnlyNotes())


_OPEN: "weakref.WeakSet[ocp.CheckpointManager]" = weakref.WeakSet()


def close_all() -> None:
  """Waits for and closes every manager still open (after an error: no background write outlives it)."""
  for mngr in list(_OPEN):
    try:
      mngr.close()
    except Exception:  # noqa: BLE001 - the failure is already being reported
      pass


def manager(workdir: str, config=None, read_only: bool = False) -> ocp.CheckpointManager:
  """The CheckpointManager of `<workdir>/checkpoints` (keeps `checkpoint.keep` steps)."""
  if read_only:
    _quiet_read_only()
  keep = config.checkpoint.keep if config is not None else None
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=not read_only, cleanup_tmp_directories=not read_only,
      read_only=read_only, enable_async_checkpointing=True)
  # Handlers given up front (not just item names) so `item_metadata` can read a step's stored tree.
  handlers = dict(params=ocp.StandardCheckpointHandler(), state=ocp.StandardCheckpointHandler(),
                  meta=ocp.JsonCheckpointHandler())
  mngr = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR)), options=options,
                               item_handlers=handlers)
  if not read_only:
    _OPEN.add(mngr)
  return mngr


def _state_item(state) -> dict:
  item = dict(step=state.step, opt_state=state.opt_state, rng=jax.random.key_data(state.rng),
              hparams=state.hparams, metric_sums=state.metric_sums)
  if state.aux is not None:
    item["aux"] = state.aux
  return item


def state_bytes(state) -> int:
  """Bytes of a (possibly abstract) train state's arrays on this process: an upper bound of a checkpoint's size."""
  import math

  total = 0
  for a in jax.tree.leaves(state):
    try:
      itemsize = np.dtype(a.dtype).itemsize
    except TypeError:  # a typed PRNG key: stored as 2 x uint32 key data
      itemsize = 8
    total += int(math.prod(a.shape)) * itemsize
  return total // max(jax.process_count(), 1)


def check_disk_space(directory: str, state, what: str) -> None:
  """Raises EnvironmentFailure when the filesystem of `directory` cannot hold one more checkpoint of
  `state` (its uncompressed size, plus 256 KiB of metadata): refused before orbax starts writing, so a
  full disk never leaves a half-written step or a flood of errors from its writer threads."""
  import shutil

  path = os.path.abspath(directory)
  while not os.path.exists(path) and os.path.dirname(path) != path:
    path = os.path.dirname(path)
  if not os.access(path, os.W_OK):
    raise errors.EnvironmentFailure(f"cannot write in {path} (read-only filesystem or no permission)")
  need = state_bytes(state) + (1 << 18)
  free = shutil.disk_usage(path).free
  if free < need:
    raise errors.EnvironmentFailure(f"not enough disk space for {what} in {directory}: it needs up to "
                                    f"{need / 2**20:.1f} MiB, {free / 2**20:.1f} MiB are free")


CHECKSUM_ALGORITHM = "fmix32-sum-v1"


def _fmix32(h, xp):
  """MurmurHash3's 32-bit finalizer (Appleby 2011): a bijection of uint32 that mixes every input bit.
  `xp` is numpy or jax.numpy (uint32 arithmetic wraps modulo 2^32 in both)."""
  h = h ^ (h >> 16)
  h = h * xp.uint32(0x85EBCA6B)
  h = h ^ (h >> 13)
  h = h * xp.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def _words(a, xp):
  """The bits of `a` (leading member axis) as uint32 words, (M, n); `xp` is numpy or jax.numpy."""
  a = a.reshape(a.shape[0], -1) if a.ndim else a.reshape(1, 1)
  if a.dtype == xp.bool_:
    return a.astype(xp.uint32)
  unsigned = {1: xp.uint8, 2: xp.uint16, 4: xp.uint32, 8: xp.uint32}[np.dtype(a.dtype).itemsize]
  bits = a.view(unsigned) if xp is np else jax.lax.bitcast_convert_type(a, unsigned)
  return bits.reshape(a.shape[0], -1).astype(xp.uint32)


def _leaf_checksum(a, xp):
  w = _words(a, xp)
  i = xp.arange(w.shape[1], dtype=xp.uint32)
  return xp.sum(_fmix32(w ^ _fmix32(i + xp.uint32(1), xp), xp), axis=1, dtype=xp.uint32)


@jax.jit
def _device_checksum(a):
  import jax.numpy as jnp

  return _leaf_checksum(a, jnp)


def _on_host(a) -> bool:
  """A jax.Array on this process's CPU (numpy reads it without a copy), or a numpy array."""
  if isinstance(a, np.ndarray):
    return True
  return getattr(a, "is_fully_addressable", False) and all(d.platform == "cpu" for d in a.devices())


def checksums(items: dict) -> dict:
  """{item: {leaf path: [checksum per member]}} of the arrays of `items` (see the module docstring).

  Computed where the arrays are: with numpy on the host for CPU arrays (no copy, no compilation), with
  one jitted pass per leaf shape on an accelerator or across hosts (a few integers come back).
  """
  leaves = jax.tree.leaves(items)
  if all(_on_host(a) for a in leaves):
    sums = jax.tree.map(lambda a: _leaf_checksum(np.asarray(a), np), items)
  else:
    sums = sharding.to_host(jax.tree.map(_device_checksum, items))
  return {k: {path: [int(x) for x in np.ravel(v)] for path, v in _named(sums[k]).items()} for k in items}


def _named(tree) -> dict:
  def name(k):
    return str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
  return {"/".join(name(k) for k in path): a for path, a in jax.tree_util.tree_flatten_with_path(tree)[0]}


def verify(mngr, step: int, items: dict, meta: dict) -> None:
  """Raises CheckpointError (damage) when restored `items` do not match the checksums in `meta`.

  Checkpoints written before checksums existed (no 'checksums' in meta) are not verified.
  """
  saved = meta.get("checksums")
  if saved is None:
    return
  if not isinstance(saved, dict) or saved.get("algorithm") != CHECKSUM_ALGORITHM:
    raise CheckpointError(f"checkpoint step {step} at {step_path(mngr, step)} is damaged or not written by this "
                          f"jaxae: its metadata has no valid checksums")
  got = checksums(items)
  for item, leaves in got.items():
    want = saved.get(item)
    if not isinstance(want, dict):
      raise CheckpointError(f"checkpoint step {step} at {step_path(mngr, step)} is damaged: no checksums of {item}")
    for path, values in leaves.items():
      if want.get(path) != values:
        bad = [m for m, (a, b) in enumerate(zip(values, want.get(path) or [None] * len(values))) if a != b]
        raise CheckpointError(f"checkpoint step {step} at {step_path(mngr, step)} is damaged: the bytes of "
                              f"{item}/{path} (member {bad[0] if bad else '?'}) do not match the checksum saved "
                              f"with them")


def save(mngr: ocp.CheckpointManager, state, meta: dict) -> None:
  """Starts an asynchronous save of `state` at its global step (call mngr.wait_until_finished()).

  The checksums of its arrays go into `meta` (computed before the save starts, on the device).
  """
  step = int(sharding.first_local(state.step))
  mngr.wait_until_finished()  # the previous save has taken its space (orbax waits for it anyway)
  check_disk_space(str(mngr.directory), state, f"checkpoint step {step}")
  meta = {**meta, "checksums": {"algorithm": CHECKSUM_ALGORITHM,
                                **checksums({"params": state.params, "state": _state_item(state)})}}
  meta["checksums"]["meta"] = meta_checksum(meta)
  mngr.save(step, force=True, args=ocp.args.Composite(
      params=ocp.args.StandardSave(state.params),
      state=ocp.args.StandardSave(_state_item(state)),
      meta=ocp.args.JsonSave(meta)))


def step_path(mngr: ocp.CheckpointManager, step: int) -> str:
  return os.path.join(str(mngr.directory), str(step))


def meta_checksum(meta: dict) -> int:
  """CRC-32 (zlib) of the metadata's canonical JSON, without the checksum itself: a changed value is damage."""
  import json
  import zlib

  body = {**meta, "checksums": {k: v for k, v in meta.get("checksums", {}).items() if k != "meta"}}
  return zlib.crc32(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


def _is_int(v, low: int = 0) -> bool:
  return isinstance(v, int) and not isinstance(v, bool) and v >= low


def meta_problem(meta, step: int) -> str | None:
  """Why `meta` is not the metadata jaxae writes for checkpoint `step` (None when it is)."""
  if not isinstance(meta, dict):
    return f"a JSON {type(meta).__name__}, not an object"
  if not _is_int(meta.get("epoch")):
    return f"'epoch' is {meta.get('epoch')!r}, not a non-negative integer"
  if "step" in meta and meta["step"] != step:
    return f"'step' is {meta['step']!r} in the folder of step {step}"
  members = meta.get("members")
  if not isinstance(members, list) or not members or not all(
      isinstance(m, dict) and _is_int(m.get("seed")) and _is_int(m.get("setting_index")) and
      isinstance(m.get("setting"), dict) for m in members):
    return "'members' is not a list of {setting_index, setting, seed}"
  diverged = meta.get("diverged")
  if not isinstance(diverged, dict) or not all(
      isinstance(k, str) and k.isdigit() and int(k) < len(members) and _is_int(v) for k, v in diverged.items()):
    return "'diverged' is not {member index: epoch}"
  shape = meta.get("data_shape")
  if not isinstance(shape, list) or not shape or not all(_is_int(d, 1) for d in shape):
    return f"'data_shape' is {shape!r}, not a list of positive integers"
  if not isinstance(meta.get("config"), dict):
    return "'config' is not an object"
  if meta.get("normalizer") is not None and not isinstance(meta.get("normalizer"), dict):
    return "'normalizer' is not an object"
  saved = meta.get("checksums")
  if isinstance(saved, dict) and "meta" in saved and saved["meta"] != meta_checksum(meta):
    return "does not match the checksum saved with it (a value was changed)"
  return None


def read_meta(mngr: ocp.CheckpointManager, step: int) -> dict:
  """The metadata of checkpoint `step`; CheckpointError (damage) when unreadable or not what jaxae writes."""
  try:
    meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
  except Exception as e:
    raise CheckpointError(f"checkpoint step {step} at {step_path(mngr, step)} is damaged: cannot read its "
                          f"metadata ({type(e).__name__}: {first_line(e)[:200]})") from None
  problem = meta_problem(meta, step)
  if problem:
    raise CheckpointError(f"checkpoint step {step} is damaged: {os.path.join(step_path(mngr, step), 'meta', 'metadata')}"
                          f" {problem}; it is not what jaxae wrote")
  return meta


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state, hparams: dict | None = None,
            say=None) -> tuple[Any, dict]:
  """(TrainState, meta) of checkpoint `step`, restored against `abstract_state` (jax.eval_shape of init).

  `hparams` ({name: float32 (M,)}, the program's per-member sweepable scalars) fills a hyperparameter that
  the checkpoint does not hold because the jaxae that wrote it predates it (e.g. optimizer.decay_fraction):
  its value in `state.hparams` and `opt_state.hyperparams` is this config's, which the config check has
  already found equal to the saved config's (a key the saved config lacks reads as its default, the value
  that reproduces the older behaviour). `say(line)` reports each filled name.
  Raises CheckpointMismatch for any other difference of the stored tree, CheckpointError naming the step
  and its path when any item is missing or damaged.
  """
  target = _state_item_abstract(abstract_state)
  missing = check_stored_tree(mngr, step, abstract_state.params, target, fillable=set(hparams or ()))
  if missing:
    target = _without_hparams(target, missing)
    if say is not None:
      say(f"checkpoint step {step} predates the hyperparameter(s) {', '.join(sorted(missing))}: resuming with "
          f"this config's value (" + ", ".join(f"{n}={np.asarray(hparams[n]).ravel()[0]:g}" for n in sorted(missing)) + ")")
  try:
    restored = mngr.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_state.params),
        state=ocp.args.StandardRestore(target),
        meta=ocp.args.JsonRestore()))
    problem = meta_problem(restored.meta, step)
    if problem:
      raise CheckpointError(f"checkpoint step {step} is damaged: {os.path.join(step_path(mngr, step), 'meta', 'metadata')}"
                            f" {problem}; it is not what jaxae wrote")
    verify(mngr, step, {"params": restored.params, "state": restored.state}, restored.meta)
    item = restored.state
    if missing:
      item = _with_hparams(item, _state_item_abstract(abstract_state), {n: hparams[n] for n in missing})
    state = abstract_state.replace(
        params=restored.params, step=item["step"], opt_state=item["opt_state"],
        rng=jax.random.wrap_key_data(item["rng"]), hparams=item["hparams"], metric_sums=item["metric_sums"],
        aux=item.get("aux"))
    _check_finite_structure(state, abstract_state)
  except CheckpointError:
    raise
  except Exception as e:
    raise CheckpointError(f"checkpoint step {step} at {step_path(mngr, step)} is damaged or incomplete "
                          f"({type(e).__name__}: {first_line(e)})") from None
  return state, restored.meta


# The containers of hyperparameters in a state item: TrainState.hparams and optax's InjectHyperparamsState.
_HPARAM_CONTAINERS = ("hparams", "hyperparams")


def _children(node):
  """[(name, child)] of a dict or namedtuple, [(None, child)] of a list/tuple; None for a leaf."""
  if isinstance(node, dict):
    return list(node.items())
  if isinstance(node, tuple) and hasattr(node, "_fields"):
    return list(zip(node._fields, node))
  if isinstance(node, (list, tuple)):
    return [(None, c) for c in node]
  return None


def _rebuild(node, children: list):
  if isinstance(node, dict):
    return dict(children)
  if isinstance(node, tuple) and hasattr(node, "_fields"):
    return type(node)(**dict(children))
  return type(node)(c for _, c in children)


def _without_hparams(tree, names: set, inside: bool = False):
  """`tree` without the entries `names` of its hyperparameter dicts (the target of an older checkpoint)."""
  kids = _children(tree)
  if kids is None:
    return tree
  kept = [(k, _without_hparams(c, names, k in _HPARAM_CONTAINERS)) for k, c in kids
          if not (inside and isinstance(tree, dict) and k in names)]
  return _rebuild(tree, kept)


def _with_hparams(tree, abstract, values: dict, inside: bool = False):
  """`tree` with the entries of `abstract`'s hyperparameter dicts that it lacks, set to `values[name]`
  (an (M,) array placed as the abstract leaf's sharding says)."""
  kids = _children(abstract)
  if kids is None:
    return tree
  if isinstance(abstract, dict):
    out = []
    for k, a in kids:
      if k in tree:
        out.append((k, _with_hparams(tree[k], a, values, k in _HPARAM_CONTAINERS)))
      elif inside and k in values:
        out.append((k, _placed(np.asarray(values[k], a.dtype).reshape(a.shape), getattr(a, "sharding", None))))
      else:
        raise KeyError(k)
    return dict(out)
  got = _children(tree)
  return _rebuild(tree, [(k, _with_hparams(t, a, values, k in _HPARAM_CONTAINERS))
                         for (k, t), (_, a) in zip(got, kids)])


def _placed(value: np.ndarray, where):
  if where is None:
    return jax.numpy.asarray(value)
  return jax.make_array_from_callback(value.shape, where, lambda index: value[index])


def _state_item_abstract(abstract_state) -> dict:
  rng = abstract_state.rng
  key_data = jax.ShapeDtypeStruct(rng.shape + (2,), np.uint32, sharding=getattr(rng, "sharding", None))
  item = dict(step=abstract_state.step, opt_state=abstract_state.opt_state, rng=key_data,
              hparams=abstract_state.hparams, metric_sums=abstract_state.metric_sums)
  if abstract_state.aux is not None:
    item["aux"] = abstract_state.aux
  return item


def _leaves(tree) -> dict[str, tuple]:
  """{'a/b/0': (shape, dtype)}: a tree's arrays by path, the same for dicts, lists and namedtuples."""
  def name(k):
    return str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"/".join(name(k) for k in path): (tuple(a.shape), np.dtype(a.dtype).name) for path, a in flat}


def check_stored_tree(mngr: ocp.CheckpointManager, step: int, params_target, state_target=None,
                      fillable: set = frozenset()) -> set:
  """Raises CheckpointError when the stored arrays differ from what this config and code expect.

  Returns the names in `fillable` whose hyperparameter entries (`.../hparams/<name>`,
  `.../hyperparams/<name>`) are absent from the stored state only, not refused: an older jaxae's checkpoint.

  Reads only the items' metadata, so a checkpoint from another config or jaxae version is reported as
  such, not as damage. Unreadable metadata is damage.
  """
  want = {"params": _leaves(params_target)}
  if state_target is not None:
    want["state"] = _leaves(state_target)
  try:
    stored = mngr.item_metadata(step)
    stored = {k: _leaves(getattr(stored[k], "tree", stored[k])) for k in want}
  except Exception as e:
    raise CheckpointError(f"checkpoint step {step} at {step_path(mngr, step)} is damaged or incomplete: cannot "
                          f"read its array metadata ({type(e).__name__}: {first_line(e)})") from None
  diffs, missing = [], set()
  for item in want:
    for path in sorted(set(stored[item]) | set(want[item])):
      got, exp = stored[item].get(path), want[item].get(path)
      parts = path.split("/")
      if (got is None and item == "state" and len(parts) >= 2 and parts[-2] in _HPARAM_CONTAINERS
          and parts[-1] in fillable):
        missing.add(parts[-1])
        continue
      if got != exp:
        diffs.append(f"{item}/{path}: stored {'absent' if got is None else f'{got[1]}{list(got[0])}'}, "
                     f"expected {'absent' if exp is None else f'{exp[1]}{list(exp[0])}'}")
  if diffs:
    more = f" (+{len(diffs) - 3} more)" if len(diffs) > 3 else ""
    raise CheckpointMismatch(f"checkpoint step {step} at {step_path(mngr, step)} does not match this config or "
                             f"version of jaxae: {'; '.join(diffs[:3])}{more}. Use another --workdir, or --fresh "
                             f"to discard it and start over.")
  return missing


def first_line(e: Exception) -> str:
  return str(e).strip().splitlines()[0][:300] if str(e).strip() else ""


def _check_finite_structure(state, abstract_state) -> None:
  got = jax.tree.map(lambda a: (a.shape, a.dtype), state)
  want = jax.tree.map(lambda a: (a.shape, a.dtype), abstract_state)
  if got != want:
    raise CheckpointError("restored arrays do not have the shapes the config implies")
