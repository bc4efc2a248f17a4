"""InfoVAE (Zhao, Song & Ermon 2019, "InfoVAE: Balancing Learning and Inference in Variational
Autoencoders", eq. 6 with the MMD divergence, the MMD-VAE family).

A Gaussian encoder q(z|x) = N(mean, diag(exp(log_variance))), one reparameterized sample z per example
(Kingma & Welling 2014, sec. 2.4), prior p(z) = N(0, I). The loss, in nats per example averaged over the
batch, is

    -E_q[log p(x|z)] + (1 - alpha) KL(q(z|x) || p(z)) + (alpha + lambda - 1) MMD_u^2(q(z), p(z))

with alpha = `loss.info_alpha`, lambda = `loss.info_lambda`, the KL in closed form (Kingma & Welling
2014, appendix B), and MMD_u^2 the unbiased multi-scale estimate of `losses.mmd` between the batch's
sampled z (B, d) and B samples of N(0, I) drawn from the step key (kernel `loss.mmd_kernel`, width
2 d times each of losses.MMD_SCALES). alpha = 0, lambda = 1 is the ELBO; alpha = 1 drops the KL (the
MMD-VAE). Both weights must be non-negative: 0 <= alpha <= 1 and alpha + lambda >= 1 (pythae's INFOVAE_MMD defaults, alpha = 0.5, lambda = 0.03, give the MMD weight -0.47 and
are refused; its MMD is also N times the U-statistic).

Defaults alpha = 0, lambda = 100: the ELBO plus a strong MMD term that keeps every unit active (at a
cost of 4 nats of -ELBO in the measurements below; a larger lambda trades more). The weight depends on
the kernel: the authors' code (utils.compute_mmd of ermongroup/lagvae, the same in the InfoVAE
repository's mmd_vae_eval.py) uses one wide Gaussian kernel, exp(-||x - y||^2 / d^2), and the biased
V-statistic, an MMD much smaller than this sum of 7 IMQ kernels of width 2 d (their LagVAE code
multiplies it by 10^4). Measured with configs/infovae.py (MLP, latent 32,
20 epochs of the 4,500 embedded MNIST training images, one seed), held-out -ELBO / KL in nats: lambda =
1 (the VAE) 120.8 / 20.0; 10: 121.1 / 19.9; 100: 125.1 / 16.0; 300: 138.2 / 11.5; 1000: 189.9 / 2.3,
the posterior nearly collapsed onto the prior, which zeroes the MMD trivially (after 3 epochs no unit
is active).

The decoder likelihood is `loss.reconstruction` through `base.decoder_log_likelihood` ('bce':
Bernoulli; 'mse': Gaussian with std `loss.gaussian_sigma`). `base.standard_normal_model` is the
generative model for `jaxae.evaluate` (importance-sampled log p(x), prior samples).

Metrics: `loss`, `recon_nll` (-E_q log p(x|z)), `kl`, `neg_elbo` (recon_nll + kl, the unweighted
negative ELBO), `mmd`, `recon_mse` (per element), `active_units` (Var_x E_q[z_j|x] > 0.01 over the batch).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxae import losses, validation
from jaxae.variants import base, wae

REPARAMETERIZATION_SALT = base.REPARAMETERIZATION_SALT  # the sample's key: fold_in(step key, 7)
PRIOR_SALT = wae.PRIOR_SALT  # the prior samples' key: fold_in(step key, 13)


def make_loss(config, net):
  log_likelihood = base.decoder_log_likelihood(config, net)
  kernel = config.loss.mmd_kernel

  def loss_fn(params, hp, batch, key, train):
    x = batch["x"]
    out = base.gaussian_autoencode(net, log_likelihood, params, hp, x, key, train)
    z, nll = out["z"], out["nll"]
    kl = out["kl"]
    z_prior = jax.random.normal(jax.random.fold_in(key, PRIOR_SALT), z.shape, jnp.float32)
    mmd = losses.mmd(z, z_prior, kernel)
    alpha, lam = hp["info_alpha"], hp["info_lambda"]
    loss = nll + (1.0 - alpha) * kl + (alpha + lam - 1.0) * mmd
    active = out["active_units"]
    return loss, {"recon_nll": nll, "kl": kl, "neg_elbo": nll + kl, "mmd": mmd, "active_units": active,
                  "recon_mse": out["recon_mse"], "loss": loss}

  return loss_fn


def validate(config) -> None:
  wae.validate_kernel(config)
  alpha, lam = config.loss.info_alpha, config.loss.info_lambda
  if isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and alpha > 1:
    raise validation.ConfigError(f"loss.info_alpha={alpha!r} must be at most 1 (the KL weight 1 - alpha would be negative)")
  if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (alpha, lam)) and alpha + lam < 1:
    raise validation.ConfigError(f"loss.info_alpha + loss.info_lambda = {alpha + lam:g} must be at least 1 "
                              f"(the MMD weight alpha + lambda - 1 would be negative)")


VARIANT = base.register(base.Variant(
    name="infovae", make_loss=make_loss, validate=validate, encoder="gaussian", headline="neg_elbo",
    heads=base.likelihood_heads,
    hparams={"info_alpha": "loss.info_alpha", "info_lambda": "loss.info_lambda", "gaussian_sigma": "loss.gaussian_sigma"},
    options={"loss.info_alpha": 0.0, "loss.info_lambda": 100.0, "loss.mmd_kernel": "imq", "loss.gaussian_sigma": 1.0},
    latent_model=base.standard_normal_model,
    description="InfoVAE: -E log p(x|z) + (1 - alpha) KL + (alpha + lambda - 1) MMD(q(z), p(z))"))
