"""Networks: stateless Flax (linen) encoders, decoders, heads, and `Net`, the view a variant trains.

Inputs are float32 arrays (B, *data_shape): images (B, H, W, C) in [0, 1] or vectors (B, D). Decoders
return logits of the data's shape; the variant's likelihood decides whether a sigmoid is applied
(`Net.mean`). Networks are built from explicit arguments (`build(model_config, data_shape, ...)`): which
latent layers and heads a network has is the variant's business (jaxae/variants/), never decided here
from the variant's name.

Built-in backbones (`model.backbone`):
  mlp     x -> hidden layers (`model.hidden`, `model.activation`, `model.dropout`) -> Dense(d);
          the decoder mirrors the hidden layers. The reference 784-512-256-d ReLU network by default.
  conv    3x3 convolutions (`model.conv_channels`), each halving H and W (`model.downsample`: stride 2,
          or stride 1 + 2x2 max-pooling as in Keras), then Dense(d); the decoder a Dense back to the
          smallest feature map, then stride-2 learned upsamplings (`model.upsample`: transposed
          convolution, nearest resize + convolution, convolution + depth-to-space, or `nearest`:
          Keras's Conv + UpSampling2D stages then a 3x3 output convolution). `model.latent_dim=0`
          keeps a spatial code: the latent is the H/2^L x W/2^L x C_L feature map, no dense bottleneck.
  linear  one Dense(d) encoder and one Dense decoder with no nonlinearity (the PCA-equivalent AE).
Or the user's own modules: `model.encoder='package.module:ClassName'` (and `model.decoder`), see
`user_module`.

The conv backbone's 3x3 convolutions are computed as patches @ kernel (`conv_impl='patches'`, the
default): the same parameters (names, shapes, initialization) and the same function as flax
nn.Conv / nn.ConvTranspose (`conv_impl='xla'`), but XLA:CPU runs dense matmuls several times faster
than its native convolutions inside `lax.scan`, under vmap over members (grouped convolutions) and
for transposed convolutions (benchmarks/README.md).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.core import FrozenDict
from jax import lax

from jaxae import data as data_lib
from jaxae import errors

ACTIVATIONS = {"relu": nn.relu, "tanh": nn.tanh, "sigmoid": nn.sigmoid, "gelu": nn.gelu, "elu": nn.elu,
               "leaky_relu": nn.leaky_relu, "silu": nn.silu}
INITS = ("flax", "pytorch", "keras")
DOWNSAMPLES = ("stride", "maxpool")
UPSAMPLES = ("transpose", "resize", "depth_to_space", "nearest")


class NetworkError(errors.BadInput, ValueError):
  """A network that cannot be built for this data (shapes), or a user module that breaks its contract."""


def pytorch_kernel_init(fan_in: int):
  """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): torch.nn.Linear/Conv2d's kaiming_uniform_(a=sqrt(5)) default."""
  bound = 1.0 / np.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def _init_kwargs(init: str, fan_in: int) -> dict:
  """Kernel and bias initializers of a scheme: flax (LeCun normal, zero bias), pytorch, keras (Glorot uniform)."""
  if init == "pytorch":
    u = pytorch_kernel_init(fan_in)
    return dict(kernel_init=u, bias_init=u)
  if init == "keras":
    return dict(kernel_init=nn.initializers.glorot_uniform())
  return {}


def _dense(features: int, fan_in: int, init: str, name: str | None = None) -> nn.Dense:
  return nn.Dense(features, name=name, **_init_kwargs(init, fan_in))


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
# Output channels up to which conv_transpose3x3_s2 scatters (matmul, then shifted adds) instead of
# gathering 2x2 neighbourhoods: the decoder's last layer (1 channel for MNIST, 3 for RGB). With few
# output channels the gather form's matmul has N = 4 Cout and its backward transposes (B h w, 4 Cin)
# arrays; the scatter form's dW is a plain (9 Cout, P) @ (P, Cin) product. configs/conv.py's step:
# 9.6 -> 8.4 ms on 2 cores; at 3 channels forward+backward is level, forward faster; at 16 the
# scatter form is slower (benchmarks/CONV_STEP.md).
SCATTER_MAX_CHANNELS = 4


