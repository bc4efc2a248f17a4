"""Importance-weighted autoencoder (Burda et al. 2016): Bernoulli decoder, latent 32, K = 5 samples.

The loss is minus the 5-sample IWAE bound in nats per image (the VAE's network and likelihood, see
configs/vae.py); loss.iwae_estimator='miwae' (with loss.iwae_m) or 'ciwae' (with loss.ciwae_beta) gives
the estimators of Rainforth et al. 2018.
"""

from jaxae.configs import base_config


def get_config():
  config = base_config()
  config.variant = "iwae"
  config.loss.reconstruction = "bce"  # Bernoulli likelihood; 'mse' = Gaussian with loss.gaussian_sigma
  config.loss.iwae_k = 5
  config.loss.iwae_estimator = "iwae"
  config.model.latent_dim = 32
  return config
