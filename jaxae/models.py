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

The conv backbone's 3x3 convolutions are computed as patches @ kernel (`conv_impl='patches'`, the
default): the same parameters (names, shapes, initialization) and the same function as flax
nn.Conv / nn.ConvTranspose (`conv_impl='xla'`), but XLA:CPU runs dense matmuls several times faster
than its native convolutions inside `lax.scan`, under vmap over members (grouped convolutions) and
for transposed convolutions (benchmarks/README.md).
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def pytorch_kernel_init(fan_in: int):
  """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): torch.nn.Linear/Conv2d's kaiming_uniform_(a=sqrt(5)) default."""
  bound = 1.0 / np.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def _dense(features: int, fan_in: int, init: str, name: str | None = None) -> nn.Dense:
  if init == "pytorch":
    u = pytorch_kernel_init(fan_in)
    return nn.Dense(features, kernel_init=u, bias_init=u, name=name)
  return nn.Dense(features, name=name)


def conv3x3(x, kernel, stride: int = 1):
  """3x3 convolution with padding 1 as one matmul of the 9 shifted (strided) views of x.

  x (B, H, W, Cin), kernel (3, 3, Cin, Cout) -> (B, ceil(H / stride), ceil(W / stride), Cout); equal to
  lax.conv_general_dilated(x, kernel, (stride, stride), ((1, 1), (1, 1))) in NHWC / HWIO.
  """
  b, h, w, c = x.shape
  ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  views = [lax.slice(xp, (0, dy, dx, 0), (b, dy + stride * (ho - 1) + 1, dx + stride * (wo - 1) + 1, c), (1, stride, stride, 1))
           for dy in range(3) for dx in range(3)]
  return jnp.dot(jnp.concatenate(views, axis=-1), kernel.reshape(9 * c, kernel.shape[-1]))


# Stride-2 transposed 3x3 convolution ('SAME'): output row 2m + a takes input rows m - 1 (d = 0) and m
# (d = 1) through kernel tap _TAP[d, a]; tap 3 is a zero row padded onto the kernel.
_TAP = np.array([[0, 3], [2, 1]])


def conv_transpose3x3_s2(x, kernel):
  """Stride-2 'SAME' transposed 3x3 convolution as one matmul of 2x2 neighbourhoods, then depth-to-space.

  x (B, h, w, Cin), kernel (3, 3, Cin, Cout) -> (B, 2h, 2w, Cout); equal to
  lax.conv_transpose(x, kernel, (2, 2), 'SAME') (flax nn.ConvTranspose with transpose_kernel=False).
  The 4 output phases share one (4 Cin, 4 Cout) weight matrix with 7 of its 16 blocks zero.
  """
  b, h, w, c = x.shape
  out = kernel.shape[-1]
  xp = jnp.pad(x, ((0, 0), (1, 0), (1, 0), (0, 0)))
  patches = jnp.concatenate([xp[:, dy:dy + h, dx:dx + w, :] for dy in range(2) for dx in range(2)], axis=-1)
  kz = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))
  wk = kz[_TAP[:, :, None, None], _TAP[None, None, :, :]]  # (dy, a, dx, b, Cin, Cout)
  wk = wk.transpose(0, 2, 4, 1, 3, 5).reshape(4 * c, 4 * out)
  y = jnp.dot(patches, wk).reshape(b, h, w, 2, 2, out).transpose(0, 1, 3, 2, 4, 5)
  return y.reshape(b, 2 * h, 2 * w, out)


class PatchConv(nn.Module):
  """nn.Conv(kernel 3x3, padding 1) or nn.ConvTranspose(3x3, stride 2, 'SAME') as patches @ kernel.

  Same parameters as the flax modules: kernel (3, 3, Cin, features), bias (features,).
  """

  features: int
  strides: int = 1
  transpose: bool = False
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", self.kernel_init, (3, 3, x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
    y = conv_transpose3x3_s2(x, kernel) if self.transpose else conv3x3(x, kernel, self.strides)
    return y + bias


