"""Smoke versions of every study in experiments/: they run end to end and their numbers check out.

Each study is run in-process (`main([...])`) with --smoke. The bottleneck study's runs are shared by
the studies that analyse its models (--runs). Values are checked against independent computations:
a second code path, a closed form or a finite difference.
"""

from __future__ import annotations

import json
import os
import types

import jax
import numpy as np
import pytest

import jaxae
from jaxae import analysis
from jaxae import data as data_lib


def _run(module, out, mnist_dir, *extra):
  module.main([f"--out={out}", "--smoke", f"--mnist_dir={mnist_dir}", *extra])
  for name in ("results.md", "results.json"):
    assert os.path.getsize(os.path.join(out, name)) > 0, name
  with open(os.path.join(out, "results.json")) as f:
    return json.load(f)


def _test_images(mnist_dir):
  """The 500 MNIST test images of the smoke studies."""
  from experiments import common
  return common.test_split(types.SimpleNamespace(mnist_dir=mnist_dir, smoke=True))


def _pngs(out):
  return sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs
                if f.endswith(".png") and "runs" not in os.path.relpath(d, out).split(os.sep))


@pytest.fixture(scope="module")
def bottleneck(tmp_path_factory, mnist_test_dir):
  from experiments import bottleneck as study
  out = str(tmp_path_factory.mktemp("bottleneck"))
  return out, _run(study, out, mnist_test_dir)


def test_bottleneck(bottleneck):
  out, res = bottleneck
  keys = {(m["init"], m["key"]) for m in res["models"]}
  assert keys == {("flax", k) for k in ("vanilla_d2", "vanilla_d32", "denoising_d32", "sparse_d32", "conv_d32")} | {
      ("pytorch", "vanilla_d32")}
  assert {f"loss_curves/{i}_{k}.png" for i, k in keys} <= set(_pngs(out))
  assert os.path.exists(os.path.join(out, "results.csv"))
  # The training program's held-out MSE equals an independent reconstruction with the loaded params.
  for m in res["models"][:2]:
    workdir = os.path.join(out, "runs", m["init"], m["key"])
    for seed, reported in zip(m["seeds"], m["test_mse"]):
      run = jaxae.load_run(workdir, seed=seed)
      held = data_lib.load(run.config.data).eval
      recon = analysis.reconstruct(run.model, run.params, held.x, run.config)
      np.testing.assert_allclose(np.mean(np.square(recon - data_lib.to_float(held.x))), reported, rtol=1e-4)
    assert np.isclose(m["test_mse_mean"], np.mean(m["test_mse"]))


def test_latent(bottleneck, tmp_path, mnist_test_dir):
  from experiments import latent
  res = _run(latent, tmp_path, mnist_test_dir, f"--runs={bottleneck[0]}/runs")
  assert {"latent_scatter.png", "latent_grid.png", "latent_interpolation.png", "loss_curves.png"} <= set(_pngs(tmp_path))
  lat = np.load(tmp_path / "latents_seed0.npz")
  assert lat["z_test"].shape == (500, 2) and lat["z_train"].shape == (256, 2)
  # 5-NN accuracy recomputed by brute force in numpy (majority vote, ties to the smallest label).
  d = np.square(lat["z_test"][:, None] - lat["z_train"][None]).sum(-1)
  votes = lat["y_train"][np.argsort(d, axis=1)[:, :5]]
  pred = np.asarray([np.bincount(v, minlength=10).argmax() for v in votes])
  assert abs(np.mean(pred == lat["y_test"]) - res["per_seed"][0]["knn"]) < 0.01
  assert all(0.0 <= r["probe"] <= 1.0 for r in res["per_seed"])


