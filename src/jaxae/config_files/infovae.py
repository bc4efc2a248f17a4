"""InfoVAE with the MMD divergence (Zhao et al. 2019): Bernoulli decoder, latent 32 (as configs/vae.py).

-E_q log p(x|z) + (1 - alpha) KL + (alpha + lambda - 1) MMD(q(z), N(0, I)) in nats per image, alpha = 0,
lambda = 100: the ELBO plus an MMD term pulling the aggregate posterior to the prior (with the multi-scale
IMQ kernel, lambda = 1000 collapses the posterior; jaxae/variants/infovae.py has the measurements).
"""

from jaxae.configs import base_config


def get_config():
  config = base_config()
  config.variant = "infovae"
  config.loss.reconstruction = "bce"  # Bernoulli likelihood; 'mse' = Gaussian with loss.gaussian_sigma
  config.loss.info_alpha = 0.0
  config.loss.info_lambda = 100.0
  config.loss.mmd_kernel = "imq"
  config.model.latent_dim = 32
  return config
