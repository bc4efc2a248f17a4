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
from jaxae import models, sources, validation
from jaxae.sources import folder

BACKBONES = ("mlp", "conv", "linear")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "iwae")  # iwae: Burda et al. 2016, 10^(-i/7) for 3^i epochs
# Schedules whose rate at a step depends on train.epochs (raising a run's epochs changes its rates, so a resumed
# run must keep them); 'constant' and 'iwae' depend on the step alone.
LENGTH_DEPENDENT_SCHEDULES = ("cosine", "warmup_cosine")
# The decoder's likelihood (variants.base.standard_normal_model): Gaussian with fixed std, Bernoulli,
# continuous Bernoulli (Loaiza-Ganem & Cunningham 2019), Gaussian with a learned std (Gaussian encoders only).
RECONSTRUCTIONS = ("mse", "bce", "continuous_bernoulli", "gaussian_learned")
UNIT_INTERVAL_RECONSTRUCTIONS = ("bce", "continuous_bernoulli")  # likelihoods of inputs in [0, 1], from sigmoid logits
OUTPUTS = ("sigmoid", "identity")
BINARIZATIONS = ("none", "dynamic", "static")  # data.binarize (Salakhutdinov & Murray 2008; Burda et al. 2016)

# The optimizer's sweepable scalars (every variant has them): per-member arrays in the optimizer state
# (optax.inject_hyperparams), so sweeping them costs no recompilation. Variants add their own
# (`Variant.hparams`), see `sweepable`.
OPTIMIZER_HPARAMS = {"optimizer.learning_rate": "learning_rate", "optimizer.weight_decay": "weight_decay",
                     "optimizer.decay_fraction": "decay_fraction"}

# The data keys a sweep may change: each group fits its own normalizer and picks streaming on its own;
# every other data.* key would need the data loaded again per group (refused, see parse_sweep).
SWEEPABLE_DATA = ("data.normalize", "data.stream")

# Members use seeds seed .. seed + num_seeds - 1, made into uint32 PRNG seeds: every one must fit.
MAX_SEED = 2**32 - 1
# Members (settings x seeds) of one compiled program, and settings of a whole grid: a bound that keeps a
# mistyped size a one-line error, not minutes of building lists (memory.py then checks what fits).
MAX_MEMBERS = 2**20

# Config keys whose value is a free-form group (keyword arguments of a user module): not checked key by key.
FREE_FORM = ("model.encoder_kwargs", "model.decoder_kwargs")

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
    "data.eval_target_source",
    "data.max_eval",
    "data.data_dir",
    "log.tensorboard",
    "log.images",
    "log.wandb",
    "log.wandb_project",
    "data.stream",  # streamed and in-memory runs are the same, bit for bit (jaxae/stream.py)
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
  c.data.target_source = ""  # a data source of what each input reconstructs into (a transcoder's target); '' = itself
  c.data.eval_target_source = ""  # the held-out targets, paired with data.eval_source (needed with both set)
  c.data.labels = ""  # 'npy:PATH': (N,) class indices for the inputs of data.source; '' = the source's own.
  c.data.channels = 0  # folder: / hf: images: 1 (grayscale) or 3 (RGB); 0 = 1 if every image is grayscale.
  c.data.image_size = ()  # folder: / hf: images resized to (height, width); () = all must share one size.
  c.data.label_column = ""  # csv: / hf: the label column, a name or an index; '' = none (hf: 'label').
  c.data.column = ""  # hf: the input column, e.g. a SAELens cache's hook name; '' = automatic (jaxae/sources/hf.py)
  c.data.normalize = "none"  # 'none' | 'minmax' | 'standardize' | 'unit_mean_square', training-split statistics.
  c.data.binarize = "none"  # 'dynamic': Bernoulli pixels drawn anew every step; 'static': once (held-out: once)
  c.data.stream = "auto"  # 'true': batches from host/disk (jaxae/stream.py); 'false': all on the device; 'auto'

  c.model = ml_collections.ConfigDict()
  c.model.backbone = "mlp"
  c.model.latent_dim = 32
  c.model.hidden = (512, 256)
  c.model.conv_channels = (16, 32)
  c.model.init = "flax"  # 'pytorch' / 'keras': torch.nn default / Glorot-uniform initialization.
  c.model.activation = "relu"  # of hidden layers: relu, tanh, sigmoid, gelu, elu, leaky_relu, silu
  c.model.dropout = 0.0  # dropout rate after hidden layers, training only
  c.model.downsample = "stride"  # conv: 'stride' (stride-2 convs) | 'maxpool' (conv + 2x2 max-pooling)
  c.model.upsample = "transpose"  # conv decoder: 'transpose' | 'resize' | 'depth_to_space' | 'nearest'
  c.model.output = "sigmoid"  # reconstruction mean = sigmoid(logits) or the raw decoder output.
  c.model.encoder = ""  # 'package.module:ClassName': your flax module x -> features (B, F)
  c.model.encoder_kwargs = ml_collections.ConfigDict()
  c.model.decoder = ""  # 'package.module:ClassName': your flax module z (B, d) -> logits (B, *data_shape)
  c.model.decoder_kwargs = ml_collections.ConfigDict()
  c.model.classifier_hidden = ()  # hidden widths of a classifier head (supervised); () = linear
  c.model.classifier_activation = "relu"
  c.model.classifier_dropout = 0.0

  c.loss = ml_collections.ConfigDict()
  c.loss.reconstruction = "mse"

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adam"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.weight_decay = 0.0
  c.optimizer.momentum = 0.9
  c.optimizer.schedule = "constant"
  c.optimizer.warmup_epochs = 0
  c.optimizer.decay_fraction = 0.0  # the learning rate decays linearly to 0 over this last fraction of training

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

  c.log = ml_collections.ConfigDict()  # jaxae/tracking.py
  c.log.tensorboard = True  # event files in <workdir>/tensorboard/: per-member and mean curves, images
  c.log.images = 8  # held-out inputs reconstructed per member at evaluation epochs (0 = no images)
  c.log.wandb = False  # also log to Weights & Biases (pip install wandb)
  c.log.wandb_project = "jaxae"
  _add_variant_options(c)
  return c