def test_denoising(bottleneck, tmp_path, mnist_test_dir):
  from experiments import denoising
  res = _run(denoising, tmp_path, mnist_test_dir, f"--runs={bottleneck[0]}/runs")
  assert {"denoising_rows.png", "loss_curves.png"} <= set(_pngs(tmp_path))
  images = _test_images(mnist_test_dir).x
  clean = data_lib.to_float(images).astype(np.float64)
  noisy = denoising.corrupted_test(images).astype(np.float64)
  assert noisy.min() >= 0 and noisy.max() <= 1 and 0.1 < np.std(noisy - clean) < 0.3  # sigma=0.3 noise, clipped at 0 on the background
  psnr = np.mean(10 * np.log10(1.0 / np.mean(np.square(noisy - clean), axis=(1, 2, 3))))
  assert abs(psnr - res["psnr_noisy_input"]) < 1e-3
  assert len(res["per_seed"]) == 4 and all(np.isfinite(r["psnr_output"]) for r in res["per_seed"])


def test_reconstructions(bottleneck, tmp_path, mnist_test_dir):
  from experiments import reconstructions
  res = _run(reconstructions, tmp_path, mnist_test_dir, f"--runs={bottleneck[0]}/runs")
  assert {"reconstructions_flax.png", "reconstructions_pytorch.png"} <= set(_pngs(tmp_path))
  assert len(res["models"]) == 6
  labels = _test_images(mnist_test_dir).labels
  assert sorted(labels[res["test_index"]].tolist()) == list(range(10))  # one digit of each class
  for m in res["models"].values():
    assert np.isclose(np.mean(m["mse_per_digit"]), m["mse_mean"]) and 0 < m["mse_mean"] < 1


def test_vae(tmp_path, mnist_test_dir):
  from experiments import vae
  res = _run(vae, tmp_path, mnist_test_dir)
  assert {"beta_tradeoff.png", "prior_samples.png", "vae_interpolation.png", "active_units.png",
          "loss_curves.png"} <= set(_pngs(tmp_path))
  by_beta = {r["beta"]: r for r in res["betas"]}
  for r in res["betas"]:
    for i, ours in enumerate(r["per_seed"]):
      # Our -ELBO (own posterior sample) and the training program's evaluation agree up to sampling noise.
      assert abs(ours["neg_elbo"] - r["program_eval"]["neg_elbo"][i]) < 0.02 * ours["neg_elbo"]
      assert np.isclose(ours["neg_elbo"], ours["recon_nll"] + ours["kl"])
      assert 0 <= ours["active_units"] <= 32 and ours["kl"] >= 0
  assert by_beta[8]["kl_mean"] < by_beta[0.5]["kl_mean"]  # a heavier KL weight buys a smaller KL


def test_sparse_contractive(bottleneck, tmp_path, mnist_test_dir):
  from experiments import sparse_contractive
  res = _run(sparse_contractive, tmp_path, mnist_test_dir, f"--runs={bottleneck[0]}/runs")
  assert {"activation_histograms.png", "loss_curves/contractive_d32_1ep.png"} <= set(_pngs(tmp_path))
  assert all(r["l0"] == 8 for r in res["sparsity"]["sparse_topk8_d32"])  # top-k keeps exactly k units
  assert all(r["l0"] == 32 for r in res["sparsity"]["vanilla_d32"])
  jac = res["jacobian"]
  for c, v in zip(jac["contractive"], jac["vanilla"]):
    assert np.isfinite(c["jacobian_sq_norm"]) and c["jacobian_sq_norm"] < v["jacobian_sq_norm"]
  # The exact Jacobian norm matches central finite differences (the encoder is piecewise linear).
  workdir = os.path.join(tmp_path, "runs", "contractive_d32_1ep")
  run = jaxae.load_run(workdir, seed=jac["contractive"][0]["seed"])
  x = data_lib.to_float(_test_images(mnist_test_dir).x[:2]).reshape(2, -1).astype(np.float64)
  eps = 1e-3
  for i in range(2):
    bumps = np.concatenate([x[i] + eps * np.eye(784), x[i] - eps * np.eye(784)]).reshape(-1, 28, 28, 1)
    z = np.asarray(run.model.encode(run.params, jax.numpy.asarray(bumps, jax.numpy.float32)),
                   np.float64)
    fd = (z[:784] - z[784:]) / (2 * eps)
    np.testing.assert_allclose(np.sum(fd ** 2), jac["contractive"][0]["first4_per_image"][i], rtol=0.02)


