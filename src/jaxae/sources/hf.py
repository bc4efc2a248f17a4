"""`hf:PATH`: a Hugging Face dataset saved with `save_to_disk`, read without network.

Needs the optional extra `pip install 'jaxae[hf]'` (the `datasets` package). A `DatasetDict` is
indexed by `data.split`. Inputs are, in this order:

- the column `data.column` names, when set (its rows as they are, or per token as below);
- per-token activations: a column of feature type `Array2D` (context_size, d_in) holds one sequence per
  row, as SAELens's CacheActivationsRunner writes its caches (a column named after the hook, e.g.
  'blocks.0.hook_resid_pre', beside 'token_ids'); each row gives context_size examples, so inputs are
  (N x context_size, d_in) in row-major order (sequence by sequence, token by token), in the stored dtype.
  With several Array2D columns, `data.column` picks one;
- the first `Image` column (decoded as a `folder:` would be, with `data.channels` and `data.image_size`);
- the numeric columns: one column keeps its per-row shape (vectors or images), several are flattened and
  joined into vectors (N, D) float32.

Labels come from `data.label_column`, else a column named `label` or `labels` if present; with per-token
inputs a label per sequence is repeated for each of its tokens, and a (context_size,) label per row (such
as 'token_ids') gives each token its own. Everything is read into memory.
"""

from __future__ import annotations

import io
import os

import numpy as np

from jaxae.sources.base import DataError, Options, Split, as_inputs, as_labels, expand
from jaxae.sources.folder import stack_images


def _import_datasets(where: str):
  try:
    import datasets
  except ModuleNotFoundError:
    raise DataError(f"{where} needs the datasets package: pip install 'jaxae[hf]'") from None
  return datasets


def _dataset(datasets, path: str, split: str, where: str):
  """The `datasets.Dataset` saved in `path` (the `split` of a DatasetDict), with at least one row."""
  if not os.path.isdir(path):
    raise DataError(f"{where}: no such directory")
  try:
    ds = datasets.load_from_disk(path)
  except (OSError, ValueError) as e:  # FileNotFoundError: not a directory written by save_to_disk
    raise DataError(f"{where} is not a dataset written by save_to_disk: {str(e).splitlines()[0]}") from None
  if isinstance(ds, datasets.DatasetDict):
    if split not in ds:
      raise DataError(f"{where} has splits {sorted(ds)}, not data.split={split!r}")
    ds = ds[split]
  if len(ds) == 0:
    raise DataError(f"{where} has no rows")
  return ds


def read(argument: str, options: Options) -> Split:
  """Inputs (N, H, W, C) uint8 images or (N, D) numbers, labels (N,) int32 or None. Raises DataError."""
  from PIL import Image

  where = f"hf:{argument}"
  datasets = _import_datasets(where)
  ds = _dataset(datasets, expand(argument), options.split, where)
  label = options.label_column or next((n for n in ("label", "labels") if n in ds.column_names), "")
  if label and label not in ds.column_names:
    raise DataError(f"{where}: data.label_column={label!r} is not a column ({', '.join(ds.column_names)})")
  column = _input_column(datasets, ds, options.column, label, where)
  if column is not None and isinstance(ds.features[column], datasets.Array2D):
    return _per_token(ds, column, label, where)
  labels = None if not label else as_labels(ds.select_columns([label]).with_format("numpy")[:][label], where)
  if column is not None:
    x = np.asarray(ds.select_columns([column]).with_format("numpy")[:][column])
    if x.dtype.kind not in "biuf":
      raise DataError(f"{where}: data.column={column!r} is not numeric (dtype {x.dtype})")
    return Split(as_inputs(x, where), labels, where)
  images = [n for n, f in ds.features.items() if isinstance(f, datasets.Image)]
  if images:
    files = ds.cast_column(images[0], datasets.Image(decode=False))[images[0]]  # {'bytes', 'path'} per row
    open_image = lambda i: Image.open(io.BytesIO(files[i]["bytes"]) if files[i]["bytes"] else files[i]["path"])
    x = stack_images(open_image, [f"row {i}" for i in range(len(ds))], options.channels, options.image_size, where)
    return Split(x, labels, where)
  columns = [n for n in ds.column_names if n != label]
  table = ds.select_columns(columns).with_format("numpy")[:]
  bad = [n for n in columns if np.asarray(table[n]).dtype.kind not in "biuf"]
  if bad or not columns:
    raise DataError(f"{where}: non-numeric columns {bad}: encode them as numbers or drop them" if bad
                    else f"{where}: the only column is the label column {label!r}: no inputs left")
  if len(columns) == 1:
    return Split(as_inputs(np.asarray(table[columns[0]]), where), labels, where)
  x = np.concatenate([np.asarray(table[n], np.float32).reshape(len(ds), -1) for n in columns], axis=1)
  return Split(x, labels, where)


def _input_column(datasets, ds, column: str, label: str, where: str) -> str | None:
  """The input column: `data.column`, else the only Array2D column (a SAELens activation cache), else None."""
  if column:
    if column not in ds.column_names:
      raise DataError(f"{where}: data.column={column!r} is not a column ({', '.join(ds.column_names)})")
    if column == label:
      raise DataError(f"{where}: data.column={column!r} is also the label column")
    return column
  per_token = [n for n, f in ds.features.items() if isinstance(f, datasets.Array2D) and n != label]
  if len(per_token) > 1:
    raise DataError(f"{where} has several per-token (Array2D) columns {per_token}: pick one with data.column")
  return per_token[0] if per_token else None


def _per_token(ds, column: str, label: str, where: str) -> Split:
  """Rows (N, context_size, d_in) of an Array2D column as N x context_size examples (d_in,); labels repeated
  per token (a scalar per row) or taken per token ((context_size,) per row)."""
  stored = np.dtype(ds.features[column].dtype)  # the numpy format would make float16 float32 (twice the memory)
  x = np.asarray(ds.select_columns([column]).with_format("numpy", dtype=stored)[:][column])
  if x.ndim != 3 or x.dtype.kind not in "biuf":
    raise DataError(f"{where}: column {column!r} holds {x.dtype} rows of shape {x.shape[1:]}, expected numbers "
                    f"(context_size, d_in)")
  n, context, _ = x.shape
  labels = None
  if label:
    raw = np.asarray(ds.select_columns([label]).with_format("numpy")[:][label])
    if raw.ndim == 1:
      labels = np.repeat(as_labels(raw, where), context)
    elif raw.shape == (n, context):
      labels = as_labels(raw.reshape(-1), where)
    else:
      raise DataError(f"{where}: label column {label!r} has rows of shape {raw.shape[1:]}: expected one label per "
                      f"sequence or ({context},), one per token")
  return Split(x.reshape(n * context, x.shape[2]), labels, f"{where} ({column!r}, {context} tokens per row)")