def _add_variant_options(c: ml_collections.ConfigDict) -> None:
  """Every registered variant's own keys (`Variant.options`), with their defaults."""
  from jaxae import variants  # Variants register themselves on import; they import this module.

  for v in variants.all_variants():
    for key, value in v.options.items():
      *parents, leaf = key.split(".")
      node = c
      for p in parents:
        if p not in node:
          node[p] = ml_collections.ConfigDict()
        node = node[p]
      if leaf not in node:
        node[leaf] = value


def variant_of(config):
  """The registered variant of `config.variant`; ConfigError naming the registered ones otherwise."""
  from jaxae import variants

  try:
    return variants.get(config.variant)
  except KeyError as e:
    raise ConfigError(e.args[0]) from None


def sweepable(config) -> dict[str, str]:
  """{dotted key: hparam name} of the scalars a member of `config` carries as arrays (no recompilation)."""
  return {**OPTIMIZER_HPARAMS, **{key: name for name, key in variant_of(config).hparams.items()}}


# The shared checks live in jaxae/validation.py (below this module and the variants); re-exported here.
ConfigError = validation.ConfigError
get = validation.get
positive_int = validation.positive_int
_choice = validation.choice
_nonneg_float = validation.nonneg_float


def _check_finite(config) -> None:
  """Every number in the config is finite (NaN or Inf is never a meaningful setting)."""
  import math

  for key, value in flatten(config).items():
    if key.startswith(FREE_FORM):
      continue
    for v in value if isinstance(value, list) else [value]:
      if isinstance(v, float) and not math.isfinite(v):
        raise ConfigError(f"{key}={value!r} must be a finite number")


def parse_sweep(config) -> dict[str, list]:
  """The sweep as {dotted key: [values]} in config order; {} when there is none.

  Raises ConfigError for malformed JSON, an unknown key, an empty list, or a non-number for a key
  swept in one program. Each value is validated like a base value by `sweep.groups`.
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
    if key.startswith("data.") and key not in SWEEPABLE_DATA:
      # The data are loaded once per invocation, for every group: a swept source, size or split would be
      # recorded in each group's config while every group trained on the same data.
      raise ConfigError(f"sweep key {key!r} cannot be swept: every group trains on the data loaded once for the "
                        f"run; use one --workdir per value of {key}")
    if not isinstance(values, list) or not values:
      raise ConfigError(f"sweep[{key!r}]={values!r} must be a non-empty list of values")
    if len({_same_value(v) for v in values}) != len(values):
      raise ConfigError(f"sweep[{key!r}]={values!r} lists a value twice")
    sweep[key] = list(values)
  return sweep


def _same_value(v) -> str:
  """A value's identity for comparisons: 1, 1.0 and 1e0 are the same number."""
  if isinstance(v, (int, float)) and not isinstance(v, bool):
    return repr(float(v))
  return json.dumps(v, sort_keys=True)


