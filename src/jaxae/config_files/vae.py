"""Variational autoencoder (Kingma & Welling 2014): Bernoulli decoder, latent 32, beta = 1.

The loss is the negative ELBO in nats per image; loss.beta != 1 gives the beta-VAE.
"""

from jaxae.configs import base_config


def get_config():
  config = base_config()
  config.variant = "vae"
  config.loss.reconstruction = "bce"  # Bernoulli likelihood; 'mse' = Gaussian with loss.gaussian_sigma
  config.loss.beta = 1.0
  config.model.latent_dim = 32
  return config
