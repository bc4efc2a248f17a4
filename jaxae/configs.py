"""The config schema shared by every file in `configs/`, and its validation.

Configs are code (big_vision / Flax-examples style): each `configs/<variant>.py` calls
`base_config()` and overrides a few fields. `validate(config)` is called before any data is
loaded or any array is allocated, so a typo or a bad value costs the user one line of error,
never a half-started run.
"""

from __future__ import annotations

import json
from typing import Any

import ml_collections

from jaxae import data as data_lib
from jaxae import sources
from jaxae.sources import folder

VARIANTS = ("vanilla", "denoising", "sparse", "contractive", "vae", "supervised")
BACKBONES = ("mlp", "conv", "linear")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine", "warmup_cosine")
RECONSTRUCTIONS = ("mse", "bce")  # Gaussian / Bernoulli likelihood of the decoder.
SPARSITIES = ("l1", "kl", "topk")
NOISES = ("gaussian", "masking", "salt_pepper")
INITS = ("flax", "pytorch")
UPSAMPLES = ("transpose", "resize", "depth_to_space")
OUTPUTS = ("sigmoid", "identity")

# Scalar hyperparameters that may differ between members of one compiled program: they are
# carried as per-member arrays (`TrainState.hparams`), so sweeping them costs no recompilation.
VMAPPABLE = {
    "optimizer.learning_rate": "learning_rate",
    "optimizer.weight_decay": "weight_decay",
    "loss.beta": "beta",
    "loss.sparsity_weight": "sparsity_weight",
    "loss.rho": "rho",
    "loss.contractive_weight": "contractive_weight",
    "loss.classifier_weight": "classifier_weight",
    "loss.gaussian_sigma": "gaussian_sigma",
    "noise.level": "noise_level",
}

# Keys that may change between a checkpoint and its resumption without changing what the
# checkpoint means. Everything else must match (see checkpoints.check_compatible).
RESUME_SAFE = (
    "train.epochs",
    "train.eval_every",
    "train.steps_per_call",
    "train.unroll",
    "train.member_loop",
    "train.progress",
    "train.figures",
    "checkpoint.every_epochs",
    "checkpoint.keep",
    "data.eval_source",
    "data.eval_split",
    "data.max_eval",
    "data.data_dir",
)


def base_config() -> ml_collections.ConfigDict:
  """Defaults of every variant: the reference protocol (MLP 784-512-256-d, Adam 1e-3, batch 128)."""
  c = ml_collections.ConfigDict()
  c.variant = "vanilla"
  c.seed = 0  # Members use seeds seed, seed+1, ..., seed+num_seeds-1.
  c.num_seeds = 4
  # Hyperparameter sweep: JSON object {"dotted.key": [values, ...]}; the grid is the product.
  c.sweep = ""

  c.data = ml_collections.ConfigDict()
  c.data.source = "embedded"  # a registered source (jaxae/sources): 'embedded', 'npy:PATH', 'csv:PATH', ...
  c.data.split = "train"
  c.data.eval_source = ""  # '' holds out `holdout_fraction` of the training source (stratified).
  c.data.eval_split = "test"
  c.data.holdout_fraction = 0.1
  c.data.max_train = 0  # 0 = all; small values make tests fast.
  c.data.max_eval = 0
  c.data.data_dir = ""  # TFDS data_dir; '' = TFDS default.
  c.data.labels = ""  # 'npy:PATH': (N,) class indices for the inputs of data.source; '' = the source's own.
  c.data.channels = 0  # folder: / hf: images: 1 (grayscale) or 3 (RGB); 0 = 1 if every image is grayscale.
  c.data.image_size = ()  # folder: / hf: images resized to (height, width); () = all must share one size.
  c.data.label_column = ""  # csv: / hf: the label column, a name or an index; '' = none (hf: 'label').
  c.data.normalize = "none"  # 'none' | 'minmax' | 'standardize', statistics of the training split.

  c.model = ml_collections.ConfigDict()
  c.model.backbone = "mlp"
  c.model.latent_dim = 32
  c.model.hidden = (512, 256)
  c.model.conv_channels = (16, 32)
  c.model.init = "flax"  # 'pytorch' reproduces torch.nn.Linear/Conv2d default initialization.
  c.model.upsample = "transpose"
  c.model.output = "sigmoid"  # reconstruction mean = sigmoid(logits) or the raw decoder output.

  c.loss = ml_collections.ConfigDict()
  c.loss.reconstruction = "mse"
  c.loss.beta = 1.0
  c.loss.sparsity = "l1"
  c.loss.sparsity_weight = 1e-3
  c.loss.rho = 0.05
  c.loss.topk = 8
  c.loss.contractive_weight = 1e-3
  c.loss.classifier_weight = 1.0
  c.loss.gaussian_sigma = 1.0
  c.loss.num_classes = 10

  c.noise = ml_collections.ConfigDict()
  c.noise.kind = "gaussian"
  c.noise.level = 0.3

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adam"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.weight_decay = 0.0
  c.optimizer.momentum = 0.9
  c.optimizer.schedule = "constant"
  c.optimizer.warmup_epochs = 0

  c.train = ml_collections.ConfigDict()
  c.train.epochs = 30
  c.train.batch_size = 128
  c.train.steps_per_call = 0  # 0 = one compiled call per epoch (lax.scan); 1 = Python step loop.
  c.train.unroll = 1
  c.train.member_loop = "auto"  # 'vmap' | 'map' | 'auto' (map on one CPU device, vmap elsewhere)
  c.train.eval_every = 1
  c.train.eval_batch_size = 1000
  c.train.progress = True
  c.train.figures = True

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_epochs = 5
  c.checkpoint.keep = 3
  return c


