"""TensorBoard event files (read back with TensorBoard's own reader) and Weights & Biases calls agree with
metrics.jsonl, once per step, also after a run that lost its latest checkpoint is resumed."""

from __future__ import annotations

import importlib.machinery
import json
import os
import shutil
import sys
import types

import numpy as np
import pytest

import jaxae
from jaxae import report, tracking

from conftest import tiny_config

ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def _accumulator(path):
  acc = ea.EventAccumulator(path, size_guidance={ea.SCALARS: 0, ea.IMAGES: 0})
  acc.Reload()
  return acc


def _raw_steps(logdir):
  """(tag, step) of every scalar in every event file under logdir, read without TensorBoard."""
  from tensorboardX.proto import event_pb2
  out = []
  for root, _, files in os.walk(logdir):
    for name in files:
      for raw, step, header in tracking._records(os.path.join(root, name)):
        if not header:
          event = event_pb2.Event.FromString(raw[12:-4])
          out += [(os.path.relpath(root, logdir), v.tag, step) for v in event.summary.value]
  return out


def test_tensorboard_curves_match_metrics_and_survive_a_lost_checkpoint(tmp_path):
  config = tiny_config("vae", train__epochs=4, checkpoint__every_epochs=2, train__eval_every=2, log__images=4)
  workdir = str(tmp_path / "run")
  jaxae.train_and_evaluate(config, workdir)
  # A kill after epoch 4 was logged but before its checkpoint was complete: the resumed run redoes 3 and 4.
  shutil.rmtree(os.path.join(workdir, "checkpoints", "32"))
  jaxae.train_and_evaluate(config, workdir)
  records = report.read_records(workdir)
  assert [r["epoch"] for r in records] == [1, 2, 3, 4]
  logdir = os.path.join(workdir, "tensorboard")
  raw = _raw_steps(logdir)
  assert len(raw) == len(set(raw))  # every (run, tag, step) once in the files
  for i, seed in enumerate((0, 1)):
    acc = _accumulator(os.path.join(logdir, f"seed_{seed}"))
    for split in ("train", "eval"):
      for metric in ("loss", "kl"):
        events = acc.Scalars(f"{split}/{metric}")
        want = [(r["step"], r[split][metric][i]) for r in records if split in r]
        assert [e.step for e in events] == [s for s, _ in want]
        np.testing.assert_allclose([e.value for e in events], [v for _, v in want], rtol=1e-6)
    images = {tag: acc.Images(tag) for tag in ("reconstructions", "samples")}
    assert [e.step for e in images["reconstructions"]] == [16, 32] == [e.step for e in images["samples"]]
    assert (images["reconstructions"][0].height, images["reconstructions"][0].width) == (2 * 28 + 1, 4 * 28 + 3)
  mean = _accumulator(os.path.join(logdir, "mean"))
  np.testing.assert_allclose([e.value for e in mean.Scalars("train/loss")],
                             [np.mean(r["train"]["loss"]) for r in records], rtol=1e-6)
  # --fresh removes the event files with the rest of what jaxae wrote.
  config.train.epochs = 1
  jaxae.train_and_evaluate(config, workdir, fresh=True)
  assert sorted({s for _, _, s in _raw_steps(logdir)}) == [8]


def test_sweep_runs_are_named_by_setting_and_tensorboard_can_be_off(tmp_path):
  config = tiny_config("vanilla", train__epochs=1)
  config.sweep = '{"optimizer.learning_rate": [0.001, 0.01]}'
  jaxae.train_and_evaluate(config, str(tmp_path / "a"))
  runs = sorted(os.path.relpath(root, tmp_path / "a" / "tensorboard")
                for root, _, files in os.walk(tmp_path / "a" / "tensorboard") if files)
  assert runs == ["learning_rate=0.001/mean", "learning_rate=0.001/seed_0", "learning_rate=0.001/seed_1",
                  "learning_rate=0.01/mean", "learning_rate=0.01/seed_0", "learning_rate=0.01/seed_1"]
  config.log.tensorboard = False
  jaxae.train_and_evaluate(config, str(tmp_path / "b"))
  assert not os.path.exists(tmp_path / "b" / "tensorboard")


class _FakeWandB(types.ModuleType):
  """Records what jaxae asks of the wandb package (which is not a dependency)."""

  def __init__(self):
    super().__init__("wandb")
    self.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    self.inits, self.logged, self.finished = [], [], 0

  def init(self, **kwargs):
    self.inits.append(kwargs)
    fake = self

    class Run:
      def log(self, data, step):
        fake.logged.append((step, data))

      def finish(self):
        fake.finished += 1

    return Run()

  def Image(self, array):  # noqa: N802 - wandb's name
    return ("image", np.asarray(array).shape)


def test_wandb_gets_every_step_once_and_resumes_its_run(tmp_path, monkeypatch):
  config = tiny_config("vanilla", train__epochs=2, checkpoint__every_epochs=1, log__images=0)
  config.log.wandb = True
  with pytest.raises(jaxae.configs.ConfigError, match="pip install wandb"):
    monkeypatch.setitem(sys.modules, "wandb", None)
    jaxae.configs.validate(config)
  fake = _FakeWandB()
  monkeypatch.setitem(sys.modules, "wandb", fake)
  workdir = str(tmp_path / "run")
  jaxae.train_and_evaluate(config, workdir)
  shutil.rmtree(os.path.join(workdir, "checkpoints", "16"))  # epoch 2 is trained (and logged) again
  config.train.epochs = 3
  jaxae.train_and_evaluate(config, workdir)
  assert [s for s, _ in fake.logged] == [8, 16, 24]
  assert len(fake.inits) == 2 and fake.inits[0]["id"] == fake.inits[1]["id"] and fake.finished == 2
  assert fake.inits[0]["resume"] == "allow" and fake.inits[0]["config"]["variant"] == "vanilla"
  records = report.read_records(workdir)
  for (step, data), r in zip(fake.logged, records):
    assert step == r["step"] and data["epoch"] == r["epoch"]
    assert data["seed_1/train/loss"] == pytest.approx(r["train"]["loss"][1])
    assert data["mean/eval/recon_mse"] == pytest.approx(np.mean(r["eval"]["recon_mse"]))
  assert json.load(open(os.path.join(workdir, "wandb.json")))["last_step"] == 24


def test_a_run_imports_neither_torch_nor_matplotlib_before_it_draws(tmp_path):
  """Start-up (benchmarks/startup.py): tensorboardX's writer without PyTorch, matplotlib only for figures.

  In a fresh interpreter: importing jaxae.main and jaxae.run loads no matplotlib, and opening a
  tensorboard writer loads no torch (a real check where torch is installed, as in the dev environment).
  The writer still writes a readable event file.
  """
  import subprocess

  probe = ("import sys, jaxae.main, jaxae.run\n"
           "assert 'matplotlib' not in sys.modules, 'matplotlib imported at start-up'\n"
           "from jaxae import tracking\n"
           "w = tracking.summary_writer_class()(sys.argv[1]); w.add_scalar('a', 1.0, 3); w.close()\n"
           "print('torch' in sys.modules)\n")
  out = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip() == "False"
  steps = [step for path in os.listdir(tmp_path) for _, step, first in tracking._records(os.path.join(tmp_path, path))
           if not first]
  assert steps == [3]
