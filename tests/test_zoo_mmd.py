"""MMD estimators (losses.mmd) and the models built on them, WAE-MMD and InfoVAE, plus RAE: each term
against an independent computation (NumPy double loops over pairs, a closed-form MMD of two Gaussians,
finite differences of the decoder, NumPy sums over kernels), and tiny end-to-end runs through jaxae.main
and jaxae.evaluate."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, run_main, tiny_config
from jaxae import configs, evaluate, losses, train, variants
from jaxae.variants import infovae, rae, wae

TINY = ["--config.num_seeds=2", "--config.data.max_train=256", "--config.data.max_eval=64", "--config.train.batch_size=32",
        "--config.model.hidden=(64,32)", "--config.model.latent_dim=8", "--config.train.figures=False",
        "--config.train.progress=False", "--config.log.tensorboard=False", "--config.log.images=0"]


# --- the estimator ------------------------------------------------------------------------------------


_mmd = jax.jit(losses.mmd, static_argnums=(2, 3))  # compiled: op-by-op dispatch is slow on a busy CPU


def _np_kernel(a, b, kernel, width, scales):
  sq = float(np.sum((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
  return sum(width * s / (width * s + sq) if kernel == "imq" else np.exp(-sq / (width * s)) for s in scales)


def _np_mmd(z, p, kernel="imq", prior_variance=1.0, scales=losses.MMD_SCALES):
  """Gretton et al. 2012, eq. 3: the U-statistic, pair by pair."""
  z, p = np.asarray(z, np.float64).reshape(len(z), -1), np.asarray(p, np.float64).reshape(len(p), -1)
  n, m, d = len(z), len(p), z.shape[1]
  width = 2 * d * prior_variance
  k = lambda a, b: _np_kernel(a, b, kernel, width, scales)
  xx = sum(k(z[i], z[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
  yy = sum(k(p[i], p[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
  xy = sum(k(z[i], p[j]) for i in range(n) for j in range(m)) / (n * m)
  return xx + yy - 2 * xy


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
@pytest.mark.parametrize("scales, prior_variance", [(losses.MMD_SCALES, 1.0), ((0.5, 3.0), 1.7)])
def test_mmd_matches_numpy_double_loop(kernel, scales, prior_variance):
  r = np.random.default_rng(0)
  z = (r.normal(size=(5, 3, 1)) * 1.5 + 0.3).astype(np.float32)  # codes of any shape are flattened per example
  p = r.normal(size=(7, 3)).astype(np.float32)
  got = float(_mmd(jnp.asarray(z), jnp.asarray(p), kernel, scales, prior_variance))
  assert got == pytest.approx(_np_mmd(z, p, kernel, prior_variance, scales), rel=1e-5, abs=2e-5)  # float32: a difference of terms near 7
  # Symmetric, zero-free pairs: one sample against itself is a U-statistic of the same pairs twice.
  assert float(_mmd(jnp.asarray(p), jnp.asarray(p), kernel, scales)) == pytest.approx(
      _np_mmd(p, p, kernel, 1.0, scales), rel=1e-5, abs=2e-5)  # float32: a difference of terms near 7


def test_mmd_edge_cases():
  z = jnp.ones((1, 4))
  assert float(losses.mmd(z, jnp.zeros((6, 4)))) == 0.0  # no pairs: a one-example evaluation batch
  with pytest.raises(ValueError, match="dimension 4 and 3"):
    losses.mmd(jnp.zeros((3, 4)), jnp.zeros((3, 3)))
  with pytest.raises(ValueError, match="kernel='laplace'"):
    losses.mmd(jnp.zeros((3, 4)), jnp.zeros((3, 4)), "laplace")
  # Finite gradients at coinciding codes (squared distances clipped at 0, no square roots).
  g = jax.jit(jax.grad(lambda v: losses.mmd(v, jnp.ones((3, 4)))))(jnp.ones((3, 4)))
  assert np.all(np.isfinite(g))


def _rbf_expectation(mean_diff, var_sum, d, c):
  """E exp(-||w||^2 / c) for w ~ N(mean_diff, var_sum I_d), in closed form (a Gaussian integral)."""
  return (1 + 2 * var_sum / c) ** (-d / 2) * np.exp(-np.sum(np.square(mean_diff)) / (c + 2 * var_sum))


def test_mmd_is_unbiased_for_two_gaussians():
  """The mean of the estimate over many small batches is the population MMD^2 (closed form for the Gaussian
  kernel between two Gaussians), where the biased V-statistic (diagonal included) is visibly off."""
  d, n, reps = 2, 4, 20000
  mu, s1, s2 = np.array([0.8, -0.3]), 1.3, 1.0
  width = 2.0 * d
  exact = sum(_rbf_expectation(0.0, 2 * s1**2, d, width * s) + _rbf_expectation(0.0, 2 * s2**2, d, width * s)
              - 2 * _rbf_expectation(mu, s1**2 + s2**2, d, width * s) for s in losses.MMD_SCALES)
  r = np.random.default_rng(4)
  x = (mu + s1 * r.normal(size=(reps, n, d))).astype(np.float32)
  y = (s2 * r.normal(size=(reps, n, d))).astype(np.float32)
  u = np.asarray(jax.jit(jax.vmap(lambda a, b: losses.mmd(a, b, "rbf")))(x, y), np.float64)

  def v_stat(a, b):
    k = lambda p, q: losses.mmd_kernel(losses.squared_distances(p, q), "rbf", losses.MMD_SCALES, width)
    return jnp.mean(k(a, a)) + jnp.mean(k(b, b)) - 2 * jnp.mean(k(a, b))

  v = np.asarray(jax.jit(jax.vmap(v_stat))(x, y), np.float64)
  se = u.std() / np.sqrt(reps)
  assert abs(u.mean() - exact) < 4 * se
  assert abs(v.mean() - exact) > 10 * se  # the test can tell an unbiased estimate from a biased one


# --- the objectives on one batch ------------------------------------------------------------------------


def _sigmoid(a):
  return 1 / (1 + np.exp(-np.asarray(a, np.float64)))


def _setup(variant, data_dim=6, **overrides):
  config = tiny_config(variant, model__hidden=(5, 4), model__latent_dim=3, **overrides)
  net = train.build_net(config, (data_dim,))
  params = jax.jit(net.init)(jax.random.key(1), jnp.zeros((1, data_dim)))
  x = np.random.default_rng(2).uniform(size=(6, data_dim)).astype(np.float32)
  return config, net, params, x


def _loss(config, net):
  """The variant's loss_fn, compiled once (op-by-op dispatch is slow on a busy CPU)."""
  return jax.jit(variants.get(config.variant).make_loss(config, net), static_argnums=4)


