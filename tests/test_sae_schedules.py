"""SAE schedules (sparsity warm-up, learning-rate decay, k annealing) against hand computations, a resumed run
that stays bit-exact across the warm-up's end, and the SAE metrics (FVU, explained variance, MSE, L0, dead
fraction) pinned on hand-computed 3 x 2 arrays."""

from __future__ import annotations

import json
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import run_main
from test_checkpoints import assert_trees_equal, raw_checkpoint, records
from test_sae import np_code, random_params, sae_config
from jaxae import configs, optim, sae, sae_schedules, sweep, train
from jaxae.variants import sae as sae_variant


# --- the schedules as functions of the step ------------------------------------------------------------

def test_warmup_factor_by_hand():
  """min(1, t / W): SAELens's CoefficientScheduler holds final * t / W at training step t (0-based)."""
  for t, w, expected in ((0, 4, 0.0), (1, 4, 0.25), (3, 4, 0.75), (4, 4, 1.0), (9, 4, 1.0), (0, 0, 1.0), (5, 0, 1.0),
                         (2, 8, 0.25)):
    assert float(sae_schedules.warmup_factor(jnp.int32(t), jnp.float32(w))) == expected, (t, w)


def test_annealed_k_by_hand():
  """k(t) = k + ceil((k_start - k)(T - t) / T): k_start = 8, k = 2, T = 4 -> 8, 7 (2 + ceil(4.5)), 5, 4 (2 + ceil(1.5)), 2."""
  got = [int(sae_schedules.annealed_k(jnp.int32(t), 8, 2, jnp.float32(4))) for t in range(7)]
  assert got == [8, 7, 5, 4, 2, 2, 2]
  assert [int(sae_schedules.annealed_k(t, 6, 3, 3.0)) for t in range(5)] == [6, 5, 4, 3, 3]
  assert int(sae_schedules.annealed_k(0, 8, 2, 0.0)) == 2  # T = 0: no annealing
  # exact where float32 holds (k_start - k) T: a large run's schedule hits each integer on time
  big = np.asarray([int(sae_schedules.annealed_k(t, 4096, 32, 4000.0)) for t in (0, 1, 1000, 2000, 3999, 4000)])
  np.testing.assert_array_equal(big, [32 + -(-(4064 * (4000 - t)) // 4000) for t in (0, 1, 1000, 2000, 3999, 4000)])


def test_decay_multiplier_and_the_rate_the_optimizer_uses():
  """T = 2 epochs x 4 steps = 8, f = 0.5: the last D = 4 updates use (T - t) / D = 1, 3/4, 1/2, 1/4. Plain SGD
  on a constant gradient 1 moves a parameter by -lr x that factor per step; a second member (vmap) with f = 0
  keeps the full rate: one program sweeps f."""
  factors = [float(optim.decay_multiplier(8, 0.5)(jnp.int32(t))) for t in range(10)]
  assert factors == [1, 1, 1, 1, 1, 0.75, 0.5, 0.25, 0, 0]
  assert [float(optim.decay_multiplier(8, 0.0)(t)) for t in (0, 7, 8)] == [1, 1, 1]
  assert [float(optim.decay_multiplier(10, 0.2)(t)) for t in (7, 8, 9)] == [1, 1, 0.5]  # D = 2: SAELens's last 2 steps
  config = sae_config("relu", optimizer__name="sgd", optimizer__momentum=0.0, optimizer__learning_rate=0.1,
                      optimizer__decay_fraction=0.5, train__epochs=2)
  tx = optim.make_optimizer(config, steps_per_epoch=4)
  params = {"w": jnp.zeros(())}

  def trajectory(fraction):
    state = optim.set_hyperparams(tx.init(params), 0.1, 0.0, fraction)
    p, out = params, []
    for _ in range(8):
      updates, state = tx.update({"w": jnp.ones(())}, state, p)
      out.append(updates["w"])
      p = jax.tree.map(jnp.add, p, updates)
    return jnp.stack(out)

  steps = np.asarray(jax.vmap(trajectory)(jnp.asarray([0.5, 0.0])))
  np.testing.assert_allclose(steps[0], -0.1 * np.asarray([1, 1, 1, 1, 1, 0.75, 0.5, 0.25]), rtol=1e-6)
  np.testing.assert_allclose(steps[1], -0.1 * np.ones(8), rtol=1e-6)


# --- the schedules in the SAE objective -----------------------------------------------------------------

def _loss_at(config, p, x, step, hp=None, train_=True, aux=None):
  net = sae_variant.network(config, (x.shape[1],))
  hp = {"l1_coefficient": 2.0, "l0_coefficient": 3.0, "auxk_coefficient": 0.0, "jumprelu_bandwidth": 0.05,
        "sparsity_warmup_steps": 4.0, "k_anneal_steps": 4.0, **(hp or {})}
  aux = sae_variant.init_aux(config, net, (x.shape[1],)) if aux is None else aux
  batch = {"x": jnp.asarray(x), "aux": aux, "step": jnp.int32(step)}
  params = {"params": {k: jnp.asarray(v) for k, v in p.items()}}
  return sae_variant.make_loss(config, net)(params, {k: jnp.float32(v) for k, v in hp.items()}, batch, None, train_)


@pytest.mark.parametrize("activation, coefficient, penalty", [("relu", 2.0, "l1"), ("jumprelu", 3.0, "l0_penalty")])
def test_sparsity_coefficient_warms_up_in_the_loss(activation, coefficient, penalty):
  rng = np.random.default_rng(0)
  config = sae_config(activation, model__expansion=2, sae__sparsity_warmup_steps=4)
  p = random_params(rng, d=3, m=6, activation=activation)
  x = rng.standard_normal((5, 3)).astype(np.float32)
  for t, factor in ((0, 0.0), (1, 0.25), (2, 0.5), (4, 1.0), (7, 1.0)):
    loss, m = _loss_at(config, p, x, t)
    np.testing.assert_allclose(loss - m["sq_error"], coefficient * factor * m[penalty], rtol=1e-5, atol=1e-7)
    assert m[penalty] > 0
  loss, m = _loss_at(config, p, x, 1, hp={"sparsity_warmup_steps": 0.0})  # W = 0: the full coefficient at once
  np.testing.assert_allclose(loss - m["sq_error"], coefficient * m[penalty], rtol=1e-5)


@pytest.mark.parametrize("activation", ["topk", "batchtopk"])
def test_k_anneals_in_training_and_evaluation_uses_k(activation):
  """k_start = 8 -> k = 2 over T = 4 steps (8, 7, 5, 4, 2): with every pre-activation positive, L0 is k(t) and
  the reconstruction is NumPy's from the k(t) largest (TopK) or the k(t) B largest of the batch (BatchTopK)."""
  rng = np.random.default_rng(1)
  config = sae_config(activation, model__expansion=4, sae__k=2, sae__k_start=8, sae__k_anneal_steps=4)
  p = random_params(rng, d=3, m=12)
  p["b_enc"] = p["b_enc"] + 20.0  # all positive: ReLU keeps what top-k keeps
  p["threshold"] = np.float32(0.0)  # BatchTopK's inference threshold (0: every positive latent)
  x = rng.standard_normal((6, 3)).astype(np.float32)
  for t, k_t in ((0, 8), (1, 7), (2, 5), (3, 4), (4, 2), (9, 2)):
    loss, m = _loss_at(config, p, x, t)
    assert float(m["k"]) == k_t and float(m["l0"]) == k_t, (t, m["k"], m["l0"])
    z = np_code(p, x, activation, k_t, batch_topk_k=k_t if activation == "batchtopk" else None)
    x_hat = z @ p["W_dec"] + p["b_dec"]
    np.testing.assert_allclose(m["sq_error"], np.mean(np.sum((x - x_hat) ** 2, 1)), rtol=1e-5)
    if activation == "batchtopk":
      np.testing.assert_allclose(m["_aux"]["threshold"], z[z > 0].min(), rtol=1e-6)  # the smallest kept
  _, m = _loss_at(config, p, x, 0, train_=False)  # held-out: the inference code with sae.k
  expected = 2 if activation == "topk" else 12  # BatchTopK infers with its threshold (0 here: every latent)
  assert float(m["l0"]) == expected and "k" not in m


def test_bad_schedule_settings_are_one_line_errors():
  for values, message in (
      (dict(sae__sparsity_warmup_steps=10), "sae.sparsity_warmup_steps=10 warms up the L1"),
      (dict(sae__k_start=1, sae__k=2), "sae.k_start=1 must be at least sae.k=2"),
      (dict(sae__k_anneal_steps=5), "sae.k_anneal_steps=5 needs sae.k_start > sae.k=2"),
      (dict(sae__sparsity_warmup_steps=-1), "sae.sparsity_warmup_steps=-1 must be a non-negative number"),
      (dict(sae__k_start=-4), "sae.k_start=-4 must be a whole number >= 0"),
      (dict(optimizer__decay_fraction=1.5), r"optimizer.decay_fraction=1.5 must be in \[0, 1\]")):
    with pytest.raises(configs.ConfigError, match=message):
      sae_config("topk", **values)
  with pytest.raises(configs.ConfigError, match="anneal the k of 'topk' and 'batchtopk', not sae.activation='relu'"):
    sae_config("relu", sae__k_start=8)
  config = sae_config("topk")
  config.sweep = '{"sae.k_anneal_steps": [0, 10]}'
  with pytest.raises(configs.ConfigError, match="needs sae.k_start"):  # a swept value is checked like a base one
    sweep.groups(config)


def test_k_start_beyond_the_latents_and_epochs_under_a_decay_are_refused():
  import types

  from jaxae import data as data_lib
  from jaxae import workdir

  config = sae_config("topk", sae__k=2, sae__k_start=40, sae__k_anneal_steps=10, model__expansion=4)
  with pytest.raises(data_lib.DataError, match=r"sae.k_start=40 is larger than the 24 latents"):
    sae_variant.check_data(config, types.SimpleNamespace(train=types.SimpleNamespace(x=np.zeros((8, 6)))))
  # the decay's length is train.epochs: a resumed run may not change it (a warm-up's length is in steps: it may)
  flat = lambda **kw: configs.flatten(sae_config("relu", **kw))
  assert workdir.incompatible_keys(flat(sae__sparsity_warmup_steps=5), flat(sae__sparsity_warmup_steps=5, train__epochs=9)) == []
  assert workdir.incompatible_keys(flat(optimizer__decay_fraction=0.2),
                                   flat(optimizer__decay_fraction=0.2, train__epochs=9)) == ["train.epochs"]
  swept = sae_config("relu")
  swept.sweep = '{"optimizer.decay_fraction": [0, 0.2]}'
  longer = configs.flatten(swept)
  longer["train.epochs"] = 9
  assert workdir.incompatible_keys(configs.flatten(swept), longer) == ["train.epochs"]


# --- end to end: a sweep of schedules in one program, resumed across the warm-up's end ---------------

def _acts(tmp_path):
  x, _ = sae.synthetic_features(160, 6, 12, 2.0, seed=4)
  np.save(tmp_path / "train.npy", x[:128])
  np.save(tmp_path / "eval.npy", x[128:])
  return [f"--config.data.source=npy:{tmp_path}/train.npy", f"--config.data.eval_source=npy:{tmp_path}/eval.npy"]


def test_swept_schedules_resume_bit_exact_across_the_warmup_boundary(tmp_path, monkeypatch, capsys):
  """relu SAE, 2 epochs x 4 steps; the sweep (W in {0, 6}) x (decay f in {0, 0.5}) is one program. A run stopped
  by SIGTERM after step 5 (warm-up not over, decay begun) and resumed equals the uninterrupted run bit for bit;
  the schedules take effect (every member differs)."""
  args = ["--config=configs/sae.py", *_acts(tmp_path), "--config.sae.activation=relu", "--config.num_seeds=1",
          "--config.model.expansion=2", "--config.train.epochs=2", "--config.train.batch_size=32",
          "--config.train.steps_per_call=1", "--config.train.progress=False", "--config.train.figures=False",
          "--config.log.tensorboard=False", "--config.sae.l1_coefficient=1.0",
          '--config.sweep={"sae.sparsity_warmup_steps": [0, 6], "optimizer.decay_fraction": [0, 0.5]}']
  rc, _, err = run_main(monkeypatch, capsys, *args, f"--workdir={tmp_path / 'ref'}")
  assert rc == 0, err
  calls = []
  real_run_epoch = train.run_epoch

  def run_epoch(program, state, x, y, stop):
    def stop_soon():
      calls.append(1)
      if len(calls) == 4:  # epoch 1 asks after steps 1, 2, 3; epoch 2 after step 5
        signal.raise_signal(signal.SIGTERM)
      return stop()
    return real_run_epoch(program, state, x, y, stop_soon)

  monkeypatch.setattr(train, "run_epoch", run_epoch)
  rc, _, err = run_main(monkeypatch, capsys, *args, f"--workdir={tmp_path / 'run'}")
  assert rc == 143, err
  assert raw_checkpoint(tmp_path / "run")[0] == 5
  monkeypatch.setattr(train, "run_epoch", real_run_epoch)
  rc, out, err = run_main(monkeypatch, capsys, *args, f"--workdir={tmp_path / 'run'}")
  assert rc == 0 and "resuming" in out, err
  s1, p1, st1 = raw_checkpoint(tmp_path / "run")
  s2, p2, st2 = raw_checkpoint(tmp_path / "ref")
  assert s1 == s2 == 8
  assert_trees_equal(p1, p2)
  assert_trees_equal(st1, st2)
  assert records(tmp_path / "run") == records(tmp_path / "ref")
  np.testing.assert_array_equal(st1["hparams"]["sparsity_warmup_steps"], [0, 0, 6, 6])
  np.testing.assert_array_equal(st1["hparams"]["decay_fraction"], [0, 0.5, 0, 0.5])
  w = p1["params"]["W_enc"].reshape(4, -1)
  assert len({row.tobytes() for row in w}) == 4
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert [s["setting"] for s in summary["settings"]] == [
      {"sae.sparsity_warmup_steps": 0, "optimizer.decay_fraction": 0}, {"sae.sparsity_warmup_steps": 0, "optimizer.decay_fraction": 0.5},
      {"sae.sparsity_warmup_steps": 6, "optimizer.decay_fraction": 0}, {"sae.sparsity_warmup_steps": 6, "optimizer.decay_fraction": 0.5}]


def test_k_annealing_sweep_trains_and_ends_at_k(tmp_path):
  """TopK with k_start = 8 -> k = 2 over T in {0, 4} steps (2 epochs x 4 steps): the epoch means of the k metric
  are hand-computed, (8 + 7 + 5 + 4) / 4 = 6 then 2; T = 0 trains at k throughout."""
  x, _ = sae.synthetic_features(128, 6, 12, 2.0, seed=5)
  config = sae_config("topk", sae__k=2, sae__k_start=8, model__expansion=2, train__epochs=2)
  config.sweep = '{"sae.k_anneal_steps": [0, 4]}'
  program = train.build(sweep.groups(config)[0], (6,), len(x), train_x=x)
  state = program.init_state()
  xs, ys = jnp.asarray(x), jnp.zeros(len(x), jnp.int32)
  means = []
  for _ in range(2):
    state, _ = train.run_epoch(program, state, xs, ys)
    state, m = train.take_epoch_metrics(program, state)
    means.append(m["k"])
  np.testing.assert_array_equal(np.asarray(means), [[2, 2, 6, 6], [2, 2, 2, 2]])


# --- metrics pinned on hand-computed arrays -------------------------------------------------------------

# x (3 examples, D = 2) with per-feature means (2, 1) and centred sums of squares 8 and 2, total 10.
# The SAE: W_enc = W_dec = I on latents 0, 1 (latents 2, 3 never fire: W_enc columns 0, b_enc = -1),
# b_enc = (0, -0.5), b_dec = 0, relu. pi = [[2, -.5], [0, 1.5], [4, .5]] -> z = [[2, 0], [0, 1.5], [4, .5]],
# x_hat = z, errors [[0, 0], [0, .5], [0, .5]]: sum ||x - x_hat||^2 = 0.5.
X = np.asarray([[2.0, 0.0], [0.0, 2.0], [4.0, 1.0]], np.float32)
HAND = {
    "fvu": 0.5 / 10,  # Gao et al. 2024: sum ||x - x_hat||^2 / sum ||x - mean_x||^2, mean over the batch per feature
    "explained_variance": 1 - 0.5 / 10,
    "sq_error": 0.5 / 3,  # mean over examples of ||x - x_hat||^2
    "recon_mse": 0.5 / 6,  # per element
    "l0": 4 / 3,  # 1, 1, 2 latents
    "l1": (2 + 1.5 + 4.5) / 3,  # sum_i z_i ||W_dec,i|| with unit rows
    "cosine_similarity": (1 + 1 + 16.5 / np.sqrt(17 * 16.25)) / 3,
}
# Wrong definitions SAE tools have shipped, each a different number on these arrays: the per-feature average
# of explained variances (1 - (0/8 + .5/2) / 2 = 0.875), the uncentred one (1 - .5/25 = 0.98), the one with
# a centred error (1 - (1/6)/10 = 0.983).
WRONG_EV = (0.875, 0.98, 1 - (1 / 6) / 10)


def _hand_params():
  w_enc = np.zeros((2, 4), np.float32)
  w_enc[0, 0] = w_enc[1, 1] = 1
  w_dec = np.asarray([[1, 0], [0, 1], [0.6, 0.8], [-0.8, 0.6]], np.float32)
  return {"W_enc": w_enc, "b_enc": np.asarray([0, -0.5, -1, -1], np.float32), "W_dec": w_dec,
          "b_dec": np.zeros(2, np.float32)}


def test_numpy_fvu_reference_on_the_hand_arrays():
  x_hat = np.maximum(X @ _hand_params()["W_enc"] + _hand_params()["b_enc"], 0) @ _hand_params()["W_dec"]
  np.testing.assert_allclose(x_hat, [[2, 0], [0, 1.5], [4, 0.5]])
  assert sae.fvu(X, x_hat) == pytest.approx(HAND["fvu"], rel=1e-12)
  assert sae.fvu(X, x_hat, axis_mean=np.zeros(2)) == pytest.approx(0.5 / 25, rel=1e-12)  # about the origin
  assert all(abs((1 - HAND["fvu"]) - w) > 0.02 for w in WRONG_EV)


@pytest.mark.parametrize("eval_batch_size", [3, 2])  # 2: one full batch and a remainder of 1, weighted by size
def test_program_metrics_equal_the_hand_computation(eval_batch_size):
  """The held-out metrics of the program (batched sufficient statistics, `finalize`) and the training
  metrics of one epoch at lr = 0 (one batch of 3; dead = not fired in the last 3 examples) on the hand SAE."""
  config = sae_config("relu", model__expansion=2, optimizer__learning_rate=0.0, train__batch_size=3,
                      train__eval_batch_size=eval_batch_size, sae__dead_window=3, sae__l1_coefficient=1.0)
  program = train.build(config, (2,), 3)
  state = program.init_state()
  hand = _hand_params()
  state = state.replace(params={"params": {k: jnp.broadcast_to(jnp.asarray(v), (2, *v.shape))
                                           for k, v in hand.items()}})
  ev = {k: np.asarray(v) for k, v in program.evaluate(state, jnp.asarray(X), jnp.zeros(3, jnp.int32)).items()}
  for name in ("fvu", "explained_variance", "sq_error", "recon_mse", "l0", "l1", "cosine_similarity"):
    np.testing.assert_allclose(ev[name], HAND[name], rtol=1e-6, err_msg=name)
  np.testing.assert_allclose(ev["loss"], HAND["sq_error"] + HAND["l1"], rtol=1e-6)
  np.testing.assert_array_equal(ev["dead_fraction"], 0.5)  # latents 2, 3 of 4 fire on no example
  state, _ = train.run_epoch(program, state, jnp.asarray(X), jnp.zeros(3, jnp.int32))
  state, tr = train.take_epoch_metrics(program, state)
  for name in ("fvu", "explained_variance", "sq_error", "recon_mse", "l0", "l1"):
    np.testing.assert_allclose(tr[name], HAND[name], rtol=1e-6, err_msg=name)
  np.testing.assert_array_equal(tr["dead_fraction"], 0.5)


def test_fvu_is_centred_when_the_data_sit_far_from_the_origin():
  """The same arrays shifted by 1000: FVU is unchanged (a centred denominator), to float32 rounding of the
  streamed statistics."""
  config = sae_config("relu", model__expansion=2, train__batch_size=3, train__eval_batch_size=2)
  program = train.build(config, (2,), 3)
  state = program.init_state()
  hand = _hand_params()
  hand["b_dec"] = np.full(2, 1000.0, np.float32)  # x_hat = z + 1000 with pi from x - 1000: the same errors
  state = state.replace(params={"params": {k: jnp.broadcast_to(jnp.asarray(v), (2, *v.shape)) for k, v in hand.items()}})
  ev = program.evaluate(state, jnp.asarray(X + 1000), jnp.zeros(3, jnp.int32))
  np.testing.assert_allclose(np.asarray(ev["fvu"]), HAND["fvu"], rtol=1e-4)
  np.testing.assert_allclose(np.asarray(ev["sq_error"]), HAND["sq_error"], rtol=1e-4)
