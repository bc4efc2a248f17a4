"""Datasets for training: reading through `jaxae.sources`, held-out splits, checks, feature scaling.

Every source yields `Split(x, labels)`: inputs x of shape (N, H, W, C) (images) or (N, D) (vectors)
and labels (N,) int32, or None when the source has none (and ground-truth `factors` (N, F), `dsprites`). uint8 inputs mean [0, 255] and are scaled to
[0, 1] by `to_float` on the device, so a dataset is held once, in its compact dtype; other numeric
dtypes are taken as they are. `npy:` inputs are a `LazyArray` of memory-mapped rows: everything here
reads them in chunks of rows (`row_chunks`), never whole.

`load` checks what every run needs (numbers, finite, shapes, lengths, non-empty splits, integers that
float32 holds exactly) and raises a one-line `DataError` before anything is written. Any byte order and
any numeric dtype NumPy has is read (bool, float16, big-endian '>f4' ...; arrays come out native). The run checks what only some variants need with
`check_labels` (the supervised variant) and `check_unit_interval` (Bernoulli likelihoods), and fits a
`Normalizer` (`data.normalize`) on the training split, to store beside its checkpoints so that new
data is scaled alike.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Iterator

import numpy as np

from jaxae import sources
from jaxae.sources.arrays import read_labels
from jaxae.sources.base import DataError, Options, Split, has_labels
# Re-exported: the readers that experiments and benchmarks call directly.
from jaxae.sources.embedded import embedded_mnist  # noqa: F401
from jaxae.sources.idx import idx_dataset  # noqa: F401
from jaxae.sources.lazy import LazyArray
from jaxae.sources.tfds import tfds_dataset  # noqa: F401

CHUNK_BYTES = 1 << 24  # how much of a split `row_chunks` reads at a time (16 MiB), whatever its size
NORMALIZATIONS = ("none", "minmax", "standardize", "unit_mean_square")
TRAIN_SUBSET_SEED, EVAL_SUBSET_SEED = 1, 2
MAX_EXACT_INT = 2**24  # the largest integer float32 holds exactly, with every one below it


@dataclasses.dataclass(frozen=True)
class Data:
  train: Split
  eval: Split
  eval_name: str  # what the held-out metrics were computed on, for reports.


def options(data_config, split: str) -> Options:
  """The reader options of `config.data` for one split ('train', 'test', TFDS split syntax, ...)."""
  return Options(split=split, data_dir=data_config.data_dir, channels=data_config.channels,
                 image_size=tuple(data_config.image_size), label_column=str(data_config.label_column),
                 column=str(data_config.get("column", "")))


def load_source(source: str, options: Options = Options()) -> Split:
  """The split that `source` ('embedded', 'npy:PATH', ... see `jaxae.sources`) names, in native byte order
  (an in-memory '>f4' array becomes float32 here; a LazyArray reads its rows so). Raises DataError."""
  reader, argument = sources.lookup(source)
  split = reader(argument, options)
  if isinstance(split.x, np.ndarray) and not split.x.dtype.isnative:
    split = dataclasses.replace(split, x=split.x.astype(split.x.dtype.newbyteorder("=")))
  return split


def row_chunks(x) -> Iterator[np.ndarray]:
  """x[a:b] for consecutive row ranges of about CHUNK_BYTES each, in order: numpy arrays, one at a time."""
  row_bytes = max(1, int(np.prod(x.shape[1:])) * x.dtype.itemsize)
  rows = max(1, CHUNK_BYTES // row_bytes)
  for start in range(0, len(x), rows):
    yield x[start:start + rows]


def _storage_order(x):
  """x, or a LazyArray's rows in file order: scans that ignore order then read files front to back."""
  return x.storage_order() if isinstance(x, LazyArray) else x


