"""Checkpoint guarantees (issue 3): exact resume, kill at any moment, polite stop, config safety,
retention, reuse with load_run, corruption. Each guarantee is a test that fails when it breaks.

In-process runs share one reference workdir (module fixture); the kill / signal tests use real
`python -m jaxae.main` subprocesses (7 of them) because only a real process can be SIGKILLed mid-save.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import ROOT, run_main, tiny_config
import jaxae
from jaxae import analysis, checkpoints, configs, report, train
from jaxae import workdir as workdir_lib
from jaxae import data as data_lib
from jaxae import run as run_lib

SPE = 8  # 256 training images / batch 32
# Dropout too: its keys, like the corruption's, must be pure functions of (seed, step) for resume to be exact.
BASE = dict(num_seeds=3, train__steps_per_call=2, train__epochs=5, checkpoint__every_epochs=2, checkpoint__keep=2,
            model__dropout=0.1)


def cfg(**overrides):
  return tiny_config("denoising", **{**BASE, **overrides})


def raw_checkpoint(workdir, step=None):
  """(step, params, state item) of a workdir's checkpoint as numpy, read without any target."""
  mngr = checkpoints.manager(workdir, read_only=True)
  step = mngr.latest_step() if step is None else step
  r = mngr.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(),
                                                  state=ocp.args.StandardRestore()))
  mngr.close()
  return step, jax.device_get(r.params), jax.device_get(r.state)


def records(workdir):
  return [{k: v for k, v in r.items() if k != "seconds"} for r in report.read_records(workdir)]


def assert_trees_equal(a, b):
  la, ta = jax.tree.flatten(a)
  lb, tb = jax.tree.flatten(b)
  assert ta == tb
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # bit-identical, not allclose


def assert_same_run(workdir, ref):
  s1, p1, st1 = raw_checkpoint(workdir)
  s2, p2, st2 = raw_checkpoint(ref)
  assert s1 == s2
  assert_trees_equal(p1, p2)
  assert_trees_equal(st1, st2)
  assert records(workdir) == records(ref)


def cli_args(config_file="denoising", **overrides):
  """Command-line overrides that rebuild `cfg(**overrides)` from configs/<config_file>.py."""
  c = tiny_config(config_file, **{**BASE, **overrides})
  keys = ["num_seeds", "train.epochs", "train.batch_size", "train.progress", "train.figures", "train.steps_per_call",
          "train.eval_every", "data.max_train", "data.max_eval", "model.hidden", "model.latent_dim",
          "model.conv_channels", "model.dropout", "loss.topk", "checkpoint.every_epochs", "checkpoint.keep"]
  out = [f"--config={ROOT / 'configs' / (config_file + '.py')}"]
  for k in keys:
    v = configs.get(c, k)
    out.append(f"--config.{k}={'(' + ','.join(map(str, v)) + ',)' if isinstance(v, tuple) else v}")
  return out


