"""`tfds:NAME`: a prepared TensorFlow Datasets image dataset, read without TensorFlow."""

from __future__ import annotations

import numpy as np

from jaxae.sources.base import DataError, Options, Split


def tfds_dataset(name: str, split: str, data_dir: str | None = None) -> Split:
  """A prepared TFDS image dataset read with `tfds.data_source`: images (N, H, W, C) as stored.

  `split` uses TFDS split syntax ('train', 'test[:10%]'); labels (N,) int32 from the 'label' feature,
  None without one. Raises DataError when the dataset is not prepared in `data_dir`: jaxae never
  downloads at run time.
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
  labels = np.asarray([r["label"] for r in records], np.int32) if "label" in records[0] else None
  return Split(images, labels, f"tfds:{name} ({split})")


def read(argument: str, options: Options) -> Split:
  return tfds_dataset(argument, options.split, options.data_dir)
