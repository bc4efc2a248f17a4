"""VampPrior (Tomczak & Welling 2018) and flow posteriors (planar: Rezende & Mohamed 2015; IAF: Kingma et al.
2016), and the LatentModel.bind / posterior path of jaxae.evaluate they rely on.

Checked against independent computations: SciPy Gaussian densities (mixture prior, the flow's base density),
Monte Carlo moments, Jacobians by jax.jacfwd and their slogdet (the flows' log-determinants), brute-force
MADE connectivity, NumPy re-implementations of the flows, and a NumPy importance-sampling estimate for
evaluate._iwae_member; two tiny end-to-end runs through `jaxae.main` and `jaxae.evaluate`.
"""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

from conftest import ROOT, run_main, tiny_config
from jaxae import evaluate, train
from jaxae.variants import vae_flow, vamp

TINY = ["--config.num_seeds=2", "--config.data.max_train=256", "--config.data.max_eval=64", "--config.train.batch_size=32",
        "--config.model.hidden=(64,32)", "--config.model.latent_dim=8", "--config.train.figures=False",
        "--config.train.progress=False", "--config.train.epochs=2"]


def _scipy_mixture(z, means, log_vars):
  """log (1/K) sum_k N(z; mean_k, diag var_k) with SciPy, float64: z (N, d) -> (N,)."""
  per = np.stack([stats.multivariate_normal(m, np.diag(np.exp(lv))).logpdf(z) for m, lv in
                  zip(np.asarray(means, np.float64), np.asarray(log_vars, np.float64))], axis=-1)
  return logsumexp(per.reshape(len(z), -1), axis=-1) - np.log(len(means))


@functools.lru_cache(maxsize=None)
def _setup(name, **overrides):
  """(config, net, params, jitted encode, jitted decode) of a tiny network for (28, 28, 1) images; tests
  change parameters on copies (`_params`)."""
  config = tiny_config(name, **overrides)
  net = train.build_net(config, (28, 28, 1))
  # Random parameters of the network's shapes from NumPy (compiling net.init costs more than the tests).
  rng = np.random.default_rng(0)
  shapes = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
  params = jax.tree.map(lambda a: jnp.asarray(rng.normal(0, 1 / np.sqrt(a.shape[0]), a.shape), jnp.float32), shapes)
  return config, net, params, jax.jit(net.encode), jax.jit(net.decode)


VAMP = dict(vamp__num_pseudo=5)  # the network of the VampPrior tests
FLOW = dict(flow__kind="planar", flow__length=3, flow__hidden=16)  # the network of the planar-flow tests


def _params(params, head, values):
  """A copy of `params` with the head's parameters replaced by `values` ({name: array})."""
  out = jax.tree.map(lambda a: a, params)
  out["params"][f"heads_{head}"] = {k: jnp.asarray(v, jnp.float32) for k, v in values.items()}
  return out


def _bernoulli_ll(logits, x):
  """log p(x | z) of a Bernoulli decoder in float64 NumPy: (N, *shape) -> (N,)."""
  l, x = np.asarray(logits, np.float64).reshape(len(logits), -1), np.asarray(x, np.float64).reshape(len(x), -1)
  return np.sum(x * -np.logaddexp(0, -l) + (1 - x) * -np.logaddexp(0, l), axis=-1)


class _Spy:
  """The network, recording what the loss feeds to the flow head and to the decoder."""

  def __init__(self, net):
    self.net, self.seen = net, {}

  def __getattr__(self, name):
    return getattr(self.net, name)

  def head(self, params, name, z, key=None, train=False):
    self.seen["z0"] = z
    return self.net.head(params, name, z, key, train)

  def decode(self, params, z, key=None, train=False):
    self.seen["z"] = z
    return self.net.decode(params, z, key, train)


# --- VampPrior ----------------------------------------------------------------------------------------------