def conv_transpose3x3_s2(x, kernel):
  """Stride-2 'SAME' transposed 3x3 convolution as dense matmuls (see the two forms below).

  x (B, h, w, Cin), kernel (3, 3, Cin, Cout) -> (B, 2h, 2w, Cout); equal to
  lax.conv_transpose(x, kernel, (2, 2), 'SAME') (flax nn.ConvTranspose with transpose_kernel=False).
  Cout <= SCATTER_MAX_CHANNELS: conv_transpose3x3_s2_scatter, otherwise conv_transpose3x3_s2_gather.
  """
  if kernel.shape[-1] <= SCATTER_MAX_CHANNELS:
    return conv_transpose3x3_s2_scatter(x, kernel)
  return conv_transpose3x3_s2_gather(x, kernel)


def conv_transpose3x3_s2_gather(x, kernel):
  """conv_transpose3x3_s2 as one matmul of 2x2 neighbourhoods, then depth-to-space.

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


def conv_transpose3x3_s2_scatter(x, kernel):
  """conv_transpose3x3_s2 as col2im: every input pixel times every tap, then shifted adds per output phase.

  T (3, 3, Cout, B, h, w) = kernel^T x^T, one (9 Cout, Cin) @ (Cin, B h w) product kept taps- and
  channels-major, so that the shifted slices of col2im run along its minor (spatial) axes and the
  backward's dW is a (9 Cout, B h w) @ (B h w, Cin) product. Output phase (a, b) at (m, n) sums
  T[ty, tx, :, m - 1 + d, n - 1 + e] over the (d, e) with ty = _TAP[d, a], tx = _TAP[e, b] < 3.
  """
  b, h, w, c = x.shape
  out = kernel.shape[-1]
  wf = kernel.transpose(2, 0, 1, 3).reshape(c, 9 * out)
  t = lax.dot_general(wf, x.reshape(-1, c), (((0,), (1,)), ((), ()))).reshape(3, 3, out, b, h, w)
  tp = jnp.pad(t, ((0, 0), (0, 0), (0, 0), (0, 0), (1, 0), (1, 0)))
  phases = []
  for a in range(2):
    for bb in range(2):
      terms = [tp[_TAP[d, a], _TAP[e, bb], :, :, d:d + h, e:e + w]
               for d in range(2) for e in range(2) if _TAP[d, a] < 3 and _TAP[e, bb] < 3]
      phases.append(sum(terms[1:], terms[0]))
  y = jnp.stack(phases, axis=-1).reshape(out, b, h, w, 2, 2).transpose(1, 2, 4, 3, 5, 0)
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
  kw = _init_kwargs(init, fan_in)
  if impl == "patches":
    return PatchConv(features, strides=strides, name=name, **kw)
  return nn.Conv(features, kernel_size=(3, 3), strides=(strides, strides), padding=((1, 1), (1, 1)), name=name, **kw)


def _upsample_nearest(h):
  """2x nearest-neighbour upsampling of (B, H, W, C) (Keras UpSampling2D)."""
  return jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)


def _dropout(h, rate: float, train: bool):
  # No module at rate 0: parameter trees and random streams stay those of a network without dropout.
  return nn.Dropout(rate, deterministic=not train)(h) if rate > 0 else h


def takes_train_flag(module: nn.Module) -> bool:
  """Whether a module's __call__ accepts `train=` (user modules may not)."""
  try:
    return "train" in inspect.signature(type(module).__call__).parameters
  except (TypeError, ValueError):
    return False


def _call(module: nn.Module, x, train: bool):
  return module(x, train=train) if takes_train_flag(module) else module(x)


