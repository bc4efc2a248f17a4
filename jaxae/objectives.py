"""The objective of each variant: `loss_fn(params, hparams, x, y, key, train) -> (loss, metrics)`.

One member (one seed, one hyperparameter setting) at a time; train.py vmaps it. `hparams` holds the
sweepable scalars (configs.VMAPPABLE) as traced arrays, so one compiled program serves a whole grid.
Every objective reports `loss` and `recon_mse` (per-pixel MSE of the reconstruction mean), plus its
own terms. Evaluation (`train=False`) feeds clean inputs: corruption is a training-time device only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxae import losses


def _mean_image(logits, output: str):
  return jax.nn.sigmoid(logits) if output == "sigmoid" else logits


def make_loss_fn(config, model):
  """Builds the objective a config describes. Static choices (variant, likelihood, k) are closed over."""
  variant = config.variant
  recon_kind = config.loss.reconstruction
  output = config.model.output
  sparsity = config.loss.sparsity
  k = config.loss.topk
  noise_kind = config.noise.kind

  def reconstruction(logits, x):
    if recon_kind == "bce":
      return losses.bce_with_logits(logits, x)
    return losses.mse(_mean_image(logits, output), x)

  def encode(params, x):
    return model.apply(params, x, method=model.encode)

  def decode(params, z):
    return model.apply(params, z, method=model.decode)

  def loss_fn(params, hp, x, y, key, train: bool):
    metrics = {}
    x_in = x
    if variant == "denoising" and train:
      x_in = losses.corrupt(key, x, noise_kind, hp["noise_level"])

    if variant == "vae":
      mean, log_var = encode(params, x_in)
      z = losses.reparameterize(jax.random.fold_in(key, 7), mean, log_var)
      logits = decode(params, z)
      likelihood = "bernoulli" if recon_kind == "bce" else "gaussian"
      loss, nll, kl = losses.negative_elbo(logits, x, mean, log_var, hp["beta"], likelihood, hp["gaussian_sigma"])
      metrics.update(recon_nll=nll, kl=kl, neg_elbo=nll + kl)
      # Active units (Burda et al. 2016, sec. 5.2): Var_x(E_q[z_j | x]) > 0.01, here over the batch.
      metrics["active_units"] = jnp.sum(jnp.var(mean, axis=0) > 0.01).astype(jnp.float32)
    else:
      z = encode(params, x_in)
      if variant == "sparse" and sparsity == "topk":
        z = losses.top_k(z, k)
      logits = decode(params, z)
      loss = reconstruction(logits, x)
      if recon_kind == "bce":
        metrics["recon_bce"] = loss
      if variant == "sparse" and sparsity == "l1":
        penalty = losses.l1_sparsity(z)
        loss = loss + hp["sparsity_weight"] * penalty
        metrics["sparsity_penalty"] = penalty
      elif variant == "sparse" and sparsity == "kl":
        penalty = losses.kl_sparsity(z, hp["rho"])
        loss = loss + hp["sparsity_weight"] * penalty
        metrics["sparsity_penalty"] = penalty
      elif variant == "contractive":
        penalty = losses.contractive_penalty(lambda v: encode(params, v), x_in)
        loss = loss + hp["contractive_weight"] * penalty
        metrics["jacobian_frobenius_sq"] = penalty
      elif variant == "supervised":
        class_logits = model.apply(params, z, method=model.classify)
        ce = losses.cross_entropy(class_logits, y)
        loss = loss + hp["classifier_weight"] * ce
        metrics["cross_entropy"] = ce
        metrics["accuracy"] = jnp.mean(jnp.argmax(class_logits, -1) == y)
      if variant == "sparse":
        metrics["l0"] = jnp.mean(jnp.sum(jnp.abs(z) > 1e-6, axis=-1).astype(jnp.float32))  # nonzero units per example
    metrics["recon_mse"] = losses.mse(_mean_image(logits, output), x)
    metrics["loss"] = loss
    return loss, metrics

  return loss_fn