def test_pca(tmp_path, mnist_test_dir):
  from experiments import pca
  res = _run(pca, tmp_path, mnist_test_dir, "--latent=5")
  assert {"principal_angles.png", "loss_curves.png"} <= set(_pngs(tmp_path))
  for r in res["per_seed"]:
    np.testing.assert_allclose(r["angles_deg_qr"], r["angles_deg_scipy"], atol=1e-3)  # two independent ways
    assert all(0 <= a <= 90 for a in r["angles_deg_scipy"])
    np.testing.assert_allclose(r["ae_test_mse"], r["ae_test_mse_program"], rtol=1e-3)
  # PCA's training error is the discarded variance: sum of the trailing squared singular values / (N D).
  rng = np.random.default_rng(0)
  x = rng.random((200, 30))
  _, _, s = pca.pca_basis(x, 5)
  assert np.isclose(pca.pca_mse(x, x, 5), np.sum(s[5:] ** 2) / x.size)
  a = rng.standard_normal((30, 4))
  assert np.allclose(pca.angles_scipy(a, a @ rng.standard_normal((4, 4))), 0, atol=1e-6)


def test_supervised(bottleneck, tmp_path, mnist_test_dir):
  from experiments import supervised
  res = _run(supervised, tmp_path, mnist_test_dir, f"--runs={bottleneck[0]}/runs")
  assert {"tsne_d20.png", "latent_scatter_supervised_d2.png", "loss_curves/supervised_d2.png"} <= set(_pngs(tmp_path))
  assert all(r["probe"] > 0.2 for r in res["per_seed"]["supervised_d2"])  # chance is 0.1
  tsne = np.load(tmp_path / "tsne_d20.npz")
  assert tsne["embedding"].shape == (500, 2) and np.all(np.isfinite(tsne["embedding"]))


def test_sparse_sweep(tmp_path, mnist_test_dir):
  from experiments import sparse_sweep
  res = _run(sparse_sweep, tmp_path, mnist_test_dir)
  assert {"l0_frontier.png", "loss_curves.png"} <= set(_pngs(tmp_path))
  none, heavy = res["weights"]
  assert none["weight"] == 0.0 and heavy["weight"] == 0.1
  assert heavy["mean_abs_mean"] < none["mean_abs_mean"]  # the L1 weight shrinks the code
  # Our test MSE (numpy, from loaded params) equals the training program's held-out recon_mse.
  summary = json.load(open(os.path.join(tmp_path, "runs", "sparse_l1_sweep", "summary.json")))
  for entry, r in zip(summary["settings"], res["weights"]):
    np.testing.assert_allclose([s["recon_mse"] for s in r["per_seed"]], entry["eval"]["recon_mse"]["per_seed"], rtol=1e-4)


