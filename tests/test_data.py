"""Data sources: the embedded subset, IDX files, TFDS (mocked), splits and errors."""

import gzip
import os
import shutil

import numpy as np
import pytest

from jaxae import data

from conftest import tiny_config


def test_embedded_mnist_is_the_real_5k_subset():
  split = data.embedded_mnist()
  assert split.x.shape == (5000, 28, 28, 1) and split.x.dtype == np.uint8
  assert split.labels.dtype == np.int32
  np.testing.assert_array_equal(np.bincount(split.labels), [500] * 10)
  # Real digits: the mean image is bright in the centre and black in the corners.
  mean = split.x[..., 0].mean(0)
  assert mean[10:18, 10:18].mean() > 60 and mean[:3, :3].max() == 0


def test_idx_reads_the_official_test_set(mnist_test_dir):
  split = data.idx_dataset(mnist_test_dir, "test")
  assert split.x.shape == (10000, 28, 28, 1) and split.x.dtype == np.uint8
  counts = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]  # from shared/data/README.md
  np.testing.assert_array_equal(np.bincount(split.labels), counts)


def test_idx_errors_name_the_file(tmp_path, mnist_test_dir):
  with pytest.raises(data.DataError, match="no t10k-images"):
    data.idx_dataset(str(tmp_path), "test")
  shutil.copy(os.path.join(mnist_test_dir, "t10k-labels-idx1-ubyte.gz"), tmp_path)
  with gzip.open(os.path.join(mnist_test_dir, "t10k-images-idx3-ubyte.gz")) as f:
    raw = f.read()
  with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
    f.write(raw[: len(raw) // 2])
  with pytest.raises(data.DataError, match="truncated"):
    data.idx_dataset(str(tmp_path), "test")
  (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
  with pytest.raises(data.DataError, match="cannot read IDX"):
    data.idx_dataset(str(tmp_path), "test")
  with pytest.raises(data.DataError, match="split"):
    data.idx_dataset(str(tmp_path), "validation")


def test_tfds_source_with_mock_data():
  import tensorflow_datasets as tfds

  with tfds.testing.mock_data(num_examples=24):
    split = data.load_source("tfds:mnist", "train")
  assert split.x.shape == (24, 28, 28, 1) and split.x.dtype == np.uint8
  assert split.labels.shape == (24,)


def test_tfds_missing_dataset_is_a_clear_error(tmp_path):
  with pytest.raises(data.DataError, match="not available.*tfds build fashion_mnist"):
    data.tfds_dataset("fashion_mnist", "train", data_dir=str(tmp_path))


def test_stratified_holdout_is_disjoint_and_balanced():
  labels = np.repeat(np.arange(10), 50)
  train, held = data.stratified_split(labels, 0.1, seed=0)
  assert len(set(train) & set(held)) == 0 and len(train) + len(held) == 500
  np.testing.assert_array_equal(np.bincount(labels[held]), [5] * 10)
  again = data.stratified_split(labels, 0.1, seed=0)
  np.testing.assert_array_equal(held, again[1])


def test_load_holds_out_or_uses_eval_source(mnist_test_dir):
  config = tiny_config()
  d = data.load(config.data)
  assert len(d.train) == 256 and len(d.eval) == 64
  config.data.eval_source = "idx:" + mnist_test_dir
  config.data.max_eval = 0
  d = data.load(config.data)
  assert len(d.eval) == 10000 and "t10k" not in d.eval_name and "idx:" in d.eval_name


def test_float_images_outside_unit_interval_are_rejected():
  bad = data.Split(np.full((4, 28, 28, 1), 2.0, np.float32), np.zeros(4, np.int32))
  with pytest.raises(data.DataError, match=r"values in \[2, 2\].*\[0, 1\]"):
    data.check_images(bad, "mydata")
  with pytest.raises(data.DataError, match="shape"):
    data.check_images(data.Split(np.zeros((4, 28, 28), np.uint8), np.zeros(4, np.int32)), "flat")