class Encoder(nn.Module):
  """x (B, *data_shape) float32 -> latent (B, latent_dim), or (mean, log_variance) when gaussian=True.

  latent_dim=0 (conv backbone only): the latent is the last feature map itself (a spatial code).
  `custom`: a user module mapping x to features (B, F); the latent layer(s) are added on top.
  """

  backbone: str = "mlp"
  latent_dim: int = 32
  hidden: Sequence[int] = (512, 256)
  conv_channels: Sequence[int] = (16, 32)
  init_scheme: str = "flax"
  gaussian: bool = False
  activation: str = "relu"
  dropout: float = 0.0
  downsample: str = "stride"
  conv_impl: str = "patches"  # 'patches' | 'xla': same function and parameters (see module docstring)
  custom: nn.Module | None = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    act = ACTIVATIONS[self.activation]
    if self.custom is not None:
      h = _call(self.custom, x, train)
    elif self.backbone == "conv":
      h = x
      for i, ch in enumerate(self.conv_channels):
        stride = 2 if self.downsample == "stride" else 1
        h = act(_conv(ch, h.shape[-1] * 9, self.init_scheme, stride, self.conv_impl, f"Conv_{i}")(h))
        if self.downsample == "maxpool":
          h = nn.max_pool(h, (2, 2), (2, 2), padding="SAME")
        h = _dropout(h, self.dropout, train)
      if self.latent_dim == 0:
        return h
      h = h.reshape(h.shape[0], -1)
    elif self.backbone == "mlp":
      h = x.reshape(x.shape[0], -1)
      for width in self.hidden:
        h = _dropout(act(_dense(width, h.shape[-1], self.init_scheme)(h)), self.dropout, train)
    else:  # linear
      h = x.reshape(x.shape[0], -1)
    z = _dense(self.latent_dim, h.shape[-1], self.init_scheme, name="latent")(h)
    if not self.gaussian:
      return z
    log_var = _dense(self.latent_dim, h.shape[-1], self.init_scheme, name="log_variance")(h)
    return z, log_var


class Decoder(nn.Module):
  """latent (B, latent_dim) (or a spatial code) -> logits (B, *data_shape)."""

  data_shape: Sequence[int] = (28, 28, 1)
  backbone: str = "mlp"
  latent_dim: int = 32
  hidden: Sequence[int] = (512, 256)
  conv_channels: Sequence[int] = (16, 32)
  init_scheme: str = "flax"
  upsample: str = "transpose"
  activation: str = "relu"
  dropout: float = 0.0
  conv_impl: str = "patches"
  custom: nn.Module | None = None

  @nn.compact
  def __call__(self, z, train: bool = False):
    act = ACTIVATIONS[self.activation]
    if self.custom is not None:
      return _call(self.custom, z, train)
    if self.backbone == "conv":
      H, W, C = self.data_shape
      down = 2 ** len(self.conv_channels)
      h0, w0, c0 = H // down, W // down, self.conv_channels[-1]
      h = z
      if self.latent_dim:
        h = act(_dense(h0 * w0 * c0, z.shape[-1], self.init_scheme)(z)).reshape(z.shape[0], h0, w0, c0)
      if self.upsample == "nearest":  # Keras: Conv + UpSampling2D per stage, then a 3x3 output conv
        for i, ch in enumerate(reversed(self.conv_channels)):
          h = act(_conv(ch, h.shape[-1] * 9, self.init_scheme, 1, self.conv_impl, f"Conv_{i}")(h))
          h = _dropout(_upsample_nearest(h), self.dropout, train)
        return _conv(C, h.shape[-1] * 9, self.init_scheme, 1, self.conv_impl, f"Conv_{len(self.conv_channels)}")(h)
      outs = list(self.conv_channels[-2::-1]) + [C]
      for i, ch in enumerate(outs):
        h = self._upsample(h, ch, i)
        if i < len(outs) - 1:
          h = _dropout(act(h), self.dropout, train)
      return h
    h = z.reshape(z.shape[0], -1)
    if self.backbone == "mlp":
      for width in reversed(self.hidden):
        h = _dropout(act(_dense(width, h.shape[-1], self.init_scheme)(h)), self.dropout, train)
    h = _dense(math.prod(self.data_shape), h.shape[-1], self.init_scheme)(h)
    return h.reshape(z.shape[0], *self.data_shape)

  def _upsample(self, h, features: int, i: int):
    """Doubles height and width. All three are stride-2 learned upsamplings of a 3x3 receptive field."""
    if self.upsample == "transpose":
      # torch.nn.ConvTranspose2d computes fan_in from its weight's dim 1 = out_channels * k * k.
      kw = _init_kwargs(self.init_scheme, features * 9)
      name = f"ConvTranspose_{i}"
      if self.conv_impl == "patches":
        return PatchConv(features, strides=2, transpose=True, name=name, **kw)(h)
      return nn.ConvTranspose(features, kernel_size=(3, 3), strides=(2, 2), padding="SAME", name=name, **kw)(h)
    if self.upsample == "resize":
      return _conv(features, h.shape[-1] * 9, self.init_scheme, 1, self.conv_impl, f"Conv_{i}")(_upsample_nearest(h))
    # depth_to_space (sub-pixel convolution, Shi et al. 2016): conv to 4x channels, then shuffle.
    b, hh, ww, c = h.shape
    h = _conv(4 * features, c * 9, self.init_scheme, 1, self.conv_impl, f"Conv_{i}")(h)
    h = h.reshape(b, hh, ww, 2, 2, features).transpose(0, 1, 3, 2, 4, 5)
    return h.reshape(b, 2 * hh, 2 * ww, features)


