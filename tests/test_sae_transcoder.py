"""Transcoders (data.target_source) and skip transcoders (sae.skip_connection): metrics and loss against a
NumPy re-implementation on a synthetic pair with a known map, the skip term, rows kept paired through the
holdout, subsets, shuffles and streaming, one-line errors, and the CLI from training to export and evaluation."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import test_sae
from conftest import run_main
from jaxae import analysis, configs, evaluate, export, load, sae, stream, train
from jaxae import data as data_lib
from jaxae.sources.base import Split

D_IN, D_OUT, FEATURES = 8, 5, 12


def synthetic_pair(n: int, seed: int = 0):
  """x = c @ U and target t = c @ V + offset: the same sparse code c (each of F features present with
  probability 2/F, magnitude U(0, 1)) through a known input dictionary U (F, D_in) and output dictionary
  V (F, D_out). The dictionaries are fixed (seed 0); `seed` draws the codes."""
  rng = np.random.default_rng(0)
  u = rng.standard_normal((FEATURES, D_IN))
  v = rng.standard_normal((FEATURES, D_OUT))
  u /= np.linalg.norm(u, axis=1, keepdims=True)
  v /= np.linalg.norm(v, axis=1, keepdims=True)
  offset = rng.standard_normal(D_OUT) * 3
  rng = np.random.default_rng(seed + 1)
  c = (rng.random((n, FEATURES)) < 2 / FEATURES) * rng.random((n, FEATURES))
  return (c @ u).astype(np.float32), (c @ v + offset).astype(np.float32)


def transcoder_config(activation="relu", skip=False, **values):
  """test_sae's config as a transcoder, one seed (the target source is named, not read, here)."""
  values = {"sae__k": 3, "train__eval_batch_size": 32, "data__target_source": "npy:t.npy",
            "sae__skip_connection": skip, **values}
  return test_sae.sae_config(activation, num_seeds=1, expansion=2, **values)


def np_transcoder(p, x, activation, k):
  """(code z, pre-activations pi, reconstruction t_hat) of a transcoder in NumPy, from Dunefsky et al. 2024
  (no b_dec on the input) and Paulo et al. 2025 (+ x W_skip): independent of jaxae.sae."""
  pi = x @ p["W_enc"] + p["b_enc"]
  if activation == "relu":
    z = np.maximum(pi, 0)
  elif activation == "topk":
    z = np.zeros_like(pi)
    idx = np.argsort(-pi, axis=1)[:, :k]
    np.put_along_axis(z, idx, np.maximum(np.take_along_axis(pi, idx, 1), 0), 1)
  elif activation == "batchtopk":  # inference: the estimated global threshold
    z = np.maximum(pi, 0) * (pi > p["threshold"])
  else:
    z = pi * (pi > np.exp(p["log_threshold"]))
  t_hat = z @ p["W_dec"] + p["b_dec"] + (x @ p["W_skip"] if "W_skip" in p else 0)
  return z, pi, t_hat