def _encode(net):
  return jax.jit(lambda params, x: net.encode(params, x))


def _decode_mean(net, params):
  """z -> the decoder's reconstruction mean sigmoid(logits), in float64, via one compiled decoder."""
  fn = jax.jit(lambda p, z: net.decode(p, z))
  return lambda z: _sigmoid(fn(params, np.asarray(z, np.float32)))


def test_wae_loss_is_weighted_cost_plus_weighted_mmd():
  config, net, params, x = _setup("wae", loss__prior_std=2.0)
  key = jax.random.key(5)
  hp = {"mmd_weight": 3.0, "wae_cost_weight": 0.05}
  loss, m = _loss(config, net)(params, hp, {"x": x}, key, False)
  z = np.asarray(_encode(net)(params, x), np.float64)
  recon = _decode_mean(net, params)(z)
  cost = 0.05 * np.mean(np.sum((recon - x) ** 2, axis=1))  # the squared Euclidean cost summed over elements
  prior = np.asarray(2.0 * jax.random.normal(jax.random.fold_in(key, wae.PRIOR_SALT), z.shape), np.float64)
  assert prior.std() > 1.2  # drawn with sigma_z = 2 ...
  mmd = _np_mmd(z, prior, "imq", prior_variance=4.0)  # ... and the kernel width is 2 d sigma_z^2
  assert float(m["mmd"]) == pytest.approx(mmd, rel=1e-4, abs=2e-5)
  assert float(m["recon_cost"]) == pytest.approx(cost, rel=1e-5)
  assert float(loss) == pytest.approx(cost + 3.0 * mmd, rel=1e-5)
  assert float(m["recon_mse"]) == pytest.approx(np.mean((recon - x) ** 2), rel=1e-5)
  # The code prior evaluation decodes: N(0, sigma_z^2 I).
  zs = np.asarray(jax.jit(variants.get("wae").code_prior(config), static_argnums=1)(jax.random.key(0), (20000, 3)))
  np.testing.assert_allclose(zs.mean(0), 0.0, atol=0.06)
  np.testing.assert_allclose(zs.std(0), 2.0, rtol=0.02)