def cli(monkeypatch, capsys, workdir, *args):
  """Runs jaxae.main.main in this process (flags re-parsed); returns (exit code, stdout, stderr)."""
  return run_main(monkeypatch, capsys, f"--workdir={workdir}", *args)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An uninterrupted 5-epoch run (3 seeds); returns (workdir, steps saved)."""
  wd = tmp_path_factory.mktemp("ref")
  (wd / "notes.txt").write_text("mine")
  saved = []
  real_save = checkpoints.save
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(checkpoints, "save", lambda m, s, meta: (saved.append(int(s.step[0])), real_save(m, s, meta)))
    run_lib.train_and_evaluate(cfg(), str(wd))
  return wd, saved


def test_retention_every_m_epochs_and_at_end_keeps_last_k(reference):
  wd, saved = reference
  assert saved == [2 * SPE, 4 * SPE, 5 * SPE]  # every 2 epochs, and at the end
  assert checkpoints.manager(str(wd), read_only=True).all_steps() == [4 * SPE, 5 * SPE]  # keep=2
  assert (wd / "notes.txt").read_text() == "mine"
  assert sorted(os.listdir(wd / "checkpoints")) == ["32", "40"]


def test_resume_after_k_epochs_is_bit_identical(reference, tmp_path):
  run_lib.train_and_evaluate(cfg(train__epochs=3), str(tmp_path))
  assert [r["epoch"] for r in records(tmp_path)] == [1, 2, 3]
  # More epochs and another checkpoint frequency are safe changes.
  run_lib.train_and_evaluate(cfg(checkpoint__every_epochs=1), str(tmp_path))
  assert_same_run(tmp_path, reference[0])


def test_stop_mid_epoch_then_resume_is_bit_identical(reference, tmp_path, monkeypatch):
  calls = []
  real_run_epoch = train.run_epoch

  def run_epoch(program, state, x, y, stop):
    def stop_soon():
      calls.append(1)
      if len(calls) == 5:  # after the 2nd chunk of epoch 2: a real SIGTERM through the handler
        signal.raise_signal(signal.SIGTERM)
      return stop()
    return real_run_epoch(program, state, x, y, stop_soon)

  monkeypatch.setattr(train, "run_epoch", run_epoch)
  out = run_lib.train_and_evaluate(cfg(), str(tmp_path))
  assert out == {"interrupted": "SIGTERM", "step": SPE + 4, "epoch": 1}
  assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handler restored
  _, _, state = raw_checkpoint(tmp_path)
  assert np.all(state["metric_sums"]["loss"] > 0)  # the partial epoch's sums are in the checkpoint
  monkeypatch.setattr(train, "run_epoch", real_run_epoch)
  run_lib.train_and_evaluate(cfg(), str(tmp_path))
  assert_same_run(tmp_path, reference[0])


def test_load_run_every_seed_one_seed_and_reconstructs(reference, tmp_path):
  wd = reference[0]
  _, params, _ = raw_checkpoint(wd)
  run = jaxae.load_run(str(wd))
  assert [m["seed"] for m in run.members] == [0, 1, 2] and run.epoch == 5 and run.step == 5 * SPE
  assert_trees_equal(jax.device_get(run.params), params)
  one = jaxae.load_run(str(wd), seed=1, setting=0)
  assert_trees_equal(jax.device_get(one.params), jax.tree.map(lambda a: a[1], params))
  with pytest.raises(KeyError):
    jaxae.load_run(str(wd), seed=7)
  # No optimizer state is read: a copy without the state item still loads.
  shutil.copytree(wd, tmp_path / "w")
  shutil.rmtree(tmp_path / "w" / "checkpoints" / "40" / "state")
  two = jaxae.load_run(str(tmp_path / "w"), seed=2)
  assert_trees_equal(jax.device_get(two.params), jax.tree.map(lambda a: a[2], params))
  # The model reconstructs held-out images with them, better than the untrained model.
  images = data_lib.load(run.config.data).eval.x[:32]
  x = data_lib.to_float(images).reshape(len(images), -1)
  mse = lambda p: float(np.mean((analysis.reconstruct(run.model, p, images, run.config).reshape(len(images), -1) - x) ** 2))
  init = run.model.init(jax.random.key(0), np.zeros((1, *images.shape[1:]), np.float32))
  assert mse(one.params) < 0.9 * mse(init)


def test_changed_config_is_refused_naming_the_keys(reference, monkeypatch, capsys):
  wd = reference[0]
  before = (wd / "config.json").read_text()
  for args, key in [(cli_args(model__hidden=(64, 16)), "model.hidden"), (cli_args(num_seeds=2), "num_seeds"),
                    (cli_args("vanilla"), "variant"), (cli_args(data__max_train=320), "data.max_train")]:
    rc, out, err = cli(monkeypatch, capsys, wd, *args)
    assert rc == 2, (key, out, err)
    assert len(err.strip().splitlines()) == 1 and key in err and "--fresh" in err, err
  assert (wd / "config.json").read_text() == before  # nothing written
  assert checkpoints.manager(str(wd), read_only=True).all_steps() == [32, 40]


def test_epochs_change_with_a_decaying_schedule_is_refused():
  flat = lambda **kw: configs.flatten(cfg(**kw))
  assert workdir_lib.incompatible_keys(flat(), flat(train__epochs=9, train__eval_every=3)) == []
  assert workdir_lib.incompatible_keys(flat(optimizer__schedule="cosine"),
                                       flat(optimizer__schedule="cosine", train__epochs=9)) == ["train.epochs"]


def test_safe_changes_resume_and_fresh_keeps_user_files(reference, tmp_path, monkeypatch, capsys):
  wd = tmp_path / "w"
  shutil.copytree(reference[0], wd)
  rc, out, err = cli(monkeypatch, capsys, wd, *cli_args(train__epochs=6, train__eval_every=2,
                                                        checkpoint__every_epochs=3, checkpoint__keep=3))
  assert rc == 0, err
  assert "resuming" in out and [r["epoch"] for r in records(wd)] == [1, 2, 3, 4, 5, 6]
  assert checkpoints.manager(str(wd), read_only=True).all_steps() == [32, 40, 48]
  (wd / "mine").mkdir()
  (wd / "mine" / "data.txt").write_text("keep")
  # Another seed would be refused without --fresh (same shapes: no new compilation in this test).
  rc, out, err = cli(monkeypatch, capsys, wd, "--fresh", *cli_args(train__epochs=1), "--config.seed=5")
  assert rc == 0, err
  assert "resuming" not in out
  assert (wd / "notes.txt").read_text() == "mine" and (wd / "mine" / "data.txt").read_text() == "keep"
  assert checkpoints.manager(str(wd), read_only=True).all_steps() == [SPE]
  assert [r["epoch"] for r in records(wd)] == [1]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # orbax's aborted reads
def test_damaged_checkpoint_names_step_and_falls_back(reference, tmp_path, monkeypatch, capsys):
  wd = tmp_path / "w"
  shutil.copytree(reference[0], wd)
  step_dir = wd / "checkpoints" / "40"
  data_files = sorted((step_dir / "params").rglob("ocdbt.process_0/d/*"), key=lambda p: -p.stat().st_size)
  with open(data_files[0], "r+b") as f:  # truncate the largest params file
    f.truncate(data_files[0].stat().st_size // 2)
  rc, out, err = cli(monkeypatch, capsys, wd, *cli_args())
  assert rc == 2
  assert len(err.strip().splitlines()) == 1 and "step 40" in err and str(step_dir) in err, err
  assert "damaged" in err and "--on_corrupt=previous" in err, err
  rc, out, err = cli(monkeypatch, capsys, wd, "--on_corrupt=previous", *cli_args())
  assert rc == 0, err
  assert "step 32" in out
  assert_same_run(wd, reference[0])  # epoch 5 trained again from step 32: the same result

  # A missing item.
  shutil.rmtree(wd / "checkpoints" / "40" / "state")
  rc, out, err = cli(monkeypatch, capsys, wd, *cli_args())
  assert rc == 2 and "step 40" in err and "damaged" in err, err


def _abstract(config):
  data = data_lib.load(config.data)
  return train.build(config, data.train.x.shape[1:], len(data.train)).abstract_state()


def test_state_tree_from_other_code_is_a_mismatch_not_damage(reference):
  mngr = checkpoints.manager(str(reference[0]), read_only=True)
  abstract = _abstract(cfg())
  state, meta = checkpoints.restore(mngr, 40, abstract)  # the matching target restores
  assert meta["epoch"] == 5
  extra = abstract.replace(metric_sums={**abstract.metric_sums, "new_metric": abstract.metric_sums["loss"]})
  with pytest.raises(checkpoints.CheckpointError, match=r"step 40 .*does not match") as e:
    checkpoints.restore(mngr, 40, extra)
  assert "damaged" not in str(e.value) and "new_metric" in str(e.value)


def _as_older_jaxae(workdir, step, name):
  """Rewrites checkpoint `step` as a jaxae predating hyperparameter `name` wrote it: no `name` in the state's
  hparams, in the optimizer's hyperparams or in the saved config; checksums recomputed as that jaxae did."""
  mngr = checkpoints.manager(str(workdir))
  state, meta = checkpoints.restore(mngr, step, _abstract(cfg()))
  item = checkpoints._state_item(state)
  item["hparams"] = {k: v for k, v in item["hparams"].items() if k != name}
  opt = item["opt_state"]
  item["opt_state"] = opt._replace(hyperparams={k: v for k, v in opt.hyperparams.items() if k != name})
  del meta["config"]["optimizer"][name]
  meta = {k: v for k, v in meta.items() if k != "checksums"}
  meta["checksums"] = {"algorithm": checkpoints.CHECKSUM_ALGORITHM,
                       **checkpoints.checksums({"params": state.params, "state": item})}
  meta["checksums"]["meta"] = checkpoints.meta_checksum(meta)
  for s in mngr.all_steps():
    mngr.delete(s)
  mngr.save(step, force=True, args=ocp.args.Composite(params=ocp.args.StandardSave(state.params),
                                                      state=ocp.args.StandardSave(item),
                                                      meta=ocp.args.JsonSave(meta)))
  mngr.wait_until_finished()
  mngr.close()
  stored = checkpoints._leaves(checkpoints.manager(str(workdir), read_only=True).item_metadata(step)["state"].tree)
  assert not any(path.endswith("/" + name) for path in stored) and "hparams/learning_rate" in stored


