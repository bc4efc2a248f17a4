"""VQ-VAE (jaxae/variants/vqvae.py): nearest-code assignment, straight-through gradient, loss terms, code
usage and the EMA codebook against NumPy and hand counts; training, evaluation and exact resume (with the
EMA running state) through `jaxae.main`."""

from __future__ import annotations

import json
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import ROOT, run_main, tiny_config
from jaxae import checkpoints, configs, evaluate, losses, report, train
from jaxae.load import load_run
from jaxae.variants import vqvae

DIM = 12  # vector data (B, 12) for the unit tests: an MLP 12-64-32-8, 4 code vectors of 2 per example


def _config(**overrides):
  return tiny_config("vqvae", **{"model__backbone": "mlp", "model__latent_dim": 8, "vq__code_dim": 2,
                                 "vq__num_codes": 16, **overrides})


def _net_params(config, seed=0):
  net = train.build_net(config, (DIM,))
  return net, jax.jit(net.init)(jax.random.key(seed), jnp.zeros((1, DIM)))


def _encode(net, params, x):
  return jax.jit(lambda p, x: net.encode(p, x))(params, x)  # one compilation instead of one per operation


def _decode(net, params, z):
  return jax.jit(lambda p, z: net.decode(p, z))(params, z)


def _np_nearest(vectors, codebook):
  """Brute force: float64 distances to every entry, argmin (first on ties), one vector at a time."""
  v = np.asarray(vectors, np.float64).reshape(-1, vectors.shape[-1])
  e = np.asarray(codebook, np.float64)
  idx = np.empty(len(v), np.int64)
  for i in range(len(v)):
    idx[i] = np.argmin([np.sum((v[i] - e[k]) ** 2) for k in range(len(e))])
  return idx


# --- quantization -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, code_dim", [((5, 3, 3, 8), 4), ((7, 12), 4), ((6, 10), 10)])
def test_nearest_codes_and_quantize_match_numpy_argmin(shape, code_dim):
  rng = np.random.default_rng(0)
  z = rng.normal(size=shape).astype(np.float32)
  codebook = rng.normal(size=(16, code_dim)).astype(np.float32)
  z_q, idx = jax.jit(vqvae.quantize)(jnp.asarray(z), jnp.asarray(codebook))
  # Code vectors: the last axis cut into groups of code_dim, positions in row-major order.
  vectors = z.reshape(shape[0], -1, code_dim)
  expected = _np_nearest(vectors, codebook).reshape(shape[0], -1)
  assert idx.shape == expected.shape and idx.dtype == jnp.int32
  np.testing.assert_array_equal(np.asarray(idx), expected)
  np.testing.assert_array_equal(np.asarray(z_q), codebook[expected].reshape(shape))


def test_code_vectors_refuse_a_code_dim_that_does_not_divide_the_latent():
  with pytest.raises(ValueError, match="does not divide"):
    vqvae.code_vectors(jnp.zeros((2, 10)), 4)
  with pytest.raises(configs.ConfigError, match="must divide model.latent_dim=8"):
    _config(vq__code_dim=3)
  with pytest.raises(configs.ConfigError, match="spatial code's 8 channels"):
    tiny_config("vqvae", vq__code_dim=3, model__latent_dim=0)  # conv_channels (4, 8)
  with pytest.raises(configs.ConfigError, match="ema_decay"):
    _config(vq__ema_decay=1.0)


def test_code_usage_perplexity_and_fraction_used_by_hand():
  idx = jnp.asarray([[0, 0, 1], [2, 0, 1]], jnp.int32)  # code 0 three times, 1 twice, 2 once, 3 never
  usage = jax.jit(vqvae.code_usage, static_argnums=1)
  counts, perplexity, used = usage(idx, 4)
  np.testing.assert_array_equal(np.asarray(counts), [3, 2, 1, 0])
  p = [3 / 6, 2 / 6, 1 / 6]
  np.testing.assert_allclose(float(perplexity), math.exp(-sum(q * math.log(q) for q in p)), rtol=1e-6)
  assert float(used) == 3 / 4
  # Uniform use of all K codes: perplexity K; one code: 1.
  np.testing.assert_allclose(float(usage(jnp.arange(8), 8)[1]), 8.0, rtol=1e-6)
  assert float(usage(jnp.zeros(5, jnp.int32), 8)[1]) == 1.0


# --- loss terms and gradients --------------------------------------------------------------------------------


