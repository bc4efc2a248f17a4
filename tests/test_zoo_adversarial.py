"""Adversarial variants (factor_vae, aae) and the mechanism they share: a discriminator head with its own
optimizer (`base.Adversary`, `optim.make_optimizer`), trained from the one loss of the variant.

Each test compares against an independent computation: permute_dims with NumPy; the split gradient of
the combined loss against jax.grad of separately written objectives (the model's with the discriminator
held constant, the discriminator's with the codes held constant); two train steps against manual optax
steps (the run's Adam with L2 weight decay on the model, Adam(adversary.*) on the discriminator); the
discriminator's held-out accuracy before and after a tiny training; an interrupted-and-resumed run
against an uninterrupted one, bit for bit.
"""

from __future__ import annotations

import json
import signal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import ROOT, run_main, tiny_config
from jaxae import configs, evaluate, optim, report, sharding, train
from jaxae import data as data_lib
from jaxae import run as run_lib
from jaxae.variants import _adversarial, aae, base, factor_vae

HEAD = "heads_discriminator"
SMALL_D = (16, 16)


# --------------------------------------------------------------------------------------- permute_dims


def test_permute_dims_permutes_every_column_independently():
  rng = np.random.RandomState(0)
  z = rng.randn(64, 5).astype(np.float32)
  out = np.asarray(_adversarial.permute_dims(jax.random.key(3), jnp.asarray(z)))
  assert out.shape == z.shape
  orders = []
  for j in range(z.shape[1]):
    # Column j is a permutation of column j (the values are distinct, so the permutation is unique).
    order = np.array([np.flatnonzero(z[:, j] == v)[0] for v in out[:, j]])
    assert sorted(order) == list(range(64)), j
    orders.append(order)
  assert all(not np.array_equal(orders[i], orders[k]) for i in range(5) for k in range(i + 1, 5))
  assert all(not np.array_equal(o, np.arange(64)) for o in orders)
  # Different keys, different permutations; a batch of one is itself.
  assert not np.array_equal(out, np.asarray(_adversarial.permute_dims(jax.random.key(4), jnp.asarray(z))))
  np.testing.assert_array_equal(_adversarial.permute_dims(jax.random.key(0), jnp.asarray(z[:1])), z[:1])


def test_permute_dims_is_uniform_over_permutations():
  # Over many keys, each element of a column of 3 lands in each row 1/3 of the time, for every column.
  z = jnp.tile(jnp.arange(3, dtype=jnp.float32)[:, None], (1, 4))
  outs = np.asarray(jax.vmap(lambda k: _adversarial.permute_dims(k, z))(jax.random.split(jax.random.key(1), 3000)))
  freq = np.stack([(outs == v).mean(axis=0) for v in range(3)])  # (value, row, column)
  np.testing.assert_allclose(freq, 1 / 3, atol=0.04)
  # Columns are permuted independently: rows of the joint of columns 0 and 1 agree 1/3 of the time.
  assert abs(np.mean(outs[:, :, 0] == outs[:, :, 1]) - 1 / 3) < 0.04


def test_discriminator_terms_against_numpy():
  rng = np.random.RandomState(1)
  real, fake = rng.randn(5, 2).astype(np.float32), rng.randn(7, 2).astype(np.float32)
  d_real = np.exp(real[:, 0]) / np.exp(real).sum(1)  # D = P(class 0 | z)
  d_fake = np.exp(fake[:, 0]) / np.exp(fake).sum(1)
  want = -0.5 * (np.log(d_real).mean() + np.log(1 - d_fake).mean())
  acc = 0.5 * ((d_real > 0.5).mean() + (d_fake < 0.5).mean())
  loss, accuracy = _adversarial.discriminator_terms(jnp.asarray(real), jnp.asarray(fake))
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(accuracy, acc)


# ------------------------------------------------------------------ the gradient of the combined loss


