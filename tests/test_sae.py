"""Sparse autoencoders (variant 'sae'): activations, straight-through gradients, the decoder constraint,
b_dec's initialization, the input scaling, centred FVU and the other metrics against NumPy, dead-latent
counters and AuxK, the BatchTopK threshold, recovery of known features, the sweep from the command line,
and the SAELens export read back with safetensors."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, run_main
from jaxae import analysis, configs, export, load, sae, train
from jaxae import data as data_lib
from jaxae.sources.base import Split
from jaxae.variants import sae as sae_variant


def sae_config(activation="topk", num_seeds=2, expansion=4, batch_size=32, epochs=1, **values):
  """configs/sae.py shrunk for tests (also test_sae_archs', test_sae_transcoder's); values are dotted keys
  with '__' for '.' (sae__k=4), set last."""
  import importlib.util

  spec = importlib.util.spec_from_file_location("sae_cfg", ROOT / "configs" / "sae.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.num_seeds = num_seeds
  config.sae.activation = activation
  config.sae.k = 2
  config.model.expansion = expansion
  config.train.batch_size = batch_size
  config.train.epochs = epochs
  config.train.progress = False
  config.train.figures = False
  for key, value in values.items():
    section, leaf = key.split("__")
    config[section][leaf] = value
  configs.validate(config)
  return config


def np_code(p, x, activation, k, batch_topk_k=None):
  """The code z of an SAE in NumPy, written from the papers' definitions (independent of jaxae.sae)."""
  pi = (x - p["b_dec"]) @ p["W_enc"] + p["b_enc"]
  if activation == "relu":
    return np.maximum(pi, 0)
  if activation == "topk":
    z = np.zeros_like(pi)
    idx = np.argsort(-pi, axis=1)[:, :k]
    np.put_along_axis(z, idx, np.maximum(np.take_along_axis(pi, idx, 1), 0), 1)
    return z
  if activation == "batchtopk" and batch_topk_k is not None:  # training: the k * B largest of ReLU(pi)
    a = np.maximum(pi, 0)
    cut = np.sort(a.ravel())[::-1][batch_topk_k * len(x) - 1]
    return np.where(a >= cut, a, 0)
  if activation == "batchtopk":
    return np.maximum(pi, 0) * (pi > p["threshold"])
  return pi * (pi > np.exp(p["log_threshold"]))


def random_params(rng, d=6, m=10, activation="topk"):
  p = {"W_enc": rng.standard_normal((d, m)).astype(np.float32), "b_enc": rng.standard_normal(m).astype(np.float32) * 0.1,
       "W_dec": rng.standard_normal((m, d)).astype(np.float32), "b_dec": rng.standard_normal(d).astype(np.float32)}
  if activation == "jumprelu":
    p["log_threshold"] = np.log(rng.uniform(0.1, 1.0, m)).astype(np.float32)
  if activation == "batchtopk":
    p["threshold"] = np.float32(0.4)
  return p


# --- activations and gradients ----------------------------------------------------------------------

@pytest.mark.parametrize("activation", sae.ACTIVATIONS)
def test_inference_code_matches_numpy(activation):
  rng = np.random.default_rng(0)
  p = random_params(rng, activation=activation)
  x = rng.standard_normal((7, 6)).astype(np.float32)
  z = np.asarray(sae.infer_code({k: jnp.asarray(v) for k, v in p.items()}, jnp.asarray(x), activation, 3))
  np.testing.assert_allclose(z, np_code(p, x, activation, 3), rtol=1e-5, atol=1e-6)
  if activation == "topk":
    assert np.all(np.sum(z > 0, axis=1) <= 3)


def test_batch_topk_keeps_the_k_times_batch_largest_and_reports_the_smallest():
  rng = np.random.default_rng(1)
  p = random_params(rng, d=5, m=12)
  x = rng.standard_normal((9, 5)).astype(np.float32)
  pi = sae.pre_activation({k: jnp.asarray(v) for k, v in p.items()}, jnp.asarray(x))
  z, smallest = sae.batch_topk(pi, 2)
  z = np.asarray(z)
  np.testing.assert_allclose(z, np_code(p, x, "batchtopk", 2, batch_topk_k=2), rtol=1e-6)
  assert np.sum(z > 0) == 18  # k * B, variable per example
  assert np.isclose(float(smallest), z[z > 0].min())


