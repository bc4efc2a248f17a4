"""Orbax checkpoints of a whole vmapped run: the I/O only (resume policy: workdir.py; reading runs: load.py).

A checkpoint (one orbax step directory under `<workdir>/checkpoints/`, named by the global train step)
holds three items:
  params   the model parameters of every member (leading member axis)
  state    optimizer state, step, metric sums of the current epoch, hparams, the variant's running
           state (if any), and every member's PRNG key as raw key data (`jax.random.key_data`;
           rebuilt with `wrap_key_data`)
  meta     JSON: epoch, members, diverged members, image shape, the flattened config
Everything later training depends on is in there (data order and noise are pure functions of key,
epoch and step), so a resumed run is bit-identical to an uninterrupted one.

Orbax writes each step to a temporary directory and renames it when complete, so a process killed
mid-save leaves no step that `all_steps()` lists; `cleanup_tmp_directories` removes the debris.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxae import sharding

CHECKPOINT_DIR = "checkpoints"


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be used: damaged, or written by an incompatible config."""


class CheckpointMismatch(CheckpointError):
  """A readable checkpoint whose config or stored arrays do not match this config / code (not damage)."""


def manager(workdir: str, config=None, read_only: bool = False) -> ocp.CheckpointManager:
  """The CheckpointManager of `<workdir>/checkpoints` (keeps `checkpoint.keep` steps)."""
  keep = config.checkpoint.keep if config is not None else None
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=not read_only, cleanup_tmp_directories=not read_only,
      read_only=read_only, enable_async_checkpointing=True)
  # Handlers given up front (not just item names) so `item_metadata` can read a step's stored tree.
  handlers = dict(params=ocp.StandardCheckpointHandler(), state=ocp.StandardCheckpointHandler(),
                  meta=ocp.JsonCheckpointHandler())
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR)), options=options,
                               item_handlers=handlers)


def _state_item(state) -> dict:
  item = dict(step=state.step, opt_state=state.opt_state, rng=jax.random.key_data(state.rng),
              hparams=state.hparams, metric_sums=state.metric_sums)
  if state.aux is not None:
    item["aux"] = state.aux
  return item


def save(mngr: ocp.CheckpointManager, state, meta: dict) -> None:
  """Starts an asynchronous save of `state` at its global step (call mngr.wait_until_finished())."""
  step = int(sharding.first_local(state.step))
  mngr.save(step, force=True, args=ocp.args.Composite(
      params=ocp.args.StandardSave(state.params),
      state=ocp.args.StandardSave(_state_item(state)),
      meta=ocp.args.JsonSave(meta)))


def step_path(mngr: ocp.CheckpointManager, step: int) -> str:
  return os.path.join(str(mngr.directory), str(step))


def read_meta(mngr: ocp.CheckpointManager, step: int) -> dict:
  try:
    return mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
  except Exception as e:
    raise CheckpointError(f"checkpoint step {step} at {step_path(mngr, step)} is damaged: cannot read its "
                          f"metadata ({type(e).__name__}: {str(e)[:200]})") from None


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state) -> tuple[Any, dict]:
  """(TrainState, meta) of checkpoint `step`, restored against `abstract_state` (jax.eval_shape of init).

  Raises CheckpointError naming the step and its path when any item is missing or damaged.
  """
  target = _state_item_abstract(abstract_state)
  check_stored_tree(mngr, step, abstract_state.params, target)
  try:
    restored = mngr.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_state.params),
        state=ocp.args.StandardRestore(target),
        meta=ocp.args.JsonRestore()))
    item = restored.state
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


def check_stored_tree(mngr: ocp.CheckpointManager, step: int, params_target, state_target=None) -> None:
  """Raises CheckpointError when the stored arrays differ from what this config and code expect.

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
  diffs = []
  for item in want:
    for path in sorted(set(stored[item]) | set(want[item])):
      got, exp = stored[item].get(path), want[item].get(path)
      if got != exp:
        diffs.append(f"{item}/{path}: stored {'absent' if got is None else f'{got[1]}{list(got[0])}'}, "
                     f"expected {'absent' if exp is None else f'{exp[1]}{list(exp[0])}'}")
  if diffs:
    more = f" (+{len(diffs) - 3} more)" if len(diffs) > 3 else ""
    raise CheckpointMismatch(f"checkpoint step {step} at {step_path(mngr, step)} does not match this config or "
                             f"version of jaxae: {'; '.join(diffs[:3])}{more}. Use another --workdir, or --fresh "
                             f"to discard it and start over.")


def first_line(e: Exception) -> str:
  return str(e).strip().splitlines()[0][:300] if str(e).strip() else ""


def _check_finite_structure(state, abstract_state) -> None:
  got = jax.tree.map(lambda a: (a.shape, a.dtype), state)
  want = jax.tree.map(lambda a: (a.shape, a.dtype), abstract_state)
  if got != want:
    raise CheckpointError("restored arrays do not have the shapes the config implies")
