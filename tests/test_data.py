"""Data sources, splits, checks and the Normalizer, against NumPy on files the tests write themselves."""

import csv
import dataclasses
import gzip
import json
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxae import checkpoints, configs, data, workdir
from jaxae.sources import lazy

from conftest import tiny_config

# ---------------------------------------------------------------------------------------------
# Fixtures: the same real data written as every kind of source.


@pytest.fixture(scope="module")
def digits():
  """120 of scikit-learn's bundled 8x8 digits: images (120, 8, 8, 1) uint8 in [0, 16], labels (120,)."""
  from sklearn.datasets import load_digits

  d = load_digits()
  return d.images[:120].astype(np.uint8)[..., None], d.target[:120].astype(np.int32)


def _write_folder(root, images, labels=None):
  """PNGs named by their index, in one sub-folder per label (digit_<label>) or flat."""
  for i, image in enumerate(images):
    folder = root if labels is None else root / f"digit_{labels[i]}"
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(folder / f"{i:04d}.png")


def _write_csv(path, rows, header=None):
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    if header:
      writer.writerow(header)
    writer.writerows(rows)


def _data_config(**values):
  config = configs.base_config()
  for key, value in values.items():
    config.data[key] = value
  configs.validate(config)
  return config.data


# ---------------------------------------------------------------------------------------------
# Today's sources: embedded, idx, tfds.


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


