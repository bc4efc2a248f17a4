"""Optimizers from optax by name, with the learning rate and weight decay as per-member hyperparameters.

`optax.inject_hyperparams` moves `learning_rate`, `weight_decay` and `decay_fraction` out of the (static)
transform and into the optimizer state, so members of one vmapped program can train with different values: a
learning-rate sweep costs no recompilation. The schedule is a multiplier of the base rate, times the final
linear decay of `optimizer.decay_fraction` (`decay_multiplier`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def schedule_multiplier(config, steps_per_epoch: int):
  """count -> factor in [0, 1] applied to the base learning rate ('constant' | 'cosine' | 'warmup_cosine' | 'iwae')."""
  total = config.train.epochs * steps_per_epoch
  name = config.optimizer.schedule
  if name == "constant":
    return lambda count: jnp.ones([], jnp.float32)
  if name == "cosine":
    return optax.cosine_decay_schedule(1.0, decay_steps=max(total, 1))
  if name == "iwae":
    return iwae_multiplier(steps_per_epoch)
  warmup = config.optimizer.warmup_epochs * steps_per_epoch
  return optax.warmup_cosine_decay_schedule(0.0, 1.0, warmup_steps=warmup, decay_steps=max(total, warmup + 1))


def decay_multiplier(total_steps: int, decay_fraction):
  """count -> clip((T - count) / (f T), 0, 1): 1 until the last fraction f of the T training steps, then linear
  to 0 at step T (float32; 1 for every count when f = 0).

  The learning-rate decay of Anthropic's April 2024 update ("the learning rate decays linearly to zero over
  the last 20% of training") and SAELens's `lr_decay_steps` (a LinearLR from 1 to 0 over the last D = f T
  steps: the update with count t uses (T - t) / D). f: a float or a traced float32 scalar (sweepable).
  """
  def multiplier(count):
    length = jnp.asarray(decay_fraction, jnp.float32) * total_steps
    remaining = total_steps - jnp.asarray(count, jnp.float32)
    return jnp.where(length > 0, jnp.clip(remaining / jnp.maximum(length, 1e-30), 0.0, 1.0), 1.0)

  return multiplier


def iwae_multiplier(steps_per_epoch: int):
  """count -> 10^(-i/7) during the 3^i epochs (passes) of stage i = 0, 1, 2, ...: Burda et al. 2016, sec. 5.

  Stage i starts after sum_{j<i} 3^j = (3^i - 1) / 2 epochs, so the paper's eight stages (i = 0..7) are
  3,280 epochs; later epochs stay in stage 8, 9, ... (the same rule continued).
  """
  # Float: late stage starts overflow int32; counts are exact in float32 up to 2^24 steps.
  starts = jnp.asarray([(3**i - 1) // 2 * steps_per_epoch for i in range(1, 21)], jnp.float32)

  def multiplier(count):
    stage = jnp.sum(jnp.asarray(count, jnp.float32) >= starts)
    return jnp.power(10.0, -stage.astype(jnp.float32) / 7.0)

  return multiplier


def make_optimizer(config, steps_per_epoch: int, adversary=None) -> optax.GradientTransformation:
  """The optax transform of `config.optimizer`; hyperparameters live in `opt_state.hyperparams`.

  adam / sgd / rmsprop take weight_decay as an L2 term added to the gradient (torch.optim semantics);
  adamw decouples it (Loshchilov & Hutter 2019). Raises ValueError for an unknown name.
  adversary: a variants.Adversary or None; its parameters are updated by its own optimizer
  (optax.multi_transform), untouched by the schedule, weight decay and learning rate of this one.
  """
  name = config.optimizer.name
  momentum = config.optimizer.momentum
  multiplier = schedule_multiplier(config, steps_per_epoch)
  total = config.train.epochs * steps_per_epoch

  def build(learning_rate, weight_decay, decay_fraction):
    lr = lambda count: learning_rate * multiplier(count) * decay_multiplier(total, decay_fraction)(count)
    if name == "adamw":
      return optax.adamw(lr, weight_decay=weight_decay)
    if name == "adam":
      base = optax.adam(lr)
    elif name == "sgd":
      base = optax.sgd(lr, momentum=momentum or None)
    elif name == "rmsprop":
      base = optax.rmsprop(lr, momentum=momentum or None)
    else:
      raise ValueError(f"optimizer.name={name!r} is not one of adam, adamw, sgd, rmsprop")
    return optax.chain(optax.add_decayed_weights(weight_decay), base)

  def labels(params):
    # 'adversary' or 'model' per leaf. An adversary owning no parameter (a head name that is not one of
    # the network's) would leave its discriminator to the run's optimizer without a word: refused.
    out = jax.tree_util.tree_map_with_path(
        lambda path, _: "adversary" if adversary.is_adversary(tuple(getattr(k, "key", str(k)) for k in path))
        else "model", params)
    if "adversary" not in jax.tree.leaves(out):
      raise ValueError(f"the adversary's heads {list(adversary.heads)} own no parameter of the network "
                       f"(its modules: {sorted(params.get('params', params))})")
    return out

  def build_with_adversary(learning_rate, weight_decay, decay_fraction):
    model = build(learning_rate, weight_decay, decay_fraction)
    if adversary is None:
      return model
    return optax.multi_transform({"model": model, "adversary": adversary.optimizer(config)}, labels)

  return optax.inject_hyperparams(build_with_adversary)(learning_rate=config.optimizer.learning_rate,
                                          weight_decay=config.optimizer.weight_decay,
                                          decay_fraction=float(config.optimizer.decay_fraction))


def set_hyperparams(opt_state, learning_rate, weight_decay, decay_fraction=None):
  """opt_state with this member's learning rate, weight decay and (unless None) learning-rate decay
  fraction (traced scalars under vmap)."""
  hyper = dict(opt_state.hyperparams)
  hyper["learning_rate"] = jnp.asarray(learning_rate, hyper["learning_rate"].dtype)
  hyper["weight_decay"] = jnp.asarray(weight_decay, hyper["weight_decay"].dtype)
  if decay_fraction is not None:
    hyper["decay_fraction"] = jnp.asarray(decay_fraction, hyper["decay_fraction"].dtype)
  return opt_state._replace(hyperparams=hyper)
