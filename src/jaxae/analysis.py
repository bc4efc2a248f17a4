"""Encoding and reconstructing with trained params, for reports, figures and experiments.

The code of an input is what its variant uses at inference (`Variant.code_fn`): the VAE's posterior
mean, the top-k autoencoder's k largest latents, the encoder output otherwise. Inputs are arrays
(N, *data_shape) as stored (uint8 or float: the network's `prepare` scales them, with the run's fitted
normalizer if it has one); work is done in batches of `batch_size` to bound memory. `model` is the
run's `models.Net` (`load_run(...).model`).
"""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxae import configs, losses


@functools.lru_cache(maxsize=32)
def _jitted(net, config_json: str, what: str):
  config = ml_collections.ConfigDict(json.loads(config_json))
  if what == "code":
    code = configs.variant_of(config).code_fn(config, net)
    return jax.jit(lambda p, x: code(p, net.prepare(x)))
  if what == "mean":
    return jax.jit(lambda p, z: net.mean(net.decode(p, z)))
  if what == "skip":
    return jax.jit(lambda p, x: net.skip(p, net.prepare(x)))
  raise ValueError(what)


def _fn(net, config, what: str):
  return _jitted(net, config.to_json(sort_keys=True), what)


def _batched(fn, x, batch_size):
  return np.concatenate([np.asarray(fn(x[i:i + batch_size])) for i in range(0, len(x), batch_size)])


def encode(model, params, x, config, batch_size: int = 1000) -> np.ndarray:
  """Codes (N, d) float32 of one member's params (N, *spatial shape) for a spatial code."""
  fn = _fn(model, config, "code")
  return _batched(lambda b: fn(params, b), x, batch_size)


def decode(model, params, z, config, batch_size: int = 1000) -> np.ndarray:
  """Reconstruction means (N, *data_shape) float32 (sigmoid outputs in [0, 1], raw for model.output='identity')."""
  fn = _fn(model, config, "mean")
  return _batched(lambda b: fn(params, jnp.asarray(b)), z, batch_size)


def reconstruct(model, params, x, config, batch_size: int = 1000) -> np.ndarray:
  """decode(encode(x)) of one member's params, (N, *data_shape) float32; a transcoder's reconstruction of its
  target (N, *target_shape), in the target's normalized units, with the skip term of a skip transcoder."""
  out = decode(model, params, encode(model, params, x, config, batch_size), config, batch_size)
  if hasattr(model.module, "skip"):
    fn = _fn(model, config, "skip")
    out = out + _batched(lambda b: fn(params, b), x, batch_size)
  return out


def member_params(params, i: int):
  """The params of member i of a vmapped pytree."""
  return jax.tree.map(lambda a: a[i], params)


@functools.partial(jax.jit, static_argnums=(0,))
def _posterior(net, params, x):
  mean, log_var = net.encode(params, net.prepare(x))
  return jnp.stack([mean, log_var])


def posterior(model, params, x, batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
  """(mean, log_variance), each (N, d) float32: a Gaussian encoder's q(z|x) (Kingma & Welling 2014, eq. 9)."""
  both = np.concatenate([np.asarray(_posterior(model, params, x[i:i + batch_size]))
                         for i in range(0, len(x), batch_size)], axis=1)
  return both[0], both[1]


@functools.partial(jax.jit, static_argnums=(0,))
def _logits(net, params, z):
  return net.decode(params, z)


def decode_logits(model, params, z, batch_size: int = 1000) -> np.ndarray:
  """Raw decoder output (N, *data_shape) float32: Bernoulli logits for a model trained with BCE."""
  return _batched(lambda b: _logits(model, params, jnp.asarray(b)), z, batch_size)


def encoder_jacobian_sq_norm(model, params, x, batch_size: int = 250) -> np.ndarray:
  """||d z / d x||_F^2 per input (N,) float32, exact (jax.jacrev): Rifai et al. 2011, eq. 2, per example.

  The contractive penalty `losses.contractive_penalty` is the batch mean of this quantity.
  """
  enc = jax.jit(lambda b: jax.vmap(lambda xi: losses.contractive_penalty(lambda v: model.encode(params, v), xi[None]))(b))
  return _batched(lambda b: enc(model.prepare(b)), x, batch_size)


def squared_errors(model, params, x, config, batch_size: int = 1000, target=None) -> np.ndarray:
  """(reconstruct(x) - prepare(x))^2, (N, *data_shape) float32, for one member's params; for a model with a
  target (data.target_source), (reconstruct(x) - prepare_target(target))^2, (N, *target_shape).

  In the network's input space: after the run's normalizer (`data.normalize`), so the mean over
  everything is the held-out `recon_mse` the run reports.
  """
  if (model.target is None) != (target is None):
    raise ValueError("squared_errors: give `target` (N, *target_shape) exactly when the model has a target")
  out = []
  for i in range(0, len(x), batch_size):
    batch = x[i:i + batch_size]
    ref = model.prepare(batch) if target is None else model.prepare_target(np.asarray(target[i:i + batch_size]))
    out.append(np.square(reconstruct(model, params, batch, config, batch_size) - np.asarray(ref)))
  return np.concatenate(out)
