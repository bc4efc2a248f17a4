"""jaxae's reference MNIST classifier: the feature space of the generation-quality metrics.

A multilayer perceptron 784-256-128-10 (ReLU; flax.linen) trained once by jaxae with a fixed seed on the
official 60,000-image MNIST training set, shipped as `mnist_classifier.safetensors` beside this file
(float16 weights) with its SHA-256 recorded here (`SHA256`) and verified on every load. Its features are
the 128 activations of the penultimate layer (after the ReLU). `jaxae.generation` measures samples in this
space: the Frechet distance there is NOT Inception FID (Heusel et al. 2017 use Inception-v3 pool3 features
of ImageNet); numbers are comparable only with other numbers computed with this very file.

Regenerate (about a minute on two CPU cores; prints the test accuracy and the new checksum to paste into
`SHA256`):

    python -m jaxae.reference --train --mnist_dir=../shared/data/mnist

Inputs everywhere: images (N, 28, 28, 1) or (N, 28, 28) or (N, 784), float in [0, 1] (or uint8 in [0, 255]).
"""

from __future__ import annotations

import functools
import hashlib
import os
import time

import numpy as np

WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mnist_classifier.safetensors")
SHA256 = "1b4e5bc35fc4f189dc6fa95a8707f010c5bac002bdd35975174b964d754c9e61"
HIDDEN = (256, 128)
NUM_CLASSES = 10
FEATURE_DIM = HIDDEN[-1]
TRAIN_SEED, EPOCHS, BATCH, LEARNING_RATE = 0, 5, 128, 1e-3


class ChecksumError(ValueError):
  """The weights file is not the one whose SHA-256 jaxae records."""


def _mlp():
  import flax.linen as nn

  class MLP(nn.Module):
    """784-256-128-10 ReLU network; returns (logits (N, 10), features (N, 128))."""

    @nn.compact
    def __call__(self, x):
      h = x.reshape(x.shape[0], -1)
      for i, width in enumerate(HIDDEN):
        h = nn.relu(nn.Dense(width, name=f"dense{i}")(h))
      return nn.Dense(NUM_CLASSES, name=f"dense{len(HIDDEN)}")(h), h

  return MLP()


def _as_input(images) -> np.ndarray:
  """(N, 784) float32 in [0, 1] from images (N, 28, 28[, 1]) or (N, 784); uint8 is divided by 255."""
  x = np.asarray(images)
  scale = 1 / 255 if x.dtype == np.uint8 else 1.0
  x = x.reshape(len(x), -1).astype(np.float32) * scale
  if x.shape[1] != 784:
    raise ValueError(f"the reference MNIST classifier takes 28x28 single-channel images, got examples of "
                     f"{x.shape[1]} values")
  return x


def sha256(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def _flatten(params) -> dict[str, np.ndarray]:
  return {f"{layer}/{name}": np.asarray(v) for layer, leaves in params["params"].items() for name, v in leaves.items()}


def _unflatten(tensors: dict) -> dict:
  out: dict = {}
  for key, v in tensors.items():
    layer, name = key.split("/")
    out.setdefault(layer, {})[name] = np.asarray(v, np.float32)
  return {"params": out}


def load(path: str = WEIGHTS, expected_sha256: str | None = None) -> dict:
  """The classifier's params (float32) from `path`, after checking its SHA-256 against `expected_sha256`
  (default: the recorded `SHA256`). Raises ChecksumError (one line) on a mismatch, FileNotFoundError."""
  expected = SHA256 if expected_sha256 is None else expected_sha256
  got = sha256(path)
  if got != expected:
    raise ChecksumError(f"{path} has SHA-256 {got[:16]}..., jaxae's reference classifier is {expected[:16]}...: "
                        f"the file is corrupt or not jaxae's (regenerate: python -m jaxae.reference --train)")
  from safetensors.numpy import load_file
  return _unflatten(load_file(path))


@functools.lru_cache(maxsize=1)
def _shipped() -> dict:
  return load()


@functools.lru_cache(maxsize=1)
def _forward():
  import jax
  net = _mlp()
  return jax.jit(lambda params, x: net.apply(params, x))


def _apply(images, params, batch_size: int):
  params = _shipped() if params is None else params
  x = _as_input(images)
  fn = _forward()
  logits, feats = [], []
  for i in range(0, len(x), batch_size):
    part = x[i:i + batch_size]
    pad = np.concatenate([part, np.zeros((batch_size - len(part), 784), np.float32)])  # one compiled shape
    lo, f = fn(params, pad)
    logits.append(np.asarray(lo)[:len(part)])
    feats.append(np.asarray(f)[:len(part)])
  return np.concatenate(logits), np.concatenate(feats)


def features(images, params: dict | None = None, batch_size: int = 1000) -> np.ndarray:
  """Penultimate-layer activations (N, 128) float64 of images (see module docstring); params: the shipped
  classifier when None."""
  return _apply(images, params, batch_size)[1].astype(np.float64)


def predict(images, params: dict | None = None, batch_size: int = 1000) -> np.ndarray:
  """Predicted digit (N,) int of images."""
  return np.argmax(_apply(images, params, batch_size)[0], axis=1)


def train(mnist_dir: str, out: str = WEIGHTS, seed: int = TRAIN_SEED, epochs: int = EPOCHS,
          quiet: bool = False) -> dict:
  """Trains the classifier on MNIST's 60,000 training images (Adam, cross-entropy, batches of BATCH shuffled by
  `seed`), writes float16 weights to `out`; returns {'test_accuracy', 'sha256', 'seconds', 'bytes'}."""
  import jax
  import jax.numpy as jnp
  import optax
  from safetensors.numpy import save_file

  from jaxae.data import idx_dataset

  t0 = time.perf_counter()
  tr, te = idx_dataset(mnist_dir, "train"), idx_dataset(mnist_dir, "test")
  x, y = _as_input(tr.x), np.asarray(tr.labels)
  net = _mlp()
  params = net.init(jax.random.key(seed), jnp.zeros((1, 784)))
  opt = optax.adam(LEARNING_RATE)
  state = opt.init(params)

  @jax.jit
  def step(params, state, xb, yb):
    def loss(p):
      return optax.softmax_cross_entropy_with_integer_labels(net.apply(p, xb)[0], yb).mean()
    grads = jax.grad(loss)(params)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  rng = np.random.default_rng(seed)
  for epoch in range(epochs):
    order = rng.permutation(len(x))
    for i in range(0, len(x) - BATCH + 1, BATCH):
      idx = order[i:i + BATCH]
      params, state = step(params, state, jnp.asarray(x[idx]), jnp.asarray(y[idx]))
    if not quiet:
      print(f"epoch {epoch + 1}/{epochs}: {time.perf_counter() - t0:.0f}s", flush=True)
  save_file({k: v.astype(np.float16) for k, v in _flatten(jax.device_get(params)).items()}, out)
  stored = _unflatten(__import__("safetensors.numpy", fromlist=["load_file"]).load_file(out))  # what ships
  acc = float(np.mean(predict(te.x, stored) == te.labels))
  return {"test_accuracy": acc, "sha256": sha256(out), "seconds": time.perf_counter() - t0,
          "bytes": os.path.getsize(out)}
