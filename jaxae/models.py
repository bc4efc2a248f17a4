"""Stateless Flax (linen) encoders, decoders and the autoencoder that ties them together.

Images are float32 (B, H, W, C) in [0, 1]. Decoders return logits of the same shape: the likelihood
(objectives.py) decides whether a sigmoid is applied. Parameters are passed explicitly
(`model.apply(params, x, method=...)`); no module holds state.

Backbones:
  mlp    the reference MLP 784-512-256-d with ReLU (`model.hidden`), decoder mirrored.
  conv   Conv(16, 3x3, stride 2) -> Conv(32, 3x3, stride 2) -> Dense(d); decoder Dense -> two
         stride-2 upsamplings back to H x W (`model.upsample`: transposed convolution, nearest
         resize + convolution, or convolution + depth-to-space).
  linear one Dense(d) encoder and one Dense decoder with no nonlinearity (the PCA-equivalent AE).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def pytorch_kernel_init(fan_in: int):
  """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): torch.nn.Linear/Conv2d's kaiming_uniform_(a=sqrt(5)) default."""
  bound = 1.0 / np.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def _dense(features: int, fan_in: int, init: str, name: str | None = None) -> nn.Dense:
  if init == "pytorch":
    u = pytorch_kernel_init(fan_in)
    return nn.Dense(features, kernel_init=u, bias_init=u, name=name)
  return nn.Dense(features, name=name)


def _conv(features: int, fan_in: int, init: str, strides=1) -> nn.Conv:
  kw = dict(kernel_size=(3, 3), strides=(strides, strides), padding=((1, 1), (1, 1)))
  if init == "pytorch":
    u = pytorch_kernel_init(fan_in)
    return nn.Conv(features, kernel_init=u, bias_init=u, **kw)
  return nn.Conv(features, **kw)


class Encoder(nn.Module):
  """x (B, H, W, C) float32 -> latent (B, latent_dim), or (mean, log_variance) when gaussian=True."""

  backbone: str = "mlp"
  latent_dim: int = 32
  hidden: Sequence[int] = (512, 256)
  conv_channels: Sequence[int] = (16, 32)
  init_scheme: str = "flax"
  gaussian: bool = False

  @nn.compact
  def __call__(self, x):
    if self.backbone == "conv":
      h = x
      for ch in self.conv_channels:
        h = nn.relu(_conv(ch, h.shape[-1] * 9, self.init_scheme, strides=2)(h))
      h = h.reshape(h.shape[0], -1)
    elif self.backbone == "mlp":
      h = x.reshape(x.shape[0], -1)
      for width in self.hidden:
        h = nn.relu(_dense(width, h.shape[-1], self.init_scheme)(h))
    else:  # linear
      h = x.reshape(x.shape[0], -1)
    z = _dense(self.latent_dim, h.shape[-1], self.init_scheme, name="latent")(h)
    if not self.gaussian:
      return z
    log_var = _dense(self.latent_dim, h.shape[-1], self.init_scheme, name="log_variance")(h)
    return z, log_var