def test_idx_corrupt_gzip_stream_is_a_data_error(tmp_path):
  """A valid gzip header over a damaged deflate stream: zlib.error used to escape."""
  images = np.arange(4 * 28 * 28, dtype=np.uint32).astype(np.uint8).reshape(4, 28, 28)
  packed = bytearray(gzip.compress(b"\x00\x00\x08\x03" + np.array([4, 28, 28], ">i4").tobytes() + images.tobytes()))
  packed[20:40] = b"\xff" * 20
  (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(bytes(packed))
  (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01" + np.array([4], ">i4").tobytes() + bytes(4)))
  with pytest.raises(data.DataError, match="cannot read IDX file .*t10k-images"):
    data.load_source(f"idx:{tmp_path}", data.Options(split="test"))


def test_tfds_source_with_mock_data():
  import tensorflow_datasets as tfds

  with tfds.testing.mock_data(num_examples=24):
    split = data.load_source("tfds:mnist")
  assert split.x.shape == (24, 28, 28, 1) and split.x.dtype == np.uint8
  assert split.labels.shape == (24,)


def test_tfds_missing_dataset_is_a_clear_error(tmp_path):
  with pytest.raises(data.DataError, match="not available.*tfds build fashion_mnist"):
    data.tfds_dataset("fashion_mnist", "train", data_dir=str(tmp_path))


# ---------------------------------------------------------------------------------------------
# New sources round-trip the arrays they were given.


def test_npz_folder_and_csv_of_the_same_digits_give_the_same_arrays(tmp_path, digits):
  images, labels = digits
  np.savez(tmp_path / "digits.npz", x=images, y=labels)
  _write_folder(tmp_path / "classes", images, labels)
  _write_csv(tmp_path / "digits.csv", [[*row, y] for row, y in zip(images.reshape(len(images), -1), labels)],
             header=[f"px{j}" for j in range(64)] + ["digit"])

  npz = data.load_source(f"npz:{tmp_path}/digits.npz")
  np.testing.assert_array_equal(npz.x, images)
  np.testing.assert_array_equal(npz.labels, labels)
  assert npz.x.dtype == np.uint8 and npz.labels.dtype == np.int32

  # A class folder is read class by class (sorted folder names), files sorted within.
  order = np.argsort(labels, kind="stable")
  folder = data.load_source(f"folder:{tmp_path}/classes")
  assert folder.x.dtype == np.uint8 and folder.x.shape == images.shape
  np.testing.assert_array_equal(folder.x, images[order])
  np.testing.assert_array_equal(folder.labels, labels[order])

  table = data.load_source(f"csv:{tmp_path}/digits.csv", data.Options(label_column="digit"))
  assert table.x.dtype == np.float32 and table.x.shape == (len(images), 64)
  np.testing.assert_array_equal(table.x, images.reshape(len(images), 64))
  np.testing.assert_array_equal(table.labels, labels)
  by_index = data.load_source(f"csv:{tmp_path}/digits.csv", data.Options(label_column="-1"))
  np.testing.assert_array_equal(by_index.labels, labels)
  unlabelled = data.load_source(f"csv:{tmp_path}/digits.csv")
  assert not data.has_labels(unlabelled) and unlabelled.x.shape == (len(images), 65)


def test_npz_accepts_other_names_and_shapes(tmp_path):
  vectors = np.random.default_rng(0).normal(size=(6, 3))
  np.savez(tmp_path / "a.npz", inputs=vectors, labels=np.arange(6))
  split = data.load_source(f"npz:{tmp_path}/a.npz")
  np.testing.assert_array_equal(split.x, vectors)
  np.testing.assert_array_equal(split.labels, np.arange(6))
  np.savez(tmp_path / "b.npz", images=np.zeros((5, 4, 4), np.uint8), x=np.zeros(5))  # ambiguous
  with pytest.raises(data.DataError, match=r"b.npz has arrays \['x', 'images'\]"):
    data.load_source(f"npz:{tmp_path}/b.npz")
  np.savez(tmp_path / "c.npz", x=np.array([-2.0, 2.0, 2.0]))  # scalars: (N,) -> (N, 1)
  assert data.load_source(f"npz:{tmp_path}/c.npz").x.shape == (3, 1)


def test_folder_flat_rgb_grayscale_conversion_and_resize(tmp_path):
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, size=(5, 6, 7, 3), dtype=np.uint8)
  _write_folder(tmp_path / "flat", rgb)
  split = data.load_source(f"folder:{tmp_path}/flat")
  assert split.labels is None and not data.has_labels(split)
  np.testing.assert_array_equal(split.x, rgb)  # PNG is lossless; RGB kept (channels=0: as stored)
  gray = data.load_source(f"folder:{tmp_path}/flat", data.Options(channels=1))
  want = np.stack([np.asarray(Image.fromarray(im).convert("L")) for im in rgb])[..., None]
  np.testing.assert_array_equal(gray.x, want)
  resized = data.load_source(f"folder:{tmp_path}/flat", data.Options(image_size=(3, 4)))
  want = np.stack([np.asarray(Image.fromarray(im).resize((4, 3), Image.Resampling.BILINEAR)) for im in rgb])
  np.testing.assert_array_equal(resized.x, want)
  # Grayscale images read as one channel, or three with channels=3; JPEG is read too.
  Image.fromarray(rgb[0, ..., 0]).save(tmp_path / "one.jpg")
  os.makedirs(tmp_path / "jpeg")
  shutil.move(tmp_path / "one.jpg", tmp_path / "jpeg" / "one.jpg")
  assert data.load_source(f"folder:{tmp_path}/jpeg").x.shape == (1, 6, 7, 1)
  assert data.load_source(f"folder:{tmp_path}/jpeg", data.Options(channels=3)).x.shape == (1, 6, 7, 3)


def test_csv_without_header_and_non_numeric_columns(tmp_path):
  table = np.random.default_rng(0).normal(size=(5, 3)).round(4)
  _write_csv(tmp_path / "plain.csv", [[*row, i % 2] for i, row in enumerate(table)])
  split = data.load_source(f"csv:{tmp_path}/plain.csv", data.Options(label_column="3"))
  np.testing.assert_array_equal(split.x, table.astype(np.float32))
  np.testing.assert_array_equal(split.labels, np.arange(5) % 2)
  _write_csv(tmp_path / "mixed.csv", [["id", "a", "kind", "b"], ["x1", 1, "M", 2], ["x2", 3, "B", 4]])
  with pytest.raises(data.DataError, match=r"non-numeric columns 'id' \(line 2: 'x1'\), 'kind' \(line 2: 'M'\)"):
    data.load_source(f"csv:{tmp_path}/mixed.csv")
  with pytest.raises(data.DataError, match="label_column='species' is not a column"):
    data.load_source(f"csv:{tmp_path}/mixed.csv", data.Options(label_column="species"))
  _write_csv(tmp_path / "ragged.csv", [[1, 2], [3]])
  with pytest.raises(data.DataError, match="line 2 has 1 cells"):
    data.load_source(f"csv:{tmp_path}/ragged.csv")
  _write_csv(tmp_path / "half.csv", [[1.0, 0.5], [2.0, 1]])
  with pytest.raises(data.DataError, match="whole numbers"):
    data.load_source(f"csv:{tmp_path}/half.csv", data.Options(label_column="1"))


def test_hf_saved_dataset_matches_its_arrays(tmp_path, digits):
  datasets = pytest.importorskip("datasets")
  images, labels = digits
  features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
  ds = datasets.Dataset.from_dict({"image": [Image.fromarray(im[..., 0]) for im in images[:20]],
                                   "label": labels[:20].tolist()}, features=features)
  datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "img"))
  split = data.load_source(f"hf:{tmp_path}/img")
  np.testing.assert_array_equal(split.x, images[:20])
  np.testing.assert_array_equal(split.labels, labels[:20])
  with pytest.raises(data.DataError, match=r"has splits \['train'\], not data.split='test'"):
    data.load_source(f"hf:{tmp_path}/img", data.Options(split="test"))
  table = np.random.default_rng(0).normal(size=(7, 2)).astype(np.float32)
  datasets.Dataset.from_dict({"a": table[:, 0], "b": table[:, 1], "y": [1] * 7}).save_to_disk(str(tmp_path / "tab"))
  split = data.load_source(f"hf:{tmp_path}/tab", data.Options(label_column="y"))
  np.testing.assert_array_equal(split.x, table)
  np.testing.assert_array_equal(split.labels, [1] * 7)


