"""Generation-quality metrics (jaxae.generation) and the shipped reference MNIST classifier (jaxae.reference).

Frechet distance against the closed form for Gaussians and an eigendecomposition; precision/recall against
hand-computed cases and brute-force loops; the shipped classifier on real, blurred and shuffled MNIST; the
checksum refusal; evaluate on a tiny VAE run.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from jaxae import generation, reference
from conftest import run_main


def _with_moments(rng, n, mu, cov):
  """n points whose sample mean is exactly mu and sample covariance (ddof=1) exactly cov."""
  x = rng.normal(size=(n, len(mu)))
  x -= x.mean(axis=0)
  white = x @ np.linalg.inv(np.linalg.cholesky(np.cov(x, rowvar=False))).T
  return white @ np.linalg.cholesky(cov).T + mu


def test_frechet_distance_matches_the_closed_form_of_diagonal_gaussians():
  rng = np.random.default_rng(0)
  mu_a, mu_b = rng.normal(size=5), rng.normal(size=5)
  s_a, s_b = rng.uniform(0.2, 3.0, 5), rng.uniform(0.2, 3.0, 5)
  a, b = _with_moments(rng, 400, mu_a, np.diag(s_a)), _with_moments(rng, 300, mu_b, np.diag(s_b))
  expected = np.sum((mu_a - mu_b) ** 2) + np.sum(s_a + s_b - 2 * np.sqrt(s_a * s_b))
  assert generation.frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_matches_an_eigendecomposition_for_full_covariances():
  rng = np.random.default_rng(1)
  a = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6)) + 1.0
  b = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6))
  s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  w, v = np.linalg.eigh(s_a)
  root_a = v @ np.diag(np.sqrt(w)) @ v.T
  # Tr (S_a S_b)^(1/2) = sum of square roots of the eigenvalues of the symmetric S_a^(1/2) S_b S_a^(1/2).
  tr_root = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ s_b @ root_a), 0, None)))
  expected = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(s_a) + np.trace(s_b) - 2 * tr_root
  assert generation.frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)
  assert generation.frechet_distance(b, a) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_of_a_set_with_itself_is_zero_and_bad_inputs_are_refused():
  x = np.random.default_rng(2).normal(size=(200, 8))
  assert abs(generation.frechet_distance(x, x)) < 1e-8 * np.trace(np.cov(x, rowvar=False))
  with pytest.raises(ValueError, match="different sizes"):
    generation.frechet_distance(x, x[:, :3])
  with pytest.raises(ValueError, match="NaN"):
    generation.frechet_distance(x, np.full_like(x, np.nan))


def test_precision_recall_of_identical_and_of_disjoint_far_apart_sets():
  x = np.random.default_rng(3).normal(size=(100, 4))
  assert generation.precision_recall(x, x.copy(), k=3) == (1.0, 1.0)
  assert generation.precision_recall(x, x + 1000.0, k=3) == (0.0, 0.0)


def test_precision_recall_of_a_hand_computed_2d_example():
  real = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])  # k=1 radii: 1, 1, 2
  fake = np.array([[0.0, 0.5], [5.0, 0.0], [10.0, 10.0]])  # k=1 radii: sqrt(25.25), sqrt(25.25), sqrt(125)
  # Fake: (0, .5) is 0.5 from (0, 0) (inside); (5, 0) is exactly 2 from (3, 0) (on the ball: inside);
  # (10, 10) is sqrt(149) > 2 from (3, 0) (outside). Every real point is within sqrt(25.25) of (0, .5).
  np.testing.assert_allclose(generation.knn_radii(real, 1), [1, 1, 2])
  assert generation.precision_recall(real, fake, k=1) == (pytest.approx(2 / 3), 1.0)
  assert generation.precision_recall(fake, real, k=1) == (1.0, pytest.approx(2 / 3))


def test_precision_recall_matches_brute_force_loops():
  rng = np.random.default_rng(4)
  real, fake = rng.normal(size=(40, 3)), rng.normal(0.7, 1.3, size=(30, 3))

  def manifold_share(points, centers, k):
    radii = []
    for i, c in enumerate(centers):
      radii.append(sorted(np.linalg.norm(c - o) for j, o in enumerate(centers) if j != i)[k - 1])
    inside = [any(np.linalg.norm(p - c) <= r for c, r in zip(centers, radii)) for p in points]
    return sum(inside) / len(points)

  p, r = generation.precision_recall(real, fake, k=3)
  assert p == pytest.approx(manifold_share(fake, real, 3)) and r == pytest.approx(manifold_share(real, fake, 3))
  assert 0 < p < 1 and 0 < r < 1  # a case that tests the radii, not only the extremes


@pytest.fixture(scope="module")
def mnist_test(mnist_test_dir):
  from jaxae.data import idx_dataset
  split = idx_dataset(mnist_test_dir, "test")
  return split.x.astype(np.float32) / 255, split.labels


def test_shipped_classifier_accuracy_and_size(mnist_test):
  x, y = mnist_test
  assert np.mean(reference.predict(x) == y) > 0.97
  import os
  assert os.path.getsize(reference.WEIGHTS) < 1 << 20
  assert reference.features(x[:3]).shape == (3, reference.FEATURE_DIM)


def test_real_images_score_far_better_than_blurred_or_shuffled(mnist_test):
  x, _ = mnist_test
  order = np.random.default_rng(0).permutation(len(x))
  a, b = x[order[:2000]], x[order[2000:4000]]
  padded = np.pad(b[..., 0], ((0, 0), (1, 1), (1, 1)))
  blurred = sum(padded[:, i:i + 28, j:j + 28] for i in range(3) for j in range(3))[..., None] / 9  # 3x3 box blur
  shuffled = b.reshape(len(b), -1)[:, np.random.default_rng(1).permutation(784)].reshape(b.shape)
  fa = reference.features(a)
  score = {}
  for name, imgs in (("real", b), ("blurred", blurred), ("shuffled", shuffled)):
    f = reference.features(imgs)
    score[name] = (generation.frechet_distance(fa, f), *generation.precision_recall(fa, f, k=3))
  (fd_real, p_real, r_real), (fd_blur, _, r_blur), (fd_shuf, _, r_shuf) = score["real"], score["blurred"], score["shuffled"]
  print(score)
  assert fd_real < 0.25 * fd_blur and fd_blur < 0.25 * fd_shuf
  assert p_real > 0.8 and r_real > 0.8
  assert r_blur < r_real - 0.2 and r_shuf < 0.05
  assert abs(generation.frechet_distance(fa, fa)) < 1e-6 * fd_real


def test_a_corrupted_weights_file_is_refused_in_one_line(tmp_path):
  good = tmp_path / "good.safetensors"
  shutil.copy(reference.WEIGHTS, good)
  params = reference.load(str(good))
  assert params["params"]["dense1"]["kernel"].shape == (256, 128)
  bad = tmp_path / "bad.safetensors"
  raw = bytearray(good.read_bytes())
  raw[-10] ^= 0x01  # one bit of one weight
  bad.write_bytes(bytes(raw))
  with pytest.raises(reference.ChecksumError) as e:
    reference.load(str(bad))
  assert len(str(e.value).splitlines()) == 1 and "SHA-256" in str(e.value)


def test_evaluate_reports_generation_quality_of_a_tiny_vae(tmp_path, monkeypatch, capsys):
  from jaxae import evaluate
  from test_plugins import TINY

  wd = tmp_path / "vae"
  rc, _, err = run_main(monkeypatch, capsys, "--config=configs/vae.py", f"--workdir={wd}", *TINY,
                        "--config.train.epochs=2")
  assert rc == 0, err
  result = evaluate.evaluate(str(wd), evaluate.Options(num_samples=20, figures=False, probes=False,
                                                       generation_samples=64), quiet=True)
  e = result["settings"][0]["eval"]
  fd, p, r = (np.asarray(e[k]["per_seed"], float) for k in ("frechet_distance", "precision", "recall"))
  assert len(fd) == 2 and np.isfinite(fd).all() and (fd > 0).all()
  assert ((0 <= p) & (p <= 1)).all() and ((0 <= r) & (r <= 1)).all()
  assert "NOT Inception FID" in result["notes"]["frechet_distance"]
  assert json.loads((wd / "evaluation.json").read_text())["settings"][0]["eval"]["frechet_distance"]["per_seed"] == \
      pytest.approx(list(fd))
  skipped = evaluate.evaluate(str(wd), evaluate.Options(num_samples=0, figures=False, probes=False,
                                                        generation_samples=0), quiet=True)
  assert "frechet_distance" not in skipped["settings"][0]["eval"]
