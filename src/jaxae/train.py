"""Training: a TrainState with a leading member axis and one jit-compiled train step over all members.

Members are (hyperparameter setting, seed) pairs (sweep.py). Everything random is a pure function of
the member's seed key, the epoch and the step, so a member trained inside a vmapped program gives the
same result as the same seed trained alone, and a resumed run is the same as an uninterrupted one:

  params init   fold_in(key, 0)
  data order    fold_in(fold_in(key, 1), epoch)   a permutation of the training set per epoch
  step noise    fold_in(fold_in(key, 2), step)    corruption, reparameterization, dropout
  evaluation    fold_in(key, 3)                   the same VAE samples at every evaluation

Each epoch has floor(N / batch_size) steps: the remainder (different images each epoch) is dropped
so every step has the same shape and the epoch compiles once.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax.training import train_state

from jaxae import data as data_lib
from jaxae import configs, models, optim, sharding, sweep


class TrainState(train_state.TrainState):
  """flax TrainState + the member's seed key, its sweepable hyperparameters, running metric sums and
  the variant's running state.

  Under the member axis every leaf has a leading dimension M (number of members); `step` is then
  (M,) int32 with equal entries: read it with `global_step(state)`.
  """

  rng: jax.Array  # typed PRNG key of the member's seed
  hparams: dict  # {name: float32 scalar}, see configs.sweepable
  metric_sums: dict  # sums of per-step training metrics since the epoch started
  aux: Any = None  # the variant's running state (Variant.init_aux), None for most variants


def steps_per_epoch(num_train: int, batch_size: int) -> int:
  """floor(N / B); raises ConfigError (a ValueError) when the training set is smaller than one batch."""
  if num_train < batch_size:
    raise configs.ConfigError(f"train.batch_size={batch_size} is larger than the training set ({num_train} images)")
  return num_train // batch_size


def steps_per_call(config, num_train: int) -> int:
  """Steps per compiled call; raises ConfigError (a ValueError) unless it divides the epoch (one shape, one compilation)."""
  spe = steps_per_epoch(num_train, config.train.batch_size)
  chunk = min(config.train.steps_per_call or spe, spe)
  if spe % chunk:
    raise configs.ConfigError(f"train.steps_per_call={chunk} must divide the {spe} steps of an epoch "
                     f"({num_train} images // batch {config.train.batch_size})")
  return chunk


def member_key(seed: int) -> jax.Array:
  return jax.random.key(seed)


def resolve_member_loop(config, num_devices: int = 1) -> str:
  """'vmap' or 'map': how one compiled program steps its members (`train.member_loop`).

  'auto' picks 'map' (`lax.map`, members one after another inside the program) on a single CPU
  device, where XLA:CPU runs vmap's batched matmuls and grouped convolutions 2-3x slower than the
  same work unbatched (benchmarks/RESULTS.md); and 'vmap' on accelerators and on a device mesh,
  where batching members is what fills the device and the member axis is sharded.
  """
  loop = config.train.member_loop
  if loop == "auto":
    return "map" if jax.default_backend() == "cpu" and num_devices == 1 else "vmap"
  return loop


# XLA:CPU hands dots and reductions to YNNPACK. In a Bernoulli-likelihood step (BCE from logits, and
# the sigmoid of the reconstruction metric) that costs a third of the step: the VAE takes 9.7 ms per
# step with the default and 6.6 ms with YNNPACK kept to individual dots, which is neutral for MSE
# objectives and 6% slower for conv and contractive (benchmarks/RESULTS.md, "XLA:CPU options"). So
# the option is used for BCE objectives on CPU only; JAXAE_XLA_DEFAULTS=1 turns it off.
CPU_BCE_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
_option_accepted: list[bool] = []  # [whether this jaxlib accepts the option], filled on first use


# The members' initialization runs once: XLA:CPU's default LLVM -O2 of
# their unrolled threefry/truncated-normal code takes 4-20 s to compile (a 1k-parameter conv net: 17 s) while
# -O1 takes 1-2.5 s, gives bit-identical parameters, and runs 55M parameters' init in 1.8 s instead of
# 1.7 s (measured on this project's 2-core machine, jax 0.10.2). -O0 would compile faster still but runs
# that init 4x slower and changes the last bit of some parameters. (An epoch's data order gains nothing.)
CPU_ONE_OFF_OPTIONS = {"xla_backend_optimization_level": 1}


def one_off_options() -> dict:
  """XLA options for the program that runs once per run (the members' init) on this backend."""
  if jax.default_backend() != "cpu" or os.environ.get("JAXAE_XLA_DEFAULTS", "") == "1":
    return {}
  return dict(CPU_ONE_OFF_OPTIONS)


def compiler_options(config) -> dict:
  """XLA options for a config's train / eval programs on this backend ({} = XLA's defaults)."""
  if (jax.default_backend() != "cpu" or config.loss.reconstruction != "bce"
      or os.environ.get("JAXAE_XLA_DEFAULTS", "") == "1"):
    return {}
  if not _option_accepted:
    try:  # an experimental option: a newer jaxlib may rename or drop it, then XLA's defaults are used
      jax.jit(lambda a: a.sum(), compiler_options=CPU_BCE_COMPILER_OPTIONS).lower(np.ones(2, np.float32)).compile()
      _option_accepted.append(True)
    except Exception:  # noqa: BLE001 - any rejection means: use the defaults
      _option_accepted.append(False)
  return dict(CPU_BCE_COMPILER_OPTIONS) if _option_accepted[0] else {}


@dataclasses.dataclass(frozen=True)
class Program:
  """The compiled pieces of one group and what they were built from: made once per (config, data shape).

  `init_state()` / `abstract_state()` give the members' initial TrainState (or its shapes, the
  checkpoint restore target); the callables take and return states with a leading member axis. Their
  stored inputs x are an array (N, ...), or with data.target_source the pytree `data.inputs(split)`
  ({'x', 'target'}, gathered row by row together).
  """

  config: Any
  variant: Any  # variants.Variant
  net: models.Net
  seeds: tuple[int, ...]  # one per member
  hparams: dict  # {name: float32 (M,)} per-member sweepable scalars
  init: Callable  # (seeds uint32 (M,), hparams) -> TrainState
  epoch_order: Callable  # (state, epoch) -> (M, steps, B) int32
  train_chunk: Callable  # (state, x, y, order, offset) -> state
  evaluate: Callable  # (state, x, y) -> {metric: (M, ...)}
  steps_per_epoch: int
  chunk: int
  member_sharding: Any = None  # where init_state places the member axis (None: the default device)
  # Streaming (jaxae/stream.py): the same steps and metrics on blocks of rows gathered on the host.
  train_block: Callable | None = None  # (state, xb (M, S*B, ...), yb (M, S*B), local (S, B)) -> state
  eval_batches: Callable | None = None  # (state, xs (K, bs, ...), ys (K, bs)) -> {metric: (M, K, ...)}
  eval_last: Callable | None = None  # (state, x (r, ...), y (r,)) -> {metric: (M, ...)}: a smaller last batch
  eval_total: Callable | None = None  # (per_batch {m: (M, full, ...)}, last or None, bs, n) -> {metric: (M, ...)}

  def init_state(self) -> TrainState:
    """Initial TrainState of every member; with a member sharding each process initializes only its own."""
    init = jax.jit(self.init, out_shardings=self.member_sharding, compiler_options=one_off_options())
    return init(np.asarray(self.seeds, np.uint32), {k: np.asarray(v) for k, v in self.hparams.items()})

  def abstract_state(self) -> Any:
    """jax.eval_shape of init_state (no arrays allocated), with the member sharding attached."""
    shapes = jax.eval_shape(self.init, np.asarray(self.seeds, np.uint32), {k: np.asarray(v) for k, v in self.hparams.items()})
    if self.member_sharding is None:
      return shapes
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=self.member_sharding), shapes)

  def params_abstract(self) -> Any:
    """Shapes of one member's parameters."""
    return jax.eval_shape(lambda: self.net.init(jax.random.key(0), jnp.zeros((1, *self.net.data_shape))))