def test_keras_note(tmp_path, mnist_test_dir):
  from sklearn.linear_model import LogisticRegression
  from sklearn.manifold import trustworthiness
  from sklearn.preprocessing import StandardScaler

  from experiments import keras_note
  res = _run(keras_note, tmp_path, mnist_test_dir)
  assert {"latent_dense_d2.png", "latent_dense_d2_supervised.png", "tsne_d20.png", "conv_reconstructions.png",
          "conv_denoising.png", "loss_curves/dense_d2_supervised.png"} <= set(_pngs(tmp_path))
  test = _test_images(mnist_test_dir)
  clean = data_lib.to_float(test.x)

  def codes(net, params, x):  # the encoder called directly (not through jaxae.analysis)
    return np.asarray(jax.jit(net.encode)(params, data_lib.to_float(x)), np.float64)

  for name in ("dense_d2", "dense_d2_supervised"):
    run = jaxae.load_run(os.path.join(tmp_path, "runs", name))  # every seed
    train = data_lib.load(run.config.data).train
    for r in res["per_seed"][name]:
      i = [m["seed"] for m in run.members].index(r["seed"])
      params = jax.tree.map(lambda a: np.asarray(a)[i], run.params)
      z_tr, z_te = np.split(codes(run.model, params, np.concatenate([train.x, test.x])), [len(train.x)])
      assert z_te.shape == (500, 2)
      # The same probe objective solved by another solver, on codes re-encoded here: same accuracy up to ties.
      scale = StandardScaler().fit(z_tr)
      probe = LogisticRegression(solver="newton-cg", max_iter=1000).fit(scale.transform(z_tr), train.labels)
      assert abs(probe.score(scale.transform(z_te), test.labels) - r["probe"]) <= 0.01
      if name.endswith("supervised"):
        # The classifier head's accuracy recomputed from the loaded params equals the program's evaluation.
        logits = np.asarray(jax.jit(run.model.head, static_argnums=1)(params, "classifier", z_te.astype(np.float32)))
        assert abs(np.mean(logits.argmax(-1) == test.labels) - r["head_accuracy"]) <= 1 / 500 + 1e-9
  # t-SNE keeps the neighbourhoods of the test codes it was given (a shuffled or wrong embedding scores ~0.5).
  run = jaxae.load_run(os.path.join(tmp_path, "runs", "dense_d20"), seed=0)
  z20 = codes(run.model, run.params, test.x)
  tsne = np.load(tmp_path / "tsne_d20.npz")
  assert z20.shape == (500, 20) and tsne["embedding"].shape == (500, 2)
  np.testing.assert_array_equal(tsne["labels"], test.labels)
  assert trustworthiness(z20, tsne["embedding"], n_neighbors=5) > 0.85
  assert trustworthiness(z20, tsne["embedding"][np.random.default_rng(0).permutation(500)], n_neighbors=5) < 0.7
  # Conv AE: a spatial code (7x7xC) and held-out BCE / MSE recomputed in numpy from the decoder's logits.
  conv = res["conv"]["per_seed"][0]
  run = jaxae.load_run(os.path.join(tmp_path, "runs", "conv"), seed=conv["seed"])
  logits = jax.jit(lambda net, params, x: net.decode(params, net.encode(params, x)), static_argnums=0)
  z = codes(run.model, run.params, test.x)
  assert z.shape == (500, 7, 7, run.config.model.conv_channels[-1]) and conv["code_shape"] == list(z.shape[1:])
  p = 1 / (1 + np.exp(-np.asarray(logits(run.model, run.params, clean), np.float64)))
  x = clean.astype(np.float64)
  bce = -np.sum(x * np.log(p) + (1 - x) * np.log1p(-p), axis=(1, 2, 3))
  np.testing.assert_allclose(np.mean(bce), conv["test_bce"], rtol=1e-3)
  np.testing.assert_allclose(np.mean(np.square(p - x)), conv["test_mse"], rtol=1e-3)
  # Denoising: the noise factor 0.4 corruption and the PSNRs recomputed in numpy.
  d = res["conv"]["denoising"]
  noisy = keras_note.noisy_test(test.x).astype(np.float64)
  assert noisy.min() >= 0 and noisy.max() <= 1 and 0.15 < np.std(noisy - x) < 0.4
  psnr = lambda a: np.mean(10 * np.log10(1.0 / np.mean(np.square(a - x), axis=(1, 2, 3))))
  assert abs(psnr(noisy) - d["psnr_noisy_input"]) < 1e-3
  run = jaxae.load_run(os.path.join(tmp_path, "runs", "conv_denoising"), seed=d["seed"])
  assert run.config.noise.level == 0.4 and run.config.variant == "denoising"
  out = 1 / (1 + np.exp(-np.asarray(logits(run.model, run.params, noisy.astype(np.float32)), np.float64)))
  assert abs(psnr(out) - d["psnr_denoised"]) < 1e-2