def test_mixture_log_density_matches_scipy():
  rng = np.random.default_rng(0)
  k, d = 7, 3
  means, log_vars = rng.normal(0, 2, (k, d)), rng.normal(0, 1, (k, d))
  z = rng.normal(0, 3, (40, d))
  # Leading axes are kept: (2, 20, d) -> (2, 20).
  got = jax.jit(vamp.mixture_log_density)(jnp.asarray(z.reshape(2, 20, d), jnp.float32), jnp.asarray(means, jnp.float32),
                                          jnp.asarray(log_vars, jnp.float32))
  assert got.shape == (2, 20)
  np.testing.assert_allclose(np.asarray(got).ravel(), _scipy_mixture(z, means, log_vars), rtol=1e-5, atol=1e-4)


def test_bound_vampprior_is_the_mixture_of_the_encoded_pseudo_inputs():
  config, net, params, encode, decode = _setup("vamp", **VAMP)
  assert params["params"]["heads_pseudo_inputs"]["pseudo_inputs"].shape == (5, 28, 28, 1)
  # Random pseudo-inputs beyond [0, 1]: the Bernoulli model's head clips them (the authors' hardtanh).
  u = np.random.default_rng(1).uniform(-0.5, 1.5, (5, 28, 28, 1))
  params = _params(params, "pseudo_inputs", {"pseudo_inputs": u})
  means, log_vars = encode(params, jnp.asarray(np.clip(u, 0, 1), jnp.float32))
  z = np.random.default_rng(2).normal(0, 1.5, (30, 8))
  x = np.random.default_rng(3).uniform(0, 1, (3, 28, 28, 1)).astype(np.float32)
  logits = decode(params, jnp.asarray(z[:3], jnp.float32))

  @jax.jit
  def bound(params, z, logits, x):
    model = vamp.latent_model(config, net).bound(params)
    return model.log_prior(z), model.log_likelihood(logits, x, {"gaussian_sigma": 1.0})

  log_prior, log_lik = bound(params, jnp.asarray(z, jnp.float32), logits, x)
  np.testing.assert_allclose(log_prior, _scipy_mixture(z, means, log_vars), rtol=1e-5, atol=1e-3)
  np.testing.assert_allclose(log_lik, _bernoulli_ll(logits, x), rtol=1e-5)  # the Bernoulli decoder's
  model = vamp.latent_model(config, net)
  assert model.bound(params).kl_per_unit is None and model.bound(params).posterior is None
  with pytest.raises(ValueError, match="bound"):
    model.log_prior(jnp.zeros((1, 8)))


def test_mixture_sample_component_moments():
  """Well-separated components: samples assigned to the nearest mean have 1/K of the mass each and the
  component's mean and variance (Monte Carlo, ~5 standard errors)."""
  means = np.array([[-20.0, 0.0, 5.0], [0.0, 20.0, -5.0], [20.0, -20.0, 0.0], [0.0, 0.0, 30.0]])
  log_vars = np.log(np.array([[1.0, 0.25, 4.0], [0.5, 2.0, 1.0], [3.0, 1.0, 0.1], [1.0, 1.0, 1.0]]))
  n = 80_000
  sample = jax.jit(vamp.mixture_sample, static_argnums=1)
  z = np.asarray(sample(jax.random.key(0), (n, 3), jnp.asarray(means, jnp.float32),
                        jnp.asarray(log_vars, jnp.float32)), np.float64)
  which = np.argmin(((z[:, None] - means[None]) ** 2).sum(-1), axis=1)
  frac = np.bincount(which, minlength=4) / n
  np.testing.assert_allclose(frac, 0.25, atol=5 * np.sqrt(0.25 * 0.75 / n))
  for k in range(4):
    zk = z[which == k]
    var = np.exp(log_vars[k])
    np.testing.assert_allclose(zk.mean(0), means[k], atol=5 * np.sqrt(var / len(zk)).max())
    np.testing.assert_allclose(zk.var(0), var, rtol=5 * np.sqrt(2 / len(zk)))
  # Leading axes: (2, 5, d).
  assert jax.eval_shape(lambda: vamp.mixture_sample(jax.random.key(1), (2, 5, 3), jnp.asarray(means), jnp.asarray(log_vars))).shape == (2, 5, 3)