def validate(config) -> None:
  """Checks every value a run depends on. Raises ConfigError with a one-line message."""
  known = base_config()
  _check_keys(config, known, "")
  _check_finite(config)
  variant = variant_of(config)
  _choice(config, "model.backbone", BACKBONES)
  _choice(config, "model.init", models.INITS)
  _choice(config, "model.upsample", models.UPSAMPLES)
  _choice(config, "model.downsample", models.DOWNSAMPLES)
  _choice(config, "model.activation", tuple(models.ACTIVATIONS))
  _choice(config, "model.classifier_activation", tuple(models.ACTIVATIONS))
  _choice(config, "model.output", OUTPUTS)
  _choice(config, "loss.reconstruction", RECONSTRUCTIONS)
  _choice(config, "optimizer.name", OPTIMIZERS)
  _choice(config, "optimizer.schedule", SCHEDULES)
  _choice(config, "train.member_loop", ("auto", "vmap", "map"))
  for key in ("num_seeds", "train.epochs", "train.batch_size", "train.eval_every",
              "train.eval_batch_size", "train.unroll", "checkpoint.every_epochs", "checkpoint.keep"):
    positive_int(config, key)
  for key in ("seed", "model.latent_dim", "data.max_train", "data.max_eval", "train.steps_per_call",
              "optimizer.warmup_epochs", "log.images"):
    positive_int(config, key, zero_ok=True)
  if config.seed + config.num_seeds - 1 > MAX_SEED:
    raise ConfigError(f"seed={config.seed} with num_seeds={config.num_seeds} asks for seeds up to "
                      f"{config.seed + config.num_seeds - 1}; seeds are unsigned 32-bit: at most {MAX_SEED}")
  if config.num_seeds > MAX_MEMBERS:
    raise ConfigError(f"num_seeds={config.num_seeds} is more than {MAX_MEMBERS} members in one program")
  for key in sweepable(config):
    _nonneg_float(config, key)
  for key in ("model.dropout", "model.classifier_dropout"):
    value = get(config, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
      raise ConfigError(f"{key}={value!r} must be a rate in [0, 1)")
  if not 0 <= config.optimizer.decay_fraction <= 1:
    raise ConfigError(f"optimizer.decay_fraction={config.optimizer.decay_fraction!r} must be in [0, 1]")
  if not 0 <= config.optimizer.momentum < 1:
    raise ConfigError(f"optimizer.momentum={config.optimizer.momentum!r} must be in [0, 1)")
  if not 0 <= config.data.holdout_fraction < 1:
    raise ConfigError(f"data.holdout_fraction={config.data.holdout_fraction!r} must be in [0, 1)")
  for key, empty_ok in (("model.hidden", False), ("model.conv_channels", False), ("model.classifier_hidden", True)):
    value = get(config, key)
    if not isinstance(value, (tuple, list)) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value) or (not value and not empty_ok):
      raise ConfigError(f"{key}={value!r} must be a {'' if empty_ok else 'non-empty '}tuple of positive integers")
  if config.model.latent_dim == 0 and (config.model.backbone != "conv" or config.model.encoder):
    raise ConfigError("model.latent_dim=0 (a spatial code) needs the built-in model.backbone='conv'")
  for key in ("model.encoder", "model.decoder"):
    spec = get(config, key)
    if spec:
      try:
        models.user_module(spec, get(config, key + "_kwargs").to_dict())  # imported now: errors before any data
      except models.NetworkError as e:
        raise ConfigError(f"{key}: {e}") from None
  if config.loss.reconstruction in UNIT_INTERVAL_RECONSTRUCTIONS and config.model.output != "sigmoid":
    raise ConfigError(f"loss.reconstruction={config.loss.reconstruction!r} needs model.output='sigmoid' (the decoder "
                      f"returns the logits of lambda)")
  if config.loss.reconstruction == "gaussian_learned" and variant.encoder != "gaussian":
    raise ConfigError(f"loss.reconstruction='gaussian_learned' (a learned sigma) needs a Gaussian-encoder variant; "
                      f"variant={config.variant!r} takes 'mse', 'bce' or 'continuous_bernoulli'")
  _check_data(config)
  if config.log.wandb:
    import importlib.util
    if importlib.util.find_spec("wandb") is None:
      raise ConfigError("log.wandb=True needs the wandb package: pip install wandb (or set log.wandb=False)")
  variant.validate(config)
  parse_sweep(config)