def _setup(variant_file, batch=6, **overrides):
  config = tiny_config(variant_file, adversary__hidden=SMALL_D, **overrides)
  net = train.build_net(config, (28, 28, 1))
  # Random parameters of the network's shapes (NumPy: nothing to compile), weights ~ N(0, 1 / fan_in).
  shapes = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
  rng = np.random.RandomState(1)
  params = jax.tree.map(lambda a: jnp.asarray(rng.randn(*a.shape).astype(np.float32) / np.sqrt(a.shape[0])), shapes)
  x = jnp.asarray(np.random.RandomState(2).rand(batch, 28, 28, 1).astype(np.float32))
  b = {"x": x, "y": jnp.zeros((batch,), jnp.int32), "step": jnp.zeros([], jnp.int32), "num_train": 256}
  return config, net, params, b


def _with_disc(params, disc):
  return {**params, "params": {**params["params"], HEAD: disc}}


def _disc_apply(disc, z):
  return _adversarial.Discriminator(SMALL_D).apply({"params": disc}, z)


def _bernoulli_nll(logits, x):
  """-log p(x | z) of a Bernoulli decoder, nats per example averaged over the batch."""
  ll = x * jax.nn.log_sigmoid(logits) + (1 - x) * jax.nn.log_sigmoid(-logits)
  return -jnp.mean(jnp.sum(ll.reshape(ll.shape[0], -1), axis=1))


def _factor_vae_objectives(net, params0, batch, key, gamma):
  """(model objective of the model params with D fixed at params0's, D's objective of its params with
  the codes fixed at params0's): Kim & Mnih 2018 eq. 2 and alg. 2, written out."""
  x = batch["x"]
  disc0 = params0["params"][HEAD]

  def codes(params):
    mean, log_var = net.encode(params, x)
    eps = jax.random.normal(jax.random.fold_in(key, factor_vae.REPARAMETERIZATION_SALT), mean.shape)
    return mean, log_var, mean + jnp.exp(0.5 * log_var) * eps

  def model_objective(params):
    mean, log_var, z = codes(params)
    kl = jnp.mean(jnp.sum(0.5 * (mean**2 + jnp.exp(log_var) - 1 - log_var), axis=1))
    p_real = jax.nn.softmax(_disc_apply(disc0, z))[:, 0]
    tc = jnp.mean(jnp.log(p_real) - jnp.log(1 - p_real))
    return _bernoulli_nll(net.decode(params, z), x) + kl + gamma * tc

  def disc_objective(disc):
    z0 = codes(params0)[2]  # a constant: params0 is not an argument
    n = z0.shape[0] // 2
    z_fake = _adversarial.permute_dims(jax.random.fold_in(key, factor_vae.PERMUTATION_SALT), z0[n:])
    d_real = jax.nn.softmax(_disc_apply(disc, z0[:n]))[:, 0]
    d_fake = jax.nn.softmax(_disc_apply(disc, z_fake))[:, 0]
    return -0.5 * (jnp.mean(jnp.log(d_real)) + jnp.mean(jnp.log(1 - d_fake)))

  return model_objective, disc_objective


def _aae_objectives(net, params0, batch, key, weight):
  """Makhzani et al. 2016 sec. 2, the two phases written out (D fixed / codes fixed at params0's)."""
  x = batch["x"]
  disc0 = params0["params"][HEAD]

  def model_objective(params):
    z = net.encode(params, x)
    fooled = jax.nn.softmax(_disc_apply(disc0, z))[:, 0]
    return _bernoulli_nll(net.decode(params, z), x) - weight * jnp.mean(jnp.log(fooled))

  def disc_objective(disc):
    z0 = net.encode(params0, x)  # a constant: params0 is not an argument
    prior = jax.random.normal(jax.random.fold_in(key, aae.PRIOR_SALT), z0.shape)
    d_prior = jax.nn.softmax(_disc_apply(disc, prior))[:, 0]
    d_codes = jax.nn.softmax(_disc_apply(disc, z0))[:, 0]
    return -0.5 * (jnp.mean(jnp.log(d_prior)) + jnp.mean(jnp.log(1 - d_codes)))

  return model_objective, disc_objective


