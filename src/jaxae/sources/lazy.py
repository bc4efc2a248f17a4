"""A read-only array of rows that stay on disk until they are indexed.

`npy:` sources memory-map their files (`np.load(mmap_mode='r')`); several shards are concatenated
along axis 0 by bookkeeping, never by copying. `np.asarray` of a memmap (or `np.concatenate` of
shards) would read the whole dataset into memory, which is exactly what a dataset larger than memory
cannot afford. `LazyArray` therefore exposes only what training needs: shape, dtype and length, and
indexing that reads the rows asked for (a batch) into an ordinary in-memory array. `select` makes a
lazy subset (a held-out split, `data.max_train`) without reading anything.

Rows of a memory-mapped `.npy` file are read with `os.preadv` into fresh buffers, not through the
mapping: pages touched through a mapping count in the process's resident memory until the kernel
evicts them, so a scan (checks, statistics) or an epoch of batches through the mapping would grow the
resident set to the file size. Read with `pread`, a file of any size costs only the rows in flight
(the kernel's page cache is not the process's memory). Other arrays are indexed as they are.
"""

from __future__ import annotations

import mmap
import os
import threading
import weakref
from typing import Sequence

import numpy as np


class LazyArray:
  """Rows of one or more arrays (usually memmaps) concatenated along axis 0, read on indexing.

  shards: arrays of equal shape[1:] and dtype; `row_shape` (default shape[1:]) reshapes each row
  without copying, e.g. (H, W) rows of a 3-D file to (H, W, 1). `index` (1-D int64 positions into
  the concatenation) restricts and reorders the rows; None means all rows in order. `bfloat16`: the
  shards' 2-byte void items are bfloat16 numbers (an ml_dtypes array saved with np.save, which NumPy
  reads back as dtype 'V2'); rows are then read as float32, exactly (every bfloat16 is a float32).

  `a[key]` returns a new numpy array: key an int (one row), a slice, a 1-D integer array (any
  order, repeats allowed) or boolean mask, or a tuple (rows, *more) whose rest indexes the rows read.
  Raises IndexError for positions out of range and TypeError for other keys.
  """

  def __init__(self, shards: Sequence[np.ndarray], row_shape: tuple[int, ...] | None = None,
               index: np.ndarray | None = None, _files=None, bfloat16: bool = False):
    self._shards = tuple(shards)
    # Rows are handed out in native byte order ('>f4' on disk reads as float32): jax takes only native arrays.
    self._stored = self._shards[0].dtype
    self._bfloat16 = bfloat16
    self._native = np.dtype(np.float32) if bfloat16 else self._stored.newbyteorder("=")
    self._starts = np.cumsum([0] + [len(s) for s in self._shards])  # shard k holds rows starts[k]:starts[k+1]
    self._row_shape = tuple(self._shards[0].shape[1:] if row_shape is None else row_shape)
    self._index = index
    self._files = tuple(_FileRows.of(s) for s in self._shards) if _files is None else _files

  @property
  def shards(self) -> tuple[np.ndarray, ...]:
    return self._shards

  @property
  def shape(self) -> tuple[int, ...]:
    return (len(self), *self._row_shape)

  @property
  def dtype(self) -> np.dtype:
    """The rows' dtype as they are read: the stored one in native byte order."""
    return self._native

  def _native_rows(self, out: np.ndarray) -> np.ndarray:
    if self._bfloat16:
      import ml_dtypes  # a dependency of jax
      return out.view(ml_dtypes.bfloat16).astype(np.float32)
    return out if self._stored == self._native else out.byteswap().view(self._native)

  @property
  def ndim(self) -> int:
    return 1 + len(self._row_shape)

  @property
  def nbytes(self) -> int:
    return int(np.prod(self.shape)) * self.dtype.itemsize

  def __len__(self) -> int:
    return int(self._starts[-1]) if self._index is None else len(self._index)

  def __repr__(self) -> str:
    return f"LazyArray(shape={self.shape}, dtype={self.dtype}, shards={len(self._shards)})"

  def select(self, index) -> LazyArray:
    """A lazy view of rows `index` (1-D integers or a boolean mask) of this one; reads nothing."""
    positions = np.arange(len(self)) if self._index is None else self._index
    return LazyArray(self._shards, self._row_shape, positions[self._positions_key(index)], self._files, self._bfloat16)

  def storage_order(self) -> LazyArray:
    """The same rows, sorted by where they are stored: for scans whose result ignores row order."""
    return self if self._index is None else LazyArray(self._shards, self._row_shape, np.sort(self._index), self._files,
                                                      self._bfloat16)

  def __getitem__(self, key) -> np.ndarray:
    if isinstance(key, tuple):
      rows, *rest = key
      picked = self[rows]
      return picked[tuple(rest)] if _is_int(rows) else picked[(slice(None), *rest)]
    if _is_int(key):
      n = len(self)
      if not -n <= key < n:
        raise IndexError(f"row {key} is out of range for {n} rows")
      return self._read_positions(self._base(np.asarray([key % n])))[0]
    if isinstance(key, slice):
      start, stop, step = key.indices(len(self))
      if step == 1 and self._index is None:
        return self._read_range(start, max(start, stop))
      return self._read_positions(self._base(np.arange(start, stop, step)))
    return self._read_positions(self._base(self._positions_key(key)))

  def __array__(self, dtype=None, copy=None) -> np.ndarray:
    """Every row in memory (what `np.asarray` calls): only for data known to fit."""
    out = self[:]
    return out if dtype is None else out.astype(dtype)

  def _positions_key(self, key) -> np.ndarray:
    key = np.asarray(key)
    if key.dtype == bool:
      if key.shape != (len(self),):
        raise IndexError(f"boolean index of shape {key.shape} for {len(self)} rows")
      return np.flatnonzero(key)
    if key.ndim != 1 or (key.size and key.dtype.kind not in "iu"):
      raise TypeError(f"LazyArray rows are indexed by an int, a slice or a 1-D integer array, not {key!r}")
    key = key.astype(np.int64)
    if key.size and not (-len(self) <= key.min() and key.max() < len(self)):
      raise IndexError(f"row index out of range for {len(self)} rows")
    return key % max(len(self), 1)

  def _base(self, positions: np.ndarray) -> np.ndarray:
    return positions if self._index is None else self._index[positions]

  def _read_range(self, start: int, stop: int) -> np.ndarray:
    parts = []
    for k, shard in enumerate(self._shards):
      lo, hi = max(start, self._starts[k]), min(stop, self._starts[k + 1])
      if lo < hi:
        parts.append((k, lo - self._starts[k], hi - self._starts[k]))
    out = np.empty((stop - start, *self._row_shape), self._stored)
    at = 0
    for k, lo, hi in parts:
      if self._files[k] is not None:
        self._files[k].read(lo, out[at:at + hi - lo])
      else:
        out[at:at + hi - lo] = self._shards[k][lo:hi].reshape(hi - lo, *self._row_shape)
      at += hi - lo
    return self._native_rows(out)

  def _read_positions(self, positions: np.ndarray) -> np.ndarray:
    out = np.empty((len(positions), *self._row_shape), self._stored)
    shard_of = np.searchsorted(self._starts, positions, side="right") - 1
    for k in np.unique(shard_of):
      where = np.flatnonzero(shard_of == k)
      local = positions[where] - self._starts[k]
      order = np.argsort(local, kind="stable")  # ascending offsets: the file is read front to back
      if self._files[k] is not None:
        rows = np.empty((len(order), *self._row_shape), self._stored)
        self._files[k].read_rows(local[order], rows)
      else:
        rows = self._shards[k][local[order]]
      out[where[order]] = rows.reshape(len(rows), *self._row_shape)
    return self._native_rows(out)


