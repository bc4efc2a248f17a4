"""Adversarial autoencoder (Makhzani et al. 2016): Bernoulli decoder, latent 8, codes matched to N(0, I).

The loss is the reconstruction cross-entropy in nats per image + aae_weight * the encoder's
non-saturating GAN loss, plus the latent discriminator's cross-entropy (2 x 512 leaky-ReLU units,
Adam(1e-4, b1=0.5, b2=0.9), the keys and defaults FactorVAE's discriminator shares). aae_weight = 1: in a
5-epoch check on the embedded MNIST (1 seed) weights 10 and 50 made the game unstable (held-out
discriminator accuracy 0.33 and 0.85, mean squared code 2.6 and 12 against 1 under the prior) and the
reconstruction worse (148 and 205 nats against 114).
"""

from jaxae.configs import base_config


def get_config():
  config = base_config()
  config.variant = "aae"
  config.loss.reconstruction = "bce"  # Bernoulli likelihood from logits; 'mse' = MSE of sigmoid outputs
  config.loss.aae_weight = 1.0
  config.model.latent_dim = 8
  config.adversary.hidden = (512, 512)
  config.adversary.learning_rate = 1e-4
  return config
