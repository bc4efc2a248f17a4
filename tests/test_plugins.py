"""Plug-ins: a variant defined in this file and the user's own flax modules train through `jaxae.main`;
network options (activation, dropout, max-pooling, nearest upsampling, spatial codes, heads, init)
checked against NumPy and hand-computed parameter counts."""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, run_main, tiny_config
from jaxae import configs, models, train, variants

# --- a variant of our own: reconstruction + code_weight * mean ||z||^2 -------------------------------


def _l2code_loss(config, net):
  recon = variants.reconstruction(config, net)

  def loss_fn(params, hp, batch, key, train):
    x = batch["x"]
    z, logits = variants.autoencode(net, params, x, key, train)
    rec, metrics = recon(logits, x)
    code = jnp.mean(jnp.sum(jnp.square(z), axis=-1))
    loss = rec + hp["code_weight"] * code
    return loss, {**metrics, "code_l2": code, "loss": loss}

  return loss_fn


L2CODE = variants.register(variants.Variant(
    name="test_l2code", make_loss=_l2code_loss, hparams={"code_weight": "loss.code_weight"},
    options={"loss.code_weight": 0.0}, description="a test variant"), replace=True)

TINY = ["--config.num_seeds=2", "--config.data.max_train=256", "--config.data.max_eval=64", "--config.train.batch_size=32",
        "--config.model.hidden=(64,32)", "--config.model.latent_dim=8", "--config.train.figures=False",
        "--config.train.progress=False"]


def _config_file(tmp_path, body: str) -> str:
  path = tmp_path / "my_config.py"
  path.write_text(textwrap.dedent(body))
  return str(path)


def test_variant_defined_in_this_file_trains_sweeps_and_resumes_through_main(tmp_path, monkeypatch, capsys):
  cfg = _config_file(tmp_path, """
      import test_plugins  # the user's module: registers variant 'test_l2code'
      from jaxae import configs

      def get_config():
        c = configs.base_config()
        c.variant = "test_l2code"
        return c
      """)
  wd = tmp_path / "run"
  args = [f"--config={cfg}", f"--workdir={wd}", *TINY, '--config.sweep={"loss.code_weight": [0.0, 1.0]}']
  rc, out, err = run_main(monkeypatch, capsys, *args, "--config.train.epochs=2")
  assert rc == 0, err
  summary = json.loads((wd / "summary.json").read_text())
  free, penalized = summary["settings"]
  assert free["setting"] == {"loss.code_weight": 0.0} and penalized["setting"] == {"loss.code_weight": 1.0}
  # The swept weight reaches the loss: the penalized codes are smaller, and loss = recon + w * penalty.
  assert penalized["eval"]["code_l2"]["mean"] < 0.5 * free["eval"]["code_l2"]["mean"]
  for entry, w in ((free, 0.0), (penalized, 1.0)):
    e = {k: np.asarray(v["per_seed"]) for k, v in entry["eval"].items()}
    np.testing.assert_allclose(e["loss"], e["recon_mse"] + w * e["code_l2"], rtol=1e-5)
  rc, out, err = run_main(monkeypatch, capsys, *args, "--config.train.epochs=3")
  assert rc == 0, err
  assert "resuming" in out and "epoch   3/3" in out and "epoch   1/" not in out


def test_user_encoder_decoder_pair_trains_through_main(tmp_path, monkeypatch, capsys):
  cfg = _config_file(tmp_path, """
      from jaxae import configs

      def get_config():
        c = configs.base_config()
        c.model.encoder = "user_modules:TinyEncoder"
        c.model.encoder_kwargs = {"width": 12}
        c.model.decoder = "user_modules:TinyDecoder"
        c.model.decoder_kwargs = {"rate": 0.1}
        return c
      """)
  rc, out, err = run_main(monkeypatch, capsys, f"--config={cfg}", f"--workdir={tmp_path / 'run'}", *TINY,
                          "--config.train.epochs=2")
  assert rc == 0, err
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  # encoder: TinyEncoder's Dense(784 -> 12) + jaxae's latent Dense(12 -> 8); decoder: Dense(8 -> 32) + Dense(32 -> 784)
  assert summary["parameters"] == {"encoder": 784 * 12 + 12 + 12 * 8 + 8, "decoder": 8 * 32 + 32 + 32 * 784 + 784,
                                   "total": 784 * 12 + 12 + 12 * 8 + 8 + 8 * 32 + 32 + 32 * 784 + 784}
  assert f"{784 * 12 + 12 + 12 * 8 + 8:,}" in out
  records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  assert np.mean(records[-1]["train"]["loss"]) < np.mean(records[0]["train"]["loss"])


