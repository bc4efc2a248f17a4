"""Ctrl-C and SIGTERM from the first moment of a command until training's own handler takes over.

Python's default turns a Ctrl-C into a KeyboardInterrupt wherever the main thread happens to be: in
the middle of importing jax, of loading data, of XLA's initialization. Unwinding from there has printed
tracebacks and crashed the interpreter's teardown. So the command line installs `handler` first: a
first SIGINT or SIGTERM is only noted (one line on stdout), and the run stops at the next safe point
(`check`, before anything is written, or training's polite stop, which saves a checkpoint); a second
Ctrl-C stops at once (the console script exits on the spot: a KeyboardInterrupt unwinding through a C
extension's initialization has crashed the interpreter). run.py's handler continues from what was noted
here, and raises KeyboardInterrupt for a second Ctrl-C while training (main.guarded reports it).
Nothing here imports jax.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Callable

_received: int | None = None  # the first SIGINT / SIGTERM, if one came
_installed = False  # only a command line (install) notes signals: a Python caller's process keeps no state
_exit_at_once = False  # a second Ctrl-C ends the process (the console script), or raises KeyboardInterrupt


class Stopped(BaseException):
  """Raised at a safe point after a first SIGINT / SIGTERM (BaseException: no `except Exception` eats it)."""

  def __init__(self, signum: int, message: str):
    super().__init__(message)
    self.signum = signum


def received() -> int | None:
  """The first SIGINT / SIGTERM noted since `install`, or None."""
  return _received


def note(signum: int) -> None:
  """Notes `signum` as received (run.py's handler tells this module, so that a KeyboardInterrupt after it
  is known to be the second Ctrl-C)."""
  global _received
  if _installed and _received is None:
    _received = signum


def handler(signum, frame) -> None:
  if _received is not None and signum == signal.SIGINT:  # the second Ctrl-C: stop at once
    if not _exit_at_once:
      raise KeyboardInterrupt
    # A KeyboardInterrupt raised here can land inside the initialization of a C extension (jaxlib) and crash
    # the interpreter; the process has nothing of its own to save before training: exit, with one line.
    for stream in (sys.stdout, sys.stderr):
      try:
        stream.flush()
      except (OSError, ValueError):
        pass
    os.write(2, b"error: stopped at once by a second Ctrl-C; no training step was lost\n")
    os._exit(128 + signal.SIGINT)
  note(signum)
  try:
    print(f"\n{signal.Signals(signum).name} received: stopping at the next safe point (Ctrl-C again to stop at "
          f"once)", flush=True)
  except (OSError, ValueError):  # a closed stdout
    pass


def install(exit_at_once: bool = False) -> Callable[[], None]:
  """Installs `handler` for SIGINT and SIGTERM (main thread only); returns a function that restores the
  previous handlers and forgets what was received. exit_at_once: a second Ctrl-C before training's own
  handler takes over ends the process with status 130 (the console script; in-process callers get a
  KeyboardInterrupt)."""
  global _received, _installed, _exit_at_once
  _received, _installed, _exit_at_once = None, True, exit_at_once
  old = {}
  try:
    for s in (signal.SIGINT, signal.SIGTERM):
      old[s] = signal.signal(s, handler)
  except ValueError:  # not the main thread: Python's defaults stay
    pass

  def restore() -> None:
    global _received, _installed
    for s, h in old.items():
      signal.signal(s, h)
    _received, _installed = None, False

  return restore


def check(message: str) -> None:
  """Raises Stopped(signal, message) when a first SIGINT / SIGTERM was noted; `message` says what it leaves."""
  if _received is not None:
    raise Stopped(_received, message)


def describe(signum: int) -> str:
  """'SIGINT (Ctrl-C)' or 'SIGTERM': how messages name a signal."""
  return "SIGINT (Ctrl-C)" if signum == signal.SIGINT else signal.Signals(signum).name
