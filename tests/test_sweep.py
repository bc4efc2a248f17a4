"""Hyperparameter sweeps: one compilation for the whole grid, equal to separate runs, static groups, errors."""

import json
import os

import numpy as np
import pytest

import dataclasses

from jaxae import configs, sweep, variants
from jaxae.variants import base as variants_base
from jaxae.run import train_and_evaluate

from conftest import tiny_config


def _per_seed(summary, setting, split="eval", metric="loss"):
  entry = next(e for e in summary["settings"] if e["setting"] == setting)
  return np.asarray(entry[split][metric]["per_seed"])


def test_grid_results_equal_separate_runs(tmp_path):
  grid = tiny_config("vae", sweep=json.dumps({"loss.beta": [0.5, 2.0], "optimizer.learning_rate": [1e-3, 3e-3]}),
                     train__figures=True)
  swept = train_and_evaluate(grid, str(tmp_path / "grid"))
  assert len(swept["settings"]) == 4 and len(swept["members"]) == 8
  for beta, lr in [(0.5, 1e-3), (2.0, 3e-3)]:
    alone = train_and_evaluate(tiny_config("vae", loss__beta=beta, optimizer__learning_rate=lr),
                               str(tmp_path / f"alone_{beta}_{lr}"))
    setting = {"loss.beta": beta, "optimizer.learning_rate": lr}
    for split, metric in [("train", "loss"), ("eval", "loss"), ("eval", "kl")]:
      np.testing.assert_allclose(_per_seed(swept, setting, split, metric), _per_seed(alone, {}, split, metric),
                                 rtol=2e-5, err_msg=f"{setting} {split}/{metric}")
  # The settings really differ (beta and learning rate reach the loss and the optimizer).
  assert not np.allclose(_per_seed(swept, {"loss.beta": 0.5, "optimizer.learning_rate": 1e-3}),
                         _per_seed(swept, {"loss.beta": 0.5, "optimizer.learning_rate": 3e-3}))
  assert os.path.exists(tmp_path / "grid" / "figures" / "sweep_kl.png")  # heatmap for two keys


def test_one_compilation_for_the_whole_grid(tmp_path, monkeypatch):
  traces = []
  denoising = variants.get("denoising")
  make = denoising.make_loss

  def counting(config, model):
    fn = make(config, model)

    def loss_fn(*args, **kwargs):
      traces.append(1)  # runs at trace time only: jit-compiled calls never reach Python
      return fn(*args, **kwargs)

    return loss_fn

  monkeypatch.setitem(variants_base._REGISTRY, "denoising", dataclasses.replace(denoising, make_loss=counting))
  train_and_evaluate(tiny_config("denoising"), str(tmp_path / "one"))
  single = len(traces)
  traces.clear()
  train_and_evaluate(tiny_config("denoising", sweep='{"noise.level": [0.1, 0.2, 0.3, 0.5, 0.7, 0.9]}'),
                     str(tmp_path / "six"))
  assert len(traces) == single <= 4  # init shapes, one train chunk, one evaluation (+ a remainder batch)


def test_shape_changing_keys_become_separate_groups(tmp_path, capsys):
  config = tiny_config("vae", sweep='{"model.latent_dim": [2, 4], "loss.beta": [1.0, 4.0]}', train__figures=True)
  groups = sweep.groups(config)
  assert [g.name for g in groups] == ["model.latent_dim=2", "model.latent_dim=4"]
  assert [len(g.members) for g in groups] == [4, 4]
  out = train_and_evaluate(config, str(tmp_path))
  assert "separately compiled groups" in capsys.readouterr().out
  assert set(out["groups"]) == {"model.latent_dim=2", "model.latent_dim=4"}
  assert json.loads((tmp_path / "groups" / "model.latent_dim=4" / "config.json").read_text())["model"]["latent_dim"] == 4
  assert os.path.exists(tmp_path / "sweep_summary.json") and os.path.exists(tmp_path / "figures" / "sweep_kl.png")


def test_member_hparams_are_setting_major():
  config = tiny_config("sparse", sweep='{"loss.sparsity_weight": [0.0, 0.1, 1.0]}')
  (group,) = sweep.groups(config)
  hp = sweep.member_hparams(group)
  np.testing.assert_array_equal(hp["sparsity_weight"], np.float32([0, 0, 0.1, 0.1, 1, 1]))
  np.testing.assert_array_equal(hp["learning_rate"], np.float32([1e-3] * 6))
  assert group.members == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]


@pytest.mark.parametrize("raw, message", [
    ('{"loss.gamma": [1]}', "unknown config key 'loss.gamma'"),
    ('{"loss.beta": []}', "non-empty list"),
    ('{"loss.beta": [[1, 2]]}', "must be a number"),
    ('{"loss.beta": ["big"]}', "must be a number"),
    ('{"loss.beta": [1, 1.0]}', "lists a value twice"),
    ('{"loss.beta": [0.5, -1]}', "sweep setting {'loss.beta': -1}: loss.beta=-1.0 must be a non-negative number"),
    ('{"loss": [1]}', "cannot be swept"),
    ('{"model.latent_dim": [2, -3]}', "model.latent_dim=-3 must be a non-negative integer"),
    ('{"loss.sparsity_weight": [0.1]}', "has no effect on variant 'vae'"),
    ("loss.beta=1,2", "not a JSON object"),
])
def test_bad_sweeps_are_clear_errors(raw, message):
  config = tiny_config("vae")
  config.sweep = raw
  with pytest.raises(configs.ConfigError, match=message.replace("[", r"\[")):
    configs.validate(config)
    sweep.groups(config)
