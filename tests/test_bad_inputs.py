"""Every bad input a user can give, as a user gives it: one line of error, the right exit status, and the
workdir's prior contents unchanged byte for byte when the run is refused (issue 12).

Cases run `jaxae.main.cli` in this process (`conftest.run_main`) against copies of one tiny finished run
(module fixture), so the module stays fast; the lock and signals are also tested with real processes.
Each case fixes a class of problem: configs and their files, values, sweeps, data, workdir states,
crafted files (metrics, metadata, checksums), the environment (disk full, read-only), signals.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, run_main

ARGS = ["--config=vanilla", "--config.num_seeds=2", "--config.train.epochs=2", "--config.train.batch_size=32",
        "--config.data.max_train=256", "--config.data.max_eval=64", "--config.model.hidden=(64,32)",
        "--config.model.latent_dim=8", "--config.train.figures=False", "--config.train.progress=False",
        "--config.checkpoint.every_epochs=1", "--config.checkpoint.keep=2"]
STEPS = [8, 16]  # 256 images / batch 32 = 8 steps per epoch; a checkpoint after each of the 2 epochs


def snapshot(*roots) -> dict:
  """{path: bytes | ('link', target) | 'dir'} of every entry under `roots` (symlinks not followed)."""
  out = {}
  for root in map(str, roots):
    if not os.path.lexists(root):
      out[root] = None
      continue
    if not os.path.isdir(root) or os.path.islink(root):
      out[root] = ("link", os.readlink(root)) if os.path.islink(root) else open(root, "rb").read()
      continue
    for base, dirs, names in os.walk(root):
      out[base] = "dir"
      for n in dirs + names:
        p = os.path.join(base, n)
        if os.path.islink(p):
          out[p] = ("link", os.readlink(p))
        elif os.path.isfile(p):
          out[p] = open(p, "rb").read()
  return out


@pytest.fixture(scope="module")
def done(tmp_path_factory):
  """A finished tiny run (vanilla, 2 seeds, 2 epochs, checkpoints at steps 8 and 16) and its figures."""
  from jaxae import main

  wd = tmp_path_factory.mktemp("done") / "run"
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(sys, "argv", ["jaxae"])
    mp.setattr(sys, "path", list(sys.path))
    assert main.cli(["jaxae", f"--workdir={wd}", *ARGS, "--config.train.figures=True"]) == 0
  return wd


@pytest.fixture
def wd(done, tmp_path):
  """A copy of the finished run, to damage."""
  path = tmp_path / "w"
  shutil.copytree(done, path, symlinks=True)
  return path


def one_line(err: str) -> str:
  lines = [line for line in err.strip().splitlines() if line.strip()]
  assert len(lines) == 1, err
  assert lines[0].startswith("error: ") and "Traceback" not in err, err
  return lines[0]


def refused(monkeypatch, capsys, workdir, args, status, *needles, watch=()):
  """Runs the CLI; asserts the status, one error line containing every needle, and nothing changed."""
  before = snapshot(workdir, *watch)
  rc, out, err = run_main(monkeypatch, capsys, *args)
  line = one_line(err)
  assert rc == status, (rc, out, err)
  for needle in needles:
    assert needle in line, (needle, line)
  assert snapshot(workdir, *watch) == before
  return line


# ------------------------------------------------------------------ 1. command line, config files, values

def _write(path, text):
  path.write_text(text)
  return str(path)


CONFIG_FILES = {
    "syntax": ("def get_config(:\n", "SyntaxError"),
    "raises": ("from jaxae import configs\ndef get_config():\n  raise RuntimeError('no GPU here')\n", "no GPU here"),
    "no_get_config": ("x = 1\n", "defines no get_config"),
    "returns_dict": ("def get_config():\n  return {'variant': 'vae'}\n", "ml_collections.ConfigDict"),
    "missing_import": ("import not_a_module_jaxae\n", "not_a_module_jaxae"),
    "unknown_key": ("from jaxae import configs\ndef get_config():\n  c = configs.base_config()\n  c.trian = 1\n"
                    "  return c\n", "unknown config key 'trian'"),
    "bad_type": ("from jaxae import configs\ndef get_config():\n  c = configs.base_config()\n  c.model.latent_dim = 2.5\n"
                 "  return c\n", "latent_dim"),
}


@pytest.mark.parametrize("name", list(CONFIG_FILES))
def test_config_file_that_does_not_load(name, tmp_path, monkeypatch, capsys):
  text, needle = CONFIG_FILES[name]
  path = _write(tmp_path / f"{name}.py", text)
  out = tmp_path / "out"
  refused(monkeypatch, capsys, out, [f"--config={path}", f"--workdir={out}"], 2, needle)


@pytest.mark.parametrize("args, needle", [
    (["--config=nope.py"], "'nope.py': no such file"),
    (["--config=" + str(ROOT / "configs")], "is a directory"),
    ([], "--config is required"),
    (["--config=keras_dense:bogus"], "the settings are 'supervised' and 'denoising'"),
    (["--config=vanilla:extra"], "TypeError"),
    (["--config=vanilla", "--config.nope=1"], "unknown config key 'nope'"),
    (["--config=vanilla", "--config.model.latnet_dim=2"], "unknown config key 'model.latnet_dim'"),
    (["--config=vanilla", "--config.modle.latent_dim=2"], "unknown config key 'modle'"),
    (["--config=vanilla", "--config.train.epochs=abc"], "--config.train.epochs='abc' must be an integer"),
    (["--config=vanilla", "--config.train.epochs=2.5"], "--config.train.epochs='2.5' must be an integer"),
    (["--config=vanilla", "--config.optimizer.learning_rate=fast"], "optimizer.learning_rate='fast' must be a number"),
    (["--config=vanilla", "--config.train.figures=maybe"], "train.figures='maybe' must be true or false"),
    (["--config=vanilla", "--config.model.hidden=(64,32"], "model.hidden='(64,32' must be a tuple"),
    (["--config=vanilla", "--config.model=3"], "'model' is a group of keys"),
    (["--config=vanilla", "--config.sweep"], "--config.sweep needs a value"),
    (["--config=vanilla", "--wrkdir=x"], "Unknown command line flag 'wrkdir'"),
    (["--config=vanilla", "--on_corrupt=sometimes"], "on_corrupt"),
    (["--config=vanilla", "positional"], "unexpected arguments ['positional']"),
])
def test_command_line_typos(args, needle, tmp_path, monkeypatch, capsys):
  out = tmp_path / "out"
  refused(monkeypatch, capsys, out, [*args, f"--workdir={out}"], 2, needle)


def test_missing_workdir_flag(monkeypatch, capsys):
  rc, _, err = run_main(monkeypatch, capsys, "--config=vanilla")
  assert rc == 2 and "--workdir is required" in one_line(err)


@pytest.mark.parametrize("args, needle", [
    (["--config.optimizer.learning_rate=-1"], "optimizer.learning_rate=-1.0 must be a non-negative number"),
    (["--config.optimizer.learning_rate=nan"], "optimizer.learning_rate=nan must be a finite number"),
    (["--config.optimizer.weight_decay=inf"], "optimizer.weight_decay=inf must be a finite number"),
    (["--config.optimizer.momentum=1.5"], "optimizer.momentum=1.5 must be in [0, 1)"),
    (["--config.model.latent_dim=-1"], "model.latent_dim=-1 must be a non-negative integer"),
    (["--config.model.hidden=()"], "model.hidden=() must be a non-empty tuple"),
    (["--config.model.dropout=1"], "model.dropout=1.0 must be a rate in [0, 1)"),
    (["--config.variant=wasserstein"], "variant='wasserstein' is not one of"),
    (["--config.train.batch_size=100000"], "train.batch_size=100000 is larger than the training set"),
    (["--config.train.steps_per_call=3"], "train.steps_per_call=3 must divide the 8 steps"),
    (["--config.model.latent_dim=1000000000"], "largest array"),
    (["--config.num_seeds=64", "--config.model.hidden=(1000000,1000000)"], "per device"),
])
def test_values_refused_before_anything_is_written(args, needle, wd, monkeypatch, capsys):
  """The workdir already holds a run: a refused value must not touch it either."""
  refused(monkeypatch, capsys, wd, [f"--workdir={wd}", *ARGS, *args], 2, needle)


def test_loss_weight_of_the_variant_must_be_finite(tmp_path, monkeypatch, capsys):
  out = tmp_path / "out"
  refused(monkeypatch, capsys, out, [f"--workdir={out}", "--config=vae", "--config.loss.beta=inf"], 2,
          "loss.beta=inf must be a finite number")


# ------------------------------------------------------------------ 2. sweeps

@pytest.mark.parametrize("sweep, needle", [
    ('{"optimizer.learning_rate": [1e-3, -1e-3]}', "sweep setting {'optimizer.learning_rate': -0.001}"),
    ('{"optimizer.learning_rate": [NaN]}', "must be a finite number"),
    ('{"model.latent_dim": ["big"]}', "model.latent_dim='big' must be a int"),
    ('{"optimizer.learning_rate": [1e-3, 0.001]}', "lists a value twice"),
    ('{"optimizer.learning_rate": []}', "must be a non-empty list"),
    ('{"optimizer.learning_rat": [1]}', "unknown config key 'optimizer.learning_rat'"),
    ('{"seed": [1, 2]}', "sweep key 'seed' cannot be swept"),
    ('{"loss.beta": [1, 2]}', "has no effect on variant 'vanilla'"),
    ('[1, 2]', "must be a non-empty JSON object"),
    ('{"optimizer.learning_rate": [1e-3,', "is not a JSON object"),
])
def test_bad_sweeps(sweep, needle, wd, monkeypatch, capsys):
  refused(monkeypatch, capsys, wd, [f"--workdir={wd}", *ARGS, f"--config.sweep={sweep}"], 2, needle)


def test_same_sweep_spelled_differently_resumes(tmp_path, monkeypatch, capsys):
  out = tmp_path / "s"
  args = [f"--workdir={out}", *ARGS, "--config.train.epochs=1", "--config.num_seeds=1"]
  rc, _, err = run_main(monkeypatch, capsys, *args, '--config.sweep={"optimizer.learning_rate": [1e-3, 2E-3]}')
  assert rc == 0, err
  rc, out_text, err = run_main(monkeypatch, capsys, *args, '--config.sweep={"optimizer.learning_rate": [0.001, 0.002]}')
  assert rc == 0 and "resuming" in out_text, err


# ------------------------------------------------------------------ 3. data

@pytest.fixture(scope="module")
def bad_data(tmp_path_factory):
  d = tmp_path_factory.mktemp("data")
  x = np.random.default_rng(0).random((64, 8)).astype(np.float32)
  nan = x.copy()
  nan[5, 3] = np.nan
  np.save(d / "nan.npy", nan)
  np.save(d / "objects.npy", np.array([{"a": 1}] * 4, dtype=object), allow_pickle=True)
  np.savez(d / "lengths.npz", x=x, y=np.zeros(10, np.int32))
  (d / "words.csv").write_text("a,b\n1,x\n2,y\n")
  (d / "empty.csv").write_text("")
  return d


@pytest.mark.parametrize("args, needle", [
    (["--config.data.source=npy:{d}/missing.npy"], "missing.npy"),
    (["--config.data.source=nosuch:{d}/x"], "data.source='nosuch:"),
    (["--config.data.source=npy:{d}/nan.npy"], "NaN or Inf inputs (first in row 5)"),
    (["--config.data.source=npy:{d}/objects.npy"], "objects.npy"),
    (["--config.data.source=npz:{d}/lengths.npz"], "64 inputs but 10 labels"),
    (["--config.data.source=csv:{d}/words.csv"], "words.csv"),
    (["--config.data.source=csv:{d}/empty.csv"], "empty.csv"),
    (["--config.data.labels=labels.npy"], "data.labels='labels.npy' must be '' or 'npy:PATH'"),
])
def test_bad_data(args, needle, bad_data, wd, monkeypatch, capsys):
  args = [a.format(d=bad_data) for a in args]
  refused(monkeypatch, capsys, wd, [f"--workdir={wd}", *ARGS, *args], 2, needle.format(d=bad_data))


# ------------------------------------------------------------------ 4. workdir states

def _edit_json(path, edit):
  value = json.loads(path.read_text())
  edit(value)
  path.write_text(json.dumps(value, indent=1))


def _rewrite_lines(path, edit):
  lines = path.read_text().splitlines()
  path.write_text("\n".join(edit(lines)) + "\n")


def _other_config_json(w):
  _edit_json(w / "config.json", lambda c: c["model"].update(latent_dim=4))


WORKDIR_STATES = {
    # state name: (damage(workdir, outside), extra args, exit status, needles)
    "config_json_of_another_run": (lambda w, o: _other_config_json(w), [], 2,
                                   ["(config.json)", "model.latent_dim: 4 -> 8", "--fresh"]),
    "checkpoints_deleted_config_differs": (lambda w, o: shutil.rmtree(w / "checkpoints"),
                                           ["--config.model.latent_dim=4"], 2, ["(config.json)", "latent_dim: 8 -> 4"]),
    "checkpoint_of_another_config": (lambda w, o: _other_config_json(w), ["--config.model.latent_dim=4"], 2,
                                     ["(checkpoint step 16)", "latent_dim: 8 -> 4"]),
    "metrics_deleted": (lambda w, o: os.remove(w / "metrics.jsonl"), [], 2,
                        ["metrics.jsonl has records up to epoch 0", "epoch 2"]),
    "metrics_cut_back": (lambda w, o: _rewrite_lines(w / "metrics.jsonl", lambda ls: ls[:1]), [], 2,
                         ["records up to epoch 1"]),
    "metrics_interleaved": (lambda w, o: _rewrite_lines(w / "metrics.jsonl", lambda ls: ls + ls[1:]), [], 2,
                            ["metrics.jsonl line 3: epoch 2 where epoch 3 comes next"]),
    "metrics_garbage_line": (lambda w, o: _rewrite_lines(w / "metrics.jsonl", lambda ls: ["{oops"] + ls[1:]), [], 2,
                             ["metrics.jsonl line 1 is not valid JSON"]),
    "metrics_wrong_members": (lambda w, o: _rewrite_lines(w / "metrics.jsonl", lambda ls: [
        json.dumps({**json.loads(ls[0]), "train": {"loss": [1.0]}}), *ls[1:]]), [], 2,
        ["metrics.jsonl line 1: train/loss has 1 values for 2 members"]),
    "metrics_binary": (lambda w, o: (w / "metrics.jsonl").write_bytes(b"\xff\xfe\x00"), [], 2,
                       ["metrics.jsonl line 1 is not text"]),
    "config_json_garbage": (lambda w, o: (w / "config.json").write_text('{"variant": "vanilla",\n  oops'), [], 2,
                            ["config.json line 2 is not valid JSON"]),
    "config_json_a_list": (lambda w, o: (w / "config.json").write_text("[]"), [], 2, ["config.json holds a JSON list"]),
    "members_edited": (lambda w, o: _edit_json(w / "members.json", lambda m: m[1].update(seed=7)), [], 2,
                       ["members.json lists 2 members that differ"]),
    "summary_without_metrics": (lambda w, o: (shutil.rmtree(w / "checkpoints"), os.remove(w / "metrics.jsonl")), [], 2,
                                ["summary.json exists but metrics.jsonl has no record"]),
    "metrics_without_checkpoints": (lambda w, o: shutil.rmtree(w / "checkpoints"), [], 2,
                                    ["metrics.jsonl has 2 epochs but checkpoints/ is missing"]),
    "config_json_is_a_folder": (lambda w, o: (os.remove(w / "config.json"), os.mkdir(w / "config.json")), [], 2,
                                ["config.json is a folder"]),
    "summary_symlink": (lambda w, o: (os.remove(w / "summary.json"), os.symlink(o, w / "summary.json")), [], 2,
                        ["summary.json is a symlink"]),
    "members_symlink": (lambda w, o: (os.remove(w / "members.json"), os.symlink(o, w / "members.json")), [], 2,
                        ["members.json is a symlink"]),
    "tmp_symlink": (lambda w, o: os.symlink(o, w / "config.json.tmp"), [], 2, ["config.json.tmp is a symlink"]),
    "checkpoints_symlink": (lambda w, o: (shutil.move(str(w / "checkpoints"), str(o) + ".ckpt"),
                                          os.symlink(str(o) + ".ckpt", w / "checkpoints")), [], 2,
                            ["checkpoints is a symlink"]),
    "figure_symlink": (lambda w, o: (os.remove(w / "figures" / "loss_curves.png"),
                                     os.symlink(o, w / "figures" / "loss_curves.png")), [], 2,
                       ["loss_curves.png is a symlink"]),
    "lock_symlink": (lambda w, o: os.symlink(o, w / "jaxae.lock"), [], 2, ["jaxae.lock is a symlink"]),
    "fresh_symlinked_checkpoints": (lambda w, o: (shutil.move(str(w / "checkpoints"), str(o) + ".ckpt"),
                                                  os.symlink(str(o) + ".ckpt", w / "checkpoints")), ["--fresh"], 2,
                                    ["checkpoints is a symlink"]),
    "fresh_foreign_figure": (lambda w, o: (w / "figures" / "notes.txt").write_text("mine"), ["--fresh"], 2,
                             ["--fresh would delete", "notes.txt, which jaxae did not write"]),
    "fresh_foreign_checkpoint_file": (lambda w, o: (w / "checkpoints" / "README").write_text("mine"), ["--fresh"], 2,
                                      ["README, which jaxae did not write"]),
    "fresh_foreign_group": (lambda w, o: (w / "groups" / "mine").mkdir(parents=True), ["--fresh"], 2,
                            ["groups/mine, which jaxae did not write"]),
}


@pytest.mark.parametrize("state", list(WORKDIR_STATES))
def test_workdir_states(state, wd, tmp_path, monkeypatch, capsys):
  damage, extra, status, needles = WORKDIR_STATES[state]
  outside = tmp_path / "outside.txt"
  outside.write_text("not jaxae's")
  damage(wd, outside)
  refused(monkeypatch, capsys, wd, [f"--workdir={wd}", *ARGS, *extra], status, *needles,
          watch=[outside, str(outside) + ".ckpt"])


def test_workdir_that_is_a_file(tmp_path, monkeypatch, capsys):
  path = tmp_path / "run"
  path.write_text("my notes")
  refused(monkeypatch, capsys, path, [f"--workdir={path}", *ARGS], 74, "is a file, not a directory")


def test_read_only_workdir(wd, monkeypatch, capsys):
  real = os.access
  monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if mode & os.W_OK else real(p, mode, **kw))
  refused(monkeypatch, capsys, wd, [f"--workdir={wd}", *ARGS, "--config.train.epochs=3"], 74,
          "read-only filesystem or no permission")
  refused(monkeypatch, capsys, wd, [f"--workdir={wd}", *ARGS, "--fresh"], 74, "read-only filesystem or no permission")


def test_busy_workdir_names_the_other_run(wd, monkeypatch, capsys):
  fd = os.open(wd / "jaxae.lock", os.O_RDWR | os.O_CREAT)
  fcntl.flock(fd, fcntl.LOCK_EX)
  os.write(fd, json.dumps({"pid": 4242, "host": "node7", "since": "2026-01-01 00:00:00 UTC"}).encode())
  try:
    refused(monkeypatch, capsys, wd, [f"--workdir={wd}", *ARGS, "--config.train.epochs=3"], 75,
            "is in use by another jaxae run (pid 4242 on host node7, since 2026-01-01 00:00:00 UTC)")
    refused(monkeypatch, capsys, wd, [f"--workdir={wd}", *ARGS, "--fresh"], 75, "in use")
  finally:
    os.close(fd)


def test_refused_run_leaves_no_new_workdir(tmp_path, monkeypatch, capsys):
  out = tmp_path / "a" / "b"
  rc, _, err = run_main(monkeypatch, capsys, f"--workdir={out}", *ARGS, "--config.model.latent_dim=1000000000")
  assert rc == 2 and not (tmp_path / "a").exists(), err


# ------------------------------------------------------------------ 5. crafted checkpoint files

def _meta(w, step=16):
  return w / "checkpoints" / str(step) / "meta" / "metadata"


def _flip_array_checksum(meta):
  """One bit of member 0's checksum of the first params array, the metadata's own checksum kept valid: what
  verification sees when that array's bytes changed on disk."""
  from jaxae import checkpoints

  sums = meta["checksums"]["params"]
  first = next(iter(sums))
  sums[first] = [sums[first][0] ^ 1, *sums[first][1:]]
  meta["checksums"]["meta"] = checkpoints.meta_checksum(meta)


