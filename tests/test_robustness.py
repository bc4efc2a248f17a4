"""The outer layers hold as training does (issue 21): bad inputs and faults of evaluate and export, --fresh,
sweeps and seeds, data decoding, Ctrl-C at start-up, and what a newcomer meets first.

Every case reproduces the input or the fault as a user meets it and asserts the one line of error, the
exit status, and that nothing was written or lost (a snapshot of the workdir, and of the place a symlink
points to, before and after). Commands run in this process (`conftest.run_main`, `evaluate.main`,
`export.main`) against copies of two tiny finished runs made once per module; Ctrl-C runs real processes.
"""

from __future__ import annotations

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
from test_bad_inputs import ARGS, one_line, snapshot


@pytest.fixture(scope="module")
def done(tmp_path_factory):
  """A finished tiny vanilla run (2 seeds, 2 epochs) with its figures, as test_bad_inputs makes it."""
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


@pytest.fixture(scope="module")
def sae_done(tmp_path_factory):
  """A finished tiny SAE run (1 seed, 1 epoch) on 256 synthetic activations, for export."""
  from jaxae import main

  base = tmp_path_factory.mktemp("sae")
  rng = np.random.default_rng(0)
  np.save(base / "acts.npy", rng.standard_normal((256, 6)).astype(np.float32))
  wd = base / "run"
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(sys, "argv", ["jaxae"])
    mp.setattr(sys, "path", list(sys.path))
    assert main.cli(["jaxae", "--config=sae", f"--config.data.source=npy:{base}/acts.npy", f"--workdir={wd}",
                     "--config.num_seeds=1", "--config.train.epochs=1", "--config.model.expansion=2",
                     "--config.sae.k=2", "--config.train.batch_size=64", "--config.train.progress=False",
                     "--config.train.figures=False"]) == 0
  return wd


@pytest.fixture
def sae_wd(sae_done, tmp_path):
  path = tmp_path / "s"
  shutil.copytree(sae_done, path, symlinks=True)
  return path


def command(module, capsys, *argv) -> tuple[int, str, str]:
  """`python -m jaxae.<module> ARGV` in this process: (exit status, stdout, stderr)."""
  import importlib

  capsys.readouterr()
  rc = importlib.import_module(f"jaxae.{module}").main(list(argv))
  out, err = capsys.readouterr()
  return rc, out, err


def refused_by(module, capsys, watch, argv, status, *needles) -> str:
  """Runs a command; asserts its status, one error line holding every needle, and that nothing under
  `watch` changed (symlinks not followed; the places links point to are watched too)."""
  before = snapshot(*watch)
  rc, out, err = command(module, capsys, *argv)
  line = one_line(err)
  assert rc == status, (rc, out, err)
  for needle in needles:
    assert needle in line, (needle, line)
  assert snapshot(*watch) == before
  return line


EVAL = ["--no_figures", "--num_samples=0", "--export=codes,scores"]  # fast: no figures, no likelihood


# ------------------------------------------------------------------ 1. evaluate and export: where they write