def test_auxk_code_uses_only_dead_latents():
  pi = jnp.asarray([[3.0, -1.0, 2.0, 0.5, 1.0], [0.1, 4.0, -2.0, 0.3, 0.2]])
  dead = jnp.asarray([False, True, True, True, False])
  z = np.asarray(sae.auxk_code(pi, dead, 2))
  np.testing.assert_allclose(z, [[0, 0, 2.0, 0.5, 0], [0, 4.0, 0, 0.3, 0]])
  # fewer dead latents than k_aux: the rest stay 0
  np.testing.assert_allclose(np.asarray(sae.auxk_code(pi, jnp.asarray([1, 0, 0, 0, 0], bool), 3)),
                             [[3.0, 0, 0, 0, 0], [0.1, 0, 0, 0, 0]])


def test_jumprelu_and_step_pseudo_derivatives_match_the_rectangle_kernel_formulas():
  """Rajamanoharan et al. 2024, eq. 11 and the Heaviside pseudo-derivative, written out in NumPy."""
  rng = np.random.default_rng(2)
  theta = np.asarray([0.3, 0.5, 0.8], np.float32)
  eps = np.float32(0.2)
  pi = (theta + rng.uniform(-0.25, 0.25, (50, 3))).astype(np.float32)  # about 4 in 5 inside the kernel's window
  w = rng.standard_normal((50, 3)).astype(np.float32)
  kernel = (np.abs((pi - theta) / eps) < 0.5).astype(np.float32)
  assert 0 < kernel.mean() < 1
  g_pi, g_theta = jax.grad(lambda a, t: jnp.sum(w * sae.jumprelu(a, t, eps)), argnums=(0, 1))(pi, theta)
  np.testing.assert_allclose(g_pi, w * (pi > theta), rtol=1e-6)
  np.testing.assert_allclose(g_theta, np.sum(-(theta / eps) * kernel * w, axis=0), rtol=1e-5)
  g_pi, g_theta = jax.grad(lambda a, t: jnp.sum(w * sae.step(a, t, eps)), argnums=(0, 1))(pi, theta)
  np.testing.assert_array_equal(g_pi, 0)
  np.testing.assert_allclose(g_theta, np.sum(-(1 / eps) * kernel * w, axis=0), rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(sae.step(pi, theta, eps)), pi > theta)


# --- network, hooks, initialization ------------------------------------------------------------------

def test_decoder_gradient_projection_and_unit_rows():
  rng = np.random.default_rng(3)
  w = np.asarray(sae.normalize_rows(jnp.asarray(rng.standard_normal((8, 5)))))
  np.testing.assert_allclose(np.linalg.norm(w, axis=1), 1, rtol=1e-6)
  g = rng.standard_normal((8, 5))
  h = np.asarray(sae.remove_parallel_component(jnp.asarray(w), jnp.asarray(g)))
  np.testing.assert_allclose(np.sum(h * w, axis=1), 0, atol=1e-6)  # nothing left along the rows
  np.testing.assert_allclose(h, g - np.einsum("md,md->m", g, w)[:, None] * w, atol=1e-6)


def test_geometric_median_is_the_minimizer():
  rng = np.random.default_rng(4)
  x = np.concatenate([rng.standard_normal((200, 3)), rng.standard_normal((20, 3)) + 50])  # outliers pull the mean
  m = sae.geometric_median(x)
  # optimality: the gradient of sum_i ||x_i - m|| (a sum of unit vectors) vanishes ...
  u = (x - m) / np.linalg.norm(x - m, axis=1, keepdims=True)
  assert np.linalg.norm(u.sum(axis=0)) < 1e-3 * len(x)
  # ... and scipy's general minimizer agrees
  from scipy.optimize import minimize
  ref = minimize(lambda c: np.linalg.norm(x - c, axis=1).sum(), x.mean(axis=0), method="Nelder-Mead",
                 options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 20000}).x
  np.testing.assert_allclose(m, ref, atol=1e-3)
  assert np.linalg.norm(m) < 1 < np.linalg.norm(x.mean(axis=0))


