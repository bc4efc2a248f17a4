"""The record every data source returns, the options readers share, and the checks they share.

Readers (one module per source in this package) depend on this module only, never on `jaxae.data`,
which depends on them: `jaxae.data` re-exports `DataError` and `Split`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from jaxae import errors


class DataError(errors.BadInput, ValueError):
  """A dataset that cannot be read, or does not fit the config. Its message is one line."""


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
  """Inputs and optional labels of one dataset split.

  x: (N, H, W, C) images or (N, D) vectors; a numpy array, or a `LazyArray` of memory-mapped rows
    (index it per batch: `np.asarray` of a LazyArray reads every row). uint8 means [0, 255]
    (`data.to_float` scales it to [0, 1]); every other numeric dtype is taken as it is.
  labels: (N,) int32 class indices, or None when the source has no labels.
  name: what the data is ("data.source='npy:x.npy'"), for error messages.
  factors: (N, F) int32 indices of the ground-truth factors of variation of each example (`dsprites`),
    or None: what the disentanglement metrics of `jaxae.evaluate` score codes against.
  factor_names: the F factors' names, () without factors.
  target: (N, *target_shape) what each input is reconstructed into instead of itself (`data.target_source`:
    a transcoder's target, e.g. an MLP's output for its input activations), row i paired with x[i]; a numpy
    array or a LazyArray, as x. None for autoencoders.
  """
  x: Any
  labels: np.ndarray | None = None
  name: str = "data"
  factors: np.ndarray | None = None
  factor_names: tuple[str, ...] = ()
  target: Any = None

  def __len__(self) -> int:
    return len(self.x)

  def take(self, index) -> Split:
    """The rows `index` (1-D integers) in that order, with their labels, factors and targets; a LazyArray
    stays lazy (nothing is read)."""
    rows = lambda a: a[index] if isinstance(a, np.ndarray) else a.select(index)
    pick = lambda a: None if a is None else a[index]
    target = None if self.target is None else rows(self.target)
    return dataclasses.replace(self, x=rows(self.x), labels=pick(self.labels), factors=pick(self.factors), target=target)


def has_labels(split: Split) -> bool:
  return split.labels is not None


@dataclasses.dataclass(frozen=True)
class Options:
  """What a reader may need beyond its argument (the text after 'prefix:'), from `config.data`."""
  split: str = "train"  # idx: 'train' | 'test'; tfds: TFDS split syntax; hf: a DatasetDict key
  data_dir: str = ""  # tfds: data_dir ('' = the TFDS default)
  channels: int = 0  # folder / hf images: 1 (grayscale) or 3 (RGB); 0 = 1 if every image is grayscale
  image_size: tuple[int, ...] = ()  # folder / hf images: (height, width) to resize to; () = no resize
  label_column: str = ""  # csv / hf: a column name or index; '' = none (hf: 'label' if present)
  column: str = ""  # hf: the input column ('' = an Array2D column of per-token activations, else automatic)


def expand(path: str) -> str:
  return os.path.expanduser(path)


def row_shape(shape: tuple[int, ...], where: str) -> tuple[int, ...]:
  """The shape of one example: (N,) -> (1,), (N, D) -> (D,), (N, H, W) -> (H, W, 1), (N, H, W, C) kept.

  Raises DataError for 0-d arrays and arrays of 5 or more dimensions.
  """
  if len(shape) == 1:
    return (1,)
  if len(shape) == 3:
    return (*shape[1:], 1)
  if len(shape) in (2, 4):
    return tuple(shape[1:])
  raise DataError(f"{where} has shape {tuple(shape)}: expected vectors (N, D) or images (N, H, W[, C])")


def as_inputs(x: np.ndarray, where: str) -> np.ndarray:
  """An in-memory input array reshaped (without copying) to (N, D) or (N, H, W, C); see `row_shape`."""
  return x.reshape(len(x), *row_shape(x.shape, where))


def as_labels(labels: np.ndarray, where: str) -> np.ndarray:
  """(N,) int32 class indices from integers of any width and byte order, booleans, or floats that are all
  whole numbers (a csv column).

  Raises DataError for other shapes or dtypes, for fractional, NaN or infinite values, and for values
  that int32 cannot hold (an int64 or uint64 label beyond it would wrap around, silently, to another class).
  """
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise DataError(f"{where}: labels have shape {labels.shape}, expected (N,)")
  if labels.dtype.kind not in "biuf":
    raise DataError(f"{where}: labels have dtype {labels.dtype}, expected integer class indices")
  if labels.dtype.kind == "f":
    whole = np.isfinite(labels) & (labels == np.round(labels))
    if not whole.all():
      raise DataError(f"{where}: labels must be whole numbers (class indices), found {labels[~whole][0]!r}")
  if labels.size and labels.dtype.kind in "iuf":
    lo, hi = labels.min(), labels.max()
    info = np.iinfo(np.int32)
    if lo < info.min or hi > info.max:
      raise DataError(f"{where}: labels range from {lo} to {hi}, beyond 32-bit class indices "
                      f"[{info.min}, {info.max}]: renumber the classes")
  return labels.astype(np.int32)
