"""VAE with a VampPrior (Tomczak & Welling 2018): Bernoulli decoder, latent 32, K = 50 pseudo-inputs.

The prior is the mixture (1/K) sum_k q(z | u_k) of the encoder's posteriors of K learned pseudo-inputs
(the paper uses K = 500; 50 keeps a CPU step cheap). The loss is the negative ELBO in nats per image with
a one-sample Monte Carlo KL; loss.beta weights it.
"""

from jaxae.configs import base_config


def get_config():
  config = base_config()
  config.variant = "vamp"
  config.loss.reconstruction = "bce"  # Bernoulli likelihood; 'mse' = Gaussian with loss.gaussian_sigma
  config.loss.beta = 1.0
  config.vamp.num_pseudo = 50
  config.model.latent_dim = 32
  return config
