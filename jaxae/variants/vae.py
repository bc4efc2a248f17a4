"""Variational autoencoder (Kingma & Welling 2014) and beta-VAE (Higgins et al. 2017).

The encoder outputs the Gaussian posterior q(z|x) = N(mean, diag(exp(log_variance))); one
reparameterized sample z = mean + exp(log_variance / 2) * eps (sec. 2.4) is decoded. The loss is the
negative ELBO, -E_q[log p(x|z)] + beta * KL(q(z|x) || N(0, I)) in nats per example (eq. 10; the KL in
closed form, appendix B; beta != 1: Higgins et al. 2017 eq. 4). `loss.reconstruction='bce'` is a
Bernoulli decoder, 'mse' a Gaussian decoder with fixed std `loss.gaussian_sigma` around the
reconstruction mean (`model.output`). `base.standard_normal_model` states the same p(x, z) for
evaluation (`jaxae.evaluate`: importance-sampled log p(x), prior samples).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxae import losses
from jaxae.variants import base

REPARAMETERIZATION_SALT = 7  # the sample's key: fold_in(step key, 7)


def make_loss(config, net):
  likelihood = "bernoulli" if config.loss.reconstruction == "bce" else "gaussian"

  def loss_fn(params, hp, batch, key, train):
    x = batch["x"]
    mean, log_var = net.encode(params, x, key, train)
    z = losses.reparameterize(jax.random.fold_in(key, REPARAMETERIZATION_SALT), mean, log_var)
    logits = net.decode(params, z, key, train)
    loss, nll, kl = losses.negative_elbo(logits, x, mean, log_var, hp["beta"], likelihood, hp["gaussian_sigma"],
                                         mean_fn=net.mean)
    # Active units (Burda et al. 2016, sec. 5.2): Var_x(E_q[z_j | x]) > 0.01, here over the batch.
    active = jnp.sum(jnp.var(mean, axis=0) > 0.01).astype(jnp.float32)
    return loss, {"recon_nll": nll, "kl": kl, "neg_elbo": nll + kl, "active_units": active,
                  "recon_mse": losses.mse(net.mean(logits), x), "loss": loss}

  return loss_fn


VARIANT = base.register(base.Variant(
    name="vae", make_loss=make_loss, encoder="gaussian", headline="neg_elbo",
    hparams={"beta": "loss.beta", "gaussian_sigma": "loss.gaussian_sigma"},
    options={"loss.beta": 1.0, "loss.gaussian_sigma": 1.0}, latent_model=base.standard_normal_model,
    description="variational autoencoder (negative ELBO; beta-VAE with loss.beta)"))