class MLPHead(nn.Module):
  """A head on the latent: z (B, ...) -> (B, features) through `hidden` layers (e.g. a classifier).

  hidden=() is one Dense layer (a linear classifier).
  """

  features: int
  hidden: Sequence[int] = ()
  activation: str = "relu"
  dropout: float = 0.0
  init_scheme: str = "flax"

  @nn.compact
  def __call__(self, z, train: bool = False):
    h = z.reshape(z.shape[0], -1)
    for width in self.hidden:
      h = _dropout(ACTIVATIONS[self.activation](_dense(width, h.shape[-1], self.init_scheme)(h)), self.dropout, train)
    return _dense(self.features, h.shape[-1], self.init_scheme)(h)


class Autoencoder(nn.Module):
  """Encoder + decoder + named heads on the latent (e.g. {'classifier': MLPHead(10)}).

  Methods (all take params through `apply`; `train` switches dropout on):
    encode(x, train) -> z (B, d), or (mean, log_variance) for a Gaussian encoder
    decode(z, train) -> logits (B, *data_shape)
    head(z, name, train) -> the named head's output
    __call__(x) -> initializes every submodule; returns decode(mean latent).
  """

  encoder: nn.Module
  decoder: nn.Module
  heads: Mapping[str, nn.Module] = FrozenDict()

  def encode(self, x, train: bool = False):
    return self.encoder(x, train)

  def decode(self, z, train: bool = False):
    return self.decoder(z, train)

  def head(self, z, name: str, train: bool = False):
    return self.heads[name](z, train)

  def __call__(self, x, train: bool = False):
    z = self.encode(x, train)
    z = z[0] if isinstance(z, tuple) else z
    for name in self.heads:
      self.head(z, name, train)
    return self.decode(z, train)


# Salts of the dropout keys drawn from a step's key: a pure function of (seed, step), so resume stays exact.
_DROPOUT_SALT = {"encode": 101, "decode": 102, "head": 103}


