"""beta-TCVAE (Chen et al. 2018): Bernoulli decoder, latent 10, alpha = gamma = 1, beta = 6, MSS estimator.

The loss is E_q[-log p(x|z)] + alpha * MI + beta * TC + gamma * dimension-wise KL in nats per image, each
term estimated on the minibatch (loss.tc_estimator: 'mss' stratified, 'mws' weighted sampling). Latent 10
and beta = 6 are the paper's dSprites settings (sec. 6); batch 128 as the other MNIST configs (the
estimates of q(z) improve with larger batches: the paper used 2048).
"""

from jaxae.configs import base_config


def get_config():
  config = base_config()
  config.variant = "beta_tcvae"
  config.loss.reconstruction = "bce"  # Bernoulli likelihood; 'mse' = Gaussian with loss.gaussian_sigma
  config.loss.tc_alpha = 1.0  # index-code mutual information
  config.loss.tc_beta = 6.0  # total correlation
  config.loss.tc_gamma = 1.0  # dimension-wise KL
  config.loss.tc_estimator = "mss"
  config.model.latent_dim = 10
  return config
