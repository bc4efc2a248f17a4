"""jaxae: autoencoder experiments in JAX/Flax, every seed and hyperparameter setting in one compiled pass.

The public names are imported on first use (PEP 562): `import jaxae.errors` or the command line's
`--help` do not pay for jax, flax, orbax and matplotlib (benchmarks/startup.py).
"""

import importlib
import importlib.util

_PUBLIC = {"base_config": "jaxae.configs", "Run": "jaxae.load", "load_run": "jaxae.load",
           "train_and_evaluate": "jaxae.run"}

__all__ = ["Run", "base_config", "load_run", "train_and_evaluate"]
__version__ = "0.1.0"


def __getattr__(name):
  if name in _PUBLIC:
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value
  if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
    return importlib.import_module(f"{__name__}.{name}")  # `import jaxae; jaxae.analysis.encode(...)` still works
  raise AttributeError(f"module 'jaxae' has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + list(_PUBLIC))
