"""Encoding and reconstructing with trained params, for reports, figures and experiments.

These mirror the forward pass of objectives.py without noise: the VAE encodes to its posterior mean,
the top-k autoencoder keeps its k largest latents. Inputs are images (N, H, W, C) uint8 or float in
[0, 1]; work is done in batches of `batch_size` to bound memory.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxae import data as data_lib
from jaxae import losses


def _topk(config) -> int:
  return config.loss.topk if config.variant == "sparse" and config.loss.sparsity == "topk" else 0


@functools.partial(jax.jit, static_argnums=(0, 3))
def _encode(model, params, x, k):
  z = model.apply(params, data_lib.to_float(x), method=model.encode)
  z = z[0] if isinstance(z, tuple) else z
  return losses.top_k(z, k) if k else z


@functools.partial(jax.jit, static_argnums=(0, 3))
def _decode(model, params, z, sigmoid):
  logits = model.apply(params, z, method=model.decode)
  return jax.nn.sigmoid(logits) if sigmoid else logits


def _batched(fn, x, batch_size):
  return np.concatenate([np.asarray(fn(x[i:i + batch_size])) for i in range(0, len(x), batch_size)])


def encode(run_or_model, params, images, config, batch_size: int = 1000) -> np.ndarray:
  """Latent codes (N, d) float32 of one member's params (posterior mean for the VAE)."""
  k = _topk(config)
  return _batched(lambda b: _encode(run_or_model, params, b, k), images, batch_size)


def decode(model, params, z, config, batch_size: int = 1000) -> np.ndarray:
  """Reconstruction means (N, H, W, C) float32 in [0, 1] (raw output for model.output='identity')."""
  return _batched(lambda b: _decode(model, params, jnp.asarray(b), config.model.output == "sigmoid"), z, batch_size)


def reconstruct(model, params, images, config, batch_size: int = 1000) -> np.ndarray:
  """decode(encode(images)) of one member's params, (N, H, W, C) float32."""
  return decode(model, params, encode(model, params, images, config, batch_size), config, batch_size)


def member_params(params, i: int):
  """The params of member i of a vmapped pytree."""
  return jax.tree.map(lambda a: a[i], params)


@functools.partial(jax.jit, static_argnums=(0,))
def _posterior(model, params, x):
  mean, log_var = model.apply(params, data_lib.to_float(x), method=model.encode)
  return jnp.stack([mean, log_var])


def posterior(model, params, images, batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
  """(mean, log_variance), each (N, d) float32: the VAE's Gaussian q(z|x) (Kingma & Welling 2014, eq. 9)."""
  both = np.concatenate([np.asarray(_posterior(model, params, images[i:i + batch_size]))
                         for i in range(0, len(images), batch_size)], axis=1)
  return both[0], both[1]


def decode_logits(model, params, z, batch_size: int = 1000) -> np.ndarray:
  """Raw decoder output (N, H, W, C) float32: Bernoulli logits for a model trained with BCE."""
  return _batched(lambda b: _decode(model, params, jnp.asarray(b), False), z, batch_size)


def encoder_jacobian_sq_norm(model, params, images, batch_size: int = 250) -> np.ndarray:
  """||d z / d x||_F^2 per image (N,) float32, exact (jax.jacrev): Rifai et al. 2011, eq. 2, per example.

  The contractive penalty `losses.contractive_penalty` is the batch mean of this quantity.
  """
  enc = jax.jit(lambda x: jax.vmap(lambda xi: losses.contractive_penalty(
      lambda v: model.apply(params, v, method=model.encode), xi[None]))(x))
  return _batched(lambda b: enc(data_lib.to_float(b)), images, batch_size)