def test_bound_sample_prior_samples_the_encoded_components():
  """The bound model's sample_prior: components far apart (the encoder's mean layer scaled up), samples
  assigned to the nearest component mean have 1/K of the mass each and that component's mean and variance."""
  config, net, params, encode, _ = _setup("vamp", **VAMP)
  u = np.random.default_rng(4).uniform(0, 1, (5, 28, 28, 1))
  params = _params(params, "pseudo_inputs", {"pseudo_inputs": u})
  params["params"]["encoder"] = dict(params["params"]["encoder"])
  params["params"]["encoder"]["latent"] = {k: 200 * v for k, v in params["params"]["encoder"]["latent"].items()}
  means, log_vars = (np.asarray(a, np.float64) for a in encode(params, jnp.asarray(u, jnp.float32)))
  gaps = np.linalg.norm(means[:, None] - means[None], axis=-1) + 1e9 * np.eye(5)
  assert gaps.min() > 12 * np.exp(0.5 * log_vars).max()  # well separated: nearest-mean assignment is exact
  n = 50_000
  sample = jax.jit(lambda params, key: vamp.latent_model(config, net).bound(params).sample_prior(key, (n, 8)))
  z = np.asarray(sample(params, jax.random.key(3)), np.float64)
  which = np.argmin(((z[:, None] - means[None]) ** 2).sum(-1), axis=1)
  np.testing.assert_allclose(np.bincount(which, minlength=5) / n, 0.2, atol=5 * np.sqrt(0.2 * 0.8 / n))
  for k in range(5):
    zk, var = z[which == k], np.exp(log_vars[k])
    np.testing.assert_allclose(zk.mean(0), means[k], atol=5 * np.sqrt(var / len(zk)).max())
    np.testing.assert_allclose(zk.var(0), var, rtol=5 * np.sqrt(2 / len(zk)))


def test_pseudo_inputs_head_init_and_default():
  assert tiny_config("vamp").vamp.num_pseudo == 50  # the default K
  head = vamp.PseudoInputs(50, (28, 28, 1), clip=True)
  u = np.asarray(jax.jit(head.init)(jax.random.key(0), None)["params"]["pseudo_inputs"])
  assert u.shape == (50, 28, 28, 1)
  assert abs(u.mean() - 0.05) < 1e-3 and abs(u.std() - 0.01) < 1e-3  # N(0.05, 0.01^2)
  outside = {"params": {"pseudo_inputs": jnp.asarray([[-0.5, 0.3, 1.7]])}}
  np.testing.assert_allclose(vamp.PseudoInputs(1, (3,), clip=True).apply(outside), [[0.0, 0.3, 1.0]], rtol=1e-6)
  np.testing.assert_allclose(vamp.PseudoInputs(1, (3,), clip=False).apply(outside), [[-0.5, 0.3, 1.7]], rtol=1e-6)


def test_vamp_loss_is_the_single_sample_elbo_with_the_mixture_prior():
  """metrics['kl'] = mean_i log N(z_i; mean_i, var_i) - log p_vamp(z_i) with z_i recovered from the decoder
  input (SciPy densities), loss = recon_nll + beta * kl, and the pseudo-inputs get a gradient only through
  the KL (beta)."""
  config, net, params, encode, decode = _setup("vamp", **VAMP)
  u = np.random.default_rng(5).uniform(0, 1, (5, 28, 28, 1))
  params = _params(params, "pseudo_inputs", {"pseudo_inputs": u})
  x = jnp.asarray(np.random.default_rng(5).uniform(0, 1, (6, 28, 28, 1)), jnp.float32)
  key = jax.random.key(9)

  def loss(params, beta):
    spy = _Spy(net)
    value, metrics = vamp.make_loss(config, spy)(params, {"beta": beta, "gaussian_sigma": 1.0}, {"x": x}, key, True)
    return value, (metrics, spy.seen["z"])

  grad = jax.jit(jax.value_and_grad(loss, has_aux=True))
  (value, (m, z)), g = grad(params, 0.5)
  z = np.asarray(z, np.float64)
  mean, log_var = (np.asarray(a, np.float64) for a in encode(params, x))
  means, log_vars = encode(params, jnp.asarray(u, jnp.float32))
  log_q = np.array([stats.multivariate_normal(mean[i], np.diag(np.exp(log_var[i]))).logpdf(z[i]) for i in range(6)])
  kl = np.mean(log_q - _scipy_mixture(z, means, log_vars))
  nll = -np.mean(_bernoulli_ll(decode(params, jnp.asarray(z, jnp.float32)), x))
  np.testing.assert_allclose([m["kl"], m["recon_nll"], value], [kl, nll, nll + 0.5 * kl], rtol=1e-4, atol=1e-3)
  g_u = np.asarray(g["params"]["heads_pseudo_inputs"]["pseudo_inputs"])
  assert np.isfinite(g_u).all() and np.abs(g_u).max() > 0  # the prior is learned
  g0 = grad(params, 0.0)[1]["params"]["heads_pseudo_inputs"]["pseudo_inputs"]
  assert np.abs(np.asarray(g0)).max() == 0  # beta = 0: the pseudo-inputs are out of the loss


