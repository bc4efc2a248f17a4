"""Evaluating a trained run: likelihoods, reconstructions, probes, exports and figures, per member.

    python -m jaxae.evaluate --workdir=runs/vae [--data=SOURCE] [--num_samples=1000] [--binarize]
                             [--export=codes,scores]
    jaxae.evaluate.evaluate("runs/vae")                      # the same from Python; returns the dict

Works on any finished or interrupted workdir (the latest complete checkpoint, every seed and sweep
setting; a sweep with static keys is evaluated group by group under `groups/`), on the run's own
held-out data or on `--data`. What is computed depends on what the run's variant offers
(`configs.variant_of(config)`), never on its name:

  a target          (data.target_source, a transcoder) every reconstruction metric is against the held-out
                    targets (`--target_data` with `--data`), plus fvu and explained_variance
  every variant     reconstruction of the code (`Variant.code_fn`): MSE per element, Bernoulli
                    cross-entropy in nats per example (sigmoid outputs, inputs in [0, 1]) and PSNR in
                    dB; active units (Var_x z_j > 0.01, Burda et al. 2016 sec. 5.2), L0 (units with
                    |z_j| > 1e-6 per example) and dead units (never above); with labels, a linear probe
                    (logistic regression on standardized codes) and 5-NN accuracy, fit on training codes
                    and scored on held-out codes (scikit-learn); a 2-D scatter of the codes (PCA or
                    t-SNE above d=2, named on the figure), interpolations and traversals; with factors
                    of variation (`Split.factors`, e.g. data.source=dsprites), the disentanglement
                    metrics of `jaxae.disentanglement` (mig, dci_*, sap, factorvae_score).
  a latent model    (`Variant.latent_model`, the VAE) the importance-sampled log-likelihood with K
                    samples of q(z|x) (Burda et al. 2016, eq. 8; q is the encoder's Gaussian or the
                    variant's posterior, e.g. a flow), next to the ELBO; samples from the prior,
                    spherical interpolations, traversals of units ranked by KL, and for d=2 the
                    decoded manifold over the prior's quantiles (Kingma & Welling 2014, fig. 4).
  no latent model   samples decoded from the variant's code prior (`Variant.code_prior`: WAE, AAE) or else
                    from a Gaussian mixture fitted to training codes (`--gmm_components`, default 10, full
                    covariance; ex-post density estimation, Ghosh et al. 2020 sec. 4).
  28x28x1 samples   (any sampler above; `--generation_samples`, default 2000) frechet_distance, precision and
                    recall (k=3) of decoded samples against as many held-out images, in the feature space of
                    jaxae's reference MNIST classifier (`jaxae.generation`, `jaxae.reference`): NOT Inception FID,
                    not comparable with Inception-based numbers.

Writes `<workdir>/evaluation.json` (per member, mean ± std over healthy seeds per setting, the shape
of summary.json, so `report.format_table` prints it), figures under `<workdir>/figures/eval_*.png`
and, with `--export`, `<workdir>/export/` (codes and per-example reconstruction errors as .npy).
Images are drawn only when the inputs are images (N, H, W, C).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxae import configs, errors, files, report, train
from jaxae import data as data_lib

EVALUATION = "evaluation.json"
EXPORT_DIR = "export"
EXPORTS = ("codes", "scores")
ACTIVE_THRESHOLD = 0.01  # Burda et al. 2016, sec. 5.2: unit j is active when Var_x(E_q[z_j | x]) > 0.01
L0_EPS = 1e-6  # a unit is "on" for an example when |z_j| > L0_EPS
IS_SALT, BINARIZE_SEED, PAIRS_SEED, PROBE_SEED, DISENTANGLEMENT_SEED = 11, 3, 4, 5, 6
GENERATION_SEED = 7  # the held-out subset that samples are compared with


# --- estimators: pure functions of arrays, one member or a leading member axis ------------------------------


def _iwae_member(net, model, num_samples: int, chunk: int, params, hparams, x, keys):
  """One member, one batch: (log p(x) estimate, ELBO, E_q log p(x|z)), each (B,), from K samples of q(z|x).

  x (B, *data_shape) float32 network inputs; keys (B,) typed PRNG keys, one per example. Samples come
  in chunks of `chunk` (a `lax.scan` with a running log-sum-exp, so memory is B x chunk decodes).
  """
  model = model.bound(params)
  mean, log_var = net.encode(params, x)
  b, d = mean.shape
  std = jnp.exp(0.5 * log_var)
  log_q0 = -0.5 * jnp.sum(log_var + jnp.log(2 * jnp.pi), axis=-1)  # log q(z|x) = log_q0 - |eps|^2 / 2
  x_rep = jnp.broadcast_to(x[:, None], (b, chunk, *x.shape[1:])).reshape(b * chunk, *x.shape[1:])

  def proposal(c):
    """(z (B, chunk, d), log q(z|x) (B, chunk)) of chunk c: the variant's posterior, or the encoder's Gaussian."""
    chunk_keys = jax.vmap(lambda k: jax.random.fold_in(k, c))(keys)
    if model.posterior is not None:
      return model.posterior(x, chunk_keys, chunk)
    eps = jax.vmap(lambda k: jax.random.normal(k, (chunk, d), jnp.float32))(chunk_keys)
    return mean[:, None] + std[:, None] * eps, log_q0[:, None] - 0.5 * jnp.sum(jnp.square(eps), axis=-1)

  def body(carry, c):
    m, s, w_sum, ll_sum = carry
    z, log_q = proposal(c)  # (B, chunk, d), (B, chunk)
    ll = model.log_likelihood(net.decode(params, z.reshape(b * chunk, d)), x_rep, hparams).reshape(b, chunk)
    w = ll + model.log_prior(z) - log_q
    valid = c * chunk + jnp.arange(chunk) < num_samples  # the last chunk may run past K
    w = jnp.where(valid, w, -jnp.inf)
    m_new = jnp.maximum(m, jnp.max(w, axis=1))
    s = s * jnp.exp(m - m_new) + jnp.sum(jnp.exp(w - m_new[:, None]), axis=1)
    return (m_new, s, w_sum + jnp.sum(jnp.where(valid, w, 0.0), axis=1),
            ll_sum + jnp.sum(jnp.where(valid, ll, 0.0), axis=1)), None

  zeros = jnp.zeros((b,), jnp.float32)
  init = (jnp.full((b,), -jnp.inf, jnp.float32), zeros, zeros, zeros)
  (m, s, w_sum, ll_sum), _ = jax.lax.scan(body, init, jnp.arange(-(-num_samples // chunk)))
  return m + jnp.log(s) - jnp.log(float(num_samples)), w_sum / num_samples, ll_sum / num_samples


def _over_members(fn: Callable, member_loop: str) -> Callable:
  """fn(member args..., shared args...) over a leading member axis of the first `n` args (vmap or lax.map)."""
  def apply(members: tuple, shared: tuple):
    if member_loop == "vmap":
      return jax.vmap(lambda *m: fn(*m, *shared))(*members)
    return jax.lax.map(lambda m: fn(*m, *shared), members)
  return apply


@functools.lru_cache(maxsize=16)
def _iwae_program(net, model, num_samples: int, chunk: int, member_loop: str, xla_options: tuple):
  member = lambda params, hp, keys, x: _iwae_member(net, model, num_samples, chunk, params, hp, x, keys)
  over = _over_members(member, member_loop)
  return jax.jit(lambda params, hp, keys, x: over((params, hp, keys), (x,)), compiler_options=dict(xla_options) or None)


def importance_sampled_log_likelihood(net, model, params, hparams: dict, x: np.ndarray, seeds, num_samples: int = 1000,
                                      batch_size: int = 100, sample_chunk: int = 100, member_loop: str = "vmap",
                                      xla_options: dict | None = None) -> dict[str, np.ndarray]:
  """The importance-sampled estimate of log p(x) of every member (Burda et al. 2016, eq. 8; the IWAE bound).

      log p(x) ~ log (1/K) sum_k p(x | z_k) p(z_k) / q(z_k | x),   z_k ~ q(z | x) (the encoder's Gaussian)

  A lower bound in expectation that rises monotonically with K to log p(x) (Burda et al., theorem 1).
  net: models.Net with a Gaussian encoder; model: variants.LatentModel; params: leading member axis M;
  hparams: {name: (M,)} the members' hyperparameters (the likelihood's, e.g. 'gaussian_sigma'); x: (N,
  *data_shape) float32 network inputs (after `net.prepare`); seeds: (M,) ints, the members' seeds (sample
  keys are fold_in(key(seed), 11), then the example's index, then the chunk: results do not depend on
  `batch_size`). Returns float64 arrays (M, N) in nats per example:
    log_px   the estimate of log p(x) with K = num_samples
    elbo     the K-sample Monte Carlo ELBO, mean_k log [p(x|z_k) p(z_k) / q(z_k|x)] (<= log_px, Jensen)
    recon    E_q[log p(x|z)], the same K samples; elbo - recon is the Monte Carlo KL(q(z|x) || p(z))
  Work: N / batch_size calls, each decoding batch_size x sample_chunk latents per member at a time.
  """
  x = np.asarray(x, np.float32)
  n = len(x)
  seeds = np.asarray(seeds)
  num = len(seeds)
  chunk = max(1, min(sample_chunk, num_samples))
  bs = max(1, min(batch_size, n))
  fn = _iwae_program(net, model, int(num_samples), chunk, member_loop, tuple(sorted((xla_options or {}).items())))
  member_keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(s), IS_SALT))(jnp.asarray(seeds, jnp.uint32))
  hp = {k: jnp.asarray(v, jnp.float32) for k, v in hparams.items()}
  out = [np.zeros((num, n)) for _ in range(3)]
  for start in range(0, n, bs):
    idx = np.arange(start, start + bs)
    idx = np.minimum(idx, n - 1)  # the last batch is padded with its last example (one compiled shape)
    keys = jax.vmap(lambda k: jax.vmap(lambda i: jax.random.fold_in(k, i))(jnp.asarray(idx, jnp.uint32)))(member_keys)
    res = fn(params, hp, keys, jnp.asarray(x[idx]))
    take = min(bs, n - start)
    for o, r in zip(out, res):
      o[:, start:start + take] = np.asarray(r, np.float64)[:, :take]
  return {"log_px": out[0], "elbo": out[1], "recon": out[2]}


def binarize(x: np.ndarray, seed: int = BINARIZE_SEED) -> np.ndarray:
  """One draw of x_bin ~ Bernoulli(x) per element (the stochastic binarization of Salakhutdinov & Murray
  2008); x float in [0, 1]. Raises data.DataError (a ValueError) outside [0, 1]."""
  x = np.asarray(x, np.float32)
  if x.size and (x.min() < 0 or x.max() > 1):
    raise data_lib.DataError(f"--binarize needs inputs in [0, 1] (probabilities), these take values in "
                             f"[{x.min():g}, {x.max():g}]")
  return (np.random.default_rng(seed).random(x.shape, dtype=np.float32) < x).astype(np.float32)


def psnr(mse_per_example, peak: float = 1.0) -> np.ndarray:
  """Peak signal-to-noise ratio in dB, 10 log10(peak^2 / MSE_i), per example: (N,) -> (N,)."""
  return 10.0 * np.log10(peak**2 / np.maximum(np.asarray(mse_per_example, np.float64), 1e-12))


def code_statistics(z: np.ndarray, threshold: float = ACTIVE_THRESHOLD, eps: float = L0_EPS) -> dict[str, float]:
  """Statistics of codes z (N, ...) (flattened per example):

  active_units  units j with Var_x(z_j) > threshold (Burda et al. 2016, sec. 5.2, on posterior means)
  l0            mean over examples of the number of units with |z_j| > eps
  dead_units    units with |z_j| <= eps on every example
  """
  z = np.asarray(z, np.float64).reshape(len(z), -1)
  on = np.abs(z) > eps
  return {"active_units": float(np.sum(np.var(z, axis=0) > threshold)), "l0": float(np.mean(np.sum(on, axis=1))),
          "dead_units": float(np.sum(~on.any(axis=0)))}


def probe_accuracy(z_train, y_train, z_test, y_test, max_iter: int = 2000) -> float:
  """Held-out accuracy of a multinomial logistic regression on standardized codes (a linear probe)."""
  from sklearn.linear_model import LogisticRegression
  from sklearn.pipeline import make_pipeline
  from sklearn.preprocessing import StandardScaler

  flat = lambda z: np.asarray(z, np.float64).reshape(len(z), -1)
  probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
  return float(probe.fit(flat(z_train), y_train).score(flat(z_test), y_test))


def knn_accuracy(z_train, y_train, z_test, y_test, k: int = 5) -> float:
  """Held-out accuracy of a k-nearest-neighbour classifier (Euclidean, majority vote) on the codes."""
  from sklearn.neighbors import KNeighborsClassifier

  flat = lambda z: np.asarray(z, np.float64).reshape(len(z), -1)
  return float(KNeighborsClassifier(k).fit(flat(z_train), y_train).score(flat(z_test), y_test))


def fit_code_density(codes: np.ndarray, components: int = 10, seed: int = 0):
  """Ex-post density estimation of a deterministic autoencoder's codes (Ghosh et al. 2020, sec. 4).

  codes (N, ...) float, flattened to (N, d); a scikit-learn GaussianMixture with `components` full-covariance
  components (at most N), fitted by EM with `random_state=seed`. Its `sample(n)` gives codes to decode: the
  samples of a model without a prior (RAE, WAE, AAE's codes, a plain autoencoder). Raises ValueError for
  non-finite codes.
  """
  from sklearn.mixture import GaussianMixture

  flat = np.asarray(codes, np.float64).reshape(len(codes), -1)
  if not np.isfinite(flat).all():
    raise ValueError("codes with NaN or Inf have no density")
  gmm = GaussianMixture(n_components=max(1, min(components, len(flat))), covariance_type="full", reg_covar=1e-5,
                        random_state=seed)
  return gmm.fit(flat)


def sample_codes(variant, config, model, n: int, seed: int, code_shape: tuple, train_codes=None,
                 gmm_components: int = 10) -> tuple[np.ndarray, str] | None:
  """n latent codes to decode as samples of one member, and what they are; None when the model has no sampler.

  In order: the member's latent model (`model`, already bound to its params: z ~ p(z)); the variant's
  `code_prior` (WAE, AAE); else a `gmm_components` GMM fitted to that member's training codes
  (`fit_code_density`; none when `train_codes` is None or not finite). Keys: jax.random.key(seed); the GMM's
  random_state is `seed`. Returns float32 (n, *code_shape).
  """
  d = int(np.prod(code_shape))
  if model is not None:
    return np.asarray(model.sample_prior(jax.random.key(seed), (n, d)), np.float32).reshape(n, *code_shape), "means of z ~ p(z)"
  if variant.code_prior is not None:
    z = variant.code_prior(config)(jax.random.key(seed), (n, d))
    return np.asarray(z, np.float32).reshape(n, *code_shape), "samples of the prior p(z)"
  if train_codes is None or not np.isfinite(train_codes).all():
    return None
  gmm = fit_code_density(train_codes, gmm_components, seed)
  z = gmm.sample(n)[0].astype(np.float32).reshape(n, *code_shape)
  return z, f"samples of a {gmm.n_components}-component GMM fitted to training codes (Ghosh et al. 2020)"


def lerp(a, b, steps: int) -> np.ndarray:
  """Straight line from code a to code b (any shape): (steps, *a.shape)."""
  t = np.linspace(0.0, 1.0, steps).reshape(-1, *([1] * np.ndim(a)))
  return ((1 - t) * np.asarray(a) + t * np.asarray(b)).astype(np.float32)


def slerp(a, b, steps: int) -> np.ndarray:
  """Spherical interpolation (Shoemake 1985; White 2016, "Sampling generative networks") from a to b:
  sin((1-t) w) / sin(w) a + sin(t w) / sin(w) b, w the angle between them; a straight line when parallel.
  Under a Gaussian prior the path keeps the norm typical of prior samples, a straight line does not."""
  a64, b64 = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
  cos = np.dot(a64, b64) / max(np.linalg.norm(a64) * np.linalg.norm(b64), 1e-12)
  w = np.arccos(np.clip(cos, -1.0, 1.0))
  if w < 1e-6:
    return lerp(a, b, steps)
  t = np.linspace(0.0, 1.0, steps)[:, None]
  out = (np.sin((1 - t) * w) * a64 + np.sin(t * w) * b64) / np.sin(w)
  return out.reshape(steps, *np.shape(a)).astype(np.float32)


def embed_2d(z: np.ndarray, method: str = "tsne", seed: int = 0) -> tuple[np.ndarray, str]:
  """(N, 2) coordinates of codes z (N, ...) and the method's name: the codes themselves for d <= 2 (one
  unit is drawn against zero), else PCA (scikit-learn) or t-SNE (van der Maaten & Hinton 2008, PCA init)."""
  z = np.asarray(z, np.float64).reshape(len(z), -1)
  if z.shape[1] == 1:
    return np.concatenate([z, np.zeros_like(z)], axis=1), "code (d=1)"
  if z.shape[1] == 2:
    return z, "code (d=2)"
  if method == "pca" or len(z) < 5:
    from sklearn.decomposition import PCA
    return PCA(2, random_state=seed).fit_transform(z), f"PCA of the d={z.shape[1]} codes"
  if method != "tsne":
    raise ValueError(f"embedding={method!r} must be 'tsne' or 'pca'")
  from sklearn.manifold import TSNE
  emb = TSNE(2, init="pca", perplexity=min(30.0, (len(z) - 1) / 3), random_state=seed).fit_transform(z)
  return emb, f"t-SNE of the d={z.shape[1]} codes"


# --- a run's members: codes and reconstruction errors ---------------------------------------------------


@functools.lru_cache(maxsize=16)
def _recon_program(net, config_json: str, member_loop: str):
  import ml_collections
  config = ml_collections.ConfigDict(json.loads(config_json))
  code = configs.variant_of(config).code_fn(config, net)

  def member(params, x, ref):
    z = code(params, x)
    logits = net.decode(params, z) + net.skip(params, x)  # a skip transcoder's x @ W_skip (else 0)
    ref = x if ref is None else ref
    err = jnp.square(net.mean(logits) - ref).reshape(x.shape[0], -1)
    per = jnp.maximum(logits, 0) - logits * ref + jnp.log1p(jnp.exp(-jnp.abs(logits)))
    return z, jnp.mean(err, axis=-1), jnp.sum(per.reshape(x.shape[0], -1), axis=-1)

  over = _over_members(member, member_loop)
  return jax.jit(lambda params, x, ref: over((params,), (x, ref)))


def codes_and_errors(net, config, params, x: np.ndarray, batch_size: int = 500, member_loop: str = "vmap",
                     target: np.ndarray | None = None):
  """(codes (M, N, ...), MSE per example (M, N), Bernoulli cross-entropy per example (M, N)) of every member.

  x: (N, *data_shape) float32 network inputs. The code is the variant's inference code (Variant.code_fn);
  the reconstruction is net.mean(decode(code)) (plus `Net.skip`); the MSE is per element, the cross-entropy
  (from the decoder logits, meaningful for sigmoid outputs and inputs in [0, 1]) in nats per example. A
  network with a target (data.target_source, a transcoder) is scored against `target` (N, *target_shape)
  float32 (`Net.prepare_target` of the targets paired with x), which it needs (ValueError without).
  """
  if (net.target is None) != (target is None):
    raise ValueError("codes_and_errors: give `target` exactly when the network reconstructs a target (data.target_source)")
  fn = _recon_program(net, config.to_json(sort_keys=True), member_loop)
  n = len(x)
  bs = max(1, min(batch_size, n))
  parts = []
  for start in range(0, n, bs):
    idx = np.minimum(np.arange(start, start + bs), n - 1)
    take = min(bs, n - start)
    ref = None if target is None else jnp.asarray(target[idx])
    parts.append([np.asarray(a)[:, :take] for a in fn(params, jnp.asarray(x[idx]), ref)])
  return tuple(np.concatenate([p[i] for p in parts], axis=1) for i in range(3))


@functools.lru_cache(maxsize=16)
def _decode_program(net):
  return jax.jit(lambda params, z: net.mean(net.decode(params, z)))


def decode(net, params, z: np.ndarray, batch_size: int = 256) -> np.ndarray:
  """Reconstruction means (N, *data_shape) of codes z (N, ...) for one member's params (one compiled shape:
  the last batch is padded)."""
  fn = _decode_program(net)
  z = np.asarray(z, np.float32)
  out = []
  for i in range(0, len(z), batch_size):
    part = z[i:i + batch_size]
    pad = np.concatenate([part, np.repeat(part[-1:], batch_size - len(part), axis=0)])
    out.append(np.asarray(fn(params, jnp.asarray(pad)))[:len(part)])
  return np.concatenate(out)


def member_hparams(config, members: list[dict]) -> dict[str, np.ndarray]:
  """{hparam name: float32 (M,)}: each member's sweepable scalars (its setting over the config's values)."""
  return {name: np.asarray([float(m["setting"].get(key, configs.get(config, key))) for m in members], np.float32)
          for key, name in configs.sweepable(config).items()}


def generation_quality(run, x: np.ndarray, code_shape: tuple, model, train_codes, n: int,
                       gmm_components: int = 10) -> dict | None:
  """{'frechet_distance', 'precision', 'recall'}: (M,) float64 per member, or None when it does not apply.

  Applies to 28x28x1 inputs x (N, 28, 28, 1) in [0, 1] of a run whose members can be sampled (`sample_codes`:
  the latent model `model`, the code prior, or a GMM on `train_codes` (M, N_train, *code_shape)). n decoded samples per
  member (reconstruction means, keys from the member's seed) against n held-out images (a fixed random subset of
  x), in the feature space of jaxae's reference MNIST classifier (`jaxae.generation`; NOT Inception FID).
  NaN for a member without samples or with non-finite ones.
  """
  from jaxae import generation, reference

  net = run.model
  n = min(n, len(x))
  if tuple(net.data_shape) != (28, 28, 1) or n < 4 or x.min() < 0 or x.max() > 1:
    return None
  real = x if len(x) == n else x[np.sort(np.random.default_rng(GENERATION_SEED).choice(len(x), n, replace=False))]
  real_feats = reference.features(real)
  out = {k: np.full(len(run.members), np.nan) for k in ("frechet_distance", "precision", "recall")}
  for i, m in enumerate(run.members):
    params = jax.tree.map(lambda a: a[i], run.params)
    drawn = sample_codes(run.variant, run.config, model.bound(params) if model is not None else None, n, m["seed"],
                         code_shape, None if train_codes is None else train_codes[i], gmm_components)
    if drawn is None:
      continue
    fake = decode(net, params, drawn[0])
    if not np.isfinite(fake).all():
      continue
    fake_feats = reference.features(np.clip(fake, 0.0, 1.0))
    out["frechet_distance"][i] = generation.frechet_distance(real_feats, fake_feats)
    out["precision"][i], out["recall"][i] = generation.precision_recall(real_feats, fake_feats, k=3)
  return None if np.isnan(out["frechet_distance"]).all() else out


# --- a workdir --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Options:
  """What `evaluate` computes; the command-line flags of the same names."""
  data: str = ""  # a data source ('idx:DIR', 'npy:PATH', ...) instead of the run's held-out data
  target_data: str = ""  # with --data, for a run with data.target_source (a transcoder): the targets paired with it
  split: str = ""  # its split ('' = the run's data.eval_split)
  num_samples: int = 1000  # K of the importance-sampled log-likelihood; 0 skips it
  max_examples: int = 0  # evaluate a fixed random subset of the held-out data (0 = all)
  binarize: bool = False  # evaluate on one stochastic binarization of the inputs (Salakhutdinov & Murray 2008)
  export: tuple = ()  # 'codes', 'scores'
  figures: bool = True
  embedding: str = "tsne"  # 2-D scatter of codes with d > 2: 'tsne' or 'pca'
  scatter_points: int = 2000
  probes: bool = True  # linear-probe and k-NN accuracy when the data are labelled
  probe_examples: int = 10000  # training examples the probes (and the code density) are fit on (a fixed random subset)
  gmm_components: int = 10  # samples of a model without a prior: a GMM fitted to training codes (0: none)
  disentanglement_examples: int = 10000  # data with factors: held-out (and training) codes scored (0: skip)
  batch_size: int = 100  # examples per call of the likelihood estimate
  sample_chunk: int = 100  # samples of q(z|x) decoded at once per example
  generation_samples: int = 2000  # samples (and held-out images) for frechet_distance, precision, recall (0: skip)


def _log(msg: str, quiet: bool) -> None:
  if not quiet:
    print(msg, file=sys.stderr, flush=True)


def _write_json(path: str, obj) -> None:
  """Written to a temporary file and renamed: never through a symlink, never left cut short."""
  files.write_json(path, obj, indent=1)


def _save_npy(path: str, array) -> None:
  def write(tmp):
    with open(files.open_fd(tmp, os.O_WRONLY | os.O_TRUNC), "wb") as f:
      np.save(f, np.asarray(array), allow_pickle=False)
  files.replace_with(path, write)


def _heldout(run, options: Options, quiet: bool) -> tuple[data_lib.Split, data_lib.Split | None, str]:
  """(held-out split, training split or None, name of the held-out data)."""
  cfg = run.config.data
  train_split = None
  try:
    loaded = data_lib.load(cfg)
    train_split, held, name = loaded.train, loaded.eval, loaded.eval_name
  except data_lib.DataError as e:
    if not options.data:
      raise
    _log(f"warning: the run's training data cannot be read ({e}): no probes", quiet)
  if options.data:
    split = options.split or cfg.eval_split
    held = data_lib.load_source(options.data, data_lib.options(cfg, split))
    held = dataclasses.replace(held, name=f"--data={options.data!r}")
    data_lib.check_split(held)
    name = f"{options.data} ({split})"
    if tuple(held.x.shape[1:]) != tuple(run.model.data_shape):
      raise data_lib.DataError(f"--data={options.data!r} has examples of shape {tuple(held.x.shape[1:])}, the run was "
                               f"trained on {tuple(run.model.data_shape)}")
    if run.model.target is not None:
      if not options.target_data:
        raise data_lib.DataError(f"{run.workdir} reconstructs targets (data.target_source): give --target_data, the "
                                 f"targets paired row by row with --data")
      held = data_lib.with_target(held, options.target_data, data_lib.options(cfg, split), "--target_data")
      if tuple(held.target.shape[1:]) != tuple(run.model.target.shape):
        raise data_lib.DataError(f"--target_data={options.target_data!r} has targets of shape "
                                 f"{tuple(held.target.shape[1:])}, the run was trained on {tuple(run.model.target.shape)}")
  if options.target_data and not (options.data and run.model.target is not None):
    raise data_lib.DataError("--target_data goes with --data, for a run with data.target_source (a transcoder)")
  if options.max_examples and options.max_examples < len(held):
    held = data_lib.random_subset(held, options.max_examples, data_lib.EVAL_SUBSET_SEED)
    name += ", a random subset"
  return held, train_split, name


def _prepared(net, x, batch: int = 4096) -> np.ndarray:
  return np.concatenate([np.asarray(net.prepare(np.asarray(x[i:i + batch])), np.float32) for i in range(0, len(x), batch)])


def _prepared_target(net, split) -> np.ndarray | None:
  """The split's targets as the network's output is scaled (Net.prepare_target), or None for a network without."""
  if net.target is None:
    return None
  t = split.target
  return np.concatenate([np.asarray(net.prepare_target(np.asarray(t[i:i + 4096])), np.float32)
                         for i in range(0, len(t), 4096)])


def _block(values: np.ndarray, idx: list[int], healthy: np.ndarray) -> dict:
  per_seed = np.asarray(values, np.float64)[idx]
  m, s = report.mean_std(per_seed, healthy)
  clean = lambda v: None if v is None or not math.isfinite(v) else float(v)
  return {"per_seed": [clean(v) for v in per_seed], "mean": clean(m), "std": clean(s)}


def evaluate_run(run, options: Options = Options(), quiet: bool = False) -> dict:
  """Evaluates every member of a loaded run (`jaxae.load_run(workdir)`, all members); writes nothing.

  Returns the evaluation dict (see module docstring) with numpy arrays under the private key '_arrays'
  (codes, scores, figure inputs) for `figures` and `export`. Raises data.DataError for held-out data the run cannot use.
  """
  t0 = time.perf_counter()
  config, net, variant = run.config, run.model, run.variant
  members = run.members
  num = len(members)
  member_loop = train.resolve_member_loop(config)
  held, train_split, data_name = _heldout(run, options, quiet)
  x = _prepared(net, held.x)
  if options.binarize:
    x = binarize(x)
    data_name += ", binarized once (Salakhutdinov & Murray 2008)"
  n = len(x)
  _log(f"evaluating {num} members on {n} examples of {data_name}", quiet)
  metrics: dict[str, np.ndarray] = {}
  notes: dict[str, str] = {}
  nll_per_example = None

  model = variant.latent_model(config, net) if variant.latent_model is not None else None
  if model is not None and options.num_samples > 0:
    if config.loss.reconstruction in configs.UNIT_INTERVAL_RECONSTRUCTIONS and (x.min() < 0 or x.max() > 1):
      raise data_lib.DataError(f"the likelihood of loss.reconstruction={config.loss.reconstruction!r} needs inputs in "
                               f"[0, 1]; {data_name} takes values in "
                               f"[{x.min():g}, {x.max():g}] after the run's normalizer")
    t = time.perf_counter()
    ll = importance_sampled_log_likelihood(net, model, run.params, member_hparams(config, members), x,
                                           [m["seed"] for m in members], options.num_samples, options.batch_size,
                                           options.sample_chunk, member_loop, train.compiler_options(config))
    nll_per_example = -ll["log_px"]
    metrics["nll"] = nll_per_example.mean(axis=1)
    metrics["neg_elbo"] = -ll["elbo"].mean(axis=1)
    metrics["recon_nll"] = -ll["recon"].mean(axis=1)
    metrics["kl"] = (ll["recon"] - ll["elbo"]).mean(axis=1)
    notes["nll"] = (f"-log p(x) in nats per example, importance-sampled with K={options.num_samples} samples of "
                    f"q(z|x) (Burda et al. 2016, eq. 8); neg_elbo, recon_nll = E_q[-log p(x|z)] and kl from the "
                    f"same samples")
    _log(f"  importance-sampled log-likelihood, K={options.num_samples}: {time.perf_counter() - t:.1f}s", quiet)

  target = _prepared_target(net, held)
  ref = x if target is None else target  # what the reconstruction is scored against
  z, mse, bce = codes_and_errors(net, config, run.params, x, member_loop=member_loop, target=target)
  metrics["recon_mse"] = mse.mean(axis=1)
  if target is not None:  # a transcoder: the fraction of the target's variance left unexplained (centred)
    metrics["fvu"] = mse.sum(axis=1) * np.prod(target.shape[1:]) / np.sum(np.square(target.astype(np.float64) - target.mean(axis=0, dtype=np.float64)))
    metrics["explained_variance"] = 1 - metrics["fvu"]
    notes["fvu"] = ("sum ||t - t_hat||^2 / sum ||t - mean(t)||^2 over the held-out targets t (data.target_source), "
                    "after the run's target normalizer; recon_mse and psnr are against t too")
  in_unit = bool(ref.min() >= 0 and ref.max() <= 1)
  if net.output == "sigmoid" and in_unit:
    metrics["recon_bce"] = bce.mean(axis=1)
  peak = 1.0 if in_unit else float(ref.max() - ref.min())
  metrics["psnr"] = psnr(mse, peak).mean(axis=1)
  notes["psnr"] = f"dB, mean over examples of 10 log10(peak^2 / MSE_i), peak {peak:g}"
  stats = [code_statistics(z[i]) for i in range(num)]
  for key in ("active_units", "l0", "dead_units"):
    metrics[key] = np.asarray([s[key] for s in stats])

  labelled = train_split is not None and data_lib.has_labels(train_split) and data_lib.has_labels(held)
  # Training codes: for the probes, and for the code density that samples a model without a prior.
  wants_generation = options.generation_samples > 0 and tuple(net.data_shape) == (28, 28, 1)
  wants_density = (model is None and variant.code_prior is None and (options.figures or wants_generation)
                   and options.gmm_components > 0 and len(net.data_shape) == 3)
  z_tr = tr = None
  if train_split is not None and ((labelled and options.probes) or wants_density):
    tr = train_split
    if options.probe_examples and len(tr) > options.probe_examples:
      tr = data_lib.random_subset(tr, options.probe_examples, PROBE_SEED)
    z_tr = codes_and_errors(net, config, run.params, _prepared(net, tr.x), member_loop=member_loop,
                            target=_prepared_target(net, tr))[0]
  if labelled and options.probes:
    t = time.perf_counter()
    finite = [bool(np.isfinite(z_tr[i]).all() and np.isfinite(z[i]).all()) for i in range(num)]  # diverged: NaN
    metrics["probe_accuracy"] = np.asarray([probe_accuracy(z_tr[i], tr.labels, z[i], held.labels) if finite[i]
                                            else np.nan for i in range(num)])
    metrics["knn_accuracy"] = np.asarray([knn_accuracy(z_tr[i], tr.labels, z[i], held.labels) if finite[i]
                                          else np.nan for i in range(num)])
    notes["probe_accuracy"] = (f"logistic regression on standardized codes, fit on {len(tr)} training codes, scored on "
                               f"the {n} held-out codes; knn_accuracy: 5 nearest neighbours")
    _log(f"  probes on {len(tr)} training codes: {time.perf_counter() - t:.1f}s", quiet)
  if held.factors is not None and options.disentanglement_examples > 0:
    t = time.perf_counter()
    scores, notes["mig"] = _disentanglement(net, config, run.params, member_loop, held, z, train_split, options)
    metrics.update(scores)
    _log(f"  disentanglement metrics: {time.perf_counter() - t:.1f}s", quiet)

  if wants_generation:
    t = time.perf_counter()
    quality = generation_quality(run, x, z.shape[2:], model, z_tr if wants_density else None,
                                 options.generation_samples, options.gmm_components)
    if quality is not None:
      metrics.update(quality)
      notes["frechet_distance"] = (
          f"Frechet distance (Heusel et al. 2017, eq. 6) between {min(n, options.generation_samples)} decoded samples "
          f"and as many held-out images in the 128-d feature space of jaxae's reference MNIST classifier "
          f"(jaxae.reference): NOT Inception FID, not comparable with Inception-based numbers; precision and recall: "
          f"k=3 nearest-neighbour manifolds in the same space (Kynkaanniemi et al. 2019)")
      _log(f"  generation quality, {min(n, options.generation_samples)} samples: {time.perf_counter() - t:.1f}s", quiet)

  settings = sorted({m["setting_index"] for m in members})
  healthy = np.asarray([i not in run.diverged and all(np.isfinite(v[i]) for v in metrics.values()) for i in range(num)])
  out: dict[str, Any] = {
      "workdir": run.workdir, "step": run.step, "epoch": run.epoch, "variant": variant.name,
      "eval_data": data_name, "num_examples": n, "num_samples": options.num_samples if model is not None else 0,
      "binarize": options.binarize, "members": members, "notes": notes,
      "diverged": [{"member": i, "seed": members[i]["seed"], "setting": members[i]["setting"],
                    "epoch": run.diverged.get(i)} for i in range(num) if not healthy[i]],
      "settings": []}
  for g in settings:
    idx = [i for i, m in enumerate(members) if m["setting_index"] == g]
    h = healthy[idx]
    out["settings"].append({"setting": members[idx[0]]["setting"], "seeds": [members[i]["seed"] for i in idx],
                            "healthy_seeds": [members[i]["seed"] for i in idx if healthy[i]], "train": {},
                            "eval": {k: _block(v, idx, h) for k, v in metrics.items()}})
  out["seconds"] = time.perf_counter() - t0
  out["_arrays"] = {"x": x, "labels": held.labels, "codes": z, "mse": mse, "nll": nll_per_example, "healthy": healthy,
                    "model": model, "train_codes": z_tr if wants_density else None}
  return out


def _disentanglement(net, config, params, member_loop, held, z, train_split, options) -> tuple[dict, str]:
  """({key: (M,) float64} of `disentanglement.KEYS`, a note) of every member's codes z (M, N, ...) of the
  held-out split: MIG and the FactorVAE score of (a fixed random subset of) the held-out codes; DCI and SAP
  fitted on as many training codes (when the training split has factors, else on the first half of the
  held-out subset and scored on the second). NaN for members with non-finite codes; ({}, why) for codes
  of one unit or fewer than 4 held-out examples."""
  from jaxae import disentanglement

  n = options.disentanglement_examples
  rng = np.random.default_rng(DISENTANGLEMENT_SEED)
  test = rng.permutation(len(held))[:n]
  z_te, f_te = z[:, test].reshape(len(z), len(test), -1), held.factors[test]
  if z_te.shape[-1] < 2 or len(test) < 4:
    return {}, "no disentanglement metrics: they need codes of 2 or more units and 4 or more examples"
  if train_split is not None and train_split.factors is not None:
    tr = data_lib.random_subset(train_split, min(n, len(train_split)), DISENTANGLEMENT_SEED)
    z_tr = codes_and_errors(net, config, params, _prepared(net, tr.x), member_loop=member_loop,
                            target=_prepared_target(net, tr))[0]
    z_tr, f_tr, fit = z_tr.reshape(len(z_tr), len(tr), -1), tr.factors, f"{len(tr)} training codes"
  else:
    half = len(test) // 2
    z_tr, f_tr, z_te, f_te = z_te[:, :half], f_te[:half], z_te[:, half:], f_te[half:]
    fit = f"{half} held-out codes (the training data have no factors)"
  out = {k: np.full(len(z), np.nan) for k in disentanglement.KEYS}
  for i in range(len(z)):
    if np.isfinite(z_tr[i]).all() and np.isfinite(z_te[i]).all():
      for k, v in disentanglement.metrics(z_tr[i], f_tr, z_te[i], f_te, seed=DISENTANGLEMENT_SEED).items():
        out[k][i] = v
  names = ", ".join(held.factor_names)
  return out, (f"disentanglement of the codes against the {len(held.factor_names)} factors ({names}), jaxae."
               f"disentanglement: mig, factorvae_score on {len(f_te)} held-out codes; dci_* and sap fitted on {fit}")


# --- figures ----------------------------------------------------------------------------------------------


def _figure_member(members, healthy, g) -> int | None:
  idx = [i for i, m in enumerate(members) if m["setting_index"] == g]
  ok = [i for i in idx if healthy[i]]
  return ok[0] if ok else None


def _pairs(labels, n: int, count: int = 4) -> list[tuple[int, int]]:
  """Held-out pairs to interpolate: first examples of different classes when labelled, else random."""
  if labels is not None and len(np.unique(labels)) > 1:
    classes = np.unique(labels)
    firsts = [int(np.flatnonzero(labels == c)[0]) for c in classes]
    pairs = [(firsts[i % len(firsts)], firsts[(i + len(firsts) // 2 + 1) % len(firsts)]) for i in range(count)]
    return [p for p in pairs if p[0] != p[1]] or [(0, min(1, n - 1))]
  rng = np.random.default_rng(PAIRS_SEED)
  return [tuple(int(v) for v in rng.choice(n, 2, replace=False)) for _ in range(count)] if n > 1 else [(0, 0)]


def _suffix(members, g, settings) -> tuple[str, str]:
  if len(settings) == 1:
    return "", ""
  setting = members[next(i for i, m in enumerate(members) if m["setting_index"] == g)]["setting"]
  return f"_setting{g}", " (" + ", ".join(f"{k.split('.')[-1]}={v}" for k, v in setting.items()) + ")"


def figures(run, result: dict, figdir: str, options: Options = Options()) -> list[str]:
  """Draws the evaluation figures of one member per setting (its first healthy seed); returns the paths.

  codes: 2-D scatter of held-out codes; interpolations: straight lines (and spherical ones under a
  latent model) between held-out pairs; traversals: the top units one at a time; samples: decoded prior
  samples (latent model); manifold: decoded over a 2-D grid (prior quantiles for a latent model,
  1st-99th percentiles of the codes otherwise). Images only for image data.
  """
  from jaxae import plots

  arrays = result["_arrays"]
  x, labels, z_all, model = arrays["x"], arrays["labels"], arrays["codes"], arrays["model"]
  members, net, variant = run.members, run.model, run.variant
  images = len(net.data_shape) == 3
  settings = sorted({m["setting_index"] for m in members})
  paths = []
  for g in settings:
    i = _figure_member(members, arrays["healthy"], g)
    if i is None:
      continue
    params = jax.tree.map(lambda a: a[i], run.params)
    seed = members[i]["seed"]
    member_model = model.bound(params) if model is not None else None
    suffix, where = _suffix(members, g, settings)
    name = lambda stem: os.path.join(figdir, f"eval_{stem}{suffix}.png")
    z = z_all[i]
    pts = slice(0, min(len(z), options.scatter_points))
    emb, method = embed_2d(z[pts], options.embedding)
    paths.append(plots.latent_scatter(emb, None if labels is None else labels[pts], name("codes"),
                                      f"{variant.name}{where}, seed {seed}: {method}, {len(emb)} held-out examples",
                                      axes=("z1", "z2") if method.startswith("code") else (f"{method.split()[0]} 1",
                                                                                         f"{method.split()[0]} 2"),
                                      legend_title="label"))
    if not images:
      continue
    flat = z.reshape(len(z), -1)
    steps = 10
    rows, row_labels = [], []
    for a, b in _pairs(labels, len(z)):
      ends = f"{labels[a]}→{labels[b]}" if labels is not None else f"#{a}→#{b}"
      rows.append(decode(net, params, lerp(z[a], z[b], steps)))
      row_labels.append(f"{ends} line")
      if member_model is not None:
        rows.append(decode(net, params, slerp(z[a], z[b], steps)))
        row_labels.append(f"{ends} sphere")
    paths.append(plots.image_rows(rows, row_labels, name("interpolations"),
                                  f"{variant.name}{where}, seed {seed}: decoded along paths between held-out codes"))
    # Traversals: one unit at a time from the first held-out code, units ranked by KL (latent model) or variance.
    base = flat[0]
    if member_model is not None and member_model.kl_per_unit is not None:
      mean, log_var = _posterior(net, params, x)
      score, what = np.asarray(member_model.kl_per_unit(mean, log_var)).mean(axis=0), "KL"
      values = lambda j: np.asarray(member_model.prior_quantile(jnp.linspace(0.05, 0.95, 9)))
    else:
      score, what = np.var(flat, axis=0), "var"
      values = lambda j: np.percentile(flat[:, j], np.linspace(5, 95, 9))
    top = np.argsort(-score)[:min(8, flat.shape[1])]
    rows = []
    for j in top:
      codes = np.repeat(base[None], 9, axis=0)
      codes[:, j] = values(j)
      rows.append(decode(net, params, codes.reshape(9, *z.shape[1:])))
    span = "prior quantiles 0.05-0.95" if model is not None else "5th-95th percentile of the unit"
    paths.append(plots.image_rows(rows, [f"unit {j} ({what} {score[j]:.2g})" for j in top], name("traversals"),
                                  f"{variant.name}{where}, seed {seed}: one unit at a time over its {span}"))
    train_codes = arrays.get("train_codes")
    drawn = sample_codes(variant, run.config, member_model, 64, seed, z.shape[1:],
                         None if train_codes is None else train_codes[i], options.gmm_components)
    if drawn is not None:
      samples = decode(net, params, drawn[0])
      paths.append(plots.image_grid(samples.reshape(8, 8, *samples.shape[1:]), name("samples"),
                                    title=f"{variant.name}{where}, seed {seed}: decoded {drawn[1]}"))
    if flat.shape[1] == 2:
      k = 20
      if member_model is not None:
        u = np.linspace(0.05, 0.95, k)
        xs = ys = np.asarray(member_model.prior_quantile(jnp.asarray(u)))
        what = "prior quantiles 0.05-0.95 (Kingma & Welling 2014, fig. 4)"
      else:
        lo, hi = np.percentile(flat, 1, axis=0), np.percentile(flat, 99, axis=0)
        xs, ys = np.linspace(lo[0], hi[0], k), np.linspace(lo[1], hi[1], k)
        what = "1st-99th percentile of the held-out codes"
      grid = np.stack(np.meshgrid(xs, ys[::-1]), -1).reshape(-1, 2).astype(np.float32)  # top row: largest z2
      tiles = decode(net, params, grid)
      paths.append(plots.image_grid(tiles.reshape(k, k, *tiles.shape[1:]), name("manifold"),
                                    extent=(xs[0], xs[-1], ys[0], ys[-1]),
                                    title=f"{variant.name}{where}, seed {seed}: decoded over {what}"))
  return paths


@functools.lru_cache(maxsize=16)
def _posterior_program(net):
  return jax.jit(lambda params, x: net.encode(params, x))


def _posterior(net, params, x, batch_size: int = 1000):
  fn = _posterior_program(net)
  parts = [fn(params, jnp.asarray(x[i:i + batch_size])) for i in range(0, len(x), batch_size)]
  return np.concatenate([np.asarray(p[0]) for p in parts]), np.concatenate([np.asarray(p[1]) for p in parts])


# --- writing ----------------------------------------------------------------------------------------------


def export(result: dict, outdir: str, what) -> dict:
  """Writes per-member codes (`codes/member_<i>.npy`, (N, ...) float32), held-out labels (`labels.npy`)
  and per-example reconstruction errors (`scores/member_<i>.npy`, (N,) float32 MSE per element: the
  anomaly score; with a likelihood also `scores/member_<i>_nll.npy`, -log p(x) in nats) under `outdir`,
  and `index.json` naming them; returns the index."""
  arrays = result["_arrays"]
  index: dict[str, Any] = {"data": result["eval_data"], "num_examples": result["num_examples"], "members": []}
  for kind in what:
    files.make_dirs(os.path.join(outdir, kind))  # never through a symlink (files.confined)
  if "codes" in what and arrays["labels"] is not None:
    _save_npy(os.path.join(outdir, "labels.npy"), arrays["labels"].astype(np.int32))
    index["labels"] = "labels.npy"
  for i, m in enumerate(result["members"]):
    entry = {"member": i, "seed": m["seed"], "setting": m["setting"]}
    if "codes" in what:
      entry["codes"] = f"codes/member_{i:03d}.npy"
      _save_npy(os.path.join(outdir, entry["codes"]), arrays["codes"][i].astype(np.float32))
    if "scores" in what:
      entry["scores"] = f"scores/member_{i:03d}.npy"
      _save_npy(os.path.join(outdir, entry["scores"]), arrays["mse"][i].astype(np.float32))
      if arrays["nll"] is not None:
        entry["nll"] = f"scores/member_{i:03d}_nll.npy"
        _save_npy(os.path.join(outdir, entry["nll"]), arrays["nll"][i].astype(np.float32))
    index["members"].append(entry)
  _write_json(os.path.join(outdir, "index.json"), index)
  return index


def _public(result: dict) -> dict:
  return {k: v for k, v in result.items() if not k.startswith("_")}


def _groups(workdir: str) -> list[str]:
  """Names of the sweep groups of a workdir with static sweep keys ([] for a plain run)."""
  from jaxae import checkpoints
  gdir = os.path.join(workdir, "groups")
  if os.path.isdir(os.path.join(workdir, checkpoints.CHECKPOINT_DIR)) or not os.path.isdir(gdir):
    return []
  return sorted(d for d in os.listdir(gdir) if os.path.isdir(os.path.join(gdir, d, checkpoints.CHECKPOINT_DIR)))


def evaluate(workdir: str, options: Options | None = None, quiet: bool = False, **kwargs) -> dict:
  """Evaluates the run in `workdir` and writes evaluation.json, figures/eval_*.png and export/ there.

  Options by keyword (`evaluate(w, num_samples=5000, export=('codes',))`) or as an `Options`. A sweep
  with static keys is evaluated group by group (each group's files in its own folder) and the returned
  dict is {"groups": {name: evaluation}} (also written to `<workdir>/evaluation.json`).

  Holds the workdir's lock throughout (workdir.taken: a run training there is refused with WorkdirBusy,
  never read half-written), and writes only inside the workdir, through no symlink at any level: every
  place it writes is checked before the evaluation starts (WorkdirError), and each file is listed in
  the workdir's manifest.jsonl. Raises errors.BadInput (WorkdirError for no checkpoint or a symlink,
  checkpoints.CheckpointError, data.DataError, configs.ConfigError for bad options; all ValueErrors too)
  or errors.EnvironmentFailure (a read-only workdir, a workdir that is a file).
  """
  from jaxae import workdir as workdir_lib

  options = dataclasses.replace(options or Options(), **kwargs)
  bad = [e for e in options.export if e not in EXPORTS]
  if bad:
    raise configs.ConfigError(f"export={','.join(bad)} is not one of {', '.join(EXPORTS)}")
  if options.embedding not in ("tsne", "pca"):
    raise configs.ConfigError(f"embedding={options.embedding!r} must be 'tsne' or 'pca'")
  with workdir_lib.taken(workdir), workdir_lib.writing(workdir):
    groups = _groups(workdir)
    _check_outputs(workdir, groups, options)
    return _evaluate(workdir, groups, options, quiet)


def _check_outputs(workdir: str, groups: list[str], options: Options) -> None:
  """WorkdirError, before any work, for a symlink (or a file of the wrong kind) at any level of what
  evaluate writes: evaluation.json, figures/eval_*.png, export/ (of the workdir and of each group)."""
  from jaxae import workdir as workdir_lib

  for d in [workdir] + [os.path.join(workdir, "groups", g) for g in groups]:
    files.check_levels(d, True)
    for name in (EVALUATION, EVALUATION + ".tmp"):
      files.check_levels(os.path.join(d, name), False)
    for sub, used in (("figures", options.figures), (EXPORT_DIR, bool(options.export))):
      path = os.path.join(d, sub)
      if used and os.path.lexists(path):
        files.check_levels(path, True)
        link = workdir_lib.first_symlink(path)
        if link:
          files.refuse_symlink(link)


def _evaluate(workdir: str, groups: list[str], options: Options, quiet: bool) -> dict:
  from jaxae import load

  if groups:
    out = {"groups": {}}
    for name in groups:
      _log(f"== group {name}", quiet)
      out["groups"][name] = _evaluate(os.path.join(workdir, "groups", name), [], options, quiet)
    _write_json(os.path.join(workdir, EVALUATION), out)
    return out
  try:
    run = load.load_run(workdir)
  except FileNotFoundError as e:  # no complete checkpoint: nothing to evaluate
    raise errors.WorkdirError(str(e)) from None
  result = evaluate_run(run, options, quiet)
  if options.figures:
    t = time.perf_counter()
    result["figures"] = [os.path.relpath(p, workdir) for p in figures(run, result, os.path.join(workdir, "figures"), options)]
    _log(f"  figures: {time.perf_counter() - t:.1f}s", quiet)
  if options.export:
    result["export"] = export(result, os.path.join(workdir, EXPORT_DIR), options.export)
  result = _public(result)
  _write_json(os.path.join(workdir, EVALUATION), result)
  return result


def format_table(result: dict) -> str:
  """The printed table: one row per seed and mean ± std per setting (report.format_table's layout)."""
  if "groups" in result:
    return "\n".join(f"== group {name}\n{format_table(r)}" for name, r in result["groups"].items())
  return f"{result['eval_data']}: {result['num_examples']} examples (step {result['step']}, epoch {result['epoch']})\n" + \
      report.format_table(result)


# --- command line -----------------------------------------------------------------------------------------


def main(argv=None) -> int:
  """`python -m jaxae.evaluate --workdir=W ...`; exit status 0, or 2 with a one-line error."""
  import argparse

  p = argparse.ArgumentParser(prog="python -m jaxae.evaluate", description=__doc__.splitlines()[0])
  p.add_argument("--workdir", required=True, help="a run's workdir (finished or interrupted)")
  defaults = Options()
  p.add_argument("--data", default="", help="evaluate on this data source instead of the run's held-out data")
  p.add_argument("--split", default="", help="the split of --data (default: the run's data.eval_split)")
  p.add_argument("--target_data", default="", help="with --data, for a transcoder run (data.target_source): its "
                                                   "targets, one row per row of --data")
  p.add_argument("--num_samples", type=int, default=defaults.num_samples,
                 help="K samples of q(z|x) for the importance-sampled log-likelihood (0: skip; 5000 for papers)")
  p.add_argument("--max_examples", type=int, default=0, help="a fixed random subset of the held-out data (0: all)")
  p.add_argument("--binarize", action="store_true", help="one stochastic binarization of the inputs (Salakhutdinov & Murray 2008)")
  p.add_argument("--export", default="", help="comma-separated: codes (per-member .npy and labels), scores (per-example errors)")
  p.add_argument("--embedding", default=defaults.embedding, choices=("tsne", "pca"), help="2-D scatter of codes with d > 2")
  p.add_argument("--no_figures", action="store_true")
  p.add_argument("--batch_size", type=int, default=defaults.batch_size, help="examples per likelihood call")
  p.add_argument("--gmm_components", type=int, default=defaults.gmm_components,
                 help="samples of a model without a prior: a full-covariance GMM with this many components fitted "
                      "to training codes (Ghosh et al. 2020; 0: no samples)")
  p.add_argument("--disentanglement_examples", type=int, default=defaults.disentanglement_examples,
                 help="data with factors: held-out and training codes the disentanglement metrics use (0: skip)")
  p.add_argument("--generation_samples", type=int, default=defaults.generation_samples,
                 help="28x28x1 images: decoded samples (and held-out images) for frechet_distance, precision and recall "
                      "in the feature space of jaxae's reference MNIST classifier, not Inception FID (0: skip)")
  args = p.parse_args(argv)
  from jaxae import main as main_lib

  main_lib.quiet_libraries()
  options = Options(data=args.data, target_data=args.target_data, split=args.split, num_samples=args.num_samples, max_examples=args.max_examples,
                    binarize=args.binarize, export=tuple(e for e in args.export.split(",") if e),
                    figures=not args.no_figures, embedding=args.embedding, batch_size=args.batch_size,
                    gmm_components=args.gmm_components, disentanglement_examples=args.disentanglement_examples,
                    generation_samples=args.generation_samples)
  for key in ("num_samples", "max_examples", "batch_size", "gmm_components", "disentanglement_examples",
              "generation_samples"):
    if getattr(options, key) < 0 or (key == "batch_size" and options.batch_size == 0):
      print(f"error: --{key}={getattr(options, key)} must be {'positive' if key == 'batch_size' else 'non-negative'}",
            file=sys.stderr)
      return 2

  def body() -> int:
    result = evaluate(args.workdir, options)
    print(format_table(result))
    print(f"wrote {os.path.join(args.workdir, EVALUATION)}" + ("" if options.export == () else f" and {EXPORT_DIR}/")
          + ("" if not options.figures else ", figures/eval_*.png"))
    return 0

  # The exit statuses of training (errors.py): 2 bad input, 74 environment, 75 busy, 130 Ctrl-C, 70 a bug.
  return main_lib.guarded(body, "evaluation.json and the files written before are complete",
                          "evaluation.json and the files written before are complete")


if __name__ == "__main__":
  from jaxae.main import exit_now

  exit_now(main())  # skips the interpreter's ~0.6 s teardown once everything is written
