"""`hf:PATH`: a Hugging Face dataset saved with `save_to_disk`, read without network.

Needs the optional extra `pip install 'jaxae[hf]'` (the `datasets` package). A `DatasetDict` is
indexed by `data.split`. Inputs are the first `Image` column when there is one (decoded as a
`folder:` would be, with `data.channels` and `data.image_size`), else the numeric columns: one column
keeps its per-row shape (vectors or images), several are flattened and joined into vectors (N, D)
float32. Labels come from `data.label_column`, else a column named `label` or `labels` if present.
Everything is read into memory.
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
  labels = None if not label else as_labels(ds.select_columns([label]).with_format("numpy")[:][label], where)
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
