"""beta-VAE with controlled capacity increase (Burgess et al. 2018, eq. 8): Bernoulli decoder, latent 32.

loss = -log p(x|z) + gamma |KL - C(t)| with gamma = 1000 (the paper's) and C rising linearly from 0 to
25 nats over the first 1000 optimizer steps (about 30 epochs of the embedded 5k images at batch 128),
then held.
"""

from jaxae.configs import base_config


def get_config():
  config = base_config()
  config.variant = "beta_vae_capacity"
  config.loss.reconstruction = "bce"  # Bernoulli likelihood; 'mse' = Gaussian with loss.gaussian_sigma
  config.loss.capacity_max = 25.0
  config.loss.capacity_steps = 1000
  config.loss.capacity_gamma = 1000.0
  config.model.latent_dim = 32
  return config