def check_split(split: Split) -> None:
  """Raises DataError unless inputs are numbers, (N, D) or (N, H, W, C), N > 0, finite, with N labels
  (and N rows of factors, one per factor name).

  Reads a LazyArray in chunks of rows.
  """
  x, name = split.x, split.name
  if x.dtype.kind not in "biuf":
    raise DataError(f"{name} has dtype {x.dtype}: inputs must be numbers (not Python objects or strings)")
  if x.ndim not in (2, 4) or 0 in x.shape[1:]:
    raise DataError(f"{name} has shape {x.shape}, expected vectors (N, D) or images (N, height, width, channels)")
  if len(x) == 0:
    raise DataError(f"{name} is empty (0 examples)")
  if split.labels is not None and len(split.labels) != len(x):
    raise DataError(f"{name} has {len(x)} inputs but {len(split.labels)} labels")
  if split.factors is not None and (np.ndim(split.factors) != 2 or len(split.factors) != len(x)
                                    or np.shape(split.factors)[1] != len(split.factor_names)):
    raise DataError(f"{name} has {len(x)} inputs but factors of shape {np.shape(split.factors)} for "
                    f"{len(split.factor_names)} factor names")
  if x.dtype.kind == "f":
    start = 0
    for chunk in row_chunks(x):
      bad = ~np.isfinite(chunk).reshape(len(chunk), -1).all(axis=1)
      if bad.any():
        raise DataError(f"{name} has NaN or Inf inputs (first in row {start + int(np.argmax(bad))}): "
                        f"remove or impute them")
      start += len(chunk)
  elif x.dtype.kind in "iu" and x.dtype.itemsize > 2:
    # Inputs are computed with in float32, exact for integers up to 2**24; int64 would also wrap to int32 on
    # the way to the device. Wider values would be silently rounded or wrapped: refuse them.
    start = 0
    for chunk in row_chunks(x):
      big = (np.abs(chunk.astype(np.float64)) > MAX_EXACT_INT).reshape(len(chunk), -1).any(axis=1)
      if big.any():
        row = start + int(np.argmax(big))
        raise DataError(f"{name} has {x.dtype} inputs beyond +-2**24 (first in row {row}), which float32 cannot "
                        f"hold exactly: scale them, or save them as floating point")
      start += len(chunk)


def check_labels(split: Split, num_classes: int, who: str) -> None:
  """Raises DataError when `split` has no labels, or labels outside [0, num_classes), that `who` needs.

  who: the part of the config that needs them, e.g. "variant='supervised' (loss.num_classes=10)".
  """
  if split.labels is None:
    raise DataError(f"{who} needs labels, but {split.name} has none: give data.labels='npy:PATH', an npz "
                    f"with y, one sub-folder per class, or data.label_column")
  lo, hi = int(split.labels.min()), int(split.labels.max())
  if lo < 0 or hi >= num_classes:
    raise DataError(f"{who} needs labels in [0, {num_classes}), but {split.name} has labels from {lo} to {hi}")


def check_unit_interval(split: Split, who: str, normalizer: Normalizer | None = None) -> None:
  """Raises DataError unless `normalizer.apply(x)` (default: `to_float(x)`) lies in [0, 1].

  For Bernoulli likelihoods (BCE), whose targets are probabilities. uint8 inputs pass without a scan.
  A minmax normalizer maps its training split into [0, 1]; other data may fall outside.
  """
  normalizer = normalizer or Normalizer()
  if split.x.dtype == np.uint8 and normalizer.kind == "none":
    return
  lo, hi = np.inf, -np.inf
  for chunk in row_chunks(_storage_order(split.x)):
    scaled = normalizer.apply(chunk)
    lo, hi = min(lo, float(scaled.min())), max(hi, float(scaled.max()))
  if lo < 0 or hi > 1:
    raise DataError(f"{who} needs inputs in [0, 1] (a Bernoulli likelihood), but {split.name} takes values in "
                    f"[{lo:g}, {hi:g}]: set data.normalize=minmax, or use loss.reconstruction=mse")


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


def random_subset(split: Split, n: int, seed: int) -> Split:
  """The first n of a fixed permutation (seed): how `max_train` / `max_eval` pick their examples."""
  return split.take(np.random.default_rng(seed).permutation(len(split))[:n])


def _with_labels(split: Split, labels_source: str) -> Split:
  if not labels_source:
    return split
  if has_labels(split):
    raise DataError(f"data.labels={labels_source!r} is set, but {split.name} has labels of its own")
  return dataclasses.replace(split, labels=read_labels(labels_source))


def _holdout(split: Split, fraction: float) -> tuple[Split, Split]:
  """A stratified `fraction` (a random one without labels) held out with seed 0. Raises DataError if empty."""
  if fraction <= 0:
    raise DataError("data.holdout_fraction=0 needs data.eval_source: every run reports held-out metrics")
  labels = split.labels if has_labels(split) else np.zeros(len(split), np.int32)
  train_idx, held_idx = stratified_split(labels, fraction)
  if len(held_idx) == 0 or len(train_idx) == 0:
    raise DataError(f"data.holdout_fraction={fraction:g} of the {len(split)} examples of {split.name} leaves "
                    f"{len(train_idx)} to train on and {len(held_idx)} held out (rounded per class): change it, "
                    f"or set data.eval_source")
  return split.take(train_idx), dataclasses.replace(split.take(held_idx), name=f"{split.name} (held-out part)")