def _assert_close_trees(a, b, what):
  for (path, u), v in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    u, v = np.asarray(u), np.asarray(v)
    np.testing.assert_allclose(u, v, rtol=2e-4, atol=1e-5 * max(np.abs(v).max(), 1e-3),
                               err_msg=f"{what} {jax.tree_util.keystr(path)}")


@pytest.mark.parametrize("variant_file,weight", [("factor_vae", 3.0), ("aae", 2.0)])
def test_gradient_of_the_one_loss_splits_into_the_two_objectives(variant_file, weight):
  config, net, params0, batch = _setup(variant_file)
  variant = configs.variant_of(config)
  name = {"factor_vae": "factor_gamma", "aae": "aae_weight"}[variant_file]
  hp = {name: jnp.float32(weight), "gaussian_sigma": jnp.float32(1.0)}
  key = jax.random.key(5)
  loss_fn = variant.make_loss(config, net)
  objectives = _factor_vae_objectives if variant_file == "factor_vae" else _aae_objectives
  model_objective, disc_objective = objectives(net, params0, batch, key, weight)

  combined = jax.jit(lambda p, h: jax.value_and_grad(loss_fn, has_aux=True)(p, h, batch, key, True))
  (loss, metrics), grads = combined(params0, hp)
  separate = jax.jit(lambda p: (jax.value_and_grad(model_objective)(p),
                                jax.value_and_grad(disc_objective)(p["params"][HEAD])))
  (model_value, model_grads), (disc_value, disc_grads) = separate(params0)
  # The loss is the sum of the two objectives; each part of its gradient is its own objective's.
  np.testing.assert_allclose(loss, model_value + disc_value, rtol=1e-5)
  np.testing.assert_allclose(metrics["disc_loss"], disc_value, rtol=1e-5)
  _assert_close_trees(grads["params"][HEAD], disc_grads, "discriminator")
  model_part = {k: v for k, v in grads["params"].items() if k != HEAD}
  _assert_close_trees(model_part, {k: v for k, v in model_grads["params"].items() if k != HEAD}, "model")
  assert np.all(np.asarray(jax.tree.leaves(model_grads["params"][HEAD])[0]) == 0)  # D was a constant there
  # The adversarial term does reach the encoder (so a missing stop_gradient or term would show above).
  no_adversary = combined(params0, {**hp, name: jnp.float32(0.0)})[1]
  enc = lambda g: np.asarray(jax.tree.leaves(g["params"]["encoder"])[1])
  assert np.abs(enc(grads) - enc(no_adversary)).max() > 1e-3 * np.abs(enc(grads)).max()
  if variant_file == "factor_vae":
    np.testing.assert_allclose(metrics["neg_elbo"], metrics["recon_nll"] + metrics["kl"], rtol=1e-6)
    np.testing.assert_allclose(loss, metrics["neg_elbo"] + weight * metrics["tc_estimate"] + metrics["disc_loss"],
                               rtol=1e-5)


def test_adversary_labels_only_its_heads():
  config, net, params, _ = _setup("factor_vae")
  adversary = factor_vae.VARIANT.adversary
  flat = jax.tree_util.tree_leaves_with_path(params)
  keys = lambda path: tuple(getattr(k, "key", str(k)) for k in path)
  labelled = {keys(p)[1] for p, _ in flat if adversary.is_adversary(keys(p))}
  assert labelled == {HEAD}
  assert base.Adversary(heads=("missing",), optimizer=_adversarial.optimizer).is_adversary(keys(flat[0][0])) is False


# -------------------------------------------------------------------------------- one train step

TINY = ["--config.num_seeds=2", "--config.data.max_train=256", "--config.data.max_eval=64", "--config.train.batch_size=32",
        "--config.model.hidden=(64,32)", "--config.model.latent_dim=8", "--config.train.figures=False",
        "--config.train.progress=False", "--config.train.epochs=2", "--config.train.steps_per_call=1",
        "--config.adversary.hidden=(32,32)", "--config.adversary.learning_rate=0.001", "--config.log.images=0",
        "--config.log.tensorboard=False"]