def test_checkpoint_of_an_older_jaxae_resumes_bit_identically(reference, tmp_path, monkeypatch, capsys):
  # A checkpoint written before optimizer.decay_fraction existed (issue 23: a 33-pass IWAE run was stranded).
  wd = tmp_path / "w"
  shutil.copytree(reference[0], wd)
  _as_older_jaxae(wd, 4 * SPE, "decay_fraction")
  rc, out, err = cli(monkeypatch, capsys, wd, *cli_args(), "--config.optimizer.decay_fraction=0.5")
  assert rc == 2 and "optimizer.decay_fraction: 0.0 -> 0.5" in err, err  # the older run had none: not resumable
  rc, out, err = cli(monkeypatch, capsys, wd, *cli_args())
  assert rc == 0, err
  assert "predates the hyperparameter(s) decay_fraction" in out and "from step 32" in out, out
  assert_same_run(wd, reference[0])  # epoch 5 from the older checkpoint: the reference's bytes


def test_nothing_loads_pickles():
  pattern = re.compile(r"import pickle|\bpickle\.|cloudpickle|\bdill\b|allow_pickle\s*=\s*True|torch\.load|joblib\.load")
  assert pattern.search("x = pickle.loads(b)") and pattern.search("np.load(p, allow_pickle=True)")  # the detector works
  lines = [(p, i, line) for p in (ROOT / "src" / "jaxae").rglob("*.py") for i, line in enumerate(p.read_text().splitlines(), 1)]
  assert [f"{p}:{i}" for p, i, line in lines if pattern.search(line)] == []
  # Every np.load (user data: npy / npz sources) refuses pickles explicitly.
  loads = [(p, i, line) for p, i, line in lines if re.search(r"(?<!`)np\.load\(", line)]  # code, not `docs`
  assert loads and all("allow_pickle=False" in line for _, _, line in loads), loads


