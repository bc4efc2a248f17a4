"""Vector data (N, D): the run's figures, and the denoising variant's noise for data outside [0, 1]."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from conftest import tiny_config
import jaxae
from jaxae import analysis, losses
from jaxae import data as data_lib
from jaxae import run as run_lib


@pytest.fixture(scope="module")
def table_npz(tmp_path_factory):
  """scikit-learn's breast-cancer table (569 x 30), unscaled (features from 0.0 to ~4,000)."""
  from sklearn.datasets import load_breast_cancer

  d = load_breast_cancer()
  path = tmp_path_factory.mktemp("table") / "cancer.npz"
  np.savez(path, x=d.data.astype(np.float32), y=d.target.astype(np.int32))
  return f"npz:{path}"


def test_vector_runs_draw_per_feature_and_per_example_errors(table_npz, tmp_path):
  config = tiny_config("vanilla", data__source=table_npz, data__normalize="standardize", model__output="identity",
                       train__figures=True, num_seeds=2, data__max_eval=0)
  run_lib.train_and_evaluate(config, str(tmp_path))
  for name in ("feature_errors.png", "example_errors.png", "loss_curves.png"):
    assert (tmp_path / "figures" / name).stat().st_size > 10_000, name
  assert not (tmp_path / "figures" / "reconstructions.png").exists()
  # The squared errors behind the figures average to the held-out recon_mse the training program reported.
  summary = json.loads((tmp_path / "summary.json").read_text())["settings"][0]
  held = data_lib.load(config.data).eval
  for seed, reported in zip(summary["seeds"], summary["eval"]["recon_mse"]["per_seed"]):
    run = jaxae.load_run(str(tmp_path), seed=seed)
    errors = analysis.squared_errors(run.model, run.params, held.x, run.config, batch_size=16)
    assert errors.shape == (len(held), 30)
    np.testing.assert_allclose(errors.mean(), reported, rtol=1e-5)
    # ...computed by hand: standardize with the training split's statistics, then numpy.
    train = data_lib.load(config.data).train.x.astype(np.float64)
    target = (held.x - train.mean(0)) / train.std(0)
    recon = analysis.reconstruct(run.model, run.params, held.x, run.config)
    np.testing.assert_allclose(errors, (recon - target) ** 2, rtol=2e-3, atol=1e-5)


def test_unclipped_gaussian_noise_is_plain_additive_noise():
  key = jax.random.key(0)
  x = np.full((20000, 1), -2.0, np.float32)
  clipped = np.asarray(losses.corrupt(key, x, "gaussian", 0.5))
  plain = np.asarray(losses.corrupt(key, x, "gaussian", 0.5, clip=False))
  assert clipped.min() == 0.0 and clipped.max() <= 1.0  # everything near -2 is clipped to 0
  noise = plain - x
  np.testing.assert_array_equal(np.clip(plain, 0, 1), clipped)  # the same draw, clipped or not
  assert abs(noise.mean()) < 4 * 0.5 / np.sqrt(len(x)) and abs(noise.std() - 0.5) < 0.01


def test_clipped_noise_on_data_outside_the_unit_interval_is_refused(table_npz, tmp_path):
  for normalize in ("none", "standardize"):
    config = tiny_config("denoising", data__source=table_npz, data__normalize=normalize)
    with pytest.raises(data_lib.DataError, match="noise.clip=False"):
      run_lib.train_and_evaluate(config, str(tmp_path / normalize))
    assert not (tmp_path / normalize).exists()  # refused before anything was written
  run_lib.train_and_evaluate(tiny_config("denoising", data__source=table_npz, data__normalize="minmax",
                                         train__epochs=1), str(tmp_path / "minmax"))
  config = tiny_config("denoising", data__source=table_npz, data__normalize="standardize", noise__clip=False,
                       train__epochs=1)
  summary = run_lib.train_and_evaluate(config, str(tmp_path / "plain"))
  assert np.all(np.isfinite(summary["settings"][0]["eval"]["recon_mse"]["per_seed"]))
