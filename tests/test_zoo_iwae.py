"""The IWAE family (iwae: IWAE, MIWAE, CIWAE bounds) and the capacity-annealed beta-VAE against independent
computations: NumPy log-weights of a linear-Gaussian model with the exact marginal likelihood from SciPy,
the asymptotic bias of the IWAE bound, NumPy KL and capacity schedules, and tiny end-to-end runs."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from conftest import ROOT, run_main, tiny_config
from jaxae import configs, evaluate, train, variants
from jaxae.variants import beta_vae_capacity, iwae

TINY = ["--config.num_seeds=2", "--config.data.max_train=256", "--config.data.max_eval=64", "--config.train.batch_size=32",
        "--config.model.hidden=(64,32)", "--config.model.latent_dim=8", "--config.train.figures=False",
        "--config.train.progress=False", "--config.train.epochs=2"]

# --- a linear-Gaussian model: p(z) = N(0, I), p(x | z) = N(W z + b, s^2 I), so p(x) = N(b, W W^T + s^2 I) ---------

D, DZ, SIGMA = 5, 2, 0.5


def _linear_gaussian(inflate=3.0, shift=0.5, seed=0):
  """(W, b, A, c, log_var): decoder W, b and a deliberately poor diagonal q(z|x) = N(A x + c, diag(exp(log_var))),
  the exact posterior's mean moved by `shift` and its marginal variances times `inflate`."""
  rng = np.random.default_rng(seed)
  W, b = rng.standard_normal((D, DZ)), rng.standard_normal(D)
  post_cov = np.linalg.inv(np.eye(DZ) + W.T @ W / SIGMA**2)
  A = post_cov @ W.T / SIGMA**2  # exact posterior mean: A (x - b)
  return W, b, A, -A @ b + shift, np.log(np.diag(post_cov) * inflate)


def _params(W, b, A, c, log_var):
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  return {"params": {"decoder": {"Dense_0": {"kernel": f32(W.T), "bias": f32(b)}},
                     "encoder": {"latent": {"kernel": f32(A.T), "bias": f32(c)},
                                 "log_variance": {"kernel": f32(np.zeros((D, DZ))), "bias": f32(log_var)}}}}


def _linear_loss(**loss):
  config = tiny_config("iwae", model__backbone="linear", model__output="identity", loss__reconstruction="mse",
                       model__latent_dim=DZ, loss__gaussian_sigma=SIGMA, **{f"loss__{k}": v for k, v in loss.items()})
  return variants.get("iwae").make_loss(config, train.build_net(config, (D,)))


def _np_log_weights(x, eps, W, b, A, c, log_var):
  """log w (B, S) in float64: log N(x; W z + b, s^2 I) + log N(z; 0, I) - log N(z; mean, diag(var)), z = mean + std eps."""
  mean, std = x @ A.T + c, np.exp(0.5 * log_var)
  z = mean[:, None] + std * eps  # (B, S, d)
  ll = np.stack([multivariate_normal(np.zeros(D), SIGMA**2 * np.eye(D)).logpdf(x[i] - z[i] @ W.T - b)
                 for i in range(len(x))]).reshape(eps.shape[:2])
  lp = multivariate_normal(np.zeros(DZ)).logpdf(z.reshape(-1, DZ)).reshape(eps.shape[:2])
  lq = np.stack([multivariate_normal(mean[i], np.diag(std**2)).logpdf(z[i]) for i in range(len(x))]).reshape(eps.shape[:2])
  return ll, ll + lp - lq


def _eps(key, b, s):
  """The documented sample of loss_fn: eps = normal(fold_in(key, 7), (B, S, d))."""
  return np.asarray(jax.random.normal(jax.random.fold_in(key, iwae.REPARAMETERIZATION_SALT), (b, s, DZ)), np.float64)


HP = {"gaussian_sigma": jnp.float32(SIGMA), "ciwae_beta": jnp.float32(0.5)}
X = np.random.default_rng(1).standard_normal((4, D)).astype(np.float32) * 1.5


@pytest.mark.parametrize("estimator, k, m, beta", [
    ("iwae", 1, 1, 0.5), ("iwae", 7, 1, 0.5), ("miwae", 4, 3, 0.5), ("ciwae", 6, 1, 0.0), ("ciwae", 6, 1, 0.3),
    ("ciwae", 6, 1, 1.0)])