def build_net(config, data_shape, normalizer=None, target=None) -> models.Net:
  """The network of `config` for inputs of `data_shape`, with the latent layers and heads its variant needs.

  normalizer: the data.Normalizer fitted on the training split (None: inputs are only cast to float);
  target: the data.Target the network reconstructs instead of its input (data.target_source), or None.
  Raises models.NetworkError when the data do not fit the network.
  """
  variant = configs.variant_of(config)
  if target is not None:  # configs.validate refuses a target for variants without `targets`
    net = variant.network(config, tuple(data_shape), tuple(target.shape))
    return dataclasses.replace(net, normalizer=normalizer, target=target)
  if variant.network is not None:
    return dataclasses.replace(variant.network(config, tuple(data_shape)), normalizer=normalizer)
  return models.build(config.model, data_shape, gaussian=variant.encoder == "gaussian", heads=variant.heads(config),
                      normalizer=normalizer)


def build(group, data_shape, num_train: int, mesh=None, member_loop: str | None = None,
          xla_options: dict | None = None, net: models.Net | None = None, normalizer=None,
          train_x=None, target=None) -> Program:
  """Builds the program of a sweep group (or of a config without static sweep keys) for the data.

  group: a sweep.Group, or a config (its only group is used); data_shape: one input's shape;
  num_train: training examples. mesh: the member mesh (sharding.member_mesh) or None for one device;
  member_loop: 'vmap' | 'map' (default: resolve_member_loop); xla_options: XLA compiler options of
  train_chunk / evaluate (None = compiler_options(config)); net: a network to use instead of
  build_net's (benchmarks compare implementations); normalizer: the fitted data.Normalizer of the
  inputs; train_x: the training inputs as stored (`data.inputs(split)`: with targets, {'x', 'target'}), for a
  variant's `data_init` (None: skipped); target: the data.Target of data.target_source, or None.
  With a target, the programs' stored inputs x_all are `data.inputs(split)` pytrees ({'x', 'target'}).
  Raises ValueError for a batch or steps_per_call that does not fit the data, models.NetworkError
  for a network that does not fit.
  """
  if not isinstance(group, sweep.Group):
    group = sweep.groups(group)[0]
  config = group.config
  net = net or build_net(config, data_shape, normalizer, target)
  member_loop = member_loop or resolve_member_loop(config, mesh.size if mesh is not None else 1)
  variant = configs.variant_of(config)
  data_init = variant.data_init(config, net, train_x) if variant.data_init and train_x is not None else None
  fns = make_program(config, net, num_train, member_loop, xla_options, data_init)
  return Program(config=config, variant=variant, net=net, seeds=tuple(s for _, s in group.members),
                 hparams=sweep.member_hparams(group), member_sharding=sharding.members_sharding(mesh) if mesh else None,
                 **fns)


