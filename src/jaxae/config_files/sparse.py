"""Sparse autoencoder: MSE + 1e-3 * mean|z| (the reference protocol).

loss.sparsity: 'l1' (weight loss.sparsity_weight) | 'kl' (target loss.rho) | 'topk' (keep loss.topk units).
"""

from jaxae.configs import base_config


def get_config():
  config = base_config()
  config.variant = "sparse"
  config.loss.sparsity = "l1"
  config.loss.sparsity_weight = 1e-3
  return config