def test_bounds_equal_numpy_log_weights_of_the_same_samples(estimator, k, m, beta):
  lin = _linear_gaussian()
  params = _params(*lin)
  loss_fn = _linear_loss(iwae_k=k, iwae_m=m, iwae_estimator=estimator)
  key = jax.random.key(3)
  loss, met = jax.jit(loss_fn, static_argnums=4)(params, {**HP, "ciwae_beta": jnp.float32(beta)},
                                                {"x": jnp.asarray(X), "step": 0}, key, True)
  ll, log_w = _np_log_weights(X.astype(np.float64), _eps(key, len(X), m * k), *lin)
  # Burda et al. 2016 eq. 8 per group of k consecutive samples; MIWAE averages the m groups.
  bound = np.mean(logsumexp(log_w.reshape(len(X), m, k), axis=-1) - np.log(k), axis=-1).mean()
  elbo = log_w.mean()
  expected = -(beta * elbo + (1 - beta) * bound) if estimator == "ciwae" else -bound
  np.testing.assert_allclose(loss, expected, rtol=2e-5)
  np.testing.assert_allclose(met["iwae_bound"], bound, rtol=2e-5)
  np.testing.assert_allclose(met["neg_elbo"], -elbo, rtol=2e-5)
  np.testing.assert_allclose(met["recon_nll"], -ll.mean(), rtol=2e-5)
  mean, log_var = X @ lin[2].T + lin[3], lin[4]
  kl = 0.5 * np.sum(mean**2 + np.exp(log_var) - 1 - log_var, axis=1).mean()
  np.testing.assert_allclose(met["kl"], kl, rtol=2e-5)
  assert met["iwae_bound"] >= -met["neg_elbo"] - 1e-5  # log-mean-exp >= mean
  if k == 1:  # one sample: the bound is the ELBO of that sample
    np.testing.assert_allclose(loss, met["neg_elbo"], rtol=1e-6)


def test_miwae_with_m_groups_of_one_is_the_elbo_of_the_iwae_samples():
  params = _params(*_linear_gaussian())
  key, batch = jax.random.key(4), {"x": jnp.asarray(X), "step": 0}
  _, iw = jax.jit(_linear_loss(iwae_k=8), static_argnums=4)(params, HP, batch, key, True)
  loss, mi = jax.jit(_linear_loss(iwae_k=1, iwae_m=8, iwae_estimator="miwae"), static_argnums=4)(params, HP, batch, key, True)
  np.testing.assert_allclose(loss, iw["neg_elbo"], rtol=1e-6)  # the same 8 samples per example
  assert iw["iwae_bound"] > mi["iwae_bound"] + 0.5  # and the 8-sample bound is well above their ELBO


def _mean_bound(loss_fn, params, n, seed=0):
  """(mean over n keys of the batch's bound, its standard error)."""
  f = jax.jit(jax.vmap(lambda key: loss_fn(params, HP, {"x": jnp.asarray(X), "step": 0}, key, True)[1]["iwae_bound"]))
  v = np.asarray(f(jax.random.split(jax.random.key(seed), n)), np.float64)
  return v.mean(), v.std() / np.sqrt(n)


