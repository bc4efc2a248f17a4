"""The Keras reference note's convolutional autoencoder: Conv 32 + MaxPool, Conv 16 + MaxPool (a 7x7x16
spatial code, no dense layer), Conv 16 + UpSampling, Conv 32 + UpSampling, Conv 1 with a sigmoid;
3x3 'same' convolutions, ReLU, Glorot-uniform init, Adam, binary cross-entropy, batch 128.

  --config=keras_conv:denoising     the note's denoising setting: Gaussian noise factor 0.4
                                  (clipped to [0, 1]), batch 256
"""

from jaxae.configs import ConfigError, base_config


def get_config(setting: str = ""):
  config = base_config()
  config.variant = "vanilla"
  config.model.backbone = "conv"
  config.model.conv_channels = (32, 16)
  config.model.downsample = "maxpool"
  config.model.upsample = "nearest"
  config.model.latent_dim = 0  # the 7x7x16 feature map is the code
  config.model.init = "keras"
  config.loss.reconstruction = "bce"
  config.optimizer.name = "adam"
  config.train.batch_size = 128
  config.train.epochs = 30
  if setting == "denoising":
    config.variant = "denoising"
    config.noise.kind = "gaussian"
    config.noise.level = 0.4
    config.train.batch_size = 256
  elif setting:
    raise ConfigError(f"keras_conv:{setting}: the setting is 'denoising'")
  return config