@pytest.mark.parametrize("activation,skip", [("relu", True), ("topk", False), ("batchtopk", True), ("jumprelu", False)])
def test_transcoder_loss_and_fvu_match_numpy(activation, skip):
  """After an epoch of training on (x, t = c V + offset), the held-out loss, FVU, explained variance, L0,
  cosine and MSE of every member equal NumPy's on the same params, against the target scaled by its own
  statistics (standardize: per-feature mean and std of the training targets); b_dec starts at the
  targets' geometric median (output space, D_out)."""
  x, t = synthetic_pair(320)
  x, t, xe, te = x[:256], t[:256], x[256:], t[256:]
  config = transcoder_config(activation, skip, data__normalize="standardize", optimizer__learning_rate=3e-3,
                             sae__l1_coefficient=0.1, sae__l0_coefficient=0.05)
  normalizer = data_lib.Normalizer("standardize").fit(Split(x))
  target = data_lib.fit_target(Split(x, target=t), "standardize")
  mu, sd = t.astype(np.float64).mean(0), t.astype(np.float64).std(0)
  np.testing.assert_allclose(target.normalizer.offset, mu, rtol=1e-5)
  np.testing.assert_allclose(target.normalizer.scale, sd, rtol=1e-5)
  program = train.build(config, (D_IN,), len(x), normalizer=normalizer, train_x={"x": x, "target": t}, target=target)
  state = program.init_state()
  b_dec0 = np.asarray(state.params["params"]["b_dec"][0], np.float64)
  np.testing.assert_allclose(b_dec0, sae.geometric_median((t - mu) / sd), rtol=1e-4, atol=1e-5)
  state, _ = train.run_epoch(program, state, {"x": jnp.asarray(x), "target": jnp.asarray(t)}, jnp.zeros(256, jnp.int32))
  ev = {k: np.asarray(v) for k, v in
        program.evaluate(state, {"x": jnp.asarray(xe), "target": jnp.asarray(te)}, jnp.zeros(64, jnp.int32)).items()}
  xn = (xe.astype(np.float64) - x.mean(0, dtype=np.float64)) / x.std(0, dtype=np.float64)
  tn = (te.astype(np.float64) - mu) / sd
  for i in range(config.num_seeds):
    p = jax.tree.map(lambda a: np.asarray(a[i], np.float64), state.params)["params"]
    assert p["W_dec"].shape == (2 * D_IN, D_OUT) and p["b_dec"].shape == (D_OUT,)
    if skip:
      assert p["W_skip"].shape == (D_IN, D_OUT) and np.abs(p["W_skip"]).max() > 1e-4  # trained away from 0
    z, pi, t_hat = np_transcoder(p, xn, activation, 3)
    sq = np.mean(np.sum((tn - t_hat) ** 2, axis=1))
    penalty = 0.0  # held-out: no AuxK term
    if activation == "relu":
      penalty = 0.1 * np.mean(np.sum(z * np.linalg.norm(p["W_dec"], axis=1), axis=1))
    if activation == "jumprelu":
      penalty = 0.05 * np.mean(np.sum(pi > np.exp(p["log_threshold"]), axis=1))
    fvu = np.sum((tn - t_hat) ** 2) / np.sum((tn - tn.mean(0)) ** 2)
    np.testing.assert_allclose(ev["loss"][i], sq + penalty, rtol=2e-4)
    np.testing.assert_allclose(ev["recon_mse"][i], sq / D_OUT, rtol=2e-4)
    np.testing.assert_allclose(ev["fvu"][i], fvu, rtol=2e-3)
    np.testing.assert_allclose(ev["explained_variance"][i], 1 - fvu, rtol=2e-3, atol=1e-5)
    np.testing.assert_allclose(ev["l0"][i], np.mean(np.sum(z > 0, axis=1)), rtol=1e-6)
    cos = np.sum(tn * t_hat, 1) / np.linalg.norm(tn, axis=1) / np.linalg.norm(t_hat, axis=1)
    np.testing.assert_allclose(ev["cosine_similarity"][i], cos.mean(), rtol=1e-4)


def test_skip_term_is_x_at_W_skip_and_starts_at_zero():
  """SparseAutoencoder(skip_connection=True): W_skip (D_in, D_out) is zero at init, Net.skip(x) = x @ W_skip,
  and the module's output is decode(encode(x)) + x @ W_skip; a plain transcoder has no W_skip."""
  config = transcoder_config("relu", True)
  target = data_lib.Target((D_OUT,))
  net = train.build_net(config, (D_IN,), target=target)
  params = net.init(jax.random.key(0), jnp.zeros((1, D_IN)))
  assert params["params"]["W_skip"].shape == (D_IN, D_OUT) and not np.any(np.asarray(params["params"]["W_skip"]))
  rng = np.random.default_rng(3)
  w_skip = rng.standard_normal((D_IN, D_OUT)).astype(np.float32)
  params = {"params": {**params["params"], "W_skip": jnp.asarray(w_skip)}}
  x = rng.standard_normal((7, D_IN)).astype(np.float32)
  np.testing.assert_allclose(np.asarray(net.skip(params, x)), x.astype(np.float64) @ w_skip, rtol=1e-5, atol=1e-6)
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)["params"]
  out = np.asarray(net.module.apply(params, x))
  np.testing.assert_allclose(out, np_transcoder(p, x.astype(np.float64), "relu", 3)[2], rtol=1e-4, atol=1e-5)
  plain = train.build_net(transcoder_config("relu", False), (D_IN,), target=target)
  assert "W_skip" not in plain.init(jax.random.key(0), jnp.zeros((1, D_IN)))["params"]