CRAFTED = {
    "meta_epoch_text": (lambda w: _edit_json(_meta(w), lambda m: m.update(epoch="two")), ["'epoch' is 'two'"]),
    "meta_epoch_changed": (lambda w: _edit_json(_meta(w), lambda m: m.update(epoch=1)),
                           ["does not match the checksum saved with it"]),
    "meta_members_missing": (lambda w: _edit_json(_meta(w), lambda m: m.pop("members")), ["'members' is not a list"]),
    "meta_step_moved": (lambda w: _edit_json(_meta(w), lambda m: m.update(step=8)), ["'step' is 8 in the folder of step 16"]),
    "meta_not_json": (lambda w: _meta(w).write_text("{"), ["damaged or incomplete (JSONDecodeError"]),
    "array_checksum_edited": (lambda w: _edit_json(_meta(w), _flip_array_checksum),
                              ["do not match the checksum saved with them", "(member 0)"]),
}


@pytest.mark.parametrize("name", list(CRAFTED))
def test_crafted_checkpoint_files_are_damage(name, wd, monkeypatch, capsys):
  damage, needles = CRAFTED[name]
  damage(wd)
  refused(monkeypatch, capsys, wd, [f"--workdir={wd}", *ARGS, "--config.train.epochs=3"], 2,
          "checkpoint step 16", "damaged", *needles)
  # --on_corrupt=previous resumes from step 8 (and deletes the damaged step 16)
  rc, out, err = run_main(monkeypatch, capsys, f"--workdir={wd}", *ARGS, "--on_corrupt=previous")
  assert rc == 0 and "resuming" in out and "from step 8" in out, (out, err)