# --- flows ----------------------------------------------------------------------------------------------


def _random_flow(kind, length, d, seed, hidden=8, mild=False):
  """Random flow parameters that make every step far from the identity; `mild`: moderately far (Jacobians
  well enough conditioned for finite differences in float64)."""
  rng = np.random.default_rng(seed)
  f = lambda *s, scale=1.0: jnp.asarray(rng.normal(0, scale, s), jnp.float32)
  if kind == "planar":
    w = f(length, d, scale=0.5 if mild else 1.0)
    u = (0.0 if mild else -3.0) * w + f(length, d)  # not mild: w.u << -1 for some steps, u_hat must repair them
    return dict(u=u, w=w, b=f(length, scale=0.5))
  return dict(w1=f(length, d, hidden), b1=f(length, hidden, scale=0.3),
              w2=f(length, hidden, 2 * d, scale=0.2 if mild else 0.5), b2=f(length, 2 * d, scale=0.5))


def _flow(kind, p):
  return (lambda z: vae_flow.planar_flow(z, **p)) if kind == "planar" else (lambda z: vae_flow.iaf_flow(z, **p))


@pytest.mark.parametrize("kind", ["planar", "iaf"])
@pytest.mark.parametrize("length", [1, 2, 5])
def test_flow_log_det_matches_slogdet_of_the_jacobian(kind, length):
  d = 4
  with jax.enable_x64(True):  # float64: the Jacobians of long flows are ill-conditioned in float32
    p = {k: jnp.asarray(v, jnp.float64) for k, v in _random_flow(kind, length, d, seed=length).items()}
    z = jnp.asarray(np.random.default_rng(7).normal(0, 1.5, (6, d)), jnp.float64)

    @jax.jit
    def both(p, z):
      fn = _flow(kind, p)
      return fn(z)[1], jax.vmap(jax.jacfwd(lambda v: fn(v)[0]))(z)  # (6,), (6, d, d)

    log_det, jac = both(p, z)
    sign, logabs = np.linalg.slogdet(np.asarray(jac))
  assert (sign > 0).all()  # both flows are orientation-preserving (planar: w.u_hat >= -1)
  np.testing.assert_allclose(log_det, logabs, rtol=1e-7, atol=1e-7)
  assert np.abs(logabs).max() > 0.1  # a non-trivial map