def test_infovae_loss_matches_elbo_and_mmd_terms():
  config, net, params, x = _setup("infovae", loss__mmd_kernel="rbf")
  key = jax.random.key(3)
  alpha, lam = 0.3, 5.0
  hp = {"info_alpha": alpha, "info_lambda": lam, "gaussian_sigma": 1.0}
  loss, m = _loss(config, net)(params, hp, {"x": x}, key, False)
  mean, log_var = (np.asarray(a, np.float64) for a in _encode(net)(params, x))
  eps = np.asarray(jax.random.normal(jax.random.fold_in(key, infovae.REPARAMETERIZATION_SALT), mean.shape), np.float64)
  z = mean + np.exp(0.5 * log_var) * eps
  p = _decode_mean(net, params)(z)
  nll = -np.mean(np.sum(x * np.log(p) + (1 - x) * np.log(1 - p), axis=1))  # Bernoulli decoder, nats per example
  kl = np.mean(0.5 * np.sum(mean**2 + np.exp(log_var) - 1 - log_var, axis=1))  # Kingma & Welling, appendix B
  prior = np.asarray(jax.random.normal(jax.random.fold_in(key, infovae.PRIOR_SALT), z.shape), np.float64)
  mmd = _np_mmd(z, prior, "rbf")
  assert float(m["recon_nll"]) == pytest.approx(nll, rel=1e-4)
  assert float(m["kl"]) == pytest.approx(kl, rel=1e-4)
  assert float(m["neg_elbo"]) == pytest.approx(nll + kl, rel=1e-4)
  assert float(m["mmd"]) == pytest.approx(mmd, rel=1e-4, abs=2e-5)
  assert float(loss) == pytest.approx(nll + (1 - alpha) * kl + (alpha + lam - 1) * mmd, rel=1e-4)


def test_rae_gradient_penalty_matches_finite_differences():
  config, net, params, x = _setup("rae", loss__rae_regularizer="gp", model__activation="tanh")
  hp = {"rae_embedding_weight": 0.3, "rae_reg_weight": 0.7}
  loss, m = _loss(config, net)(params, hp, {"x": x}, jax.random.key(0), False)
  z = np.asarray(_encode(net)(params, x))
  decode = _decode_mean(net, params)
  h = 1e-2
  fd = 0.0
  for j in range(z.shape[1]):  # central differences, one latent unit at a time: column j of every Jacobian
    e = np.zeros_like(z)
    e[:, j] = h
    fd += np.sum(((decode(z + e) - decode(z - e)) / (2 * h)) ** 2)
  fd /= len(z)
  assert float(m["decoder_gp"]) == pytest.approx(fd, rel=1e-3)
  gp = jax.jit(lambda p, v: rae.jacobian_frobenius_sq(lambda u: net.mean(net.decode(p, u)), v))
  assert float(gp(params, jnp.asarray(z))) == pytest.approx(fd, rel=1e-3)
  recon = decode(z)
  cost = np.mean(np.sum((recon - x) ** 2, axis=1))
  emb = np.mean(0.5 * np.sum(z.astype(np.float64) ** 2, axis=1))
  assert float(m["embedding_penalty"]) == pytest.approx(emb, rel=1e-5)
  assert float(loss) == pytest.approx(cost + 0.3 * emb + 0.7 * fd, rel=1e-3)
  # The penalty is differentiable (double backprop) and its gradient reaches the decoder.
  loss_fn = variants.get("rae").make_loss(config, net)
  g = jax.jit(jax.grad(lambda p: loss_fn(p, hp, {"x": x}, jax.random.key(0), True)[1]["decoder_gp"]))(params)
  assert float(jnp.sum(jnp.abs(g["params"]["decoder"]["Dense_0"]["kernel"]))) > 0


def test_rae_l2_is_the_sum_of_squares_of_decoder_kernels():
  config, net, params, x = _setup("rae", loss__rae_regularizer="l2")
  # Nonzero biases everywhere (flax initializes them to 0), so leaving them out is visible.
  r = np.random.default_rng(9)
  params = jax.tree.map(lambda a: a + np.float32(0.1) * r.normal(size=a.shape).astype(np.float32), params)
  hp = {"rae_embedding_weight": 1e-4, "rae_reg_weight": 0.01}
  loss, m = _loss(config, net)(params, hp, {"x": x}, jax.random.key(0), False)
  dec = {name: {k: np.asarray(v, np.float64) for k, v in layer.items()} for name, layer in params["params"]["decoder"].items()}
  assert sorted(dec) == ["Dense_0", "Dense_1", "Dense_2"]  # 3 -> 4 -> 5 -> 6
  kernels = sum(np.sum(dec[f"Dense_{i}"]["kernel"] ** 2) for i in range(3))
  biases = sum(np.sum(dec[f"Dense_{i}"]["bias"] ** 2) for i in range(3))
  assert biases > 1e-3
  assert float(m["decoder_l2"]) == pytest.approx(kernels, rel=1e-5)
  z = np.asarray(_encode(net)(params, x), np.float64)
  cost = np.mean(np.sum((_decode_mean(net, params)(z) - x) ** 2, axis=1))
  emb = np.mean(0.5 * np.sum(z**2, axis=1))
  assert float(loss) == pytest.approx(cost + 1e-4 * emb + 0.01 * kernels, rel=1e-5)


