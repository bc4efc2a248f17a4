"""Importance-weighted autoencoder (Burda et al. 2016) and its MIWAE / CIWAE variants (Rainforth et al. 2018).

Same generative model and Gaussian encoder as the VAE (`vae.py`): p(z) = N(0, I), p(x|z) the decoder
likelihood of `loss.reconstruction`, q(z|x) = N(mean, diag(exp(log_variance))). The objective is the
importance-weighted bound (Burda et al. 2016, "Importance Weighted Autoencoders", eq. 8)

    L_K(x) = E[ log (1/K) sum_k w_k ],   w_k = p(x | z_k) p(z_k) / q(z_k | x),   z_k ~ q(z | x),

estimated with K = `loss.iwae_k` reparameterized samples z_k = mean + exp(log_variance / 2) * eps_k
(sec. 3): L_1 is the ELBO and L_K rises with K to log p(x) (their theorem 1). `loss.iwae_estimator`
(Rainforth et al. 2018, "Tighter Variational Bounds are Not Necessarily Better", sec. 4):
  'iwae'   the bound L_K above;
  'miwae'  MIWAE(M, K) = (1/M) sum_m L_K^(m): the average of M = `loss.iwae_m` independent K-sample
           bounds (M K samples in all; M = 1 is 'iwae', K = 1 the M-sample-average ELBO);
  'ciwae'  CIWAE(beta) = beta ELBO + (1 - beta) L_K with beta = `loss.ciwae_beta` (sweepable, in
           [0, 1]), the ELBO estimated from the same K samples, (1/K) sum_k log w_k.
The loss is minus the objective, in nats per example (averaged over the batch).

Shapes: x (B, *data_shape); mean, log_variance (B, d); eps (B, M K, d) = jax.random.normal(
fold_in(key, 7), (B, M K, d)) (the VAE's salt: with K = M = 1 the IWAE decodes the VAE's sample); all
B M K latents are decoded as one batch; log w (B, M, K).

Metrics (nats per example, batch means): loss; iwae_bound, (1/M) sum_m L_K^(m) (L_K itself when M = 1);
neg_elbo, -(1/(M K)) sum log w_k, the negative ELBO averaged over the same samples (Monte Carlo KL);
recon_nll, -(1/(M K)) sum log p(x | z_k); kl, the closed-form KL(q(z|x) || N(0, I)) (Kingma & Welling
2014, appendix B; E[neg_elbo] = E[recon_nll] + kl); recon_mse (per element, the mean reconstruction of
every sample); active_units (Burda et al. 2016, sec. 5.2: Var_x(E_q[z_j | x]) > 0.01 over the batch).
`base.standard_normal_model` states p(x, z) for evaluation (importance-sampled log p(x)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxae import losses, validation
from jaxae.variants import base

REPARAMETERIZATION_SALT = 7  # eps = normal(fold_in(step key, 7)), as the VAE's
ESTIMATORS = ("iwae", "miwae", "ciwae")


def bounds(log_w, num_bounds: int):
  """(iwae_bound (B,), elbo (B,)) from log-weights log w (B, M K) in nats.

  iwae_bound = (1/M) sum_m [logsumexp_k log w_{m,k} - log K] over M = num_bounds groups of K
  consecutive samples (Burda et al. 2016 eq. 8; Rainforth et al. 2018 MIWAE); elbo = the mean of all
  log w (the ELBO averaged over the samples).
  """
  b, s = log_w.shape
  grouped = log_w.reshape(b, num_bounds, s // num_bounds)
  k = grouped.shape[-1]
  iwae = jnp.mean(jax.nn.logsumexp(grouped, axis=-1) - jnp.log(float(k)), axis=-1)
  return iwae, jnp.mean(log_w, axis=-1)


def make_loss(config, net):
  k, estimator = config.loss.iwae_k, config.loss.iwae_estimator
  m = config.loss.iwae_m if estimator == "miwae" else 1
  samples = m * k
  log_likelihood = base.decoder_log_likelihood(config, net)
  log_2pi = jnp.log(2 * jnp.pi)

  def loss_fn(params, hp, batch, key, train):
    x = batch["x"]
    b = x.shape[0]
    mean, log_var = net.encode(params, x, key, train)
    d = mean.shape[-1]
    eps = jax.random.normal(jax.random.fold_in(key, REPARAMETERIZATION_SALT), (b, samples, d), mean.dtype)
    z = mean[:, None] + jnp.exp(0.5 * log_var)[:, None] * eps  # (B, S, d)
    logits = net.decode(params, z.reshape(b * samples, d), key, train)  # every sample in one decoder batch
    x_rep = jnp.broadcast_to(x[:, None], (b, samples, *x.shape[1:])).reshape(b * samples, *x.shape[1:])
    ll = log_likelihood(params, logits, x_rep, hp).reshape(b, samples)
    log_p = -0.5 * jnp.sum(jnp.square(z) + log_2pi, axis=-1)
    log_q = -0.5 * jnp.sum(log_var[:, None] + log_2pi + jnp.square(eps), axis=-1)
    iwae, elbo = bounds(ll + log_p - log_q, m)
    iwae_bound, elbo = jnp.mean(iwae), jnp.mean(elbo)
    if estimator == "ciwae":
      objective = hp["ciwae_beta"] * elbo + (1.0 - hp["ciwae_beta"]) * iwae_bound
    else:
      objective = iwae_bound
    loss = -objective
    active = jnp.sum(jnp.var(mean, axis=0) > 0.01).astype(jnp.float32)
    return loss, {"loss": loss, "iwae_bound": iwae_bound, "neg_elbo": -elbo, "recon_nll": -jnp.mean(ll),
                  "kl": losses.gaussian_kl(mean, log_var), "active_units": active,
                  "recon_mse": losses.mse(net.mean(logits), x_rep)}

  return loss_fn


def validate(config) -> None:
  validation.positive_int(config, "loss.iwae_k")
  validation.positive_int(config, "loss.iwae_m")
  estimator = config.loss.iwae_estimator
  if estimator not in ESTIMATORS:
    raise validation.ConfigError(f"loss.iwae_estimator={estimator!r} is not one of {', '.join(map(repr, ESTIMATORS))}")
  if estimator != "miwae" and config.loss.iwae_m != 1:
    raise validation.ConfigError(f"loss.iwae_m={config.loss.iwae_m!r} is used only by loss.iwae_estimator='miwae'; "
                              f"with {estimator!r} it must be 1")
  beta = config.loss.ciwae_beta
  if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta <= 1:
    raise validation.ConfigError(f"loss.ciwae_beta={beta!r} must be a number in [0, 1]")


VARIANT = base.register(base.Variant(
    name="iwae", make_loss=make_loss, validate=validate, encoder="gaussian", headline="loss",
    heads=base.likelihood_heads,
    hparams={"ciwae_beta": "loss.ciwae_beta", "gaussian_sigma": "loss.gaussian_sigma"},
    options={"loss.iwae_k": 5, "loss.iwae_estimator": "iwae", "loss.iwae_m": 1, "loss.ciwae_beta": 0.5,
             "loss.gaussian_sigma": 1.0},
    latent_model=base.standard_normal_model,
    description="importance-weighted autoencoder (IWAE bound with loss.iwae_k samples; MIWAE, CIWAE)"))