@pytest.mark.parametrize("b_dec_init", ["geometric_median", "mean"])
def test_initialization_and_constraint_in_the_program(b_dec_init):
  rng = np.random.default_rng(5)
  x = (rng.standard_normal((96, 6)) * 3 + 2).astype(np.float32)
  config = sae_config("topk", sae__b_dec_init=b_dec_init, sae__init_sample=64)
  normalizer = data_lib.Normalizer("unit_mean_square").fit(Split(x))
  program = train.build(config, (6,), len(x), normalizer=normalizer, train_x=x)
  state = program.init_state()
  p = jax.tree.map(np.asarray, state.params)["params"]
  assert p["W_dec"].shape == (2, 24, 6) and p["W_enc"].shape == (2, 6, 24)
  np.testing.assert_allclose(p["W_enc"], np.swapaxes(p["W_dec"], 1, 2), atol=1e-6)  # W_enc = W_dec^T
  np.testing.assert_allclose(np.linalg.norm(p["W_dec"], axis=2), 1, rtol=1e-5)
  assert not np.allclose(p["W_dec"][0], p["W_dec"][1])  # seeds differ
  sample = normalizer.apply(x[np.sort(np.random.default_rng(0).permutation(96)[:64])]).astype(np.float64)
  expected = sae.geometric_median(sample) if b_dec_init == "geometric_median" else sample.mean(axis=0)
  np.testing.assert_allclose(p["b_dec"][0], expected, rtol=1e-5, atol=1e-6)
  state, _ = train.run_epoch(program, state, jnp.asarray(x), jnp.zeros(96, jnp.int32))
  w = np.asarray(state.params["params"]["W_dec"])
  np.testing.assert_allclose(np.linalg.norm(w, axis=2), 1, rtol=1e-5)  # kept at unit norm by every step


def test_free_decoder_keeps_its_init_norm_and_is_penalized_by_it():
  config = sae_config("relu", sae__decoder_norm="free", sae__decoder_init_norm=0.1)
  net = sae_variant.network(config, (4,))
  p = net.init(jax.random.key(0), jnp.zeros((1, 4)))["params"]
  np.testing.assert_allclose(np.linalg.norm(np.asarray(p["W_dec"]), axis=1), 0.1, rtol=1e-5)
  assert sae_variant.constrain(config) is None and sae_variant.transform_grads(config) is None
  x = jnp.asarray(np.random.default_rng(0).standard_normal((5, 4)), jnp.float32)
  aux = sae_variant.init_aux(config, net, (4,))
  hp = {"l1_coefficient": jnp.float32(2.0), "l0_coefficient": 0.0, "auxk_coefficient": 0.0, "jumprelu_bandwidth": 0.05}
  _, m = sae_variant.make_loss(config, net)({"params": p}, hp, {"x": x, "aux": aux}, None, True)
  z = np.maximum((np.asarray(x) - p["b_dec"]) @ p["W_enc"] + p["b_enc"], 0)
  np.testing.assert_allclose(m["l1"], np.mean(np.sum(z * np.linalg.norm(p["W_dec"], axis=1), 1)), rtol=1e-5)


def test_unit_mean_square_normalizer(tmp_path):
  rng = np.random.default_rng(6)
  x = (rng.standard_normal((300, 7)) * 5 + 3).astype(np.float32)
  n = data_lib.Normalizer("unit_mean_square").fit(Split(x))
  scaled = n.apply(x)
  assert np.isclose(np.mean(np.sum(scaled.astype(np.float64) ** 2, axis=1)), 7, rtol=1e-5)
  np.testing.assert_allclose(scaled, x / np.sqrt(np.mean(np.sum(x.astype(np.float64) ** 2, 1)) / 7), rtol=1e-5)
  assert np.all(n.scale == n.scale[0]) and np.all(n.offset == 0)  # one scalar: directions unchanged
  again = data_lib.Normalizer.from_json(n.to_json())
  np.testing.assert_array_equal(again.apply(x), scaled)
  for i, part in enumerate(np.array_split(x, 3)):  # memory-mapped shards give the same scale
    np.save(tmp_path / f"s{i}.npy", part)
  lazy = data_lib.load_source(f"npy:{tmp_path}/*.npy")
  np.testing.assert_allclose(data_lib.Normalizer("unit_mean_square").fit(lazy).scale, n.scale, rtol=1e-6)


# --- metrics against NumPy -----------------------------------------------------------------------