@pytest.mark.parametrize("variant, overrides, message", [
    ("wae", {"loss__mmd_kernel": "gauss"}, r"loss.mmd_kernel='gauss' is not one of 'imq', 'rbf'"),
    ("wae", {"loss__prior_std": 0.0}, r"loss.prior_std=0.0 must be a positive number"),
    ("infovae", {"loss__info_alpha": 1.5}, r"loss.info_alpha=1.5 must be at most 1"),
    ("infovae", {"loss__info_alpha": 0.5, "loss__info_lambda": 0.03}, r"MMD weight alpha \+ lambda - 1 would be negative"),
    ("rae", {"loss__rae_regularizer": "sn"}, r"loss.rae_regularizer='sn' is not one of 'l2', 'gp'"),
    ("rae", {"loss__rae_reg_weight": -1.0}, r"loss.rae_reg_weight=-1.0 must be a non-negative number"),
])
def test_bad_options_are_one_line_config_errors(variant, overrides, message):
  with pytest.raises(configs.ConfigError, match=message):
    tiny_config(variant, **overrides)


# --- end to end ----------------------------------------------------------------------------------------


def _train_records(workdir):
  return [json.loads(line)["train"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_wae_mmd_weight_pulls_codes_to_the_prior_and_evaluate_decodes_prior_samples(tmp_path, monkeypatch, capsys):
  wd = tmp_path / "wae"
  rc, out, err = run_main(monkeypatch, capsys, f"--config={ROOT / 'configs' / 'wae.py'}", f"--workdir={wd}", *TINY,
                          "--config.train.epochs=2", '--config.sweep={"loss.mmd_weight": [0.0, 10.0]}')
  assert rc == 0, err
  free, matched = json.loads((wd / "summary.json").read_text())["settings"]
  assert free["setting"] == {"loss.mmd_weight": 0.0} and matched["setting"] == {"loss.mmd_weight": 10.0}
  # Held-out codes: the MMD to N(0, I) is smaller where it is penalized, for every seed.
  assert max(matched["eval"]["mmd"]["per_seed"]) < min(free["eval"]["mmd"]["per_seed"])
  for entry, w in ((free, 0.0), (matched, 10.0)):
    e = {k: np.asarray(v["per_seed"]) for k, v in entry["eval"].items()}
    np.testing.assert_allclose(e["loss"], e["recon_cost"] + w * e["mmd"], rtol=1e-5)
  result = evaluate.evaluate(str(wd), evaluate.Options(num_samples=20, figures=True, probes=False, embedding="pca"),
                             quiet=True)
  assert result["num_samples"] == 0  # no likelihood without a latent model
  for g in (0, 1):
    assert (wd / "figures" / f"eval_samples_setting{g}.png").stat().st_size > 1000


def test_infovae_trains_and_evaluates_its_likelihood(tmp_path, monkeypatch, capsys):
  wd = tmp_path / "infovae"
  rc, out, err = run_main(monkeypatch, capsys, f"--config={ROOT / 'configs' / 'infovae.py'}", f"--workdir={wd}", *TINY,
                          "--config.train.epochs=2")
  assert rc == 0, err
  records = _train_records(wd)
  assert np.mean(records[-1]["loss"]) < np.mean(records[0]["loss"])
  result = evaluate.evaluate(str(wd), evaluate.Options(num_samples=20, figures=False, probes=False), quiet=True)
  e = result["settings"][0]["eval"]
  nll, elbo = np.asarray(e["nll"]["per_seed"]), np.asarray(e["neg_elbo"]["per_seed"])
  assert np.all(np.isfinite(nll)) and np.all(nll <= elbo)  # log-mean-exp >= mean of the same weights
  # The program's own held-out -ELBO (one sample, closed-form KL) is the standard-normal model's.
  program = np.asarray(json.loads((wd / "summary.json").read_text())["settings"][0]["eval"]["neg_elbo"]["per_seed"])
  np.testing.assert_allclose(elbo, program, rtol=0.03)


def test_rae_gp_trains_and_evaluate_samples_a_code_density(tmp_path, monkeypatch, capsys):
  wd = tmp_path / "rae"
  rc, out, err = run_main(monkeypatch, capsys, f"--config={ROOT / 'configs' / 'rae.py'}", f"--workdir={wd}", *TINY,
                          "--config.train.epochs=2", "--config.loss.rae_regularizer=gp", "--config.loss.rae_reg_weight=1e-3")
  assert rc == 0, err
  records = _train_records(wd)
  assert np.mean(records[-1]["loss"]) < np.mean(records[0]["loss"])
  assert np.all(np.asarray(records[-1]["decoder_gp"]) > 0)
  evaluate.evaluate(str(wd), evaluate.Options(num_samples=20, figures=True, probes=False, embedding="pca"), quiet=True)
  assert (wd / "figures" / "eval_samples.png").stat().st_size > 1000
