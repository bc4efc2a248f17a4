"""Figure helpers that compute pixels (the rest of plots.py is exercised by the training tests)."""

import numpy as np
import pytest

from jaxae import plots


@pytest.mark.parametrize("channels", [(1,), (3,), ()])
def test_image_strip_places_each_image_between_white_gaps(channels):
  rng = np.random.default_rng(0)
  row = rng.random((3, 4, 10, *channels)).astype(np.float32) * 1.4 - 0.2  # some values outside [0, 1]
  strip = plots._strip(row, 4)  # room for 4 images, 3 given: the last slot stays white
  gap = 10 // 5
  squeeze = (lambda a: a[..., 0]) if channels == (1,) else (lambda a: a)
  assert strip.shape == (4, 4 * 10 + 3 * gap, *([3] if channels == (3,) else []))
  for j in range(3):
    np.testing.assert_array_equal(strip[:, j * (10 + gap):j * (10 + gap) + 10], np.clip(squeeze(row[j]), 0, 1))
    np.testing.assert_array_equal(strip[:, j * (10 + gap) + 10:(j + 1) * (10 + gap)], 1.0)
  np.testing.assert_array_equal(strip[:, 3 * (10 + gap):], 1.0)


def test_image_rows_writes_a_png(tmp_path):
  from PIL import Image

  rows = [np.zeros((5, 8, 8, 1)), np.ones((5, 8, 8, 1))]
  path = plots.image_rows(rows, ["input", "seed 0"], str(tmp_path / "r.png"), title="t")
  with Image.open(path) as im:
    assert im.size[0] > im.size[1] > 0