def with_target(split: Split, target_source: str, options: Options, key: str = "data.target_source") -> Split:
  """`split` with the rows of `target_source` (any data source) as its targets (`Split.target`), row i of the
  target paired with input i. Raises DataError (one line) when the target cannot be read, fails
  `check_split`, or has another number of rows than the inputs."""
  target = load_source(target_source, options)
  name = f"{key}={target_source!r}"
  check_split(dataclasses.replace(target, name=name, labels=None, factors=None, factor_names=()))
  if len(target.x) != len(split):
    raise DataError(f"{name} has {len(target.x)} rows, {split.name} {len(split)}: a target needs one row per "
                    f"input, in the same order")
  return dataclasses.replace(split, target=target.x)


def inputs(split: Split):
  """What the programs index by example (`train.Program`, `stream`): the stored inputs x, or for a split with
  targets the pytree {'x': x, 'target': target}, whose rows are gathered together so that they stay paired."""
  return split.x if split.target is None else {"x": split.x, "target": split.target}


def load(data_config) -> Data:
  """Training and held-out splits for `config.data`, checked (`check_split`). Raises DataError.

  With `eval_source=''` a stratified `holdout_fraction` of the training source is held out (fixed
  seed 0, the same for every run, so runs compare on the same examples). `max_train` / `max_eval`
  keep a random subset, for quick runs and tests. `data.labels` labels the training source only.
  `data.target_source` (with `data.eval_target_source` beside `data.eval_source`) gives the splits their
  targets (`with_target`), paired row by row through the holdout and the subsets. LazyArray inputs stay
  lazy (subsets are `LazyArray.select` views).
  """
  train = load_source(data_config.source, options(data_config, data_config.split))
  train = _with_labels(dataclasses.replace(train, name=f"data.source={data_config.source!r}"), data_config.labels)
  check_split(train)
  target_source = data_config.get("target_source", "")
  if target_source:  # before the held-out part and the subsets are taken: Split.take keeps the rows paired
    train = with_target(train, target_source, options(data_config, data_config.split))
  if data_config.eval_source:
    held = load_source(data_config.eval_source, options(data_config, data_config.eval_split))
    held = dataclasses.replace(held, name=f"data.eval_source={data_config.eval_source!r}")
    check_split(held)
    if target_source:
      if not data_config.get("eval_target_source", ""):
        raise DataError("data.target_source is set with data.eval_source: give the held-out targets as "
                        "data.eval_target_source")
      held = with_target(held, data_config.eval_target_source, options(data_config, data_config.eval_split),
                         "data.eval_target_source")
      if held.target.shape[1:] != train.target.shape[1:]:
        raise DataError(f"data.eval_target_source has targets of shape {held.target.shape[1:]}, data.target_source "
                        f"{train.target.shape[1:]}")
    eval_name = f"{data_config.eval_source} ({data_config.eval_split})"
    if held.x.shape[1:] != train.x.shape[1:]:
      raise DataError(f"{held.name} has examples of shape {held.x.shape[1:]}, {train.name} {train.x.shape[1:]}")
  else:
    train, held = _holdout(train, data_config.holdout_fraction)
    eval_name = f"{data_config.source} (held-out {data_config.holdout_fraction:.0%})"
  if data_config.max_train:
    train = random_subset(train, data_config.max_train, TRAIN_SUBSET_SEED)
  if data_config.max_eval:
    held = random_subset(held, data_config.max_eval, EVAL_SUBSET_SEED)
  binarize = data_config.get("binarize", "none")
  if binarize != "none":  # held-out data: binarized once; training data too when 'static' ('dynamic': per step)
    held = binarized(held, BINARIZE_SEED + 1)
    if binarize == "static":
      train = binarized(train, BINARIZE_SEED)
  return Data(train, held, eval_name)


BINARIZE_SEED = 1234  # data.binarize: the fixed draw of static binarization (training; held-out data use + 1)
BINARIZE_SALT = 13  # data.binarize='dynamic': a step's pixels are fold_in(step key, 13)'s Bernoulli draws