def test_fvu_l0_cosine_and_dead_fraction_against_numpy():
  """Held-out metrics from the program's batched sums equal NumPy's on the whole set: centred FVU (a
  data mean far from 0, an eval batch that does not divide the set), L0, cos(x, x_hat), dead latents;
  with lr=0 the training metrics of an epoch equal NumPy's over all training examples."""
  rng = np.random.default_rng(7)
  x = (rng.standard_normal((128, 8)) + 40).astype(np.float32)  # mean >> spread
  xe = (rng.standard_normal((70, 8)) + 40).astype(np.float32)
  config = sae_config("topk", optimizer__learning_rate=0.0, train__eval_batch_size=32, sae__k=3, sae__dead_window=64,
                      model__expansion=16)
  program = train.build(config, (8,), len(x), train_x=x)
  state = program.init_state()
  state, _ = train.run_epoch(program, state, jnp.asarray(x), jnp.zeros(128, jnp.int32))
  state, means = train.take_epoch_metrics(program, state)
  ev = {k: np.asarray(v) for k, v in program.evaluate(state, jnp.asarray(xe), jnp.zeros(70, jnp.int32)).items()}
  for i in range(2):
    p = jax.tree.map(lambda a: np.asarray(a[i], np.float64), state.params)["params"]
    for data, metrics in ((xe, ev), (x, means)):
      z = np_code(p, data.astype(np.float64), "topk", 3)
      x_hat = z @ p["W_dec"] + p["b_dec"]
      fvu = np.sum((data - x_hat) ** 2) / np.sum((data - data.mean(0)) ** 2)
      np.testing.assert_allclose(metrics["fvu"][i], fvu, rtol=2e-3)
      np.testing.assert_allclose(metrics["explained_variance"][i], 1 - fvu, rtol=2e-3, atol=1e-5)
      np.testing.assert_allclose(metrics["l0"][i], np.mean(np.sum(z > 0, 1)), rtol=1e-6)
      cos = np.sum(data * x_hat, 1) / np.linalg.norm(data, axis=1) / np.linalg.norm(x_hat, axis=1)
      np.testing.assert_allclose(metrics["cosine_similarity"][i], cos.mean(), rtol=1e-5)
    z = np_code(p, xe.astype(np.float64), "topk", 3)
    np.testing.assert_allclose(ev["dead_fraction"][i], np.mean(~np.any(z > 0, axis=0)), rtol=1e-6)
  assert 0 < ev["dead_fraction"].min()  # k=3 of 128 latents on 70 examples: some never fire


def test_dead_counters_auxk_loss_and_batchtopk_threshold():
  rng = np.random.default_rng(8)
  config = sae_config("batchtopk", sae__k=2, sae__dead_window=10, sae__k_aux=3, sae__threshold_lr=0.25)
  net = sae_variant.network(config, (4,))
  params = net.init(jax.random.key(1), jnp.zeros((1, 4)))
  p = jax.tree.map(np.asarray, params)["params"]
  loss_fn = sae_variant.make_loss(config, net)
  hp = {"l1_coefficient": 0.0, "l0_coefficient": 0.0, "auxk_coefficient": jnp.float32(0.5), "jumprelu_bandwidth": 0.05}
  aux = sae_variant.init_aux(config, net, (4,))
  since = np.asarray([0, 12, 3, 10, 9, 0, 10, 0, 0, 0, 0, 11, 0, 0, 0, 0], np.int32)  # m = 16; >= 10 is dead
  aux = {**aux, "since_fired": jnp.asarray(since)}
  x = rng.standard_normal((6, 4)).astype(np.float32)
  loss, m = loss_fn(params, hp, {"x": jnp.asarray(x), "aux": aux}, None, True)
  z = np_code(p, x, "batchtopk", 2, batch_topk_k=2)
  err = x - (z @ p["W_dec"] + p["b_dec"])
  pi = (x - p["b_dec"]) @ p["W_enc"] + p["b_enc"]
  dead = since >= 10
  z_aux = np.zeros_like(pi)
  for r in range(6):
    top = np.argsort(-np.where(dead, pi[r], -np.inf))[:3]
    z_aux[r, top] = np.maximum(pi[r, top], 0)
  auxk = np.mean(np.sum((err - z_aux @ p["W_dec"]) ** 2, 1))
  np.testing.assert_allclose(m["auxk_loss"], auxk, rtol=1e-5)
  np.testing.assert_allclose(loss, np.mean(np.sum(err ** 2, 1)) + 0.5 * auxk, rtol=1e-5)
  fired = np.any(z > 0, axis=0)
  new = m["_aux"]
  np.testing.assert_array_equal(new["since_fired"], np.where(fired, 0, np.minimum(since + 6, 10)))
  np.testing.assert_allclose(m["dead_fraction"], np.mean(np.where(fired, 0, np.minimum(since + 6, 10)) >= 10))
  first = z[z > 0].min()
  np.testing.assert_allclose(new["threshold"], first, rtol=1e-6)  # the first batch sets the estimate ...
  _, m2 = loss_fn(params, hp, {"x": jnp.asarray(x[:3]), "aux": new}, None, True)
  second = np_code(p, x[:3], "batchtopk", 2, batch_topk_k=2)
  np.testing.assert_allclose(m2["_aux"]["threshold"], 0.75 * first + 0.25 * second[second > 0].min(), rtol=1e-6)  # ... then EMA
  updated = sae_variant.update_params(config)(params, m2["_aux"])  # inference uses it
  np.testing.assert_allclose(updated["params"]["threshold"], m2["_aux"]["threshold"])


