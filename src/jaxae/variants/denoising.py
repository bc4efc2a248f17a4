"""Denoising autoencoder: reconstruct the clean input from a corrupted one (Vincent et al. 2008,
sec. 2.3; 2010 sec. 4.2). Corruption is a training-time device only: evaluation feeds clean inputs.

Gaussian noise is clipped to [0, 1] by default (`noise.clip=True`), right for images; vectors on any
other scale (a table, standardized features, the scalar example x in {-2, 2}) take the plain additive
noise of Vincent et al. 2010 with `noise.clip=False`, and a run that would clip such data is refused.
"""

from __future__ import annotations

import numpy as np

from jaxae import losses, validation
from jaxae import data as data_lib
from jaxae.variants import base

NOISES = ("gaussian", "masking", "salt_pepper")


def make_loss(config, net):
  recon = base.reconstruction(config, net)
  kind, clip = config.noise.kind, bool(config.noise.clip)

  def loss_fn(params, hp, batch, key, train):
    x = batch["x"]
    x_in = losses.corrupt(key, x, kind, hp["noise_level"], clip) if train else x
    _, logits = base.autoencode(net, params, x_in, key, train)
    loss, metrics = recon(logits, x)
    return loss, {**metrics, "loss": loss}

  return loss_fn


def validate(config) -> None:
  if config.noise.kind not in NOISES:
    raise validation.ConfigError(f"noise.kind={config.noise.kind!r} is not one of {', '.join(map(repr, NOISES))}")
  if not isinstance(config.noise.clip, bool):
    raise validation.ConfigError(f"noise.clip={config.noise.clip!r} must be True or False")
  if config.noise.kind in ("masking", "salt_pepper") and not config.noise.level <= 1:
    raise validation.ConfigError(f"noise.level={config.noise.level!r} is a probability for {config.noise.kind} noise: "
                              f"must be in [0, 1]")


def check_data(config, data) -> None:
  """Clipped Gaussian noise needs inputs in [0, 1] (after data.normalize): else a one-line DataError."""
  if config.noise.kind != "gaussian" or not config.noise.clip or config.data.normalize == "minmax":
    return
  how = "set noise.clip=False for plain additive noise (or data.normalize=minmax)"
  if config.data.normalize == "standardize":
    raise data_lib.DataError(f"noise.clip=True clips corrupted inputs to [0, 1], but data.normalize='standardize' "
                             f"centres them on 0: {how}")
  split = data.train
  if split.x.dtype == np.uint8:
    return
  lo, hi = np.inf, -np.inf
  for chunk in data_lib.row_chunks(split.x):
    lo, hi = min(lo, float(chunk.min())), max(hi, float(chunk.max()))
  if lo < 0 or hi > 1:
    raise data_lib.DataError(f"noise.clip=True clips corrupted inputs to [0, 1], but {split.name} takes values in "
                             f"[{lo:g}, {hi:g}]: {how}")


VARIANT = base.register(base.Variant(
    name="denoising", make_loss=make_loss, validate=validate, check_data=check_data,
    hparams={"noise_level": "noise.level"},
    options={"noise.kind": "gaussian", "noise.level": 0.3, "noise.clip": True},
    description="reconstruct clean inputs from corrupted ones (gaussian, masking, salt_pepper)"))
