"""The checks a config value goes through, shared by `jaxae.configs` and the variants in `jaxae.variants`.

Below both: configs imports the variants' registry (to add their keys and defaults), and each variant
validates its own keys with these helpers, so they live here rather than in either of them. Every
failure is a one-line `ConfigError` naming the key and the value. Nothing here imports jax.
"""

from __future__ import annotations

from typing import Any

from jaxae import errors

ConfigError = errors.ConfigError  # a config value that cannot work (errors.BadInput, ValueError)


def get(config, dotted: str) -> Any:
  """`get(config, 'loss.beta')`; raises ConfigError naming the key if it does not exist."""
  node = config
  for part in dotted.split("."):
    try:
      node = node[part]
    except (KeyError, AttributeError, TypeError):
      raise ConfigError(f"unknown config key {dotted!r}") from None
  return node


def choice(config, key: str, options) -> None:
  """ConfigError unless the value of `key` is one of `options`."""
  value = get(config, key)
  if value not in options:
    raise ConfigError(f"{key}={value!r} is not one of {', '.join(map(repr, options))}")


def positive_int(config, key: str, zero_ok: bool = False) -> None:
  """ConfigError unless the value of `key` is an int (not a bool) > 0 (>= 0 with zero_ok)."""
  value = get(config, key)
  ok = isinstance(value, int) and not isinstance(value, bool) and (value > 0 or (zero_ok and value == 0))
  if not ok:
    raise ConfigError(f"{key}={value!r} must be a {'non-negative' if zero_ok else 'positive'} integer")


def nonneg_float(config, key: str) -> None:
  """ConfigError unless the value of `key` is a number (not a bool) >= 0."""
  value = get(config, key)
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
    raise ConfigError(f"{key}={value!r} must be a non-negative number")