def test_auxk_gradient_reaches_only_dead_latents_and_matches_the_hand_formula():
  """The gradient of alpha L_aux (Gao et al. 2024, A.2; e = x - x_hat has no gradient) written out in NumPy:
  with r = e - W_dec^T z_aux, g_v = -2 alpha / B (r . W_dec,j) on the kept positive aux entries, it is
  dW_enc[:, j] = sum_b g_v (x_b - b_dec), db_enc[j] = sum_b g_v, dW_dec[j] = -2 alpha / B sum_b z_aux r_b,
  db_dec = -W_enc g_v; live latents' rows get none of it (the main loss alone trains them)."""
  rng = np.random.default_rng(3)
  config = sae_config("topk", sae__k=2, sae__dead_window=10, sae__k_aux=3)
  net = sae_variant.network(config, (5,))
  params = net.init(jax.random.key(2), jnp.zeros((1, 5)))
  p = {k: np.asarray(v, np.float64) for k, v in params["params"].items()}
  loss_fn = sae_variant.make_loss(config, net)
  aux = sae_variant.init_aux(config, net, (5,))
  since = np.zeros(20, np.int32)
  since[[1, 4, 7, 8, 12, 13, 19]] = 10  # dead
  aux = {**aux, "since_fired": jnp.asarray(since)}
  x = rng.standard_normal((7, 5)).astype(np.float32)

  def grads(alpha):
    hp = {"l1_coefficient": 0.0, "l0_coefficient": 0.0, "auxk_coefficient": jnp.float32(alpha), "jumprelu_bandwidth": 0.05}
    f = lambda prm: loss_fn(prm, hp, {"x": jnp.asarray(x), "aux": aux}, None, True)[0]
    return jax.tree.map(lambda a: np.asarray(a, np.float64), jax.grad(f)(params)["params"])

  alpha = 0.5
  with_aux, without = grads(alpha), grads(0.0)
  g = {k: with_aux[k] - without[k] for k in with_aux}
  z = np_code(p, x, "topk", 2)
  e = x - (z @ p["W_dec"] + p["b_dec"])
  pi = (x - p["b_dec"]) @ p["W_enc"] + p["b_enc"]
  dead = since >= 10
  z_aux = np.zeros_like(pi)
  for r in range(len(x)):
    top = np.argsort(-np.where(dead, pi[r], -np.inf))[:3]
    z_aux[r, top] = np.maximum(pi[r, top], 0)
  assert (z_aux > 0).sum() >= 5  # enough positive aux entries for the test to mean something
  res = e - z_aux @ p["W_dec"]
  g_v = -2 * alpha / len(x) * (res @ p["W_dec"].T) * (z_aux > 0)
  np.testing.assert_allclose(g["W_enc"], (x - p["b_dec"]).T @ g_v, atol=1e-5)
  np.testing.assert_allclose(g["b_enc"], g_v.sum(0), atol=1e-5)
  np.testing.assert_allclose(g["b_dec"], -p["W_enc"] @ g_v.sum(0), atol=1e-5)
  np.testing.assert_allclose(g["W_dec"], -2 * alpha / len(x) * z_aux.T @ res, atol=1e-5)
  assert np.all(g["W_enc"][:, ~dead] == 0) and np.all(g["W_dec"][~dead] == 0) and np.all(g["b_enc"][~dead] == 0)


