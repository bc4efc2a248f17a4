"""Vanilla autoencoder: the reconstruction loss alone (Rumelhart, Hinton & Williams 1986; the
reference protocol's MSE of sigmoid outputs)."""

from __future__ import annotations

from jaxae.variants import base


def make_loss(config, net):
  recon = base.reconstruction(config, net)

  def loss_fn(params, hp, batch, key, train):
    x = batch["x"]
    _, logits = base.autoencode(net, params, x, key, train)
    loss, metrics = recon(logits, x)
    return loss, {**metrics, "loss": loss}

  return loss_fn


VARIANT = base.register(base.Variant(name="vanilla", make_loss=make_loss, description="reconstruction loss only"))