# ---------------------------------------------------------------- real processes: SIGKILL / SIGTERM / SIGINT

PROC_ARGS = ["--config.num_seeds=2", "--config.train.epochs=16", "--config.train.batch_size=32",
             "--config.train.steps_per_call=1", "--config.data.max_train=256", "--config.data.max_eval=64",
             "--config.model.hidden=(64,32)", "--config.model.latent_dim=8", "--config.train.figures=False",
             "--config.checkpoint.every_epochs=1", "--config.checkpoint.keep=3"]


def _start(workdir, cache):
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(cache),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
             PYTHONPATH=str(ROOT))
  return subprocess.Popen([sys.executable, "-m", "jaxae.main", f"--config={ROOT / 'configs' / 'denoising.py'}",
                           f"--workdir={workdir}", *PROC_ARGS], cwd=ROOT, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _entries(workdir):
  try:
    return os.listdir(os.path.join(workdir, "checkpoints"))
  except FileNotFoundError:
    return []


def _complete(workdir):
  return {int(n) for n in _entries(workdir) if n.isdigit()}


def _wait_for(proc, cond, timeout=60.0):
  end = time.monotonic() + timeout
  while time.monotonic() < end and proc.poll() is None:
    if cond():
      return True
    time.sleep(0.0005)
  return False


def test_kill_at_any_moment_and_polite_stop_resume_identically(tmp_path):
  ref, wd, cache = tmp_path / "ref", tmp_path / "w", tmp_path / "cache"
  rng = random.Random(0)
  ref_proc = _start(ref, cache)  # the uninterrupted run, alongside the interrupted ones

  kills = 0
  # 1. SIGKILL as soon as a checkpoint's temporary directory appears (during the save), twice.
  for _ in range(2):
    before = _complete(wd)
    proc = _start(wd, cache)
    hit = _wait_for(proc, lambda: any("tmp" in n for n in _entries(wd)) and _complete(wd) == before)
    proc.kill()
    proc.wait()
    kills += hit
  # 2. SIGKILL at a random moment after some checkpoint completed.
  before = _complete(wd)
  proc = _start(wd, cache)
  _wait_for(proc, lambda: _complete(wd) - before)
  time.sleep(rng.uniform(0.0, 0.3))
  proc.kill()
  proc.wait()
  assert kills >= 1, "no kill landed during a save"

  # 3. Polite stops: finish the step, save, exit 128 + signum with a hint how to resume.
  for sig, code in [(signal.SIGTERM, 143), (signal.SIGINT, 130)]:
    before = max(_complete(wd) | {0})
    proc = _start(wd, cache)
    assert _wait_for(proc, lambda: max(_complete(wd) | {0}) > before), proc.stderr.read()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, (out, err)
    assert "resum" in out.lower() and "checkpoint saved" in out, out
    stopped_at = int(re.search(r"stopped at step (\d+)", out).group(1))
    assert stopped_at == max(_complete(wd)), out  # the state at the stop is saved, nothing is lost

  proc = _start(wd, cache)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err
  assert ref_proc.wait(timeout=120) == 0, ref_proc.stderr.read()
  assert re.search(r"resuming .* from step \d+", out)
  assert not [n for n in _entries(wd) if not n.isdigit()]  # no half-written debris left
  assert_same_run(wd, ref)