@pytest.mark.parametrize("override, message", [
    ("--config.model.encoder=user_modules:SpatialEncoder",
     r"model.encoder 'user_modules:SpatialEncoder' returned shape \(2, 28, 28, 4\) for input \(2, 28, 28, 1\): "
     r"expected \(batch, features\)"),
    ("--config.model.decoder=user_modules:WrongDecoder",
     r"model.decoder 'user_modules:WrongDecoder' returned shape \(2, 10\) for latents \(2, 8\): expected \(2, 28, 28, 1\)"),
    ("--config.model.encoder=user_modules:Missing", "cannot import 'user_modules:Missing'"),
    ("--config.model.encoder=no_such_package.mod:Enc", "cannot import 'no_such_package.mod:Enc'"),
    ("--config.model.decoder=user_modules:NotAModule", "is not a flax.linen.Module class"),
    ("--config.model.encoder=TinyEncoder", "must be 'package.module:ClassName'"),
])
def test_user_module_breaking_the_contract_is_a_one_line_error(tmp_path, monkeypatch, capsys, override, message):
  rc, out, err = run_main(monkeypatch, capsys, f"--config={ROOT / 'configs' / 'vanilla.py'}",
                          f"--workdir={tmp_path / 'run'}", *TINY, override)
  assert rc == 2
  assert len(err.strip().splitlines()) == 1 and re.search(message, err), err
  assert not (tmp_path / "run").exists()  # refused before anything was written


def test_reference_784_100_20_parameter_count_is_printed(tmp_path, monkeypatch, capsys):
  rc, out, err = run_main(monkeypatch, capsys, f"--config={ROOT / 'configs' / 'vanilla.py'}", f"--workdir={tmp_path}",
                          *[a for a in TINY if "model." not in a], "--config.model.hidden=(100,)",
                          "--config.model.latent_dim=20", "--config.train.epochs=1")
  assert rc == 0, err
  enc, dec = 784 * 100 + 100 + 100 * 20 + 20, 20 * 100 + 100 + 100 * 784 + 784  # 784-100-20-100-784
  lines = [line.split() for line in out.splitlines() if line.startswith("parameters")]
  assert lines == [["parameters", "encoder", f"{enc:,}"], ["parameters", "decoder", f"{dec:,}"],
                   ["parameters", "total", f"{enc + dec:,}"]]
  assert json.loads((tmp_path / "summary.json").read_text())["parameters"]["total"] == 161_804 == enc + dec


