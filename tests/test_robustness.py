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


# ------------------------------------------------------------------ 4. data decoded faithfully or refused

def _png(path, width, height, depth, color_type, rows: bytes = b"") -> str:
  """A PNG written byte by byte (Pillow cannot write some of these): IHDR as given, `rows` as IDAT."""
  import struct
  import zlib

  def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

  ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
  path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) +
                   chunk(b"IEND", b""))
  return str(path)


def _folder(tmp_path, images: dict) -> str:
  """folder:DIR holding `images` {name: PIL image or a function writing the file at a path}."""
  root = tmp_path / "images"
  root.mkdir()
  for name, im in images.items():
    im(root / name) if callable(im) else im.save(root / name)
  return f"folder:{root}"


def _gray16(path):
  values = np.array([[0, 255, 256, 1000], [4096, 30000, 65534, 65535]], ">u2")
  return _png(path, 4, 2, 16, 0, b"".join(b"\x00" + row.tobytes() for row in values))


def test_16_bit_grayscale_images_keep_every_value(tmp_path):
  from PIL import Image

  from jaxae import data

  src = _folder(tmp_path, {"a.png": _gray16, "b.png": Image.fromarray(np.full((2, 4), 255, np.uint8))})
  x = data.load_source(src).x
  assert x.dtype == np.float32 and x.shape == (2, 2, 4, 1)
  np.testing.assert_array_equal(x[0, ..., 0] * 65535, [[0, 255, 256, 1000], [4096, 30000, 65534, 65535]])
  assert (x[1] == 1.0).all()  # 8-bit 255 beside it: the same [0, 1] scale


def test_palette_and_opaque_alpha_images_convert_exactly(tmp_path):
  from PIL import Image

  from jaxae import data

  rgb = np.random.default_rng(0).integers(0, 256, (3, 5, 3), np.uint8)
  opaque = np.concatenate([rgb, np.full((3, 5, 1), 255, np.uint8)], axis=-1)
  pal = Image.fromarray(rgb).quantize(colors=256, method=Image.Quantize.MAXCOVERAGE)
  src = _folder(tmp_path, {"a.png": Image.fromarray(rgb), "b.png": Image.fromarray(opaque, "RGBA"), "c.png": pal,
                           "d.png": Image.fromarray(rgb).convert("1")})
  x = data.load_source(src).x
  assert x.dtype == np.uint8 and x.shape == (4, 3, 5, 3)
  np.testing.assert_array_equal(x[0], rgb)
  np.testing.assert_array_equal(x[1], rgb)
  np.testing.assert_array_equal(x[2], np.asarray(pal.convert("RGB")))
  assert set(np.unique(x[3])) <= {0, 255}