def test_sae(tmp_path, mnist_test_dir):
  from experiments import sae as study
  from jaxae import sae
  res = _run(study, tmp_path, mnist_test_dir)
  assert "frontier_mnist.png" in _pngs(tmp_path)
  # Recovery recomputed from each run's decoder rows in NumPy: the max cosine over rows, mean over features.
  directions = np.load(tmp_path / "synthetic" / "directions.npy").astype(np.float64)
  for act, r in res["synthetic"]["activations"].items():
    run = jaxae.load_run(os.path.join(tmp_path, "runs", f"synthetic_{act}"))
    for i, value in enumerate(r["recovery_per_seed"]):
      w = np.asarray(run.params["params"]["W_dec"][i], np.float64)
      cos = (directions @ w.T) / np.linalg.norm(w, axis=1)
      assert np.isclose(value, cos.max(axis=1).mean(), rtol=1e-6)
  assert all(0 < v < 1 for v in res["synthetic"]["random_dictionary"])
  assert res["activations"]["test_accuracy"] > 0.3  # chance is 0.1 (one epoch on 512 images)
  # The held-out FVU of the frontier equals NumPy's on the dumped test activations and the loaded params.
  test_acts = np.load(tmp_path / "acts_test" / "test.npy")
  for act, group in (("relu", None), ("topk", "sae.k=2")):
    run = jaxae.load_run(os.path.join(tmp_path, "runs", f"mnist_{act}"), seed=0, setting=0, group=group)
    x = run.model.prepare(test_acts).astype(np.float64)
    x_hat = analysis.reconstruct(run.model, run.params, test_acts, run.config).astype(np.float64)
    fvu = np.sum((x - x_hat) ** 2) / np.sum((x - x.mean(axis=0)) ** 2)
    reported = res["frontier"][act]["settings"][0]["per_seed"]["fvu"][0]
    assert np.isclose(reported, fvu, rtol=2e-3), (act, reported, fvu)
    assert np.isclose(sae.fvu(x, x_hat), fvu)


# ---------------------------------------------------------------------------------------------
# Real data beyond MNIST (no MNIST needed): scikit-learn's bundled digits and breast-cancer table,
# and the lecture notes' scalar denoising example.


def _run_local(module, out, *extra):
  module.main([f"--out={out}", "--smoke", *extra])
  with open(os.path.join(out, "results.json")) as f:
    return json.load(f)


def test_digits_npz_and_folder_give_the_same_runs(tmp_path):
  from sklearn.datasets import load_digits

  from experiments import digits
  res = _run_local(digits, tmp_path)
  by = {(m["model"], m["source"]): m for m in res["models"]}
  assert set(by) == {(m, s) for m in ("mlp", "conv") for s in ("npz", "folder")}
  for model in ("mlp", "conv"):
    assert by[model, "npz"]["test_mse"] == by[model, "folder"]["test_mse"]  # bit for bit (JSON floats)
    assert len(set(by[model, "npz"]["test_mse"])) == 2  # two different seeds, not one run twice
  # Both sources hold sklearn's pixels (17 levels scaled to uint8) in the same order.
  sk = load_digits()
  for split, n in (("train", res["num_train"]), ("test", res["num_test"])):
    a = data_lib.load_source(f"npz:{tmp_path}/data/{split}.npz")
    b = data_lib.load_source(f"folder:{tmp_path}/data/png/{split}", data_lib.Options(channels=1))
    assert len(a) == n and np.array_equal(a.x, b.x) and np.array_equal(a.labels, b.labels)
    rows = {tuple(np.round(img * 255 / 16).astype(np.uint8).ravel()): t for img, t in zip(sk.images, sk.target)}
    assert all(rows[tuple(x.ravel())] == y for x, y in zip(a.x, a.labels))
  assert res["num_train"] + res["num_test"] == 1797
  # The program's held-out MSE equals numpy on reconstructions from the loaded parameters.
  test = data_lib.load_source(f"npz:{tmp_path}/data/test.npz")
  for seed, reported in zip(by["mlp", "folder"]["seeds"], by["mlp", "folder"]["test_mse"]):
    run = jaxae.load_run(os.path.join(tmp_path, "runs", "mlp_folder"), seed=seed)
    recon = analysis.reconstruct(run.model, run.params, test.x, run.config)
    np.testing.assert_allclose(np.mean(np.square(recon - data_lib.to_float(test.x))), reported, rtol=1e-4)