def step_key(state: TrainState) -> jax.Array:
  """The member's key for this step's randomness (corruption, sampling, dropout)."""
  return jax.random.fold_in(jax.random.fold_in(state.rng, 2), state.step)


def reported(metrics: dict) -> dict:
  """The metrics that are averaged and reported (names starting with '_' are the variant's internals)."""
  return {k: v for k, v in metrics.items() if not k.startswith("_")}


def train_step(state: TrainState, x_all, y_all, idx, *, loss_fn: Callable, prepare: Callable = data_lib.to_float,
               transform_grads: Callable | None = None, constrain: Callable | None = None,
               update_params: Callable | None = None, num_train: int = 0, binarize: bool = False,
               prepare_target: Callable | None = None) -> TrainState:
  """One optimizer step of one member on the batch `idx` of the (device-resident) training data.

  x_all (N, *data_shape) as stored (uint8 or float), or {'x': inputs, 'target': targets} with
  data.target_source (the rows idx of both, so they stay paired); y_all (N,) int32, idx (B,) int32;
  `prepare` makes the network's float32 inputs (models.Net.prepare), `prepare_target` its targets
  (batch['target'], models.Net.prepare_target). The loss's metrics are added to
  `state.metric_sums`; a variant's running state comes back as metrics['_aux'].
  `transform_grads(params, grads)`, `constrain(params)` and `update_params(params, aux)` are the
  variant's optional hooks. The batch also holds the member's step (schedules) and `num_train`, the
  training-set size N (estimators of the aggregate posterior q(z), e.g. beta-TCVAE's). `binarize`: the
  inputs are drawn as Bernoulli(intensity) pixels, anew at every step (data.binarize='dynamic').
  """
  rows = jax.tree.map(lambda a: a[idx], x_all)
  x = prepare(rows["x"] if isinstance(rows, dict) else rows)
  if binarize:
    key = jax.random.fold_in(step_key(state), data_lib.BINARIZE_SALT)
    x = jax.random.bernoulli(key, x).astype(x.dtype)
  batch = {"x": x, "y": y_all[idx], "step": state.step, "num_train": num_train}
  if isinstance(rows, dict):
    batch["target"] = prepare_target(rows["target"])
  if state.aux is not None:
    batch["aux"] = state.aux
  grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params, state.hparams, batch, step_key(state), True)
  if transform_grads is not None:
    grads = transform_grads(state.params, grads)
  state = state.apply_gradients(grads=grads)
  if constrain is not None:
    state = state.replace(params=constrain(state.params))
  aux = metrics.pop("_aux", state.aux)
  if update_params is not None:
    state = state.replace(params=update_params(state.params, aux))
  return state.replace(aux=aux, metric_sums=jax.tree.map(jnp.add, state.metric_sums, reported(metrics)))