def test_hf_without_the_datasets_package_says_how_to_install(tmp_path, monkeypatch):
  import sys

  monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` raise ModuleNotFoundError
  with pytest.raises(data.DataError, match=r"pip install 'jaxae\[hf\]'"):
    data.load_source(f"hf:{tmp_path}")


# ---------------------------------------------------------------------------------------------
# npy: memory-mapped files and shards, read lazily.


@pytest.fixture
def shards(tmp_path):
  """Four .npy shards (one empty) of float32 vectors, and their concatenation."""
  rng = np.random.default_rng(0)
  parts = [rng.normal(size=(n, 3)).astype(np.float32) for n in (4, 0, 7, 2)]
  for i, part in enumerate(parts):
    np.save(tmp_path / f"part{i}.npy", part)
  return f"npy:{tmp_path}/part*.npy", np.concatenate(parts)


def test_npy_shards_equal_their_concatenation_and_stay_memory_mapped(shards):
  source, full = shards
  split = data.load_source(source)
  x = split.x
  assert isinstance(x, data.LazyArray) and split.labels is None
  assert len(x.shards) == 4 and all(isinstance(s, np.memmap) for s in x.shards)
  assert x.shape == full.shape and x.dtype == full.dtype and len(x) == 13 and x.ndim == 2
  keys = [0, 5, -1, np.int64(12), slice(None), slice(2, 9), slice(3, 4), slice(None, None, 3), slice(10, 2, -2),
          slice(5, 5), [12, 0, 5, 5, 11], np.array([3, 4, 5]), np.array([], np.int64), full[:, 0] > 0]
  for key in keys:
    got = x[key]
    assert type(got) is np.ndarray, key
    np.testing.assert_array_equal(got, full[key], err_msg=str(key))
  np.testing.assert_array_equal(x[[1, 7], 2], full[[1, 7], 2])
  np.testing.assert_array_equal(x[4, 1:], full[4, 1:])
  np.testing.assert_array_equal(np.asarray(x), full)
  view = x.select([12, 0, 5])
  np.testing.assert_array_equal(view[:], full[[12, 0, 5]])
  np.testing.assert_array_equal(view.select([2, 0])[[1, 0]], full[[12, 5]])
  with pytest.raises(IndexError):
    x[13]
  with pytest.raises(IndexError):
    x[[0, -14]]


class _Recording(np.ndarray):
  """An array that records which rows each `__getitem__` asked for."""
  log: list

  def __getitem__(self, key):
    _Recording.log.append(np.arange(len(self))[key].tolist())
    return np.asarray(self)[key]


def test_lazy_array_reads_only_the_rows_asked_for():
  a, b = np.arange(20.0).reshape(10, 2), np.arange(20.0, 30.0).reshape(5, 2)
  x = lazy.LazyArray([a.view(_Recording), b.view(_Recording)])
  _Recording.log = []
  np.testing.assert_array_equal(x[[13, 2, 11, 2]], np.concatenate([a, b])[[13, 2, 11, 2]])
  assert sorted(_Recording.log) == [[1, 3], [2, 2]]  # local rows of each shard, in ascending order
  _Recording.log = []
  np.testing.assert_array_equal(x[8:11], np.concatenate([a, b])[8:11])
  assert _Recording.log == [[8, 9], [0]]
  _Recording.log = []
  view = x.select(np.arange(15)[::-1])  # a lazy subset reads nothing
  assert _Recording.log == []
  np.testing.assert_array_equal(view.select([3, 14, 9]).storage_order()[:], np.concatenate([a, b])[[0, 5, 11]])
  assert _Recording.log == [[0, 5], [1]]


def test_npy_single_file_3d_is_one_channel_images_with_labels(tmp_path):
  images = np.random.default_rng(0).integers(0, 256, size=(30, 5, 6), dtype=np.uint8)
  labels = np.arange(30) % 3
  np.save(tmp_path / "x.npy", images)
  np.save(tmp_path / "y.npy", labels)
  d = data.load(_data_config(source=f"npy:{tmp_path}/x.npy", labels=f"npy:{tmp_path}/y.npy",
                             holdout_fraction=0.2))
  assert isinstance(d.train.x, data.LazyArray) and d.train.x.shape == (24, 5, 6, 1)
  assert len(d.eval) == 6 and np.array_equal(np.bincount(d.eval.labels), [2, 2, 2])  # stratified
  # The splits are views of the file: every example is in exactly one, with its own label.
  rows = np.concatenate([d.train.x[:], d.eval.x[:]])[..., 0]
  got_labels = np.concatenate([d.train.labels, d.eval.labels])
  index = [int(np.flatnonzero((images == r).all(axis=(1, 2)))[0]) for r in rows]
  assert sorted(index) == list(range(30))
  np.testing.assert_array_equal(got_labels, labels[index])


def test_load_and_normalize_read_memmaps_a_chunk_at_a_time(shards, monkeypatch):
  source, full = shards
  monkeypatch.setattr(data, "CHUNK_BYTES", 24)  # two rows of 3 float32 per chunk
  read_range, read_positions = lazy.LazyArray._read_range, lazy.LazyArray._read_positions

  def small_range(self, start, stop):
    assert stop - start <= 2, f"read rows {start}:{stop} at once"
    return read_range(self, start, stop)

  def small_positions(self, positions):
    assert len(positions) <= 2, f"read {len(positions)} rows at once"
    return read_positions(self, positions)

  monkeypatch.setattr(lazy.LazyArray, "_read_range", small_range)
  monkeypatch.setattr(lazy.LazyArray, "_read_positions", small_positions)
  d = data.load(_data_config(source=source, holdout_fraction=0.25, max_train=8, normalize="standardize"))
  assert isinstance(d.train.x, data.LazyArray) and isinstance(d.eval.x, data.LazyArray)
  assert (len(d.train), len(d.eval)) == (8, 3)
  norm = data.Normalizer("standardize").fit(d.train)
  data.check_unit_interval(d.train, "loss.reconstruction='bce'", data.Normalizer("minmax").fit(d.train))
  monkeypatch.undo()
  train = d.train.x[:]
  assert all(any((row == full).all(axis=1)) for row in train)
  np.testing.assert_allclose(norm.offset, train.mean(0), rtol=1e-6)
  np.testing.assert_allclose(norm.scale, train.std(0), rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Normalizer against NumPy statistics.


def test_normalizer_matches_numpy_statistics_per_feature(monkeypatch):
  monkeypatch.setattr(data, "CHUNK_BYTES", 40)  # 2 rows of 5 float32 per chunk: merged statistics
  rng = np.random.default_rng(0)
  x = (rng.normal(size=(11, 5)) * [1, 10, 100, 0.1, 1] + [0, -5, 50, 3, 0]).astype(np.float32)
  x[:, 4] = 7.5  # a constant feature
  split = data.Split(x)
  x64 = x.astype(np.float64)
  std = data.Normalizer("standardize").fit(split)
  np.testing.assert_allclose(std.offset[:4], x64.mean(0)[:4], rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(std.scale[:4], x64.std(0)[:4], rtol=1e-6)
  z = std.apply(x)
  assert z.dtype == np.float32
  np.testing.assert_allclose(z[:, :4].mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(z[:, :4].std(0), 1, rtol=1e-5)
  np.testing.assert_array_equal(z[:, 4], 0)
  mm = data.Normalizer("minmax").fit(split)
  np.testing.assert_array_equal(mm.offset[:4], x.min(0)[:4])
  u = mm.apply(x)
  np.testing.assert_array_equal(u.min(0), [0, 0, 0, 0, 0])
  np.testing.assert_array_equal(u.max(0), [1, 1, 1, 1, 0])  # exactly 1, constant feature 0
  np.testing.assert_allclose(u, (x64 - x64.min(0)) / np.where(np.ptp(x64, 0) > 0, np.ptp(x64, 0), 1), atol=1e-6)
  # The same numbers on jax arrays (XLA may round the division differently), and after a JSON round trip.
  np.testing.assert_allclose(np.asarray(std.apply(jnp.asarray(x))), z, rtol=1e-6, atol=1e-6)
  again = data.Normalizer.from_json(json.loads(json.dumps(std.to_json())))
  assert again.kind == "standardize"
  np.testing.assert_array_equal(again.offset, std.offset)
  np.testing.assert_array_equal(again.scale, std.scale)
  assert data.Normalizer.from_json(data.Normalizer().to_json()).kind == "none"
  with pytest.raises(data.DataError, match="3 features .* fitted on 5 features"):
    std.apply(x[:, :3])


def test_normalizer_is_per_channel_for_images_and_scales_uint8_first(digits):
  images, _ = digits
  rgb = np.concatenate([images, images * 2, images // 2], axis=-1)
  norm = data.Normalizer("minmax").fit(data.Split(rgb))
  assert norm.offset.shape == (3,)
  values = rgb.reshape(-1, 3).astype(np.float32) / 255
  np.testing.assert_array_equal(norm.offset, values.min(0))
  np.testing.assert_array_equal(norm.scale, values.max(0) - values.min(0))
  np.testing.assert_array_equal(data.Normalizer("none").fit(data.Split(rgb)).apply(rgb), rgb / np.float32(255))


# ---------------------------------------------------------------------------------------------
# Splits, subsets and the checks the run calls.


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


def test_unlabelled_data_is_held_out_at_random(tmp_path):
  np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(40, 2)))
  d = data.load(_data_config(source=f"npy:{tmp_path}/x.npy", holdout_fraction=0.25))
  assert (len(d.train), len(d.eval)) == (30, 10) and d.train.labels is None and d.eval.labels is None


def test_check_labels_names_who_needs_them():
  who = "variant='supervised' (loss.num_classes=3)"
  with pytest.raises(data.DataError, match=r"variant='supervised' \(loss.num_classes=3\) needs labels, but mine has none"):
    data.check_labels(data.Split(np.zeros((4, 2)), None, "mine"), 3, who)
  with pytest.raises(data.DataError, match=r"needs labels in \[0, 3\), but mine has labels from -1 to 2"):
    data.check_labels(data.Split(np.zeros((4, 2)), np.array([0, 1, 2, -1]), "mine"), 3, who)
  with pytest.raises(data.DataError, match="from 0 to 3"):
    data.check_labels(data.Split(np.zeros((4, 2)), np.array([0, 1, 2, 3]), "mine"), 3, who)
  data.check_labels(data.Split(np.zeros((4, 2)), np.array([0, 1, 2, 2]), "mine"), 3, who)


def test_check_unit_interval_is_for_bce_only():
  wide = data.Split(np.array([[-1.0, 0.5], [2.0, 0.25]], np.float32), name="data.source='csv:t.csv'")
  with pytest.raises(data.DataError, match=r"bce.* needs inputs in \[0, 1\].*takes values in \[-1, 2\].*data.normalize=minmax"):
    data.check_unit_interval(wide, "loss.reconstruction='bce'")
  data.check_unit_interval(wide, "loss.reconstruction='bce'", data.Normalizer("minmax").fit(wide))
  data.check_unit_interval(data.Split(np.full((2, 3), 255, np.uint8)), "bce")
  data.check_split(wide)  # values outside [0, 1] are fine for everything else


# ---------------------------------------------------------------------------------------------
# Bad input: one line, naming the culprit.


def test_bad_arrays_are_data_errors_naming_the_file(tmp_path, monkeypatch):
  np.save(tmp_path / "x.npy", np.zeros((5, 2), np.float32))
  np.save(tmp_path / "y.npy", np.zeros(4, np.int64))
  with pytest.raises(data.DataError, match=r"data.source='npy:.*x.npy' has 5 inputs but 4 labels"):
    data.load(_data_config(source=f"npy:{tmp_path}/x.npy", labels=f"npy:{tmp_path}/y.npy"))
  np.savez(tmp_path / "xy.npz", x=np.zeros((5, 2)), y=np.zeros(3, np.int32))
  with pytest.raises(data.DataError, match="has 5 inputs but 3 labels"):
    data.load(_data_config(source=f"npz:{tmp_path}/xy.npz"))

  monkeypatch.setattr(data, "CHUNK_BYTES", 8)
  for bad in (np.nan, np.inf):
    x = np.zeros((9, 2), np.float32)
    x[6, 1] = bad
    np.save(tmp_path / "s0.npy", x[:4])
    np.save(tmp_path / "s1.npy", x[4:])
    with pytest.raises(data.DataError, match=r"s\*.npy' has NaN or Inf inputs \(first in row 6\)"):
      data.load(_data_config(source=f"npy:{tmp_path}/s*.npy"))

  np.save(tmp_path / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
  with pytest.raises(data.DataError, match="objects.npy holds Python objects.*never unpickles"):
    data.load_source(f"npy:{tmp_path}/objects.npy")
  with pytest.raises(data.DataError, match="objects.npy holds Python objects"):
    data.load(_data_config(source=f"npy:{tmp_path}/x.npy", labels=f"npy:{tmp_path}/objects.npy"))
  np.savez(tmp_path / "objects.npz", x=np.array([[1], "a"], dtype=object))
  with pytest.raises(data.DataError, match="objects.npz holds Python objects"):
    data.load_source(f"npz:{tmp_path}/objects.npz")
  np.save(tmp_path / "strings.npy", np.array([["a", "b"], ["c", "d"]]))
  with pytest.raises(data.DataError, match="strings.npy' has dtype <U1: inputs must be numbers"):
    data.load(_data_config(source=f"npy:{tmp_path}/strings.npy"))
  (tmp_path / "fake.npy").write_bytes(b"garbage")
  with pytest.raises(data.DataError, match="fake.npy is not a .npy file"):
    data.load_source(f"npy:{tmp_path}/fake.npy")
  np.save(tmp_path / "wide.npy", np.zeros((3, 2)))
  np.save(tmp_path / "wider.npy", np.zeros((3, 4)))
  with pytest.raises(data.DataError, match="shards must agree.*wider.npy is"):
    data.load_source(f"npy:{tmp_path}/wide*.npy")


def test_empty_and_missing_sources(tmp_path):
  np.save(tmp_path / "empty.npy", np.zeros((0, 3), np.float32))
  with pytest.raises(data.DataError, match="empty.npy' is empty"):
    data.load(_data_config(source=f"npy:{tmp_path}/empty.npy"))
  with pytest.raises(data.DataError, match=r"nothing/\*.npy matches no file"):
    data.load_source(f"npy:{tmp_path}/nothing/*.npy")
  with pytest.raises(data.DataError, match="missing.npy: no such file"):
    data.load_source(f"npy:{tmp_path}/missing.npy")
  with pytest.raises(data.DataError, match="is a directory"):
    data.load_source(f"npy:{tmp_path}")
  (tmp_path / "imgs").mkdir()
  (tmp_path / "imgs" / "notes.txt").write_text("no images here")
  with pytest.raises(data.DataError, match="imgs has no PNG or JPEG images"):
    data.load_source(f"folder:{tmp_path}/imgs")
  (tmp_path / "imgs" / "cat").mkdir()
  with pytest.raises(data.DataError, match="class folder 'cat' has no PNG"):
    data.load_source(f"folder:{tmp_path}/imgs")
  _write_csv(tmp_path / "header.csv", [], header=["a", "b"])
  with pytest.raises(data.DataError, match="header.csv has no data rows"):
    data.load_source(f"csv:{tmp_path}/header.csv")
  with pytest.raises(data.DataError, match="cannot read csv:.*nope.csv"):
    data.load_source(f"csv:{tmp_path}/nope.csv")


def test_empty_holdout_is_an_error_at_load():
  with pytest.raises(data.DataError, match=r"holdout_fraction=0.0009 of the 5000 examples .* 0 held out"):
    data.load(_data_config(holdout_fraction=0.0009))


def test_ragged_folder_names_two_files_unless_resized(tmp_path):
  (tmp_path / "a").mkdir()
  Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a" / "one.png")
  Image.fromarray(np.zeros((9, 7), np.uint8)).save(tmp_path / "a" / "two.png")
  with pytest.raises(data.DataError, match=r"images differ in size: a/one.png is 8x8, a/two.png is 9x7"):
    data.load_source(f"folder:{tmp_path}")
  split = data.load_source(f"folder:{tmp_path}", data.Options(image_size=(8, 8)))
  assert split.x.shape == (2, 8, 8, 1)
  (tmp_path / "a" / "broken.png").write_bytes(b"\x89PNG not really")
  with pytest.raises(data.DataError, match="cannot read image a/broken.png"):
    data.load_source(f"folder:{tmp_path}", data.Options(image_size=(8, 8)))


def test_shapes_that_are_neither_vectors_nor_images():
  with pytest.raises(data.DataError, match="shape"):
    data.check_split(data.Split(np.zeros((4, 28, 28), np.uint8), np.zeros(4, np.int32)))
  with pytest.raises(data.DataError, match="shape"):
    data.check_split(data.Split(np.zeros((4, 0), np.float32)))


# ---------------------------------------------------------------------------------------------
# Config keys.


@pytest.mark.parametrize("key, value, message", [
    ("source", "parquet:x.parquet", "data.source='parquet:x.parquet' must be one of 'embedded', 'idx:DIR'"),
    ("source", "npy:", "data.source='npy:' must be one of"),
    ("eval_source", "embedded:x", "data.eval_source='embedded:x' must be one of"),
    ("labels", "y.npy", "data.labels='y.npy' must be '' or 'npy:PATH'"),
    ("channels", 2, "data.channels=2 must be 1"),
    ("image_size", (8, 0), r"data.image_size=\(8, 0\) must be"),
    ("normalize", "zscore", "data.normalize='zscore' is not one of 'none', 'minmax', 'standardize'"),
])
def test_config_rejects_bad_data_values(key, value, message):
  config = configs.base_config()
  config.data[key] = value
  with pytest.raises(configs.ConfigError, match=message):
    configs.validate(config)


def test_new_sources_validate_and_normalize_is_not_resume_safe(tmp_path):
  for source in ("npy:x.npy", "npy:d/*.npy", "npz:d.npz", "folder:d", "csv:t.csv", "hf:d"):
    configs.validate(configs.with_values(configs.base_config(), {"data.source": source}))
  flat = configs.flatten(configs.base_config())
  with pytest.raises(checkpoints.CheckpointError, match="data.normalize"):
    workdir.check_compatible({**flat, "data.normalize": "minmax"}, flat, str(tmp_path))
  workdir.check_compatible({**flat, "data.eval_source": "npz:other.npz"}, flat, str(tmp_path))


def test_split_take_keeps_name_and_labels():
  split = data.Split(np.arange(10).reshape(5, 2), np.arange(5), "mine")
  part = split.take(np.array([4, 1]))
  np.testing.assert_array_equal(part.x, [[8, 9], [2, 3]])
  np.testing.assert_array_equal(part.labels, [4, 1])
  assert part.name == "mine" and dataclasses.replace(part, labels=None).labels is None


# --- activation caches as they exist: SAELens's Hugging Face caches, bfloat16 .npy --------------------

def _saelens_cache(path, acts, hook="blocks.0.hook_resid_pre", dtype="float32", extra=None):
  """A dataset in the layout of SAELens's CacheActivationsRunner (v6): one row per sequence, the hook's
  activations as an Array2D (context_size, d_in) column and the tokens as a Sequence(int32) column."""
  import datasets

  n, context, d = acts.shape
  features = {hook: datasets.Array2D(shape=(context, d), dtype=dtype),
              "token_ids": datasets.Sequence(datasets.Value("int32"), length=context)}
  columns = {hook: acts, "token_ids": np.arange(n * context, dtype=np.int32).reshape(n, context)}
  for name, (feature, values) in (extra or {}).items():
    features[name], columns[name] = feature, values
  datasets.Dataset.from_dict(columns, features=datasets.Features(features)).save_to_disk(str(path))


def test_hf_saelens_cache_is_read_per_token(tmp_path):
  """Each row's (context_size, d_in) activations are context_size examples, in order; the token ids can be
  the labels (one per token), a label per sequence is repeated per token; float16 stays float16."""
  import datasets

  rng = np.random.default_rng(0)
  acts = rng.standard_normal((5, 4, 3)).astype(np.float32)
  _saelens_cache(tmp_path / "cache", acts)
  split = data.load_source(f"hf:{tmp_path}/cache")
  np.testing.assert_array_equal(split.x, acts.reshape(20, 3))  # row i * 4 + t is token t of sequence i
  assert split.x.dtype == np.float32 and split.labels is None
  split = data.load_source(f"hf:{tmp_path}/cache", data.Options(label_column="token_ids"))
  np.testing.assert_array_equal(split.labels, np.arange(20))
  half = acts.astype(np.float16)
  _saelens_cache(tmp_path / "half", half, dtype="float16", extra={"label": (datasets.Value("int64"), np.arange(5) * 10),
                                                 "other": (datasets.Array2D(shape=(4, 2), dtype="float32"),
                                                           acts[:, :, :2] + 1)})
  with pytest.raises(data.DataError, match=r"several per-token \(Array2D\) columns \['blocks.0.hook_resid_pre', 'other'\]"):
    data.load_source(f"hf:{tmp_path}/half")
  split = data.load_source(f"hf:{tmp_path}/half", data.Options(column="blocks.0.hook_resid_pre"))
  assert split.x.dtype == np.float16
  np.testing.assert_array_equal(split.x, half.reshape(20, 3))
  np.testing.assert_array_equal(split.labels, np.repeat(np.arange(5) * 10, 4))
  split = data.load_source(f"hf:{tmp_path}/half", data.Options(column="other"))
  np.testing.assert_array_equal(split.x, (acts[:, :, :2] + 1).reshape(20, 2))
  with pytest.raises(data.DataError, match=r"data.column='nope' is not a column \(blocks.0.hook_resid_pre, token_ids"):
    data.load_source(f"hf:{tmp_path}/half", data.Options(column="nope"))
  split = data.load_source(f"hf:{tmp_path}/half", data.Options(column="token_ids"))  # a plain column: per row
  np.testing.assert_array_equal(split.x, np.arange(20).reshape(5, 4))
  with pytest.raises(configs.ConfigError, match="data.column='x' picks a column of an 'hf:PATH' dataset"):
    tiny_config("vanilla", data__source="npy:a.npy", data__column="x")


def _bfloat16(a):
  import ml_dtypes

  return np.asarray(a, np.float32).astype(ml_dtypes.bfloat16)


def test_bfloat16_npy_and_npz_are_read_as_float32(tmp_path):
  """np.save of an ml_dtypes bfloat16 array writes dtype '<V2', which np.load returns as raw bytes: the
  sources read the numbers, as float32 (exactly), in shards and subsets too; other void dtypes are refused."""
  rng = np.random.default_rng(1)
  a = _bfloat16(rng.standard_normal((10, 3)) * 100)
  assert np.load(_save(tmp_path / "one.npy", a)).dtype.kind == "V"  # what NumPy alone gives
  expected = a.astype(np.float32)
  assert not np.array_equal(expected, rng.standard_normal((10, 3)).astype(np.float32))
  split = data.load_source(f"npy:{tmp_path}/one.npy")
  assert split.x.dtype == np.float32 and split.x.shape == (10, 3)
  np.testing.assert_array_equal(split.x[:], expected)
  np.testing.assert_array_equal(split.x[np.asarray([7, 2])], expected[[7, 2]])
  np.testing.assert_array_equal(split.take(np.asarray([3, 1])).x[:], expected[[3, 1]])
  (tmp_path / "sh").mkdir()
  _save(tmp_path / "sh" / "0.npy", a[:4])
  _save(tmp_path / "sh" / "1.npy", a[4:])
  np.testing.assert_array_equal(data.load_source(f"npy:{tmp_path}/sh/*.npy").x[:], expected)
  np.savez(tmp_path / "a.npz", x=a)
  np.testing.assert_array_equal(data.load_source(f"npz:{tmp_path}/a.npz").x, expected)
  _save(tmp_path / "sh" / "2.npy", np.zeros((2, 3), "V2"))
  with pytest.raises(data.DataError, match=r"2.npy holds dtype '\|V2' \(raw bytes or records\)"):
    data.load_source(f"npy:{tmp_path}/sh/*.npy")


def _save(path, a):
  np.save(path, a)
  return path


def test_sae_trains_on_a_saelens_cache_and_evaluates_on_bfloat16_through_main(tmp_path, monkeypatch, capsys):
  """The command line: `data.source='hf:CACHE'` with `data.column=HOOK` (8 sequences x 16 tokens = 128 examples,
  4 steps of 32) and `data.eval_source='npy:BF16'`; the held-out FVU is NumPy's on the float32 values."""
  from conftest import run_main
  from jaxae import load, sae

  x, _ = sae.synthetic_features(160, 6, 12, 2.0, seed=2)
  _saelens_cache(tmp_path / "cache", x[:128].reshape(8, 16, 6), hook="blocks.3.hook_mlp_out")
  _save(tmp_path / "eval.npy", _bfloat16(x[128:]))
  wd = tmp_path / "run"
  rc, out, err = run_main(monkeypatch, capsys, "--config=configs/sae.py", f"--config.data.source=hf:{tmp_path}/cache",
                          "--config.data.column=blocks.3.hook_mlp_out", f"--config.data.eval_source=npy:{tmp_path}/eval.npy",
                          f"--workdir={wd}", "--config.num_seeds=1", "--config.model.expansion=2", "--config.sae.k=2",
                          "--config.train.epochs=1", "--config.train.batch_size=32", "--config.train.progress=False",
                          "--config.train.figures=False", "--config.log.tensorboard=False")
  assert rc == 0, err
  run = load.load_run(str(wd))
  assert run.step == 4  # 128 per-token examples / 32
  held = _bfloat16(x[128:]).astype(np.float32)
  from jaxae import analysis
  import jax
  params = jax.tree.map(lambda a: a[0], run.params)
  scale = float(run.model.normalizer.scale[0])
  x_hat = analysis.reconstruct(run.model, params, held, run.config) * scale
  fvu = json.loads((wd / "summary.json").read_text())["settings"][0]["eval"]["fvu"]["mean"]
  np.testing.assert_allclose(fvu, sae.fvu(held, x_hat), rtol=1e-3)
