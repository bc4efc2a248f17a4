"""Contractive autoencoder: reconstruction + contractive_weight * ||J_f(x)||_F^2, the squared Frobenius
norm of the encoder's Jacobian, computed exactly (Rifai et al. 2011, "Contractive Auto-Encoders", eq. 2)."""

from __future__ import annotations

from jaxae import losses
from jaxae.variants import base


def make_loss(config, net):
  recon = base.reconstruction(config, net)

  def loss_fn(params, hp, batch, key, train):
    x = batch["x"]
    _, logits = base.autoencode(net, params, x, key, train)
    loss, metrics = recon(logits, x)
    penalty = losses.contractive_penalty(lambda v: net.encode(params, v), x)
    loss = loss + hp["contractive_weight"] * penalty
    return loss, {**metrics, "jacobian_frobenius_sq": penalty, "loss": loss}

  return loss_fn


VARIANT = base.register(base.Variant(
    name="contractive", make_loss=make_loss,
    hparams={"contractive_weight": "loss.contractive_weight"},
    options={"loss.contractive_weight": 1e-3},
    description="exact squared Frobenius norm of the encoder Jacobian as a penalty"))