def _check_data(config) -> None:
  data = config.data
  for key in ("source", "eval_source", "target_source", "eval_target_source"):
    if key == "source" or data[key]:
      try:
        sources.lookup(data[key])
      except sources.DataError:
        raise ConfigError(f"data.{key}={data[key]!r} must be one of {sources.usages()}") from None
  if data.column and not any(str(data[k]).startswith("hf:") for k in ("source", "eval_source")):
    raise ConfigError(f"data.column={data.column!r} picks a column of an 'hf:PATH' dataset; data.source is "
                      f"{data.source!r}")
  if data.target_source and not variant_of(config).targets:
    from jaxae import variants
    targets = [v.name for v in variants.all_variants() if v.targets]
    raise ConfigError(f"data.target_source={data.target_source!r}: variant={config.variant!r} reconstructs its input; "
                      f"the variants that take a target are {', '.join(map(repr, targets))}")
  if data.eval_target_source and not data.target_source:
    raise ConfigError("data.eval_target_source is set without data.target_source (the training targets)")
  if data.target_source and data.eval_source and not data.eval_target_source:
    raise ConfigError("data.target_source is set with data.eval_source: give the held-out targets as "
                      "data.eval_target_source")
  if data.labels and not (data.labels.startswith("npy:") and len(data.labels) > 4):
    raise ConfigError(f"data.labels={data.labels!r} must be '' or 'npy:PATH' (a 1-D array of class indices)")
  if data.channels not in (0, 1, 3):
    raise ConfigError(f"data.channels={data.channels!r} must be 1 (grayscale), 3 (RGB) or 0 (as stored)")
  try:
    folder.target_size(data.image_size)
  except sources.DataError as e:
    raise ConfigError(str(e)) from None
  _choice(config, "data.normalize", data_lib.NORMALIZATIONS)
  _choice(config, "data.stream", ("auto", "true", "false"))
  _choice(config, "data.binarize", BINARIZATIONS)
  if data.binarize != "none" and data.normalize != "none":
    raise ConfigError(f"data.binarize={data.binarize!r} draws pixels from intensities in [0, 1]: it needs data.normalize='none'")


def _check_keys(config, known, prefix: str) -> None:
  for key in config.keys():
    if key not in known:
      raise ConfigError(f"unknown config key {prefix + key!r}")
    if prefix + key in FREE_FORM:
      if not isinstance(config[key], ml_collections.ConfigDict):
        raise ConfigError(f"config key {prefix + key!r} must be a group of keyword arguments")
      continue
    if isinstance(known[key], ml_collections.ConfigDict):
      if not isinstance(config[key], ml_collections.ConfigDict):
        raise ConfigError(f"config key {prefix + key!r} must be a group of keys")
      _check_keys(config[key], known[key], prefix + key + ".")


def from_dict(saved: dict) -> ml_collections.ConfigDict:
  """A config saved by jaxae (config.json, checkpoint metadata), with keys added since then at their defaults."""
  config = base_config()

  def merge(node, values):
    for key, value in values.items():
      if isinstance(value, dict) and key in node and isinstance(node[key], ml_collections.ConfigDict):
        merge(node[key], value)
      else:
        node[key] = tuple(value) if isinstance(value, list) else value

  merge(config, saved)
  return config


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
    try:
      node[leaf] = tuple(value) if isinstance(node[leaf], tuple) else value
    except TypeError:  # ConfigDict's type safety: a value of another type than the key's default
      raise ConfigError(f"{key}={value!r} must be a {type(node[leaf]).__name__}, like its default "
                        f"{node[leaf]!r}") from None
  return config