class ConfigError(ValueError):
  """A config value that cannot work; raised before any training starts."""


def _choice(config, key: str, options) -> None:
  value = get(config, key)
  if value not in options:
    raise ConfigError(f"{key}={value!r} is not one of {', '.join(map(repr, options))}")


def _positive_int(config, key: str, zero_ok: bool = False) -> None:
  value = get(config, key)
  ok = isinstance(value, int) and not isinstance(value, bool) and (value > 0 or (zero_ok and value == 0))
  if not ok:
    raise ConfigError(f"{key}={value!r} must be a {'non-negative' if zero_ok else 'positive'} integer")


def _nonneg_float(config, key: str) -> None:
  value = get(config, key)
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
    raise ConfigError(f"{key}={value!r} must be a non-negative number")


def get(config, dotted: str) -> Any:
  """`get(config, 'loss.beta')`; raises ConfigError naming the key if it does not exist."""
  node = config
  for part in dotted.split("."):
    try:
      node = node[part]
    except (KeyError, AttributeError, TypeError):
      raise ConfigError(f"unknown config key {dotted!r}") from None
  return node


def parse_sweep(config) -> dict[str, list]:
  """The sweep as {dotted key: [values]} in config order; {} when there is none.

  Raises ConfigError for malformed JSON, an unknown key, an empty list, or a non-scalar value.
  """
  raw = config.sweep
  if not raw:
    return {}
  if isinstance(raw, str):
    try:
      raw = json.loads(raw)
    except json.JSONDecodeError as e:
      raise ConfigError(f"sweep={config.sweep!r} is not a JSON object: {e}") from None
  if not isinstance(raw, dict) or not raw:
    raise ConfigError(f"sweep={config.sweep!r} must be a non-empty JSON object {{key: [values]}}")
  sweep = {}
  for key, values in raw.items():
    current = get(config, key)
    if key in ("sweep", "num_seeds", "seed") or isinstance(current, ml_collections.ConfigDict):
      raise ConfigError(f"sweep key {key!r} cannot be swept")
    if not isinstance(values, list) or not values:
      raise ConfigError(f"sweep[{key!r}]={values!r} must be a non-empty list of values")
    if key in VMAPPABLE:
      for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
          raise ConfigError(f"sweep[{key!r}] value {v!r} must be a number (the key is swept in one program)")
    sweep[key] = list(values)
  return sweep