BAD_IMAGES = {
    # name: (write it at a path, needle)
    "transparent_rgba": (lambda p: __import__("PIL.Image").Image.fromarray(
        np.zeros((2, 2, 4), np.uint8), "RGBA").save(p), "has transparent pixels (mode RGBA)"),
    "transparent_la": (lambda p: __import__("PIL.Image").Image.fromarray(
        np.zeros((2, 2, 2), np.uint8), "LA").save(p), "has transparent pixels (mode LA)"),
    "rgb_16_bit": (lambda p: _png(p, 1, 1, 16, 2, b"\x00" + np.array([1, 256, 65535], ">u2").tobytes()),
                   "16-bit colour channels (mode RGB)"),
    "bomb": (lambda p: _png(p, 20000, 20000, 8, 0, b"\x00" * 10), "too large to decode safely"),
    "truncated": (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00"), "cannot read image"),
}


@pytest.mark.parametrize("name", list(BAD_IMAGES))
def test_images_that_cannot_be_decoded_faithfully_are_refused(name, wd, tmp_path, monkeypatch, capsys):
  from PIL import Image

  write, needle = BAD_IMAGES[name]
  ok = Image.fromarray(np.zeros((28, 28), np.uint8))
  src = _folder(tmp_path, {"a.png": ok, "b.png": write})
  before = snapshot(wd)
  rc, out, err = run_main(monkeypatch, capsys, f"--workdir={wd}", *ARGS, f"--config.data.source={src}",
                          "--config.data.image_size=28")
  assert rc == 2 and needle in one_line(err) and "b.png" in one_line(err), err
  assert snapshot(wd) == before


def test_decompression_bomb_just_above_pillows_warning_limit(tmp_path, monkeypatch):
  """Between Pillow's warning (MAX_IMAGE_PIXELS) and its error (twice that): refused too, not a warning."""
  from PIL import Image

  from jaxae import data

  monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
  src = _folder(tmp_path, {"a.png": Image.fromarray(np.zeros((10, 15), np.uint8))})  # 150 pixels
  with pytest.raises(data.DataError, match="too large to decode safely"):
    data.load_source(src)


CSV_TEXT = "0.5,1,2\n0.25,3,4\n1.0,5,6\n"


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-32", "utf-16-be-bom", "utf-8"])
def test_csv_with_a_byte_order_mark_reads_every_row(encoding, tmp_path):
  """Excel's UTF-8 with a BOM used to turn the first data row into a 'header' (its first cell, with the
  mark, was not a number): a row silently lost."""
  import codecs

  from jaxae import data

  path = tmp_path / "t.csv"
  if encoding == "utf-16-be-bom":
    path.write_bytes(codecs.BOM_UTF16_BE + CSV_TEXT.encode("utf-16-be"))
  else:
    path.write_bytes(CSV_TEXT.encode(encoding))
  x = data.load_source(f"csv:{path}").x
  np.testing.assert_array_equal(x, np.array([[0.5, 1, 2], [0.25, 3, 4], [1.0, 5, 6]], np.float32))


@pytest.mark.parametrize("raw, needle", [
    ("0.5,1\n0.25,2\n".encode("utf-16-le"), "line 1 is not UTF-8 text"),  # no BOM: not guessed
    ("a,b\n1,2\n\xe9t\xe9,3\n".encode("latin-1"), "line 3 is not UTF-8 text (byte 8)"),
])
def test_csv_in_other_encodings_is_refused_naming_the_line(raw, needle, tmp_path, wd, monkeypatch, capsys):
  path = tmp_path / "t.csv"
  path.write_bytes(raw)
  before = snapshot(wd)
  rc, out, err = run_main(monkeypatch, capsys, f"--workdir={wd}", *ARGS, f"--config.data.source=csv:{path}",
                          "--config.model.output=identity")
  assert rc == 2 and needle in one_line(err), err
  assert snapshot(wd) == before


@pytest.mark.parametrize("dtype", ["int64", "uint64", "int32", ">i8", "uint32", "float64", "int8", ">u2", "bool"])
def test_labels_of_any_integer_width(dtype, tmp_path):
  from jaxae.sources.base import as_labels

  y = np.array([0, 1, 1, 0], dtype)
  np.testing.assert_array_equal(as_labels(y, "y"), [0, 1, 1, 0])
  assert as_labels(y, "y").dtype == np.int32


@pytest.mark.parametrize("values, needle", [
    (np.array([0, 2**31], np.int64), "labels range from 0 to 2147483648"),
    (np.array([0, 2**32 + 1], np.int64), "beyond 32-bit class indices"),  # would wrap to class 1
    (np.array([0, 2**63], np.uint64), "beyond 32-bit class indices"),
    (np.array([-2**31 - 1, 0], np.int64), "labels range from -2147483649"),
    (np.array([0.0, 1e10]), "beyond 32-bit class indices"),
    (np.array([0.0, np.inf]), "must be whole numbers"),
])
def test_labels_beyond_int32_are_refused_not_wrapped(values, needle, tmp_path, wd, monkeypatch, capsys):
  from jaxae.sources.base import DataError, as_labels

  with pytest.raises(DataError, match=needle.replace("(", r"\(")):
    as_labels(values, "y")
  np.savez(tmp_path / "d.npz", x=np.zeros((len(values), 4), np.float32), y=values)
  before = snapshot(wd)
  rc, out, err = run_main(monkeypatch, capsys, f"--workdir={wd}", *ARGS, f"--config.data.source=npz:{tmp_path}/d.npz")
  assert rc == 2 and needle in one_line(err), err
  assert snapshot(wd) == before


INPUT_DTYPES = [">f4", ">f8", "<f2", ">u2", "bool", ">i4", "int64", "uint8"]


@pytest.mark.parametrize("dtype", INPUT_DTYPES)
@pytest.mark.parametrize("kind", ["npy", "npz"])
def test_inputs_of_any_numeric_dtype_and_byte_order(dtype, kind, tmp_path):
  """Read as the same numbers, in native byte order (jax takes only native arrays), memory-mapped or not."""
  from jaxae import data

  rng = np.random.default_rng(1)
  x = (rng.random((12, 5)) * 3).astype(dtype)
  if kind == "npy":
    np.save(tmp_path / "x.npy", x)
  else:
    np.savez(tmp_path / "x.npz", x=x)
  split = data.load_source(f"{kind}:{tmp_path}/x.{kind}")
  data.check_split(split)
  got = np.asarray(split.x[np.arange(12)])
  assert got.dtype.isnative and got.dtype == x.dtype.newbyteorder("=")
  np.testing.assert_array_equal(got, x)
  np.testing.assert_array_equal(data.to_float(got), data.to_float(x.astype(x.dtype.newbyteorder("="))))


def test_big_endian_and_bool_inputs_train(tmp_path, monkeypatch, capsys):
  """Non-native byte order and bool inputs go all the way through training (the device takes them)."""
  x = (np.random.default_rng(2).random((64, 6)) > 0.5)
  np.save(tmp_path / "b.npy", x)
  np.save(tmp_path / "f.npy", x.astype(">f4"))
  flags = [a for a in ARGS if not a.startswith(("--config.data.max", "--config.num_seeds"))]
  for name in ("b", "f"):
    rc, out, err = run_main(monkeypatch, capsys, f"--workdir={tmp_path / name}", *flags, "--config.num_seeds=1",
                            f"--config.data.source=npy:{tmp_path}/{name}.npy", "--config.train.epochs=1")
    assert rc == 0, err
  a, b = (json.loads((tmp_path / n / "summary.json").read_text())["settings"][0]["eval"]["loss"]["mean"] for n in "bf")
  assert a == b  # the same numbers, whatever the dtype they were stored in


@pytest.mark.parametrize("dtype", ["int64", "uint32", ">i8"])
def test_integer_inputs_float32_cannot_hold_are_refused(dtype, tmp_path, wd, monkeypatch, capsys):
  x = np.zeros((20, 4), dtype)
  x[7, 2] = 2**24 + 1  # float32 would round it to 2**24 (and int64 beyond 2**31 would wrap to int32)
  np.save(tmp_path / "x.npy", x)
  before = snapshot(wd)
  rc, out, err = run_main(monkeypatch, capsys, f"--workdir={wd}", *ARGS, f"--config.data.source=npy:{tmp_path}/x.npy")
  assert rc == 2 and "beyond +-2**24 (first in row 7)" in one_line(err), err
  assert snapshot(wd) == before


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


def test_a_clone_named_jaxae_does_not_shadow_the_installed_package(tmp_path):
  """`git clone ... jaxae` then commands from its parent folder: the clone folder (no __init__.py at its root)
  must not be imported as a namespace package `jaxae` in place of the installed one (the src layout)."""
  clone = tmp_path / "jaxae"
  (clone / "configs").mkdir(parents=True)
  (clone / "README.md").write_text("a clone's top level\n")
  where = subprocess.run([sys.executable, "-c", "import jaxae; print(jaxae.__file__)"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
  assert where.returncode == 0, where.stderr
  assert str(tmp_path) not in where.stdout and where.stdout.strip().endswith("__init__.py")
  listed = subprocess.run([sys.executable, "-m", "jaxae.config_files"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
  assert listed.returncode == 0, listed.stderr
  assert "vae" in listed.stdout