class _FileRows:
  """The rows of one C-ordered `.npy` file behind a memmap, read with `os.preadv` (see the module docstring).

  One file descriptor per file, opened on first use and closed with the object; `preadv` takes its
  offset explicitly, so threads may read at once.
  """

  def __init__(self, path: str, offset: int, row_bytes: int):
    self.path, self.offset, self.row_bytes = path, offset, row_bytes
    self._fd = None
    self._lock = threading.Lock()

  @classmethod
  def of(cls, shard) -> _FileRows | None:
    """For a whole-file read-only memmap (`np.load(mmap_mode='r')`); None for anything else (a view, an array)."""
    if not (isinstance(shard, np.memmap) and isinstance(shard.base, mmap.mmap) and shard.filename
            and shard.flags.c_contiguous and hasattr(os, "preadv")):
      return None
    return cls(shard.filename, int(shard.offset), int(np.prod(shard.shape[1:], dtype=np.int64)) * shard.dtype.itemsize)

  def _descriptor(self) -> int:
    with self._lock:
      if self._fd is None:
        self._fd = os.open(self.path, os.O_RDONLY)
        weakref.finalize(self, os.close, self._fd)
      return self._fd

  def _pread(self, view: memoryview, offset: int) -> None:
    fd = self._descriptor()
    while len(view):  # one call reads at most ~2 GiB on Linux
      got = os.preadv(fd, [view], offset)
      if got <= 0:
        raise OSError(f"{self.path}: file ended at byte {offset} (was it truncated while in use?)")
      view, offset = view[got:], offset + got

  def read(self, start: int, out: np.ndarray) -> None:
    """Rows start:start + len(out) into `out` (C-contiguous)."""
    self._pread(memoryview(out.reshape(-1).view(np.uint8)), self.offset + start * self.row_bytes)

  def read_rows(self, rows: np.ndarray, out: np.ndarray) -> None:
    """Rows `rows` (ascending) into out[i] (C-contiguous); runs of consecutive rows are read in one call.

    One system call per run, with as little Python as possible around it: for rows of a few KiB the
    loop, not the copy, is the cost (about 3 us a row on a 2-core VM).
    """
    if not len(rows):
      return
    rows = np.asarray(rows, np.int64)
    starts = np.concatenate([[0], np.flatnonzero(np.diff(rows) != 1) + 1])
    ends = np.append(starts[1:], len(rows))
    view, fd, rb, base = memoryview(out.reshape(-1).view(np.uint8)), self._descriptor(), self.row_bytes, self.offset
    for lo, hi, row in zip(starts.tolist(), ends.tolist(), rows[starts].tolist()):
      part = view[lo * rb:hi * rb]
      if os.preadv(fd, [part], base + row * rb) != len(part):  # a short read: finish it
        self._pread(part, base + row * rb)


def _is_int(key) -> bool:
  return isinstance(key, (int, np.integer)) and not isinstance(key, bool)
