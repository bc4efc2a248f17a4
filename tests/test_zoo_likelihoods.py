"""Decoder likelihoods `loss.reconstruction=continuous_bernoulli` and `gaussian_learned`: the continuous
Bernoulli's normalizer, density, mean and gradients against SciPy quadrature, float64 closed forms and
finite differences; the learned-sigma Gaussian against scipy.stats.norm; both trained end to end in a
tiny VAE and evaluated (importance-sampled -log p(x))."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from conftest import run_main, tiny_config
from jaxae import configs, evaluate, losses, train
from jaxae.variants import base

# Logits from lambda ~ 1e-7 to 1 - 1e-7, dense around 0 (lambda near 1/2) and on both sides of the
# Taylor switch at |l| = 0.5.
LOGITS = np.array([0.0, 1e-6, -1e-4, 1e-3, -0.01, 0.05, -0.2, 0.3, -0.45, 0.4999, -0.5, 0.5001, 0.6, -0.9, 1.0,
                   -2.0, 3.5, -7.0, 12.0, -16.0])


# Jitted: one compiled program each instead of one per primitive in eager mode.
log_norm = jax.jit(losses.continuous_bernoulli_log_norm)
log_prob = jax.jit(losses.continuous_bernoulli_log_prob)
cb_mean = jax.jit(losses.continuous_bernoulli_mean)


def _log_lambdas(l):
  """(log lambda, log(1 - lambda)) in float64, exact for extreme logits."""
  return -np.logaddexp(0.0, -l), -np.logaddexp(0.0, l)


def _quad_log_norm(l: float) -> float:
  """log C(lambda) = -log of the integral over [0, 1] of lambda^x (1 - lambda)^(1 - x), by quadrature."""
  a, b = _log_lambdas(l)
  val, _ = integrate.quad(lambda x: np.exp(x * a + (1 - x) * b), 0.0, 1.0, epsabs=0, epsrel=1e-13)
  return -np.log(val)


def _quad_mean(l: float) -> float:
  a, b = _log_lambdas(l)
  f = lambda x: np.exp(x * a + (1 - x) * b)
  return (integrate.quad(lambda x: x * f(x), 0.0, 1.0, epsabs=0, epsrel=1e-13)[0]
          / integrate.quad(f, 0.0, 1.0, epsabs=0, epsrel=1e-13)[0])


def _log_norm64(l):
  """The closed form of eq. 7 in float64 through lambda, log(2 atanh(1 - 2 lam) / (1 - 2 lam)); |l| > 1e-3."""
  lam = 1.0 / (1.0 + np.exp(-l))
  return np.log(2 * np.arctanh(1 - 2 * lam) / (1 - 2 * lam))


def test_log_normalizer_matches_quadrature():
  ours = np.asarray(log_norm(jnp.asarray(LOGITS, jnp.float32)), np.float64)
  ref = np.array([_quad_log_norm(l) for l in LOGITS])
  np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)
  assert ours[0] == pytest.approx(np.log(2.0), abs=1e-7)  # lambda = 1/2: the uniform density, C = 2


def test_density_integrates_to_one_and_mean_matches_quadrature():
  nodes, weights = np.polynomial.legendre.leggauss(200)
  x = 0.5 * (nodes + 1.0)  # Gauss-Legendre on [0, 1]: exact for these smooth densities to float rounding
  for l in LOGITS[np.abs(LOGITS) <= 12]:  # above, lambda^x decays like e^-12x: a 200-node rule still suffices
    logits = jnp.full((len(x), 1), l, jnp.float32)
    logp = np.asarray(log_prob(logits, jnp.asarray(x[:, None], jnp.float32)), np.float64)
    assert 0.5 * np.sum(weights * np.exp(logp)) == pytest.approx(1.0, abs=2e-6), l
  ours = np.asarray(cb_mean(jnp.asarray(LOGITS, jnp.float32)), np.float64)
  ref = np.array([_quad_mean(l) for l in LOGITS])
  np.testing.assert_allclose(ours, ref, rtol=0, atol=3e-7)  # a few float32 ulps
  lam99 = np.log(99.0)  # lambda = 0.99: the mean is far from lambda (paper, sec. 3)
  assert float(cb_mean(jnp.float32(lam99))) == pytest.approx(_quad_mean(lam99), abs=1e-6)


def test_log_prob_per_example_matches_float64_reference():
  rng = np.random.default_rng(0)
  logits = rng.normal(0, 3, (4, 5, 3)).astype(np.float32)
  logits[0, 0] = [0.0, 1e-3, -0.4]
  x = rng.random((4, 5, 3)).astype(np.float32)
  x[1, 0] = [0.0, 1.0, 0.5]
  a, b = _log_lambdas(logits.astype(np.float64))
  log_c = np.vectorize(_quad_log_norm)(logits.astype(np.float64))
  ref = np.sum(log_c + x * a + (1 - x) * b, axis=(1, 2))
  ours = np.asarray(log_prob(jnp.asarray(logits), jnp.asarray(x)), np.float64)
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-4)


def test_gradients_finite_at_zero_and_match_finite_differences():
  grad = jax.jit(jax.vmap(jax.grad(losses.continuous_bernoulli_log_norm)))
  g = np.asarray(grad(jnp.asarray(LOGITS, jnp.float32)), np.float64)
  assert np.isfinite(g).all() and g[0] == 0.0  # log C is even in the logit: slope 0 at l = 0
  h = 1e-5
  for l, gl in zip(LOGITS, g):
    if abs(l) < 1e-2:  # the float64 closed form cancels there; the series' slope is l/6
      assert gl == pytest.approx(l / 6, abs=1e-7), l
      continue
    fd = (_log_norm64(l + h) - _log_norm64(l - h)) / (2 * h)
    assert gl == pytest.approx(fd, rel=2e-5, abs=2e-7), l
  # An exponential family in the logit: d/dl log p(x | l) = x - E[x] (E[x] by quadrature).
  ls = np.array([0.0, 1e-3, 0.3, -0.5, 2.0, -9.0])
  xs = np.array([0.0, 0.37, 1.0])
  dl = jax.jit(jax.grad(lambda v: jnp.sum(losses.continuous_bernoulli_log_prob(v, jnp.asarray(xs, jnp.float32)[None, :]
                                                                       * jnp.ones_like(v)))))
  got = np.asarray(dl(jnp.asarray(np.repeat(ls[:, None], 3, axis=1), jnp.float32)))
  want = xs[None, :] - np.array([_quad_mean(l) for l in ls])[:, None]
  np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
  dm = jax.jit(jax.grad(losses.continuous_bernoulli_mean))(jnp.float32(0.0))
  assert float(dm) == pytest.approx(1 / 12, abs=1e-7)


def _net(config):
  return train.build_net(config, (4, 3, 1))


def _gaussian_learned_params(config, net, offset: float):
  params = jax.jit(net.init)(jax.random.key(0), jnp.zeros((1, 4, 3, 1)))
  head = params["params"][f"heads_{base.LIKELIHOOD_HEAD}"]
  assert set(head) == {"log_sigma_offset"} and float(head["log_sigma_offset"]) == 0.0
  inner = {**params["params"], f"heads_{base.LIKELIHOOD_HEAD}": {"log_sigma_offset": jnp.float32(offset)}}
  return {**params, "params": inner}


@pytest.mark.parametrize("output", ["sigmoid", "identity"])
def test_gaussian_learned_log_likelihood_matches_scipy(output):
  config = tiny_config("vae", loss__reconstruction="gaussian_learned", model__output=output)
  net = _net(config)
  params = _gaussian_learned_params(config, net, 0.3)
  rng = np.random.default_rng(1)
  logits = rng.normal(0, 1, (3, 4, 3, 1)).astype(np.float32)
  x = rng.random((3, 4, 3, 1)).astype(np.float32)
  hp = {"gaussian_sigma": jnp.float32(0.7), "beta": jnp.float32(1.0)}
  ours = np.asarray(jax.jit(base.decoder_log_likelihood(config, net))(params, jnp.asarray(logits), jnp.asarray(x), hp))
  mean = 1 / (1 + np.exp(-logits.astype(np.float64))) if output == "sigmoid" else logits.astype(np.float64)
  ref = stats.norm.logpdf(x, mean, 0.7 * np.exp(0.3)).reshape(3, -1).sum(axis=1)
  np.testing.assert_allclose(ours, ref, rtol=1e-5)
  model = base.standard_normal_model(config, net)
  with pytest.raises(ValueError, match="bound"):
    model.log_likelihood(jnp.asarray(logits), jnp.asarray(x), hp)
  bound = jax.jit(model.bound(params).log_likelihood)(jnp.asarray(logits), jnp.asarray(x), hp)
  np.testing.assert_allclose(np.asarray(bound), ref, rtol=1e-5)
  assert base.likelihood_heads(tiny_config("vae")) == {}  # the fixed likelihoods add no parameters


def test_continuous_bernoulli_through_base_and_deterministic_reconstruction():
  rng = np.random.default_rng(2)
  logits = rng.normal(0, 2, (3, 4, 3, 1)).astype(np.float32)
  x = rng.random((3, 4, 3, 1)).astype(np.float32)
  a, b = _log_lambdas(logits.astype(np.float64))
  ref = (np.vectorize(_quad_log_norm)(logits.astype(np.float64)) + x * a + (1 - x) * b).reshape(3, -1).sum(axis=1)
  config = tiny_config("vae", loss__reconstruction="continuous_bernoulli")
  net = _net(config)
  params = jax.jit(net.init)(jax.random.key(0), jnp.zeros((1, 4, 3, 1)))
  ours = jax.jit(base.decoder_log_likelihood(config, net))(params, jnp.asarray(logits), jnp.asarray(x), {})
  np.testing.assert_allclose(np.asarray(ours), ref, rtol=1e-5)
  vanilla = tiny_config("vanilla", loss__reconstruction="continuous_bernoulli")
  loss, metrics = jax.jit(base.reconstruction(vanilla, net))(jnp.asarray(logits), jnp.asarray(x))
  assert float(loss) == pytest.approx(-ref.mean(), rel=1e-5) and float(metrics["recon_nll"]) == float(loss)
  sig = 1 / (1 + np.exp(-logits.astype(np.float64)))
  assert float(metrics["recon_mse"]) == pytest.approx(np.mean((sig - x) ** 2), rel=1e-5)


def test_validation_refuses_what_cannot_work():
  with pytest.raises(configs.ConfigError, match="continuous_bernoulli.*model.output='sigmoid'"):
    tiny_config("vae", loss__reconstruction="continuous_bernoulli", model__output="identity")
  with pytest.raises(configs.ConfigError, match="gaussian_learned.*Gaussian-encoder"):
    tiny_config("vanilla", loss__reconstruction="gaussian_learned")
  with pytest.raises(configs.ConfigError, match="is not one of"):
    tiny_config("vae", loss__reconstruction="laplace")


TINY = ["--config.num_seeds=2", "--config.data.max_train=256", "--config.data.max_eval=64", "--config.train.batch_size=32",
        "--config.model.hidden=(64,32)", "--config.model.latent_dim=8", "--config.train.figures=False",
        "--config.train.progress=False", "--config.train.epochs=2", "--config.log.tensorboard=False"]


@pytest.mark.parametrize("kind", ["continuous_bernoulli", "gaussian_learned"])
def test_tiny_vae_trains_and_evaluates(kind, tmp_path, monkeypatch, capsys):
  wd = tmp_path / kind
  args = ["--config=configs/vae.py", f"--workdir={wd}", *TINY, f"--config.loss.reconstruction={kind}"]
  if kind == "gaussian_learned":
    args.append("--config.optimizer.learning_rate=3e-3")
  rc, out, err = run_main(monkeypatch, capsys, *args)
  assert rc == 0, err
  lines = [json.loads(s) for s in (wd / "metrics.jsonl").read_text().splitlines()]
  first, last = (np.asarray(lines[i]["train"]["loss"]) for i in (0, -1))
  assert np.all(last < first - 1.0), (first, last)  # nats per example
  summary = json.loads((wd / "summary.json").read_text())
  trained = {k: np.asarray(v["per_seed"]) for k, v in summary["settings"][0]["eval"].items()}
  res = evaluate.evaluate(str(wd), evaluate.Options(num_samples=20, figures=False, probes=False), quiet=True)
  e = {k: np.asarray(v["per_seed"]) for k, v in res["settings"][0]["eval"].items()}
  assert np.isfinite(e["nll"]).all()
  assert np.all(e["nll"] <= e["neg_elbo"] + 1e-3)  # log-mean-exp of the weights >= their mean
  # Training's one-sample held-out neg_elbo and evaluation's 20-sample one estimate the same number with the
  # same likelihood. The one-sample noise (64 examples) is about 1 nat for the Gaussian and 6 nats for the
  # continuous Bernoulli (sharp densities); evaluating another likelihood than the one trained (the Bernoulli's,
  # or sigma without its learned offset, ~30 nats here) would be farther off.
  np.testing.assert_allclose(e["neg_elbo"], trained["neg_elbo"], rtol=0, atol=25.0 if kind == "continuous_bernoulli" else 5.0)
  if kind == "continuous_bernoulli":
    # A density on [0, 1]^784 can exceed 1: -log p(x) of MNIST digits is negative, below the Bernoulli's 0 bound.
    assert np.all(e["nll"] < 0)
    assert "recon_mse_cb_mean" in trained
  else:
    from jaxae import load

    run = load.load_run(str(wd))
    offset = np.asarray(run.params["params"][f"heads_{base.LIKELIHOOD_HEAD}"]["log_sigma_offset"])
    assert offset.shape == (2,) and np.all(np.abs(offset) > 0.02)  # moved from its init 0 (sigma = 1)
    np.testing.assert_allclose(trained["decoder_sigma"], np.exp(offset), rtol=1e-6)


def test_continuous_bernoulli_refuses_inputs_outside_the_unit_interval(tmp_path, monkeypatch, capsys):
  args = ["--config=configs/vae.py", f"--workdir={tmp_path / 'std'}", *TINY,
          "--config.loss.reconstruction=continuous_bernoulli", "--config.data.normalize=standardize"]
  rc, out, err = run_main(monkeypatch, capsys, *args)
  assert rc != 0 and "continuous_bernoulli" in err and "[0, 1]" in err
