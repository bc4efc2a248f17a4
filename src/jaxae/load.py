"""Loading a finished or partial run for analysis: `load_run(workdir)` (no optimizer state is read)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from jaxae import checkpoints, configs, train
from jaxae import data as data_lib


@dataclasses.dataclass(frozen=True)
class Run:
  """A finished or partial run, loaded for analysis (no optimizer state is read)."""

  config: ml_collections.ConfigDict
  model: Any  # models.Net: the network (encode / decode / head with params; prepare scales raw inputs)
  params: Any  # pytree; leading member axis unless one member was selected
  members: list  # [{'setting': {...}, 'seed': s}] for the params' members, in order
  step: int
  epoch: int
  workdir: str
  diverged: dict = dataclasses.field(default_factory=dict)  # {index into `members`: first non-finite epoch}

  @property
  def variant(self):
    """The run's variants.Variant (its code at inference, its headline metric)."""
    return configs.variant_of(self.config)


@contextlib.contextmanager
def _quiet_read_only():
  import logging

  class Filter(logging.Filter):
    def filter(self, record):
      return not any(s in record.getMessage() for s in ("read only", "read_only=True"))

  logger, f = logging.getLogger("absl"), Filter()
  logger.addFilter(f)
  try:
    yield
  finally:
    logger.removeFilter(f)


def load_run(workdir: str, seed: int | None = None, setting: int | None = None, step: int | None = None,
             group: str | None = None) -> Run:
  """Loads params of every member (or of one `seed`, optionally of one sweep `setting` index).

  `step` defaults to the latest complete checkpoint. `group` picks a sub-run of a sweep with static keys
  (a folder name under `<workdir>/groups/`). Raises FileNotFoundError when there is no checkpoint,
  CheckpointError when it is damaged (unreadable, or bytes that do not match the checksums saved
  with it), KeyError for a seed that the run does not have.
  """
  if group is not None:
    workdir = os.path.join(workdir, "groups", group)
  with _quiet_read_only():  # orbax warns that a read-only manager is read-only, at every call
    mngr = checkpoints.manager(workdir, read_only=True)
  step = mngr.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no complete checkpoint in {os.path.join(workdir, checkpoints.CHECKPOINT_DIR)}")
  meta = checkpoints.read_meta(mngr, step)
  config = configs.from_dict(meta["config"])
  normalizer = data_lib.Normalizer.from_json(json.dumps(meta["normalizer"])) if meta.get("normalizer") else None
  target = data_lib.Target.from_json(json.dumps(meta["target"])) if meta.get("target") else None
  net = train.build_net(config, tuple(meta["data_shape"]), normalizer, target)
  num = len(meta["members"])
  abstract = jax.eval_shape(lambda: net.init(jax.random.key(0), jax.numpy.zeros((1, *net.data_shape))))
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct((num, *a.shape), a.dtype), abstract)
  try:
    checkpoints.check_stored_tree(mngr, step, abstract)
    params = mngr.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract))).params
    checkpoints.verify(mngr, step, {"params": params}, meta)  # the bytes are the ones saved
  except checkpoints.CheckpointError:
    mngr.close()
    raise
  except Exception as e:
    mngr.close()
    raise checkpoints.CheckpointError(f"checkpoint step {step} at {checkpoints.step_path(mngr, step)} is damaged: "
                                      f"cannot read params ({type(e).__name__}: {checkpoints.first_line(e)})") from None
  members = meta["members"]
  diverged = {int(k): v for k, v in meta.get("diverged", {}).items()}
  picks = list(range(len(members)))
  if seed is not None or setting is not None:
    picks = [i for i, m in enumerate(members)
             if (seed is None or m["seed"] == seed) and (setting is None or m["setting_index"] == setting)]
    if not picks:
      raise KeyError(f"no member with seed={seed} setting={setting} in {workdir}: members are {members}")
    if len(picks) == 1:
      params = jax.tree.map(lambda a: a[picks[0]], params)
    else:
      params = jax.tree.map(lambda a: a[np.asarray(picks)], params)
    members = [members[i] for i in picks]
  mngr.close()
  diverged = {j: diverged[i] for j, i in enumerate(picks) if i in diverged}
  return Run(config, net, params, members, step, meta["epoch"], workdir, diverged)
