"""Sparse autoencoder: a sparsity penalty on the code, or a hard k-sparse code.

`loss.sparsity`: 'l1' adds sparsity_weight * mean |z| (the reference protocol, 1e-3); 'kl' adds
sparsity_weight * sum_j KL(rho || rho_hat_j) of the mean sigmoid activations (Ng 2011, sec. 2.3);
'topk' keeps the k largest latents of each example (Makhzani & Frey 2014, alg. 1), at training and at
inference. Reports `l0`, the mean number of nonzero latents per example.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxae import losses, validation
from jaxae.variants import base

SPARSITIES = ("l1", "kl", "topk")


def _sparsify(config):
  k = config.loss.topk
  return (lambda z: losses.top_k(z, k)) if config.loss.sparsity == "topk" else (lambda z: z)


def make_loss(config, net):
  recon = base.reconstruction(config, net)
  kind = config.loss.sparsity
  sparsify = _sparsify(config)

  def loss_fn(params, hp, batch, key, train):
    x = batch["x"]
    z = sparsify(net.encode(params, x, key, train))
    logits = net.decode(params, z, key, train)
    loss, metrics = recon(logits, x)
    if kind in ("l1", "kl"):
      penalty = losses.l1_sparsity(z) if kind == "l1" else losses.kl_sparsity(z, hp["rho"])
      loss = loss + hp["sparsity_weight"] * penalty
      metrics["sparsity_penalty"] = penalty
    flat = z.reshape(z.shape[0], -1)
    metrics["l0"] = jnp.mean(jnp.sum(jnp.abs(flat) > 1e-6, axis=-1).astype(jnp.float32))  # nonzero units per example
    return loss, {**metrics, "loss": loss}

  return loss_fn


def make_code(config, net):
  sparsify = _sparsify(config)
  return lambda params, x: sparsify(net.encode(params, x))


def validate(config) -> None:
  if config.loss.sparsity not in SPARSITIES:
    raise validation.ConfigError(f"loss.sparsity={config.loss.sparsity!r} is not one of {', '.join(map(repr, SPARSITIES))}")
  if not 0 < config.loss.rho < 1:
    raise validation.ConfigError(f"loss.rho={config.loss.rho!r} must be in (0, 1)")
  validation.positive_int(config, "loss.topk")
  if config.loss.sparsity == "topk" and config.model.latent_dim and config.loss.topk > config.model.latent_dim:
    raise validation.ConfigError(f"loss.topk={config.loss.topk} must be at most model.latent_dim={config.model.latent_dim}")


VARIANT = base.register(base.Variant(
    name="sparse", make_loss=make_loss, make_code=make_code, validate=validate,
    hparams={"sparsity_weight": "loss.sparsity_weight", "rho": "loss.rho"},
    options={"loss.sparsity": "l1", "loss.sparsity_weight": 1e-3, "loss.rho": 0.05, "loss.topk": 8},
    description="L1 or KL sparsity penalty on the code, or a top-k code"))