def _tiny_factor_vae(**overrides):
  """tiny_config with the values of TINY (the resumed run must be the same config; the train-step test's
  program is then the run's, compiled once)."""
  return tiny_config("factor_vae", **{"train__steps_per_call": 1, "adversary__hidden": (32, 32),
                                      "adversary__learning_rate": 0.001, "log__images": 0, "log__tensorboard": False,
                                      **overrides})




def _member(tree, m):
  return jax.tree.map(lambda a: a[m], tree)


def _split(params):
  """(model part, discriminator part) of one member's params['params']."""
  return {k: v for k, v in params["params"].items() if k != HEAD}, params["params"][HEAD]


def _assert_same_steps(got, old, want_step, lr, what):
  """got - old equals the optimizer's step want_step, up to float rounding of the gradients.

  An Adam step is about lr in size whatever the gradient's; where a gradient is ~0 (rows of border pixels,
  or a loss gradient cancelling the weight decay) its direction is rounding noise, so a few elements
  may differ by up to 2 lr (a flipped sign; seen once in ~50,000 elements). A wrong optimizer, rate, beta or
  decay moves most elements by ~lr; a wrong scale of the rate also breaks the bound on the largest error.
  """
  for (path, g), o, w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(old),
                             jax.tree.leaves(want_step)):
    err = np.abs((np.asarray(g) - np.asarray(o)) - np.asarray(w)) / lr
    where = f"{what} {jax.tree_util.keystr(path)}"
    assert np.mean(err > 1e-3) <= 1e-3 and err.max() < 2.2, (where, np.mean(err > 1e-3), err.max())


def test_train_steps_update_discriminator_with_its_adam_and_model_with_the_runs_optimizer():
  # The run's config (TINY), with a swept learning rate and one seed: two members with the same init.
  lr = (1e-3, 3e-3)
  config = _tiny_factor_vae(num_seeds=1, optimizer__weight_decay=0.01,
                            sweep=json.dumps({"optimizer.learning_rate": list(lr)}))
  data = data_lib.load(config.data)
  mesh = sharding.member_mesh(2)  # built as run.py builds it, so the run below reuses these compiled programs
  program = train.build(config, data.train.x.shape[1:], len(data.train), mesh, train_x=data.train.x)
  x, y = sharding.replicate((data.train.x, data.train.labels), mesh)
  state = program.init_state()
  order = np.asarray(program.epoch_order(state, 0))
  params = [jax.device_get(state.params)]
  for offset in range(2):
    state = program.train_chunk(state, x, y, order, offset)
    params.append(jax.device_get(state.params))
  loss_fn = factor_vae.make_loss(config, program.net)
  grad_fn = jax.jit(lambda p, hp, b, key: jax.grad(loss_fn, has_aux=True)(p, hp, {**b, "num_train": len(data.train)}, key, True)[0],
                    compiler_options=train.compiler_options(config))
  # The run's optimizer on the model: Adam with L2 weight decay added to the gradient (optimizer.name='adam');
  # the discriminator's: Adam(adversary.learning_rate, b1, b2), no weight decay.
  tx = lambda rate: optax.chain(optax.add_decayed_weights(0.01), optax.adam(rate))
  dtx = optax.adam(config.adversary.learning_rate, b1=config.adversary.b1, b2=config.adversary.b2)
  init = jax.jit(lambda model, disc: (tx(1.0).init(model), dtx.init(disc)))
  manual = jax.jit(lambda rate, g_model, g_disc, opt, dopt, model, disc: (tx(rate).update(g_model, opt, model),
                                                                          dtx.update(g_disc, dopt, disc)))
  for m, seed in enumerate(program.seeds):
    hp = {k: jnp.asarray(v[m]) for k, v in program.hparams.items()}
    assert float(hp["learning_rate"]) == pytest.approx(lr[m])
    opt, dopt = init(*_split(_member(params[0], m)))
    for step in range(2):  # two steps: the second depends on b1, b2 (the first Adam step does not)
      p = _member(params[step], m)
      model, disc = _split(p)
      idx = order[m, step]
      batch = {"x": program.net.prepare(data.train.x[idx]), "y": data.train.labels[idx], "step": jnp.int32(step)}
      key = jax.random.fold_in(jax.random.fold_in(train.member_key(seed), 2), step)
      g_model, g_disc = _split({"params": grad_fn(p, hp, batch, key)["params"]})
      (u, opt), (du, dopt) = manual(jnp.float32(lr[m]), g_model, g_disc, opt, dopt, model, disc)
      got_model, got_disc = _split(_member(params[step + 1], m))
      _assert_same_steps(got_model, model, u, lr[m], f"member {m} step {step} model")
      _assert_same_steps(got_disc, disc, du, config.adversary.learning_rate, f"member {m} step {step} discriminator")
  # Same seed, learning rates 1e-3 and 3e-3: the first step moved both discriminators alike, the models 3x.
  first = [jax.tree.map(lambda a, b: a - b, _member(params[1], m)["params"], _member(params[0], m)["params"])
           for m in range(2)]
  for a, b in zip(jax.tree.leaves(first[0][HEAD]), jax.tree.leaves(first[1][HEAD])):
    np.testing.assert_array_equal(a, b)
  enc0, enc1 = (np.asarray(u["encoder"]["latent"]["kernel"]) for u in first)
  big = np.abs(enc0) > 1e-5
  assert big.mean() > 0.5
  np.testing.assert_allclose(enc1[big] / enc0[big], 3.0, rtol=1e-3)