def test_planar_u_hat_satisfies_the_invertibility_condition():
  rng = np.random.default_rng(8)
  w = rng.normal(0, 1, (200, 5))
  u = rng.normal(0, 1, (200, 5)) + rng.uniform(-10, 10, (200, 1)) * w  # w.u from very negative to very positive
  u_hat = np.asarray(jax.jit(vae_flow.planar_u_hat)(jnp.asarray(u, jnp.float32), jnp.asarray(w, jnp.float32)), np.float64)
  wu = np.sum(w * u, axis=1)
  w_uhat = np.sum(w * u_hat, axis=1)
  scale = np.linalg.norm(w, axis=1) * np.linalg.norm(u, axis=1)  # float32 rounding of u_hat is relative to this
  assert (w_uhat >= -1 - 1e-6 * scale).all() and (wu < -1).sum() > 50
  np.testing.assert_allclose(w_uhat, -1 + np.logaddexp(0, wu), atol=1e-6 * scale.max())  # m(w.u), appendix A.1
  # Only the component along w changes.
  perp = u_hat - u - ((u_hat - u) * w).sum(1, keepdims=True) * w / (w * w).sum(1, keepdims=True)
  np.testing.assert_allclose(perp, 0, atol=1e-4)
  # Invertible: where w.u < -1 (the raw u would fold the line z = t w/|w| over itself, its slope 1 + h' w.u
  # negative near w.z + b = 0), f along that line is strictly increasing.
  t = np.linspace(-6, 6, 2001)
  rows = np.flatnonzero((wu < -1) & (wu > -4))[:10]
  assert len(rows) >= 5
  one_step = jax.jit(jax.vmap(lambda line, u, w: vae_flow.planar_flow(line, u[None], w[None], jnp.asarray([0.3]))[0]))
  n = w[rows] / np.linalg.norm(w[rows], axis=1, keepdims=True)
  lines = t[None, :, None] * n[:, None]  # (rows, 2001, 5)
  out = np.asarray(one_step(jnp.asarray(lines, jnp.float32), jnp.asarray(u[rows], jnp.float32),
                            jnp.asarray(w[rows], jnp.float32)), np.float64)
  assert (np.diff(np.einsum("rtd,rd->rt", out, n), axis=1) > 0).all()
  for i, n in zip(rows, n):
    folded = t[:, None] * n + np.tanh(t[:, None] * np.linalg.norm(w[i]) + 0.3) * u[i]  # with u instead of u_hat
    assert (np.diff(folded @ n) < 0).any()


@pytest.mark.parametrize("d, hidden", [(1, 4), (2, 3), (5, 4), (5, 16), (6, 2)])
def test_made_masks_are_autoregressive(d, hidden):
  m1, m2 = vae_flow.made_masks(d, hidden)
  assert m1.shape == (d, hidden) and m2.shape == (hidden, d)
  # Brute force: input j reaches output i through some hidden unit.
  reach = np.array([[any(m1[j, k] and m2[k, i] for k in range(hidden)) for i in range(d)] for j in range(d)])
  lower = np.array([[j < i for i in range(d)] for j in range(d)])
  assert not (reach & ~lower).any()  # never j >= i
  if hidden >= d - 1:
    assert (reach == lower).all()  # and every j < i when each degree 1..d-1 has a hidden unit


@pytest.mark.parametrize("d", [1, 3, 6])
def test_iaf_jacobians_are_triangular(d):
  p = _random_flow("iaf", 1, d, seed=d, hidden=8)
  one = {k: v[0] for k, v in p.items()}
  z = jnp.asarray(np.random.default_rng(d).normal(0, 1, (d,)), jnp.float32)
  @jax.jit
  def jacobians(one, z):
    return (*jax.jacfwd(lambda v: vae_flow.made(v, **one))(z), jax.jacfwd(lambda v: vae_flow.iaf_step(v, **one)[0])(z),
            vae_flow.made(z, **one)[1])

  jm, js, jac, s = (np.asarray(a, np.float64) for a in jacobians(one, z))
  upper = np.triu(np.ones((d, d), bool))  # (output i, input j) with j >= i
  assert (jm[upper] == 0).all() and (js[upper] == 0).all()
  if d > 1:
    assert np.abs(jm[~upper]).min() > 0 and np.abs(js[~upper]).min() > 0  # dense below the diagonal
  assert (jac[np.triu(np.ones((d, d), bool), 1)] == 0).all()
  sigma = 1 / (1 + np.exp(-s))
  np.testing.assert_allclose(np.diag(jac), sigma, rtol=1e-5)


