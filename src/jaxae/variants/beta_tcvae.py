"""beta-TCVAE (Chen et al. 2018, "Isolating sources of disentanglement in variational autoencoders").

The VAE's KL term, averaged over the data, splits into three parts (eq. 2, with q(z) = (1/N) sum_n q(z|n)
the aggregate posterior of the N training examples):

  E_p(n) KL(q(z|n) || p(z)) = I_q(z; n)                          index-code mutual information (MI)
                              + KL(q(z) || prod_j q(z_j))        total correlation (TC)
                              + sum_j KL(q(z_j) || p(z_j))       dimension-wise KL (dimKL)

and the objective (eq. 4) weights each:

  loss = E_q[-log p(x|z)] + alpha * MI + beta * TC + gamma * dimKL     in nats per example,

alpha = `loss.tc_alpha` (default 1), beta = `loss.tc_beta` (default 6, the paper's beta-TCVAE setting on
dSprites, sec. 6), gamma = `loss.tc_gamma` (default 1), all sweepable. With alpha = beta = gamma = 1 the
loss is the one-sample negative ELBO with a Monte Carlo KL.

Each term is estimated on the minibatch: x_1..x_M (M = batch size), one reparameterized z_i ~ q(z|x_i)
each (z (M, d)), and the M x M x d table log q(z_ik | x_j) of the Gaussian encoder. With log weights
log w_ij (`log_importance_weights`),

  log q(z_i)            ~ logsumexp_j [log w_ij + sum_k log q(z_ik | x_j)]
  log prod_k q(z_ik)    ~ sum_k logsumexp_j [log w_ij + log q(z_ik | x_j)]
  MI    = mean_i [log q(z_i | x_i) - log q(z_i)]
  TC    = mean_i [log q(z_i) - log prod_k q(z_ik)]
  dimKL = mean_i [log prod_k q(z_ik) - log p(z_i)]

`loss.tc_estimator` picks the weights: 'mws', minibatch-weighted sampling (sec. 4.1, appendix C.1),
w_ij = 1 / (N M); or 'mss' (the default, as in pythae's BetaTCVAE; the authors' code defaults to MWS with
--mss as an option), minibatch-stratified sampling (appendix C.2): with M' = M - 1 the other members of
the batch, w_ii = 1 / N, w_ij = 1 / M' for M' - 1 of them and (N - M') / (N M') for the remaining one
(here j = i + 1 mod M). MSS rows sum to 1 (its estimate of q(z_i) is unbiased over the draw of the
other members); MWS rows sum to 1 / N, the paper's and the authors' log(N M) (constant offsets of the
three estimates: no gradient, and they cancel in their sum). The MSS matrix follows the paper's
definition; the authors' `log_importance_weight_matrix` (copied by pythae) strides by the batch size
instead of the batch size + 1 and so fills columns, not the diagonal (rtqichen/beta-tcvae pull request
#1). N is batch['num_train'], taken as at least M (a held-out batch larger than the training set).

Because the three estimates telescope, MI + TC + dimKL = mean_i [log q(z_i | x_i) - log p(z_i)] exactly,
whatever the estimator of q(z): the one-sample Monte Carlo KL of the ELBO.

Metrics (nats per example unless stated): loss, mi, tc, dim_kl, kl (closed-form KL(q(z|x) || N(0, I)),
Kingma & Welling 2014 appendix B), recon_nll (E_q[-log p(x|z)], one sample), neg_elbo = recon_nll + kl,
recon_mse (per element), active_units (units with Var_x E_q[z_j|x] > 0.01 over the batch, Burda et al.
2016 sec. 5.2). Held-out mi, tc and dim_kl are estimated per evaluation batch (`train.eval_batch_size`
examples, N still the training-set size), so they depend on that batch size as the training ones on
`train.batch_size`; memory grows as M^2 d per member. Prior N(0, I): `jaxae.evaluate` gives the
importance-sampled -log p(x).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from jaxae import validation
from jaxae.variants import base

ESTIMATORS = ("mws", "mss")
REPARAMETERIZATION_SALT = base.REPARAMETERIZATION_SALT  # the sample's key: fold_in(step key, 7)
_LOG_2PI = math.log(2 * math.pi)


def log_importance_weights(batch_size: int, num_train: int, estimator: str) -> np.ndarray:
  """(M, M) float32 log w_ij: the weight of q(z_i | x_j) in the minibatch estimate of q(z_i) (see module doc).

  batch_size M and num_train N are Python ints (static shapes); N is taken as max(N, M). 'mws':
  log 1 / (N M) everywhere (Chen et al. 2018 appendix C.1); 'mss': log 1 / N on the diagonal,
  log (N - M') / (N M') at (i, i + 1 mod M), log 1 / M' elsewhere, M' = M - 1 (appendix C.2); M = 1 gives
  [[log 1 / N]] for both. Rows sum to 1 / N (mws) or 1 (mss). Raises ValueError for an unknown estimator
  or M < 1.
  """
  if estimator not in ESTIMATORS:
    raise ValueError(f"estimator={estimator!r} must be one of {', '.join(map(repr, ESTIMATORS))}")
  if batch_size < 1:
    raise ValueError(f"batch_size={batch_size} must be at least 1")
  m = batch_size
  n = max(int(num_train), m)
  if estimator == "mws" or m == 1:
    return np.full((m, m), -math.log(n * m) if estimator == "mws" else -math.log(n), np.float32)
  others = m - 1
  w = np.full((m, m), 1.0 / others)
  rows = np.arange(m)
  w[rows, (rows + 1) % m] = (n - others) / (n * others)
  w[rows, rows] = 1.0 / n
  return np.log(w).astype(np.float32)


def pairwise_log_density(z, mean, log_var):
  """(M, M, d) log q(z_ik | x_j) = log N(z[i, k]; mean[j, k], exp(log_var[j, k])) in nats; inputs (M, d)."""
  diff = z[:, None, :] - mean[None, :, :]
  return -0.5 * (_LOG_2PI + log_var[None] + jnp.square(diff) * jnp.exp(-log_var[None]))


def decompose(z, mean, log_var, num_train: int, estimator: str) -> dict:
  """The KL decomposition's minibatch estimates (Chen et al. 2018 eq. 2, sec. 4.1 / appendix C).

  z: (M, d) samples z_i ~ q(z|x_i); mean, log_var: (M, d) the encoder's q(z|x_i); num_train N (Python int).
  Returns float32 scalars in nats per example: 'mi', 'tc', 'dim_kl', and 'kl_mc' = mean_i [log q(z_i|x_i)
  - log p(z_i)] (= mi + tc + dim_kl up to rounding), with p(z) = N(0, I).
  """
  log_w = jnp.asarray(log_importance_weights(z.shape[0], num_train, estimator))
  table = pairwise_log_density(z, mean, log_var)  # (M, M, d)
  log_qz_x = jnp.sum(jnp.diagonal(table, axis1=0, axis2=1), axis=0)  # (M,) log q(z_i | x_i)
  log_qz = logsumexp(log_w + jnp.sum(table, axis=-1), axis=1)  # (M,)
  log_prod_qzk = jnp.sum(logsumexp(log_w[:, :, None] + table, axis=1), axis=-1)  # (M,)
  log_pz = -0.5 * jnp.sum(_LOG_2PI + jnp.square(z), axis=-1)  # (M,)
  return {"mi": jnp.mean(log_qz_x - log_qz), "tc": jnp.mean(log_qz - log_prod_qzk),
          "dim_kl": jnp.mean(log_prod_qzk - log_pz), "kl_mc": jnp.mean(log_qz_x - log_pz)}


def make_loss(config, net):
  estimator = config.loss.tc_estimator
  log_likelihood = base.decoder_log_likelihood(config, net)

  def loss_fn(params, hp, batch, key, train):
    x = batch["x"]
    out = base.gaussian_autoencode(net, log_likelihood, params, hp, x, key, train)
    mean, log_var, z, nll = out["mean"], out["log_var"], out["z"], out["nll"]
    terms = decompose(z, mean, log_var, batch["num_train"], estimator)
    loss = nll + hp["tc_alpha"] * terms["mi"] + hp["tc_beta"] * terms["tc"] + hp["tc_gamma"] * terms["dim_kl"]
    kl = out["kl"]
    active = out["active_units"]
    return loss, {"loss": loss, "mi": terms["mi"], "tc": terms["tc"], "dim_kl": terms["dim_kl"], "kl": kl,
                  "recon_nll": nll, "neg_elbo": nll + kl, "recon_mse": out["recon_mse"],
                  "active_units": active}

  return loss_fn


def validate(config) -> None:
  if config.loss.tc_estimator not in ESTIMATORS:
    raise validation.ConfigError(f"loss.tc_estimator={config.loss.tc_estimator!r} is not one of "
                              f"{', '.join(map(repr, ESTIMATORS))}")


VARIANT = base.register(base.Variant(
    name="beta_tcvae", make_loss=make_loss, encoder="gaussian", headline="neg_elbo", validate=validate,
    heads=base.likelihood_heads,
    hparams={"tc_alpha": "loss.tc_alpha", "tc_beta": "loss.tc_beta", "tc_gamma": "loss.tc_gamma",
             "gaussian_sigma": "loss.gaussian_sigma"},
    options={"loss.tc_alpha": 1.0, "loss.tc_beta": 6.0, "loss.tc_gamma": 1.0, "loss.tc_estimator": "mss",
             "loss.gaussian_sigma": 1.0},
    latent_model=base.standard_normal_model,
    description="beta-TCVAE: ELBO with its KL split into MI + beta * TC + dimension-wise KL (MWS / MSS estimates)"))