def test_anomaly_autoencoder_separates_malignant_from_benign(tmp_path):
  from experiments import anomaly
  res = _run_local(anomaly, tmp_path)
  held = data_lib.load_source(f"csv:{tmp_path}/data/heldout.csv", data_lib.Options(label_column="malignant"))
  positive = held.labels == 1
  assert (positive.sum(), (~positive).sum(), res["num_train"]) == (212, 143, 214)

  def mann_whitney(scores):  # P(score of a malignant > score of a benign), ties count 1/2
    pos, neg = scores[positive][:, None], scores[~positive][None, :]
    return float(np.mean((pos > neg) + 0.5 * (pos == neg)))

  for r, program in zip(res["per_seed"], res["program_eval_recon_mse"]):
    scores = np.asarray(r["scores"])
    assert abs(mann_whitney(scores) - r["ae_auc"]) < 1e-12
    np.testing.assert_allclose(r["ae_mse_heldout"], program, rtol=1e-4)  # our errors = the program's evaluation
    assert r["ae_auc"] > 0.85 and r["ae_mse_malignant"] > 2 * r["ae_mse_benign"]
  assert abs(mann_whitney(np.asarray(res["pca_scores"])) - res["pca_auc"]) < 1e-12
  assert res["pca_auc"] > 0.85 and res["forest_auc_mean"] > 0.85
  # The csv source read back what sklearn ships, exactly (float64 written with repr).
  from sklearn.datasets import load_breast_cancer
  train = data_lib.load_source(f"csv:{tmp_path}/data/train.csv", data_lib.Options(label_column="malignant"))
  sk = load_breast_cancer()
  np.testing.assert_array_equal(train.x, sk.data[anomaly.split_index((sk.target == 0).astype(np.int32))[0]].astype(train.x.dtype))


def test_scalar_denoising_learns_the_closed_form(tmp_path):
  from experiments import scalar_denoising as sd
  res = _run_local(sd, tmp_path)
  exact = res["closed_form"]
  assert res["train_mean"] == 0.0 and abs(exact["a"] - 4 / 4.25) < 1e-12
  for r in res["per_seed"]:
    assert abs(r["a"] - exact["a"]) < 0.01 and abs(r["c"]) < 0.02, r
    assert np.isclose(r["a"], r["w1"] * r["w2"])
  assert abs(res["monte_carlo"]["a"] - exact["a"]) < 0.003 and abs(res["monte_carlo"]["c"]) < 0.003
  assert abs(res["clean_mse_mean"] - exact["clean_mse"]) < 0.004
  # The closed form for an unbalanced sample (m != 0) solves the normal equations of L(a, c).
  m, s2 = 0.3, sd.SIGMA ** 2
  a, c = np.linalg.solve([[4 + s2, m], [m, 1.0]], [4.0, m])
  got = sd.closed_form(m)
  assert np.isclose(got["a"], a) and np.isclose(got["c"], c)
  loss = lambda a, c: 4 * (a - 1) ** 2 + 2 * (a - 1) * c * m + c ** 2 + a ** 2 * s2
  assert np.isclose(got["train_loss"], loss(a, c))