def test_flipped_bytes_in_params_are_found_on_restore_and_by_load_run(wd, monkeypatch, capsys):
  import jaxae
  from jaxae import checkpoints

  files = sorted((wd / "checkpoints" / "16" / "params").rglob("ocdbt.process_0/d/*"), key=lambda p: -p.stat().st_size)
  data = bytearray(files[0].read_bytes())
  rng = np.random.default_rng(0)
  for i in rng.choice(len(data) // 2, 64, replace=False) + len(data) // 4:  # 64 bytes in the middle
    data[i] ^= 0xFF
  files[0].write_bytes(bytes(data))
  refused(monkeypatch, capsys, wd, [f"--workdir={wd}", *ARGS, "--config.train.epochs=3"], 2, "checkpoint step 16",
          "damaged")
  with pytest.raises(checkpoints.CheckpointError, match="step 16 .*damaged"):
    jaxae.load_run(str(wd))
  assert jaxae.load_run(str(wd), step=8).step == 8


# ------------------------------------------------------------------ 6. environment failures and signals

def test_disk_full_while_training_keeps_what_was_saved(wd, monkeypatch, capsys):
  from jaxae import files

  def full(path, line):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

  monkeypatch.setattr(files, "append_line", full)
  metrics = (wd / "metrics.jsonl").read_bytes()
  rc, out, err = run_main(monkeypatch, capsys, f"--workdir={wd}", *ARGS, "--config.train.epochs=3")
  line = one_line(err)
  assert rc == 74 and "No space left on device" in line and "metrics.jsonl" in line, err
  assert (wd / "metrics.jsonl").read_bytes() == metrics
  assert sorted(os.listdir(wd / "checkpoints")) == ["16", "8"]


def test_read_only_filesystem_while_writing_summary(wd, monkeypatch, capsys):
  from jaxae import report

  def read_only(workdir, summary):
    raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.path.join(workdir, "summary.json"))

  monkeypatch.setattr(report, "write_summary", read_only)
  summary = (wd / "summary.json").read_bytes()
  rc, out, err = run_main(monkeypatch, capsys, f"--workdir={wd}", *ARGS)
  assert rc == 74 and "Read-only file system" in one_line(err), err
  assert (wd / "summary.json").read_bytes() == summary


