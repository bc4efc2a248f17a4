"""`npy:PATH`, `npy:DIR/*.npy` (shards) and `npz:PATH`: NumPy array files.

`.npy` files are memory-mapped and wrapped in a `LazyArray`, so a dataset larger than memory costs
nothing until batches are read; shards are concatenated along axis 0 in sorted file-name order. An
`.npz` archive is read into memory (its members are zip entries, which cannot be memory-mapped).
Nothing is ever unpickled: an array of Python objects is a DataError.

bfloat16 arrays (ml_dtypes, e.g. `np.asarray` of a jax or torch bf16 tensor) are saved by np.save with the
header dtype '<V2', which np.load returns as raw 2-byte voids unless the reader knows better: such files
are read as float32 (exactly: every bfloat16 is a float32). Other void dtypes are refused.
"""

from __future__ import annotations

import glob
import os
import zipfile

import numpy as np

from jaxae.sources.base import DataError, Options, Split, as_inputs, as_labels, expand, row_shape
from jaxae.sources.lazy import LazyArray

NPY_MAGIC = b"\x93NUMPY"
NPZ_INPUTS = ("x", "images", "inputs")  # the names an .npz may give its inputs ...
NPZ_LABELS = ("y", "labels")  # ... and its labels


def _paths(pattern: str) -> list[str]:
  """The files a `npy:` argument names: one path, or the sorted matches of a glob."""
  path = expand(pattern)
  if glob.has_magic(path):
    paths = sorted(p for p in glob.glob(path) if os.path.isfile(p))
    if not paths:
      raise DataError(f"npy:{pattern} matches no file")
    return paths
  return [_file(pattern, "npy")]


def _file(pattern: str, kind: str) -> str:
  path = expand(pattern)
  if os.path.isdir(path):
    raise DataError(f"{kind}:{pattern} is a directory: name a file, or shards as npy:{pattern.rstrip('/')}/*.npy")
  if not os.path.isfile(path):
    raise DataError(f"{kind}:{pattern}: no such file")
  return path


def _starts_with(path: str, magic: bytes) -> bool:
  try:
    with open(path, "rb") as f:
      return f.read(len(magic)) == magic
  except OSError as e:
    raise DataError(f"cannot read {path}: {e}") from None


def _object_error(path: str) -> DataError:
  return DataError(f"{path} holds Python objects (dtype object), which would need pickle: save a numeric "
                   f"array instead (jaxae never unpickles)")


def _open_npy(path: str, mmap: bool) -> np.ndarray:
  """The array in `path`, memory-mapped read-only when `mmap`. Raises DataError, never unpickles."""
  if not _starts_with(path, NPY_MAGIC):
    raise DataError(f"{path} is not a .npy file (np.save writes one)")
  try:
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
  except ValueError as e:  # numpy: "Array can't be memory-mapped: Python objects in dtype", "Object arrays ..."
    raise (_object_error(path) if "object" in str(e).lower() else DataError(f"cannot read {path}: {e}")) from None
  except (OSError, EOFError) as e:
    raise DataError(f"cannot read {path}: {e}") from None


def _header_descr(fp) -> str:
  """The dtype string a .npy header records ('<V2' for ml_dtypes' bfloat16; np.load turns it into '|V2')."""
  import ast
  import struct

  major, _ = np.lib.format.read_magic(fp)
  size = struct.unpack("<H" if major == 1 else "<I", fp.read(2 if major == 1 else 4))[0]
  return str(ast.literal_eval(fp.read(size).decode("latin1"))["descr"])


def _is_bfloat16(read_header, dtype: np.dtype, path: str) -> bool:
  """Whether an array of dtype `dtype` holds bfloat16 numbers; DataError for other void (structured) dtypes.
  `read_header()` gives the header's dtype string, read only for void dtypes."""
  if dtype.kind != "V":
    return False
  try:
    descr = read_header()
  except (OSError, ValueError, SyntaxError, KeyError) as e:
    raise DataError(f"cannot read the header of {path}: {e}") from None
  if descr == "<V2":
    return True
  raise DataError(f"{path} holds dtype {descr!r} (raw bytes or records), not numbers; bfloat16 arrays "
                  f"saved from ml_dtypes ('<V2') and every numeric dtype are read")