def test_rows_stay_paired_through_subsets_shuffles_and_streaming(tmp_path):
  """The target is a column-permuted copy of its input (t_i = x_i P): the holdout, max_train / max_eval
  subsets keep t = x P row by row, and with t_hat = x W_skip, W_skip = P (codes off, lr 0) the squared
  error of every training step of two shuffled epochs, in memory and streamed, and of the held-out
  batches is 0; the same run on targets shifted by one row is not."""
  rng = np.random.default_rng(5)
  n = 200
  x = rng.standard_normal((n, D_IN)).astype(np.float32)
  x[:, 0] = np.arange(n)  # each row carries its index
  perm = rng.permutation(D_IN)[:D_OUT]
  t = x[:, perm]
  np.save(tmp_path / "x.npy", x)
  np.save(tmp_path / "t.npy", t)
  np.save(tmp_path / "t_shifted.npy", np.roll(t, 1, axis=0))
  config = transcoder_config("relu", True, optimizer__learning_rate=0.0, sae__b_dec_init="zeros",
                             data__normalize="none", data__max_train=128, data__max_eval=40)
  config.data.source, config.data.target_source = f"npy:{tmp_path}/x.npy", f"npy:{tmp_path}/t.npy"
  data = data_lib.load(config.data)
  for split in (data.train, data.eval):
    np.testing.assert_array_equal(np.asarray(split.target[np.arange(len(split))]),
                                  np.asarray(split.x[np.arange(len(split))])[:, perm])
  assert len(data.train) == 128 and len(data.eval) == 20  # 10% of 200 held out, then a subset
  other = configs.from_dict(config.to_dict())
  other.data.eval_source, other.data.eval_target_source = config.data.source, config.data.target_source
  held = data_lib.load(other.data).eval  # data.eval_target_source pairs data.eval_source (its 40-row subset)
  np.testing.assert_array_equal(np.asarray(held.target[np.arange(40)]), np.asarray(held.x[np.arange(40)])[:, perm])
  p_matrix = np.zeros((D_IN, D_OUT), np.float32)
  p_matrix[perm, np.arange(D_OUT)] = 1

  def epoch_errors(target_file):
    config.data.target_source = f"npy:{tmp_path}/{target_file}"
    data = data_lib.load(config.data)
    target = data_lib.fit_target(data.train, "none")
    program = train.build(config, (D_IN,), len(data.train), target=target)
    state = program.init_state()
    p = dict(state.params["params"])
    p.update(W_enc=jnp.zeros_like(p["W_enc"]), W_skip=jnp.broadcast_to(p_matrix, p["W_skip"].shape))
    state = state.replace(params={"params": p})
    stored = data_lib.inputs(data.train)
    y = np.zeros(len(data.train), np.int32)
    errors = []
    for epoch in range(2):  # a new permutation per epoch
      if epoch == 0:
        state, _ = train.run_epoch(program, state, jax.tree.map(jnp.asarray, stored), jnp.asarray(y))
      else:
        state, _ = stream.run_epoch(program, state, stored, y)
      state, means = train.take_epoch_metrics(program, state)
      errors.append(means["sq_error"])
    held = stream.evaluate(program, state, data_lib.inputs(data.eval), np.zeros(len(data.eval), np.int32))
    return np.concatenate(errors), np.asarray(held["sq_error"])

  train_err, held_err = epoch_errors("t.npy")
  assert np.all(train_err < 1e-10) and np.all(held_err < 1e-10)
  train_err, held_err = epoch_errors("t_shifted.npy")
  assert np.all(train_err > 1.0) and np.all(held_err > 1.0)


def test_bad_transcoder_inputs_are_one_line_errors(tmp_path, monkeypatch, capsys):
  x, t = synthetic_pair(100)
  np.save(tmp_path / "x.npy", x)
  np.save(tmp_path / "t.npy", t[:99])
  wd = tmp_path / "run"
  base = ["--config=configs/sae.py", f"--config.data.source=npy:{tmp_path}/x.npy", f"--workdir={wd}",
          "--config.train.progress=False"]
  cases = [
      ([f"--config.data.target_source=npy:{tmp_path}/t.npy"], "has 99 rows"),
      ([f"--config.data.target_source=npy:{tmp_path}/t.npy", "--config.variant=vanilla"], "reconstructs its input"),
      (["--config.sae.skip_connection=True"], "needs data.target_source"),
      ([f"--config.data.target_source=npy:{tmp_path}/t.npy", f"--config.data.eval_source=npy:{tmp_path}/x.npy"],
       "data.eval_target_source"),
      (["--config.data.target_source=nope:t"], "data.target_source='nope:t' must be one of"),
  ]
  for extra, words in cases:
    rc, _, err = run_main(monkeypatch, capsys, *base, *extra)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and words in lines[0], (extra, err)
    assert not wd.exists()