def test_second_ctrl_c_stops_at_once_with_one_line(wd, monkeypatch, capsys):
  from jaxae import train

  def interrupted(*a, **k):
    raise KeyboardInterrupt

  monkeypatch.setattr(train, "run_epoch", interrupted)
  rc, out, err = run_main(monkeypatch, capsys, f"--workdir={wd}", *ARGS, "--config.train.epochs=3")
  assert rc == 130 and "stopped at once" in one_line(err)
  assert sorted(os.listdir(wd / "checkpoints")) == ["16", "8"] and not (wd / "jaxae.lock").exists()


def test_a_bug_is_a_traceback_and_status_70_not_bad_input(wd, monkeypatch, capsys):
  from jaxae import train

  def bug(*a, **k):
    raise ValueError("an internal ValueError")

  monkeypatch.setattr(train, "run_epoch", bug)
  rc, out, err = run_main(monkeypatch, capsys, f"--workdir={wd}", *ARGS, "--config.train.epochs=3")
  assert rc == 70 and "Traceback" in err and "internal error (ValueError)" in err


def test_tolerated_states_resume(wd, monkeypatch, capsys):
  """What a kill leaves (a cut-short last metrics line, a stale lock file) does not block the next run."""
  with open(wd / "metrics.jsonl", "a") as f:
    f.write('{"epoch": 3, "st')  # a kill in the middle of writing epoch 3's record
  (wd / "jaxae.lock").write_text(json.dumps({"pid": 1, "host": "gone", "since": "then"}))  # nobody holds it
  rc, out, err = run_main(monkeypatch, capsys, f"--workdir={wd}", *ARGS, "--config.train.epochs=3")
  assert rc == 0 and "resuming" in out, err
  assert [json.loads(line)["epoch"] for line in (wd / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
  assert not (wd / "jaxae.lock").exists()


# ------------------------------------------------------------------ 7. two processes on one workdir

def _start(workdir, *extra):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), JAXAE_COMPILATION_CACHE="")
  return subprocess.Popen([sys.executable, "-m", "jaxae.main", f"--workdir={workdir}", *ARGS,
                           "--config.train.steps_per_call=1", *extra], cwd=ROOT, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait(cond, proc, timeout=120.0):
  end = time.monotonic() + timeout
  while time.monotonic() < end and proc.poll() is None and not cond():
    time.sleep(0.01)
  return cond()


def test_two_processes_on_one_workdir(tmp_path):
  wd = tmp_path / "w"
  first = _start(wd, "--config.train.epochs=1000")  # still training when the others start
  assert _wait(lambda: (wd / "jaxae.lock").exists() and (wd / "jaxae.lock").stat().st_size > 0, first)
  second = _start(wd, "--config.train.epochs=1000")
  out, err = second.communicate(timeout=120)
  assert second.returncode == 75, (out, err)
  assert f"pid {first.pid}" in one_line(err) and "in use by another jaxae run" in err
  # SIGKILL the first one mid-run: its lock dies with it, and a third run resumes and finishes one more epoch.
  assert _wait(lambda: (wd / "checkpoints").exists() and any(n.isdigit() for n in os.listdir(wd / "checkpoints")),
               first)  # it trains on meanwhile
  first.kill()
  first.wait()
  assert (wd / "jaxae.lock").exists()  # left behind by the kill, held by nobody
  epochs = max(int(n) for n in os.listdir(wd / "checkpoints") if n.isdigit()) // 8 + 1
  third = _start(wd, f"--config.train.epochs={epochs}")
  out, err = third.communicate(timeout=180)
  assert third.returncode == 0 and "resuming" in out, err
  records = [json.loads(line)["epoch"] for line in (wd / "metrics.jsonl").read_text().splitlines()]
  assert records == list(range(1, epochs + 1)) and not (wd / "jaxae.lock").exists()


def test_polite_stop_is_143(tmp_path):
  wd = tmp_path / "w"
  proc = _start(wd, "--config.train.epochs=1000")
  assert _wait(lambda: (wd / "checkpoints").exists() and any(n.isdigit() for n in os.listdir(wd / "checkpoints")), proc)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 143 and "to resume:" in out, (out, err)
  assert not (wd / "jaxae.lock").exists()


def test_disk_too_small_for_the_next_checkpoint(wd, monkeypatch, capsys):
  """Refused before orbax writes anything (no half-written step); the saved steps and metrics stay."""
  import collections
  import shutil as shutil_lib

  from jaxae import checkpoints

  usage = collections.namedtuple("usage", "total used free")
  real = checkpoints.check_disk_space
  calls = []

  def nearly_full(directory, state, what):
    calls.append(what)
    with monkeypatch.context() as m:
      m.setattr(shutil_lib, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000) if len(calls) > 1 else
                usage(10**9, 0, 10**9))
      real(directory, state, what)

  monkeypatch.setattr(checkpoints, "check_disk_space", nearly_full)
  rc, out, err = run_main(monkeypatch, capsys, f"--workdir={wd}", *ARGS, "--config.train.epochs=3")
  line = one_line(err)
  assert rc == 74 and "not enough disk space for checkpoint step 24" in line and "MiB are free" in line, err
  assert sorted(os.listdir(wd / "checkpoints")) == ["16", "8"]