def test_zoo(tmp_path, mnist_test_dir):
  """Study 16 on four models (a prior, a code prior, a GMM on codes, none): the evaluate numbers it
  tabulates agree with the training program's own held-out evaluation of the same 500 test images."""
  from experiments import zoo
  # On the official 60,000 training images (--train_set=mnist, study 19); the default, the embedded 5,000, is
  # every other study's source.
  res = _run(zoo, tmp_path, mnist_test_dir, "--models=vanilla,vae,wae,rae", "--train_set=mnist")
  assert "zoo_samples.png" in _pngs(tmp_path) and set(res["models"]) == {"vanilla", "vae", "wae", "rae"}
  assert "60,000" in open(tmp_path / "results.md").read()
  for name, r in res["models"].items():
    config = json.load(open(tmp_path / "runs" / name / "config.json"))
    assert config["data"]["source"] == f"idx:{mnist_test_dir}" and config["data"]["split"] == "train"
    summary = json.load(open(tmp_path / "runs" / name / "summary.json"))["settings"][0]["eval"]
    if name != "vae":  # a deterministic code: evaluate's reconstruction is the training program's, bit for bit
      np.testing.assert_allclose(r["per_seed"]["recon_mse"], summary["recon_mse"]["per_seed"], rtol=1e-5)
    assert ("nll" in r["per_seed"]) == (name == "vae")
  vae = res["models"]["vae"]["per_seed"]
  assert np.all(np.asarray(vae["nll"]) <= np.asarray(vae["neg_elbo"]) + 0.5)  # the K-sample bound beats the ELBO


def test_iwae_table(tmp_path, mnist_test_dir):
  """Study 17's smoke version (2 rows, 1 pass of dynamically binarized training images): its -log p(x) is
  below the training program's held-out bound, and the stage history is written for a resumed call."""
  from experiments import iwae_table
  res = _run(iwae_table, tmp_path, mnist_test_dir, "--rows=vae1,iwae5")
  assert "nll_vs_passes.png" in _pngs(tmp_path)
  for row in ("vae1", "iwae5"):
    r = res["rows"][row]
    assert r["passes"] == 1 and r["paper"] == iwae_table.PAPER[row] and len(r["nll_per_seed"]) == 2
    held = json.load(open(tmp_path / "runs" / row / "summary.json"))["settings"][0]["eval"]["loss"]["per_seed"]
    assert np.all(np.asarray(r["nll_per_seed"]) <= np.asarray(held) + 1.0)  # -log p(x) <= -bound (+ MC noise)
  history = json.load(open(tmp_path / "history.json"))
  assert set(history) == {"vae1", "iwae5"}
  for row in ("vae1", "iwae5"):  # each stage names the machine it trained on; the results split the seconds by it
    stage = history[row]["1"]
    assert stage["device"] == jax.devices()[0].device_kind
    assert res["rows"][row]["train_seconds_by_device"] == {stage["device"]: stage["train_seconds"]}
  # A stage trained elsewhere (e.g. on a GPU) keeps its own machine's seconds in a resumed call's results.
  history["iwae5"]["1"]["device"] = "another machine"
  json.dump(history, open(tmp_path / "history.json", "w"))
  res = _run(iwae_table, tmp_path, mnist_test_dir, "--rows=vae1,iwae5")
  assert res["rows"]["iwae5"]["train_seconds_by_device"] == {"another machine": history["iwae5"]["1"]["train_seconds"]}
  assert res["rows"]["vae1"]["train_seconds_by_device"] == {history["vae1"]["1"]["device"]: history["vae1"]["1"]["train_seconds"]}


def test_a_stopped_training_stops_the_study(tmp_path, monkeypatch):
  """A SIGTERM during a study's run stops jaxae's training gracefully (checkpoint, summary 'interrupted');
  the study must stop there too, not time the partial run and go on to the next one."""
  from experiments import common
  from jaxae import configs

  calls = []

  def stopped_run(config, workdir, fresh=False):
    calls.append(workdir)
    return {"interrupted": "SIGTERM", "step": 3, "epoch": 1}

  monkeypatch.setattr(jaxae, "train_and_evaluate", stopped_run)
  config = configs.with_values(common.load_config("vae"), {"train.epochs": 2})
  with pytest.raises(SystemExit, match="stopped by SIGTERM"):
    common.ensure_trained(config, str(tmp_path / "run"))
  assert calls and not (tmp_path / "run" / "train_seconds.json").exists()