def test_recovers_known_features_far_better_than_a_random_dictionary():
  """Sharkey et al. 2022's check on a small instance: 32 features in 16 dimensions, 2 per example."""
  x, directions = sae.synthetic_features(8192, 16, 32, 2.0, seed=0)
  config = sae_config("topk", sae__k=2, model__expansion=2, train__batch_size=128, train__epochs=12,
                      sae__dead_window=4096)
  normalizer = data_lib.Normalizer("unit_mean_square").fit(Split(x))
  program = train.build(config, (16,), len(x), normalizer=normalizer, train_x=x)
  state = program.init_state()
  xs, ys = jnp.asarray(x), jnp.zeros(len(x), jnp.int32)
  for _ in range(config.train.epochs):
    state, _ = train.run_epoch(program, state, xs, ys)
  w = np.asarray(state.params["params"]["W_dec"])
  recovery = [sae.max_cosine_recovery(directions, w[i]).mean() for i in range(2)]
  rng = np.random.default_rng(12345)  # not the generator of the true directions
  random = [sae.max_cosine_recovery(directions, rng.standard_normal((32, 16))).mean() for _ in range(20)]
  assert max(random) < 0.6 and min(recovery) > max(random) + 0.3, (recovery, max(random))


# --- command line: the sweep, its frontier figure, bad input, and the SAELens export ----------------

def saelens_forward(folder, x):
  """SAELens's inference forward pass (sae_lens/saes/{standard,topk,jumprelu}_sae.py, v6.18) on
  sae_weights.safetensors + cfg.json read back with safetensors: (z, x_hat)."""
  from safetensors.numpy import load_file

  cfg = json.load(open(os.path.join(folder, "cfg.json")))
  w = load_file(os.path.join(folder, "sae_weights.safetensors"))
  pre = (x - w["b_dec"] * cfg["apply_b_dec_to_input"]) @ w["W_enc"] + w["b_enc"]
  if cfg["architecture"] == "standard":
    z = np.maximum(pre, 0)
  elif cfg["architecture"] == "topk":
    z = np.zeros_like(pre)
    idx = np.argsort(-pre, axis=1)[:, :cfg["k"]]
    np.put_along_axis(z, idx, np.maximum(np.take_along_axis(pre, idx, 1), 0), 1)
  else:  # jumprelu: ReLU(pre) * (pre > threshold)
    z = np.maximum(pre, 0) * (pre > w["threshold"])
  return z, z @ w["W_dec"] + w["b_dec"], cfg, w


