"""beta-TCVAE (Chen et al. 2018): the minibatch estimates of MI, TC and dimension-wise KL against brute-force
NumPy loops over (i, j, k), the MSS weights against their definition and against exact enumeration of
its expectation, the telescoping identity with the Monte Carlo KL, the loss against the one-sample negative
ELBO, and a beta sweep trained end to end through `jaxae.main` and evaluated."""

from __future__ import annotations

import itertools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import expit, logsumexp
from scipy.stats import norm

from conftest import ROOT, run_main, tiny_config
from jaxae import configs, evaluate, train
from jaxae.variants import beta_tcvae

# --- independent reference computations --------------------------------------------------------------


def weights_by_definition(m: int, n: int, estimator: str) -> np.ndarray:
  """w[i, j], written from Chen et al. 2018 appendix C entry by entry: MWS 1 / (N M); MSS (M' = M - 1)
  1 / N for the sample's own example, (N - M') / (N M') for one other (the next, cyclically), 1 / M' else."""
  w = np.zeros((m, m))
  for i in range(m):
    for j in range(m):
      if estimator == "mws":
        w[i, j] = 1.0 / (n * m)
      elif j == i:
        w[i, j] = 1.0 / n
      elif j == (i + 1) % m:
        w[i, j] = (n - (m - 1)) / (n * (m - 1))
      else:
        w[i, j] = 1.0 / (m - 1)
  return w


def terms_by_loops(z, mean, log_var, n: int, estimator: str) -> dict:
  """MI, TC, dimKL and the MC KL with explicit loops over samples i, examples j and units k (float64, SciPy)."""
  m, d = z.shape
  w = weights_by_definition(m, n, estimator)
  sd = np.exp(0.5 * log_var)
  logq = np.zeros((m, m, d))
  for i in range(m):
    for j in range(m):
      for k in range(d):
        logq[i, j, k] = norm.logpdf(z[i, k], loc=mean[j, k], scale=sd[j, k])
  mi = tc = dim_kl = kl_mc = 0.0
  for i in range(m):
    own = sum(logq[i, i, k] for k in range(d))  # log q(z_i | x_i)
    joint = math.log(sum(w[i, j] * math.exp(sum(logq[i, j, k] for k in range(d))) for j in range(m)))
    marginals = sum(math.log(sum(w[i, j] * math.exp(logq[i, j, k]) for j in range(m))) for k in range(d))
    prior = sum(norm.logpdf(z[i, k]) for k in range(d))
    mi += (own - joint) / m
    tc += (joint - marginals) / m
    dim_kl += (marginals - prior) / m
    kl_mc += (own - prior) / m
  return {"mi": mi, "tc": tc, "dim_kl": dim_kl, "kl_mc": kl_mc}


_decompose = jax.jit(beta_tcvae.decompose, static_argnums=(3, 4))  # num_train, estimator: Python values


def _batch(seed: int, m: int = 5, d: int = 3):
  rng = np.random.default_rng(seed)
  mean = rng.normal(scale=0.7, size=(m, d))
  log_var = rng.normal(scale=0.5, size=(m, d)) - 0.5
  z = mean + np.exp(0.5 * log_var) * rng.normal(size=(m, d))
  return z, mean, log_var


# --- the estimator ------------------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", ["mws", "mss"])
@pytest.mark.parametrize("m, n", [(1, 7), (2, 7), (5, 7), (5, 1000), (6, 6)])
def test_log_importance_weights_match_the_definition(estimator, m, n):
  got = np.exp(beta_tcvae.log_importance_weights(m, n, estimator).astype(np.float64))
  np.testing.assert_allclose(got, weights_by_definition(m, n, estimator), rtol=1e-6)


def test_mss_weights_make_an_unbiased_estimate_of_the_aggregate_posterior():
  """Appendix C.2's estimator is exact in expectation: over every ordered draw (without replacement) of the
  other M - 1 batch members from the other N - 1 examples, the mean of sum_j w_ij q(z | n_j) is
  (1/N) sum_n q(z | n), for each position i of the sample's own example in the batch. The MWS weights
  (rows summing to 1 / N) are not, by a factor of about 1 / N."""
  n, m = 6, 4
  q = np.random.default_rng(0).uniform(0.1, 2.0, size=n)  # q(z | n) of one fixed z, arbitrary
  target = q.mean()
  for estimator, factor in (("mss", 1.0), ("mws", None)):
    w = np.exp(beta_tcvae.log_importance_weights(m, n, estimator).astype(np.float64))
    for i in range(m):
      for own in range(n):
        draws = []
        for others in itertools.permutations([e for e in range(n) if e != own], m - 1):
          members = list(others[:i]) + [own] + list(others[i:])  # the batch, own example at position i
          draws.append(sum(w[i, j] * q[members[j]] for j in range(m)))
        if factor is not None:
          np.testing.assert_allclose(np.mean(draws), target, rtol=1e-6)
        else:
          assert not np.isclose(np.mean(draws), target, rtol=0.1)


