"""Every loss against values computed by hand or by an independent method."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxae import losses

jax.config.update("jax_enable_x64", False)


def _rng(seed=0):
  return np.random.default_rng(seed)


def test_mse_by_hand():
  a = jnp.array([[0.0, 1.0], [0.5, 0.25]])
  b = jnp.array([[1.0, 1.0], [0.0, 0.25]])
  assert float(losses.mse(a, b)) == pytest.approx((1.0 + 0 + 0.25 + 0) / 4)


def test_bce_with_logits_matches_naive_formula_and_is_stable():
  r = _rng()
  logits = r.normal(size=(4, 3, 3, 1)).astype(np.float32) * 3
  target = r.uniform(size=(4, 3, 3, 1)).astype(np.float32)
  p = 1 / (1 + np.exp(-logits.astype(np.float64)))
  naive = -(target * np.log(p) + (1 - target) * np.log(1 - p))
  expected = naive.reshape(4, -1).sum(-1).mean()
  assert float(losses.bce_with_logits(jnp.asarray(logits), jnp.asarray(target))) == pytest.approx(expected, rel=1e-5)
  # Huge logits: the naive form gives inf/nan; the stable one gives |l| for the wrong target, 0 for the right one.
  big = jnp.array([[1000.0, -1000.0]])
  assert float(losses.bce_with_logits(big, jnp.array([[0.0, 1.0]]))) == pytest.approx(2000.0)
  assert float(losses.bce_with_logits(big, jnp.array([[1.0, 0.0]]))) == pytest.approx(0.0, abs=1e-6)
  grad = jax.grad(lambda l: losses.bce_with_logits(l, jnp.array([[0.0, 1.0]])))(big)
  assert np.all(np.isfinite(grad))


def test_gaussian_nll_matches_log_density():
  r = _rng(1)
  mean, x = r.uniform(size=(3, 5)), r.uniform(size=(3, 5))
  sigma = 0.7
  logpdf = -0.5 * ((x - mean) / sigma) ** 2 - np.log(sigma * np.sqrt(2 * np.pi))
  expected = -logpdf.sum(-1).mean()
  assert float(losses.gaussian_nll(jnp.asarray(mean), jnp.asarray(x), sigma)) == pytest.approx(expected, rel=1e-5)


def test_l1_and_kl_sparsity_by_hand():
  z = jnp.array([[1.0, -2.0], [0.0, 3.0]])
  assert float(losses.l1_sparsity(z)) == pytest.approx(1.5)
  rho = 0.1
  rho_hat = (1 / (1 + np.exp(-np.array([[1.0, -2.0], [0.0, 3.0]])))).mean(0)
  expected = np.sum(rho * np.log(rho / rho_hat) + (1 - rho) * np.log((1 - rho) / (1 - rho_hat)))
  assert float(losses.kl_sparsity(z, rho)) == pytest.approx(expected, rel=1e-5)
  # KL(rho || rho) = 0: a batch whose mean activation equals the target costs nothing.
  z0 = jnp.full((4, 3), np.log(rho / (1 - rho)))
  assert float(losses.kl_sparsity(z0, rho)) == pytest.approx(0.0, abs=1e-5)


def test_top_k_keeps_k_largest_per_row():
  r = _rng(2)
  z = r.normal(size=(6, 10)).astype(np.float32)
  out = np.asarray(losses.top_k(jnp.asarray(z), 3))
  for row, kept in zip(z, out):
    idx = np.argsort(row)[-3:]
    expected = np.zeros_like(row)
    expected[idx] = row[idx]
    np.testing.assert_array_equal(kept, expected)


def _tiny_encoder(params, x):
  """x (B, 2, 2, 1) -> (B, 3): tanh MLP, smooth so finite differences are accurate."""
  h = jnp.tanh(x.reshape(x.shape[0], -1) @ params["w1"] + params["b1"])
  return h @ params["w2"]


def test_contractive_penalty_matches_finite_difference_jacobian():
  r = _rng(3)
  params = {"w1": r.normal(size=(4, 5)), "b1": r.normal(size=(5,)), "w2": r.normal(size=(5, 3))}
  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
  x = r.uniform(size=(3, 2, 2, 1)).astype(np.float32)
  got = float(losses.contractive_penalty(lambda v: _tiny_encoder(params, v), jnp.asarray(x)))
  # Central differences in float64 with numpy, one input coordinate at a time.
  p64 = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  f = lambda v: np.tanh(v.reshape(1, -1) @ p64["w1"] + p64["b1"]) @ p64["w2"]
  eps, norms = 1e-5, []
  for xi in x.astype(np.float64):
    jac = np.zeros((3, xi.size))
    for j in range(xi.size):
      d = np.zeros(xi.size)
      d[j] = eps
      jac[:, j] = (f((xi.ravel() + d).reshape(xi.shape)) - f((xi.ravel() - d).reshape(xi.shape)))[0] / (2 * eps)
    norms.append(np.sum(jac**2))
  assert got == pytest.approx(np.mean(norms), rel=1e-4)


def test_contractive_penalty_of_linear_encoder_is_frobenius_norm_of_weights():
  w = jnp.asarray(_rng(4).normal(size=(6, 2)), jnp.float32)
  got = losses.contractive_penalty(lambda v: v.reshape(v.shape[0], -1) @ w, jnp.ones((5, 6)))
  assert float(got) == pytest.approx(float(jnp.sum(w**2)), rel=1e-6)


def test_gaussian_kl_matches_monte_carlo():
  r = _rng(5)
  mean = r.normal(size=(2, 3)) * 0.8
  log_var = r.normal(size=(2, 3)) * 0.5
  n = 400_000
  std = np.exp(0.5 * log_var)
  z = mean[None] + std[None] * r.standard_normal(size=(n, 2, 3))
  log_q = -0.5 * ((z - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)
  log_p = -0.5 * z**2 - 0.5 * np.log(2 * np.pi)
  mc = (log_q - log_p).sum(-1).mean(0).mean()
  got = float(losses.gaussian_kl(jnp.asarray(mean, jnp.float32), jnp.asarray(log_var, jnp.float32)))
  assert got == pytest.approx(mc, abs=0.01)
  assert float(losses.gaussian_kl(jnp.zeros((2, 3)), jnp.zeros((2, 3)))) == 0.0


def test_reparameterize_has_the_posterior_moments():
  mean = jnp.full((100_000, 1), 2.0)
  log_var = jnp.full((100_000, 1), np.log(0.25))
  z = np.asarray(losses.reparameterize(jax.random.key(0), mean, log_var))
  assert z.mean() == pytest.approx(2.0, abs=0.01)
  assert z.std() == pytest.approx(0.5, abs=0.01)
  # Gradient flows to mean and log-variance (the point of the trick).
  g = jax.grad(lambda m: losses.reparameterize(jax.random.key(0), m, log_var[:3]).sum())(mean[:3])
  np.testing.assert_allclose(g, 1.0)


def test_negative_elbo_is_nll_plus_beta_kl():
  r = _rng(6)
  logits = jnp.asarray(r.normal(size=(4, 2, 2, 1)), jnp.float32)
  x = jnp.asarray(r.uniform(size=(4, 2, 2, 1)), jnp.float32)
  mean = jnp.asarray(r.normal(size=(4, 3)), jnp.float32)
  log_var = jnp.asarray(r.normal(size=(4, 3)) * 0.3, jnp.float32)
  loss, nll, kl = losses.negative_elbo(logits, x, mean, log_var, beta=4.0)
  assert float(nll) == pytest.approx(float(losses.bce_with_logits(logits, x)))
  assert float(kl) == pytest.approx(float(losses.gaussian_kl(mean, log_var)))
  assert float(loss) == pytest.approx(float(nll) + 4.0 * float(kl), rel=1e-6)
  _, nll_g, _ = losses.negative_elbo(logits, x, mean, log_var, likelihood="gaussian", sigma=0.5)
  assert float(nll_g) == pytest.approx(float(losses.gaussian_nll(jax.nn.sigmoid(logits), x, 0.5)))
  with pytest.raises(ValueError, match="likelihood"):
    losses.negative_elbo(logits, x, mean, log_var, likelihood="poisson")


def test_cross_entropy_and_psnr_by_hand():
  logits = jnp.array([[2.0, 0.0], [0.0, 0.0]])
  expected = -(np.log(np.exp(2) / (np.exp(2) + 1)) + np.log(0.5)) / 2
  assert float(losses.cross_entropy(logits, jnp.array([0, 1]))) == pytest.approx(expected, rel=1e-6)
  target = jnp.zeros((1, 4))
  recon = jnp.full((1, 4), 0.1)  # MSE 0.01 -> 20 dB
  assert float(losses.psnr(recon, target)[0]) == pytest.approx(20.0, rel=1e-5)


def test_corruptions():
  x = jnp.full((200, 28, 28, 1), 0.5)
  key = jax.random.key(0)
  g = np.asarray(losses.corrupt(key, x, "gaussian", 0.3))
  assert g.min() >= 0 and g.max() <= 1
  assert np.std(g) == pytest.approx(0.3 * 0.94, rel=0.05)  # clipping at 0/1 trims the tails slightly
  m = np.asarray(losses.corrupt(key, x, "masking", 0.25))
  assert np.mean(m == 0) == pytest.approx(0.25, abs=0.01)
  assert set(np.unique(m)) == {0.0, 0.5}
  s = np.asarray(losses.corrupt(key, x, "salt_pepper", 0.2))
  assert np.mean(s == 0) == pytest.approx(0.1, abs=0.01) and np.mean(s == 1) == pytest.approx(0.1, abs=0.01)
  with pytest.raises(ValueError, match="noise kind"):
    losses.corrupt(key, x, "speckle", 0.1)


@pytest.mark.parametrize("activation, hidden", [("relu", (12, 7)), ("tanh", (9,)), ("elu", ())])
def test_structured_contractive_penalty_equals_jacrev(activation, hidden):
  """The MLP closed form (losses.mlp_contractive_penalty) against jax.jacrev: value and parameter gradients."""
  from jaxae import models

  widths = (10, *hidden, 4)
  keys = jax.random.split(jax.random.key(3), 2 * len(widths))
  layers = [(jax.random.normal(keys[2 * i], (a, b)) / np.sqrt(a), 0.1 * jax.random.normal(keys[2 * i + 1], (b,)))
            for i, (a, b) in enumerate(zip(widths[:-1], widths[1:]))]
  act = models.ACTIVATIONS[activation]
  x = jax.random.normal(jax.random.key(9), (6, 10))

  def encode(ls, v):
    h = v.reshape(v.shape[0], -1)
    for k, b in ls[:-1]:
      h = act(h @ k + b)
    return h @ ls[-1][0] + ls[-1][1]

  structured = lambda ls: losses.mlp_contractive_penalty(ls[:-1], act, ls[-1][0], x)
  reference = lambda ls: losses.contractive_penalty(lambda v: encode(ls, v), x)
  value_and_grad = lambda f: jax.jit(jax.value_and_grad(f))(layers)  # jitted: one compile, not one per op
  (v_s, g_s), (v_r, g_r) = value_and_grad(structured), value_and_grad(reference)
  np.testing.assert_allclose(v_s, v_r, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g_s), jax.tree.leaves(g_r)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_contractive_variant_structured_and_jacrev_agree_on_the_built_network():
  from conftest import tiny_config
  from jaxae import train
  from jaxae.variants import contractive

  config = tiny_config("contractive")
  net = train.build_net(config, (28, 28, 1))
  params = net.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
  x = jax.random.uniform(jax.random.key(1), (5, 28, 28, 1))
  config.loss.contractive_jacobian = "jacrev"
  want = contractive.penalty_fn(config, net)(params, x)
  config.loss.contractive_jacobian = "auto"
  np.testing.assert_allclose(contractive.penalty_fn(config, net)(params, x), want, rtol=1e-5)
