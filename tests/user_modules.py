"""Flax modules of a 'user' for the plug-in tests: `model.encoder='user_modules:TinyEncoder'` etc."""

import flax.linen as nn


class TinyEncoder(nn.Module):
  """x (B, ...) -> features (B, width): flatten, one tanh layer."""

  width: int = 16

  @nn.compact
  def __call__(self, x):
    return nn.tanh(nn.Dense(self.width)(x.reshape(x.shape[0], -1)))


class TinyDecoder(nn.Module):
  """z (B, d) -> logits (B, *data_shape); takes the train flag (dropout when training). jaxae fills in
  `data_shape`."""

  data_shape: tuple = ()
  rate: float = 0.0

  @nn.compact
  def __call__(self, z, train: bool = False):
    h = nn.Dropout(self.rate, deterministic=not train)(nn.relu(nn.Dense(32)(z)))
    size = 1
    for s in self.data_shape:
      size *= s
    return nn.Dense(size)(h).reshape(z.shape[0], *self.data_shape)


class SpatialEncoder(nn.Module):
  """Breaks the contract: returns (B, H, W, C) feature maps instead of (B, F)."""

  @nn.compact
  def __call__(self, x):
    return nn.Conv(4, (3, 3))(x)


class WrongDecoder(nn.Module):
  """Breaks the contract: returns (B, 10) whatever the data shape."""

  @nn.compact
  def __call__(self, z):
    return nn.Dense(10)(z)


NotAModule = object