def test_optimizer_refuses_an_adversary_that_names_no_parameter():
  config, net, params, _ = _setup("factor_vae")
  ghost = base.Adversary(heads=("critic",), optimizer=_adversarial.optimizer)
  with pytest.raises(ValueError, match="critic"):
    optim.make_optimizer(config, 8, ghost).init(params)


# ------------------------------------------------- end to end: run_main, evaluate, SIGTERM and resume

class _Quiet:
  """capsys for a module-scoped run: output is left to pytest's own capture."""

  def readouterr(self):
    return "", ""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  wd = tmp_path_factory.mktemp("factor_vae")
  with pytest.MonkeyPatch.context() as mp:
    rc, _, _ = run_main(mp, _Quiet(), f"--config={ROOT / 'configs' / 'factor_vae.py'}", f"--workdir={wd}", *TINY)
  assert rc == 0
  return wd


def test_end_to_end_run_learns_and_evaluates(trained):
  summary = json.loads((trained / "summary.json").read_text())
  (entry,) = summary["settings"]
  e = {k: np.asarray(v["per_seed"]) for k, v in entry["eval"].items()}
  assert e["neg_elbo"].shape == (2,)
  first, last = (np.asarray(r["eval"]["neg_elbo"]) for r in report.read_records(str(trained)))
  assert np.all(last < first) and np.all(last < 0.95 * 784 * np.log(2))  # 543 nats: a decoder that knows nothing
  np.testing.assert_allclose(e["loss"], e["neg_elbo"] + 10.0 * e["tc_estimate"] + e["disc_loss"], rtol=1e-4)
  result = evaluate.evaluate(str(trained), evaluate.Options(num_samples=20, figures=False, probes=False), quiet=True)
  ev = {k: np.asarray(v["per_seed"]) for k, v in result["settings"][0]["eval"].items()}
  assert np.all(ev["nll"] <= ev["neg_elbo"]) and np.all(np.isfinite(ev["nll"]))
  np.testing.assert_allclose(ev["neg_elbo"], e["neg_elbo"], rtol=0.03)


