"""Vector-quantized autoencoder, VQ-VAE (van den Oord, Vinyals & Kavukcuoglu 2017, "Neural discrete
representation learning", sec. 3.1-3.2, eq. 3 and appendix A.1).

The encoder output z_e is cut into code vectors along its last axis, in groups of `vq.code_dim`: a vector
latent (B, d) gives d / code_dim vectors per example, a spatial latent (B, h, w, C) (`model.latent_dim=0`,
conv backbone) C / code_dim per position (one per position when code_dim = C, the paper's setting). Each
code vector is replaced by its nearest codebook entry e_k, k = argmin_j ||z_e - e_j||^2 (eq. 1-2), among
the K = `vq.num_codes` rows of the (K, code_dim) codebook, a head of the network (params['params']
['heads_codebook']['embedding'], initialized U(-1/K, 1/K)). The decoder sees z_e + sg[z_q - z_e]: z_q
forward, the straight-through gradient of z_e backward (sec. 3.2). The loss (eq. 3) is

    reconstruction + ||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2
                     (codebook loss)     (commitment loss, beta = `vq.commitment`, sweepable, 0.25)

with the reconstruction of `loss.reconstruction` (base.reconstruction): 'mse' per element, 'bce' in nats
per example. The two quantization terms are on the same scale: with 'mse' they are means over every
latent element (B x code vectors x code_dim, as Sonnet's VectorQuantizer), with 'bce' squared norms
summed over the example's latent and averaged over the batch (eq. 3 per example).

`vq.ema=True` (appendix A.1; Sonnet's VectorQuantizerEMA) drops the codebook loss: the codebook follows
exponential moving averages of its assignments, kept as running state (`init_aux`, batch['aux']):

    N_k <- gamma N_k + (1 - gamma) n_k,   m_k <- gamma m_k + (1 - gamma) sum_{z_e assigned to k} z_e,
    e_k = m_k / N~_k,   N~_k = (N_k + eps) / (n + K eps) n,   n = sum_k N_k   (Laplace smoothing, eps 1e-5)

with n_k the batch's assignments to k and gamma = `vq.ema_decay` (sweepable, 0.99); N and m start at 0,
so a code assigned nothing yet sits at 0 after the first step. Sonnet debiases both averages by
1 / (1 - gamma^t); the factor cancels in m_k / N_k (up to eps), so it is left out. The assignments use
the codebook before the step; `update_params` then writes m / N~ into the codebook (which gets no gradient).

Metrics (per member, on the batch): loss; recon_mse (and recon_bce with 'bce'); commitment, the
quantization error ||z_e - e||^2 on the scale above (unweighted); codebook_loss, the same value, reported
when it is a term of the loss (no EMA); perplexity = exp(-sum_k p_k log p_k) of the batch's code usage
p_k = n_k / sum_j n_j (K when every code is used equally, 1 for one code); codes_used, the fraction of
the K codes assigned at least once in the batch. The inference code (`make_code`) is the quantized z_q,
so `jaxae.evaluate` reports and draws what the decoder reconstructs from.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxae import validation
from jaxae.variants import base

HEAD = "codebook"  # the head holding the (K, code_dim) codebook: params['params']['heads_codebook']['embedding']
EMA_EPSILON = 1e-5  # Laplace smoothing of the EMA cluster sizes (Sonnet's VectorQuantizerEMA default)


class Codebook(nn.Module):
  """The codebook as a head of the network: returns its (num_codes, code_dim) float32 embedding.

  Initialized U(-1/K, 1/K) (the uniform initialization of the common reference implementations of the
  paper's model). The latent passed to the head is ignored: the module only owns the parameter.
  """

  num_codes: int
  code_dim: int

  @nn.compact
  def __call__(self, z, train: bool = False):
    bound = 1.0 / self.num_codes
    init = lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)
    return self.param("embedding", init, (self.num_codes, self.code_dim), jnp.float32)


def codebook_of(params):
  """The (K, code_dim) codebook of one member's params."""
  return params["params"][f"heads_{HEAD}"]["embedding"]


def with_codebook(params, codebook):
  """params with the codebook replaced (the rest of the tree shared)."""
  p = dict(params["params"])
  p[f"heads_{HEAD}"] = {**p[f"heads_{HEAD}"], "embedding": codebook}
  return {**params, "params": p}


def code_vectors(z, code_dim: int):
  """z (B, ..., C) -> (B, G, code_dim): the code vectors of each example, the last axis cut into groups of
  code_dim (G = prod(...) * C / code_dim, in row-major order). Raises ValueError when code_dim does not
  divide C."""
  if z.shape[-1] % code_dim:
    raise ValueError(f"vq.code_dim={code_dim} does not divide the latent's last axis ({z.shape[-1]})")
  return z.reshape(z.shape[0], -1, code_dim)


def squared_distances(flat, codebook):
  """||flat_i - e_k||^2 for flat (N, D) and codebook (K, D): (N, K) float32, by the expanded square."""
  return (jnp.sum(jnp.square(flat), axis=-1, keepdims=True) - 2.0 * flat @ codebook.T
          + jnp.sum(jnp.square(codebook), axis=-1))


def nearest_codes(vectors, codebook):
  """Index of the nearest codebook entry of each vector: vectors (..., D), codebook (K, D) -> (...) int32
  (eq. 1-2; ties go to the smaller index)."""
  flat = vectors.reshape(-1, vectors.shape[-1])
  return jnp.argmin(squared_distances(flat, codebook), axis=-1).astype(jnp.int32).reshape(vectors.shape[:-1])


def quantize(z, codebook):
  """(z_q, indices): z (B, ..., C) with every code vector replaced by its nearest entry of codebook (K, D);
  z_q has z's shape, indices (B, G) int32 (see code_vectors)."""
  vectors = code_vectors(z, codebook.shape[-1])
  idx = nearest_codes(vectors, codebook)
  return codebook[idx].reshape(z.shape), idx


def straight_through(z_e, z_q):
  """z_e + sg[z_q - z_e]: z_q forward, identity gradient to z_e backward (sec. 3.2)."""
  return z_e + jax.lax.stop_gradient(z_q - z_e)


def code_usage(idx, num_codes: int):
  """(counts (K,) float32, perplexity, codes_used) of the assignments idx (any shape) int32.

  perplexity = exp(-sum_k p_k log p_k) with p_k = counts_k / sum counts (0 log 0 = 0); codes_used = the
  fraction of the K codes with a nonzero count.
  """
  counts = jnp.zeros((num_codes,), jnp.float32).at[idx.reshape(-1)].add(1.0)
  p = counts / jnp.sum(counts)
  entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
  return counts, jnp.exp(entropy), jnp.mean((counts > 0).astype(jnp.float32))


def ema_statistics(vectors, idx, num_codes: int):
  """(n (K,), s (K, D)): assignments per code and the sum of the vectors (N, D) assigned to each (idx (N,))."""
  onehot = jax.nn.one_hot(idx, num_codes, dtype=vectors.dtype)
  return jnp.sum(onehot, axis=0), onehot.T @ vectors


def ema_update(aux: dict, counts, sums, decay) -> dict:
  """One EMA step (appendix A.1): N <- decay N + (1 - decay) n, m <- decay m + (1 - decay) s."""
  return {"cluster_size": decay * aux["cluster_size"] + (1.0 - decay) * counts,
          "embed_sum": decay * aux["embed_sum"] + (1.0 - decay) * sums}


def ema_codebook(aux: dict, eps: float = EMA_EPSILON):
  """e_k = m_k / N~_k with the Laplace-smoothed N~_k = (N_k + eps) / (n + K eps) n, n = sum_k N_k: (K, D).
  Needs n > 0 (after at least one update)."""
  size = aux["cluster_size"]
  n = jnp.sum(size)
  smoothed = (size + eps) / (n + size.shape[0] * eps) * n
  return aux["embed_sum"] / smoothed[:, None]


def make_loss(config, net):
  recon = base.reconstruction(config, net)
  num_codes, code_dim, ema = int(config.vq.num_codes), int(config.vq.code_dim), bool(config.vq.ema)
  if config.loss.reconstruction == "mse":
    reduce = jnp.mean  # per latent element, like the per-element MSE
  else:
    reduce = lambda sq: jnp.mean(jnp.sum(sq.reshape(sq.shape[0], -1), axis=-1))  # per example, like BCE in nats

  def loss_fn(params, hp, batch, key, train):
    x = batch["x"]
    z_e = net.encode(params, x, key, train)
    codebook = codebook_of(params)
    if ema:  # the codebook is set from the running averages, never by the gradient
      codebook = jax.lax.stop_gradient(codebook)
    vectors = code_vectors(z_e, code_dim)
    idx = nearest_codes(jax.lax.stop_gradient(vectors), codebook)
    e = codebook[idx]  # (B, G, code_dim)
    commitment = reduce(jnp.square(vectors - jax.lax.stop_gradient(e)))
    codebook_loss = reduce(jnp.square(jax.lax.stop_gradient(vectors) - e))
    logits = net.decode(params, straight_through(z_e, e.reshape(z_e.shape)), key, train)
    loss, metrics = recon(logits, x)
    loss = loss + hp["commitment"] * commitment
    if not ema:
      loss = loss + codebook_loss
      metrics["codebook_loss"] = codebook_loss
    _, perplexity, used = code_usage(idx, num_codes)
    metrics.update(loss=loss, commitment=commitment, perplexity=perplexity, codes_used=used)
    if ema and train:
      flat = jax.lax.stop_gradient(vectors).reshape(-1, code_dim)
      counts, sums = ema_statistics(flat, idx.reshape(-1), num_codes)
      metrics["_aux"] = jax.lax.stop_gradient(ema_update(batch["aux"], counts, sums, hp["ema_decay"]))
    return loss, metrics

  return loss_fn


def make_code(config, net):
  """(params, x) -> z_q: the quantized latent (the encoder output's shape), what the decoder sees."""
  return lambda params, x: quantize(net.encode(params, x), codebook_of(params))[0]


def heads(config) -> dict:
  return {HEAD: Codebook(int(config.vq.num_codes), int(config.vq.code_dim))}


def init_aux(config, net, data_shape):
  """With vq.ema: {'cluster_size': (K,) zeros, 'embed_sum': (K, code_dim) zeros}; None otherwise."""
  if not config.vq.ema:
    return None
  k, d = int(config.vq.num_codes), int(config.vq.code_dim)
  return {"cluster_size": jnp.zeros((k,), jnp.float32), "embed_sum": jnp.zeros((k, d), jnp.float32)}


def update_params(config):
  """With vq.ema: the codebook <- m / N~ of the updated running state (kept while nothing is assigned)."""
  if not config.vq.ema:
    return None

  def update(params, aux):
    seen = jnp.sum(aux["cluster_size"]) > 0
    return with_codebook(params, jnp.where(seen, ema_codebook(aux), codebook_of(params)))

  return update


def validate(config) -> None:
  validation.positive_int(config, "vq.num_codes")
  validation.positive_int(config, "vq.code_dim")
  if not isinstance(config.vq.ema, bool):
    raise validation.ConfigError(f"vq.ema={config.vq.ema!r} must be True or False")
  decay = config.vq.ema_decay
  if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay < 1:
    raise validation.ConfigError(f"vq.ema_decay={decay!r} must be in [0, 1)")
  m, d = config.model, config.vq.code_dim
  if m.latent_dim == 0:
    channels = m.conv_channels[-1] if m.conv_channels else 0
    if channels % d:
      raise validation.ConfigError(f"vq.code_dim={d} must divide the spatial code's {channels} channels "
                                f"(model.conv_channels[-1])")
  elif m.latent_dim % d:
    raise validation.ConfigError(f"vq.code_dim={d} must divide model.latent_dim={m.latent_dim}")


VARIANT = base.register(base.Variant(
    name="vqvae", make_loss=make_loss, make_code=make_code, heads=heads, validate=validate,
    init_aux=init_aux, update_params=update_params,
    hparams={"commitment": "vq.commitment", "ema_decay": "vq.ema_decay"},
    options={"vq.num_codes": 128, "vq.code_dim": 4, "vq.commitment": 0.25, "vq.ema": False, "vq.ema_decay": 0.99},
    description="VQ-VAE: nearest-codebook quantization, straight-through gradient, commitment loss (EMA codebook)"))