def test_no_variant_name_is_compared_outside_the_variants_package():
  pattern = re.compile(r"\.variant\s*(==|!=|in\b|not in\b)|(==|!=)\s*[\w.]*\.variant\b|variant\s*(==|!=)\s*['\"]")
  assert pattern.search('if config.variant == "vae":') and pattern.search("x = 'vae' == cfg.variant")  # the detector works
  hits = [f"{p.relative_to(ROOT)}:{i}" for p in (ROOT / "src" / "jaxae").rglob("*.py") if "variants" not in p.parts
          for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
  assert hits == []


# --- network options against independent computations -----------------------------------------------


def _net(data_shape=(6,), **model):
  config = tiny_config(**{f"model__{k}": v for k, v in model.items()})
  return train.build_net(config, data_shape)


@pytest.mark.parametrize("activation", ["tanh", "elu", "silu"])
def test_mlp_activation_matches_numpy(activation):
  net = _net(hidden=(5, 4), latent_dim=3, activation=activation, output="identity")
  x = np.random.default_rng(0).normal(size=(7, 6)).astype(np.float32)
  params = net.init(jax.random.key(0), jnp.zeros((1, 6)))
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params["params"])
  f = {"tanh": np.tanh, "elu": lambda v: np.where(v > 0, v, np.expm1(v)), "silu": lambda v: v / (1 + np.exp(-v))}[activation]
  h = f(x @ p["encoder"]["Dense_0"]["kernel"] + p["encoder"]["Dense_0"]["bias"])
  h = f(h @ p["encoder"]["Dense_1"]["kernel"] + p["encoder"]["Dense_1"]["bias"])
  z = h @ p["encoder"]["latent"]["kernel"] + p["encoder"]["latent"]["bias"]
  np.testing.assert_allclose(net.encode(params, x), z, rtol=1e-5, atol=1e-6)
  h = f(z @ p["decoder"]["Dense_0"]["kernel"] + p["decoder"]["Dense_0"]["bias"])
  h = f(h @ p["decoder"]["Dense_1"]["kernel"] + p["decoder"]["Dense_1"]["bias"])
  out = h @ p["decoder"]["Dense_2"]["kernel"] + p["decoder"]["Dense_2"]["bias"]
  np.testing.assert_allclose(net.decode(params, z.astype(np.float32)), out, rtol=1e-4, atol=1e-5)


def test_dropout_only_when_training_keyed_and_unbiased():
  net = _net(hidden=(256,), latent_dim=2, dropout=0.5)
  x = np.random.default_rng(1).uniform(size=(3, 6)).astype(np.float32)
  params = net.init(jax.random.key(0), jnp.zeros((1, 6)))
  plain = np.asarray(net.encode(params, x))
  np.testing.assert_array_equal(net.encode(params, x, jax.random.key(5), train=False), plain)  # eval: no dropout
  a, b = (np.asarray(net.encode(params, x, jax.random.key(k), train=True)) for k in (5, 6))
  np.testing.assert_array_equal(a, net.encode(params, x, jax.random.key(5), train=True))  # a pure function of the key
  assert not np.allclose(a, b) and not np.allclose(a, plain)
  # Inverted dropout before the (linear) latent layer: the mean over masks is the eval output (Monte Carlo).
  draws = jax.vmap(lambda k: net.encode(params, x, k, train=True))(jax.random.split(jax.random.key(7), 4000))
  np.testing.assert_allclose(np.mean(draws, axis=0), plain, atol=4 * np.std(draws, axis=0).max() / np.sqrt(4000))