@pytest.mark.parametrize("reconstruction", ["mse", "bce"])
def test_loss_terms_match_numpy(reconstruction):
  config = _config(loss__reconstruction=reconstruction)
  net, params = _net_params(config)
  loss_fn = jax.jit(vqvae.make_loss(config, net), static_argnums=4)
  x = np.random.default_rng(1).random((9, DIM)).astype(np.float32)
  hp = {"commitment": jnp.float32(0.7), "ema_decay": jnp.float32(0.99)}
  loss, m = loss_fn(params, hp, {"x": jnp.asarray(x), "y": jnp.zeros(9, jnp.int32), "step": 0, "num_train": 9},
                    jax.random.key(0), False)
  z_e = np.asarray(_encode(net, params, jnp.asarray(x)), np.float64)  # (9, 8)
  e = np.asarray(vqvae.codebook_of(params), np.float64)
  vectors = z_e.reshape(9, 4, 2)
  idx = _np_nearest(vectors, e).reshape(9, 4)
  sq = (vectors - e[idx]) ** 2
  quant = sq.mean() if reconstruction == "mse" else sq.reshape(9, -1).sum(axis=1).mean()
  logits = np.asarray(_decode(net, params, jnp.asarray(e[idx].reshape(9, 8), jnp.float32)), np.float64)
  mean = 1 / (1 + np.exp(-logits))
  recon_mse = np.mean((mean - x) ** 2)
  if reconstruction == "mse":
    recon = recon_mse
  else:
    recon = -np.mean(np.sum(x * np.log(mean) + (1 - x) * np.log(1 - mean), axis=1))
  np.testing.assert_allclose(float(m["commitment"]), quant, rtol=1e-5)
  np.testing.assert_allclose(float(m["codebook_loss"]), quant, rtol=1e-5)
  np.testing.assert_allclose(float(m["recon_mse"]), recon_mse, rtol=1e-5)
  np.testing.assert_allclose(float(loss), recon + 0.7 * quant + quant, rtol=1e-5)
  counts = np.bincount(idx.ravel(), minlength=16)
  p = counts[counts > 0] / counts.sum()
  np.testing.assert_allclose(float(m["perplexity"]), np.exp(-np.sum(p * np.log(p))), rtol=1e-5)
  np.testing.assert_allclose(float(m["codes_used"]), np.mean(counts > 0), rtol=1e-6)
  # With EMA the codebook loss leaves the objective.
  config_ema = _config(loss__reconstruction=reconstruction, vq__ema=True)
  loss_ema, m_ema = jax.jit(vqvae.make_loss(config_ema, net), static_argnums=4)(
      params, hp, {"x": jnp.asarray(x), "y": jnp.zeros(9, jnp.int32), "step": 0, "num_train": 9,
                   "aux": vqvae.init_aux(config_ema, net, (DIM,))}, jax.random.key(0), False)
  assert "codebook_loss" not in m_ema and "_aux" not in m_ema  # no running-state update at evaluation
  np.testing.assert_allclose(float(loss_ema), recon + 0.7 * quant, rtol=1e-5)


def test_straight_through_passes_the_gradient_at_z_q_to_z_e():
  rng = np.random.default_rng(2)
  z_e = jnp.asarray(rng.normal(size=(3, 6)), jnp.float32)
  z_q = jnp.asarray(rng.normal(size=(3, 6)), jnp.float32)
  f = lambda z: jnp.sum(jnp.sin(z) * z**2)
  np.testing.assert_allclose(np.asarray(jax.jit(vqvae.straight_through)(z_e, z_q)), np.asarray(z_q), atol=1e-6)
  np.testing.assert_allclose(np.asarray(jax.jit(jax.grad(lambda z: f(vqvae.straight_through(z, z_q))))(z_e)),
                             np.asarray(jax.jit(jax.grad(f))(z_q)), rtol=1e-6)


