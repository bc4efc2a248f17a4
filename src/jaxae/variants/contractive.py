"""Contractive autoencoder: reconstruction + contractive_weight * ||J_f(x)||_F^2, the squared Frobenius
norm of the encoder's Jacobian, computed exactly (Rifai et al. 2011, "Contractive Auto-Encoders", eq. 2).

`loss.contractive_jacobian`: 'jacrev' differentiates any encoder (d reverse passes per example);
'structured' forms the Jacobian of a built-in MLP or linear encoder from its weights as batched matmuls
(losses.mlp_contractive_penalty: the same value); 'auto' takes 'structured' where it applies, because it
is the faster of the two there: 87 vs 106 ms per train step of configs/contractive.py on a 2-core CPU
(`python -m benchmarks.contractive_jacobian`, benchmarks/CONTRACTIVE_JACOBIAN.md). 'jacrev' stays the
general path and the reference that tests compare 'structured' with.
"""

from __future__ import annotations

from jaxae import losses, models, validation
from jaxae.variants import base

METHODS = ("auto", "structured", "jacrev")


def _structured_applies(config) -> bool:
  return config.model.backbone in ("mlp", "linear") and not config.model.encoder


def penalty_fn(config, net):
  """(params, x) -> mean_i ||J_f(x_i)||_F^2 of the deterministic encoder (no dropout), by the configured method."""
  method = config.loss.contractive_jacobian
  if method == "jacrev" or not _structured_applies(config):
    return lambda params, x: losses.contractive_penalty(lambda v: net.encode(params, v), x)
  enc = net.module.encoder
  act = models.ACTIVATIONS[enc.activation]
  depth = len(enc.hidden) if enc.backbone == "mlp" else 0

  def penalty(params, x):
    p = params["params"]["encoder"]
    layers = [(p[f"Dense_{i}"]["kernel"], p[f"Dense_{i}"]["bias"]) for i in range(depth)]
    return losses.mlp_contractive_penalty(layers, act, p["latent"]["kernel"], x)

  return penalty


def make_loss(config, net):
  recon = base.reconstruction(config, net)
  penalty_of = penalty_fn(config, net)

  def loss_fn(params, hp, batch, key, train):
    x = batch["x"]
    _, logits = base.autoencode(net, params, x, key, train)
    loss, metrics = recon(logits, x)
    penalty = penalty_of(params, x)
    loss = loss + hp["contractive_weight"] * penalty
    return loss, {**metrics, "jacobian_frobenius_sq": penalty, "loss": loss}

  return loss_fn


def validate(config) -> None:
  method = config.loss.contractive_jacobian
  if method not in METHODS:
    raise validation.ConfigError(f"loss.contractive_jacobian={method!r} is not one of {', '.join(map(repr, METHODS))}")
  if method == "structured" and not _structured_applies(config):
    raise validation.ConfigError("loss.contractive_jacobian='structured' needs the built-in model.backbone='mlp' or "
                              "'linear' encoder: use 'jacrev' (any encoder) or 'auto'")


VARIANT = base.register(base.Variant(
    name="contractive", make_loss=make_loss, validate=validate,
    hparams={"contractive_weight": "loss.contractive_weight"},
    options={"loss.contractive_weight": 1e-3, "loss.contractive_jacobian": "auto"},
    description="exact squared Frobenius norm of the encoder Jacobian as a penalty"))