def _npy_is_bfloat16(path: str, dtype: np.dtype) -> bool:
  def read_header():
    with open(path, "rb") as f:
      return _header_descr(f)
  return _is_bfloat16(read_header, dtype, path)


def read_npy(argument: str, options: Options) -> Split:
  """Inputs from one .npy file or the shards a glob matches: a LazyArray over memmaps, no labels.

  A 1-D array is N scalars (N, 1); a 3-D array (N, H, W) is single-channel images (N, H, W, 1); bfloat16
  files are read as float32. Raises DataError when no file matches, a file is unreadable or holds void
  dtypes other than bfloat16, or shards differ in row shape or dtype.
  """
  paths = _paths(argument)
  shards = [_open_npy(p, mmap=True) for p in paths]
  for path, shard in zip(paths, shards):
    if shard.ndim == 0:
      raise DataError(f"{path} holds one number (shape ()), expected rows (N, ...)")
    if (shard.shape[1:], shard.dtype) != (shards[0].shape[1:], shards[0].dtype):
      raise DataError(f"npy shards must agree in shape[1:] and dtype: {paths[0]} is {shards[0].shape} "
                      f"{shards[0].dtype}, {path} is {shard.shape} {shard.dtype}")
  bf16 = [_npy_is_bfloat16(p, s.dtype) for p, s in zip(paths, shards)]
  shape = (sum(len(s) for s in shards), *shards[0].shape[1:])
  return Split(LazyArray(shards, row_shape(shape, f"npy:{argument}"), bfloat16=bf16[0]), None, f"npy:{argument}")


def read_labels(argument: str) -> np.ndarray:
  """(N,) int32 labels from `data.labels='npy:PATH'`, read into memory. Raises DataError."""
  if not argument.startswith("npy:"):
    raise DataError(f"data.labels={argument!r} must be 'npy:PATH' (a 1-D array of class indices)")
  return as_labels(_open_npy(_file(argument[4:], "npy"), mmap=False), f"data.labels={argument!r}")


def _npz_name(names: list[str], accepted: tuple[str, ...], path: str) -> str | None:
  found = [n for n in accepted if n in names]
  if len(found) > 1:
    raise DataError(f"{path} has arrays {found}: keep one of them")
  return found[0] if found else None


def read_npz(argument: str, options: Options) -> Split:
  """Inputs from the array `x` (or `images`, `inputs`) and labels from `y` (or `labels`), if present.

  Read into memory; inputs are reshaped as for npy: (N,) -> (N, 1), (N, H, W) -> (N, H, W, 1).
  Raises DataError for a missing or unreadable file, no input array, or an array of Python objects.
  """
  path = _file(argument, "npz")
  if not zipfile.is_zipfile(path):
    raise DataError(f"{path} is not an .npz archive (np.savez writes one)")
  try:
    with np.load(path, allow_pickle=False) as archive:
      x_name = _npz_name(archive.files, NPZ_INPUTS, path)
      y_name = _npz_name(archive.files, NPZ_LABELS, path)
      if x_name is None:
        raise DataError(f"{path} has no input array: expected one named {' or '.join(NPZ_INPUTS)}, "
                        f"found {archive.files}")
      x, labels = archive[x_name], None if y_name is None else archive[y_name]
      def member_header():
        with archive.zip.open(x_name + ".npy") as f:
          return _header_descr(f)

      if _is_bfloat16(member_header, x.dtype, f"{path}[{x_name!r}]"):
        import ml_dtypes  # a dependency of jax
        x = x.view(ml_dtypes.bfloat16).astype(np.float32)
  except DataError:
    raise
  except ValueError as e:  # numpy: "Object arrays cannot be loaded when allow_pickle=False"
    raise (_object_error(path) if "object" in str(e).lower() else DataError(f"cannot read {path}: {e}")) from None
  except (OSError, EOFError, zipfile.BadZipFile) as e:
    raise DataError(f"cannot read {path}: {e}") from None
  where = f"npz:{argument}"
  return Split(as_inputs(x, where), None if labels is None else as_labels(labels, where), where)
