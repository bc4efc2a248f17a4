"""Command line: `jaxae --config=vae --workdir=runs/vae [--config.KEY=VALUE ...]` (or `python -m jaxae.main`).

`--config` is a built-in config's name (`python -m jaxae.config_files` lists them) or a config file,
optionally with an argument (`--config=keras_dense:supervised`). `--config.KEY=VALUE` overrides any key
of it. Everything the user types is parsed here, before absl or jax see it, so that a typo, an unknown
key, a value of the wrong type or a config file that does not load is one line and exit status 2.

Exit status (errors.py has the table): 0 success; 1 every member diverged; 2 bad input (one-line error,
nothing trained or changed); 70 internal error (a bug, traceback printed); 74 environment failure (disk
full, read-only filesystem, permissions); 75 the workdir is in use by another run; 128 + signal number
after a polite stop (SIGINT 130, SIGTERM 143).
"""

from __future__ import annotations

import ast
import sys

from absl import app, flags

from jaxae import errors

_CONFIG = flags.DEFINE_string("config", None, "A built-in config (vae, vanilla, conv, ...: python -m "
                              "jaxae.config_files lists them) or a config file, optionally with an argument "
                              "(FILE.py:ARG). Override its keys with --config.KEY=VALUE.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and figures.")
_FRESH = flags.DEFINE_bool("fresh", False, "Discard what jaxae wrote in --workdir and start over.")
_ON_CORRUPT = flags.DEFINE_enum("on_corrupt", "fail", ["fail", "previous"],
                                "A damaged latest checkpoint: stop with an error, or resume from the previous one.")
FREE_FORM_PREFIXES = ("model.encoder_kwargs.", "model.decoder_kwargs.")  # configs.FREE_FORM groups

_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _enable_compilation_cache() -> None:
  """jax's persistent compilation cache in ~/.cache/jaxae/xla unless the user configured one (or set
  JAXAE_COMPILATION_CACHE=''): a repeated or resumed run skips its compiles. Every program is cached, also
  the small ones (evaluation, images, figures) that compile in well under a second: together they cost a
  one-epoch run ~0.9 s (benchmarks/STARTUP.md).

  The cache holds executables that jax loads and runs, so it must be a directory only this user can
  write: created with mode 0700; one owned by another user, or writable by group or others, is not
  used (a warning says so, and the run compiles as if there were no cache).
  """
  import os

  import jax

  path = os.environ.get("JAXAE_COMPILATION_CACHE", os.path.expanduser("~/.cache/jaxae/xla"))
  if not path or jax.config.jax_compilation_cache_dir:
    return
  problem = private_directory(path)
  if problem:
    print(f"warning: not using the compilation cache {path}: {problem}", file=sys.stderr)
    return
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def private_directory(path: str) -> str | None:
  """Creates `path` (mode 0700) if missing; returns why it is not private to this user, or None."""
  import os
  import stat

  try:
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.stat(path)
  except OSError as e:
    return f"cannot create it ({e.strerror})"
  if not stat.S_ISDIR(st.st_mode):
    return "not a directory"
  if hasattr(os, "getuid") and st.st_uid != os.getuid():
    return f"owned by another user (uid {st.st_uid})"
  if st.st_mode & 0o022:
    return f"writable by group or others (mode {stat.S_IMODE(st.st_mode):o}; chmod 700 it to use it)"
  return None


