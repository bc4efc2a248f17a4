"""Variational autoencoder (Kingma & Welling 2014) and beta-VAE (Higgins et al. 2017).

The encoder outputs the Gaussian posterior q(z|x) = N(mean, diag(exp(log_variance))); one
reparameterized sample z = mean + exp(log_variance / 2) * eps (sec. 2.4) is decoded. The loss is the
negative ELBO, -E_q[log p(x|z)] + beta * KL(q(z|x) || N(0, I)) in nats per example (eq. 10; the KL in
closed form, appendix B; beta != 1: Higgins et al. 2017 eq. 4). log p(x|z) is the decoder likelihood of
`loss.reconstruction` (`base.decoder_log_likelihood`): 'bce' a Bernoulli decoder, 'continuous_bernoulli'
its normalized version for x in [0, 1] (Loaiza-Ganem & Cunningham 2019, eq. 7), 'mse' a Gaussian decoder
with fixed std `loss.gaussian_sigma` around the reconstruction mean (`model.output`), 'gaussian_learned'
a Gaussian with one learned std per member (starting at `loss.gaussian_sigma`; Rybkin et al. 2021).
`base.standard_normal_model` states the same p(x, z) for evaluation (`jaxae.evaluate`: importance-sampled
log p(x), prior samples).

Metrics (nats per example unless stated): loss, neg_elbo, recon_nll (E_q[-log p(x|z)], one sample), kl,
active_units, recon_mse (per element, of net.mean(logits)); with 'continuous_bernoulli' also
recon_mse_cb_mean (per element, of the continuous Bernoulli's mean E[x|z], `losses.continuous_bernoulli_mean`,
which is not lambda = sigmoid(logits)); with 'gaussian_learned' also decoder_sigma (the learned std).
recon_mse and the reconstruction images stay those of net.mean(logits) = lambda for the continuous Bernoulli
too: the same statistic in training metrics, `jaxae.evaluate` and figures, and across likelihoods (Net.mean
does not know the likelihood); the continuous Bernoulli's mean E[x|z] (Loaiza-Ganem & Cunningham 2019,
sec. 3), the decoder's expectation of x, is reported beside it.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxae import losses
from jaxae.variants import base

REPARAMETERIZATION_SALT = base.REPARAMETERIZATION_SALT  # the sample's key: fold_in(step key, 7)


def make_loss(config, net):
  log_likelihood = base.decoder_log_likelihood(config, net)
  kind = config.loss.reconstruction

  def loss_fn(params, hp, batch, key, train):
    x = batch["x"]
    out = base.gaussian_autoencode(net, log_likelihood, params, hp, x, key, train)
    logits, nll, kl = out["logits"], out["nll"], out["kl"]
    loss = nll + hp["beta"] * kl
    metrics = {"recon_nll": nll, "kl": kl, "neg_elbo": nll + kl, "active_units": out["active_units"],
               "recon_mse": out["recon_mse"], "loss": loss}
    if kind == "continuous_bernoulli":
      metrics["recon_mse_cb_mean"] = losses.mse(losses.continuous_bernoulli_mean(logits), x)
    if kind == "gaussian_learned":
      metrics["decoder_sigma"] = jnp.exp(base.learned_log_sigma(net, params, hp))
    return loss, metrics

  return loss_fn


VARIANT = base.register(base.Variant(
    name="vae", make_loss=make_loss, encoder="gaussian", headline="neg_elbo", heads=base.likelihood_heads,
    hparams={"beta": "loss.beta", "gaussian_sigma": "loss.gaussian_sigma"},
    options={"loss.beta": 1.0, "loss.gaussian_sigma": 1.0}, latent_model=base.standard_normal_model,
    description="variational autoencoder (negative ELBO; beta-VAE with loss.beta)"))
