"""Contractive autoencoder (Rifai et al. 2011): MSE + lambda * ||J_encoder(x)||_F^2, exact via jax.jacrev."""

from jaxae.configs import base_config


def get_config():
  config = base_config()
  config.variant = "contractive"
  config.loss.contractive_weight = 1e-3
  return config
