"""Schedules of SAE training, as pure functions of the member's step: sparsity warm-up and k annealing.

Each takes the optimizer steps taken so far, t (int32 scalar, `batch['step']`: the update about to be
made is the (t + 1)-th), and a length that may be a traced float32 scalar (a per-member hyperparameter,
so one compiled program sweeps it). The learning-rate decay over the last part of training is an
optimizer schedule: `jaxae.optim.decay_multiplier`.

  sparsity warm-up  the L1 (relu) / L0 (jumprelu) coefficient times min(1, t / W): 0 at the first step,
                    the full coefficient from step W on (SAELens's `l1_warm_up_steps` /
                    CoefficientScheduler, whose value at step t is final * t / W; Conerly et al. 2024,
                    "Training sparse autoencoders", Anthropic's April update: the lambda warm-up)
  k annealing       TopK / BatchTopK keep k(t) latents, from k_start down to k over T steps, linearly:
                    k(t) = k + ceil((k_start - k) (T - min(t, T)) / T), so k(0) = k_start and k(t) = k from
                    t = T on. top_k needs a static k: the code takes the top k_start and masks all but the
                    first k(t) (top_k returns them sorted), so shapes never change.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def warmup_factor(step, warmup_steps):
  """min(1, t / W) (float32 scalar); 1 when W <= 0 (no warm-up). step: int scalar; warmup_steps: W, a float."""
  w = jnp.asarray(warmup_steps, jnp.float32)
  t = jnp.asarray(step, jnp.float32)
  return jnp.where(w > 0, jnp.minimum(t / jnp.maximum(w, 1.0), 1.0), 1.0)


def annealed_k(step, k_start: int, k: int, anneal_steps):
  """k(t) = k + ceil((k_start - k) (T - min(t, T)) / T) as int32 (k when T <= 0): linear from k_start to k.

  The numerator is an integer held exactly by float32 while (k_start - k) T < 2^24, and then so is every
  integer value of the quotient, so k(t) is exact there (no float ceil off by one).
  """
  big_t = jnp.asarray(anneal_steps, jnp.float32)
  t = jnp.minimum(jnp.asarray(step, jnp.float32), big_t)
  extra = jnp.ceil((k_start - k) * (big_t - t) / jnp.maximum(big_t, 1.0))
  return jnp.where(big_t > 0, k + extra, k).astype(jnp.int32)


def keep_first(values, count):
  """values (..., n) with the entries at positions >= count (along the last axis) set to 0."""
  return jnp.where(jnp.arange(values.shape[-1]) < count, values, jnp.zeros_like(values))


def topk_annealed(pi, k_start: int, k_now):
  """(values (B, k_start), indices (B, k_start)): ReLU of the k_now largest pre-activations per example,
  the other k_start - k_now of the top k_start set to 0 (no gradient). k_now: int32 scalar <= k_start."""
  values, idx = jax.lax.top_k(pi, k_start)
  return jax.nn.relu(keep_first(values, k_now)), idx


def batch_topk_annealed(pi, k_start: int, k_now):
  """`jaxae.sae.batch_topk` keeping the k_now * B largest ReLU(pi) of the batch (B, m), from a top k_start * B.

  Returns (z (B, m), the smallest positive kept value, +inf when none): as `sae.batch_topk` with k = k_now.
  """
  b, m = pi.shape
  a = jax.nn.relu(pi).reshape(-1)
  values, idx = jax.lax.top_k(a, k_start * b)
  values = keep_first(values, k_now * b)
  z = jnp.zeros_like(a).at[idx].set(values).reshape(b, m)
  min_positive = jnp.min(jnp.where(values > 0, values, jnp.inf))
  return z, min_positive
