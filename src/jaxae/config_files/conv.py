"""Convolutional autoencoder: Conv 16 and 32 channels (stride 2), Dense bottleneck, upsampling back to 28x28."""

from jaxae.configs import base_config


def get_config():
  config = base_config()
  config.variant = "vanilla"
  config.model.backbone = "conv"
  return config
