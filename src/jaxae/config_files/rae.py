"""Regularized autoencoder, RAE-L2 (Ghosh et al. 2020): the authors' MNIST setup on the MLP.

||x - D(E(x))||^2 per example + 1e-4 * 1/2 ||z||^2 + 1e-7 * ||theta_D||^2, latent 16, batch 100, Adam 5e-4
(their configurations/config.py, 'RAE-L2'). loss.rae_regularizer='gp' for RAE-GP (they used 0.5e-7).
Samples: a 10-component GMM fitted to training codes (`python -m jaxae.evaluate`).
"""

from jaxae.configs import base_config


def get_config():
  config = base_config()
  config.variant = "rae"
  config.loss.reconstruction = "mse"
  config.loss.rae_regularizer = "l2"
  config.loss.rae_embedding_weight = 1e-4
  config.loss.rae_reg_weight = 1e-7
  config.model.latent_dim = 16
  config.train.batch_size = 100
  config.optimizer.learning_rate = 5e-4
  return config
