"""The SAE architectures of jaxae/sae_archs/: gated SAEs (Rajamanoharan et al. 2024, eqs. 6-10) and
Matryoshka BatchTopK SAEs (Bussmann et al. 2025), their codes, losses and gradients against NumPy written
from the papers, their settings' errors, and a run of each from the command line exported to SAELens's
format and read back with a NumPy copy of SAELens's inference forward pass."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import test_sae
from conftest import run_main
from jaxae import analysis, configs, export, load, sae, sae_archs
from jaxae import data as data_lib
from jaxae.sae_archs import matryoshka
from jaxae.variants import sae as sae_variant

HP = {"l1_coefficient": np.float32(0.7), "l0_coefficient": np.float32(0.0), "auxk_coefficient": np.float32(0.5),
      "jumprelu_bandwidth": np.float32(0.05)}


def sae_config(activation, **values):
  """test_sae's config at configs/sae.py's batch size and epochs, m = 2 x D."""
  return test_sae.sae_config(activation, expansion=2, batch_size=256, epochs=30, **values)


def loss_of(config, d, p, x, train=True, since_fired=None):
  """(loss, metrics) of variant 'sae''s objective for one member's params p on x (B, D)."""
  net = sae_variant.network(config, (d,))
  aux = sae_variant.init_aux(config, net, (d,))
  if since_fired is not None:
    aux["since_fired"] = jnp.asarray(since_fired, jnp.int32)
  hp = {k: jnp.asarray(v) for k, v in HP.items()}
  return sae_variant.make_loss(config, net)({"params": p}, hp, {"x": jnp.asarray(x), "aux": aux}, None, train)


# --- gated SAEs ---------------------------------------------------------------------------------------

def gated_params(rng, d=5, m=10):
  f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
  return {"W_enc": f(d, m), "b_gate": f(m) * 0.3, "r_mag": f(m) * 0.3, "b_mag": f(m) * 0.3,
          "W_dec": f(m, d), "b_dec": f(d)}  # W_dec rows of norm != 1: the L1's decoder-norm weights matter


def np_gated(p, x, lam):
  """Rajamanoharan et al. 2024, eqs. 6-10, in float64: (z, loss, l1, aux)."""
  p = {k: np.asarray(v, np.float64) for k, v in p.items()}
  c = x - p["b_dec"]
  pi_gate = c @ p["W_enc"] + p["b_gate"]                                   # eq. 6
  w_mag = np.exp(p["r_mag"])[None, :] * p["W_enc"]                          # eq. 9: (W_mag)_ij = exp(r_mag_j) W_gate_ij
  pi_mag = c @ w_mag + p["b_mag"]                                           # eq. 7
  z = (pi_gate > 0) * np.maximum(pi_mag, 0)                                 # eq. 8
  x_hat = z @ p["W_dec"] + p["b_dec"]
  gate = np.maximum(pi_gate, 0)
  l1 = np.mean(gate @ np.linalg.norm(p["W_dec"], axis=1))
  aux = np.mean(np.sum((x - (gate @ p["W_dec"] + p["b_dec"])) ** 2, axis=1))
  return z, np.mean(np.sum((x - x_hat) ** 2, axis=1)) + lam * l1 + aux, l1, aux


def test_gated_code_and_loss_match_the_paper():
  rng = np.random.default_rng(0)
  p = gated_params(rng)
  x = rng.standard_normal((9, 5)).astype(np.float32)
  z_ref, loss_ref, l1_ref, aux_ref = np_gated(p, x.astype(np.float64), float(HP["l1_coefficient"]))
  assert 0 < np.mean(z_ref > 0) < 1
  z = np.asarray(sae.infer_code({k: jnp.asarray(v) for k, v in p.items()}, jnp.asarray(x), "gated", 2))
  np.testing.assert_allclose(z, z_ref, rtol=1e-5, atol=1e-5)
  config = sae_config("gated", model__expansion=2, sae__decoder_norm="free")
  for train in (True, False):  # no training-only terms: the held-out loss is the same objective
    loss, m = loss_of(config, 5, {k: jnp.asarray(v) for k, v in p.items()}, x, train=train)
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-5)
    np.testing.assert_allclose(m["l1"], l1_ref, rtol=1e-5)
    np.testing.assert_allclose(m["gated_aux_loss"], aux_ref, rtol=1e-5)
    np.testing.assert_allclose(m["l0"], np.mean(np.sum(z_ref > 0, axis=1)), rtol=1e-6)


def test_gated_network_has_sae_lens_parameters_and_inits_them():
  config = sae_config("gated")
  net = sae_variant.network(config, (4,))
  variables = net.init(jax.random.key(0), jnp.zeros((1, 4)))
  p = variables["params"]
  assert sorted(p) == ["W_dec", "W_enc", "b_dec", "b_gate", "b_mag", "r_mag"]  # no b_enc (SAELens's GatedSAE)
  assert p["W_enc"].shape == (4, 8) and p["W_dec"].shape == (8, 4)
  for name in ("b_gate", "r_mag", "b_mag"):
    np.testing.assert_array_equal(p[name], np.zeros(8))
  np.testing.assert_allclose(p["W_enc"], np.asarray(p["W_dec"]).T)
  x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
  z = net.module.apply(variables, jnp.asarray(x), method="encode")  # the module's inference path
  np.testing.assert_allclose(z, np_gated({k: np.asarray(v) for k, v in p.items()}, x, 0.0)[0], rtol=1e-5, atol=1e-6)


def test_gated_aux_term_trains_the_encoder_through_a_frozen_decoder():
  """d aux / d W_dec = 0 (x_hat_frozen); the gate's gradients equal the hand-derived ones, and the
  reconstruction term passes no gradient to the gate (the step 1[pi_gate > 0] has none)."""
  rng = np.random.default_rng(2)
  p = gated_params(rng, d=4, m=8)  # m = model.expansion (2) x D
  x = rng.standard_normal((8, 4)).astype(np.float32)
  config = sae_config("gated", sae__decoder_norm="free")
  jp = {k: jnp.asarray(v) for k, v in p.items()}
  g_aux = jax.grad(lambda q: loss_of(config, 4, q, x)[1]["gated_aux_loss"])(jp)
  np.testing.assert_array_equal(g_aux["W_dec"], 0)
  for name in ("r_mag", "b_mag"):
    np.testing.assert_array_equal(g_aux[name], 0)
  q = {k: np.asarray(v, np.float64) for k, v in p.items()}
  c = x - q["b_dec"]
  pi_gate = c @ q["W_enc"] + q["b_gate"]
  resid = np.maximum(pi_gate, 0) @ q["W_dec"] + q["b_dec"] - x                  # (B, D)
  g_pi = 2 * (resid @ q["W_dec"].T) * (pi_gate > 0) / len(x)                    # d aux / d pi_gate
  np.testing.assert_allclose(g_aux["b_gate"], g_pi.sum(0), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(g_aux["W_enc"], c.T @ g_pi, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(g_aux["b_dec"], -g_pi.sum(0) @ q["W_enc"].T, rtol=1e-4, atol=1e-6)  # centring only
  g_rec = jax.grad(lambda q: loss_of(config, 4, q, x)[1]["sq_error"])(jp)
  np.testing.assert_array_equal(g_rec["b_gate"], 0)
  assert np.abs(np.asarray(g_rec["b_mag"])).max() > 0 and np.abs(np.asarray(g_rec["W_dec"])).max() > 0


# --- Matryoshka BatchTopK -------------------------------------------------------------------------------

def np_batch_topk(pi, k):
  a = np.maximum(pi, 0)
  cut = np.sort(a.ravel())[::-1][k * len(pi) - 1]
  return np.where(a >= cut, a, 0)


def test_matryoshka_levels_follow_sae_lens_convention():
  assert matryoshka.levels(sae_config("matryoshka_batchtopk", sae__matryoshka_widths=(3, 7)), 12) == (3, 7, 12)
  assert matryoshka.levels(sae_config("matryoshka_batchtopk", sae__matryoshka_widths=(3, 12)), 12) == (3, 12)


@pytest.mark.parametrize("train", [True, False])
def test_matryoshka_code_and_loss_match_the_paper(train):
  """Bussmann et al. 2025, eq. 2: the sum over nested prefixes m_i of ||x - (z_{1:m_i} W_dec[1:m_i] + b_dec)||^2,
  z the BatchTopK code in training, the thresholded one held out; AuxK added in training."""
  rng = np.random.default_rng(3)
  d, m, k, b = 6, 12, 2, 7
  p = {"W_enc": rng.standard_normal((d, m)), "b_enc": rng.standard_normal(m) * 0.1,
       "W_dec": rng.standard_normal((m, d)), "b_dec": rng.standard_normal(d), "threshold": np.float64(0.8)}
  p = {key: np.asarray(v, np.float32) for key, v in p.items()}
  x = rng.standard_normal((b, d)).astype(np.float32)
  config = sae_config("matryoshka_batchtopk", sae__matryoshka_widths=(3, 7), sae__k=k, sae__decoder_norm="free",
                      sae__k_aux=2, sae__dead_window=5)
  since = np.where(np.arange(m) % 4 == 0, 10, 0)  # latents 0, 4, 8 are dead
  loss, metrics = loss_of(config, d, {key: jnp.asarray(v) for key, v in p.items()}, x, train=train, since_fired=since)
  q = {key: np.asarray(v, np.float64) for key, v in p.items()}
  xd = x.astype(np.float64)
  pi = (xd - q["b_dec"]) @ q["W_enc"] + q["b_enc"]
  z = np_batch_topk(pi, k) if train else np.maximum(pi, 0) * (pi > q["threshold"])
  errors = {w: np.mean(np.sum((xd - (z[:, :w] @ q["W_dec"][:w] + q["b_dec"])) ** 2, axis=1)) for w in (3, 7, 12)}
  expected = sum(errors.values())
  if train:  # AuxK (Gao et al. 2024, A.2): the dead latents' top-2 pre-activations reconstruct the residual
    dead_pi = np.where(since >= 5, pi, -np.inf)
    z_aux = np.zeros_like(pi)
    idx = np.argsort(-dead_pi, axis=1)[:, :2]
    np.put_along_axis(z_aux, idx, np.maximum(np.take_along_axis(pi, idx, 1), 0), 1)
    resid = xd - (z @ q["W_dec"] + q["b_dec"])
    auxk = np.mean(np.sum((resid - z_aux @ q["W_dec"]) ** 2, axis=1))
    np.testing.assert_allclose(metrics["auxk_loss"], auxk, rtol=1e-5)
    expected += float(HP["auxk_coefficient"]) * auxk
  np.testing.assert_allclose(metrics["sq_error_3"], errors[3], rtol=1e-5)
  np.testing.assert_allclose(metrics["sq_error_7"], errors[7], rtol=1e-5)
  np.testing.assert_allclose(metrics["sq_error"], errors[12], rtol=1e-5)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  np.testing.assert_allclose(metrics["l0"], np.mean(np.sum(z > 0, axis=1)), rtol=1e-6)
  assert "sq_error_12" not in metrics  # the outermost level is the SAE's own reconstruction error
  if train:
    assert np.sum(z > 0) == k * b
    new = metrics["_aux"]["threshold"]  # the first batch's estimate: its smallest kept activation
    np.testing.assert_allclose(new, z[z > 0].min(), rtol=1e-6)
  inner = jax.grad(lambda w: loss_of(config, d, {**{key: jnp.asarray(v) for key, v in p.items()}, "W_dec": w}, x,
                                     train=train, since_fired=since)[1]["sq_error_3"])(jnp.asarray(p["W_dec"]))
  np.testing.assert_array_equal(np.asarray(inner)[3:], 0)  # an inner level trains its own prefix only


def test_matryoshka_inference_code_is_the_thresholded_batchtopk():
  rng = np.random.default_rng(4)
  p = {"W_enc": rng.standard_normal((5, 10)), "b_enc": rng.standard_normal(10) * 0.1,
       "W_dec": rng.standard_normal((10, 5)), "b_dec": rng.standard_normal(5), "threshold": 0.4}
  p = {key: jnp.asarray(v, jnp.float32) for key, v in p.items()}
  x = rng.standard_normal((6, 5)).astype(np.float32)
  pi = (x - np.asarray(p["b_dec"])) @ np.asarray(p["W_enc"]) + np.asarray(p["b_enc"])
  np.testing.assert_allclose(sae.infer_code(p, jnp.asarray(x), "matryoshka_batchtopk", 2),
                             np.maximum(pi, 0) * (pi > 0.4), rtol=1e-5, atol=1e-6)


# --- settings, the command line, and the SAELens export ---------------------------------------------------

def test_bad_architecture_settings_are_one_line_errors(tmp_path, monkeypatch, capsys):
  for widths in ((), (8, 4), (0, 4), (2.5,)):
    with pytest.raises(configs.ConfigError, match="sae.matryoshka_widths=.* strictly increasing"):
      sae_config("matryoshka_batchtopk", sae__matryoshka_widths=widths)
  sae_config("topk", sae__matryoshka_widths=())  # only read by its own architecture
  with pytest.raises(ValueError, match="already registered"):
    sae_archs.register(sae_archs.get("gated"))
  np.save(tmp_path / "a.npy", np.ones((50, 4), np.float32))
  rc, _, err = run_main(monkeypatch, capsys, "--config=configs/sae.py", f"--config.data.source=npy:{tmp_path}/a.npy",
                        f"--workdir={tmp_path}/w", "--config.sae.activation=matryoshka_batchtopk",
                        "--config.sae.matryoshka_widths=(4, 16)", "--config.model.expansion=2", "--config.sae.k=2")
  assert rc == 2 and "the largest level is more than the 8 latents" in err and not (tmp_path / "w").exists()


def saelens_forward(folder, x):
  """SAELens 6.18's inference forward pass (sae_lens/saes/gated_sae.py GatedSAE.encode/decode and
  jumprelu_sae.py), in NumPy on the exported tensors: (z, x_hat, cfg, tensors)."""
  from safetensors.numpy import load_file

  cfg = json.load(open(os.path.join(folder, "cfg.json")))
  w = {k: v.astype(np.float64) for k, v in load_file(os.path.join(folder, "sae_weights.safetensors")).items()}
  sae_in = x - w["b_dec"] * cfg["apply_b_dec_to_input"]
  if cfg["architecture"] == "gated":
    active = (sae_in @ w["W_enc"] + w["b_gate"]) > 0
    z = active * np.maximum(sae_in @ (w["W_enc"] * np.exp(w["r_mag"])) + w["b_mag"], 0)
  else:
    assert cfg["architecture"] == "jumprelu"
    pre = sae_in @ w["W_enc"] + w["b_enc"]
    z = np.maximum(pre, 0) * (pre > w["threshold"])
  return z, z @ w["W_dec"] + w["b_dec"], cfg, w


@pytest.mark.parametrize("activation,extra,architecture,tensors", [
    ("gated", [], "gated", ["W_dec", "W_enc", "b_dec", "b_gate", "b_mag", "r_mag"]),
    ("matryoshka_batchtopk", ["--config.sae.matryoshka_widths=(4, 12)", "--config.sae.k=3"], "jumprelu",
     ["W_dec", "W_enc", "b_dec", "b_enc", "threshold"]),
])
def test_cli_run_exports_what_sae_lens_reads_back(activation, extra, architecture, tensors, tmp_path, monkeypatch,
                                                 capsys):
  rng = np.random.default_rng(5)
  x, _ = sae.synthetic_features(384, 12, 24, 2.0, seed=3)
  x = x * 4 + rng.standard_normal(12).astype(np.float32)  # an offset and a scale to fold into the export
  np.save(tmp_path / "acts.npy", x)
  wd = tmp_path / "run"
  rc, out, err = run_main(monkeypatch, capsys, "--config=configs/sae.py",
                          f"--config.data.source=npy:{tmp_path}/acts.npy", f"--workdir={wd}", f"--config.sae.activation={activation}", *extra, "--config.num_seeds=2",
                          "--config.model.expansion=2", "--config.train.epochs=1", "--config.train.batch_size=64",
                          "--config.train.progress=False", "--config.train.figures=False", "--config.log.tensorboard=False")
  assert rc == 0, err
  summary = json.loads((wd / "summary.json").read_text())
  assert "fvu" in json.dumps(summary)
  assert export.main([f"--workdir={wd}", "--format=saelens"]) == 0
  run = load.load_run(str(wd))
  held = np.asarray(data_lib.load(run.config.data).eval.x)
  for i, member in enumerate(run.members):
    z, x_hat, cfg, w = saelens_forward(wd / "export" / "saelens" / f"seed{member['seed']}", held.astype(np.float64))
    assert cfg["architecture"] == architecture and cfg["d_in"] == 12 and cfg["d_sae"] == 24
    assert sorted(w) == tensors and cfg["metadata"]["jaxae_activation"] == activation
    params = jax.tree.map(lambda a: a[i], run.params)
    if activation == "matryoshka_batchtopk":  # the estimated global threshold, trained to a positive value
      assert float(params["params"]["threshold"]) > 0
      np.testing.assert_allclose(w["threshold"], float(params["params"]["threshold"]), rtol=1e-6)
    ours = analysis.encode(run.model, params, held, run.config)
    assert 0 < np.mean(ours > 0) < 1
    np.testing.assert_allclose(z, ours, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(z > 0, ours > 0)
    scale, offset = run.model.normalizer.scale, run.model.normalizer.offset
    p = {k: np.asarray(v, np.float64) for k, v in params["params"].items()}
    recon = (ours @ p["W_dec"] + p["b_dec"]) * scale + offset  # jaxae's reconstruction, in raw units
    np.testing.assert_allclose(x_hat, recon, rtol=1e-4, atol=1e-4)