def _link_dir(w, o, name):
  """Replaces (or creates) the folder `name` of workdir `w` by a symlink to folder `o`."""
  path = w / name
  if path.exists():
    shutil.rmtree(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  os.symlink(o, path)


EVAL_LINKS = {
    # where the symlink is: (make it (workdir, outside folder), with figures)
    "export": (lambda w, o: _link_dir(w, o, "export"), False),
    "export_codes": (lambda w, o: _link_dir(w, o, "export/codes"), False),
    "export_scores": (lambda w, o: _link_dir(w, o, "export/scores"), False),
    "export_file": (lambda w, o: ((w / "export" / "codes").mkdir(parents=True),
                                  os.symlink(o / "x.npy", w / "export" / "codes" / "member_000.npy")), False),
    "evaluation_json": (lambda w, o: os.symlink(o / "x.json", w / "evaluation.json"), False),
    "evaluation_tmp": (lambda w, o: os.symlink(o / "x.json", w / "evaluation.json.tmp"), False),
    "figures": (lambda w, o: _link_dir(w, o, "figures"), True),
    "figure_file": (lambda w, o: os.symlink(o / "x.png", w / "figures" / "eval_codes.png"), True),
}


@pytest.mark.parametrize("where", list(EVAL_LINKS))
def test_evaluate_never_writes_through_a_symlink(where, wd, tmp_path, capsys):
  outside = tmp_path / "outside"
  outside.mkdir()
  (outside / "keep.txt").write_text("not jaxae's")
  make, with_figures = EVAL_LINKS[where]
  make(wd, outside)
  argv = [f"--workdir={wd}", *[a for a in EVAL if not (with_figures and a == "--no_figures")]]
  refused_by("evaluate", capsys, [wd, outside], argv, 2, "is a symlink", "never writes through a symlink")


def test_evaluate_writes_inside_the_workdir_and_lists_what_it_wrote(wd, capsys):
  rc, out, err = command("evaluate", capsys, f"--workdir={wd}", *EVAL)
  assert rc == 0, err
  listed = [json.loads(line) for line in (wd / "manifest.jsonl").read_text().splitlines()]
  for rel in ("evaluation.json", "export/index.json", "export/labels.npy", "export/codes/member_000.npy",
              "export/scores/member_001.npy"):
    assert {"file": rel} in listed and (wd / rel).is_file(), rel
  assert not (wd / "jaxae.lock").exists()


def test_evaluate_of_a_workdir_that_is_training_is_busy_not_damaged(wd, capsys):
  """A run holds the lock (as a training run does): evaluate and export say so (75), naming its pid."""
  fd = os.open(wd / "jaxae.lock", os.O_RDWR | os.O_CREAT)
  try:
    os.write(fd, json.dumps({"pid": 4242, "host": "trainer", "since": "now"}).encode())
    fcntl.flock(fd, fcntl.LOCK_EX)
    refused_by("evaluate", capsys, [wd], [f"--workdir={wd}", *EVAL], 75, "in use by another jaxae run", "pid 4242")
    refused_by("export", capsys, [wd], [f"--workdir={wd}"], 75, "pid 4242")
    refused_by("export", capsys, [wd], [f"--workdir={wd}", f"--out={wd.parent / 'elsewhere'}"], 75, "pid 4242")
    assert not (wd.parent / "elsewhere").exists()
  finally:
    os.close(fd)


def test_evaluate_environment_failures_are_74(wd, tmp_path, monkeypatch, capsys):
  real = os.access
  with monkeypatch.context() as mp:
    mp.setattr(os, "access", lambda p, mode, **kw: False if mode & os.W_OK else real(p, mode, **kw))
    refused_by("evaluate", capsys, [wd], [f"--workdir={wd}", *EVAL], 74, "read-only filesystem or no permission")
  a_file = tmp_path / "run.txt"
  a_file.write_text("my notes")
  refused_by("evaluate", capsys, [a_file], [f"--workdir={a_file}", *EVAL], 74, "is a file, not a directory")
  refused_by("evaluate", capsys, [tmp_path], [f"--workdir={tmp_path / 'none'}", *EVAL], 2, "no such folder")


def test_evaluate_with_bad_data_writes_nothing(wd, tmp_path, capsys):
  np.save(tmp_path / "bad.npy", np.full((10, 28, 28, 1), np.nan, np.float32))
  refused_by("evaluate", capsys, [wd], [f"--workdir={wd}", *EVAL, f"--data=npy:{tmp_path}/bad.npy"], 2,
             "NaN or Inf")


SAE_LINKS = {
    "export": lambda w, o: _link_dir(w, o, "export"),
    "saelens": lambda w, o: _link_dir(w, o, "export/saelens"),
    "member": lambda w, o: _link_dir(w, o, "export/saelens/seed0"),
    "weights": lambda w, o: ((w / "export" / "saelens" / "seed0").mkdir(parents=True),
                             os.symlink(o / "w", w / "export" / "saelens" / "seed0" / "sae_weights.safetensors")),
    "cfg_tmp": lambda w, o: ((w / "export" / "saelens" / "seed0").mkdir(parents=True),
                             os.symlink(o / "c", w / "export" / "saelens" / "seed0" / "cfg.json.tmp")),
}


@pytest.mark.parametrize("where", list(SAE_LINKS))
def test_export_never_writes_through_a_symlink(where, sae_wd, tmp_path, capsys):
  outside = tmp_path / "outside"
  outside.mkdir()
  SAE_LINKS[where](sae_wd, outside)
  refused_by("export", capsys, [sae_wd, outside], [f"--workdir={sae_wd}"], 2, "is a symlink",
             "never writes through a symlink")


def test_export_to_out(sae_wd, tmp_path, capsys):
  """--out: a symlink at it or below it is refused (2), a file there is an environment failure (74); a
  new --out is made with its parents, and nothing is written in the workdir (not even in its manifest)."""
  outside = tmp_path / "outside"
  outside.mkdir()
  os.symlink(outside, tmp_path / "link")
  refused_by("export", capsys, [sae_wd, outside], [f"--workdir={sae_wd}", f"--out={tmp_path / 'link'}"], 2,
             "link is a symlink")
  (tmp_path / "out2").mkdir()
  os.symlink(outside, tmp_path / "out2" / "seed0")
  refused_by("export", capsys, [sae_wd, outside], [f"--workdir={sae_wd}", f"--out={tmp_path / 'out2'}"], 2,
             "seed0 is a symlink")
  (tmp_path / "out.txt").write_text("mine")
  refused_by("export", capsys, [sae_wd, tmp_path / "out.txt"], [f"--workdir={sae_wd}", f"--out={tmp_path / 'out.txt'}"],
             74, "is a file, not a directory")
  refused_by("export", capsys, [sae_wd, tmp_path / "out.txt"],
             [f"--workdir={sae_wd}", f"--out={tmp_path / 'out.txt' / 'below'}"], 74, "Not a directory")
  before = snapshot(sae_wd)
  rc, out, err = command("export", capsys, f"--workdir={sae_wd}", f"--out={tmp_path / 'new' / 'deep'}")
  assert rc == 0, err
  assert (tmp_path / "new" / "deep" / "seed0" / "cfg.json").is_file() and snapshot(sae_wd) == before


def test_export_from_a_read_only_workdir_to_out(sae_wd, tmp_path, monkeypatch, capsys):
  """A workdir this user cannot write (a shared run) exports to --out; writing inside it is 74."""
  real = os.access
  ro = lambda p, mode, **kw: False if (mode & os.W_OK and str(p).startswith(str(sae_wd))) else real(p, mode, **kw)
  monkeypatch.setattr(os, "access", ro)
  refused_by("export", capsys, [sae_wd], [f"--workdir={sae_wd}"], 74, "read-only filesystem or no permission")
  rc, out, err = command("export", capsys, f"--workdir={sae_wd}", f"--out={tmp_path / 'mine'}")
  assert rc == 0 and (tmp_path / "mine" / "seed0" / "sae_weights.safetensors").is_file(), err


# ------------------------------------------------------------------ 2. --fresh deletes what jaxae wrote

FOREIGN = {
    # a file of the user's among jaxae's folders: --fresh refuses, deleting nothing
    "png_in_figures": "figures/my_plot.png",
    "file_in_tensorboard": "tensorboard/notes.txt",
    "file_in_export": "export/mine.npy",
    "empty_folder_in_figures": "figures/drafts/",
    "png_in_a_group_folder": "groups/mine/figure.png",
}


@pytest.mark.parametrize("name", list(FOREIGN))
def test_fresh_refuses_files_jaxae_did_not_write(name, wd, monkeypatch, capsys):
  rel = FOREIGN[name]
  path = wd / rel.rstrip("/")
  path.parent.mkdir(parents=True, exist_ok=True)
  if rel.endswith("/"):
    path.mkdir()
  else:
    path.write_bytes(b"\x89PNG mine")
  before = snapshot(wd)
  rc, out, err = run_main(monkeypatch, capsys, f"--workdir={wd}", *ARGS, "--fresh")
  line = one_line(err)
  assert rc == 2 and "--fresh would delete" in line and "which jaxae did not write" in line, err
  assert snapshot(wd) == before


def test_fresh_deletes_every_file_jaxae_wrote_and_nothing_else(wd, monkeypatch, capsys):
  from jaxae import evaluate

  assert evaluate.main([f"--workdir={wd}", *EVAL]) == 0  # evaluate's files are jaxae's too
  (wd / "notes.md").write_text("mine")
  listed = [json.loads(line) for line in (wd / "manifest.jsonl").read_text().splitlines()]
  rc, out, err = run_main(monkeypatch, capsys, f"--workdir={wd}", *ARGS, "--fresh", "--config.train.epochs=1")
  assert rc == 0, err
  assert (wd / "notes.md").read_text() == "mine"
  assert not (wd / "export").exists() and not (wd / "evaluation.json").exists()
  assert {"file": "export/index.json"} in listed
  assert sorted(os.listdir(wd / "checkpoints")) == ["8"]


def test_manifest_that_leaves_the_workdir_is_refused(wd, monkeypatch, capsys):
  with open(wd / "manifest.jsonl", "a") as f:
    f.write(json.dumps({"file": "../outside.txt"}) + "\n")
  (wd.parent / "outside.txt").write_text("keep")
  before = snapshot(wd, wd.parent / "outside.txt")
  rc, out, err = run_main(monkeypatch, capsys, f"--workdir={wd}", *ARGS, "--fresh")
  assert rc == 2 and "manifest.jsonl line" in one_line(err), err
  assert snapshot(wd, wd.parent / "outside.txt") == before


def test_workdir_from_before_manifests_keeps_its_rules(wd, monkeypatch, capsys):
  """No manifest.jsonl (an older jaxae): --fresh keeps to the names jaxae writes, and records nothing new."""
  os.remove(wd / "manifest.jsonl")
  (wd / "figures" / "notes.txt").write_text("mine")
  rc, out, err = run_main(monkeypatch, capsys, f"--workdir={wd}", *ARGS, "--fresh")
  assert rc == 2 and "notes.txt, which jaxae did not write" in one_line(err)
  os.remove(wd / "figures" / "notes.txt")
  rc, out, err = run_main(monkeypatch, capsys, f"--workdir={wd}", *ARGS, "--config.train.epochs=3")
  assert rc == 0 and not (wd / "manifest.jsonl").exists(), err


# ------------------------------------------------------------------ 3. sweeps and seeds

BAD_RANGES = {
    # command-line flags: a needle of the one line
    ("--config.seed=-1",): "seed=-1 must be a non-negative integer",
    ("--config.num_seeds=0",): "num_seeds=0 must be a positive integer",
    ("--config.num_seeds=-3",): "num_seeds=-3 must be a positive integer",
    ("--config.seed=true",): "--config.seed='true' must be an integer",
    ("--config.num_seeds=2.0",): "--config.num_seeds='2.0' must be an integer",
    ("--config.seed=1e3",): "--config.seed='1e3' must be an integer",
    ("--config.seed=4294967296",): "seeds are unsigned 32-bit: at most 4294967295",
    ("--config.seed=4294967295", "--config.num_seeds=2"): "asks for seeds up to 4294967296",
    ("--config.seed=" + "9" * 40,): "seeds are unsigned 32-bit",
    ("--config.num_seeds=" + "9" * 40,): "seeds are unsigned 32-bit",
    ("--config.num_seeds=2000000",): "num_seeds=2000000 is more than 1048576 members in one program",
    ("--config.num_seeds=5000", '--config.sweep={"optimizer.learning_rate": [' + ",".join(
        str(1e-3 + i * 1e-6) for i in range(300)) + "]}"): "1500000 members with num_seeds=5000 in one program",
    ('--config.sweep={"model.latent_dim": [' + ",".join(map(str, range(1, 1100))) + '], "train.batch_size": [' +
     ",".join(map(str, range(1, 1000))) + "]}",): "the sweep has 1097901 settings",
    ('--config.sweep={"data.max_train": [100, 200]}',): "sweep key 'data.max_train' cannot be swept",
    ('--config.sweep={"data.source": ["embedded", "npy:x.npy"]}',): "sweep key 'data.source' cannot be swept",
    ('--config.sweep={"data.holdout_fraction": [0.1, 0.2]}',): "use one --workdir per value",
}


@pytest.mark.parametrize("flags", list(BAD_RANGES), ids=lambda f: " ".join(f)[:40])
def test_seed_ranges_and_data_sweeps_are_refused(flags, wd, monkeypatch, capsys):
  before = snapshot(wd)
  rc, out, err = run_main(monkeypatch, capsys, f"--workdir={wd}", *ARGS, *flags)
  assert rc == 2 and BAD_RANGES[flags] in one_line(err), err
  assert snapshot(wd) == before


@pytest.mark.parametrize("value", ["True", "2.5", "-2", "2**32"])
def test_seed_in_a_config_file(value, tmp_path, monkeypatch, capsys):
  """A config file's seed of the wrong kind or range (ConfigDict lets True replace an int)."""
  path = tmp_path / "cfg.py"
  path.write_text(f"from jaxae import configs\ndef get_config():\n  c = configs.base_config()\n  c.seed = {value}\n"
                  "  return c\n")
  rc, out, err = run_main(monkeypatch, capsys, f"--config={path}", f"--workdir={tmp_path / 'w'}")
  assert rc == 2 and "seed" in one_line(err) and not (tmp_path / "w").exists(), err


def test_highest_seeds_train_and_evaluate(tmp_path, monkeypatch, capsys):
  """The last two uint32 seeds are valid: they train, resume and evaluate (no wrap-around to seed 0)."""
  from jaxae import evaluate

  wd = tmp_path / "w"
  flags = [a for a in ARGS if not a.startswith(("--config.num_seeds", "--config.train.epochs"))]
  rc, out, err = run_main(monkeypatch, capsys, f"--workdir={wd}", *flags, "--config.seed=4294967294",
                          "--config.num_seeds=2", "--config.train.epochs=1")
  assert rc == 0 and "4294967295" in out, err
  assert evaluate.main([f"--workdir={wd}", *EVAL]) == 0
  members = json.loads((wd / "members.json").read_text())
  assert [m["seed"] for m in members] == [4294967294, 4294967295]


def test_sweep_over_data_normalize_is_honoured(tmp_path, monkeypatch, capsys):
  """The data keys a sweep may change: each group records and uses its own normalizer."""
  wd = tmp_path / "w"
  flags = [a for a in ARGS if not a.startswith(("--config.num_seeds", "--config.train.epochs"))]
  rc, out, err = run_main(monkeypatch, capsys, f"--workdir={wd}", *flags, "--config.num_seeds=1",
                          "--config.train.epochs=1", '--config.sweep={"data.normalize": ["none", "standardize"]}')
  assert rc == 0, err
  saved = json.loads((wd / "groups" / "data.normalize=standardize" / "normalizer.json").read_text())
  assert saved["kind"] == "standardize" and not (wd / "groups" / "data.normalize=none" / "normalizer.json").exists()
  # The final tables are named after their group (a grouped sweep prints one per setting): the last
  # header of each group is the line above its table.
  lines = out.splitlines()
  for name in ("data.normalize=none", "data.normalize=standardize"):
    last = max(i for i, line in enumerate(lines) if line == f"== group {name}")
    assert lines[last + 1].split() == ["seed", "train/loss", "eval/loss", "eval/recon_mse"], lines[last:last + 3]


# ------------------------------------------------------------------ 5. Ctrl-C in the first seconds

def _start(workdir, *extra):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), JAXAE_COMPILATION_CACHE="")
  return subprocess.Popen([sys.executable, "-m", "jaxae.main", f"--workdir={workdir}", *ARGS, *extra], cwd=ROOT,
                          env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _loading_jax(proc) -> bool:
  """True once the process has begun loading jaxlib's shared libraries: past Python's start-up, parsing
  done (jax is imported after the command line is read), its own SIGINT handler in place."""
  try:
    with open(f"/proc/{proc.pid}/maps") as f:
      return "jaxlib" in f.read()
  except OSError:
    return False


def _when(cond, proc, timeout=60.0) -> bool:
  end = time.monotonic() + timeout
  while time.monotonic() < end and proc.poll() is None and not cond():
    time.sleep(0.002)
  return cond()


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc to see the process load jax")
@pytest.mark.parametrize("delay", [0.0, 0.5, 1.5])
def test_first_ctrl_c_while_starting_stops_cleanly(delay, tmp_path):
  """SIGINT while jax loads, the data load or the program compiles: a clean stop, 130, one line that
  is not about a second Ctrl-C, no traceback, no crash, and (stopped before training) no workdir left."""
  wd = tmp_path / "w"
  proc = _start(wd)
  assert _when(lambda: _loading_jax(proc), proc), proc.communicate()
  time.sleep(delay)
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 130, (proc.returncode, out, err)
  line = one_line(err)
  assert "second" not in line and "Traceback" not in out + err, (out, err)
  if "before training started" in line:
    assert "nothing was written" in line and not wd.exists()
  else:  # the machine was fast: training had begun, and stopped politely at a checkpoint
    assert "to resume:" in out, (out, err)


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc to see the process load jax")
def test_second_ctrl_c_while_starting_stops_at_once(tmp_path):
  wd = tmp_path / "w"
  proc = _start(wd)
  assert _when(lambda: _loading_jax(proc), proc), proc.communicate()
  proc.send_signal(signal.SIGINT)
  time.sleep(0.05)
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 130 and "Traceback" not in out + err, (proc.returncode, out, err)
  line = one_line(err)
  assert "stopped at once by a second Ctrl-C" in line or "before training started" in line, line
  assert not wd.exists() or "to resume" in out
