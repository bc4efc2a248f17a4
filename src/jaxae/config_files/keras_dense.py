"""The Keras reference note's dense autoencoder: 784-500-300-100-2 tanh encoder, mirrored tanh decoder,
sigmoid output, binary cross-entropy, RMSprop (lr 0.002, no momentum), batch 128, Glorot-uniform init.

  --config=keras_dense              the unsupervised network (2-D code)
  --config=keras_dense:supervised   + the note's classifier head 2 -> 64 -> 128 -> 10 (tanh,
                                  dropout 0.5), total loss = BCE + 0.1 * cross-entropy
  --config=keras_dense:denoising    the note's denoising setting: Gaussian noise factor 0.4
                                  (clipped to [0, 1]), batch 256

Keras's `binary_crossentropy` averages over the 784 pixels; jaxae's Bernoulli loss sums them (nats per
image). So the note's cross-entropy weight 0.1 is 0.1 * 784 = 78.4 here: the same objective up to the
factor 784, which RMSprop's normalized steps absorb.
"""

from jaxae.configs import ConfigError, base_config

PIXELS = 784


def get_config(setting: str = ""):
  config = base_config()
  config.variant = "vanilla"
  config.model.hidden = (500, 300, 100)
  config.model.latent_dim = 2
  config.model.activation = "tanh"
  config.model.init = "keras"
  config.loss.reconstruction = "bce"
  config.optimizer.name = "rmsprop"
  config.optimizer.learning_rate = 0.002
  config.optimizer.momentum = 0.0
  config.train.batch_size = 128
  config.train.epochs = 50
  if setting == "supervised":
    config.variant = "supervised"
    config.model.classifier_hidden = (64, 128)
    config.model.classifier_activation = "tanh"
    config.model.classifier_dropout = 0.5
    config.loss.classifier_weight = 0.1 * PIXELS
  elif setting == "denoising":
    config.variant = "denoising"
    config.noise.kind = "gaussian"
    config.noise.level = 0.4
    config.train.batch_size = 256
  elif setting:
    raise ConfigError(f"keras_dense:{setting}: the settings are 'supervised' and 'denoising'")
  return config