@pytest.mark.parametrize("ema", [False, True])
def test_loss_gradient_decoder_path_straight_through_codebook_only_from_its_loss(ema):
  """d loss / d encoder = J_enc^T (d recon / d z_q + beta d commitment / d z_e); the codebook's gradient
  is the codebook loss's alone, 2 / n sum_{z assigned to k} (e_k - z) (zero with EMA)."""
  config = _config(vq__ema=ema)
  net, params = _net_params(config, seed=3)
  beta = 0.4
  x = jnp.asarray(np.random.default_rng(3).random((10, DIM)), jnp.float32)
  batch = {"x": x, "y": jnp.zeros(10, jnp.int32), "step": 0, "num_train": 10}
  if ema:
    batch["aux"] = vqvae.init_aux(config, net, (DIM,))
  hp = {"commitment": jnp.float32(beta), "ema_decay": jnp.float32(0.99)}
  loss_fn = vqvae.make_loss(config, net)
  grads = jax.jit(jax.grad(lambda p: loss_fn(p, hp, batch, jax.random.key(0), True)[0]))(params)

  z_e, enc_vjp = jax.vjp(jax.jit(lambda p: net.encode(p, x)), params)
  e = np.asarray(vqvae.codebook_of(params), np.float64)
  vectors = np.asarray(z_e, np.float64).reshape(-1, 2)
  idx = _np_nearest(vectors, e)
  z_q = jnp.asarray(e[idx].reshape(10, 8), jnp.float32)
  recon = lambda p, z: losses.mse(net.mean(net.decode(p, z)), x)
  d_recon_dzq = jax.jit(jax.grad(recon, argnums=1))(params, z_q)
  n = vectors.size
  d_commit = 2.0 * (vectors - e[idx]) / n
  expected_enc = enc_vjp(d_recon_dzq + beta * jnp.asarray(d_commit.reshape(10, 8), jnp.float32))[0]
  expected_dec = jax.jit(jax.grad(recon))(params, z_q)
  for part, want in (("encoder", expected_enc), ("decoder", expected_dec)):
    for got, ref in zip(jax.tree.leaves(grads["params"][part]), jax.tree.leaves(want["params"][part])):
      np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-4, atol=1e-7)
  g_codebook = np.asarray(vqvae.codebook_of(grads))
  if ema:
    np.testing.assert_array_equal(g_codebook, 0.0)
  else:
    want = np.zeros_like(e)
    for i, k in enumerate(idx):
      want[k] += 2.0 * (e[k] - vectors[i]) / n
    np.testing.assert_allclose(g_codebook, want, rtol=1e-4, atol=1e-8)


# --- EMA codebook ------------------------------------------------------------------------------------------