def test_bound_rises_with_k_to_the_exact_marginal_likelihood():
  lin = _linear_gaussian()
  params = _params(*lin)
  W, b = lin[:2]
  exact = multivariate_normal(b, W @ W.T + SIGMA**2 * np.eye(D)).logpdf(X.astype(np.float64)).mean()
  ks, keys = (1, 10, 100, 1000), (400, 400, 1000, 200)
  est = [_mean_bound(_linear_loss(iwae_k=k), params, n) for k, n in zip(ks, keys)]
  for (lo, se_lo), (hi, se_hi) in zip(est, est[1:]):  # Burda et al. 2016, theorem 1: L_k <= L_m for k < m
    assert hi - lo > 4 * np.hypot(se_lo, se_hi), est
  # The bias of L_k is var(w / p(x)) / (2k) + o(1/k) (the delta method; Maddison et al. 2017, Domke & Sheldon 2018):
  # var(w / p(x)) from 200k NumPy samples of q. Here it is about 3.4, so the bias is ~0.017 nats at k=100
  # and ~0.0017 at k=1000; both are checked within a factor 2, plus 4 standard errors of the Monte Carlo mean.
  rng = np.random.default_rng(5)
  _, log_w = _np_log_weights(X.astype(np.float64), rng.standard_normal((len(X), 200_000, DZ)), *lin)
  exact_i = multivariate_normal(b, W @ W.T + SIGMA**2 * np.eye(D)).logpdf(X.astype(np.float64))
  rel_var = np.var(np.exp(log_w - exact_i[:, None]), axis=1).mean()
  assert 1.0 < rel_var < 10.0, rel_var  # a q poor enough for visible gaps, good enough for finite variance
  for k, (value, se) in zip(ks[2:], est[2:]):
    gap, predicted = exact - value, rel_var / (2 * k)
    assert 0.5 * predicted - 4 * se < gap < 2 * predicted + 4 * se, (k, gap, predicted, se)
  assert abs(exact - est[-1][0]) < 0.01  # L_1000 is log p(x) to 0.01 nats


def test_miwae_is_in_expectation_the_k_sample_bound_and_ciwae_lies_between():
  params = _params(*_linear_gaussian())
  iw10, se10 = _mean_bound(_linear_loss(iwae_k=10), params, 400, seed=1)
  iw100, se100 = _mean_bound(_linear_loss(iwae_k=100), params, 1000, seed=2)
  mi, se_mi = _mean_bound(_linear_loss(iwae_k=10, iwae_m=10, iwae_estimator="miwae"), params, 400, seed=3)
  assert abs(mi - iw10) < 4 * np.hypot(se10, se_mi)  # E MIWAE(M, K) = E L_K (Rainforth et al. 2018, sec. 4)
  assert mi < iw100 - 4 * np.hypot(se100, se_mi)  # ... below L_{MK}: same samples, looser bound


