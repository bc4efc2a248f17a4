"""FactorVAE (Kim & Mnih 2018): Bernoulli decoder, latent 10, gamma = 10, a 2 x 512 latent discriminator.

The loss is the negative ELBO + gamma * the discriminator's total-correlation estimate, in nats per image,
plus the discriminator's cross-entropy. Latent 10 as in the paper; gamma is tuned per data set there (none
for MNIST), 10 is of the order it uses. The discriminator is trained by Adam(1e-4, b1=0.5, b2=0.9), the
paper's; its 6 x 1000 leaky-ReLU layers are `--config.adversary.hidden=(1000,1000,1000,1000,1000,1000)`.
"""

from jaxae.configs import base_config


def get_config():
  config = base_config()
  config.variant = "factor_vae"
  config.loss.reconstruction = "bce"  # Bernoulli likelihood; 'mse' = Gaussian with loss.gaussian_sigma
  config.loss.factor_gamma = 10.0
  config.model.latent_dim = 10
  config.adversary.hidden = (512, 512)
  config.adversary.learning_rate = 1e-4
  config.adversary.b1 = 0.5
  config.adversary.b2 = 0.9
  return config
