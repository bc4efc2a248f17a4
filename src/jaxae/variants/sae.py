"""Sparse autoencoders for interpretability (variant 'sae'): the modern SAE family, many in one program.

The network is `jaxae.sae.SparseAutoencoder` (z = act((x - b_dec) W_enc + b_enc), x_hat = z W_dec + b_dec,
m = model.expansion x D latents); `sae.activation` picks the objective, per example:

  relu       ||x - x_hat||^2 + l1_coefficient * sum_i z_i ||W_dec,i||  (Anthropic, "Towards Monosemanticity",
             Bricken et al. 2023, and its April 2024 update, Conerly et al.: the L1 penalty weighted by the
             decoder norms, which `sae.decoder_norm='free'` leaves unconstrained)
  topk       ||x - x_hat||^2 + auxk_coefficient * ||e - e_hat||^2 (Gao et al. 2024, "Scaling and evaluating
             sparse autoencoders", eq. 3 and appendix A.2: e = x - x_hat (no gradient), e_hat = W_dec z_aux
             with z_aux the top `sae.k_aux` pre-activations of the dead latents, those that have not fired
             in the last `sae.dead_window` training examples)
  batchtopk  as topk, with the k * B largest activations of the whole batch kept (Bussmann et al. 2024,
             "BatchTopK Sparse Autoencoders", sec. 3); the inference threshold theta is estimated during
             training as an exponential moving average (rate `sae.threshold_lr`, as SAELens) of the
             smallest kept activation of each batch (first batch: its own value)
  jumprelu   ||x - x_hat||^2 + l0_coefficient * sum_i H(pi_i - theta_i) (Rajamanoharan et al. 2024,
             "Jumping Ahead", sec. 3-4): straight-through pseudo-derivatives with the rectangle kernel of
             bandwidth `sae.jumprelu_bandwidth` (their eq. 11; `jaxae.sae.jumprelu`, `jaxae.sae.step`)
  gated, matryoshka_batchtopk, ...  the architectures registered in `jaxae.sae_archs`, one file each
             (gated SAEs, Rajamanoharan et al. 2024; Matryoshka BatchTopK, Bussmann et al. 2025): their code
             and extra loss terms (`Architecture.make_terms`) added to ||x - x_hat||^2 here

Schedules (jaxae/sae_schedules.py), each a sweepable step count: `sae.sparsity_warmup_steps` warms the L1 / L0
coefficient up linearly from 0 (SAELens's l1_warm_up_steps); `sae.k_anneal_steps` takes TopK / BatchTopK's k
from `sae.k_start` down to sae.k (held-out metrics use sae.k, as inference does); `optimizer.decay_fraction`
decays the learning rate linearly to 0 over the last fraction of training (jaxae/optim.py).

`sae.decoder_norm='unit'` (default) keeps the rows of W_dec at unit norm after every update and removes the
gradient component parallel to each row before it (Bricken et al. 2023; Gao et al. 2024, sec. 2). b_dec
starts at the geometric median (or mean) of up to `sae.init_sample` training inputs (Bricken et al. 2023).
Inputs are usually scaled by `data.normalize='unit_mean_square'` (E||x||^2 = D, stored with the run).

Transcoders (`data.target_source`, see `jaxae.transcoder`): the code of input x (D_in) reconstructs a
paired target t (D_out) instead of x, ||t - t_hat||^2 in place of ||x - x_hat||^2 for every activation
(Dunefsky et al. 2024, "Transcoders find interpretable LLM feature circuits"); `sae.skip_connection=True`
adds x @ W_skip to t_hat (skip transcoders, Paulo et al. 2025). Every metric below is then against t.

Metrics, per member, on training batches (mean over the epoch's steps) and held-out data:
  l0                  mean number of nonzero latents per example
  fvu                 fraction of variance unexplained, sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 with the
                      mean over all the evaluated examples (centred, from streamed sufficient statistics)
  explained_variance  1 - fvu
  dead_fraction       training: latents that did not fire in the last `sae.dead_window` examples (mean over
                      the epoch's steps); held-out: latents that fire on none of the evaluated examples
  cosine_similarity   mean over examples of cos(x, x_hat)
  sq_error, recon_mse mean ||x - x_hat||^2 per example and per element; l1, l0_penalty, auxk_loss,
                      threshold where they apply. The held-out loss has no AuxK term.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxae import models, sae, sae_archs, sae_schedules, validation
from jaxae import data as data_lib
from jaxae.variants import base

B_DEC_INITS = ("geometric_median", "mean", "zeros")
DECODER_NORMS = ("unit", "free")
INIT_SAMPLE_SEED = 0  # the training rows b_dec is initialized from: the same for every run of a dataset
_COUNT_CAP = 1 << 30  # example counters saturate here (int32)


def width(config, data_shape) -> int:
  """m = model.expansion x D, the number of latents."""
  return int(config.model.expansion) * math.prod(data_shape)


def k_aux(config, data_shape, output_shape=None) -> int:
  """sae.k_aux, or D // 2 when 0 (the heuristic SAELens takes from Gao et al. 2024, appendix B.1; D the
  reconstruction's features, `output_shape`, D_out for a transcoder), at most m."""
  d = math.prod(data_shape if output_shape is None else output_shape)
  return min(config.sae.k_aux or max(d // 2, 1), width(config, data_shape))


def network(config, data_shape, target_shape=None) -> models.Net:
  """The SAE for inputs of `data_shape`; a transcoder into targets of `target_shape` when given."""
  s = config.sae
  module = sae.SparseAutoencoder(
      data_shape=tuple(data_shape), width=width(config, data_shape), activation=s.activation, k=int(s.k),
      decoder_init_norm=1.0 if s.decoder_norm == "unit" else float(s.decoder_init_norm),
      jumprelu_init_threshold=float(s.jumprelu_init_threshold),
      target_shape=None if target_shape is None else tuple(target_shape), skip_connection=bool(s.skip_connection))
  return models.Net(module, tuple(data_shape), output="identity")


def _has_auxk(act: str) -> bool:
  arch = sae_archs.get(act)
  return act in ("topk", "batchtopk") or (arch is not None and arch.auxk)


def _estimates_threshold(act: str) -> bool:
  arch = sae_archs.get(act)
  return act == "batchtopk" or (arch is not None and arch.estimates_threshold)


def make_loss(config, net):
  s = config.sae
  act, k, window = s.activation, int(s.k), int(s.dead_window)
  k_start = int(s.k_start) if int(s.k_start) > k else 0  # k annealing (jaxae/sae_schedules.py); 0: off
  transcoder = net.target is not None
  n_aux = k_aux(config, net.data_shape, net.output_shape)
  d = math.prod(net.output_shape)
  arch = sae_archs.get(act)
  terms = arch.make_terms(config, width(config, net.data_shape)) if arch is not None else None

  def loss_fn(params, hp, batch, key, train):
    p = params["params"]
    x = sae.flatten(batch["x"])
    ref = sae.flatten(batch["target"]) if transcoder else x  # what x_hat reconstructs (a transcoder: its target)
    aux = batch["aux"]
    pi = sae.pre_activation(p, x, apply_b_dec_to_input=not transcoder) if terms is None else None
    metrics, penalty, min_positive = {}, 0.0, None
    # Schedules (absent keys: none): the sparsity coefficient's warm-up, k annealing in training.
    step = batch.get("step", 0)
    warm = sae_schedules.warmup_factor(step, hp.get("sparsity_warmup_steps", 0.0))
    k_now = sae_schedules.annealed_k(step, k_start, k, hp.get("k_anneal_steps", 0.0)) if k_start and train else None
    if k_now is not None:
      metrics["k"] = k_now.astype(jnp.float32)
    if terms is not None:  # a registered architecture (jaxae/sae_archs/): its code and extra loss terms
      # the warm-up scales the sparsity coefficient (gated: its L1), not the other terms
      hp_now = {**hp, "l1_coefficient": hp["l1_coefficient"] * warm} if "l1_coefficient" in hp else hp
      t = terms(p, hp_now, x, train)
      pi, z, penalty, min_positive = t.pi, t.z, t.penalty, t.min_positive
      metrics.update(t.metrics)
    elif act == "relu":
      z = jax.nn.relu(pi)
      l1 = jnp.mean(jnp.sum(z * sae.decoder_norms(p), axis=-1))
      penalty = hp["l1_coefficient"] * warm * l1
      metrics["l1"] = l1
    elif act == "topk":  # decoded from (values, indices): k rows of W_dec per example, not all m
      values, idx = jax.lax.top_k(pi, k) if k_now is None else sae_schedules.topk_annealed(pi, k_start, k_now)
      z = None
    elif act == "batchtopk":
      if train:
        z, min_positive = (sae.batch_topk(pi, k) if k_now is None else
                           sae_schedules.batch_topk_annealed(pi, k_start, k_now))
      else:
        z = sae.infer_code(p, x, act, k, apply_b_dec_to_input=not transcoder)
      metrics["threshold"] = p["threshold"]
    elif act == "jumprelu":
      theta = jnp.exp(p["log_threshold"])
      z = sae.jumprelu(pi, theta, hp["jumprelu_bandwidth"])
      l0_penalty = jnp.mean(jnp.sum(sae.step(pi, theta, hp["jumprelu_bandwidth"]), axis=-1))
      penalty = hp["l0_coefficient"] * warm * l0_penalty
      metrics["l0_penalty"] = l0_penalty
    else:
      raise ValueError(f"sae.activation={act!r} is not one of {sae.activations()}")
    if z is None:
      values = jax.nn.relu(values)
      x_hat = sae.decode_sparse(p, values, idx)
      active = values > 0
      fired = jnp.zeros(pi.shape[-1], jnp.float32).at[idx.reshape(-1)].max(active.reshape(-1).astype(jnp.float32)) > 0
    else:
      x_hat = sae.decode(p, z)
      active = z > 0
      fired = jnp.any(active, axis=0)
    if s.skip_connection:
      x_hat = x_hat + sae.skip_term(p, x)
    err = ref - x_hat
    sq_error = jnp.mean(jnp.sum(jnp.square(err), axis=-1))
    loss = sq_error + penalty
    if _has_auxk(act) and train:
      dead = aux["since_fired"] >= window

      def auxk_loss():
        e_hat = sae.auxk_code(pi, dead, n_aux) @ p["W_dec"]
        return jnp.mean(jnp.sum(jnp.square(jax.lax.stop_gradient(err) - e_hat), axis=-1))

      l_aux = jax.lax.cond(jnp.any(dead), auxk_loss, lambda: jnp.zeros((), jnp.float32))
      loss = loss + hp["auxk_coefficient"] * l_aux
      metrics["auxk_loss"] = l_aux
    # Centred FVU from sums that add up over batches: sum ||x - c||^2 - n ||mean - c||^2 is the centred
    # sum of squares for any constant c; c = the first training batch's mean (or b_dec before training)
    # keeps the subtraction well conditioned when the data's mean is far from 0.
    first = aux["seen"] == 0
    center = jnp.where(first, jnp.mean(ref, axis=0) if train else p["b_dec"], aux["center"])
    center = jax.lax.stop_gradient(center)
    xc = ref - center
    metrics.update(
        loss=loss, sq_error=sq_error, recon_mse=sq_error / d,
        l0=jnp.mean(jnp.sum(active, axis=-1).astype(jnp.float32)),
        cosine_similarity=jnp.mean(_cosine(ref, x_hat)),
        stat_centered_sum=jnp.mean(xc, axis=0), stat_centered_sq=jnp.mean(jnp.sum(jnp.square(xc), axis=-1)))
    if train:
      since = jnp.where(fired, 0, jnp.minimum(aux["since_fired"] + x.shape[0], max(window, 1)))
      new_aux = {**aux, "since_fired": since.astype(jnp.int32), "center": center,
                 "seen": jnp.minimum(aux["seen"] + x.shape[0], _COUNT_CAP).astype(jnp.int32)}
      if min_positive is not None:
        old = aux["threshold"]
        ema = (1 - s.threshold_lr) * old + s.threshold_lr * min_positive
        new = jnp.where(old < 0, min_positive, ema)
        new_aux["threshold"] = jax.lax.stop_gradient(jnp.where(jnp.isfinite(min_positive), new, old))
      metrics["dead_fraction"] = jnp.mean((since >= window).astype(jnp.float32))
      metrics["_aux"] = new_aux
    else:
      metrics["stat_fired"] = fired.astype(jnp.float32)
    return loss, metrics

  return loss_fn


def _cosine(a, b, eps: float = 1e-8):
  return jnp.sum(a * b, axis=-1) / jnp.maximum(jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1), eps)


def finalize(metrics: dict) -> dict:
  """The averaged sufficient statistics of one member -> fvu, explained_variance (and held-out dead_fraction)."""
  m = dict(metrics)
  mean_c = m.pop("stat_centered_sum")
  variance = m.pop("stat_centered_sq") - jnp.sum(jnp.square(mean_c), axis=-1)
  m["fvu"] = m["sq_error"] / variance
  m["explained_variance"] = 1.0 - m["fvu"]
  if "stat_fired" in m:  # held-out: the fraction of batches a latent fired in is 0 iff it never fired
    m["dead_fraction"] = jnp.mean((m.pop("stat_fired") == 0).astype(jnp.float32), axis=-1)
  return m


def init_aux(config, net, data_shape) -> dict:
  """since_fired (m,) int32: training examples since each latent last fired; seen: examples trained on;
  center (D,) (D_out for a transcoder): the constant of the FVU statistics; threshold: BatchTopK's estimate
  (-1 = none yet)."""
  aux = {"since_fired": jnp.zeros((width(config, data_shape),), jnp.int32), "seen": jnp.zeros((), jnp.int32),
         "center": jnp.zeros((math.prod(net.output_shape),), jnp.float32)}
  if _estimates_threshold(config.sae.activation):
    aux["threshold"] = -jnp.ones((), jnp.float32)
  return aux


def update_params(config):
  """BatchTopK: the inference threshold parameter follows the running estimate (once there is one)."""
  if not _estimates_threshold(config.sae.activation):
    return None

  def update(params, aux):
    p = dict(params["params"])
    p["threshold"] = jnp.where(aux["threshold"] >= 0, aux["threshold"], p["threshold"])
    return {**params, "params": p}

  return update


def transform_grads(config):
  if config.sae.decoder_norm != "unit":
    return None

  def transform(params, grads):
    g = dict(grads["params"])
    g["W_dec"] = sae.remove_parallel_component(params["params"]["W_dec"], g["W_dec"])
    return {**grads, "params": g}

  return transform


def constrain(config):
  if config.sae.decoder_norm != "unit":
    return None

  def unit_rows(params):
    p = dict(params["params"])
    p["W_dec"] = sae.normalize_rows(p["W_dec"])
    return {**params, "params": p}

  return unit_rows


def init_sample(config, x) -> np.ndarray:
  """Up to `sae.init_sample` training inputs (N, *data_shape) as stored: a fixed random subset, rows read
  in storage order (a memory-mapped source reads only these rows)."""
  n = min(len(x), int(config.sae.init_sample))
  idx = np.sort(np.random.default_rng(INIT_SAMPLE_SEED).permutation(len(x))[:n])
  return np.asarray(x[idx])


def data_init(config, net, x):
  """b_dec = the geometric median (or mean) of a training sample, as the network sees it (normalized); for a
  transcoder (x = {'x', 'target'}, `data.inputs`), of the sample's targets, the space b_dec lives in."""
  kind = config.sae.b_dec_init
  if kind == "zeros":
    return None
  if isinstance(x, dict):
    sample = np.asarray(net.prepare_target(init_sample(config, x["target"])), np.float64)
  else:
    sample = np.asarray(net.prepare(init_sample(config, x)), np.float64)
  sample = sample.reshape(len(sample), math.prod(net.output_shape))
  b_dec = (sae.geometric_median(sample) if kind == "geometric_median" else sample.mean(axis=0)).astype(np.float32)

  def init(params):
    p = dict(params["params"])
    p["b_dec"] = jnp.asarray(b_dec)
    return {**params, "params": p}

  return init


def validate(config) -> None:
  s = config.sae
  for key, options in (("sae.activation", sae.activations()), ("sae.b_dec_init", B_DEC_INITS),
                       ("sae.decoder_norm", DECODER_NORMS)):
    if validation.get(config, key) not in options:
      raise validation.ConfigError(f"{key}={validation.get(config, key)!r} is not one of {', '.join(map(repr, options))}")
  for key in ("model.expansion", "sae.k", "sae.dead_window", "sae.init_sample"):
    validation.positive_int(config, key)
  validation.positive_int(config, "sae.k_aux", zero_ok=True)
  for key in ("sae.jumprelu_bandwidth", "sae.jumprelu_init_threshold", "sae.decoder_init_norm"):
    value = validation.get(config, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
      raise validation.ConfigError(f"{key}={value!r} must be a positive number")
  if config.loss.reconstruction != "mse":
    raise validation.ConfigError(f"loss.reconstruction={config.loss.reconstruction!r}: variant 'sae' reconstructs with "
                              f"squared error (loss.reconstruction='mse')")
  if isinstance(s.threshold_lr, bool) or not isinstance(s.threshold_lr, (int, float)) or not 0 < s.threshold_lr <= 1:
    raise validation.ConfigError(f"sae.threshold_lr={s.threshold_lr!r} must be in (0, 1]")
  validation.positive_int(config, "sae.context_size", zero_ok=True)
  if s.hook_name:  # checked before training, not only at export (jaxae.export.check_hook_name)
    from jaxae import export

    try:
      export.check_hook_name(s.hook_name, "sae.hook_name")
    except export.ExportError as e:
      raise validation.ConfigError(str(e)) from None
  for arch in sae_archs.ARCHITECTURES.values():
    arch.validate(config)
  if not isinstance(s.skip_connection, bool):
    raise validation.ConfigError(f"sae.skip_connection={s.skip_connection!r} must be True or False")
  if s.skip_connection and not config.data.get("target_source", ""):
    raise validation.ConfigError("sae.skip_connection=True is a skip transcoder's: it needs data.target_source "
                                 "(the targets the inputs are mapped to)")
  if config.data.get("target_source", "") and sae_archs.get(s.activation) is not None:
    raise validation.ConfigError(f"sae.activation={s.activation!r} is an SAE architecture; transcoders "
                                 f"(data.target_source) take 'relu', 'topk', 'batchtopk' or 'jumprelu'")
  _validate_schedules(config)


def _validate_schedules(config) -> None:
  """The schedules of jaxae/sae_schedules.py: whole step counts, each set only where it acts."""
  s = config.sae
  for key in ("sae.sparsity_warmup_steps", "sae.k_anneal_steps", "sae.k_start"):
    value = validation.get(config, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != int(value):
      raise validation.ConfigError(f"{key}={value!r} must be a whole number >= 0")
  topk = s.activation in ("topk", "batchtopk")
  if s.sparsity_warmup_steps and s.activation not in ("relu", "jumprelu", "gated"):
    raise validation.ConfigError(f"sae.sparsity_warmup_steps={s.sparsity_warmup_steps} warms up the L1 (relu, gated) "
                                 f"or L0 (jumprelu) coefficient; sae.activation={s.activation!r} has none (k "
                                 f"annealing: sae.k_start, sae.k_anneal_steps)")
  if (s.k_start or s.k_anneal_steps) and not topk:
    raise validation.ConfigError(f"sae.k_start / sae.k_anneal_steps anneal the k of 'topk' and 'batchtopk', not "
                                 f"sae.activation={s.activation!r}")
  if s.k_start and s.k_start < s.k:
    raise validation.ConfigError(f"sae.k_start={s.k_start} must be at least sae.k={s.k} (k anneals down from it)")
  if s.k_anneal_steps and s.k_start <= s.k:
    raise validation.ConfigError(f"sae.k_anneal_steps={s.k_anneal_steps} needs sae.k_start > sae.k={s.k}, the k it "
                                 f"starts from")


def check_data(config, data) -> None:
  shape = data.train.x.shape[1:]
  m = width(config, shape)
  for key in ("k", "k_start"):
    if config.sae.activation in ("topk", "batchtopk") and config.sae[key] > m:
      raise data_lib.DataError(f"sae.{key}={config.sae[key]} is larger than the {m} latents (model.expansion="
                               f"{config.model.expansion} x D={math.prod(shape)})")
  arch = sae_archs.get(config.sae.activation)
  if arch is not None:
    arch.check(config, m)


VARIANT = base.register(base.Variant(
    name="sae", make_loss=make_loss, network=network, validate=validate, check_data=check_data,
    transform_grads=transform_grads, constrain=constrain, init_aux=init_aux, finalize=finalize,
    data_init=data_init, update_params=update_params, headline="fvu", targets=True,
    hparams={"l1_coefficient": "sae.l1_coefficient", "l0_coefficient": "sae.l0_coefficient",
             "auxk_coefficient": "sae.auxk_coefficient", "jumprelu_bandwidth": "sae.jumprelu_bandwidth",
             "sparsity_warmup_steps": "sae.sparsity_warmup_steps", "k_anneal_steps": "sae.k_anneal_steps"},
    options={"model.expansion": 8, "sae.activation": "topk", "sae.k": 32, "sae.k_aux": 0,
             "sae.auxk_coefficient": 1 / 32, "sae.l1_coefficient": 5.0, "sae.l0_coefficient": 1.0,
             "sae.jumprelu_bandwidth": 0.05, "sae.jumprelu_init_threshold": 0.01, "sae.threshold_lr": 0.01,
             "sae.dead_window": 100_000, "sae.b_dec_init": "geometric_median", "sae.init_sample": 4096,
             "sae.decoder_norm": "unit", "sae.decoder_init_norm": 0.1, "sae.sparsity_warmup_steps": 0,
             "sae.k_start": 0, "sae.k_anneal_steps": 0,
             # where the SAE goes in a model, written into the SAELens export (jaxae.export; '' / 0 = unset)
             "sae.hook_name": "", "sae.model_name": "", "sae.dataset_path": "", "sae.context_size": 0,
             "sae.prepend_bos": True, "sae.skip_connection": False, **sae_archs.options()},
    description="sparse autoencoder for interpretability: relu+L1, topk+AuxK, batchtopk, jumprelu, gated, "
                "matryoshka_batchtopk; transcoders"))