@dataclasses.dataclass(frozen=True)
class Net:
  """What a variant's objective calls: the flax module's methods with params, keys and the train flag.

  `key` (a typed PRNG key) is used only when `train` is True, for dropout. Hashable (a static jit argument).
  `prepare` turns stored inputs (uint8 or float, any scale) into the network's float32 inputs: the
  run's fitted `data.Normalizer`, or `data.to_float` when there is none.
  """

  module: nn.Module
  data_shape: tuple
  output: str = "sigmoid"  # reconstruction mean = sigmoid(logits) or the raw decoder output
  normalizer: Any = None  # data.Normalizer fitted on the training split (data.normalize), or None
  target: Any = None  # data.Target (shape, normalizer) of what the network reconstructs instead of x, or None

  def prepare(self, x):
    """Stored inputs (N, *data_shape) -> float32 network inputs (numpy or jax)."""
    return self.normalizer.apply(x) if self.normalizer is not None else data_lib.to_float(x)

  def prepare_target(self, t):
    """Stored targets (N, *target.shape) -> float32, in the units of the network's output (numpy or jax)."""
    return self.target.prepare(t)

  @property
  def output_shape(self) -> tuple:
    """The shape of one reconstruction: the target's with data.target_source, else data_shape."""
    return tuple(self.target.shape) if self.target is not None else tuple(self.data_shape)

  def init(self, key, sample):
    return self.module.init(key, sample)

  def _rngs(self, key, train: bool, what: str, salt: int = 0):
    if not train or key is None:
      return {}
    return {"dropout": jax.random.fold_in(key, _DROPOUT_SALT[what] + salt)}

  def encode(self, params, x, key=None, train: bool = False):
    return self.module.apply(params, x, train, method=self.module.encode, rngs=self._rngs(key, train, "encode"))

  def decode(self, params, z, key=None, train: bool = False):
    return self.module.apply(params, z, train, method=self.module.decode, rngs=self._rngs(key, train, "decode"))

  def skip(self, params, x):
    """The part of the reconstruction that bypasses the code, added to the decoder's output: a module's
    `skip(x)` method (a skip transcoder's x @ W_skip, Paulo et al. 2025), else 0. x: network inputs."""
    if not hasattr(self.module, "skip"):
      return 0.0
    return self.module.apply(params, x, method=self.module.skip)

  def head(self, params, name: str, z, key=None, train: bool = False):
    salt = sorted(self.module.heads).index(name)
    return self.module.apply(params, z, name, train, method=self.module.head, rngs=self._rngs(key, train, "head", salt))

  def mean(self, logits):
    """The reconstruction mean of decoder logits (sigmoid, or identity for model.output='identity')."""
    return jax.nn.sigmoid(logits) if self.output == "sigmoid" else logits


def with_conv_impl(net: Net, impl: str) -> Net:
  """The same network (parameters, function) computing its 3x3 convolutions with `impl` ('patches' | 'xla')."""
  m = net.module
  return dataclasses.replace(net, module=m.clone(encoder=m.encoder.clone(conv_impl=impl),
                                                 decoder=m.decoder.clone(conv_impl=impl)))


def user_module(spec: str, kwargs: Mapping[str, Any] | None = None, data_shape=None) -> nn.Module:
  """The user's flax module from 'package.module:ClassName' and its keyword arguments.

  A module with a `data_shape` field that the keyword arguments leave unset is given the data's shape
  (a decoder needs it to produce (B, *data_shape)). Raises NetworkError (one line) when the module
  cannot be imported, the class does not exist, is not a flax.linen.Module subclass, or rejects the
  keyword arguments.
  """
  if not isinstance(spec, str) or spec.count(":") != 1:
    raise NetworkError(f"{spec!r} must be 'package.module:ClassName'")
  path, name = spec.split(":")
  try:
    cls = getattr(importlib.import_module(path), name)
  except Exception as e:  # noqa: BLE001 - any import failure is the user's module's; say which
    raise NetworkError(f"cannot import {spec!r}: {type(e).__name__}: {e}") from None
  if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
    raise NetworkError(f"{spec!r} is not a flax.linen.Module class")
  kwargs = dict(kwargs or {})
  if data_shape is not None and "data_shape" in getattr(cls, "__dataclass_fields__", {}) and "data_shape" not in kwargs:
    kwargs["data_shape"] = tuple(data_shape)
  try:
    return cls(**kwargs)
  except TypeError as e:
    raise NetworkError(f"{spec!r} does not take the keyword arguments {kwargs}: {e}") from None


def check_data_shape(model_config, data_shape) -> None:
  """Raises NetworkError when inputs of `data_shape` do not fit the configured built-in backbone."""
  m = model_config
  if m.backbone != "conv" or m.encoder:
    return
  if len(data_shape) != 3:
    raise NetworkError(f"model.backbone='conv' needs images (N, height, width, channels); the data are vectors of "
                       f"shape {tuple(data_shape)}: use model.backbone='mlp' or 'linear'")
  H, W, _ = data_shape
  down = 2 ** len(m.conv_channels)
  if H % down or W % down:
    raise NetworkError(f"images of shape {tuple(data_shape)} do not fit model.backbone='conv' with "
                       f"{len(m.conv_channels)} downsampling layers: height and width must be multiples of {down}")