def _parse_value(key: str, text: str, current):
  """`text` typed for config key `key`, converted to the type of its current value. Raises ConfigError."""
  import ml_collections

  kind = type(current).__name__
  if isinstance(current, ml_collections.ConfigDict):
    raise errors.ConfigError(f"--config.{key}={text!r}: {key!r} is a group of keys; set one of them "
                             f"(--config.{key}.KEY=VALUE)")
  try:
    if isinstance(current, bool):
      if text.strip().lower() not in _TRUE + _FALSE:
        raise ValueError
      return text.strip().lower() in _TRUE
    if isinstance(current, int):
      return int(text)
    if isinstance(current, float):
      return float(text)
    if isinstance(current, (tuple, list)):
      value = ast.literal_eval(text) if text.strip() else ()
      value = value if isinstance(value, (tuple, list)) else (value,)
      return tuple(value)
    if isinstance(current, str):
      return text
    if current is None:
      try:
        return ast.literal_eval(text)
      except (ValueError, SyntaxError):
        return text
  except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
    kind = {"int": "an integer", "float": "a number", "bool": "true or false", "tuple": "a tuple such as (64, 32)",
            "list": "a list such as [64, 32]"}.get(kind, kind)
    raise errors.ConfigError(f"--config.{key}={text!r} must be {kind}") from None
  raise errors.ConfigError(f"--config.{key} cannot be set on the command line (a {kind}): set it in a config file")


def apply_override(config, key: str, text: str) -> None:
  """Sets dotted `key` of `config` from the command-line text `text`. Raises ConfigError naming the key."""
  import ml_collections

  *parents, leaf = key.split(".")
  if not key or not all(key.split(".")):
    raise errors.ConfigError(f"--config.{key}={text!r}: not a config key")
  node = config
  for i, part in enumerate(parents):
    if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
      raise errors.ConfigError(f"unknown config key {'.'.join(parents[:i + 1])!r} (--config.{key})")
    node = node[part]
  free = any((key + ".").startswith(p) and key + "." != p for p in FREE_FORM_PREFIXES)
  if leaf not in node:
    if not free:
      raise errors.ConfigError(f"unknown config key {key!r} (--config.{key})")
    node[leaf] = _parse_value(key, text, None)
    return
  node[leaf] = _parse_value(key, text, node[leaf])