def test_disentanglement(tmp_path):
  """Study 18's smoke version (two models on the dSprites-like data): every score in [0, 1], each model's
  own weight in its saved config, and the between-model / within-model spread recomputed with NumPy from
  the per-seed values the study wrote to results.csv."""
  from experiments import disentanglement
  disentanglement.main([f"--out={tmp_path}", "--smoke", "--models=vae,beta_vae"])
  res = json.load(open(tmp_path / "results.json"))
  assert "disentanglement_seeds.png" in _pngs(tmp_path)
  for name, beta in (("vae", 1.0), ("beta_vae", 4.0)):
    assert json.load(open(tmp_path / "runs" / name / "config.json"))["loss"]["beta"] == beta
    for key, values in res["models"][name]["per_seed"].items():
      if key != "heldout_loss":
        assert len(values) == 2 and all(0.0 <= v <= 1.0 for v in values), (name, key, values)
  with open(tmp_path / "results.csv") as f:
    rows = [line.strip().split(",") for line in f][1:]
  keys = list(disentanglement.disentanglement.KEYS)
  for j, (title, between, within) in enumerate(res["spread"]):
    per_model = [np.array([float(r[2 + j]) for r in rows if r[0] == m]) for m in ("vae", "beta_vae")]
    assert title == disentanglement.TITLES[keys[j]]
    np.testing.assert_allclose(float(between), np.std([p.mean() for p in per_model], ddof=1), atol=6e-4)
    np.testing.assert_allclose(float(within), np.sqrt(np.mean([p.var(ddof=1) for p in per_model])), atol=6e-4)


def test_run_all_names_every_study_module(monkeypatch, tmp_path):
  """run_all covers every study module in experiments/ (a new study missing from it fails here), and a
  study that reuses another's module gets its own flags in both versions."""
  import importlib.util
  import pathlib
  import subprocess

  from experiments import run_all
  helpers = {"__init__", "common", "run_all", "saelens_check", "saelens_loss_check"}  # not studies
  modules = {p.stem for p in pathlib.Path(run_all.__file__).parent.glob("*.py")} - helpers
  assert modules == {run_all.MODULE.get(s, s) for s in run_all.STUDIES}
  assert all(importlib.util.find_spec(f"experiments.{run_all.MODULE.get(s, s)}") for s in run_all.STUDIES)
  calls = []
  monkeypatch.setattr(subprocess, "run", lambda cmd, check: calls.append(cmd))
  for smoke in ([], ["--smoke"]):
    run_all.main([f"--out={tmp_path}", "--only=zoo_mnist", *smoke])
  assert all(c[2] == "experiments.zoo" and "--train_set=mnist" in c and c[3] == f"--out={tmp_path}/zoo_mnist"
             for c in calls) and len(calls) == 2


@pytest.mark.parametrize("flag, message", [("--unroll=0", "argument --unroll: 0 is below 1"),
                                           ("--passes=2.5", "argument --passes: '2.5' is not an integer"),
                                           ("--max_examples=-1", "argument --max_examples: -1 is below 0"),
                                           ("--seeds=-3", "argument --seeds: -3 is below 0")])
def test_a_bad_study_flag_is_one_argparse_line(tmp_path, capsys, flag, message):
  """Counts typed on a study's command line are checked by argparse (usage + one line, exit 2) before anything
  is trained, instead of surfacing later as a traceback from the config's validation."""
  from experiments import iwae_table
  with pytest.raises(SystemExit) as exit_info:
    iwae_table.main([f"--out={tmp_path}", flag])
  assert exit_info.value.code == 2
  assert capsys.readouterr().err.strip().splitlines()[-1].endswith(message)
  assert not os.listdir(tmp_path)  # nothing was written
