"""Wasserstein autoencoder with the MMD penalty, WAE-MMD (Tolstikhin et al. 2018, "Wasserstein
Auto-Encoders", alg. 2).

A deterministic encoder z = E(x) and decoder G(z); the loss per batch is

    c(x, G(E(x))) + lambda * MMD_u^2(q(z), p(z)),        p(z) = N(0, sigma_z^2 I)

with MMD_u^2 the unbiased multi-scale estimate of `losses.mmd` between the batch's codes (B, d) and B
prior samples drawn from the step key (kernel `loss.mmd_kernel`: 'imq' as in the paper, or 'rbf';
width 2 d sigma_z^2 times each of losses.MMD_SCALES), lambda = `loss.mmd_weight` (10, the paper's
MNIST value), sigma_z = `loss.prior_std` (1).

The cost c: the paper's squared Euclidean distance ||x - G(z)||^2 summed over the elements of an
example, scaled by `loss.wae_cost_weight`. The default 0.05 is the authors' MNIST cost (their code,
wae.py `reconstruction_loss`, cost 'l2sq': 0.05 * sum of squares per example, with lambda = 10), so
the defaults are their objective. (The framework's per-element MSE would be this sum over 784 pixels
scaled by 1/784, weakening the reconstruction 39-fold against the same lambda.) With
`loss.reconstruction='bce'` the cost is the Bernoulli cross-entropy in nats per example, scaled the
same way. G's output is the reconstruction mean `net.mean(logits)` (a sigmoid by default, as theirs).

Units: the loss per example, averaged over the batch; MMD^2 has the kernel's units (a sum of 7 kernel
values). Metrics: `loss`, `mmd` (MMD_u^2 of the batch; held out it is estimated per evaluation batch),
`recon_cost` (the weighted c), `recon_mse` (per element), `recon_bce` (with 'bce').

`Variant.code_prior` is N(0, sigma_z^2 I), so `jaxae.evaluate` decodes prior samples. `loss.prior_std`
is a static option (not swept inside one program): evaluation draws the prior from the config.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxae import losses, validation
from jaxae.variants import base

PRIOR_SALT = 13  # the prior samples' key: fold_in(step key, 13)


def summed_reconstruction(config, net):
  """(logits, x) -> (cost, metrics): the reconstruction cost per example summed over elements, averaged over the batch.

  'mse': sum of (net.mean(logits) - x)^2 per example (the squared Euclidean distance of WAE's c and of
  RAE's eq. 11); 'bce': the Bernoulli cross-entropy from logits in nats per example (also reported as
  `recon_bce`). metrics always hold `recon_mse` (per element).
  """
  kind = config.loss.reconstruction

  def term(logits, x):
    mean = net.mean(logits)
    mse = losses.mse(mean, x)
    if kind == "bce":
      bce = losses.bce_with_logits(logits, x)
      return bce, {"recon_bce": bce, "recon_mse": mse}
    return jnp.mean(jnp.sum(jnp.square(mean - x).reshape(x.shape[0], -1), axis=-1)), {"recon_mse": mse}

  return term


def prior_samples(key, shape, std):
  """z ~ N(0, std^2 I) of `shape`, float32; std may be traced."""
  return std * jax.random.normal(key, shape, jnp.float32)


def make_loss(config, net):
  recon = summed_reconstruction(config, net)
  kernel = config.loss.mmd_kernel
  std = float(config.loss.prior_std)

  def loss_fn(params, hp, batch, key, train):
    x = batch["x"]
    z, logits = base.autoencode(net, params, x, key, train)
    cost, metrics = recon(logits, x)
    cost = hp["wae_cost_weight"] * cost
    z_prior = prior_samples(jax.random.fold_in(key, PRIOR_SALT), z.shape, std)
    mmd = losses.mmd(z, z_prior, kernel, prior_variance=std**2)
    loss = cost + hp["mmd_weight"] * mmd
    return loss, {**metrics, "recon_cost": cost, "mmd": mmd, "loss": loss}

  return loss_fn


def code_prior(config):
  std = float(config.loss.prior_std)
  return lambda key, shape: prior_samples(key, shape, std)


def validate_kernel(config) -> None:
  if config.loss.mmd_kernel not in losses.MMD_KERNELS:
    raise validation.ConfigError(f"loss.mmd_kernel={config.loss.mmd_kernel!r} is not one of "
                              f"{', '.join(map(repr, losses.MMD_KERNELS))}")


def validate(config) -> None:
  validate_kernel(config)
  std = config.loss.prior_std
  if isinstance(std, bool) or not isinstance(std, (int, float)) or not std > 0:
    raise validation.ConfigError(f"loss.prior_std={std!r} must be a positive number")


VARIANT = base.register(base.Variant(
    name="wae", make_loss=make_loss, validate=validate, code_prior=code_prior,
    hparams={"mmd_weight": "loss.mmd_weight", "wae_cost_weight": "loss.wae_cost_weight"},
    options={"loss.mmd_weight": 10.0, "loss.wae_cost_weight": 0.05, "loss.mmd_kernel": "imq", "loss.prior_std": 1.0},
    description="Wasserstein autoencoder: reconstruction cost + lambda * MMD(q(z), N(0, sigma_z^2 I))"))