def test_aae_discriminator_learns_to_tell_codes_from_prior_samples():
  # A tiny training (2 epochs of 8 steps) with the variant's loss and the run's two optimizers, then the
  # discriminator on held-out codes against fresh N(0, I) samples.
  config, net, params, _ = _setup("aae", adversary__learning_rate=0.001)
  data = data_lib.load(config.data)
  x, held = jnp.asarray(net.prepare(data.train.x)), jnp.asarray(net.prepare(data.eval.x))
  loss_fn = aae.make_loss(config, net)
  tx = optim.make_optimizer(config, 8, aae.VARIANT.adversary)
  hp = {"aae_weight": jnp.float32(1.0)}
  order = np.concatenate([np.random.RandomState(e).permutation(len(x)) for e in range(2)]).reshape(16, 32)

  @jax.jit
  def metrics_before_and_after(params):
    def step(carry, idx_i):
      params, opt = carry
      idx, i = idx_i
      batch = {"x": x[idx], "y": jnp.zeros(32, jnp.int32), "step": i, "num_train": len(x)}
      grads = jax.grad(loss_fn, has_aux=True)(params, hp, batch, jax.random.key(i), True)[0]
      updates, opt = tx.update(grads, opt, params)
      return (optax.apply_updates(params, updates), opt), None

    evaluate_on = lambda p: loss_fn(p, hp, {"x": held, "y": jnp.zeros(len(held), jnp.int32), "step": 0,
                                            "num_train": len(x)}, jax.random.key(99), False)[1]
    opt = optim.set_hyperparams(tx.init(params), 1e-3, 0.0)
    (trained, _), _ = jax.lax.scan(step, (params, opt), (order, jnp.arange(16)))
    return evaluate_on(params), evaluate_on(trained)

  before, e = metrics_before_and_after(params)
  assert float(e["disc_accuracy"]) > max(0.6, float(before["disc_accuracy"]) + 0.1), (before, e)
  assert float(e["disc_loss"]) < min(np.log(2), float(before["disc_loss"])), (before, e)
  np.testing.assert_allclose(e["loss"], e["recon_bce"] + e["adversarial_loss"] + e["disc_loss"], rtol=1e-5)


def test_sigterm_mid_epoch_then_resume_is_bit_identical(trained, tmp_path, monkeypatch):
  import orbax.checkpoint as ocp

  from jaxae import checkpoints

  def raw(workdir):
    mngr = checkpoints.manager(str(workdir), read_only=True)
    step = mngr.latest_step()
    r = mngr.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(),
                                                    state=ocp.args.StandardRestore()))
    mngr.close()
    return step, jax.device_get(r.params), jax.device_get(r.state)

  calls, real_run_epoch = [], train.run_epoch

  def run_epoch(program, state, x, y, stop):
    def stop_soon():
      calls.append(1)
      if len(calls) == 11:  # after step 4 of epoch 2 (7 stops in epoch 1): a real SIGTERM through the handler
        signal.raise_signal(signal.SIGTERM)
      return stop()
    return real_run_epoch(program, state, x, y, stop_soon)

  monkeypatch.setattr(train, "run_epoch", run_epoch)
  out = run_lib.train_and_evaluate(_tiny_factor_vae(), str(tmp_path))
  assert out == {"interrupted": "SIGTERM", "step": 8 + 4, "epoch": 1}
  step, params, state = raw(tmp_path)
  assert step == 12
  # Both optimizers' states are in the checkpoint: the discriminator's Adam has counted its 12 steps.
  counts = {jax.tree_util.keystr(p): np.asarray(a) for p, a in jax.tree_util.tree_leaves_with_path(state["opt_state"])
            if "count" in jax.tree_util.keystr(p)}
  for part in ("'adversary'", "'model'"):
    assert any(part in k for k in counts), (part, list(counts))
  assert all(np.all(c == 12) for c in counts.values()), counts
  monkeypatch.setattr(train, "run_epoch", real_run_epoch)
  run_lib.train_and_evaluate(_tiny_factor_vae(), str(tmp_path))
  (s1, p1, st1), (s2, p2, st2) = raw(tmp_path), raw(trained)
  assert s1 == s2 == 16
  for a, b in ((p1, p2), (st1, st2)):
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for u, v in zip(la, lb):
      np.testing.assert_array_equal(np.asarray(u), np.asarray(v))  # bit-identical, not allclose
  strip = lambda wd: [{k: v for k, v in r.items() if k != "seconds"} for r in report.read_records(str(wd))]
  assert strip(tmp_path) == strip(trained)
