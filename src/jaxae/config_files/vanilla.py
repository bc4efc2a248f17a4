"""Vanilla autoencoder: MLP 784-512-256-32, MSE on sigmoid outputs, Adam 1e-3, batch 128, 30 epochs."""

from jaxae.configs import base_config


def get_config():
  config = base_config()
  config.variant = "vanilla"
  return config