def test_compilation_cache_must_be_private(tmp_path, monkeypatch):
  from jaxae import main

  fresh = tmp_path / "cache" / "xla"
  assert main.private_directory(str(fresh)) is None and (fresh.stat().st_mode & 0o777) == 0o700
  shared = tmp_path / "shared"
  shared.mkdir()
  shared.chmod(0o777)
  assert "writable by group or others" in main.private_directory(str(shared))
  monkeypatch.setattr(os, "getuid", lambda: os.stat(fresh).st_uid + 1)
  assert "owned by another user" in main.private_directory(str(fresh))
  (tmp_path / "file").write_text("")
  monkeypatch.undo()
  assert main.private_directory(str(tmp_path / "file")) is not None


def test_console_script_help_lists_the_flags(monkeypatch, capsys):
  from jaxae import main

  monkeypatch.setattr(sys, "argv", ["jaxae", "--help"])
  with pytest.raises(SystemExit) as e:
    main.run()
  out = capsys.readouterr().out
  assert e.value.code == 0
  for flag in ("--config:", "--workdir:", "--[no]fresh:", "--on_corrupt:", "--config.KEY=VALUE"):
    assert flag in out, out


def _fmix32_reference(h: int) -> int:
  h ^= h >> 16
  h = (h * 0x85EBCA6B) & 0xFFFFFFFF
  h ^= h >> 13
  h = (h * 0xC2B2AE35) & 0xFFFFFFFF
  return h ^ (h >> 16)