class Decoder(nn.Module):
  """latent (B, latent_dim) -> logits (B, *image_shape)."""

  image_shape: Sequence[int] = (28, 28, 1)
  backbone: str = "mlp"
  hidden: Sequence[int] = (512, 256)
  conv_channels: Sequence[int] = (16, 32)
  init_scheme: str = "flax"
  upsample: str = "transpose"

  @nn.compact
  def __call__(self, z):
    H, W, C = self.image_shape
    if self.backbone == "conv":
      down = 2 ** len(self.conv_channels)
      h0, w0, c0 = H // down, W // down, self.conv_channels[-1]
      h = nn.relu(_dense(h0 * w0 * c0, z.shape[-1], self.init_scheme)(z)).reshape(z.shape[0], h0, w0, c0)
      outs = list(self.conv_channels[-2::-1]) + [C]
      for i, ch in enumerate(outs):
        h = self._upsample(h, ch)
        if i < len(outs) - 1:
          h = nn.relu(h)
      return h
    h = z
    if self.backbone == "mlp":
      for width in reversed(self.hidden):
        h = nn.relu(_dense(width, h.shape[-1], self.init_scheme)(h))
    h = _dense(H * W * C, h.shape[-1], self.init_scheme)(h)
    return h.reshape(z.shape[0], H, W, C)

  def _upsample(self, h, features: int):
    """Doubles height and width. All three are stride-2 learned upsamplings of a 3x3 receptive field."""
    if self.upsample == "transpose":
      # torch.nn.ConvTranspose2d computes fan_in from its weight's dim 1 = out_channels * k * k.
      kw = dict(kernel_size=(3, 3), strides=(2, 2), padding="SAME")
      if self.init_scheme == "pytorch":
        u = pytorch_kernel_init(features * 9)
        return nn.ConvTranspose(features, kernel_init=u, bias_init=u, **kw)(h)
      return nn.ConvTranspose(features, **kw)(h)
    if self.upsample == "resize":
      b, hh, ww, c = h.shape
      h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)  # nearest-neighbour resize
      return _conv(features, c * 9, self.init_scheme)(h)
    # depth_to_space (sub-pixel convolution, Shi et al. 2016): conv to 4x channels, then shuffle.
    b, hh, ww, c = h.shape
    h = _conv(4 * features, c * 9, self.init_scheme)(h)
    h = h.reshape(b, hh, ww, 2, 2, features).transpose(0, 1, 3, 2, 4, 5)
    return h.reshape(b, 2 * hh, 2 * ww, features)


class Autoencoder(nn.Module):
  """Encoder + decoder (+ a classifier head on the latent when num_classes > 0).

  Methods (all take params through `apply`):
    encode(x) -> z (B, d), or (mean, log_variance) for a Gaussian encoder (VAE)
    decode(z) -> logits (B, H, W, C)
    classify(z) -> class logits (B, num_classes)
    __call__(x) -> initializes every submodule; returns decode(mean latent).
  """

  image_shape: Sequence[int] = (28, 28, 1)
  backbone: str = "mlp"
  latent_dim: int = 32
  hidden: Sequence[int] = (512, 256)
  conv_channels: Sequence[int] = (16, 32)
  init_scheme: str = "flax"
  upsample: str = "transpose"
  gaussian: bool = False
  num_classes: int = 0

  def setup(self):
    self.encoder = Encoder(self.backbone, self.latent_dim, self.hidden, self.conv_channels, self.init_scheme, self.gaussian)
    self.decoder = Decoder(self.image_shape, self.backbone, self.hidden, self.conv_channels, self.init_scheme, self.upsample)
    if self.num_classes:
      self.classifier = _dense(self.num_classes, self.latent_dim, self.init_scheme)

  def encode(self, x):
    return self.encoder(x)

  def decode(self, z):
    return self.decoder(z)

  def classify(self, z):
    return self.classifier(z)

  def __call__(self, x):
    z = self.encode(x)
    if self.gaussian:
      z = z[0]
    if self.num_classes:
      self.classify(z)
    return self.decode(z)


def check_image_shape(config, image_shape) -> None:
  """Raises ValueError when images of `image_shape` (H, W, C) do not fit the configured backbone."""
  H, W, C = image_shape
  if config.model.backbone == "conv":
    down = 2 ** len(config.model.conv_channels)
    if H % down or W % down:
      raise ValueError(f"images of shape {tuple(image_shape)} do not fit model.backbone='conv' with "
                       f"{len(config.model.conv_channels)} stride-2 layers: height and width must be multiples of {down}")


def make_model(config, image_shape) -> Autoencoder:
  """The Autoencoder a config describes, for images of shape (H, W, C)."""
  check_image_shape(config, image_shape)
  return Autoencoder(
      image_shape=tuple(image_shape),
      backbone=config.model.backbone,
      latent_dim=config.model.latent_dim,
      hidden=tuple(config.model.hidden),
      conv_channels=tuple(config.model.conv_channels),
      init_scheme=config.model.init,
      upsample=config.model.upsample,
      gaussian=config.variant == "vae",
      num_classes=config.loss.num_classes if config.variant == "supervised" else 0,
  )