def _conv(features: int, fan_in: int, init: str, strides=1, impl: str = "patches", name: str | None = None):
  """3x3 convolution, padding 1; `name` keeps the parameter tree identical across `impl`s."""
  kw = {}
  if init == "pytorch":
    u = pytorch_kernel_init(fan_in)
    kw = dict(kernel_init=u, bias_init=u)
  if impl == "patches":
    return PatchConv(features, strides=strides, name=name, **kw)
  return nn.Conv(features, kernel_size=(3, 3), strides=(strides, strides), padding=((1, 1), (1, 1)), name=name, **kw)


class Encoder(nn.Module):
  """x (B, H, W, C) float32 -> latent (B, latent_dim), or (mean, log_variance) when gaussian=True."""

  backbone: str = "mlp"
  latent_dim: int = 32
  hidden: Sequence[int] = (512, 256)
  conv_channels: Sequence[int] = (16, 32)
  init_scheme: str = "flax"
  gaussian: bool = False
  conv_impl: str = "patches"  # 'patches' | 'xla': same function and parameters (see module docstring)

  @nn.compact
  def __call__(self, x):
    if self.backbone == "conv":
      h = x
      for i, ch in enumerate(self.conv_channels):
        h = nn.relu(_conv(ch, h.shape[-1] * 9, self.init_scheme, 2, self.conv_impl, f"Conv_{i}")(h))
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
  conv_impl: str = "patches"

  @nn.compact
  def __call__(self, z):
    H, W, C = self.image_shape
    if self.backbone == "conv":
      down = 2 ** len(self.conv_channels)
      h0, w0, c0 = H // down, W // down, self.conv_channels[-1]
      h = nn.relu(_dense(h0 * w0 * c0, z.shape[-1], self.init_scheme)(z)).reshape(z.shape[0], h0, w0, c0)
      outs = list(self.conv_channels[-2::-1]) + [C]
      for i, ch in enumerate(outs):
        h = self._upsample(h, ch, i)
        if i < len(outs) - 1:
          h = nn.relu(h)
      return h
    h = z
    if self.backbone == "mlp":
      for width in reversed(self.hidden):
        h = nn.relu(_dense(width, h.shape[-1], self.init_scheme)(h))
    h = _dense(H * W * C, h.shape[-1], self.init_scheme)(h)
    return h.reshape(z.shape[0], H, W, C)

  def _upsample(self, h, features: int, i: int):
    """Doubles height and width. All three are stride-2 learned upsamplings of a 3x3 receptive field."""
    if self.upsample == "transpose":
      # torch.nn.ConvTranspose2d computes fan_in from its weight's dim 1 = out_channels * k * k.
      kw = {}
      if self.init_scheme == "pytorch":
        u = pytorch_kernel_init(features * 9)
        kw = dict(kernel_init=u, bias_init=u)
      name = f"ConvTranspose_{i}"
      if self.conv_impl == "patches":
        return PatchConv(features, strides=2, transpose=True, name=name, **kw)(h)
      return nn.ConvTranspose(features, kernel_size=(3, 3), strides=(2, 2), padding="SAME", name=name, **kw)(h)
    if self.upsample == "resize":
      b, hh, ww, c = h.shape
      h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)  # nearest-neighbour resize
      return _conv(features, c * 9, self.init_scheme, 1, self.conv_impl, f"Conv_{i}")(h)
    # depth_to_space (sub-pixel convolution, Shi et al. 2016): conv to 4x channels, then shuffle.
    b, hh, ww, c = h.shape
    h = _conv(4 * features, c * 9, self.init_scheme, 1, self.conv_impl, f"Conv_{i}")(h)
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
  conv_impl: str = "patches"  # 'patches' | 'xla' (flax nn.Conv / nn.ConvTranspose): same function

  def setup(self):
    self.encoder = Encoder(self.backbone, self.latent_dim, self.hidden, self.conv_channels, self.init_scheme, self.gaussian,
                           self.conv_impl)
    self.decoder = Decoder(self.image_shape, self.backbone, self.hidden, self.conv_channels, self.init_scheme, self.upsample,
                           self.conv_impl)
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