def test_k1_is_the_vae_objective_on_a_bernoulli_mlp():
  """k=1 decodes the VAE's own sample: the same reconstruction term, and -log w = VAE recon + Monte Carlo KL."""
  config = tiny_config("iwae", loss__iwae_k=1)
  net = train.build_net(config, (28, 28, 1))
  params = jax.jit(net.init)(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
  x = (np.random.default_rng(0).random((6, 28, 28, 1)) < 0.3).astype(np.float32)
  hp = {"gaussian_sigma": jnp.float32(1.0), "ciwae_beta": jnp.float32(0.5), "beta": jnp.float32(1.0)}
  vae_loss = variants.get("vae").make_loss(tiny_config("vae"), net)
  iwae_loss = variants.get("iwae").make_loss(config, net)
  batch = {"x": jnp.asarray(x), "step": 0}
  # One program: both objectives for 500 keys; the first key's values are checked sample by sample.
  keys = jax.random.split(jax.random.key(1), 500)
  f = jax.jit(jax.vmap(lambda k: (iwae_loss(params, hp, batch, k, True), vae_loss(params, hp, batch, k, True))))
  (losses, met), (vae_losses, vae) = jax.tree.map(lambda t: np.asarray(t, np.float64), f(keys))
  np.testing.assert_allclose(met["recon_nll"][0], vae["recon_nll"][0], rtol=1e-6)
  np.testing.assert_allclose(met["kl"][0], vae["kl"][0], rtol=1e-6)
  mean, log_var = (np.asarray(a, np.float64) for a in jax.jit(net.encode)(params, jnp.asarray(x)))
  eps = np.asarray(jax.random.normal(jax.random.fold_in(keys[0], 7), mean.shape), np.float64)
  z = mean + np.exp(0.5 * log_var) * eps
  mc_kl = np.mean([multivariate_normal(mean[i], np.diag(np.exp(log_var[i]))).logpdf(z[i])
                   - multivariate_normal(np.zeros(8)).logpdf(z[i]) for i in range(len(x))])
  np.testing.assert_allclose(losses[0], vae["recon_nll"][0] + mc_kl, rtol=1e-5)
  # Averaged over samples the Monte Carlo KL is the closed-form one: E[IWAE k=1 loss] = the VAE's -ELBO.
  a, v = losses, vae_losses
  assert abs(a.mean() - v.mean()) < 4 * (a - v).std() / np.sqrt(len(a))


def test_iwae_options_are_validated():
  for overrides, message in [({"loss__iwae_k": 0}, "loss.iwae_k=0 must be a positive integer"),
                             ({"loss__iwae_estimator": "vimco"}, "loss.iwae_estimator='vimco' is not one of"),
                             ({"loss__iwae_m": 3}, "loss.iwae_m=3 is used only by loss.iwae_estimator='miwae'"),
                             ({"loss__ciwae_beta": 1.5}, r"loss.ciwae_beta=1.5 must be a number in \[0, 1\]")]:
    with pytest.raises(configs.ConfigError, match=message):
      tiny_config("iwae", **overrides)


def test_iwae_trains_and_evaluates_end_to_end(tmp_path, monkeypatch, capsys):
  wd = tmp_path / "run"
  rc, out, err = run_main(monkeypatch, capsys, f"--config={ROOT / 'configs' / 'iwae.py'}", f"--workdir={wd}", *TINY)
  assert rc == 0, err
  summary = json.loads((wd / "summary.json").read_text())
  e = {k: np.asarray(v["per_seed"]) for k, v in summary["settings"][0]["eval"].items()}
  np.testing.assert_allclose(e["loss"], -e["iwae_bound"], rtol=1e-6)
  assert np.all(e["iwae_bound"] > -e["neg_elbo"])  # the 5-sample bound above the ELBO of the same samples
  records = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
  assert np.mean(records[-1]["train"]["loss"]) < np.mean(records[0]["train"]["loss"])
  result = evaluate.evaluate(str(wd), evaluate.Options(num_samples=20, figures=False, probes=False), quiet=True)
  entry = result["settings"][0]["eval"]
  nll, elbo = np.asarray(entry["nll"]["per_seed"]), np.asarray(entry["neg_elbo"]["per_seed"])
  assert np.all(nll <= elbo)
  # -log p(x) with K=20 is below the training program's -ELBO (1 nat: Monte Carlo noise over 64 images).
  assert np.all(nll < e["neg_elbo"] + 1.0), (nll, e["neg_elbo"])
  np.testing.assert_allclose(elbo, e["neg_elbo"], rtol=0.02)  # the same quantity from other samples


# --- beta-VAE with controlled capacity (Burgess et al. 2018) --------------------------------------------------


def test_capacity_schedule_against_hand_values():
  steps = np.array([0, 1, 250, 500, 999, 1000, 1001, 50_000])
  expected = [0.0, 0.025, 6.25, 12.5, 24.975, 25.0, 25.0, 25.0]  # 25 * min(t / 1000, 1)
  got = jax.jit(jax.vmap(lambda t: beta_vae_capacity.capacity(t, jnp.float32(25.0), 1000)))(jnp.asarray(steps, jnp.int32))
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(beta_vae_capacity.capacity(3, 10.0, 4), 7.5)


@pytest.mark.parametrize("step", [0, 3, 40])
def test_capacity_loss_against_numpy(step):
  config = tiny_config("beta_vae_capacity", loss__capacity_steps=20)
  net = train.build_net(config, (28, 28, 1))
  params = jax.jit(net.init)(jax.random.key(1), jnp.zeros((1, 28, 28, 1)))
  x = (np.random.default_rng(2).random((5, 28, 28, 1)) < 0.3).astype(np.float32)
  hp = {"gaussian_sigma": jnp.float32(1.0), "capacity_max": jnp.float32(30.0), "capacity_gamma": jnp.float32(7.0)}
  key = jax.random.key(5)
  loss, met = jax.jit(variants.get("beta_vae_capacity").make_loss(config, net), static_argnums=4)(
      params, hp, {"x": jnp.asarray(x), "step": jnp.int32(step)}, key, True)
  mean, log_var = (np.asarray(a, np.float64) for a in jax.jit(net.encode)(params, jnp.asarray(x)))
  z = mean + np.exp(0.5 * log_var) * np.asarray(jax.random.normal(jax.random.fold_in(key, 7), mean.shape), np.float64)
  logits = np.asarray(jax.jit(net.decode)(params, jnp.asarray(z, jnp.float32)), np.float64).reshape(5, -1)
  p = 1 / (1 + np.exp(-logits))
  xf = x.reshape(5, -1)
  nll = -np.mean(np.sum(xf * np.log(p) + (1 - xf) * np.log1p(-p), axis=1))
  kl = np.mean(0.5 * np.sum(mean**2 + np.exp(log_var) - 1 - log_var, axis=1))
  c = 30.0 * min(step / 20, 1.0)
  np.testing.assert_allclose(met["capacity"], c, rtol=1e-6)
  np.testing.assert_allclose(met["kl"], kl, rtol=1e-5)
  np.testing.assert_allclose(met["recon_nll"], nll, rtol=1e-5)
  np.testing.assert_allclose(met["neg_elbo"], nll + kl, rtol=1e-5)
  np.testing.assert_allclose(loss, nll + 7.0 * abs(kl - c), rtol=1e-5)


def test_capacity_options_are_validated():
  with pytest.raises(configs.ConfigError, match="loss.capacity_steps=0 must be a positive integer"):
    tiny_config("beta_vae_capacity", loss__capacity_steps=0)
  with pytest.raises(configs.ConfigError, match="loss.capacity_max=-1.0 must be a non-negative number"):
    tiny_config("beta_vae_capacity", loss__capacity_max=-1.0)


def test_kl_tracks_the_capacity_end_to_end(tmp_path, monkeypatch, capsys):
  """C = 0 and C rising to 12 nats over the first 8 of 48 steps, swept in one run: the KL follows C.

  With gamma = 1000 the gradient is that of gamma |KL - C| almost alone and Adam's steps do not depend on
  its scale: the KL moves towards C at a fixed pace and overshoots, oscillating around C by a few nats.
  Averaged over the 32 steps of epochs 3-6 it is C within 2 nats; the held-out KL after the last step
  within 4. With C = 0 the KL is pinned near 0.
  """
  wd = tmp_path / "run"
  rc, out, err = run_main(monkeypatch, capsys, f"--config={ROOT / 'configs' / 'beta_vae_capacity.py'}",
                          f"--workdir={wd}", *TINY, "--config.train.epochs=6", "--config.loss.capacity_steps=8",
                          '--config.sweep={"loss.capacity_max": [0.0, 12.0]}')
  assert rc == 0, err
  records = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
  members = {c: [i for i, m in enumerate(json.loads((wd / "members.json").read_text()))
                 if m["setting"]["loss.capacity_max"] == c] for c in (0.0, 12.0)}
  capacity = np.asarray([r["train"]["capacity"] for r in records])  # (epochs, members), means over each epoch's steps
  # Epoch 1 holds steps t = 0..7: mean of 12 t / 8 is 5.25; from step 8 on C = 12.
  np.testing.assert_allclose(capacity[:, members[12.0]], [[5.25, 5.25]] + [[12.0, 12.0]] * 5, rtol=1e-6)
  np.testing.assert_allclose(capacity[:, members[0.0]], 0.0)
  kl = np.asarray([r["train"]["kl"] for r in records])
  assert np.all(kl[2:, members[0.0]] < 0.1), kl
  assert np.all(np.abs(kl[2:, members[12.0]].mean(axis=0) - 12.0) < 2.0), kl
  summary = json.loads((wd / "summary.json").read_text())
  zero, twelve = ({k: np.asarray(v["per_seed"]) for k, v in s["eval"].items()} for s in summary["settings"])
  np.testing.assert_allclose(twelve["capacity"], 12.0)
  assert np.all(zero["kl"] < 0.1) and np.all(np.abs(twelve["kl"] - 12.0) < 4.0), (zero["kl"], twelve["kl"])
  result = evaluate.evaluate(str(wd), evaluate.Options(num_samples=20, figures=False, probes=False), quiet=True)
  for s in result["settings"]:
    nll, elbo = np.asarray(s["eval"]["nll"]["per_seed"]), np.asarray(s["eval"]["neg_elbo"]["per_seed"])
    assert np.all(nll <= elbo)
