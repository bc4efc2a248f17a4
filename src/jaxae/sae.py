"""Sparse autoencoders for interpretability: the network, its activations and its metrics, as pure functions.

A sparse autoencoder (SAE) decomposes a network's activations x (D,) into a sparse, non-negative code
z (m,) over a dictionary of m >> D directions, the rows of W_dec (Bricken et al. 2023, "Towards
Monosemanticity", section "Problem setup"; Gao et al. 2024, "Scaling and evaluating sparse
autoencoders", eq. 1):

    pi    = (x - b_dec) @ W_enc + b_enc          pre-activations (B, m)
    z     = act(pi)                              the code (B, m)
    x_hat = z @ W_dec + b_dec                    the reconstruction (B, D)

W_enc (D, m), b_enc (m,), W_dec (m, D), b_dec (D,): the names and layouts of SAELens, so that
`jaxae.export` writes them as they are. A transcoder (`target_shape` set; `jaxae.transcoder`) decodes into
another space of D_out features, without subtracting b_dec from its input, and a skip transcoder adds
x @ W_skip. The activations (`ACTIVATIONS`, each with its source below):
'relu' (with an L1 penalty on |z_i| ||W_dec,i||), 'topk', 'batchtopk', 'jumprelu', and the architectures
registered in `jaxae.sae_archs` ('gated', 'matryoshka_batchtopk', one file each; `activations()` lists
all; SAEs only, not transcoders). Everything here works on one member's parameters (`params['params']`)
and one batch; the objective, its hooks and its metrics are in `jaxae/variants/sae.py`.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

ACTIVATIONS = ("relu", "topk", "batchtopk", "jumprelu")


def activations() -> tuple[str, ...]:
  """Every valid `sae.activation`: the built-in ACTIVATIONS, then the architectures of `jaxae.sae_archs`."""
  from jaxae import sae_archs

  return ACTIVATIONS + tuple(sae_archs.ARCHITECTURES)


def _architecture(activation: str):
  from jaxae import sae_archs

  return sae_archs.get(activation)


# --- the network ------------------------------------------------------------------------------------

class SparseAutoencoder(nn.Module):
  """The SAE as a flax module: parameters, and inference through `encode` / `decode`.

  Inputs (B, *data_shape) are flattened to D = prod(data_shape) features; `decode` returns
  (B, *data_shape). Parameters ('params' collection): W_enc, b_enc, W_dec, b_dec, plus
  `log_threshold` (m,) for 'jumprelu' (threshold = exp(log_threshold), learned) and `threshold` ()
  for 'batchtopk' (the inference threshold, estimated during training, never trained). A registered
  architecture (`jaxae.sae_archs`) declares its own parameters beside these (and may have no b_enc).

  Initialization: the rows of W_dec are random directions (normal, normalized) of norm
  `decoder_init_norm` (1 for unit-norm decoders; 0.1 in Anthropic's April 2024 update, whose decoder
  norms are free); W_enc = W_dec^T (Gao et al. 2024, sec. 2; Conerly et al. 2024); b_enc = 0;
  b_dec = 0 until the variant's data-dependent initialization (`geometric_median`).

  Transcoder (`target_shape`, the shape of one target; Dunefsky et al. 2024): W_dec (m, D_out), b_dec
  (D_out,), `decode` returns (B, *target_shape), the encoder does not subtract b_dec (it lives in the
  output space: pi = x @ W_enc + b_enc, as SAELens's Transcoder), and W_enc's columns are their own random
  directions of the decoder rows' norm (input and output spaces differ: no tied init). `skip_connection`
  adds W_skip (D_in, D_out), zero at init, and x @ W_skip to the output (`skip`; Paulo et al. 2025).
  """

  data_shape: Sequence[int]
  width: int  # m, the number of latents
  activation: str = "topk"
  k: int = 32
  decoder_init_norm: float = 1.0
  jumprelu_init_threshold: float = 0.001
  target_shape: Sequence[int] | None = None  # a transcoder's output shape (None: an SAE, data_shape)
  skip_connection: bool = False  # a skip transcoder's x @ W_skip

  @property
  def transcoder(self) -> bool:
    return self.target_shape is not None

  @property
  def output_shape(self) -> tuple:
    return tuple(self.target_shape) if self.transcoder else tuple(self.data_shape)

  def setup(self):
    d, d_out = math.prod(self.data_shape), math.prod(self.output_shape)

    def unit_rows(key, shape, dtype=jnp.float32):
      w = jax.random.normal(key, shape, dtype)
      return w * (self.decoder_init_norm / jnp.linalg.norm(w, axis=1, keepdims=True))

    self.W_dec = self.param("W_dec", unit_rows, (self.width, d_out))
    if self.transcoder:
      self.W_enc = self.param("W_enc", lambda key: unit_rows(key, (self.width, d)).T)
    else:
      self.W_enc = self.param("W_enc", lambda key: jnp.array(self.W_dec.T))  # the transpose of the decoder
    arch = _architecture(self.activation)
    if arch is None or arch.b_enc:
      self.b_enc = self.param("b_enc", nn.initializers.zeros_init(), (self.width,))
    self.b_dec = self.param("b_dec", nn.initializers.zeros_init(), (d_out,))
    self.arch_params = {} if arch is None else arch.params(self, d, self.width)
    if self.skip_connection:
      self.W_skip = self.param("W_skip", nn.initializers.zeros_init(), (d, d_out))
    if self.activation == "jumprelu":
      init = math.log(self.jumprelu_init_threshold)
      self.log_threshold = self.param("log_threshold", nn.initializers.constant(init), (self.width,))
    if self.activation == "batchtopk":
      self.threshold = self.param("threshold", nn.initializers.zeros_init(), ())

  def _params(self) -> dict:
    p = {"W_enc": self.W_enc, **({"b_enc": self.b_enc} if hasattr(self, "b_enc") else {}), "W_dec": self.W_dec,
         "b_dec": self.b_dec, **self.arch_params}
    if self.activation == "jumprelu":
      p["log_threshold"] = self.log_threshold
    if self.activation == "batchtopk":
      p["threshold"] = self.threshold
    if self.skip_connection:
      p["W_skip"] = self.W_skip
    return p

  def encode(self, x, train: bool = False):
    """x (B, *data_shape) -> the inference code z (B, m) (`infer_code`)."""
    del train  # the training-time code (batch top-k, straight-through gradients) is the objective's
    return infer_code(self._params(), flatten(x), self.activation, self.k, apply_b_dec_to_input=not self.transcoder)

  def decode(self, z, train: bool = False):
    """z (B, m) -> x_hat (B, *data_shape), or (B, *target_shape) for a transcoder (without the skip term)."""
    del train
    return decode(self._params(), z).reshape(z.shape[0], *self.output_shape)

  def skip(self, x):
    """A skip transcoder's x @ W_skip (B, *target_shape) for inputs x (B, *data_shape); zeros without one."""
    if not self.skip_connection:
      return jnp.zeros((x.shape[0], *self.output_shape), jnp.float32)
    return skip_term(self._params(), flatten(x)).reshape(x.shape[0], *self.output_shape)

  def __call__(self, x, train: bool = False):
    return self.decode(self.encode(x)) + self.skip(x)


def flatten(x):
  return x.reshape(x.shape[0], -1)


def pre_activation(p: dict, x, apply_b_dec_to_input: bool = True):
  """pi = (x - b_dec) @ W_enc + b_enc: (B, D) -> (B, m) float32; pi = x @ W_enc + b_enc when not
  `apply_b_dec_to_input` (a transcoder, whose b_dec is in the output space; SAELens's name)."""
  return ((x - p["b_dec"]) if apply_b_dec_to_input else x) @ p["W_enc"] + p["b_enc"]


def decode(p: dict, z):
  """x_hat = z @ W_dec + b_dec: (B, m) -> (B, D)."""
  return z @ p["W_dec"] + p["b_dec"]


def decode_sparse(p: dict, values, idx):
  """x_hat from a k-sparse code given as (values (B, k), indices (B, k)): sum_j values_j W_dec[idx_j] + b_dec.

  Equal to decode(p, z) for the dense z holding those values; it gathers k rows of W_dec per example
  instead of multiplying by all m (the idea of Gao et al. 2024's sparse decoder kernels), and its
  gradient is a scatter-add into those rows. (B, D).
  """
  return jnp.einsum("bk,bkd->bd", values, jnp.take(p["W_dec"], idx, axis=0)) + p["b_dec"]


def skip_term(p: dict, x):
  """x @ W_skip: (B, D_in) -> (B, D_out), the linear skip path of a skip transcoder, y_hat = z W_dec + b_dec +
  x W_skip with W_skip zero at init (Paulo et al. 2025, "Transcoders beat sparse autoencoders for
  interpretability"; SAELens's SkipTranscoder stores W_skip transposed, (D_out, D_in))."""
  return x @ p["W_skip"]


def decoder_norms(p: dict):
  """||W_dec,i||_2 of each dictionary row, (m,)."""
  return jnp.linalg.norm(p["W_dec"], axis=1)


def infer_code(p: dict, x, activation: str, k: int, apply_b_dec_to_input: bool = True):
  """The code at inference, z (B, m) for x (B, D):

  relu       ReLU(pi)
  topk       ReLU(TopK_k(pi)) (Gao et al. 2024, eq. 3, with the ReLU of SAELens / their code)
  batchtopk  ReLU(pi) * [pi > theta]: the global threshold theta estimated during training replaces the
             batch-dependent selection (Bussmann et al. 2024, "BatchTopK Sparse Autoencoders", sec. 3)
  jumprelu   pi * H(pi - theta), theta = exp(log_threshold) (Rajamanoharan et al. 2024, "Jumping Ahead",
             sec. 3: JumpReLU_theta(z) = z H(z - theta))
  other      the registered architecture's `infer_code` (jaxae/sae_archs/; SAEs only, not transcoders)

  A transcoder's pre-activations omit b_dec (`pre_activation`, apply_b_dec_to_input=False).
  Raises ValueError for an activation that is none of `activations()`.
  """
  arch = _architecture(activation)
  if arch is not None:
    return arch.infer_code(p, x, k)
  pi = pre_activation(p, x, apply_b_dec_to_input)
  if activation == "relu":
    return jax.nn.relu(pi)
  if activation == "topk":
    return topk(pi, k)
  if activation == "batchtopk":
    return jax.nn.relu(pi) * (pi > p["threshold"])
  if activation == "jumprelu":
    return pi * (pi > jnp.exp(p["log_threshold"]))
  raise ValueError(f"activation={activation!r} is not one of {activations()}")


# --- activations ------------------------------------------------------------------------------------

def topk(pi, k: int):
  """ReLU(TopK_k(pi)) along the last axis (Gao et al. 2024, eq. 3): the k largest pre-activations of
  each example, the rest 0, then ReLU. Gradients flow to the k kept entries. (B, m) -> (B, m)."""
  values, idx = jax.lax.top_k(pi, k)
  return _scatter_rows(pi.shape, idx, jax.nn.relu(values))


def _scatter_rows(shape, idx, values):
  rows = jnp.arange(shape[0])[:, None]
  return jnp.zeros(shape, values.dtype).at[rows, idx].set(values)


def batch_topk(pi, k: int):
  """BatchTopK (Bussmann et al. 2024, sec. 3): the k * B largest entries of ReLU(pi) over the whole
  batch (B, m) are kept, the rest are 0, so examples use a variable number of latents averaging k.

  Returns (z (B, m), the smallest positive kept value (a scalar; +inf when none is positive)):
  the latter is the batch's estimate of the inference threshold theta.
  """
  b, m = pi.shape
  a = jax.nn.relu(pi).reshape(-1)
  values, idx = jax.lax.top_k(a, k * b)
  z = jnp.zeros_like(a).at[idx].set(values).reshape(b, m)
  min_positive = jnp.min(jnp.where(values > 0, values, jnp.inf))
  return z, min_positive


def auxk_code(pi, dead, k_aux: int):
  """The AuxK code (Gao et al. 2024, appendix A.2): ReLU(TopK_{k_aux}) of the pre-activations of dead
  latents only (live ones masked to -inf), (B, m) -> (B, m). dead: bool (m,)."""
  masked = jnp.where(dead, pi, -jnp.inf)
  values, idx = jax.lax.top_k(masked, k_aux)
  values = jnp.where(jnp.isfinite(values), values, 0.0)  # fewer than k_aux dead latents
  return _scatter_rows(pi.shape, idx, jax.nn.relu(values))


def rectangle(u):
  """The rectangle kernel K(u) = 1[-1/2 < u < 1/2] of the JumpReLU pseudo-derivatives."""
  return ((u > -0.5) & (u < 0.5)).astype(u.dtype)


@jax.custom_vjp
def jumprelu(pi, threshold, bandwidth):
  """JumpReLU_theta(pi) = pi * H(pi - theta) (Rajamanoharan et al. 2024, sec. 3), with the
  straight-through pseudo-derivatives of their eq. 11 (sec. 4):

    d/dpi    = H(pi - theta)                                  (the ordinary derivative)
    d/dtheta = -(theta / eps) K((pi - theta) / eps)           (K the rectangle kernel, eps the bandwidth)

  pi (B, m), threshold (m,) > 0, bandwidth a positive scalar (no gradient).
  """
  return pi * (pi > threshold)


def _jumprelu_fwd(pi, threshold, bandwidth):
  return jumprelu(pi, threshold, bandwidth), (pi, threshold, bandwidth)


def _jumprelu_bwd(res, g):
  pi, threshold, bandwidth = res
  d_pi = (pi > threshold) * g
  d_threshold = -(threshold / bandwidth) * rectangle((pi - threshold) / bandwidth) * g
  return d_pi, _sum_to(d_threshold, threshold.shape), jnp.zeros_like(bandwidth)


jumprelu.defvjp(_jumprelu_fwd, _jumprelu_bwd)


@jax.custom_vjp
def step(pi, threshold, bandwidth):
  """The Heaviside step H(pi - theta) of the L0 penalty ||z||_0 = sum_i H(pi_i - theta_i)
  (Rajamanoharan et al. 2024, sec. 4), with their pseudo-derivatives:

    d/dpi    = 0
    d/dtheta = -(1 / eps) K((pi - theta) / eps)

  so the L0 penalty trains the thresholds only. pi (B, m), threshold (m,), bandwidth a scalar.
  """
  return (pi > threshold).astype(pi.dtype)


def _step_fwd(pi, threshold, bandwidth):
  return step(pi, threshold, bandwidth), (pi, threshold, bandwidth)


def _step_bwd(res, g):
  pi, threshold, bandwidth = res
  d_threshold = -(1.0 / bandwidth) * rectangle((pi - threshold) / bandwidth) * g
  return jnp.zeros_like(pi), _sum_to(d_threshold, threshold.shape), jnp.zeros_like(bandwidth)


step.defvjp(_step_fwd, _step_bwd)


def _sum_to(g, shape):
  """Sums a broadcast gradient (B, m) back to the parameter's shape (m,) (or ())."""
  return jnp.sum(g.reshape(-1, *shape), axis=0) if g.shape != tuple(shape) else g


# --- the decoder's constraint (Bricken et al. 2023; Gao et al. 2024, sec. 2) ---------------------------

def normalize_rows(w, eps: float = 1e-12):
  """Each row of W_dec (m, D) scaled to unit L2 norm (rows of norm 0 stay 0)."""
  return w / jnp.maximum(jnp.linalg.norm(w, axis=1, keepdims=True), eps)


def remove_parallel_component(w, g):
  """The gradient g (m, D) of unit-norm rows w (m, D) without its component along each row:
  g_i - (g_i . w_i) w_i, so a step changes the rows' directions, not (to first order) their norms."""
  return g - jnp.sum(g * w, axis=1, keepdims=True) * w


# --- initialization of b_dec ------------------------------------------------------------------------

def geometric_median(x: np.ndarray, max_iter: int = 200, tol: float = 1e-7) -> np.ndarray:
  """argmin_m sum_i ||x_i - m||_2 of the rows of x (n, D), by Weiszfeld's algorithm (float64).

  Starts from the mean; stops when the median moves less than `tol` x (its distance scale) or after
  `max_iter` iterations. A point that coincides with a data row gets weight 1 / 1e-12 there, not a
  division by zero (as SAELens's compute_geometric_median).
  """
  x = np.asarray(x, np.float64).reshape(len(x), -1)
  m = x.mean(axis=0)
  scale = max(float(np.mean(np.linalg.norm(x - m, axis=1))), 1e-12)
  for _ in range(max_iter):
    w = 1.0 / np.maximum(np.linalg.norm(x - m, axis=1), 1e-12)
    new = (w[:, None] * x).sum(axis=0) / w.sum()
    moved = float(np.linalg.norm(new - m))
    m = new
    if moved < tol * scale:
      break
  return m


# --- metrics ----------------------------------------------------------------------------------------

def fvu(x, x_hat, axis_mean=None) -> float:
  """Fraction of variance unexplained, sum ||x - x_hat||^2 / sum ||x - mean(x)||^2, with the mean over
  the rows of x (N, D) (NumPy, float64): the reference the program's streaming statistics are tested
  against. `axis_mean` overrides the mean (D,)."""
  x, x_hat = np.asarray(x, np.float64), np.asarray(x_hat, np.float64)
  mean = x.mean(axis=0) if axis_mean is None else np.asarray(axis_mean, np.float64)
  return float(np.sum(np.square(x - x_hat)) / np.sum(np.square(x - mean)))


def max_cosine_recovery(true_directions, dictionary) -> np.ndarray:
  """For each true feature direction (F, D), the largest cosine similarity with any dictionary row
  (m, D): its recovery (1 = found exactly). The mean over features is the "mean max cosine
  similarity" of Sharkey et al. 2022 ("Taking features out of superposition with sparse autoencoders")."""
  t = np.asarray(true_directions, np.float64)
  d = np.asarray(dictionary, np.float64)
  t = t / np.linalg.norm(t, axis=1, keepdims=True)
  d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
  return (t @ d.T).max(axis=1)


def synthetic_features(num_examples: int, dim: int, num_features: int, active: float, seed: int = 0,
                       ) -> tuple[np.ndarray, np.ndarray]:
  """Toy data with known features (Sharkey et al. 2022; Elhage et al. 2022, "Toy models of superposition"):
  F random unit directions in D dimensions; each example is a sum of the directions of the features it
  has, each present independently with probability active / F, with magnitude U(0, 1).

  Returns (x float32 (N, D), directions float32 (F, D)). More features than dimensions (F > D) is
  superposition: the features are not orthogonal and only sparsity makes them recoverable.
  """
  rng = np.random.default_rng(seed)
  directions = rng.standard_normal((num_features, dim))
  directions /= np.linalg.norm(directions, axis=1, keepdims=True)
  present = rng.random((num_examples, num_features)) < active / num_features
  coefficients = present * rng.random((num_examples, num_features))
  return (coefficients @ directions).astype(np.float32), directions.astype(np.float32)