def test_authors_weight_matrix_fills_columns_not_the_diagonal():
  """Why the MSS matrix is written from the definition: rtqichen/beta-tcvae's
  `_log_importance_weight_matrix` (W.view(-1)[::M+1] with M + 1 = batch size) puts 1 / N in column 0."""
  m, n = 5, 100
  authors = np.full(m * m, 1.0 / (m - 1))
  authors[::m] = 1.0 / n
  authors[1::m] = (n - (m - 1)) / (n * (m - 1))
  authors = authors.reshape(m, m)
  authors[m - 2, 0] = (n - (m - 1)) / (n * (m - 1))
  ours = np.exp(beta_tcvae.log_importance_weights(m, n, "mss").astype(np.float64))
  assert not np.allclose(authors, ours)
  np.testing.assert_allclose(np.diag(ours), 1.0 / n, rtol=1e-6)
  assert not np.allclose(np.diag(authors), 1.0 / n)


@pytest.mark.parametrize("estimator", ["mws", "mss"])
@pytest.mark.parametrize("seed, n", [(0, 50), (1, 5), (2, 60000)])
def test_terms_match_brute_force_loops(estimator, seed, n):
  z, mean, log_var = _batch(seed)
  got = _decompose(*(jnp.asarray(a, jnp.float32) for a in (z, mean, log_var)), n, estimator)
  want = terms_by_loops(z, mean, log_var, n, estimator)
  for name in ("mi", "tc", "dim_kl", "kl_mc"):
    np.testing.assert_allclose(float(got[name]), want[name], rtol=2e-5, atol=2e-5, err_msg=name)


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_terms_sum_to_the_monte_carlo_kl_of_the_same_samples(estimator):
  """MI + TC + dimKL = mean_i [log q(z_i|x_i) - log p(z_i)] for any weights: log q(z_i) and
  log prod_k q(z_ik) each enter once with + and once with - (they telescope), so the identity holds
  sample by sample, whatever the estimator, N or the batch. The right side is computed here directly."""
  for seed, n in ((3, 40), (4, 10**6)):
    z, mean, log_var = _batch(seed, m=7, d=4)
    got = _decompose(*(jnp.asarray(a, jnp.float32) for a in (z, mean, log_var)), n, estimator)
    mc_kl = np.mean(np.sum(norm.logpdf(z, mean, np.exp(0.5 * log_var)) - norm.logpdf(z), axis=1))
    np.testing.assert_allclose(float(got["mi"] + got["tc"] + got["dim_kl"]), mc_kl, rtol=1e-5, atol=1e-4)


# --- the loss -----------------------------------------------------------------------------------------


def _loss_setup(reconstruction: str, estimator: str):
  config = tiny_config("beta_tcvae", loss__reconstruction=reconstruction, loss__tc_estimator=estimator,
                       model__hidden=(7,), model__latent_dim=3,
                       model__output="sigmoid" if reconstruction == "bce" else "identity")
  net = train.build_net(config, (6,))
  params = net.init(jax.random.key(1), jnp.zeros((1, 6)))
  x = np.random.default_rng(5).uniform(size=(5, 6)).astype(np.float32)
  return config, net, params, x


