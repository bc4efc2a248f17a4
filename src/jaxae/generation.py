"""Generation quality of samples: Frechet distance and precision/recall in a feature space.

Pure functions of feature arrays (N, D), float64 throughout:

  frechet_distance   ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between Gaussians fitted to two
                     sets (Heusel et al. 2017, eq. 6; Dowson & Landau 1982)
  precision_recall   the k-NN manifold estimates of Kynkaanniemi et al. 2019, sec. 3 (k = 3)

and `mnist_generation_metrics`, which computes both in the feature space of jaxae's reference MNIST
classifier (`jaxae.reference`: 128 penultimate-layer activations of a 784-256-128-10 MLP trained once on the
60k MNIST training set). That Frechet distance is NOT the Inception FID of Heusel et al. (Inception-v3 pool3
features of ImageNet): it is not comparable with Inception-based numbers, only with other numbers from the
same shipped classifier, and its scale is that classifier's features (not image pixels).
"""

from __future__ import annotations

import warnings

import numpy as np


def _features(x, name: str) -> np.ndarray:
  x = np.asarray(x, np.float64)
  if x.ndim != 2 or len(x) < 2:
    raise ValueError(f"{name} must be features (N, D) with N >= 2, got shape {x.shape}")
  if not np.isfinite(x).all():
    raise ValueError(f"{name} has NaN or Inf")
  return x


def frechet_distance(feats_a, feats_b, eps: float = 1e-6) -> float:
  """Frechet (2-Wasserstein squared) distance between Gaussians fitted to feats_a (N, D) and feats_b (M, D).

      d^2 = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))     (Heusel et al. 2017, eq. 6)

  mu, S: sample means and covariances (ddof=1), float64; the matrix square root is scipy.linalg.sqrtm, its real
  part (rounding leaves tiny imaginary parts); when it is not finite (singular products) eps I is added to both
  covariances. In squared feature units; >= 0 up to rounding. Raises ValueError on bad shapes or non-finite
  features. Not Inception FID unless the features are Inception-v3's.
  """
  from scipy import linalg

  a, b = _features(feats_a, "feats_a"), _features(feats_b, "feats_b")
  if a.shape[1] != b.shape[1]:
    raise ValueError(f"features of different sizes: {a.shape[1]} and {b.shape[1]}")
  mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
  s_a, s_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
  with warnings.catch_warnings():  # singular covariances (dead ReLU units) are expected; the check below is ours
    warnings.simplefilter("ignore", linalg.LinAlgWarning)
    root = linalg.sqrtm(s_a @ s_b)
    if not np.isfinite(root).all():
      offset = eps * np.eye(len(s_a))
      root = linalg.sqrtm((s_a + offset) @ (s_b + offset))
  root = np.real(root)
  diff = mu_a - mu_b
  return float(diff @ diff + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(root))


def _sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Squared Euclidean distances (len(a), len(b)), float64, clipped at 0."""
  d = np.sum(a * a, axis=1)[:, None] + np.sum(b * b, axis=1)[None, :] - 2 * a @ b.T
  return np.maximum(d, 0.0)


def knn_radii(feats, k: int = 3, chunk: int = 1000) -> np.ndarray:
  """(N,) distance of each row of feats (N, D) to its k-th nearest other row (itself excluded; ties count)."""
  x = _features(feats, "feats")
  if not 1 <= k < len(x):
    raise ValueError(f"k={k} needs 1 <= k < N={len(x)}")
  out = np.empty(len(x))
  for i in range(0, len(x), chunk):
    d = _sq_distances(x[i:i + chunk], x)
    d[np.arange(len(d)), np.arange(i, i + len(d))] = np.inf  # not its own neighbour
    out[i:i + chunk] = np.sqrt(np.partition(d, k - 1, axis=1)[:, k - 1])
  return out


def _coverage(points: np.ndarray, centers: np.ndarray, radii: np.ndarray, chunk: int = 1000) -> float:
  """Fraction of points within radii[j] of some centers[j] (inside the k-NN manifold of `centers`)."""
  inside = np.zeros(len(points), bool)
  r2 = np.square(radii)[None, :]
  for i in range(0, len(points), chunk):
    inside[i:i + chunk] = np.any(_sq_distances(points[i:i + chunk], centers) <= r2, axis=1)
  return float(inside.mean())


def precision_recall(real, fake, k: int = 3) -> tuple[float, float]:
  """Improved precision and recall (Kynkaanniemi et al. 2019, sec. 3) of fake (M, D) against real (N, D).

  The manifold of a set is the union of balls around its points, each of radius the distance to that point's
  k-th nearest neighbour in the same set (eq. 1-2). precision = fraction of fake samples inside the real
  manifold; recall = fraction of real samples inside the fake manifold (eq. 3-4). Both in [0, 1]; Euclidean
  distances in float64. Raises ValueError on bad shapes or k >= N or k >= M.
  """
  r, f = _features(real, "real"), _features(fake, "fake")
  if r.shape[1] != f.shape[1]:
    raise ValueError(f"features of different sizes: {r.shape[1]} and {f.shape[1]}")
  return _coverage(f, r, knn_radii(r, k)), _coverage(r, f, knn_radii(f, k))


def mnist_generation_metrics(real_images, fake_images, k: int = 3) -> dict[str, float]:
  """{'frechet_distance', 'precision', 'recall'} of fake_images against real_images, both (N, 28, 28[, 1]) or
  (N, 784) in [0, 1], in the feature space of jaxae's reference MNIST classifier (`jaxae.reference.features`;
  its checksum is verified). Not Inception FID: see the module docstring."""
  from jaxae import reference

  fr, ff = reference.features(real_images), reference.features(fake_images)
  p, r = precision_recall(fr, ff, k)
  return {"frechet_distance": frechet_distance(fr, ff), "precision": p, "recall": r}
