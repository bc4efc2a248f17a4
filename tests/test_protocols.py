"""The literature's training protocols: binarized MNIST (static and dynamic, Salakhutdinov & Murray 2008;
Burda et al. 2016) and the IWAE learning-rate schedule, against NumPy and hand-computed values."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from jaxae import configs, data, optim, train


def test_iwae_schedule_steps_down_by_ten_to_the_minus_one_seventh_after_3_to_the_i_passes():
  spe = 7
  m = optim.iwae_multiplier(spe)
  # stage i covers epochs [(3^i - 1) / 2, (3^(i+1) - 1) / 2): 0 | 1-3 | 4-12 | 13-39 | ... | 1093-3279
  for epoch, stage in ((0, 0), (1, 1), (3, 1), (4, 2), (12, 2), (13, 3), (39, 3), (40, 4), (1093, 7), (3279, 7)):
    for step in (epoch * spe, epoch * spe + spe - 1):
      np.testing.assert_allclose(float(m(jnp.asarray(step))), 10 ** (-stage / 7), rtol=1e-6)
  total = sum(3**i for i in range(8))
  assert total == 3280 and float(m(jnp.asarray(3280 * spe))) == pytest.approx(10 ** (-8 / 7), rel=1e-6)
  config = tiny_config("vae", optimizer__schedule="iwae")
  assert float(optim.schedule_multiplier(config, spe)(jnp.asarray(4 * spe))) == pytest.approx(10 ** (-2 / 7))


def test_static_binarization_draws_each_pixel_once_with_its_intensity():
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (4000, 4, 4, 1), dtype=np.uint8)
  split = data.Split(x, np.zeros(4000, np.int32), name="t")
  a, b = data.binarized(split, 5), data.binarized(split, 5)
  assert set(np.unique(a.x)) <= {0, 255} and np.array_equal(a.x, b.x)  # fixed seed: the same draw
  assert not np.array_equal(a.x, data.binarized(split, 6).x)
  # P(pixel = 1) = intensity / 255: per intensity bin, the fraction of ones matches within Monte Carlo error.
  p, ones = x.ravel() / 255.0, a.x.ravel() == 255
  for lo in np.arange(0, 1, 0.125):
    sel = (p >= lo) & (p < lo + 0.125)
    assert abs(ones[sel].mean() - p[sel].mean()) < 4 * np.sqrt(0.25 / sel.sum())
  with pytest.raises(data.DataError, match="intensities in"):
    data.binarized(data.Split(np.full((3, 2), 2.0, np.float32), np.zeros(3, np.int32), name="t"), 0)


def test_dynamic_binarization_redraws_every_step_and_static_loads_binarized_splits():
  config = tiny_config("vae", data__binarize="dynamic", num_seeds=1)
  loaded = data.load(config.data)
  assert set(np.unique(loaded.eval.x)) <= {0, 255} and len(np.unique(loaded.train.x)) > 2  # held-out: once
  program = train.build(config, loaded.train.x.shape[1:], len(loaded.train))
  seen = []
  loss_fn = program.variant.make_loss(config, program.net)

  def spy(params, hp, batch, key, training):  # records the batch the loss sees, at every run of the step
    jax.debug.callback(lambda x: seen.append(np.asarray(x)), batch["x"])
    return loss_fn(params, hp, batch, key, training)

  state = jax.tree.map(lambda a: a[0], program.init_state())
  x_all, y_all = jnp.asarray(loaded.train.x), jnp.asarray(loaded.train.labels)
  idx = jnp.arange(32)
  step = jax.jit(functools.partial(train.train_step, loss_fn=spy, prepare=program.net.prepare, binarize=True))
  step(step(state, x_all, y_all, idx), x_all, y_all, idx)
  jax.effects_barrier()
  assert len(seen) == 2
  first, second = seen
  assert set(np.unique(first)) <= {0.0, 1.0} and not np.array_equal(first, second)  # a new draw each step
  p = np.asarray(data.to_float(loaded.train.x[:32]))
  assert abs(first.mean() - p.mean()) < 0.02 and np.all(first[p == 0] == 0) and np.all(first[p == 1] == 1)
  static = data.load(tiny_config("vae", data__binarize="static").data)
  assert set(np.unique(static.train.x)) <= {0, 255} and np.array_equal(static.eval.x, loaded.eval.x)
  with pytest.raises(configs.ConfigError, match="data.normalize"):
    tiny_config("vae", data__binarize="static", data__normalize="minmax")


def test_more_epochs_resume_under_a_step_only_schedule_but_not_under_a_length_dependent_one():
  """The iwae schedule's rate depends on the step alone: a run may be extended (study 17 runs in stages);
  a cosine schedule's rates depend on train.epochs, so extending it is refused."""
  from jaxae import workdir

  for schedule, ok in (("iwae", True), ("constant", True), ("cosine", False), ("warmup_cosine", False)):
    saved = configs.flatten(tiny_config("vae", optimizer__schedule=schedule, train__epochs=4))
    now = configs.flatten(tiny_config("vae", optimizer__schedule=schedule, train__epochs=13))
    assert (workdir.incompatible_keys(saved, now) == []) == ok, schedule