def _numpy_flow(kind, p, z):
  """The flows re-implemented in float64 NumPy from the papers' formulas (MADE masks by the degree rule)."""
  p = {k: np.asarray(v, np.float64) for k, v in p.items()}
  z = np.asarray(z, np.float64)
  if kind == "planar":
    for u, w, b in zip(p["u"], p["w"], p["b"]):
      wu = w @ u
      u_hat = u + (-1 + np.logaddexp(0, wu) - wu) * w / (w @ w)
      z = z + np.tanh(z @ w + b)[..., None] * u_hat
    return z
  d = z.shape[-1]
  steps, _, hidden = p["w1"].shape
  deg = [k % max(d - 1, 1) + 1 for k in range(hidden)]
  for t in range(steps):
    m1 = np.array([[1.0 if deg[k] >= j + 1 else 0.0 for k in range(hidden)] for j in range(d)])
    m2 = np.array([[1.0 if i + 1 > deg[k] else 0.0 for i in range(d)] for k in range(hidden)])
    h = z @ (p["w1"][t] * m1) + p["b1"][t]
    h = np.where(h > 0, h, np.expm1(np.minimum(h, 0)))
    out = h @ (p["w2"][t] * np.concatenate([m2, m2], 1)) + p["b2"][t]
    sigma = 1 / (1 + np.exp(-out[..., d:]))
    z = sigma * z + (1 - sigma) * out[..., :d]
    if t < steps - 1:
      z = z[..., ::-1]
  return z


def _fd_log_det(kind, p, z0, h=1e-6):
  """log|det J| of the NumPy flow at z0 (..., d) by central differences in float64, and the sign of det J."""
  d = z0.shape[-1]
  steps = np.concatenate([np.eye(d), -np.eye(d)]) * h  # (2d, d)
  moved = _numpy_flow(kind, p, z0[..., None, :] + steps)  # (..., 2d, d)
  jac = np.swapaxes((moved[..., :d, :] - moved[..., d:, :]) / (2 * h), -1, -2)  # (..., out, in)
  sign, log_abs = np.linalg.slogdet(jac)
  return log_abs, sign


@pytest.mark.parametrize("kind, length", [("planar", FLOW["flow__length"]), ("iaf", 2)])
def test_flow_posterior_and_loss_are_the_change_of_variables(kind, length):
  """bind(params).posterior: z_K = flow(z_0) (NumPy flow), log q = log N(z_0; mean, var) (SciPy) - log|det J|
  (central differences of the NumPy flow), z_0 = mean + std * eps, eps = normal(key_i, (num, d)); the loss is
  -log p(x|z_K) + beta [log q(z_K|x) - log N(z_K; 0, I)] at its own sample, computed the same way."""
  config, net, params, encode, decode = _setup("vae_flow", flow__kind=kind, flow__length=length, flow__hidden=16)
  p = _random_flow(kind, length, 8, seed=11, hidden=16, mild=True)
  params = _params(params, "flow", p)
  x = jnp.asarray(np.random.default_rng(6).uniform(0, 1, (3, 28, 28, 1)), jnp.float32)
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(4), i))(jnp.arange(3))
  num = 5
  model = vae_flow.latent_model(config, net).bound(params)
  assert model.posterior is not None and model.kl_per_unit is None and model.bind is None

  @jax.jit
  def run(params, x, keys):
    z, log_q = vae_flow.latent_model(config, net).bound(params).posterior(x, keys, num)
    spy = _Spy(net)
    loss, metrics = vae_flow.make_loss(config, spy)(params, {"beta": 0.7, "gaussian_sigma": 1.0}, {"x": x},
                                                    jax.random.key(8), True)
    return z, log_q, vae_flow.make_code(config, net)(params, x), loss, metrics, spy.seen

  z, log_q, code, loss, metrics, seen = run(params, x, keys)
  assert z.shape == (3, num, 8) and log_q.shape == (3, num)
  mean, log_var = (np.asarray(a, np.float64) for a in encode(params, x))
  q0 = [stats.multivariate_normal(mean[i], np.diag(np.exp(log_var[i]))) for i in range(3)]
  eps = np.asarray(jax.vmap(lambda k: jax.random.normal(k, (num, 8)))(keys), np.float64)
  z0 = mean[:, None] + np.exp(0.5 * log_var)[:, None] * eps
  np.testing.assert_allclose(z, _numpy_flow(kind, p, z0), rtol=1e-4, atol=1e-4)
  log_abs, sign = _fd_log_det(kind, p, z0)
  assert (sign > 0).all()
  expected = np.stack([q0[i].logpdf(z0[i]) - log_abs[i] for i in range(3)])
  np.testing.assert_allclose(log_q, expected, rtol=1e-4, atol=2e-3)
  assert np.abs(log_abs).mean() > 0.2  # the flow matters (log_q is checked to 2e-3)
  # make_code: the encoder mean pushed through the flow.
  np.testing.assert_allclose(code, _numpy_flow(kind, p, mean), rtol=1e-4, atol=1e-4)
  # The loss at its own sample z_0 (B, d): z_K, log q(z_K|x) and the ELBO's terms recomputed.
  z0, zk = (np.asarray(seen[k], np.float64) for k in ("z0", "z"))
  np.testing.assert_allclose(zk, _numpy_flow(kind, p, z0), rtol=1e-4, atol=1e-4)
  log_det = _fd_log_det(kind, p, z0)[0]
  kl = np.mean([q0[i].logpdf(z0[i]) - log_det[i] - stats.multivariate_normal(np.zeros(8)).logpdf(zk[i])
                for i in range(3)])
  nll = -np.mean(_bernoulli_ll(decode(params, jnp.asarray(zk, jnp.float32)), x))
  np.testing.assert_allclose([metrics["kl"], metrics["recon_nll"], metrics["log_det"], loss],
                             [kl, nll, log_det.mean(), nll + 0.7 * kl], rtol=1e-4, atol=2e-3)


