"""beta-VAE with a controlled capacity increase (Burgess et al. 2018, "Understanding disentangling in beta-VAE").

The VAE's model and Gaussian encoder (`vae.py`), one reparameterized sample z = mean + exp(log_variance / 2)
* eps, eps = jax.random.normal(fold_in(key, 7), (B, d)). The loss (their eq. 8), in nats per example:

    loss = -E_q[log p(x|z)] + gamma * | KL(q(z|x) || N(0, I)) - C(t) |,
    C(t) = capacity_max * min(t / capacity_steps, 1),

with the KL in closed form (Kingma & Welling 2014, appendix B), both terms averaged over the batch
before the absolute value is taken (as the implementation 1Konny/Beta-VAE, solver.py, does); t is the
member's optimizer steps so far (batch['step']; evaluation uses the step reached); gamma =
`loss.capacity_gamma` (1000 in the paper); capacity_max = `loss.capacity_max` nats (sweepable);
capacity_steps = `loss.capacity_steps` optimizer steps (static). C rises linearly from 0 and is then
held at capacity_max: the KL is pulled towards C, so the information the latent carries grows gradually.

Metrics (nats per example, batch means): loss; capacity, C(t); kl; recon_nll, -log p(x|z) of the sample;
neg_elbo = recon_nll + kl; recon_mse (per element); active_units (Var_x(E_q[z_j|x]) > 0.01 over the batch).
`base.standard_normal_model` states p(x, z) for evaluation (importance-sampled log p(x)).
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxae import validation
from jaxae.variants import base

REPARAMETERIZATION_SALT = base.REPARAMETERIZATION_SALT  # the sample's key: fold_in(step key, 7)


def capacity(step, capacity_max, capacity_steps: int):
  """C(t) = capacity_max * min(t / capacity_steps, 1) in nats (Burgess et al. 2018, sec. 5).

  step: int scalar (traced or not), optimizer steps so far; capacity_max: float (traced) >= 0;
  capacity_steps: positive Python int. Returns a float32 scalar.
  """
  frac = jnp.minimum(jnp.asarray(step, jnp.float32) / float(capacity_steps), 1.0)
  return capacity_max * frac


def make_loss(config, net):
  log_likelihood = base.decoder_log_likelihood(config, net)
  steps = config.loss.capacity_steps

  def loss_fn(params, hp, batch, key, train):
    x = batch["x"]
    out = base.gaussian_autoencode(net, log_likelihood, params, hp, x, key, train)
    nll = out["nll"]
    kl = out["kl"]
    c = capacity(batch["step"], hp["capacity_max"], steps)
    loss = nll + hp["capacity_gamma"] * jnp.abs(kl - c)
    active = out["active_units"]
    return loss, {"loss": loss, "capacity": c, "kl": kl, "recon_nll": nll, "neg_elbo": nll + kl,
                  "active_units": active, "recon_mse": out["recon_mse"]}

  return loss_fn


def validate(config) -> None:
  validation.positive_int(config, "loss.capacity_steps")
  for key in ("loss.capacity_max", "loss.capacity_gamma"):
    value = validation.get(config, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
      raise validation.ConfigError(f"{key}={value!r} must be a non-negative number")


VARIANT = base.register(base.Variant(
    name="beta_vae_capacity", make_loss=make_loss, validate=validate, encoder="gaussian", headline="neg_elbo",
    heads=base.likelihood_heads,
    hparams={"capacity_max": "loss.capacity_max", "capacity_gamma": "loss.capacity_gamma",
             "gaussian_sigma": "loss.gaussian_sigma"},
    options={"loss.capacity_max": 25.0, "loss.capacity_steps": 1000, "loss.capacity_gamma": 1000.0,
             "loss.gaussian_sigma": 1.0},
    latent_model=base.standard_normal_model,
    description="beta-VAE with capacity increase: recon + gamma |KL - C(t)|, C rising to loss.capacity_max"))