def test_cli_trains_exports_and_evaluates_a_skip_transcoder(tmp_path, monkeypatch, capsys):
  """python -m jaxae.main with data.target_source, then jaxae.export (SAELens's jumprelu_skip_transcoder,
  both normalizations folded: the exported arrays on raw x give jaxae's codes and, in the target's raw
  units, its reconstructions) and jaxae.evaluate (held-out MSE against the targets, as the run's)."""
  x, t = synthetic_pair(400, seed=2)
  x = x * 2 + 1  # an input offset: folding it into b_enc (and b_dec through W_skip) matters
  np.save(tmp_path / "x.npy", x)
  np.save(tmp_path / "t.npy", t)
  wd = tmp_path / "run"
  rc, out, err = run_main(monkeypatch, capsys, "--config=configs/sae.py", f"--config.data.source=npy:{tmp_path}/x.npy",
                          f"--config.data.target_source=npy:{tmp_path}/t.npy", f"--workdir={wd}",
                          "--config.data.normalize=standardize", "--config.sae.activation=jumprelu",
                          "--config.sae.skip_connection=True", "--config.num_seeds=1", "--config.model.expansion=2",
                          "--config.train.epochs=2", "--config.train.batch_size=60", "--config.train.progress=False",
                          "--config.train.figures=False")
  assert rc == 0, err
  summary = json.loads((wd / "summary.json").read_text())
  run_mse = summary["settings"][0]["eval"]["recon_mse"]["mean"]
  assert export.main([f"--workdir={wd}", "--format=saelens"]) == 0
  folder = wd / "export" / "saelens" / "seed0"
  cfg = json.loads((folder / "cfg.json").read_text())
  assert (cfg["architecture"], cfg["d_in"], cfg["d_out"], cfg["d_sae"]) == ("jumprelu_skip_transcoder", D_IN, D_OUT, 16)
  assert cfg["apply_b_dec_to_input"] is False and cfg["normalize_activations"] == "none" and "k" not in cfg
  from safetensors.numpy import load_file
  w = {k: v.astype(np.float64) for k, v in load_file(str(folder / "sae_weights.safetensors")).items()}
  assert w["W_skip"].shape == (D_OUT, D_IN) and w["W_dec"].shape == (16, D_OUT) and np.abs(w["W_skip"]).max() > 0
  run = load.load_run(str(wd))
  held = data_lib.load(run.config.data).eval
  xe = np.asarray(held.x[np.arange(len(held))], np.float64)
  pi = xe @ w["W_enc"] + w["b_enc"]  # SAELens's JumpReLUSkipTranscoder on raw inputs
  z = np.maximum(pi, 0) * (pi > w["threshold"])
  t_hat = z @ w["W_dec"] + w["b_dec"] + xe @ w["W_skip"].T
  params = analysis.member_params(run.params, 0)
  np.testing.assert_allclose(z, analysis.encode(run.model, params, xe.astype(np.float32), run.config), rtol=1e-4, atol=1e-5)
  tn = run.model.target.normalizer
  ours = analysis.reconstruct(run.model, params, xe.astype(np.float32), run.config) * tn.scale + tn.offset
  np.testing.assert_allclose(t_hat, ours, rtol=1e-4, atol=1e-4)
  assert evaluate.main([f"--workdir={wd}", "--no_figures", "--num_samples=0"]) == 0
  ev = json.loads((wd / "evaluation.json").read_text())["settings"][0]["eval"]
  np.testing.assert_allclose(ev["recon_mse"]["mean"], run_mse, rtol=1e-4)
  te = (np.asarray(held.target[np.arange(len(held))], np.float64) - tn.offset) / tn.scale  # normalized units
  fvu = np.sum(((t_hat - tn.offset) / tn.scale - te) ** 2) / np.sum((te - te.mean(0)) ** 2)
  np.testing.assert_allclose(ev["fvu"]["mean"], fvu, rtol=1e-3)