@pytest.mark.parametrize("reconstruction, estimator", [("bce", "mss"), ("mse", "mws")])
def test_loss_is_the_weighted_decomposition_and_with_unit_weights_the_negative_elbo(reconstruction, estimator):
  config, net, params, x = _loss_setup(reconstruction, estimator)
  loss_fn = beta_tcvae.make_loss(config, net)
  key = jax.random.key(11)
  num_train = 40
  batch = {"x": jnp.asarray(x), "y": jnp.zeros(5, jnp.int32), "step": jnp.zeros([], jnp.int32), "num_train": num_train}
  # The same sample z = mean + sigma * eps the loss draws, rebuilt from its key; all else in float64 NumPy.
  mean, log_var = (np.asarray(a, np.float64) for a in net.encode(params, jnp.asarray(x)))
  eps = np.asarray(jax.random.normal(jax.random.fold_in(key, beta_tcvae.REPARAMETERIZATION_SALT), (5, 3)), np.float64)
  z = mean + np.exp(0.5 * log_var) * eps
  out = np.asarray(net.decode(params, jnp.asarray(z, jnp.float32)), np.float64)
  sigma = 0.5
  if reconstruction == "bce":
    log_px = np.sum(x * np.log(expit(out)) + (1 - x) * np.log(expit(-out)), axis=1)
  else:
    log_px = np.sum(norm.logpdf(x, loc=out, scale=sigma), axis=1)
  mc_kl = np.sum(norm.logpdf(z, mean, np.exp(0.5 * log_var)) - norm.logpdf(z), axis=1)
  neg_elbo_mc = np.mean(-log_px + mc_kl)
  closed_kl = np.mean(0.5 * np.sum(mean**2 + np.exp(log_var) - 1 - log_var, axis=1))
  terms = terms_by_loops(z, mean, log_var, num_train, estimator)

  # num_train stays a Python int (static), as in train_step; the weights are traced, as in a sweep.
  jitted = jax.jit(lambda p, h, b, k: loss_fn(p, h, {**b, "num_train": num_train}, k, True))

  def run(alpha, beta, gamma):
    hp = {"tc_alpha": jnp.float32(alpha), "tc_beta": jnp.float32(beta), "tc_gamma": jnp.float32(gamma),
          "gaussian_sigma": jnp.float32(sigma)}
    loss, metrics = jitted(params, hp, {k: v for k, v in batch.items() if k != "num_train"}, key)
    return float(loss), {k: float(v) for k, v in metrics.items()}

  loss, metrics = run(1.0, 1.0, 1.0)
  np.testing.assert_allclose(loss, neg_elbo_mc, rtol=1e-5)
  np.testing.assert_allclose(metrics["recon_nll"], -np.mean(log_px), rtol=1e-5)
  np.testing.assert_allclose(metrics["kl"], closed_kl, rtol=1e-5)
  np.testing.assert_allclose(metrics["neg_elbo"], -np.mean(log_px) + closed_kl, rtol=1e-5)
  for name in ("mi", "tc", "dim_kl"):
    np.testing.assert_allclose(metrics[name], terms[name], rtol=2e-5, atol=2e-5, err_msg=name)
  loss, _ = run(2.0, 6.0, 0.5)
  want = -np.mean(log_px) + 2.0 * terms["mi"] + 6.0 * terms["tc"] + 0.5 * terms["dim_kl"]
  np.testing.assert_allclose(loss, want, rtol=1e-5, atol=1e-4)


def test_unknown_estimator_is_a_one_line_config_error():
  config = tiny_config("beta_tcvae")
  config.loss.tc_estimator = "iwae"
  with pytest.raises(configs.ConfigError, match=r"^loss.tc_estimator='iwae' is not one of 'mws', 'mss'$"):
    configs.validate(config)


# --- end to end ---------------------------------------------------------------------------------------

TINY = ["--config.num_seeds=2", "--config.data.max_train=256", "--config.data.max_eval=64", "--config.train.batch_size=32",
        "--config.model.hidden=(64,32)", "--config.model.latent_dim=8", "--config.train.figures=False",
        "--config.train.progress=False"]


def test_beta_sweep_lowers_heldout_total_correlation_and_evaluates(tmp_path, monkeypatch, capsys):
  """beta = 1 and beta = 6 in one program, the same seeds (same initialization and data order) in each.
  12 epochs of 8 steps: by then the posterior has left the prior (with 2 epochs every term is ~0.01 nats
  and no setting differs), and the TC-penalized members hold a clearly lower held-out TC."""
  wd = tmp_path / "run"
  rc, out, err = run_main(monkeypatch, capsys, f"--config={ROOT / 'configs' / 'beta_tcvae.py'}", f"--workdir={wd}",
                          *TINY, "--config.train.epochs=12", '--config.sweep={"loss.tc_beta": [1.0, 6.0]}')
  assert rc == 0, err
  summary = json.loads((wd / "summary.json").read_text())
  plain, penalized = summary["settings"]
  assert plain["setting"] == {"loss.tc_beta": 1.0} and penalized["setting"] == {"loss.tc_beta": 6.0}
  ev = [{k: np.asarray(v["per_seed"]) for k, v in s["eval"].items()} for s in (plain, penalized)]
  assert np.all(ev[1]["tc"] < ev[0]["tc"]), (ev[0]["tc"], ev[1]["tc"])  # seed by seed
  assert ev[1]["tc"].mean() < 0.8 * ev[0]["tc"].mean()
  for e, beta in zip(ev, (1.0, 6.0)):  # each member's loss carries its own beta
    np.testing.assert_allclose(e["loss"], e["recon_nll"] + e["mi"] + beta * e["tc"] + e["dim_kl"], rtol=1e-5)
    assert np.all(e["tc"] > 0.05)  # the test means something: TC has grown
  result = evaluate.evaluate(str(wd), evaluate.Options(num_samples=20, figures=False, probes=False), quiet=True)
  for s, e in zip(result["settings"], ev):
    got = {k: np.asarray(v["per_seed"]) for k, v in s["eval"].items()}
    assert np.all(np.isfinite(got["nll"])) and np.all(got["nll"] > 50)
    assert np.all(got["nll"] <= got["neg_elbo"] + 1e-3)  # the IWAE bound is at least as tight as the ELBO
    # Its ELBO (K samples, MC KL) and the run's (one sample, closed-form KL) estimate the same number.
    np.testing.assert_allclose(got["neg_elbo"], e["neg_elbo"], atol=2.0)
    np.testing.assert_allclose(got["kl"], e["kl"], atol=0.5)
