"""The built-in config files, shipped inside the package, and the loader of any config file.

`--config=vae` names a built-in (`jaxae/config_files/vae.py`), so an installed jaxae runs every config
without the repository; `--config=path/to/file.py` is the user's own file. Either may take an argument
after a colon (`--config=keras_dense:supervised` calls `get_config('supervised')`). The repository's
`configs/*.py` import these files, so `--config=configs/vae.py` keeps working from a clone.

Every way loading can fail (no such file or built-in, a syntax error, an exception in the file or in
`get_config`, no `get_config`, a result that is not a ConfigDict) is one ConfigError line naming the file.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import ml_collections

from jaxae import errors

HERE = os.path.dirname(os.path.abspath(__file__))


def builtin() -> list[str]:
  """Names of the built-in configs: ['conv', 'contractive', ...]."""
  return sorted(f[:-3] for f in os.listdir(HERE) if f.endswith(".py") and not f.startswith("_"))


def split_spec(spec: str) -> tuple[str, str]:
  """'file.py:arg' -> ('file.py', 'arg'); 'vae' -> ('vae', '')."""
  path, sep, arg = spec.rpartition(":") if ":" in spec else (spec, "", "")
  if sep and (os.sep in arg or arg.endswith(".py")):  # a colon inside a path, not an argument
    return spec, ""
  return path, arg


def resolve(path: str) -> str:
  """The file a --config value names: an existing file, or a built-in's name. Raises ConfigError."""
  expanded = os.path.expanduser(path)
  if os.path.isfile(expanded):
    return expanded
  if path in builtin():
    return os.path.join(HERE, path + ".py")
  if os.path.isdir(expanded):
    raise errors.ConfigError(f"--config={path!r} is a directory, not a config file")
  raise errors.ConfigError(f"--config={path!r}: no such file, and not a built-in config (one of {', '.join(builtin())})")


def load(spec: str) -> ml_collections.ConfigDict:
  """The ConfigDict of `spec` ('vae', 'configs/vae.py', 'my.py:arg'). Raises ConfigError (one line)."""
  if not spec:
    raise errors.ConfigError("--config is required: a built-in name (" + ", ".join(builtin()) + ") or a config file")
  path, arg = split_spec(spec)
  filename = resolve(path)
  name = "jaxae_config_" + "".join(c if c.isalnum() else "_" for c in os.path.abspath(filename))
  try:
    module_spec = importlib.util.spec_from_file_location(name, filename)
    if module_spec is None:
      raise ImportError("not a Python file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickling-free introspection look modules up by name
    module_spec.loader.exec_module(module)
  except errors.BadInput as e:
    raise errors.ConfigError(f"--config={spec}: {e}") from None
  except BaseException as e:  # noqa: BLE001 - the user's file: any failure is theirs to fix
    if isinstance(e, (KeyboardInterrupt, SystemExit)):
      raise
    where = f" (line {e.lineno})" if isinstance(e, SyntaxError) and e.lineno else ""
    raise errors.ConfigError(f"--config={spec}: cannot load {filename}{where}: {type(e).__name__}: "
                             f"{errors.one_line(e)}") from None
  get_config = getattr(module, "get_config", None)
  if not callable(get_config):
    raise errors.ConfigError(f"--config={spec}: {filename} defines no get_config()")
  try:
    config = get_config(arg) if arg else get_config()
  except errors.BadInput as e:
    raise errors.ConfigError(f"--config={spec}: {e}") from None
  except Exception as e:  # noqa: BLE001
    raise errors.ConfigError(f"--config={spec}: get_config({arg!r}) in {filename} raised {type(e).__name__}: "
                             f"{errors.one_line(e)}" if arg else
                             f"--config={spec}: get_config() in {filename} raised {type(e).__name__}: "
                             f"{errors.one_line(e)}") from None
  if not isinstance(config, ml_collections.ConfigDict):
    raise errors.ConfigError(f"--config={spec}: get_config() in {filename} returned a {type(config).__name__}, "
                             f"expected an ml_collections.ConfigDict (start from jaxae.configs.base_config())")
  return config