def test_sweep_over_k_writes_the_frontier_and_exports_to_saelens(tmp_path, monkeypatch, capsys):
  rng = np.random.default_rng(9)
  x, _ = sae.synthetic_features(640, 12, 24, 2.0, seed=3)
  x = x * 4 + rng.standard_normal(12).astype(np.float32)  # an offset, so folding b_dec matters
  (tmp_path / "acts").mkdir()
  for i, part in enumerate(np.array_split(x, 2)):
    np.save(tmp_path / "acts" / f"{i:03d}.npy", part)
  wd = tmp_path / "runs"
  args = ["--config=configs/sae.py", f"--config.data.source=npy:{tmp_path}/acts/*.npy", f"--workdir={wd}",
          '--config.sweep={"sae.k": [2, 4]}', "--config.num_seeds=2", "--config.model.expansion=2",
          "--config.train.epochs=2", "--config.train.batch_size=64", "--config.train.progress=False"]
  rc, out, err = run_main(monkeypatch, capsys, *args)
  assert rc == 0, err
  assert (wd / "figures" / "frontier_l0_fvu.png").stat().st_size > 0
  sweep = json.loads((wd / "sweep_summary.json").read_text())["groups"]
  assert [s["settings"][0]["eval"]["l0"]["mean"] for s in sweep.values()] == [2.0, 4.0]
  assert export.main([f"--workdir={wd}", "--format=saelens"]) == 0
  data = data_lib.load(configs.from_dict(json.loads((wd / "groups" / "sae.k=2" / "config.json").read_text())).data)
  held = np.asarray(data.eval.x)
  for group, k in (("sae.k=2", 2), ("sae.k=4", 4)):
    run = load.load_run(str(wd), group=group)
    for i, member in enumerate(run.members):
      folder = wd / "export" / "saelens" / group / f"seed{member['seed']}"
      z, x_hat, cfg, w = saelens_forward(folder, held)
      assert cfg["architecture"] == "topk" and cfg["k"] == k and cfg["d_in"] == 12 and cfg["d_sae"] == 24
      assert cfg["normalize_activations"] == "none" and w["W_enc"].shape == (12, 24) and w["W_dec"].shape == (24, 12)
      params = jax.tree.map(lambda a: a[i], run.params)
      scale = float(run.model.normalizer.scale[0])  # the folded arrays: W_enc / c, W_dec * c, b_dec * c
      p = params["params"]
      np.testing.assert_allclose(w["W_enc"], np.asarray(p["W_enc"]) / scale, rtol=1e-6)
      np.testing.assert_allclose(w["W_dec"], np.asarray(p["W_dec"]) * scale, rtol=1e-6)
      np.testing.assert_allclose(w["b_dec"], np.asarray(p["b_dec"]) * scale, rtol=1e-6)
      np.testing.assert_array_equal(w["b_enc"], np.asarray(p["b_enc"]))
      ours = analysis.encode(run.model, params, held, run.config)
      np.testing.assert_allclose(z, ours, rtol=1e-4, atol=1e-4)  # same codes from raw activations
      recon = analysis.reconstruct(run.model, params, held, run.config) * scale  # back to raw units
      np.testing.assert_allclose(x_hat, recon, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("activation", ["relu", "batchtopk", "jumprelu"])
def test_saelens_arrays_of_every_activation_reproduce_the_codes(activation, tmp_path):
  """Folding a per-feature normalizer and the threshold conventions: the exported SAE on raw inputs gives
  the codes jaxae's SAE gives on normalized inputs."""
  rng = np.random.default_rng(10)
  p = random_params(rng, d=5, m=9, activation=activation)
  x = (rng.standard_normal((20, 5)) * 3 + 1).astype(np.float32)
  normalizer = data_lib.Normalizer("standardize").fit(Split(x))
  folded = export.fold_normalizer(p, normalizer, (5,))
  state = export.saelens_state(folded, activation)
  from safetensors.numpy import save_file
  (tmp_path / "m").mkdir()
  save_file(state, str(tmp_path / "m" / "sae_weights.safetensors"))
  config = sae_config(activation)
  (tmp_path / "m" / "cfg.json").write_text(json.dumps(export.saelens_cfg(config, 5, 9, {})))
  z, x_hat, cfg, _ = saelens_forward(tmp_path / "m", x)
  assert cfg["architecture"] == export.ARCHITECTURES[activation]
  xn = normalizer.apply(x)
  z_ref = np_code(p, xn, activation, 2)
  np.testing.assert_allclose(z, z_ref, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(x_hat, (z_ref @ p["W_dec"] + p["b_dec"]) * normalizer.scale + normalizer.offset,
                             rtol=1e-4, atol=1e-4)


def test_bad_sae_settings_are_one_line_errors(tmp_path, monkeypatch, capsys):
  np.save(tmp_path / "a.npy", np.ones((50, 4), np.float32))
  base = ["--config=configs/sae.py", f"--config.data.source=npy:{tmp_path}/a.npy", f"--workdir={tmp_path}/w"]
  rc, _, err = run_main(monkeypatch, capsys, *base, "--config.sae.k=64", "--config.model.expansion=2")
  assert rc == 2 and "sae.k=64 is larger than the 8 latents" in err and not (tmp_path / "w").exists()
  with pytest.raises(configs.ConfigError, match="sae.activation='gatd' is not one of"):
    sae_config("gatd")
  assert export.main([f"--workdir={tmp_path}/nothing"]) == 2


def test_export_of_a_run_that_is_not_an_sae_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
  x, _ = sae.synthetic_features(256, 6, 12, 2.0, seed=1)
  np.save(tmp_path / "acts.npy", x)
  wd = tmp_path / "run"
  rc, _, err = run_main(monkeypatch, capsys, "--config=configs/vanilla.py", f"--config.data.source=npy:{tmp_path}/acts.npy",
                        f"--workdir={wd}", "--config.num_seeds=1", "--config.train.epochs=1", "--config.model.hidden=(8,)",
                        "--config.model.latent_dim=3", "--config.model.output=identity", "--config.train.progress=False",
                        "--config.train.figures=False")
  assert rc == 0, err
  capsys.readouterr()
  assert export.main([f"--workdir={wd}", "--format=saelens"]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "'vanilla'" in err and "W_enc" in err, err
  assert not (wd / "export").exists()
