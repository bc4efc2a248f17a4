"""VAE with a VampPrior (Tomczak & Welling 2018, "VAE with a VampPrior").

The prior is the variational mixture of posteriors (eq. 9)

    p(z) = (1/K) sum_k q(z | u_k),   q(z | u) = N(z; mean(u), diag(exp(log_variance(u))))

with K = `vamp.num_pseudo` learned pseudo-inputs u_k of the data's shape (in the network's input space,
after `net.prepare`), encoded by the same encoder as the data. They are the parameter of the head
'pseudo_inputs' (params['params']['heads_pseudo_inputs']['pseudo_inputs'], (K, *data_shape) float32),
initialized N(0.05, 0.01^2) as in the authors' code; with a Bernoulli decoder (`loss.reconstruction='bce'`,
inputs in [0, 1]) the head returns them clipped to [0, 1] (the authors' hardtanh(0, 1)), otherwise as
they are. The paper uses K = 500; the default here is 50 (pythae's VAMP default), so that encoding the
pseudo-inputs costs 40% of a batch of 128 per step (500: four batches). Pseudo-inputs are encoded without
dropout (`train=False`): the prior is a deterministic function of the parameters, the same at training
and at evaluation. The variant builds its network (`Variant.network`: the built-in one plus this head)
because the head needs the data's shape, which `Variant.heads(config)` is not given.

The loss is the negative ELBO in nats per example, averaged over the batch,

    -E_q[log p(x|z)] + beta * E_q[log q(z|x) - log p(z)]

with one reparameterized sample z ~ q(z|x) for both terms: the KL to a mixture has no closed form, so
it is the single-sample Monte Carlo estimate log q(z|x) - log p(z). beta = `loss.beta`
(1 is the ELBO). Metrics: loss, recon_nll (E_q[-log p(x|z)]), kl (the Monte Carlo KL), neg_elbo
(recon_nll + kl), recon_mse (per element), active_units (Var_x E_q[z_j|x] > 0.01 over the batch).

`latent_model`: `bind(params)` gives the mixture prior (log_prior: log-mean-exp over components of the
diagonal Gaussian log-densities; sample_prior: a component uniformly, then its Gaussian). The mixture
has no closed-form quantile function: `prior_quantile` is the standard normal's (ndtri), used only to
lay out the d = 2 manifold figure. kl_per_unit is None (traversals rank units by Var_x of the codes).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.scipy.special import ndtri

from jaxae import losses, models, validation
from jaxae.variants import base

REPARAMETERIZATION_SALT = 7  # the sample's key: fold_in(step key, 7), as vae.py
HEAD = "pseudo_inputs"
INIT_MEAN, INIT_STD = 0.05, 0.01  # Tomczak & Welling's code: pseudoinputs_mean, pseudoinputs_std


class PseudoInputs(nn.Module):
  """The K pseudo-inputs u_k as a head: ignores its input, returns (num, *data_shape) float32.

  clip: return them clipped to [0, 1] (hardtanh), for inputs that are probabilities (Bernoulli decoder).
  """

  num: int
  data_shape: tuple
  clip: bool = False

  @nn.compact
  def __call__(self, z=None, train: bool = False):
    init = lambda key, shape, dtype=jnp.float32: INIT_MEAN + INIT_STD * jax.random.normal(key, shape, dtype)
    u = self.param("pseudo_inputs", init, (self.num, *self.data_shape), jnp.float32)
    return jnp.clip(u, 0.0, 1.0) if self.clip else u


def gaussian_log_density(z, mean, log_var):
  """log N(z; mean, diag(exp(log_var))) in nats, summed over the last axis: (..., d) arrays -> (...)."""
  return -0.5 * jnp.sum(jnp.log(2 * jnp.pi) + log_var + jnp.square(z - mean) * jnp.exp(-log_var), axis=-1)


def mixture_log_density(z, means, log_vars):
  """log (1/K) sum_k N(z; means_k, diag(exp(log_vars_k))): z (..., d), means, log_vars (K, d) -> (...) nats.

  The VampPrior's log p(z) (Tomczak & Welling 2018, eq. 9) as a log-sum-exp over components (stable for
  any z). XLA fuses the (..., K, d) difference into the reduction.
  """
  per = gaussian_log_density(z[..., None, :], means, log_vars)  # (..., K)
  return jax.nn.logsumexp(per, axis=-1) - math.log(means.shape[0])


def mixture_sample(key, shape, means, log_vars):
  """z (*shape) ~ (1/K) sum_k N(means_k, diag(exp(log_vars_k))); shape (..., d), means, log_vars (K, d).

  A component index uniform on {0..K-1} per sample (key fold_in 0), then z = mean + std * eps (fold_in 1).
  """
  k = jax.random.randint(jax.random.fold_in(key, 0), shape[:-1], 0, means.shape[0])
  eps = jax.random.normal(jax.random.fold_in(key, 1), shape, jnp.float32)
  return means[k] + jnp.exp(0.5 * log_vars[k]) * eps


def pseudo_inputs(net, params):
  """The pseudo-inputs (K, *data_shape) as the encoder sees them (clipped when the head clips)."""
  return net.head(params, HEAD, jnp.zeros((1, 1), jnp.float32))


def components(net, params):
  """(means (K, d), log_vars (K, d)): q(z | u_k) of every pseudo-input, encoded without dropout."""
  return net.encode(params, pseudo_inputs(net, params))


def network(config, data_shape) -> models.Net:
  """The built-in network with the pseudo-inputs head (it needs the data's shape, which `heads` is not given)."""
  heads = {**base.likelihood_heads(config),
           HEAD: PseudoInputs(config.vamp.num_pseudo, tuple(data_shape), config.loss.reconstruction == "bce")}
  return models.build(config.model, data_shape, gaussian=True, heads=heads)


def make_loss(config, net):
  likelihood = base.decoder_log_likelihood(config, net)

  def loss_fn(params, hp, batch, key, train):
    x = batch["x"]
    mean, log_var = net.encode(params, x, key, train)
    eps = jax.random.normal(jax.random.fold_in(key, REPARAMETERIZATION_SALT), mean.shape, jnp.float32)
    z = mean + jnp.exp(0.5 * log_var) * eps
    logits = net.decode(params, z, key, train)
    nll = -jnp.mean(likelihood(params, logits, x, hp))
    log_q = -0.5 * jnp.sum(jnp.log(2 * jnp.pi) + log_var + jnp.square(eps), axis=-1)  # log q(z|x) at z
    kl = jnp.mean(log_q - mixture_log_density(z, *components(net, params)))  # one-sample Monte Carlo KL
    loss = nll + hp["beta"] * kl
    active = jnp.sum(jnp.var(mean, axis=0) > 0.01).astype(jnp.float32)
    return loss, {"recon_nll": nll, "kl": kl, "neg_elbo": nll + kl, "active_units": active,
                  "recon_mse": losses.mse(net.mean(logits), x), "loss": loss}

  return loss_fn


def latent_model(config, net) -> base.LatentModel:
  """The VampPrior generative model; call `.bound(params)` before use (the prior depends on the parameters)."""
  standard = base.standard_normal_model(config, net)

  def unbound(*args):
    raise ValueError("the VampPrior depends on the parameters: use latent_model(...).bound(params)")

  def bind(params):
    means, log_vars = components(net, params)
    return base.LatentModel(
        log_prior=lambda z: mixture_log_density(z, means, log_vars),
        sample_prior=lambda key, shape: mixture_sample(key, shape, means, log_vars),
        prior_quantile=ndtri,  # no closed form for the mixture: the standard normal's, for figure layout only
        log_likelihood=standard.bound(params).log_likelihood,
        kl_per_unit=None)

  return base.LatentModel(log_prior=unbound, sample_prior=unbound, prior_quantile=ndtri,
                          log_likelihood=standard.log_likelihood, kl_per_unit=None, bind=bind)


def validate(config) -> None:
  validation.positive_int(config, "vamp.num_pseudo")


VARIANT = base.register(base.Variant(
    name="vamp", make_loss=make_loss, encoder="gaussian", headline="neg_elbo", network=network,
    heads=base.likelihood_heads, validate=validate,
    hparams={"beta": "loss.beta", "gaussian_sigma": "loss.gaussian_sigma"},
    options={"loss.beta": 1.0, "loss.gaussian_sigma": 1.0, "vamp.num_pseudo": 50}, latent_model=latent_model,
    description="VAE with a VampPrior: a mixture of the posteriors of K learned pseudo-inputs (Tomczak & Welling 2018)"))
