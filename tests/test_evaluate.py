"""jaxae.evaluate against independent computations: an analytic marginal likelihood, closed-form ELBOs,
brute-force nearest neighbours and numpy statistics on the exported arrays."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

import jaxae
from jaxae import analysis, evaluate, losses, train, variants
from jaxae import data as data_lib

from conftest import tiny_config


def _linear_gaussian(d=2, D=5, sigma=0.5, inflate=1.5, shift=0.0, seed=0):
  """A linear-Gaussian VAE, p(z) = N(0, I), p(x|z) = N(W z + b, sigma^2 I), with a diagonal Gaussian q(z|x)
  near the exact posterior (its covariance's diagonal times `inflate`, its mean moved by `shift`).
  Returns (net, model, params with a member axis of 1, hparams, W, b)."""
  config = tiny_config("vae", model__backbone="linear", model__output="identity", loss__reconstruction="mse",
                       model__latent_dim=d, loss__gaussian_sigma=sigma)
  net = train.build_net(config, (D,))
  rng = np.random.default_rng(seed)
  W, b = rng.standard_normal((D, d)), rng.standard_normal(D)
  post_cov = np.linalg.inv(np.eye(d) + W.T @ W / sigma**2)  # the exact posterior N(A (x - b), post_cov)
  A = post_cov @ W.T / sigma**2
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  params = {"params": {
      "decoder": {"Dense_0": {"kernel": f32(W.T), "bias": f32(b)}},
      "encoder": {"latent": {"kernel": f32(A.T), "bias": f32(-A @ b + shift)},
                  "log_variance": {"kernel": f32(np.zeros((D, d))), "bias": f32(np.log(np.diag(post_cov) * inflate))}}}}
  model = variants.get("vae").latent_model(config, net)
  return net, model, jax.tree.map(lambda a: a[None], params), {"gaussian_sigma": np.asarray([sigma], np.float32)}, W, b


def test_importance_sampling_converges_to_the_analytic_marginal_likelihood():
  sigma = 0.5
  net, model, params, hp, W, b = _linear_gaussian(sigma=sigma)
  x = np.random.default_rng(1).standard_normal((8, 5)).astype(np.float32) * 1.5
  exact = multivariate_normal(b, W @ W.T + sigma**2 * np.eye(5)).logpdf(x)
  est = evaluate.importance_sampled_log_likelihood(net, model, params, hp, x, [0], num_samples=5000, batch_size=3,
                                                   sample_chunk=512)
  np.testing.assert_allclose(est["log_px"][0], exact, atol=0.02)
  # The diagonal q is not the (correlated) posterior: the ELBO is strictly below, by the KL to it.
  assert np.all(est["elbo"][0] < exact - 0.05)
  # Closed-form ELBO of the same q: E_q[log N(x | W z + b, sigma^2)] - KL(q || N(0, I)).
  mean, log_var = (np.asarray(a, np.float64) for a in net.encode(jax.tree.map(lambda a: a[0], params), jnp.asarray(x)))
  resid = x - (mean @ W.T + b)
  e_sq = np.sum(resid**2, 1) + np.sum((W**2) @ np.exp(log_var).T, 0)
  elbo = -0.5 * e_sq / sigma**2 - 2.5 * np.log(2 * np.pi * sigma**2) - 0.5 * np.sum(mean**2 + np.exp(log_var) - 1 - log_var, 1)
  np.testing.assert_allclose(est["elbo"][0], elbo, atol=0.1)


def test_estimate_rises_with_k_above_the_elbo_and_does_not_depend_on_batching():
  net, model, params, hp, _, _ = _linear_gaussian(inflate=4.0, shift=0.7)  # a poor q: a visible IWAE gain
  x = np.random.default_rng(2).standard_normal((200, 5)).astype(np.float32)
  means = []
  for k in (1, 4, 32, 256):
    est = evaluate.importance_sampled_log_likelihood(net, model, params, hp, x, [3], num_samples=k, batch_size=64,
                                                     sample_chunk=64)
    assert np.all(est["log_px"] >= est["elbo"] - 1e-4)  # log-mean-exp >= mean (Jensen), example by example
    means.append(est["log_px"].mean())
  assert all(b > a + 0.01 for a, b in zip(means, means[1:])), means  # Burda et al. 2016, theorem 1
  # K not a multiple of the chunk, and other batch sizes: the same samples, the same numbers.
  a = evaluate.importance_sampled_log_likelihood(net, model, params, hp, x[:10], [3], num_samples=70, batch_size=10,
                                                 sample_chunk=32)
  c = evaluate.importance_sampled_log_likelihood(net, model, params, hp, x[:10], [3], num_samples=70, batch_size=3,
                                                 sample_chunk=32, member_loop="map")
  np.testing.assert_allclose(a["log_px"], c["log_px"], rtol=1e-5)


def test_bernoulli_likelihood_is_the_bernoulli_log_pmf():
  config = tiny_config("vae")
  net = train.build_net(config, (28, 28, 1))
  model = variants.get("vae").latent_model(config, net)
  rng = np.random.default_rng(0)
  logits = rng.standard_normal((3, 28, 28, 1)).astype(np.float32) * 3
  x = (rng.random((3, 28, 28, 1)) < 0.4).astype(np.float32)
  p = 1 / (1 + np.exp(-logits.astype(np.float64)))
  expected = np.sum(np.where(x == 1, np.log(p), np.log1p(-p)).reshape(3, -1), 1)
  np.testing.assert_allclose(model.log_likelihood(jnp.asarray(logits), jnp.asarray(x), {}), expected, rtol=1e-5)
  z = rng.standard_normal((4, 8)).astype(np.float32)
  np.testing.assert_allclose(model.log_prior(jnp.asarray(z)), multivariate_normal(np.zeros(8)).logpdf(z), rtol=1e-5)


def test_helpers_against_numpy():
  a, b = np.array([1.0, 0.0], np.float32), np.array([0.0, 2.0], np.float32)
  path = evaluate.slerp(a, b, 5)
  np.testing.assert_allclose(path[[0, -1]], [a, b], atol=1e-6)
  np.testing.assert_allclose(path[2], [np.sin(np.pi / 4), 2 * np.sin(np.pi / 4)], rtol=1e-5)  # t=1/2, angle 90 deg
  np.testing.assert_allclose(evaluate.lerp(a, b, 3)[1], (a + b) / 2)
  z = np.array([[0.0, 1.0, 0.0], [0.0, -1.0, 0.001], [0.0, 3.0, 0.0]])
  s = evaluate.code_statistics(z)
  assert s == {"active_units": 1.0, "l0": 4 / 3, "dead_units": 1.0}
  np.testing.assert_allclose(evaluate.psnr([0.01, 0.1]), [20.0, 10.0])
  x = (np.random.default_rng(0).random((2000, 3)) < [0.1, 0.5, 0.9]).mean(0)
  np.testing.assert_allclose(evaluate.binarize(np.tile([[0.1, 0.5, 0.9]], (2000, 1))).mean(0), x, atol=0.05)
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    evaluate.binarize(np.array([1.5]))


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("vae"))
  config = tiny_config("vae")
  config.model.latent_dim = 2
  jaxae.train_and_evaluate(config, workdir)
  result = evaluate.evaluate(workdir, num_samples=64, export=("codes", "scores"), embedding="pca", quiet=True)
  return workdir, result


def test_evaluate_a_vae_workdir(vae_run):
  workdir, result = vae_run
  saved = json.load(open(os.path.join(workdir, "evaluation.json")))
  assert saved == json.loads(json.dumps(result))
  entry = saved["settings"][0]
  nll, elbo = (np.asarray(entry["eval"][k]["per_seed"]) for k in ("nll", "neg_elbo"))
  assert nll.shape == (2,) and np.all(nll <= elbo)
  # The training program's own held-out -ELBO (one posterior sample, closed-form KL) on the same images.
  summary = json.load(open(os.path.join(workdir, "summary.json")))
  program = np.asarray(summary["settings"][0]["eval"]["neg_elbo"]["per_seed"])
  np.testing.assert_allclose(elbo, program, rtol=0.02)
  assert np.all(nll < program)
  for name in ("eval_samples.png", "eval_interpolations.png", "eval_traversals.png", "eval_manifold.png", "eval_codes.png"):
    assert os.path.getsize(os.path.join(workdir, "figures", name)) > 1000, name
  # Exports: codes are the posterior means, scores the per-example MSE of the reconstruction, from analysis.
  index = json.load(open(os.path.join(workdir, "export", "index.json")))
  held = data_lib.load(jaxae.load_run(workdir).config.data).eval
  labels = np.load(os.path.join(workdir, "export", "labels.npy"), allow_pickle=False)
  np.testing.assert_array_equal(labels, held.labels)
  for m in index["members"]:
    run = jaxae.load_run(workdir, seed=m["seed"])
    z = np.load(os.path.join(workdir, "export", m["codes"]), allow_pickle=False)
    np.testing.assert_allclose(z, analysis.encode(run.model, run.params, held.x, run.config), rtol=1e-5, atol=1e-6)
    recon = analysis.reconstruct(run.model, run.params, held.x, run.config)
    mse = np.mean(np.square(recon - data_lib.to_float(held.x)).reshape(len(z), -1), 1)
    np.testing.assert_allclose(np.load(os.path.join(workdir, "export", m["scores"]), allow_pickle=False), mse, rtol=1e-4)
    i = entry["seeds"].index(m["seed"])
    np.testing.assert_allclose(entry["eval"]["recon_mse"]["per_seed"][i], mse.mean(), rtol=1e-4)
    nll_i = np.load(os.path.join(workdir, "export", m["nll"]), allow_pickle=False)
    np.testing.assert_allclose(nll_i.mean(), entry["eval"]["nll"]["per_seed"][i], rtol=1e-5)
    np.testing.assert_allclose(entry["eval"]["psnr"]["per_seed"][i], np.mean(10 * np.log10(1 / mse)), rtol=1e-4)
    assert entry["eval"]["active_units"]["per_seed"][i] == np.sum(np.var(z, 0) > 0.01)
    # 5-NN by brute force on the training codes (majority vote, ties to the smallest label).
    tr = data_lib.load(run.config.data).train
    z_tr = analysis.encode(run.model, run.params, tr.x, run.config)
    votes = tr.labels[np.argsort(np.square(z[:, None] - z_tr[None]).sum(-1), axis=1)[:, :5]]
    pred = np.asarray([np.bincount(v, minlength=10).argmax() for v in votes])
    assert abs(np.mean(pred == labels) - entry["eval"]["knn_accuracy"]["per_seed"][i]) < 0.02


def test_a_diverged_member_is_reported_and_left_out_of_the_means(vae_run):
  import dataclasses
  workdir, result = vae_run
  run = jaxae.load_run(workdir)
  params = jax.tree.map(lambda a: a.at[1].set(np.nan), run.params)
  r = evaluate.evaluate_run(dataclasses.replace(run, params=params, diverged={1: 2}), evaluate.Options(num_samples=64),
                            quiet=True)
  assert [d["seed"] for d in r["diverged"]] == [1] and r["settings"][0]["healthy_seeds"] == [0]
  for name, block in r["settings"][0]["eval"].items():
    assert block["mean"] == pytest.approx(result["settings"][0]["eval"][name]["per_seed"][0], rel=1e-5), name
    assert block["std"] == 0.0


def test_closed_form_elbo_is_below_the_estimate_on_a_trained_vae(vae_run):
  workdir, result = vae_run
  run = jaxae.load_run(workdir)
  held = data_lib.load(run.config.data).eval
  x = data_lib.to_float(held.x)
  est = evaluate.importance_sampled_log_likelihood(
      run.model, run.variant.latent_model(run.config, run.model), run.params,
      evaluate.member_hparams(run.config, run.members), x, [0, 1], num_samples=256)
  for i in range(2):
    params = analysis.member_params(run.params, i)
    mean, log_var = analysis.posterior(run.model, params, held.x)
    one = lambda k: -losses.negative_elbo(run.model.decode(params, losses.reparameterize(k, mean, log_var)), x, mean,
                                          log_var)[0]
    elbos = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(7), 64))  # 64 one-sample ELBOs, closed-form KL
    assert est["log_px"][i].mean() > np.mean(elbos) + 0.05
    np.testing.assert_allclose(est["elbo"][i].mean(), np.mean(elbos), rtol=0.01)


def test_deterministic_autoencoder_groups_and_cli(tmp_path, capsys):
  """A sweep with a static key (two groups) of a vanilla autoencoder on vector data, through the command line."""
  rng = np.random.default_rng(0)
  x = rng.random((300, 6)).astype(np.float32)
  np.savez(tmp_path / "v.npz", x=x, y=(x[:, 0] > 0.5).astype(np.int32))
  config = tiny_config("vanilla", data__source=f"npz:{tmp_path / 'v.npz'}", model__latent_dim=3, train__epochs=1)
  config.sweep = '{"model.latent_dim": [2, 3]}'
  jaxae.train_and_evaluate(config, str(tmp_path / "run"))
  rc = evaluate.main([f"--workdir={tmp_path / 'run'}", "--embedding=pca", "--export=scores"])
  out = capsys.readouterr().out
  assert rc == 0 and "== group model.latent_dim=2" in out and "eval/probe_accuracy" in out
  top = json.load(open(tmp_path / "run" / "evaluation.json"))
  assert set(top["groups"]) == {"model.latent_dim=2", "model.latent_dim=3"}
  for name, r in top["groups"].items():
    assert "nll" not in r["settings"][0]["eval"]  # no latent model: no likelihood
    assert os.path.exists(tmp_path / "run" / "groups" / name / "figures" / "eval_codes.png")
    assert not os.path.exists(tmp_path / "run" / "groups" / name / "figures" / "eval_interpolations.png")  # vectors
  assert evaluate.main([f"--workdir={tmp_path / 'nothing'}"]) == 2
  assert "error:" in capsys.readouterr().err
  assert evaluate.main([f"--workdir={tmp_path / 'run'}", "--export=bogus"]) == 2


def test_code_density_recovers_a_known_mixture_and_samples_decode_for_a_model_without_prior(tmp_path):
  """fit_code_density: a GMM on codes drawn from two well-separated full-covariance Gaussians finds their
  means and covariances (NumPy moments of each cluster); evaluate draws 64 GMM samples of a plain autoencoder."""
  rng = np.random.default_rng(0)
  cov = np.array([[1.0, 0.8], [0.8, 1.0]])
  a = rng.multivariate_normal([-6, 0], cov, 2000)
  b = rng.multivariate_normal([6, 3], 0.25 * np.eye(2), 2000)
  gmm = evaluate.fit_code_density(np.concatenate([a, b]), components=2, seed=0)
  order = np.argsort(gmm.means_[:, 0])
  np.testing.assert_allclose(gmm.means_[order], [a.mean(0), b.mean(0)], atol=0.05)
  np.testing.assert_allclose(gmm.covariances_[order[0]], np.cov(a.T), atol=0.05)  # full, not diagonal
  with pytest.raises(ValueError):
    evaluate.fit_code_density(np.array([[np.nan, 0.0]] * 4))
  config = tiny_config("vanilla", train__epochs=1, num_seeds=1)
  jaxae.train_and_evaluate(config, str(tmp_path / "run"))
  variant = variants.get("vanilla")
  codes = rng.standard_normal((200, 8)).astype(np.float32) * 3 + 1
  z, what = evaluate.sample_codes(variant, config, None, 500, 0, (8,), codes, gmm_components=1)
  assert z.shape == (500, 8) and "GMM" in what
  np.testing.assert_allclose(z.mean(0), codes.mean(0), atol=0.5)  # one component: the codes' own Gaussian
  assert evaluate.sample_codes(variant, config, None, 5, 0, (8,), None) is None
  evaluate.evaluate(str(tmp_path / "run"), evaluate.Options(num_samples=0, probes=False, gmm_components=3), quiet=True)
  assert os.path.exists(tmp_path / "run" / "figures" / "eval_samples.png")