def make_program(config, net: models.Net, num_train: int, member_loop: str = "vmap",
                 xla_options: dict | None = None, data_init: Callable | None = None) -> dict:
  """init / epoch_order / train_chunk / evaluate of a config, over a leading member axis (see Program).

  member_loop ('vmap' | 'map', see resolve_member_loop) decides how train_chunk and evaluate step
  through members; both compute each member exactly as if it were trained alone (up to float
  rounding), in one compiled program.

  `train_chunk` runs `chunk` consecutive steps: with train.steps_per_call=0 the whole epoch is one
  `lax.scan` (one dispatch per epoch); with 1 it is a single step called from a Python loop (a stop
  signal is then honoured after any step). Any other value scans that many steps per call.
  `data_init(params) -> params` is the variant's data-dependent initialization (Variant.data_init).
  """
  variant = configs.variant_of(config)
  spe = steps_per_epoch(num_train, config.train.batch_size)
  chunk = steps_per_call(config, num_train)
  batch = config.train.batch_size
  xla_options = compiler_options(config) if xla_options is None else xla_options
  loss_fn = variant.make_loss(config, net)
  constrain = variant.constrain(config) if variant.constrain else None
  step = functools.partial(train_step, loss_fn=loss_fn, prepare=net.prepare, constrain=constrain,
                           transform_grads=variant.transform_grads(config) if variant.transform_grads else None,
                           update_params=variant.update_params(config) if variant.update_params else None,
                           num_train=num_train, binarize=config.data.binarize == "dynamic",
                           prepare_target=net.prepare_target if net.target is not None else None)
  finalize = variant.finalize or (lambda m: m)
  tx = optim.make_optimizer(config, spe, variant.adversary)
  sample = jnp.zeros((1, *net.data_shape), jnp.float32)

  def init_member(key, hp):
    params = net.init(jax.random.fold_in(key, 0), sample)
    if data_init is not None:
      params = data_init(params)
    if constrain is not None:
      params = constrain(params)
    opt_state = optim.set_hyperparams(tx.init(params), hp["learning_rate"], hp["weight_decay"], hp.get("decay_fraction"))
    aux = variant.init_aux(config, net, net.data_shape) if variant.init_aux else None
    batch1 = {"x": sample, "y": jnp.zeros((1,), jnp.int32), "step": jnp.zeros([], jnp.int32), "num_train": num_train,
              **({"aux": aux} if aux is not None else {}),
              **({"target": jnp.zeros((1, *net.target.shape), jnp.float32)} if net.target is not None else {})}
    metric_shapes = jax.eval_shape(lambda: reported(loss_fn(params, hp, batch1, key, True)[1]))
    sums = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metric_shapes)
    return TrainState(step=jnp.zeros([], jnp.int32), apply_fn=net.module.apply, params=params, tx=tx,
                      opt_state=opt_state, rng=key, hparams=hp, metric_sums=sums, aux=aux)

  def order_member(state, epoch):
    perm = jax.random.permutation(jax.random.fold_in(jax.random.fold_in(state.rng, 1), epoch), num_train)
    return perm[: spe * batch].reshape(spe, batch).astype(jnp.int32)

  def steps_member(state, x_all, y_all, idx):
    # idx (steps, B) into x_all; train.steps_per_call=1 is a single step without a loop, however it is called.
    if chunk == 1:
      return step(state, x_all, y_all, idx[0])
    body = lambda s, i: (step(s, x_all, y_all, i), None)
    return jax.lax.scan(body, state, idx, unroll=config.train.unroll)[0]

  def chunk_member(state, x_all, y_all, order, offset):
    return steps_member(state, x_all, y_all, jax.lax.dynamic_slice_in_dim(order, offset, chunk, axis=0))

  eval_bs = config.train.eval_batch_size

  def batch_metrics(state, x, y):
    key = jax.random.fold_in(state.rng, 3)
    aux = {} if state.aux is None else {"aux": state.aux}
    if isinstance(x, dict):  # paired targets (data.target_source)
      aux["target"] = net.prepare_target(x["target"])
      x = x["x"]
    batch = {"x": net.prepare(x), "y": y, "step": state.step, "num_train": num_train, **aux}
    return reported(loss_fn(state.params, state.hparams, batch, key, False)[1])

  def total_member(per_batch, last, bs, n):
    total = jax.tree.map(lambda m: jnp.sum(m, axis=0) * bs, per_batch)
    if last is not None:  # the remainder is its own (smaller) batch, weighted by its size
      total = jax.tree.map(lambda t, m: t + m * (n % bs), total, last)
    return finalize(jax.tree.map(lambda t: t / n, total))

  def eval_member(state, x_all, y_all):
    # (per-batch metrics (full, ...), the smaller last batch's or None); eval_total reduces them, a
    # separate program that streamed evaluation (stream.evaluate) shares, so both give the same bits.
    n = num_rows(x_all)
    bs = min(eval_bs, n)
    full, rest = divmod(n, bs)
    xs = jax.tree.map(lambda a: a[: full * bs].reshape(full, bs, *a.shape[1:]), x_all)
    ys = y_all[: full * bs].reshape(full, bs)
    per_batch = jax.lax.map(lambda xy: batch_metrics(state, *xy), (xs, ys))
    last = jax.tree.map(lambda a: a[full * bs:], x_all)
    return per_batch, batch_metrics(state, last, y_all[full * bs:]) if rest else None

  def batches_member(state, xs, ys):
    return jax.lax.map(lambda xy: batch_metrics(state, *xy), (xs, ys))

  if member_loop == "map":
    chunk_all = lambda s, x, y, o, off: jax.lax.map(lambda so: chunk_member(so[0], x, y, so[1], off), (s, o))
    eval_all = lambda s, x, y: jax.lax.map(lambda si: eval_member(si, x, y), s)
    block_all = lambda s, x, y, i: jax.lax.map(lambda sxy: steps_member(*sxy, i), (s, x, y))
    members = lambda f: lambda s, *a: jax.lax.map(lambda si: f(si, *a), s)
    total_all = lambda pb, last, bs, n: jax.lax.map(lambda pl: total_member(*pl, bs, n), (pb, last))
  elif member_loop == "vmap":
    chunk_all = jax.vmap(chunk_member, in_axes=(0, None, None, 0, None))
    eval_all = jax.vmap(eval_member, in_axes=(0, None, None))
    block_all = jax.vmap(steps_member, in_axes=(0, 0, 0, None))
    members = lambda f: jax.vmap(f, in_axes=(0, None, None))
    total_all = jax.vmap(total_member, in_axes=(0, 0, None, None))
  else:
    raise ValueError(f"member_loop={member_loop!r} must be 'vmap' or 'map'")
  eval_parts = jax.jit(eval_all, compiler_options=xla_options)
  eval_total = jax.jit(total_all, static_argnums=(2, 3), compiler_options=xla_options)

  def evaluate(state, x_all, y_all):
    n = num_rows(x_all)
    return eval_total(*eval_parts(state, x_all, y_all), min(eval_bs, n), n)

  return dict(
      train_block=jax.jit(block_all, donate_argnums=0, compiler_options=xla_options),
      eval_batches=jax.jit(members(batches_member), compiler_options=xla_options),
      eval_last=jax.jit(members(batch_metrics), compiler_options=xla_options),
      eval_total=eval_total,
      init=jax.vmap(lambda seed, hp: init_member(member_key(seed), hp)),
      epoch_order=jax.jit(jax.vmap(order_member, in_axes=(0, None))),
      train_chunk=jax.jit(chunk_all, donate_argnums=0, compiler_options=xla_options),
      evaluate=evaluate,
      steps_per_epoch=spe,
      chunk=chunk,
  )