def split_argv(argv: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
  """(arguments for absl, [(key, text)] of the --config.KEY=VALUE overrides in order)."""
  rest, overrides = list(argv[:1]), []
  i = 1
  while i < len(argv):
    arg = argv[i]
    if arg == "--":
      rest += argv[i:]
      break
    if arg.startswith("--config."):
      key, eq, text = arg[len("--config."):].partition("=")
      if not eq:
        if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
          raise errors.ConfigError(f"{arg} needs a value: {arg}=VALUE")
        i += 1
        text = argv[i]
      overrides.append((key, text))
    else:
      rest.append(arg)
    i += 1
  return rest, overrides


def parse(argv: list[str]):
  """(config with overrides applied, leftover arguments) of a command line (argv[0] is the program).

  Raises errors.ConfigError (one line) for anything wrong: unknown flags or keys, values of the wrong type,
  a missing or broken config file, a missing --workdir.
  """
  from jaxae import config_files

  absl_args, overrides = split_argv(argv)
  flags.FLAGS.unparse_flags()
  try:
    rest = flags.FLAGS(absl_args)
  except flags.Error as e:
    raise errors.ConfigError(errors.one_line(e)) from None
  if len(rest) > 1:
    raise errors.ConfigError(f"unexpected arguments {rest[1:]}: flags are --config, --workdir, --fresh, "
                             f"--on_corrupt and --config.KEY=VALUE")
  if not _CONFIG.value:
    raise errors.ConfigError("--config is required: a built-in name (" + ", ".join(config_files.builtin()) +
                             ") or a config file")
  if not _WORKDIR.value:
    raise errors.ConfigError("--workdir is required: the directory for checkpoints, metrics and figures")
  config = config_files.load(_CONFIG.value)
  for key, text in overrides:
    apply_override(config, key, text)
  return config, rest


def _one_line(e: BaseException) -> str:
  return " ".join(line.strip() for line in str(e).strip().splitlines() if line.strip())


def main(argv, config=None) -> int:
  """Runs a parsed command line: `config` from `parse` (argv: leftover arguments). Returns the exit status."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  import signal

  quiet_libraries()

  def body() -> int:
    from jaxae import distributed

    distributed.maybe_initialize()  # a multi-host job (Slurm, TPU pod, JAXAE_COORDINATOR): before any device use
    _enable_compilation_cache()
    from jaxae import run as run_lib  # Imported after flag parsing: `--help` stays fast.

    run_lib.stop_if_asked("stopped before training started; nothing was written")
    summary = run_lib.train_and_evaluate(config, _WORKDIR.value, fresh=_FRESH.value, on_corrupt=_ON_CORRUPT.value)
    from jaxae import sharding

    quiet = not sharding.is_primary()  # a multi-host job reports once, from process 0
    if "interrupted" in summary:
      import shlex

      resume = [a for a in sys.argv[1:] if a not in ("--fresh", "--fresh=true", "--fresh=True")]  # would wipe it
      if not quiet:
        print(f"to resume: {shlex.join([sys.executable, '-m', 'jaxae.main', *resume])}")
      return 128 + int(getattr(signal, summary["interrupted"]))
    groups = summary["groups"] if "groups" in summary else {"": summary}
    from jaxae import report

    for name, s in groups.items() if not quiet else ():
      if name:  # a sweep over keys that change shapes: one table per compiled group, named
        print(f"== group {name}")
      print(report.format_table(s))
    if all(len(e["healthy_seeds"]) == 0 for s in groups.values() for e in s["settings"]):
      print("error: every member diverged", file=sys.stderr)
      return errors.EXIT_DIVERGED
    if not quiet:
      print(f"wrote {_WORKDIR.value}/summary.json, metrics.jsonl, figures/ and checkpoints/")
    # A first Ctrl-C after the last epoch: the results are complete; figures not yet drawn were skipped.
    run_lib.stop_if_asked("stopped after training finished: summary.json and the checkpoints are written, "
                          "figures may be missing")
    return errors.EXIT_OK

  return guarded(body, "the work since the last checkpoint is lost", "the last checkpoint is intact")


def quiet_libraries() -> None:
  """Silences what orbax, TensorStore and absl print that is noise to a user: orbax logs every save at
  INFO and a failed background save at ERROR with tracebacks from each of its threads (the same error
  reaches the main thread when the save is awaited, and is reported there in one line)."""
  from absl import logging

  logging.set_verbosity(logging.FATAL)


def guarded(body, lost: str = "what it had not written yet is lost", intact: str = "what it wrote is complete") -> int:
  """Runs a command's `body` (returns the exit status) and turns what it raises into one line on stderr and
  the exit status of errors.py's table: BadInput 2 (WorkdirBusy 75), the environment 74, a stop by signal
  128 + its number, a closed stdout 141, anything else 70 with the traceback. `lost`: what a second Ctrl-C
  loses; `intact`: what a closed stdout leaves."""
  import signal

  from jaxae import signals

  try:
    return body()
  except errors.BadInput as e:
    print(f"error: {_one_line(e)}", file=sys.stderr)
    return getattr(e, "exit_status", errors.EXIT_BAD_INPUT)
  except signals.Stopped as e:
    _close_checkpoints()
    print(f"error: {signals.describe(e.signum)}: {_one_line(e)}", file=sys.stderr)
    return 128 + int(e.signum)
  except KeyboardInterrupt:
    _close_checkpoints()
    which = "a second Ctrl-C" if signals.received() is not None else "Ctrl-C"
    print(f"error: stopped at once by {which}; {lost}", file=sys.stderr)
    return 128 + int(signal.SIGINT)
  except BrokenPipeError:  # stdout's reader went away (`| head`): stop as a SIGPIPE would, without a traceback
    _close_checkpoints()
    try:
      print(f"error: standard output was closed (the pipe's reader exited); stopped, {intact}", file=sys.stderr)
    except OSError:
      pass
    return 128 + int(signal.SIGPIPE)
  except Exception as e:  # noqa: BLE001 - classified: the environment, or a bug
    _close_checkpoints()  # let orbax's background writes end before the process does
    message = errors.environment_message(e)
    if message is None:
      import traceback

      traceback.print_exc()
      print(f"error: internal error ({type(e).__name__}); please report it with the traceback above",
            file=sys.stderr)
      return errors.EXIT_INTERNAL
    print(f"error: {_one_line(message)} (environment failure; what was saved before is intact)", file=sys.stderr)
    return errors.EXIT_ENVIRONMENT


def _close_checkpoints() -> None:
  """Lets orbax's background writes end before the process does (only if orbax was loaded at all)."""
  if "jaxae.checkpoints" in sys.modules:
    sys.modules["jaxae.checkpoints"].close_all()


def _config_dir_on_path(argv: list[str]) -> None:
  """Puts the --config file's folder on sys.path, so the config can import the user's own modules
  (a variant or network defined beside it) wherever the command runs from."""
  import os

  from jaxae import config_files

  for i, arg in enumerate(argv):
    value = arg.split("=", 1)[1] if arg.startswith("--config=") else (argv[i + 1] if arg == "--config" and i + 1 < len(argv) else None)
    if value:
      path = config_files.split_spec(value)[0]  # 'file.py:arg' passes `arg` to get_config
      if os.path.isfile(path):
        sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
      return


_HELP = ("-h", "-?", "--help", "--helpshort", "--helpfull")


def _help() -> str:
  return (__doc__.split("\n\n")[0] + "\n\n" + flags.FLAGS.module_help(sys.modules[__name__]) +
          "\n\n  --config.KEY=VALUE: overrides a key of the config (e.g. --config.model.latent_dim=2); the README "
          "lists every key.")


def cli(argv: list[str]) -> int:
  """The whole command line in this process: parse, run, exit status (what `jaxae` / `python -m jaxae.main` do).

  SIGINT and SIGTERM are noted from the start (jaxae.signals) and the previous handlers restored at the end.
  """
  from jaxae import signals

  if any(a in _HELP for a in argv[1:]):
    print(_help())
    return errors.EXIT_OK
  restore = signals.install()
  try:
    return guarded(lambda: _parse_and_run(argv))
  finally:
    restore()


def _parse_and_run(argv: list[str]) -> int:
  from jaxae import signals

  _config_dir_on_path(argv)
  config, rest = parse(argv)
  signals.check("stopped before training started; nothing was written")
  return main(rest, config)


def run() -> None:
  """The console script `jaxae` (and `python -m jaxae.main`): `cli` on sys.argv, then `exit_now`.

  Signal handlers go in first, before absl, jax or the config are imported: a Ctrl-C in the first
  seconds is a clean stop (jaxae.signals), never a traceback from inside an import.
  """
  from jaxae import signals

  if any(a in _HELP for a in sys.argv[1:]):
    print(_help())
    sys.exit(errors.EXIT_OK)
  signals.install(exit_at_once=True)
  exit_now(guarded(lambda: _parse_and_run(sys.argv)))


def exit_now(status: int) -> None:
  """Ends a finished command with `status`, skipping the interpreter's teardown when that is safe.

  By the time a command returns, everything jaxae writes is on disk and closed (atomic file writes,
  orbax finished and closed, event writers closed). What is left is finalizing jax/XLA, MLIR and a
  thousand modules: ~0.6 s of every command on a 2-core machine (benchmarks/RESULTS.md, end to end).
  So: run the atexit handlers (logging and other libraries flush there), flush stdout/stderr, and
  os._exit. If any other non-daemon thread is still alive (a user's plug-in), exit normally instead.
  """
  import atexit
  import os
  import threading

  if any(t is not threading.main_thread() and t.is_alive() and not t.daemon for t in threading.enumerate()):
    sys.exit(status)
  atexit._run_exitfuncs()
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError):  # a closed pipe (`| head`) or stream: nothing more can reach it
      pass
  os._exit(status)


if __name__ == "__main__":
  run()
