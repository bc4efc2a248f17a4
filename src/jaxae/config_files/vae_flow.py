"""VAE with a normalizing-flow posterior: Bernoulli decoder, latent 32, 4 planar steps.

z_0 from the encoder's Gaussian goes through flow.length planar maps (Rezende & Mohamed 2015) or IAF steps
(flow.kind='iaf', Kingma et al. 2016, MADE with flow.hidden units); the loss is the single-sample negative
ELBO in nats per image with the change-of-variables log q(z_K|x); loss.beta weights its KL term.
"""

from jaxae.configs import base_config


def get_config():
  config = base_config()
  config.variant = "vae_flow"
  config.loss.reconstruction = "bce"  # Bernoulli likelihood; 'mse' = Gaussian with loss.gaussian_sigma
  config.loss.beta = 1.0
  config.flow.kind = "planar"  # or 'iaf'
  config.flow.length = 4
  config.flow.hidden = 64  # IAF only: the MADE's hidden units
  config.model.latent_dim = 32
  return config
