"""Shared fixtures: the real MNIST test set beside the project, tiny configs, a fresh workdir."""

from __future__ import annotations

import os
import pathlib
import sys

import pytest

from jaxae import configs

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"


@pytest.fixture(scope="session", autouse=True)
def compile_cache(tmp_path_factory):
  """A persistent XLA compilation cache for the whole session, subprocesses included.

  Tests build the same few tiny programs again and again (every run makes fresh jitted closures);
  with the cache each distinct program is compiled once. Results are unchanged: a cache hit loads
  the very executable a compile would produce.
  """
  import jax
  from jax._src import compilation_cache

  # One cache for all pytest-xdist workers of this session (their base temp dirs share a parent), so a
  # program is compiled once, not once per worker. No size limit: a limit turns on JAX's eviction, which
  # lists the whole cache on every write (minutes over a session). An entry read while another worker
  # still writes it fails to decompress, and JAX then warns and compiles instead.
  base = tmp_path_factory.getbasetemp()
  root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
  path = str(root / "xla_cache")
  os.makedirs(path, exist_ok=True)
  settings = {"jax_compilation_cache_dir": path, "jax_persistent_cache_min_compile_time_secs": 0.0,
              "jax_persistent_cache_min_entry_size_bytes": 0}
  old = {k: getattr(jax.config, k) for k in settings}
  old_env = {k.upper(): os.environ.get(k.upper()) for k in settings}
  for k, v in settings.items():
    jax.config.update(k, v)
    os.environ[k.upper()] = str(v)
  compilation_cache.reset_cache()
  yield path
  for k, v in old.items():
    jax.config.update(k, v)
  for k, v in old_env.items():
    if v is None:
      os.environ.pop(k, None)
    else:
      os.environ[k] = v
  compilation_cache.reset_cache()


@pytest.fixture(scope="session")
def mnist_test_dir() -> str:
  """`../shared/data/mnist` (the official MNIST test set in IDX format); JAXAE_MNIST_DIR overrides it."""
  path = os.environ.get("JAXAE_MNIST_DIR", str(SHARED_MNIST))
  if not os.path.exists(os.path.join(path, "t10k-images-idx3-ubyte.gz")):
    pytest.skip(f"real MNIST test set not found at {path}")
  return path


def tiny_config(variant_file: str = "vanilla", **overrides):
  """A config from configs/<variant_file>.py shrunk for tests: 2 seeds, 2 epochs, 256 images, small MLP."""
  import importlib.util

  spec = importlib.util.spec_from_file_location("cfg", ROOT / "configs" / f"{variant_file}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.num_seeds = 2
  config.train.epochs = 2
  config.train.batch_size = 32
  config.train.progress = False
  config.train.figures = False
  config.data.max_train = 256
  config.data.max_eval = 64
  config.model.hidden = (64, 32)
  config.model.latent_dim = 8
  config.model.conv_channels = (4, 8)
  config.loss.topk = 4
  for key, value in overrides.items():
    *parents, leaf = key.split("__")
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value
  configs.validate(config)
  return config


@pytest.fixture
def tiny():
  return tiny_config


def run_main(monkeypatch, capsys, *argv):
  """Runs `python -m jaxae.main ARGV` in this process (`main.cli`); returns (exit code, stdout, stderr).

  In-process, so a variant or module defined by a test is visible to the run.
  """
  from jaxae import main

  argv = ["jaxae", *argv]
  monkeypatch.setattr(sys, "argv", argv)  # the resume hint repeats sys.argv
  monkeypatch.setattr(sys, "path", list(sys.path))  # main puts the config file's folder on it
  capsys.readouterr()
  rc = main.cli(argv)
  out, err = capsys.readouterr()
  return rc, out, err
