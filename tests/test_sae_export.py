"""SAE exports that splice into a model: the hook name and the rest of SAELens's metadata (flags over the
run's config, refused when implausible, a warning when missing), the feature density (sparsity.safetensors
as SAELens writes it, against a NumPy count), and Normalizer.inverse (raw units from Python)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import run_main
from jaxae import analysis, configs, export, load, sae
from jaxae import data as data_lib
from jaxae.sources.base import Split
from test_sae import sae_config, saelens_forward

# --- Normalizer.inverse -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["standardize", "minmax", "unit_mean_square"])
def test_normalizer_inverse_undoes_apply(kind):
  rng = np.random.default_rng(0)
  x = (rng.standard_normal((50, 6)) * [1, 2, 3, 4, 5, 6] + [-9, 0, 3, 7, 100, 0.5]).astype(np.float32)
  n = data_lib.Normalizer(kind).fit(Split(x))
  np.testing.assert_allclose(n.inverse(n.apply(x)), x, rtol=1e-6, atol=1e-6 * 100)
  back = np.asarray(n.inverse(jnp.asarray(n.apply(x))))  # jax arrays too
  np.testing.assert_allclose(back, x, rtol=1e-6, atol=1e-6 * 100)
  assert n.inverse(n.apply(x)).dtype == np.float32


def test_normalizer_inverse_is_scale_times_value_plus_offset():
  n = data_lib.Normalizer("standardize", np.asarray([1.0, -2.0], np.float32), np.asarray([3.0, 0.5], np.float32))
  np.testing.assert_array_equal(n.inverse(np.asarray([[1.0, 1.0], [0.0, -4.0]], np.float32)), [[4.0, -1.5], [1.0, -4.0]])
  u8 = np.asarray([[0, 255]], np.uint8)
  np.testing.assert_array_equal(data_lib.Normalizer().inverse(u8), [[0.0, 1.0]])  # 'none': to_float's units
  with pytest.raises(data_lib.DataError, match="3 features"):
    n.inverse(np.zeros((1, 3), np.float32))
  with pytest.raises(ValueError, match="not fitted"):
    data_lib.Normalizer("minmax").inverse(np.zeros((1, 2), np.float32))


# --- hook names and the metadata ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["blocks.8.hook_resid_pre", "blocks.3.attn.hook_z", "hook_embed",
                                  "blocks.0.mlp.hook_post", "ln_final.hook_normalized", "blocks.11.hook_resid_post"])
def test_transformer_lens_hook_names_are_accepted(name):
  assert export.check_hook_name(name) == name


@pytest.mark.parametrize("name", ["", " ", "\t", "blocks.8", "resid_pre", "blocks.8.hook_resid pre", "blocks..hook_z",
                                  ".hook_z", "blocks.8.hook_", " blocks.8.hook_resid_pre", "blocks.8.hook_resid_pre."])
def test_implausible_hook_names_are_one_line_errors(name):
  with pytest.raises(export.ExportError) as e:
    export.check_hook_name(name, "--hook_name")
  message = str(e.value)
  assert "\n" not in message and message.startswith(f"--hook_name={name!r}") and "blocks.8.hook_resid_pre" in message


def test_splice_metadata_flags_override_the_config_and_unset_is_null():
  config = sae_config("topk", sae__hook_name="blocks.2.hook_resid_post", sae__model_name="gpt2", sae__context_size=64)
  meta = export.splice_metadata(config)
  assert meta == {"hook_name": "blocks.2.hook_resid_post", "model_name": "gpt2", "dataset_path": None,
                  "context_size": 64, "prepend_bos": True, "model_from_pretrained_kwargs": {}}
  meta = export.splice_metadata(config, {"hook_name": "blocks.0.attn.hook_z", "model_name": None,
                                         "dataset_path": "NeelNanda/pile-10k", "context_size": None, "prepend_bos": False})
  assert (meta["hook_name"], meta["model_name"], meta["dataset_path"], meta["context_size"], meta["prepend_bos"]) == (
      "blocks.0.attn.hook_z", "gpt2", "NeelNanda/pile-10k", 64, False)
  assert export.splice_metadata(sae_config("topk"))["hook_name"] is None  # the default: none
  with pytest.raises(export.ExportError, match=r"^--hook_name='' is not a TransformerLens hook name"):
    export.splice_metadata(config, {"hook_name": ""})  # given explicitly, empty: refused
  with pytest.raises(export.ExportError, match="--context_size=-1 must be a non-negative integer"):
    export.splice_metadata(config, {"context_size": -1})
  cfg = export.saelens_cfg(config, 12, 24, export.splice_metadata(config, {"hook_name": "blocks.0.attn.hook_z"}))
  assert cfg["reshape_activations"] == "hook_z"  # SAELens flattens the heads of hook_z activations
  assert export.saelens_cfg(config, 12, 24, meta | {"hook_name": "blocks.0.hook_resid_pre"})["reshape_activations"] == "none"


def test_a_bad_hook_name_in_the_config_is_refused_before_training():
  with pytest.raises(configs.ConfigError, match=r"^sae.hook_name='  ' is not a TransformerLens hook name"):
    sae_config("topk", sae__hook_name="  ")
  with pytest.raises(configs.ConfigError, match="sae.context_size=-5 must be a non-negative integer"):
    sae_config("topk", sae__context_size=-5)


# --- feature density --------------------------------------------------------------------------------

def test_density_and_log_sparsity_closed_form():
  counts = np.asarray([[0, 3, 4, 1]])
  np.testing.assert_array_equal(export.feature_density(counts, 4), [[0, 0.75, 1, 0.25]])
  np.testing.assert_allclose(export.log_sparsity([0.0, 0.75, 1.0, 0.25]),
                             [-10, np.log10(0.75 + 1e-10), 1e-10 / np.log(10), np.log10(0.25)], rtol=1e-6, atol=1e-9)


def _np_density(folder, x):
  """The fraction of the rows of x on which each latent of the exported SAE fires: NumPy, from the files."""
  z, _, _, _ = saelens_forward(folder, np.asarray(x, np.float64))
  return np.mean(z != 0, axis=0)


# --- the command line, end to end ---------------------------------------------------------------------

def test_export_cli_splices_counts_densities_and_inverts_the_normalizer(tmp_path, monkeypatch, capsys):
  from safetensors.numpy import load_file

  rng = np.random.default_rng(9)
  x, _ = sae.synthetic_features(480, 12, 24, 2.0, seed=3)
  x = x * 4 + rng.standard_normal(12).astype(np.float32)  # an offset: the normalizer's fold and inverse matter
  np.save(tmp_path / "acts.npy", x)
  other = (rng.standard_normal((70, 12)) * 3).astype(np.float32)
  np.save(tmp_path / "other.npy", other)
  wd = tmp_path / "run"
  rc, _, err = run_main(monkeypatch, capsys, "--config=configs/sae.py", f"--config.data.source=npy:{tmp_path}/acts.npy",
                        f"--workdir={wd}", "--config.num_seeds=2", "--config.model.expansion=2", "--config.sae.k=3",
                        "--config.train.epochs=1", "--config.train.batch_size=64", "--config.train.progress=False",
                        "--config.train.figures=False", "--config.data.normalize=standardize")
  assert rc == 0, err

  # no hook name anywhere: a one-line warning, and the export is written
  assert export.main([f"--workdir={wd}", f"--out={tmp_path}/plain", "--density_sample=none"]) == 0
  err = capsys.readouterr().err.strip()
  assert err == export.NO_HOOK_WARNING and "attach these SAEs to nothing" in err
  assert json.loads((tmp_path / "plain" / "seed0" / "cfg.json").read_text())["metadata"]["hook_name"] is None
  assert not (tmp_path / "plain" / "seed0" / "sparsity.safetensors").exists()

  # an implausible hook name, or a density sample of the wrong shape: one line, nothing written
  assert export.main([f"--workdir={wd}", f"--out={tmp_path}/bad", "--hook_name=  "]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "--hook_name='  ' is not a TransformerLens hook name" in err
  np.save(tmp_path / "wide.npy", np.ones((5, 13), np.float32))
  assert export.main([f"--workdir={wd}", f"--out={tmp_path}/bad", "--hook_name=blocks.0.hook_resid_pre",
                      f"--density_sample=npy:{tmp_path}/wide.npy"]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "shape (13,)" in err and "(12,)" in err
  assert not (tmp_path / "bad").exists()

  # the flags: in the metadata where SAELens reads them; the density over the run's training split
  assert export.main([f"--workdir={wd}", "--hook_name=blocks.0.hook_resid_pre", "--model_name=tiny-stories-1M",
                      "--dataset_path=roneneldan/TinyStories", "--context_size=128", "--no-prepend_bos"]) == 0
  out, err = capsys.readouterr()
  assert "warning" not in err and "sparsity.safetensors" in out
  run = load.load_run(str(wd))
  train_x = np.asarray(data_lib.load(run.config.data).train.x)
  assert len(train_x) < len(x)  # the run's training split (a part is held out), not the whole source
  eval_x = np.asarray(data_lib.load(run.config.data).eval.x)
  for i, member in enumerate(run.members):
    folder = wd / "export" / "saelens" / f"seed{member['seed']}"
    meta = json.loads((folder / "cfg.json").read_text())["metadata"]
    assert (meta["hook_name"], meta["model_name"], meta["dataset_path"], meta["context_size"], meta["prepend_bos"]) == (
        "blocks.0.hook_resid_pre", "tiny-stories-1M", "roneneldan/TinyStories", 128, False)
    assert meta["jaxae_density_examples"] == len(train_x)
    expected = _np_density(folder, train_x)
    assert np.any((expected > 0) & (expected < 1))  # densities that say something
    density = np.load(folder / "feature_density.npy")
    assert density.dtype == np.float32 and density.shape == (24,)
    np.testing.assert_array_equal(density, expected.astype(np.float32))  # count / N, rounded once
    sparsity = load_file(str(folder / "sparsity.safetensors"))
    assert set(sparsity) == {"sparsity"} and sparsity["sparsity"].dtype == np.float32
    np.testing.assert_allclose(sparsity["sparsity"], np.log10(density.astype(np.float64) + 1e-10), rtol=1e-6)

    # Normalizer.inverse: the loaded model's reconstruction in raw units = the folded export's on raw data
    params = analysis.member_params(run.params, i)
    recon = run.model.normalizer.inverse(analysis.reconstruct(run.model, params, eval_x, run.config))
    _, x_hat, _, _ = saelens_forward(folder, eval_x)
    np.testing.assert_allclose(recon, x_hat, rtol=1e-4, atol=1e-4)
    assert np.abs(recon - analysis.reconstruct(run.model, params, eval_x, run.config)).max() > 0.1  # it did something

  # --density_sample and --density_rows: another source, a subset of its rows
  assert export.main([f"--workdir={wd}", f"--out={tmp_path}/other", "--hook_name=blocks.0.hook_resid_pre",
                      f"--density_sample=npy:{tmp_path}/other.npy", "--density_rows=50"]) == 0
  rows = np.sort(np.random.default_rng(0).permutation(70)[:50])  # data.random_subset's rows (seed 0)
  for member in run.members:
    folder = tmp_path / "other" / f"seed{member['seed']}"
    assert json.loads((folder / "cfg.json").read_text())["metadata"]["jaxae_density_examples"] == 50
    np.testing.assert_array_equal(np.load(folder / "feature_density.npy"),
                                  _np_density(folder, other[rows]).astype(np.float32))