def test_keras_conv_network_structure():
  """Conv 32 + MaxPool, Conv 16 + MaxPool (7x7x16 code), Conv 16 + UpSampling, Conv 32 + UpSampling, Conv 1."""
  net = _net((28, 28, 1), backbone="conv", conv_channels=(32, 16), downsample="maxpool", upsample="nearest",
             latent_dim=0)
  params = jax.jit(net.init)(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))  # jitted: one compile, not one per op
  x = jnp.zeros((2, 28, 28, 1))
  z = jax.jit(net.encode)(params, x)
  assert z.shape == (2, 7, 7, 16) and jax.jit(net.decode)(params, z).shape == (2, 28, 28, 1)
  conv = lambda cin, cout: 9 * cin * cout + cout  # a 3x3 convolution's kernel and bias
  assert models.param_counts(params) == {"encoder": conv(1, 32) + conv(32, 16),
                                         "decoder": conv(16, 16) + conv(16, 32) + conv(32, 1), "total": 12_193}
  # The pooled code is the max over each 2x2 block of the first layer's ReLU map (checked on one layer).
  one = _net((28, 28, 1), backbone="conv", conv_channels=(4,), downsample="maxpool", upsample="nearest", latent_dim=0)
  p1 = jax.jit(one.init)(jax.random.key(1), x)
  img = jax.random.uniform(jax.random.key(2), (2, 28, 28, 1))
  k, bias = p1["params"]["encoder"]["Conv_0"]["kernel"], p1["params"]["encoder"]["Conv_0"]["bias"]
  full = jax.nn.relu(jax.lax.conv_general_dilated(img, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias)
  pooled = np.asarray(full).reshape(2, 14, 2, 14, 2, 4).max(axis=(2, 4))
  np.testing.assert_allclose(jax.jit(one.encode)(p1, img), pooled, atol=1e-5)


def test_classifier_head_and_keras_initialization():
  config = tiny_config("supervised", model__latent_dim=2, model__classifier_hidden=(64, 128),
                       model__classifier_activation="tanh", model__classifier_dropout=0.5, model__init="keras")
  net = train.build_net(config, (28, 28, 1))
  params = net.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
  counts = models.param_counts(params)
  head = [k for k in counts if k not in ("encoder", "decoder", "total")]
  assert len(head) == 1 and counts[head[0]] == (2 * 64 + 64) + (64 * 128 + 128) + (128 * 10 + 10)
  z = jnp.ones((4, 2))
  assert net.head(params, "classifier", z).shape == (4, 10)
  a, b = (net.head(params, "classifier", z, jax.random.key(k), train=True) for k in (1, 2))
  assert not np.allclose(a, b)  # the head's dropout is on when training
  w = np.asarray(params["params"]["encoder"]["Dense_0"]["kernel"])  # Glorot uniform: U(+-sqrt(6 / (fan_in + fan_out)))
  bound = np.sqrt(6 / (784 + 64))
  assert np.abs(w).max() <= bound and np.std(w) == pytest.approx(bound / np.sqrt(3), rel=0.02)
  assert not np.any(params["params"]["encoder"]["Dense_0"]["bias"])


def test_spatial_code_trains_every_deterministic_variant(tmp_path):
  from jaxae.run import train_and_evaluate

  for name in ("vanilla", "sparse"):
    config = tiny_config(name, model__backbone="conv", model__latent_dim=0, model__downsample="maxpool",
                         model__upsample="nearest", num_seeds=1, train__epochs=1)
    summary = train_and_evaluate(config, str(tmp_path / name))
    assert np.isfinite(summary["settings"][0]["eval"]["recon_mse"]["mean"])
  with pytest.raises(configs.ConfigError, match="latent_dim=0"):
    configs.validate(tiny_config(model__latent_dim=0))  # the MLP has no spatial code


def test_readme_variant_example_runs_as_written(tmp_path):
  """The README's 'Writing your own variant' files, copied verbatim, train and sweep from the command line."""
  section = (ROOT / "README.md").read_text().split("## Writing your own variant", 1)[1].split("\n## ", 1)[0]
  blocks = re.findall(r"```python\n(.*?)```", section, re.S)
  files = {b.splitlines()[0].lstrip("# ").strip(): b for b in blocks}
  assert set(files) == {"my_variants.py", "my_rae_config.py"}
  code_lines = [line for line in files["my_variants.py"].splitlines() if line.strip() and not line.startswith("#")]
  assert len(code_lines) < 60
  for name, text in files.items():
    (tmp_path / name).write_text(text)
  args = [sys.executable, "-m", "jaxae.main", f"--config={tmp_path / 'my_rae_config.py'}", f"--workdir={tmp_path / 'run'}",
          *TINY, "--config.train.epochs=1", '--config.sweep={"loss.my_rae_beta": [1e-4, 1e-2]}']
  out = subprocess.run(args, cwd=ROOT.parent, capture_output=True, text=True, timeout=300)  # not the repo: an installed jaxae
  assert out.returncode == 0, out.stderr
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert [e["setting"] for e in summary["settings"]] == [{"loss.my_rae_beta": 1e-4}, {"loss.my_rae_beta": 1e-2}]
  assert all("decoder_l2" in e["eval"] for e in summary["settings"])


def test_variants_do_not_import_configs():
  """configs imports the variant registry; the variants take their checks from jaxae.validation (below both),
  so the two never import each other (issue 21)."""
  pattern = re.compile(r"^\s*(from jaxae import .*\bconfigs\b|import jaxae\.configs|from jaxae\.configs import)", re.M)
  assert pattern.search("from jaxae import configs, losses\n")  # the detector works
  hits = [str(p.relative_to(ROOT)) for folder in ("variants", "sae_archs")
          for p in (ROOT / "src" / "jaxae" / folder).glob("*.py") if pattern.search(p.read_text())]
  assert hits == []
