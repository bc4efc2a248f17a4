"""Wasserstein autoencoder, WAE-MMD (Tolstikhin et al. 2018): the authors' MNIST objective on the MLP.

0.05 * ||x - G(z)||^2 per example + 10 * MMD(q(z), N(0, I)) with the multi-scale IMQ kernel, latent 8,
batch 100 (their configs.py `config_mnist`: cost 'l2sq', lambda 10, pz_scale 1, zdim 8, batch 100).
Samples: decoded z ~ N(0, I). loss.mmd_kernel='rbf' for the Gaussian kernel.
"""

from jaxae.configs import base_config


def get_config():
  config = base_config()
  config.variant = "wae"
  config.loss.reconstruction = "mse"  # the squared Euclidean cost c(x, y) = ||x - y||^2
  config.loss.wae_cost_weight = 0.05
  config.loss.mmd_weight = 10.0
  config.loss.mmd_kernel = "imq"
  config.loss.prior_std = 1.0
  config.model.latent_dim = 8
  config.train.batch_size = 100
  return config