def _iwae_numpy(decode, log_prior, x, keys, num_samples, chunk, proposal):
  """(log (1/K) sum_k w_k, mean_k w_k), w = log p(x|z_k) + log p(z_k) - log q(z_k|x), in NumPy from the
  proposal's samples of each chunk c (keys fold_in(key_i, c))."""
  b = len(x)
  ws = []
  for c in range(-(-num_samples // chunk)):
    ck = jax.vmap(lambda k: jax.random.fold_in(k, c))(keys)
    z, log_q = (np.asarray(a, np.float64) for a in proposal(ck, chunk))
    logits = decode(jnp.asarray(z.reshape(b * chunk, -1), jnp.float32))
    ll = _bernoulli_ll(logits, np.repeat(np.asarray(x), chunk, axis=0)).reshape(b, chunk)
    ws.append(ll + log_prior(z.reshape(b * chunk, -1)).reshape(b, chunk) - log_q)
  w = np.concatenate(ws, axis=1)[:, :num_samples]
  return logsumexp(w, axis=1) - np.log(num_samples), w.mean(1)


def _iwae_member(net, model, params, x, keys, num_samples=7, chunk=3):
  """evaluate._iwae_member, jitted: K = 7 in chunks of 3 (the last one partial)."""
  fn = jax.jit(lambda params, x, keys: evaluate._iwae_member(net, model, num_samples, chunk, params,
                                                             {"gaussian_sigma": jnp.float32(1.0)}, x, keys)[:2])
  return fn(params, x, keys)


X_IS = jnp.asarray(np.random.default_rng(9).uniform(0, 1, (2, 28, 28, 1)) > 0.5, jnp.float32)
KEYS_IS = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(5), i))(jnp.arange(2))


