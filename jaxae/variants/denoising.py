"""Denoising autoencoder: reconstruct the clean input from a corrupted one (Vincent et al. 2008,
sec. 2.3; 2010 sec. 4.2). Corruption is a training-time device only: evaluation feeds clean inputs."""

from __future__ import annotations

from jaxae import configs, losses
from jaxae.variants import base

NOISES = ("gaussian", "masking", "salt_pepper")


def make_loss(config, net):
  recon = base.reconstruction(config, net)
  kind = config.noise.kind

  def loss_fn(params, hp, batch, key, train):
    x = batch["x"]
    x_in = losses.corrupt(key, x, kind, hp["noise_level"]) if train else x
    _, logits = base.autoencode(net, params, x_in, key, train)
    loss, metrics = recon(logits, x)
    return loss, {**metrics, "loss": loss}

  return loss_fn


def validate(config) -> None:
  if config.noise.kind not in NOISES:
    raise configs.ConfigError(f"noise.kind={config.noise.kind!r} is not one of {', '.join(map(repr, NOISES))}")
  if config.noise.kind in ("masking", "salt_pepper") and not config.noise.level <= 1:
    raise configs.ConfigError(f"noise.level={config.noise.level!r} is a probability for {config.noise.kind} noise: "
                              f"must be in [0, 1]")


VARIANT = base.register(base.Variant(
    name="denoising", make_loss=make_loss, validate=validate,
    hparams={"noise_level": "noise.level"},
    options={"noise.kind": "gaussian", "noise.level": 0.3},
    description="reconstruct clean inputs from corrupted ones (gaussian, masking, salt_pepper)"))