def test_checksum_matches_a_pure_python_reference_and_finds_one_flipped_bit():
  """The formula of checkpoints.py, on host and device, against plain Python integers over the raw bytes."""
  import struct

  import jax.numpy as jnp

  from jaxae import checkpoints

  rng = np.random.default_rng(1)
  tree = {"w": rng.standard_normal((3, 4, 5)).astype(np.float32), "k": rng.integers(0, 2**31, (3, 2)).astype(np.uint32)}

  def reference(a):
    out = []
    for row in a.reshape(len(a), -1):
      words = struct.unpack(f"<{row.size}I", row.tobytes())
      out.append(sum(_fmix32_reference(w ^ _fmix32_reference(i + 1)) for i, w in enumerate(words)) & 0xFFFFFFFF)
    return out

  host = checkpoints.checksums({"x": tree})["x"]
  device = {k: [int(v) for v in np.asarray(checkpoints._device_checksum(jnp.asarray(a)))] for k, a in tree.items()}
  assert host == device == {k: reference(a) for k, a in tree.items()}
  flipped = tree["w"].copy()
  flipped.view(np.uint32)[1, 2, 3] ^= 1 << 7  # one bit of member 1
  changed = checkpoints.checksums({"x": {**tree, "w": flipped}})["x"]["w"]
  assert [a != b for a, b in zip(changed, host["w"])] == [False, True, False]