def test_iwae_member_binds_the_vampprior():
  """evaluate._iwae_member with the VampPrior: the encoder's Gaussian proposal and the mixture's SciPy density."""
  config, net, params, encode, decode = _setup("vamp", **VAMP)
  u = np.random.default_rng(0).uniform(0, 1, (5, 28, 28, 1))
  params = _params(params, "pseudo_inputs", {"pseudo_inputs": u})
  means, log_vars = encode(params, jnp.asarray(u, jnp.float32))
  mean, log_var = (np.asarray(a, np.float64) for a in encode(params, X_IS))

  def gaussian(ck, chunk):
    eps = np.asarray(jax.vmap(lambda k: jax.random.normal(k, (chunk, 8)))(ck), np.float64)
    z = mean[:, None] + np.exp(0.5 * log_var)[:, None] * eps
    log_q = np.stack([stats.multivariate_normal(mean[i], np.diag(np.exp(log_var[i]))).logpdf(z[i]) for i in range(2)])
    return z, log_q

  got = _iwae_member(net, vamp.latent_model(config, net), params, X_IS, KEYS_IS)
  want = _iwae_numpy(lambda z: decode(params, z), lambda z: _scipy_mixture(z, means, log_vars), X_IS, KEYS_IS, 7, 3,
                     gaussian)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-2)


def test_iwae_member_uses_the_flow_posterior():
  """evaluate._iwae_member with the flow: the bound posterior's samples and log q, and N(0, I) (SciPy)."""
  config, net, params, _, decode = _setup("vae_flow", **FLOW)
  params = _params(params, "flow", _random_flow("planar", 3, 8, seed=3))
  model = vae_flow.latent_model(config, net)
  posterior = jax.jit(lambda params, ck: model.bound(params).posterior(X_IS, ck, 3))
  got = _iwae_member(net, model, params, X_IS, KEYS_IS)
  want = _iwae_numpy(lambda z: decode(params, z), stats.multivariate_normal(np.zeros(8)).logpdf, X_IS, KEYS_IS, 7, 3,
                     lambda ck, chunk: posterior(params, ck))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-2)


# --- end to end ------------------------------------------------------------------------------------------


def _eval(block, key):
  return np.asarray(block["eval"][key]["per_seed"], np.float64)


# vamp: with the training-time image tracker (prior samples of the bound model) and the evaluation figures;
# vae_flow: the default 4-step planar flow, neither (they cost compiles and bind nothing new).
@pytest.mark.parametrize("name, extra", [("vamp", ["--config.vamp.num_pseudo=10"]),
                                         ("vae_flow", ["--config.log.images=0"])])
def test_trains_and_evaluates_end_to_end(tmp_path, monkeypatch, capsys, name, extra):
  wd = tmp_path / "run"
  rc, out, err = run_main(monkeypatch, capsys, f"--config={ROOT / 'configs' / f'{name}.py'}", f"--workdir={wd}",
                          *TINY, *extra)
  assert rc == 0, err
  summary = json.loads((wd / "summary.json").read_text())["settings"][0]
  records = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
  assert np.mean(records[-1]["train"]["loss"]) < np.mean(records[0]["train"]["loss"])
  for key in ("kl", "recon_nll", "neg_elbo", "recon_mse", "active_units"):
    assert np.isfinite(_eval(summary, key)).all(), key
  np.testing.assert_allclose(_eval(summary, "neg_elbo"), _eval(summary, "recon_nll") + _eval(summary, "kl"), rtol=1e-5)
  result = evaluate.evaluate(str(wd), evaluate.Options(num_samples=20, figures=name == "vamp", embedding="pca",
                                                       probes=False), quiet=True)
  res = result["settings"][0]
  nll, neg_elbo = _eval(res, "nll"), _eval(res, "neg_elbo")
  assert np.isfinite(nll).all() and (nll > 0).all()
  assert (nll <= neg_elbo + 1e-3).all()  # log-mean-exp >= mean of the same 20 log-weights
  # The evaluation's 20-sample ELBO and KL are the training objective's (same prior, same posterior): within
  # Monte Carlo noise of the run's held-out single-sample estimates on the same 64 examples.
  np.testing.assert_allclose(neg_elbo, _eval(summary, "neg_elbo"), rtol=0.02)
  np.testing.assert_allclose(_eval(res, "kl"), _eval(summary, "kl"), atol=1.0)
  if name == "vamp":
    assert any("eval_samples" in f for f in result["figures"])