def binarized(split: Split, seed: int) -> Split:
  """The split with each pixel drawn once as Bernoulli(intensity in [0, 1]) (stochastic binarization,
  Salakhutdinov & Murray 2008), stored as uint8 {0, 255} (to_float: {0, 1}). Raises DataError for
  inputs outside [0, 1] after `to_float`, or lazy (memory-mapped) inputs (binarize dynamically instead).
  """
  if not isinstance(split.x, np.ndarray):
    raise DataError(f"data.binarize='static' needs the inputs of {split.name} in memory; use data.binarize='dynamic'")
  rng = np.random.default_rng(seed)
  out = np.empty(split.x.shape, np.uint8)
  for start in range(0, len(split.x), 4096):
    p = to_float(split.x[start:start + 4096])
    if p.min(initial=0) < 0 or p.max(initial=0) > 1:
      raise DataError(f"data.binarize needs intensities in [0, 1]; {split.name} has values in [{p.min():g}, {p.max():g}]")
    out[start:start + len(p)] = np.where(rng.random(p.shape, np.float32) < p, 255, 0)
  return dataclasses.replace(split, x=out)


def to_float(x):
  """uint8 [0, 255] -> float32 [0, 1]; other dtypes are cast to float32 unscaled. Works on jax arrays."""
  if x.dtype == np.uint8:
    return x.astype(np.float32) / 255.0
  return x.astype(np.float32)


@dataclasses.dataclass(frozen=True, eq=False)
class Normalizer:
  """Feature scaling fitted on the training split: `apply(x) = (to_float(x) - offset) / scale`.

  Statistics are per feature for vectors (N, D) and per channel for images (N, H, W, C), over every
  pixel (as torchvision's Normalize), so offset and scale are float32 of shape (D,) or (C,) and
  broadcast over the last axis. kind:
    'none': apply is `to_float`.
    'minmax': offset = min, scale = max - min: the training split maps into [0, 1], exactly on numpy
      arrays (XLA may round the division of jax arrays differently, by an ulp).
    'standardize': offset = mean, scale = standard deviation (ddof 0): mean 0, std 1.
    'unit_mean_square': one scalar for every feature, offset 0 and scale = sqrt(E||x||^2 / D) (D the
      features of one example), so that E||apply(x)||^2 = D: the input scaling of sparse autoencoders
      (Conerly et al. 2024; SAELens's 'expected_average_only_in' scales the mean norm E||x|| to sqrt(D)
      instead). Keeps directions and the data's sparsity pattern.
  A constant feature gets offset = its value and scale 1 (as scikit-learn's scalers): 0 in training.
  Statistics are accumulated in float64 over chunks of rows (`row_chunks`) of the values `to_float`
  gives, so a memory-mapped split is never read whole.
  """
  kind: str = "none"
  offset: np.ndarray | None = None
  scale: np.ndarray | None = None

  def fit(self, split: Split) -> Normalizer:
    """A Normalizer of the same kind with statistics of `split`. Raises DataError for an unknown kind."""
    if self.kind not in NORMALIZATIONS:
      raise DataError(f"data.normalize={self.kind!r} is not one of {', '.join(map(repr, NORMALIZATIONS))}")
    if self.kind == "none":
      return self
    if self.kind == "unit_mean_square":
      return _unit_mean_square(split.x)
    lo, hi, mean, std = _feature_stats(split.x)
    lo32, hi32 = lo.astype(np.float32), hi.astype(np.float32)
    if self.kind == "minmax":  # float32 arithmetic, as in apply, so that max maps to 1.0 exactly
      offset, scale = lo32, hi32 - lo32
    else:
      offset, scale = mean.astype(np.float32), std.astype(np.float32)
    constant = lo32 == hi32
    return Normalizer(self.kind, np.where(constant, lo32, offset), np.where(constant, np.float32(1), scale))

  def apply(self, x):
    """(..., F) inputs (numpy or jax, uint8 or float) -> float32 scaled; F = D or C as fitted."""
    x = to_float(x)
    if self.kind == "none":
      return x
    self._check_fitted(x, "inputs")
    return (x - self.offset) / self.scale

  def _check_fitted(self, x, what: str) -> None:
    if self.offset is None:
      raise ValueError(f"Normalizer({self.kind!r}) is not fitted: call fit(split) first")
    if x.shape[-1] != len(self.offset):
      raise DataError(f"{what} have {x.shape[-1]} features (last axis), the normalizer was fitted on "
                      f"{len(self.offset)} features")

  def inverse(self, x):
    """The inverse of `apply`: (..., F) normalized values (numpy or jax) -> `x * scale + offset`, float32.

    Takes a model's output (a reconstruction x_hat) back to the units `to_float` gives the stored inputs:
    raw units for float inputs, [0, 1] for uint8 ones ('none' returns `to_float(x)`). inverse(apply(x))
    equals to_float(x) up to float32 rounding (about 1 ulp of |x| + |offset|). Raises ValueError when
    not fitted, DataError when F differs from the fitted features.
    """
    x = to_float(x)
    if self.kind == "none":
      return x
    self._check_fitted(x, "values")
    return x * self.scale + self.offset

  def to_json(self) -> str:
    values = {} if self.offset is None else {"offset": self.offset.tolist(), "scale": self.scale.tolist()}
    return json.dumps({"kind": self.kind, **values})

  @classmethod
  def from_json(cls, text: str) -> Normalizer:
    """The Normalizer `to_json` wrote (float32 values round-trip exactly)."""
    d = json.loads(text)
    if "offset" not in d:
      return cls(d["kind"])
    return cls(d["kind"], np.asarray(d["offset"], np.float32), np.asarray(d["scale"], np.float32))


