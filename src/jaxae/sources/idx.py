"""`idx:DIR`: MNIST-format IDX files, as MNIST, Fashion-MNIST and KMNIST are distributed."""

from __future__ import annotations

import gzip
import os
import struct
import zlib

import numpy as np

from jaxae.sources.base import DataError, Options, Split, expand


def _read_idx(path: str, expected_magic: int) -> np.ndarray:
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      raw = f.read()
  except (OSError, EOFError, zlib.error) as e:  # zlib.error: a corrupt deflate stream inside the gzip
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

  Images (N, H, W, 1) uint8, labels (N,) int32. `split` is 'train' or 'test' (files prefixed
  'train' or 't10k'). Raises DataError naming the missing or malformed file.
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
  return Split(images[..., None], labels, f"idx:{directory} ({split})")


def read(argument: str, options: Options) -> Split:
  return idx_dataset(expand(argument), options.split)