def build(model_config, data_shape, gaussian: bool = False, heads: Mapping[str, nn.Module] | None = None,
          normalizer=None) -> Net:
  """The network `config.model` describes for inputs of `data_shape` ((H, W, C) or (D,)).

  gaussian: the encoder outputs (mean, log_variance) (a variational posterior); heads: extra modules
  on the latent, by name (the variant's); normalizer: the data.Normalizer of its inputs (Net.prepare).
  Raises NetworkError for shapes that do not fit, and for user modules that break the shape contract
  (checked with jax.eval_shape, nothing allocated).
  """
  m = model_config
  data_shape = tuple(int(s) for s in data_shape)
  check_data_shape(m, data_shape)
  if gaussian and m.latent_dim == 0:
    raise NetworkError("a Gaussian encoder needs a vector latent: model.latent_dim must be positive")
  common = dict(backbone=m.backbone, latent_dim=m.latent_dim, hidden=tuple(m.hidden), conv_channels=tuple(m.conv_channels),
                init_scheme=m.init, activation=m.activation, dropout=float(m.dropout))
  encoder = Encoder(**common, gaussian=gaussian, downsample=m.downsample,
                    custom=user_module(m.encoder, m.encoder_kwargs.to_dict(), data_shape) if m.encoder else None)
  decoder = Decoder(**common, data_shape=data_shape, upsample=m.upsample,
                    custom=user_module(m.decoder, m.decoder_kwargs.to_dict(), data_shape) if m.decoder else None)
  net = Net(Autoencoder(encoder, decoder, FrozenDict(heads or {})), data_shape, m.output, normalizer)
  if m.encoder or m.decoder:
    check_user_modules(net, m)
  return net


def check_user_modules(net: Net, model_config, batch: int = 2) -> None:
  """Raises NetworkError naming the module, the shape it returned and the shape expected.

  Contract: the encoder maps x (B, *data_shape) float32 to features (B, F) (jaxae adds the latent
  layer(s) on top); the decoder maps z (B, latent_dim) float32 to logits (B, *data_shape). Checked
  with jax.eval_shape: nothing is allocated.
  """
  m = model_config
  if m.encoder:
    x = (batch, *net.data_shape)
    feats = _output_shape(m.encoder, net.module.encoder.custom, x)
    if len(feats) != 2 or feats[0] != batch:
      raise NetworkError(f"model.encoder {m.encoder!r} returned shape {feats} for input {x}: expected (batch, features) "
                         f"= ({batch}, F)")
  if m.decoder:
    if m.latent_dim == 0:
      raise NetworkError("model.decoder (a user module) needs a vector latent: model.latent_dim must be positive")
    z = (batch, m.latent_dim)
    out = _output_shape(m.decoder, net.module.decoder.custom, z)
    if out != (batch, *net.data_shape):
      raise NetworkError(f"model.decoder {m.decoder!r} returned shape {out} for latents {z}: expected "
                         f"{(batch, *net.data_shape)}")


def _output_shape(spec: str, module: nn.Module, in_shape: tuple) -> tuple:
  """Output shape of an unbound user module on float32 zeros of `in_shape`, by jax.eval_shape."""
  def forward(key):
    kw = {"train": False} if takes_train_flag(module) else {}
    return module.init_with_output(key, jnp.zeros(in_shape, jnp.float32), **kw)[0]

  try:
    out = jax.eval_shape(forward, jax.random.key(0))
  except Exception as e:  # noqa: BLE001 - the user's module raised: say which and why, in one line
    msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
    raise NetworkError(f"{spec!r} failed on an input of shape {in_shape}: {type(e).__name__}: {msg}") from None
  if not hasattr(out, "shape"):
    raise NetworkError(f"{spec!r} returned a {type(out).__name__} for an input of shape {in_shape}, expected one array")
  return tuple(out.shape)


def param_counts(params) -> dict[str, int]:
  """{'encoder': n, 'decoder': n, <head>: n, ..., 'total': n}: parameters per top-level module.

  params: the variables of one member (`Net.init`), arrays or ShapeDtypeStructs.
  """
  tree = params.get("params", params)
  order = sorted(tree, key=lambda n: (n != "encoder", n != "decoder", n))
  counts = {name: int(sum(math.prod(a.shape) for a in jax.tree.leaves(tree[name]))) for name in order}
  counts["total"] = sum(counts.values())
  return counts