@dataclasses.dataclass(frozen=True, eq=False)
class Target:
  """The target a network reconstructs instead of its input (`data.target_source`; a transcoder's):
  its row shape (D_out,) (or any one example's shape), and the data.Normalizer fitted on the training
  targets with their own statistics (None for data.normalize='none'). Stored with the run (`to_json`)."""
  shape: tuple
  normalizer: Normalizer | None = None

  def prepare(self, t):
    """Stored targets (B, *shape) -> float32, scaled as the network's output is (numpy or jax)."""
    return self.normalizer.apply(t) if self.normalizer is not None else to_float(t)

  def to_json(self) -> str:
    normalizer = None if self.normalizer is None else json.loads(self.normalizer.to_json())
    return json.dumps({"shape": list(self.shape), "normalizer": normalizer})

  @classmethod
  def from_json(cls, text: str) -> Target:
    d = json.loads(text)
    normalizer = None if d["normalizer"] is None else Normalizer.from_json(json.dumps(d["normalizer"]))
    return cls(tuple(d["shape"]), normalizer)


def fit_target(split: Split, kind: str) -> Target | None:
  """The Target of a training split with targets (None without): data.normalize `kind` fitted on the
  targets alone (their own offset and scale, e.g. E||t||^2 = D_out for 'unit_mean_square')."""
  if split.target is None:
    return None
  normalizer = Normalizer(kind).fit(Split(split.target, name=split.name)) if kind != "none" else None
  return Target(tuple(split.target.shape[1:]), normalizer)


def _unit_mean_square(x) -> Normalizer:
  """Normalizer('unit_mean_square') of inputs x (N, ...): E||x||^2 over examples in float64, by chunks."""
  total, count = 0.0, 0
  for chunk in row_chunks(_storage_order(x)):
    v = to_float(chunk).reshape(len(chunk), -1).astype(np.float64)
    total, count = total + float(np.sum(np.square(v))), count + len(v)
  d = int(np.prod(x.shape[1:]))
  scale = np.float32(np.sqrt(total / count / d)) if total > 0 else np.float32(1)
  features = x.shape[-1]
  return Normalizer("unit_mean_square", np.zeros(features, np.float32), np.full(features, scale, np.float32))


def _feature_stats(x) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """(min, max, mean, std) over all axes but the last, float64, merged chunk by chunk (Chan et al.)."""
  features = x.shape[-1]
  count, lo, hi = 0, np.full(features, np.inf), np.full(features, -np.inf)
  mean, m2 = np.zeros(features), np.zeros(features)
  for chunk in row_chunks(_storage_order(x)):
    v = to_float(chunk).reshape(-1, features).astype(np.float64)
    n, chunk_mean = len(v), v.mean(axis=0)
    delta, total = chunk_mean - mean, count + n
    m2 += np.square(v - chunk_mean).sum(axis=0) + np.square(delta) * count * n / total
    mean += delta * n / total
    lo, hi, count = np.minimum(lo, v.min(axis=0)), np.maximum(hi, v.max(axis=0)), total
  return lo, hi, mean, np.sqrt(m2 / count)
