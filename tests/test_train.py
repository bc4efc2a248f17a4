"""Training: vmapped members equal members trained alone, every config runs end to end, divergence."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxae import data as data_lib
from jaxae import report, train
from jaxae.run import train_and_evaluate

from conftest import ROOT, tiny_config


def _train(config, seeds, epochs=2, member_loop="vmap"):
  """Trains members with these seeds for `epochs` through the real program; returns params and epoch metrics."""
  d = data_lib.load(config.data)
  config.seed, config.num_seeds = seeds[0], len(seeds)
  assert seeds == list(range(seeds[0], seeds[0] + len(seeds)))
  program = train.build(config, d.train.x.shape[1:], len(d.train), member_loop=member_loop)
  state = program.init_state()
  history = []
  for _ in range(epochs):
    state, finished = train.run_epoch(program, state, d.train.x, d.train.labels)
    assert finished
    state, means = train.take_epoch_metrics(program, state)
    history.append(means["loss"])
  return jax.device_get(state.params), np.stack(history, 1)


@pytest.mark.parametrize("variant", ["vanilla", "denoising", "vae"])
def test_member_of_vmapped_run_equals_seed_trained_alone(variant):
  config = tiny_config(variant)
  params, hist = _train(config, [0, 1, 2])
  alone, hist_alone = _train(config, [1])
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(alone)):
    np.testing.assert_allclose(a[1], b[0], rtol=2e-5, atol=2e-6)
  np.testing.assert_allclose(hist[1], hist_alone[0], rtol=1e-5)
  # ...and different seeds really are different runs (own init, data order and noise).
  assert not np.allclose(hist[0], hist[1])


@pytest.mark.parametrize("variant", ["vanilla", "conv"])
def test_member_loop_map_equals_vmap(variant):
  config = tiny_config(variant)
  mapped, hist_map = _train(config, [0, 1], epochs=1, member_loop="map")
  vmapped, hist_vmap = _train(config, [0, 1], epochs=1, member_loop="vmap")
  for a, b in zip(jax.tree.leaves(mapped), jax.tree.leaves(vmapped)):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
  np.testing.assert_allclose(hist_map, hist_vmap, rtol=1e-5)


def test_bce_compiler_option_is_used_on_cpu_and_changes_no_result(monkeypatch):
  """The XLA:CPU option for BCE objectives (train.compiler_options) is a speed choice only."""
  vae, vanilla = tiny_config("vae"), tiny_config("vanilla")
  assert train.compiler_options(vanilla) == {}
  assert train.compiler_options(vae) == train.CPU_BCE_COMPILER_OPTIONS  # jax here is the CPU backend
  with_option, hist = _train(vae, [0, 1], epochs=1, member_loop="map")
  monkeypatch.setenv("JAXAE_XLA_DEFAULTS", "1")
  assert train.compiler_options(vae) == {}
  defaults, hist_defaults = _train(vae, [0, 1], epochs=1, member_loop="map")
  for a, b in zip(jax.tree.leaves(with_option), jax.tree.leaves(defaults)):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
  np.testing.assert_allclose(hist, hist_defaults, rtol=1e-5)


def test_steps_per_call_does_not_change_results():
  config = tiny_config()
  scanned, _ = _train(config, [0, 1], epochs=1)
  config.train.steps_per_call = 1
  stepped, _ = _train(config, [0, 1], epochs=1)
  for a, b in zip(jax.tree.leaves(scanned), jax.tree.leaves(stepped)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["vanilla", "denoising", "sparse", "contractive", "vae", "conv", "supervised"])
def test_every_config_trains_end_to_end(name, tmp_path):
  config = tiny_config(name)
  summary = train_and_evaluate(config, str(tmp_path))
  for f in ("config.json", "metrics.jsonl", "summary.json", "members.json"):
    assert os.path.exists(tmp_path / f), f
  assert os.listdir(tmp_path / "checkpoints")
  records = report.read_records(str(tmp_path))
  assert [r["epoch"] for r in records] == [1, 2]
  assert all(len(r["train"]["loss"]) == 2 for r in records)
  first, last = np.mean(records[0]["train"]["loss"]), np.mean(records[-1]["train"]["loss"])
  assert last < first, f"{name}: loss did not decrease ({first} -> {last})"
  entry = summary["settings"][0]
  assert entry["healthy_seeds"] == [0, 1]
  assert np.isclose(entry["eval"]["loss"]["mean"], np.mean(records[-1]["eval"]["loss"]))


def test_divergence_is_reported_and_other_seeds_keep_training(tmp_path):
  # One learning rate diverges, the other trains: both in one program.
  config = tiny_config(optimizer__name="sgd", model__output="identity",
                       sweep='{"optimizer.learning_rate": [0.05, 1e4]}')
  summary = train_and_evaluate(config, str(tmp_path))
  bad = {(d["setting"]["optimizer.learning_rate"], d["seed"]) for d in summary["diverged"]}
  assert bad == {(1e4, 0), (1e4, 1)}
  good, diverged = summary["settings"]
  assert good["healthy_seeds"] == [0, 1] and np.isfinite(good["train"]["loss"]["mean"])
  assert diverged["healthy_seeds"] == [] and diverged["train"]["loss"]["mean"] is None
  json.loads((tmp_path / "summary.json").read_text())  # strict JSON despite NaNs


def test_cli_exit_status_is_nonzero_only_when_every_seed_diverged(tmp_path):
  out = _cli("--config=configs/vanilla.py", f"--workdir={tmp_path}", *TINY, "--config.optimizer.name=sgd",
             "--config.model.output=identity", "--config.optimizer.learning_rate=1e4")
  assert out.returncode == 1 and "every member diverged" in out.stderr
  assert "seed 0" in out.stdout and "diverged" in out.stdout


def _cli(*args, cwd=ROOT):
  return subprocess.run([sys.executable, "-m", "jaxae.main", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


TINY = ["--config.num_seeds=2", "--config.train.epochs=2", "--config.data.max_train=256", "--config.data.max_eval=64",
        "--config.train.batch_size=32", "--config.model.hidden=(64,32)", "--config.train.figures=False"]


def test_cli_runs_with_overrides_and_resumes(tmp_path):
  out = _cli("--config=configs/vae.py", f"--workdir={tmp_path}", *TINY, "--config.model.latent_dim=2")
  assert out.returncode == 0, out.stderr
  assert "mean±std" in out.stdout and "epoch   2/2" in out.stdout
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["model"]["latent_dim"] == 2 and saved["variant"] == "vae"
  out = _cli("--config=configs/vae.py", f"--workdir={tmp_path}", *TINY, "--config.model.latent_dim=2",
             "--config.train.epochs=3")
  assert out.returncode == 0, out.stderr
  assert "resuming" in out.stdout and "epoch   3/3" in out.stdout and "epoch   1/" not in out.stdout


@pytest.mark.parametrize("args, message", [
    (["--config.variant=wasserstein"], "variant='wasserstein' is not one of"),
    (["--config.optimizer.name=adagrad"], "optimizer.name='adagrad'"),
    (["--config.model.latent_dim=-1"], "model.latent_dim=-1 must be a non-negative integer"),
    (["--config.model.latent_dim=0"], "model.latent_dim=0 (a spatial code) needs the built-in model.backbone='conv'"),
    (["--config.train.batch_size=100000"], "batch_size=100000 is larger than the training set"),
    (["--config.data.source=idx:/nonexistent", "--config.data.split=test"], "no t10k-images"),
    (["--config.train.steps_per_call=3"], "steps_per_call=3 must divide the 8 steps"),
    (["--config.sweep={\"loss.nope\": [1]}"], "unknown config key 'loss.nope'"),
])
def test_bad_input_is_one_line_error_before_training(tmp_path, args, message):
  out = _cli("--config=configs/vanilla.py", f"--workdir={tmp_path}", *TINY, *args)
  assert out.returncode == 2
  assert message in out.stderr and "Traceback" not in out.stderr
  assert not os.path.exists(tmp_path / "checkpoints")


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd", "rmsprop"])
def test_optimizers_match_optax_and_take_per_member_learning_rates(name):
  import optax

  from jaxae import optim

  config = tiny_config(optimizer__name=name, optimizer__learning_rate=0.1, optimizer__weight_decay=0.01)
  tx = optim.make_optimizer(config, steps_per_epoch=10)
  params = {"w": np.array([1.0, -2.0], np.float32)}
  grads = {"w": np.array([0.5, 0.25], np.float32)}
  reference = {
      "adam": optax.chain(optax.add_decayed_weights(0.01), optax.adam(0.1)),
      "adamw": optax.adamw(0.1, weight_decay=0.01),
      "sgd": optax.chain(optax.add_decayed_weights(0.01), optax.sgd(0.1, momentum=0.9)),
      "rmsprop": optax.chain(optax.add_decayed_weights(0.01), optax.rmsprop(0.1, momentum=0.9)),
  }[name]
  got, _ = tx.update(grads, tx.init(params), params)
  want, _ = reference.update(grads, reference.init(params), params)
  np.testing.assert_allclose(got["w"], want["w"], rtol=1e-6)
  # A member's own learning rate (a traced value under vmap) scales its update.
  state = optim.set_hyperparams(tx.init(params), 0.02, 0.01)
  half, _ = tx.update(grads, state, params)
  if name != "adamw":
    np.testing.assert_allclose(half["w"], 0.2 * np.asarray(got["w"]), rtol=1e-5)


def test_cosine_schedule_decays_to_zero():
  from jaxae import optim

  config = tiny_config(optimizer__schedule="cosine", train__epochs=2)
  multiplier = optim.schedule_multiplier(config, steps_per_epoch=10)
  assert float(multiplier(0)) == pytest.approx(1.0)
  assert float(multiplier(10)) == pytest.approx(0.5, abs=1e-6)
  assert float(multiplier(20)) == pytest.approx(0.0, abs=1e-6)
