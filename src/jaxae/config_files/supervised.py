"""Supervised autoencoder: reconstruction + loss.classifier_weight * cross-entropy of a classifier on the latent."""

from jaxae.configs import base_config


def get_config():
  config = base_config()
  config.variant = "supervised"
  config.loss.classifier_weight = 1.0
  return config
