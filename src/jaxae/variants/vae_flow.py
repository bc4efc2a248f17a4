"""VAE with a normalizing-flow posterior: planar flows (Rezende & Mohamed 2015) or IAF (Kingma et al. 2016).

The encoder's Gaussian sample z_0 = mean + exp(log_variance / 2) * eps is pushed through K invertible
maps, z_K = f_K o ... o f_1(z_0), and by the change of variables

    log q(z_K | x) = log q_0(z_0 | x) - sum_k log |det df_k / dz_{k-1}|.

The loss is the single-sample negative ELBO in nats per example, averaged over the batch
(Rezende & Mohamed 2015, eq. 15):

    -log p(x | z_K) + beta * [log q_0(z_0 | x) - sum_k log |det df_k/dz_{k-1}| - log N(z_K; 0, I)]

beta = `loss.beta` (1 is the ELBO). p(z) = N(0, I) and p(x|z) is the decoder likelihood of
`loss.reconstruction` (base.decoder_log_likelihood).

`flow.kind`:
  planar  f(z) = z + u_hat h(w.z + b), h = tanh, log|det| = log|1 + u_hat.psi(z)|, psi = h'(w.z + b) w
          (Rezende & Mohamed 2015, eq. 10-12), with u_hat = u + (m(w.u) - w.u) w / ||w||^2,
          m(a) = -1 + softplus(a) (their appendix A.1), so that w.u_hat >= -1 and f is invertible.
  iaf     [m, s] = MADE(z) (Germain et al. 2015: masked dense layers, one ELU hidden layer of `flow.hidden`
          units, output i a function of z_1..z_{i-1} only), sigma = sigmoid(s),
          z' = sigma * z + (1 - sigma) * m, log|det| = sum_i log sigma_i (Kingma et al. 2016, eq. 10-14,
          the numerically stable update of their Algorithm 1; the bias of s starts at +2, as they advise, so
          that each step first changes z only slightly (sigma about 0.88)).
          The order of the variables is reversed between steps.
`flow.length` steps (static int, default 4). The flow's parameters are global, not amortized (as pythae's
VAE_LinNF / VAE_IAF; no context h from the encoder): the head 'flow' holds them
(params['params']['heads_flow']: planar u, w (K, d), b (K,); IAF w1 (K, d, H), b1 (K, H), w2 (K, H, 2d),
b2 (K, 2d)) and maps z (..., d) to (z_K (..., d), sum_k log|det| (...)).

Metrics: loss, recon_nll (-log p(x|z_K)), kl (the single-sample log q(z_K|x) - log p(z_K)), neg_elbo
(recon_nll + kl), log_det (sum_k log|det|), recon_mse (per element), active_units (Var_x of the encoder
mean > 0.01 over the batch).

`latent_model`: N(0, I) and the decoder likelihood; `bind(params)` sets `posterior`: z_0 ~ N(mean,
exp(log_variance)) (eps = jax.random.normal(key_i, (num, d)) for example i) pushed through the flow, with
log q(z_K|x) above, so `jaxae.evaluate`'s importance-sampled -log p(x) uses the flow's density.
kl_per_unit is None (the flow's KL does not split by unit). The inference code (`make_code`) is the
encoder mean pushed through the flow, f(mean): the image of q_0's mode, a point in the prior's space
(not the mean of q(z_K|x)).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxae import losses, validation
from jaxae.variants import base

REPARAMETERIZATION_SALT = 7  # the sample's key: fold_in(step key, 7), as vae.py
HEAD = "flow"
KINDS = ("planar", "iaf")
IAF_SIGMA_BIAS = 2.0  # Kingma et al. 2016, sec. 4: s_t initially positive (about +1 or +2): small first steps


# --- planar flow (Rezende & Mohamed 2015) ------------------------------------------------------------------


def planar_u_hat(u, w):
  """u_hat = u + (m(w.u) - w.u) w / ||w||^2, m(a) = -1 + softplus(a) (Rezende & Mohamed 2015, appendix A.1).

  u, w (..., d) -> (..., d), with w.u_hat = m(w.u) > -1: the planar map is invertible.
  """
  wu = jnp.sum(w * u, axis=-1, keepdims=True)
  sq = jnp.maximum(jnp.sum(jnp.square(w), axis=-1, keepdims=True), 1e-12)
  return u + (jax.nn.softplus(wu) - 1.0 - wu) * w / sq


def planar_flow(z, u, w, b):
  """K planar steps f(z) = z + u_hat tanh(w.z + b) (eq. 10) and sum_k log|1 + u_hat.psi(z)| (eq. 11-12).

  z (..., d); u, w (K, d); b (K,). Returns (z_K (..., d), log_det (...)) float32, nats.
  """
  u_hat = planar_u_hat(u, w)
  # w.u_hat = m(w.u) = softplus(w.u) - 1 by construction, so with h' = 1 - h^2 the determinant
  # 1 + h' w.u_hat = h^2 + (1 - h^2) softplus(w.u) > 0 is formed without cancellation near w.u_hat = -1.
  sp = jax.nn.softplus(jnp.sum(w * u, axis=-1))  # (K,)
  log_det = jnp.zeros(z.shape[:-1], z.dtype)
  for k in range(u.shape[0]):
    h = jnp.tanh(z @ w[k] + b[k])  # (...)
    h2 = jnp.square(h)
    log_det = log_det + jnp.log(h2 + (1.0 - h2) * sp[k])
    z = z + h[..., None] * u_hat[k]
  return z, log_det


# --- IAF (Kingma et al. 2016) with MADE (Germain et al. 2015) -------------------------------------------


def made_masks(d: int, hidden: int) -> tuple[np.ndarray, np.ndarray]:
  """MADE masks (Germain et al. 2015, eq. 12-13) for inputs ordered 1..d and `hidden` units.

  Hidden degrees cycle through 1..max(d-1, 1). Returns (input->hidden (d, hidden): 1 where
  degree(hidden k) >= j, hidden->output (hidden, d): 1 where output i > degree(hidden k)), float32: output
  i depends on inputs j < i only (strictly autoregressive).
  """
  deg_in = np.arange(1, d + 1)
  deg_h = np.arange(hidden) % max(d - 1, 1) + 1
  return ((deg_h[None, :] >= deg_in[:, None]).astype(np.float32),
          (deg_in[None, :] > deg_h[:, None]).astype(np.float32))


def made(z, w1, b1, w2, b2):
  """One MADE: (m (..., d), s (..., d)) = masked Dense(2d)(elu(masked Dense(H)(z))).

  z (..., d); w1 (d, H), b1 (H,), w2 (H, 2d), b2 (2d,): the masks of `made_masks` are applied here,
  so (m_i, s_i) depend on z_1..z_{i-1} only.
  """
  d, h = w1.shape
  m1, m2 = made_masks(d, h)
  hid = jax.nn.elu(z @ (w1 * m1) + b1)
  out = hid @ (w2 * np.concatenate([m2, m2], axis=1)) + b2
  return out[..., :d], out[..., d:]


def iaf_step(z, w1, b1, w2, b2):
  """z' = sigma * z + (1 - sigma) * m, sigma = sigmoid(s), [m, s] = MADE(z) (Kingma et al. 2016, alg. 1).

  Returns (z' (..., d), sum_i log sigma_i (...)): the Jacobian is lower triangular with diagonal sigma.
  """
  m, s = made(z, w1, b1, w2, b2)
  sigma = jax.nn.sigmoid(s)
  return sigma * z + (1.0 - sigma) * m, jnp.sum(jax.nn.log_sigmoid(s), axis=-1)


def iaf_flow(z, w1, b1, w2, b2):
  """K IAF steps with the variables' order reversed between steps.

  z (..., d); w1 (K, d, H), b1 (K, H), w2 (K, H, 2d), b2 (K, 2d). Returns (z_K (..., d), log_det (...)).
  """
  log_det = jnp.zeros(z.shape[:-1], z.dtype)
  steps = w1.shape[0]
  for k in range(steps):
    z, ld = iaf_step(z, w1[k], b1[k], w2[k], b2[k])
    log_det = log_det + ld
    if k < steps - 1:
      z = z[..., ::-1]  # a permutation: |det| = 1
  return z, log_det


class Flow(nn.Module):
  """The flow as a head on the latent: z (..., d) -> (z_K (..., d), sum_k log|det df_k/dz_{k-1}| (...)).

  Parameters (global, not amortized) are created from the latent's width d at initialization.
  Planar: u, w ~ N(0, 1/d), b = 0. IAF: w1 ~ N(0, 1/d), w2 ~ N(0, 1/H), b1 = 0, b2 = 0 for m and
  IAF_SIGMA_BIAS for s.
  """

  kind: str = "planar"
  length: int = 4
  hidden: int = 64

  @nn.compact
  def __call__(self, z, train: bool = False):
    d, k, h = z.shape[-1], self.length, self.hidden
    normal = lambda std: nn.initializers.normal(std)
    if self.kind == "planar":
      u = self.param("u", normal(d ** -0.5), (k, d), jnp.float32)
      w = self.param("w", normal(d ** -0.5), (k, d), jnp.float32)
      b = self.param("b", nn.initializers.zeros, (k,), jnp.float32)
      return planar_flow(z, u, w, b)
    w1 = self.param("w1", normal(d ** -0.5), (k, d, h), jnp.float32)
    b1 = self.param("b1", nn.initializers.zeros, (k, h), jnp.float32)
    w2 = self.param("w2", normal(h ** -0.5), (k, h, 2 * d), jnp.float32)
    b2 = self.param("b2", lambda key, shape, dtype: jnp.concatenate(
        [jnp.zeros((k, d), dtype), jnp.full((k, d), IAF_SIGMA_BIAS, dtype)], axis=1), (k, 2 * d), jnp.float32)
    return iaf_flow(z, w1, b1, w2, b2)


def heads(config) -> dict:
  return {**base.likelihood_heads(config), HEAD: Flow(config.flow.kind, config.flow.length, config.flow.hidden)}


def standard_normal_log_density(z):
  """log N(z; 0, I), nats: (..., d) -> (...)."""
  return -0.5 * jnp.sum(jnp.square(z) + jnp.log(2 * jnp.pi), axis=-1)


def make_loss(config, net):
  likelihood = base.decoder_log_likelihood(config, net)

  def loss_fn(params, hp, batch, key, train):
    x = batch["x"]
    mean, log_var = net.encode(params, x, key, train)
    eps = jax.random.normal(jax.random.fold_in(key, REPARAMETERIZATION_SALT), mean.shape, jnp.float32)
    z0 = mean + jnp.exp(0.5 * log_var) * eps
    log_q0 = -0.5 * jnp.sum(jnp.log(2 * jnp.pi) + log_var + jnp.square(eps), axis=-1)
    z, log_det = net.head(params, HEAD, z0, key, train)
    logits = net.decode(params, z, key, train)
    nll = -jnp.mean(likelihood(params, logits, x, hp))
    kl = jnp.mean(log_q0 - log_det - standard_normal_log_density(z))  # log q(z_K|x) - log p(z_K), one sample
    loss = nll + hp["beta"] * kl
    active = jnp.sum(jnp.var(mean, axis=0) > 0.01).astype(jnp.float32)
    return loss, {"recon_nll": nll, "kl": kl, "neg_elbo": nll + kl, "log_det": jnp.mean(log_det),
                  "active_units": active, "recon_mse": losses.mse(net.mean(logits), x), "loss": loss}

  return loss_fn


def make_code(config, net):
  """(params, x) -> f(mean) (B, d): the encoder mean pushed through the flow."""
  return lambda params, x: net.head(params, HEAD, net.encode(params, x)[0])[0]


def posterior(net, params):
  """(x (B, *data_shape), keys (B,), num) -> (z_K (B, num, d), log q(z_K|x) (B, num)) of one member.

  eps = jax.random.normal(keys[i], (num, d)) for example i; z_0 = mean + std * eps; z_K = flow(z_0);
  log q = log N(z_0; mean, diag(std^2)) - sum_k log|det df_k/dz_{k-1}| in nats.
  """
  def sample(x, keys, num):
    mean, log_var = net.encode(params, x)
    eps = jax.vmap(lambda k: jax.random.normal(k, (num, mean.shape[-1]), jnp.float32))(keys)
    z0 = mean[:, None] + jnp.exp(0.5 * log_var)[:, None] * eps
    log_q0 = -0.5 * jnp.sum(jnp.log(2 * jnp.pi) + log_var[:, None] + jnp.square(eps), axis=-1)
    z, log_det = net.head(params, HEAD, z0)
    return z, log_q0 - log_det

  return sample


def latent_model(config, net) -> base.LatentModel:
  """p(z) = N(0, I), the decoder likelihood, and (after `.bound(params)`) the flow posterior."""
  standard = dataclasses.replace(base.standard_normal_model(config, net), kl_per_unit=None)

  def bind(params):
    return dataclasses.replace(standard.bound(params), kl_per_unit=None, bind=None, posterior=posterior(net, params))

  return dataclasses.replace(standard, bind=bind)


def validate(config) -> None:
  if config.flow.kind not in KINDS:
    raise validation.ConfigError(f"flow.kind={config.flow.kind!r} is not one of {', '.join(map(repr, KINDS))}")
  validation.positive_int(config, "flow.length")
  validation.positive_int(config, "flow.hidden")


VARIANT = base.register(base.Variant(
    name="vae_flow", make_loss=make_loss, make_code=make_code, encoder="gaussian", headline="neg_elbo",
    heads=heads, validate=validate, hparams={"beta": "loss.beta", "gaussian_sigma": "loss.gaussian_sigma"},
    options={"loss.beta": 1.0, "loss.gaussian_sigma": 1.0, "flow.kind": "planar", "flow.length": 4,
             "flow.hidden": 64},
    latent_model=latent_model,
    description="VAE with a normalizing-flow posterior: planar (Rezende & Mohamed 2015) or IAF (Kingma et al. 2016)"))