def test_ema_updates_cluster_sizes_sums_and_codebook_like_numpy():
  """Two real train steps (train.build, one member): N, m and the codebook against the formulas in NumPy."""
  gamma, eps = 0.9, 1e-5
  config = _config(vq__ema=True, vq__ema_decay=gamma, num_seeds=1, train__steps_per_call=1, train__batch_size=16)
  x = np.random.default_rng(4).random((64, DIM)).astype(np.float32)
  y = np.zeros(64, np.int32)
  program = train.build(config, (DIM,), len(x))
  state = program.init_state()
  order = np.asarray(program.epoch_order(state, 0))[0]  # (steps, B) of the only member
  net = program.net
  member = lambda tree: jax.tree.map(lambda a: np.asarray(a)[0], jax.device_get(tree))
  for t in range(2):
    params, aux = member(state.params), member(state.aux)
    if t == 0:
      np.testing.assert_array_equal(aux["cluster_size"], 0.0)  # N and m start at zero
      np.testing.assert_array_equal(aux["embed_sum"], 0.0)
    state = program.train_chunk(state, x, y, order[None], t)
    z_e = np.asarray(_encode(net, params, jnp.asarray(x[order[t]])), np.float64)
    vectors = z_e.reshape(-1, 2)
    idx = _np_nearest(vectors, vqvae.codebook_of(params))  # assigned with the codebook before the step
    n_k = np.zeros(16)
    s_k = np.zeros((16, 2))
    for i, k in enumerate(idx):
      n_k[k] += 1
      s_k[k] += vectors[i]
    N = gamma * aux["cluster_size"] + (1 - gamma) * n_k
    m = gamma * aux["embed_sum"] + (1 - gamma) * s_k
    total = N.sum()
    codebook = m / ((N + eps) / (total + 16 * eps) * total)[:, None]
    new_params, new_aux = member(state.params), member(state.aux)
    np.testing.assert_allclose(new_aux["cluster_size"], N, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(new_aux["embed_sum"], m, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(vqvae.codebook_of(new_params), codebook, rtol=1e-4, atol=1e-6)
  assert np.any(n_k == 0)  # the last batch left codes unassigned: their N and m only decayed


# --- through jaxae.main ----------------------------------------------------------------------------------------

TINY = ["--config.num_seeds=2", "--config.data.max_train=256", "--config.data.max_eval=64",
        "--config.train.batch_size=32",
        "--config.train.figures=False", "--config.train.progress=False", "--config.log.tensorboard=False",
        "--config.log.images=0", "--config.vq.num_codes=16",
        # the default config's spatial code, shrunk: 7x7x8 feature maps, 2 code vectors of 4 per position
        "--config.model.conv_channels=(4,8)", "--config.vq.code_dim=4", f"--config={ROOT / 'configs' / 'vqvae.py'}"]
SPE = 256 // 32


def _main(*argv) -> int:
  """`python -m jaxae.main ARGV` in this process (conftest.run_main without the function-scoped fixtures)."""
  from jaxae import main

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(sys, "argv", ["jaxae", *argv])
    mp.setattr(sys, "path", list(sys.path))
    return main.cli(["jaxae", *argv])


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
  """An uninterrupted 2-epoch run with the EMA codebook (2 seeds); returns its workdir."""
  wd = tmp_path_factory.mktemp("ema") / "run"
  assert _main(*TINY, f"--workdir={wd}", "--config.train.epochs=2", "--config.vq.ema=True") == 0
  return wd


def _records(workdir):
  return [{k: v for k, v in r.items() if k != "seconds"} for r in report.read_records(str(workdir))]


def _check_trained_and_evaluated(wd, ema: bool):
  first, last = _records(wd)
  assert np.all(np.asarray(last["train"]["loss"]) < np.asarray(first["train"]["loss"]))
  assert np.all(np.asarray(last["eval"]["codes_used"]) > 1 / 16)
  assert np.all(np.asarray(last["eval"]["perplexity"]) > 1.0)
  assert ("codebook_loss" in last["eval"]) != ema
  result = evaluate.evaluate(str(wd), evaluate.Options(num_samples=20, figures=False, probes=False), quiet=True)
  # evaluate decodes the inference code (make_code = z_q): the reconstruction of the loss's forward pass.
  summary = json.loads((wd / "summary.json").read_text())
  np.testing.assert_allclose(result["settings"][0]["eval"]["recon_mse"]["per_seed"],
                             summary["settings"][0]["eval"]["recon_mse"]["per_seed"], rtol=1e-4)
  run = load_run(str(wd), seed=0)
  xs = jnp.asarray(np.random.default_rng(5).random((20, 28, 28, 1)), jnp.float32)
  codes = np.asarray(jax.jit(run.variant.code_fn(run.config, run.model))(run.params, xs))
  assert codes.shape == (20, 7, 7, 8)
  book = np.asarray(vqvae.codebook_of(run.params))
  flat = codes.reshape(-1, 4)
  assert np.min(np.sum((flat[:, None] - book[None]) ** 2, axis=-1), axis=1).max() == 0.0  # every code is an entry


def test_trains_and_evaluates_through_main(tmp_path, monkeypatch, capsys):
  wd = tmp_path / "run"
  rc, out, err = run_main(monkeypatch, capsys, *TINY, f"--workdir={wd}", "--config.train.epochs=2")
  assert rc == 0, err
  _check_trained_and_evaluated(wd, ema=False)


def test_trains_and_evaluates_through_main_with_ema(ema_run):
  _check_trained_and_evaluated(ema_run, ema=True)


def _raw_checkpoint(workdir):
  mngr = checkpoints.manager(str(workdir), read_only=True)
  step = mngr.latest_step()
  r = mngr.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(), state=ocp.args.StandardRestore()))
  mngr.close()
  return step, jax.device_get(r.params), jax.device_get(r.state)


def test_ema_resume_after_one_epoch_equals_the_uninterrupted_run(ema_run, tmp_path, monkeypatch, capsys):
  split = tmp_path / "split"
  args = [*TINY, f"--workdir={split}", "--config.vq.ema=True"]
  rc, _, err = run_main(monkeypatch, capsys, *args, "--config.train.epochs=1")
  assert rc == 0, err
  assert np.all(np.sum(_raw_checkpoint(split)[2]["aux"]["cluster_size"], axis=-1) > 0)  # EMA state is saved
  rc, out, err = run_main(monkeypatch, capsys, *args, "--config.train.epochs=2")
  assert rc == 0, err
  assert "resuming" in out
  (s1, p1, st1), (s2, p2, st2) = _raw_checkpoint(split), _raw_checkpoint(ema_run)
  assert s1 == s2 == 2 * SPE
  for a, b in ((p1, p2), (st1, st2)):
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for u, v in zip(la, lb):
      np.testing.assert_array_equal(np.asarray(u), np.asarray(v))  # bit-identical
  assert _records(split) == _records(ema_run)