def validate(config) -> None:
  """Checks every value a run depends on. Raises ConfigError with a one-line message."""
  known = base_config()
  _check_keys(config, known, "")
  _choice(config, "variant", VARIANTS)
  _choice(config, "model.backbone", BACKBONES)
  _choice(config, "model.init", INITS)
  _choice(config, "model.upsample", UPSAMPLES)
  _choice(config, "model.output", OUTPUTS)
  _choice(config, "loss.reconstruction", RECONSTRUCTIONS)
  _choice(config, "loss.sparsity", SPARSITIES)
  _choice(config, "noise.kind", NOISES)
  _choice(config, "optimizer.name", OPTIMIZERS)
  _choice(config, "optimizer.schedule", SCHEDULES)
  _choice(config, "train.member_loop", ("auto", "vmap", "map"))
  for key in ("num_seeds", "model.latent_dim", "train.epochs", "train.batch_size", "train.eval_every",
              "train.eval_batch_size", "train.unroll", "checkpoint.every_epochs", "checkpoint.keep",
              "loss.num_classes", "loss.topk"):
    _positive_int(config, key)
  for key in ("seed", "data.max_train", "data.max_eval", "train.steps_per_call", "optimizer.warmup_epochs"):
    _positive_int(config, key, zero_ok=True)
  for key in VMAPPABLE:
    _nonneg_float(config, key)
  if not 0 <= config.data.holdout_fraction < 1:
    raise ConfigError(f"data.holdout_fraction={config.data.holdout_fraction!r} must be in [0, 1)")
  if not 0 < config.loss.rho < 1:
    raise ConfigError(f"loss.rho={config.loss.rho!r} must be in (0, 1)")
  if config.noise.kind in ("masking", "salt_pepper") and not config.noise.level <= 1:
    raise ConfigError(f"noise.level={config.noise.level!r} is a probability for {config.noise.kind} noise: must be in [0, 1]")
  for key in ("model.hidden", "model.conv_channels"):
    value = get(config, key)
    if not all(isinstance(v, int) and v > 0 for v in value) or not value:
      raise ConfigError(f"{key}={tuple(value)!r} must be a non-empty tuple of positive integers")
  if config.loss.reconstruction == "bce" and config.model.output != "sigmoid":
    raise ConfigError("loss.reconstruction='bce' needs model.output='sigmoid' (the decoder returns Bernoulli logits)")
  if config.variant == "sparse" and config.loss.sparsity == "topk" and config.loss.topk > config.model.latent_dim:
    raise ConfigError(f"loss.topk={config.loss.topk} must be at most model.latent_dim={config.model.latent_dim}")
  _check_data(config)
  parse_sweep(config)


def _check_data(config) -> None:
  data = config.data
  for key in ("source", "eval_source"):
    if key == "source" or data[key]:
      try:
        sources.lookup(data[key])
      except sources.DataError:
        raise ConfigError(f"data.{key}={data[key]!r} must be one of {sources.usages()}") from None
  if data.labels and not (data.labels.startswith("npy:") and len(data.labels) > 4):
    raise ConfigError(f"data.labels={data.labels!r} must be '' or 'npy:PATH' (a 1-D array of class indices)")
  if data.channels not in (0, 1, 3):
    raise ConfigError(f"data.channels={data.channels!r} must be 1 (grayscale), 3 (RGB) or 0 (as stored)")
  try:
    folder.target_size(data.image_size)
  except sources.DataError as e:
    raise ConfigError(str(e)) from None
  _choice(config, "data.normalize", data_lib.NORMALIZATIONS)


def _check_keys(config, known, prefix: str) -> None:
  for key in config.keys():
    if key not in known:
      raise ConfigError(f"unknown config key {prefix + key!r}")
    if isinstance(known[key], ml_collections.ConfigDict):
      if not isinstance(config[key], ml_collections.ConfigDict):
        raise ConfigError(f"config key {prefix + key!r} must be a group of keys")
      _check_keys(config[key], known[key], prefix + key + ".")


def flatten(config, prefix: str = "") -> dict[str, Any]:
  """{'model.latent_dim': 32, ...}: the config as dotted keys (tuples become lists, as in JSON)."""
  out = {}
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      out.update(flatten(value, prefix + key + "."))
    else:
      out[prefix + key] = list(value) if isinstance(value, tuple) else value
  return out


def with_values(config, values: dict[str, Any]) -> ml_collections.ConfigDict:
  """A copy of `config` with dotted keys set (used to expand non-vmappable sweep groups)."""
  config = ml_collections.ConfigDict(config.to_dict())
  for key, value in values.items():
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = tuple(value) if isinstance(node[leaf], tuple) else value
  return config
