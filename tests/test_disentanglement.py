"""data.source=dsprites (jaxae/sources/dsprites.py) and the disentanglement metrics (jaxae/disentanglement.py).

The images are checked against a pixel-by-pixel loop and against areas and positions computed by hand;
the factor order against DeepMind's (posY fastest); the metrics against counting by hand (MIG), the
definitions in loops (DCI, SAP), scikit-learn's mutual_info_score, and synthetic codes with known answers:
codes that are the factors score about 1, codes independent of them about 0 (FactorVAE: chance 1/K),
codes mixing pairs of factors in between. Last, a tiny VAE trained on dsprites is evaluated end to end.
"""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest

from conftest import ROOT, run_main, tiny_config
from jaxae import data as data_lib
from jaxae import disentanglement as dis
from jaxae import evaluate
from jaxae.sources import base as sources_base
from jaxae.sources import dsprites as ds
from jaxae.sources.lazy import LazyArray

# --- dsprites ---------------------------------------------------------------------------------------------


def test_factor_values_and_order_are_deepminds():
  values = ds.factor_values()
  np.testing.assert_allclose(values["scale"], [0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
  np.testing.assert_allclose(values["orientation"][:3], [0.0, 0.16110732, 0.32221463], atol=1e-8)  # DeepMind's file
  assert values["orientation"][-1] == pytest.approx(2 * math.pi)
  np.testing.assert_allclose(values["posX"][:2], [0.0, 0.03225806], atol=1e-8)
  assert ds.NUM_IMAGES == 737280 == 3 * 6 * 40 * 32 * 32
  rng = np.random.default_rng(0)
  rows = np.concatenate([[0, 1, 31, 32, 1023, 1024, 737279], rng.integers(0, ds.NUM_IMAGES, 200)])
  factors = ds.factors_of(rows)
  for i, (a, b, c, d, e) in zip(rows, factors.tolist()):  # row-major, the last factor (posY) fastest
    assert (((a * 6 + b) * 40 + c) * 32 + d) * 32 + e == i
  np.testing.assert_array_equal(ds.index_of(factors), rows)
  split = ds.read("", sources_base.Options())
  assert len(split) == ds.NUM_IMAGES and isinstance(split.x, LazyArray) and split.factor_names == ds.FACTOR_NAMES
  np.testing.assert_array_equal(split.factors[rows], factors)
  np.testing.assert_array_equal(split.labels, split.factors[:, 0])
  with pytest.raises(data_lib.DataError, match="only one split"):
    ds.read("", sources_base.Options(split="test"))


def _slow_image(f) -> np.ndarray:
  """One image by a loop over pixels: each pixel centre rotated by -theta into the sprite's frame."""
  shape, scale, turn, px, py = (int(v) for v in f)
  half = 8.0 * (0.5 + 0.1 * scale)
  theta = 2 * math.pi * turn / 39
  cx, cy = 12 + 40 * px / 31, 12 + 40 * py / 31
  image = np.zeros((64, 64), np.uint8)
  for r in range(64):
    for c in range(64):
      x, y = c + 0.5 - cx, cy - (r + 0.5)  # right and up from the centre, in pixels
      u = (x * math.cos(-theta) - y * math.sin(-theta)) / half
      v = (x * math.sin(-theta) + y * math.cos(-theta)) / half
      if shape == 0:
        inside = max(abs(u), abs(v)) <= 1
      elif shape == 1:
        inside = u * u + (2 * v) ** 2 <= 1
      else:
        hx, hy = 1.139 * u, 1.139 * v + 0.118
        inside = (hx * hx + hy * hy - 1) ** 3 <= hx * hx * hy ** 3
      image[r, c] = 255 if inside else 0
  return image


def test_images_match_a_pixel_loop():
  factors = np.asarray([[0, 5, 0, 0, 0], [0, 5, 5, 31, 31], [1, 5, 7, 0, 31], [1, 0, 13, 17, 4], [2, 5, 0, 16, 16],
                        [2, 5, 23, 31, 0], [2, 2, 33, 3, 29], [0, 3, 20, 31, 0]])
  images = ds.render(factors)
  assert images.shape == (8, 64, 64, 1) and images.dtype == np.uint8
  mismatched = sum(int(np.sum(images[i, ..., 0] != _slow_image(f))) for i, f in enumerate(factors))
  assert mismatched <= 2  # rounding at a boundary at most; a misplaced window would be hundreds
  # Through the LazyArray: rows of DeepMind's order drawn on indexing (an int, a slice, an index array).
  x = ds.dsprites().x
  rows = ds.index_of(factors)
  np.testing.assert_array_equal(x[rows], images)
  np.testing.assert_array_equal(x[int(rows[3])], images[3])
  np.testing.assert_array_equal(x[int(rows[0]):int(rows[0]) + 2], ds.render(ds.factors_of([rows[0], rows[0] + 1])))


def test_geometry_areas_positions_and_margins():
  # Areas at scale 1 (half-size 8 px), orientation 0: square 16 x 16, ellipse pi 8 * 4, heart from a fine grid.
  g = np.linspace(-1.5, 1.5, 3001)
  hx, hy = np.meshgrid(g, g)
  heart_area = np.mean((hx**2 + hy**2 - 1) ** 3 <= hx**2 * hy**3) * 9 / 1.139**2  # in half-sizes squared
  counts = (ds.render([[s, 5, 0, 10, 20] for s in range(3)]) > 0).sum(axis=(1, 2, 3))
  assert counts[0] == 256
  assert counts[1] == pytest.approx(math.pi * 8 * 4, rel=0.06)
  assert counts[2] == pytest.approx(heart_area * 64, rel=0.06)
  assert (ds.render([[0, 0, 0, 10, 20]]) > 0).sum() == 64  # scale 0.5: 8 x 8
  # The centre moves 40/31 px per position step: right with posX, down with posY.
  moving = ds.render([[0, 5, 0, p, 31 - p] for p in range(32)])[..., 0] > 0
  rr, cc = np.meshgrid(np.arange(64) + 0.5, np.arange(64) + 0.5, indexing="ij")
  mass = moving.sum(axis=(1, 2))
  centre = 12 + 40 * np.arange(32) / 31
  np.testing.assert_allclose((moving * cc).sum(axis=(1, 2)) / mass, centre, atol=0.5)
  np.testing.assert_allclose((moving * rr).sum(axis=(1, 2)) / mass, centre[::-1], atol=0.5)
  # No sprite touches the border, none is empty; orientation 2 pi (index 39) is orientation 0.
  rng = np.random.default_rng(1)
  corners = [[s, 5, t, p, q] for s in range(3) for t in (0, 5, 15) for p in (0, 31) for q in (0, 31)]
  sample = np.concatenate([ds.factors_of(rng.integers(0, ds.NUM_IMAGES, 1000)), corners])
  on = ds.render(sample)[..., 0] > 0
  assert on.any(axis=(1, 2)).all()
  assert not on[:, [0, -1], :].any() and not on[:, :, [0, -1]].any()
  np.testing.assert_array_equal(ds.render([[2, 3, 0, 5, 9]]), ds.render([[2, 3, 39, 5, 9]]))
  assert not np.array_equal(ds.render([[2, 3, 0, 5, 9]]), ds.render([[2, 3, 20, 5, 9]]))  # the heart turned


def test_load_holds_out_and_subsets_with_factors_aligned():
  config = tiny_config("vae", data__source="dsprites", data__max_train=300, data__max_eval=100)
  d = data_lib.load(config.data)
  assert len(d.train) == 300 and len(d.eval) == 100
  for split in (d.train, d.eval):
    assert isinstance(split.x, LazyArray) and split.factors.shape == (len(split), 5)
    assert split.factor_names == ds.FACTOR_NAMES
    np.testing.assert_array_equal(split.labels, split.factors[:, 0])
    np.testing.assert_array_equal(split.x[:25], ds.render(split.factors[:25]))  # images follow their factors
  assert not set(ds.index_of(d.train.factors)) & set(ds.index_of(d.eval.factors))  # held out: disjoint rows
  bad = sources_base.Split(np.zeros((3, 2), np.float32), factors=np.zeros((2, 5), np.int32),
                           factor_names=ds.FACTOR_NAMES)
  with pytest.raises(data_lib.DataError, match="factors of shape"):
    data_lib.check_split(bad)


# --- metrics against hand computations --------------------------------------------------------------------


def _bins_by_hand(column, bins):
  lo, hi = min(column), max(column)
  width = (hi - lo) / bins
  return [min(int((v - lo) / width), bins - 1) for v in column]


def _mi_by_counting(a, b) -> float:
  n = len(a)
  pa, pb, pab = Counter(a), Counter(b), Counter(zip(a, b))
  return sum(c / n * math.log((c / n) / (pa[x] / n * pb[y] / n)) for (x, y), c in pab.items())


def _h_by_counting(a) -> float:
  n = len(a)
  return -sum(c / n * math.log(c / n) for c in Counter(a).values())


def test_mig_matches_counting_by_hand():
  rng = np.random.default_rng(3)
  n = 40
  factors = np.stack([rng.integers(0, 3, n), rng.integers(0, 4, n)], axis=1)
  codes = np.stack([factors[:, 0] + 0.3 * rng.random(n), rng.random(n), factors[:, 1] * rng.random(n)], axis=1)
  bins = [_bins_by_hand(codes[:, j].tolist(), 5) for j in range(3)]
  gaps = []
  for k in range(2):
    f = factors[:, k].tolist()
    mi = sorted((_mi_by_counting(b, f) for b in bins), reverse=True)
    gaps.append((mi[0] - mi[1]) / _h_by_counting(f))
  assert dis.mig(codes, factors, num_bins=5) == pytest.approx(np.mean(gaps), rel=1e-12)
  np.testing.assert_array_equal(dis.discretize(codes, 5), np.asarray(bins).T)
  from sklearn.metrics import mutual_info_score
  expected = mutual_info_score(bins[0], factors[:, 0])
  assert dis.mutual_information(bins[0], factors[:, 0]) == pytest.approx(expected, rel=1e-12)


def test_dci_and_sap_scores_match_their_definitions():
  rng = np.random.default_rng(4)
  r = rng.random((5, 3))
  r[2] = 0.0  # a unit no predictor uses: weight 0
  d, k = r.shape
  dis_by_hand = sum(r[i].sum() / r.sum() * (1 + sum(p * math.log(p, k) for p in r[i] / r[i].sum()))
                    for i in range(d) if r[i].sum() > 0)
  comp_by_hand = sum(r[:, j].sum() / r.sum() * (1 + sum(p * math.log(p, d) for p in r[:, j] / r[:, j].sum() if p > 0))
                     for j in range(k))
  assert dis.dci_scores(r) == pytest.approx((dis_by_hand, comp_by_hand), rel=1e-12)
  assert dis.dci_scores(np.eye(4)) == pytest.approx((1.0, 1.0))
  assert dis.dci_scores(np.ones((4, 3))) == pytest.approx((0.0, 0.0), abs=1e-12)
  s = rng.random((4, 3))
  assert dis.sap_from_scores(s) == pytest.approx(np.mean([sorted(s[:, j])[-1] - sorted(s[:, j])[-2] for j in range(3)]))


def test_factor_groups_draw_uniformly_among_examples_sharing_the_value():
  rng = np.random.default_rng(5)
  factors = np.stack([rng.integers(0, 3, 300), rng.integers(0, 7, 300)], axis=1)
  groups = dis.FactorGroups.of(factors)
  values = np.full(2000, 4)
  rows = groups.sample(1, values, 30, rng)
  assert rows.shape == (2000, 30) and (factors[rows, 1] == 4).all()
  members = np.flatnonzero(factors[:, 1] == 4)
  counts = np.bincount(rows.ravel(), minlength=300)[members]  # each member ~ 60,000 / |group| times
  expected = rows.size / len(members)
  assert np.sum((counts - expected) ** 2 / expected) < len(members) + 5 * math.sqrt(2 * len(members))  # chi-square
  with pytest.raises(ValueError, match="no example has factor 1 = 9"):
    groups.sample(1, [9], 3, rng)


# --- metrics on synthetic codes with known answers --------------------------------------------------------

SIZES = np.asarray(ds.FACTOR_SIZES)


def _table(n, seed):
  rng = np.random.default_rng(seed)
  return np.stack([rng.integers(0, s, n) for s in SIZES], axis=1)


def _perfect(f, rng):
  """Each factor in its own unit through a different monotone map, plus 3 units of noise."""
  u = f / (SIZES - 1)
  z = np.stack([u[:, 0], np.exp(2 * u[:, 1]), u[:, 2] ** 3, np.tanh(3 * (u[:, 3] - 0.5)), -u[:, 4]], axis=1)
  return np.concatenate([z, rng.normal(size=(len(f), 3))], axis=1)


def _random(f, rng):
  return rng.normal(size=(len(f), 8))


def _mixed(f, rng):
  """Factor pairs (0, 1) and (2, 3) rotated by 45 degrees into two units each; factor 4 alone; 3 noise units."""
  u = (f - SIZES / 2) / SIZES
  z = np.stack([u[:, 0] + u[:, 1], u[:, 0] - u[:, 1], u[:, 2] + u[:, 3], u[:, 2] - u[:, 3], u[:, 4]], axis=1)
  return np.concatenate([z, rng.normal(size=(len(f), 3))], axis=1)


@pytest.fixture(scope="module")
def synthetic():
  f_train, f_test = _table(2000, 1), _table(2000, 2)
  out = {}
  for name, codes in (("perfect", _perfect), ("random", _random), ("mixed", _mixed)):
    out[name] = dis.metrics(codes(f_train, np.random.default_rng(3)), f_train, codes(f_test, np.random.default_rng(4)),
                            f_test)
  print({name: {k: round(v, 3) for k, v in m.items()} for name, m in out.items()})
  return out


def test_codes_equal_to_the_factors_score_about_one(synthetic):
  m = synthetic["perfect"]
  assert set(m) == set(dis.KEYS)
  for key in ("dci_disentanglement", "dci_completeness", "dci_informativeness", "factorvae_score"):
    assert m[key] > 0.97, (key, m)
  assert m["sap"] > 0.95
  # MIG: 20 bins cannot hold 32 or 40 values (ln 20 / ln 32 = 0.86), so below 1 even here;
  # with at most 20 values per factor it is 1 up to the estimate's bias.
  assert m["mig"] > 0.8
  small = _table(3000, 7) % np.asarray([3, 6, 10, 8, 5])
  assert dis.mig(small + 0.0, small) > 0.97


def test_codes_independent_of_the_factors_score_about_zero(synthetic):
  m = synthetic["random"]
  for key in ("mig", "dci_disentanglement", "dci_completeness", "sap"):
    assert abs(m[key]) < 0.05, (key, m)
  assert m["factorvae_score"] == pytest.approx(1 / 5, abs=0.04)  # chance: 5 factors
  assert m["dci_informativeness"] < 0.2  # chance: mean of 1/3, 1/6, 1/40, 1/32, 1/32 = 0.12


def test_codes_mixing_factors_score_in_between(synthetic):
  low, mid, high = synthetic["random"], synthetic["mixed"], synthetic["perfect"]
  for key in ("mig", "dci_disentanglement", "dci_completeness", "sap", "factorvae_score"):
    assert low[key] + 0.1 < mid[key] < high[key] - 0.1, (key, low[key], mid[key], high[key])


def test_dci_with_gradient_boosted_trees_as_disentanglement_lib():
  rng = np.random.default_rng(8)
  f = rng.integers(0, 2, (150, 2))  # two-valued factors: one tree per boosting stage
  z = np.concatenate([f + 0.0, rng.normal(size=(150, 1))], axis=1)
  d = dis.dci(z[:100], f[:100], z[100:], f[100:], predictor="gbt")
  assert d["disentanglement"] > 0.95 and d["completeness"] > 0.95 and d["informativeness"] == 1.0
  assert np.argmax(d["importance"], axis=0).tolist() == [0, 1]
  with pytest.raises(ValueError, match="predictor='svm'"):
    dis.dci(z, f, z, f, predictor="svm")


def test_metrics_refuse_bad_inputs():
  f = _table(50, 0)
  with pytest.raises(ValueError, match="at least 2 code units"):
    dis.mig(np.zeros((50, 1)), f)
  with pytest.raises(ValueError, match="NaN"):
    dis.factorvae_score(np.full((50, 3), np.nan), f)
  with pytest.raises(ValueError, match=r"\(N, K\)"):
    dis.mig(np.zeros((50, 3)), f[:40])
  assert dis.factorvae_score(np.ones((50, 3)), f) == 0.0  # collapsed codes: no unit left


# --- end to end -------------------------------------------------------------------------------------------


def test_vae_on_dsprites_evaluates_disentanglement(tmp_path, monkeypatch, capsys):
  wd = tmp_path / "run"
  rc, out, err = run_main(monkeypatch, capsys, f"--config={ROOT}/configs/vae.py", f"--workdir={wd}",
                          "--config.data.source=dsprites", "--config.data.max_train=2000", "--config.data.max_eval=400",
                          "--config.num_seeds=2", "--config.train.epochs=2", "--config.train.batch_size=100",
                          "--config.model.hidden=(64,32)", "--config.model.latent_dim=6",
                          "--config.train.figures=False", "--config.train.progress=False")
  assert rc == 0, err[-2000:]
  result = evaluate.evaluate(str(wd), evaluate.Options(num_samples=0, figures=False, probes=False,
                                                       disentanglement_examples=400), quiet=True)
  scores = result["settings"][0]["eval"]
  for key in dis.KEYS:
    assert len(scores[key]["per_seed"]) == 2 and all(0 <= v <= 1 for v in scores[key]["per_seed"]), (key, scores[key])
  assert "posX" in result["notes"]["mig"]
  # The codes of the held-out images are scored against those images' factors: the factors are predictable
  # from them above chance (0.12; 0.25 measured, 0.12 with the factors shuffled against the images).
  assert scores["dci_informativeness"]["mean"] > 0.17
  written = json.loads((wd / "evaluation.json").read_text())
  assert written["settings"][0]["eval"]["mig"] == scores["mig"]
  print({k: scores[k]["per_seed"] for k in dis.KEYS})