def test_every_member_diverged_is_status_1_with_table_and_figures(tmp_path, monkeypatch, capsys):
  out = tmp_path / "nan"
  rc, text, err = run_main(monkeypatch, capsys, f"--workdir={out}", *ARGS, "--config.num_seeds=1",
                           "--config.train.figures=True", "--config.optimizer.name=sgd", "--config.model.output=identity",
                           "--config.optimizer.learning_rate=1e4",
                           '--config.sweep={"optimizer.weight_decay": [0, 1e-4]}')
  assert rc == 1 and one_line(err) == "error: every member diverged", err
  assert "mean±std" in text and "diverged: seed 0 (epoch 1), seed 0 (epoch 1)" in text
  assert {"loss_curves.png", "sweep_loss.png"} <= set(os.listdir(out / "figures"))
  assert json.loads((out / "summary.json").read_text())["settings"][0]["healthy_seeds"] == []


def test_relative_workdir_in_a_new_folder(tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(tmp_path)
  rc, out, err = run_main(monkeypatch, capsys, "--workdir=runs/new", *ARGS, "--config.train.epochs=1")
  assert rc == 0 and (tmp_path / "runs" / "new" / "summary.json").exists(), err


def test_closed_stdout_stops_like_sigpipe_without_a_traceback(tmp_path):
  """`jaxae ... | head -1`: the reader exits, the next print raises BrokenPipeError; jaxae stops with
  128 + SIGPIPE and one line on stderr (it used to report an internal error with a traceback)."""
  env = dict(os.environ, PYTHONUNBUFFERED="1")  # each line reaches the pipe at once: the first one comes
  # before compilation, the next ones seconds later, after the pipe is closed
  proc = subprocess.Popen([sys.executable, "-m", "jaxae.main", f"--workdir={tmp_path / 'w'}", *ARGS], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
  proc.stdout.readline()
  proc.stdout.close()  # what `| head -1` does after its line
  err = proc.stderr.read()
  assert proc.wait(timeout=300) == 128 + signal.SIGPIPE, err
  lines = [line for line in err.splitlines() if line.strip()]
  assert lines[-1].startswith("error: standard output was closed"), err
  assert "Traceback" not in err