def num_rows(x_all) -> int:
  """N of stored inputs: an array (N, ...) or a `data.inputs` pytree of arrays with N rows each."""
  return int(jax.tree.leaves(x_all)[0].shape[0])


def global_step(state: TrainState) -> int:
  """The step every member is at, read from this process's own shard (no transfer between hosts)."""
  return int(sharding.first_local(state.step))


def run_epoch(program: Program, state: TrainState, x, y, stop: Callable[[], bool] = lambda: False):
  """Trains from the state's position to the end of its epoch (or until `stop()` after a chunk).

  Returns (state, finished). No host round trip inside: the Python loop only dispatches chunks.
  """
  spe = program.steps_per_epoch
  step = global_step(state)
  epoch, offset = divmod(step, spe)
  order = program.epoch_order(state, epoch)
  while offset < spe:
    state = program.train_chunk(state, x, y, order, offset)
    offset += program.chunk
    if offset < spe and stop():
      return state, False
  return state, True


def take_epoch_metrics(program: Program, state: TrainState) -> tuple[TrainState, dict[str, np.ndarray]]:
  """(state with zeroed sums, {metric: (M, ...) mean over the epoch's steps}) — one host transfer.

  Every process gets every member's means (gathered across hosts), so all take the same decisions.
  """
  state, sums = split_epoch_metrics(state)
  return state, epoch_means(program, sums)


def split_epoch_metrics(state: TrainState) -> tuple[TrainState, Any]:
  """(state with zeroed sums, the epoch's metric sums as device arrays): no host transfer, nothing waits.

  The sums leave the state, so the next train chunk (which donates its input state) does not free them:
  run.py dispatches the next epoch first and reads these while it runs.
  """
  zeros = jax.tree.map(jnp.zeros_like, state.metric_sums)
  return state.replace(metric_sums=zeros), state.metric_sums


def epoch_means(program: Program, sums) -> dict[str, np.ndarray]:
  """{metric: (M, ...) mean over the epoch's steps} from split_epoch_metrics' sums (waits for them)."""
  sums = sharding.to_host(sums)
  means = {k: np.asarray(v) / program.steps_per_epoch for k, v in sums.items()}
  if program.variant.finalize is not None:
    means = {k: np.asarray(v) for k, v in jax.vmap(program.variant.finalize)(means).items()}
  return means
