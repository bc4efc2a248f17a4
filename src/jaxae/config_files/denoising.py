"""Denoising autoencoder (Vincent et al. 2008): Gaussian noise sigma=0.3 clipped to [0, 1], clean targets.

noise.kind: 'gaussian' (noise.level = sigma) | 'masking' | 'salt_pepper' (noise.level = probability).
"""

from jaxae.configs import base_config


def get_config():
  config = base_config()
  config.variant = "denoising"
  config.noise.kind = "gaussian"
  config.noise.level = 0.3
  return config
