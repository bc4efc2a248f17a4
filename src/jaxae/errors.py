"""What can go wrong in a run, as exception classes, and the exit status of each (the CLI's contract).

Every error a user can cause or fix (a value they typed, a file they gave, a workdir they pointed at)
derives from `BadInput` and carries a one-line message naming the culprit; `main` prints it and exits
with `EXIT_BAD_INPUT`. Failures of the machine rather than of the input (a full disk, a read-only
filesystem, no permission) are `EnvironmentFailure`, or an `OSError` that `environment_message`
recognizes, and exit with `EXIT_ENVIRONMENT`. Anything else is a bug in jaxae or in the user's own
code: the traceback is printed and the exit status is `EXIT_INTERNAL`. Nothing here imports jax.

  status  meaning (of `python -m jaxae.main`, `jaxae.evaluate` and `jaxae.export` alike: main.guarded)
  0       success
  1       every member diverged (the summary is still written and printed)
  2       bad input: config, data, checkpoint or workdir content, a symlink where jaxae writes (nothing was
          trained or changed)
  70      internal error: a bug (traceback printed)
  74      environment failure: disk full, read-only filesystem, permissions, workdir or --out is a file
  75      the workdir is in use by another run (try again when it has finished)
  130     stopped by SIGINT (Ctrl-C); 143 stopped by SIGTERM: a checkpoint was saved (or training had not
          started: nothing was written), run again to resume
  141     standard output was closed (`| head`): stopped as a SIGPIPE would
"""

from __future__ import annotations

import errno
import re

EXIT_OK = 0
EXIT_DIVERGED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 70  # sysexits.h EX_SOFTWARE
EXIT_ENVIRONMENT = 74  # sysexits.h EX_IOERR
EXIT_BUSY = 75  # sysexits.h EX_TEMPFAIL


class BadInput(Exception):
  """Input the user can fix; its message is one line that names the culprit (exit status 2)."""


class ConfigError(BadInput, ValueError):
  """A config value that cannot work; raised before any training starts."""


class WorkdirError(BadInput):
  """A workdir whose content jaxae will not use or change: files that disagree, a symlink, a foreign file."""


class WorkdirBusy(BadInput):
  """Another run holds the workdir's lock (exit status 75, not 2: nothing is wrong with the input)."""

  exit_status = EXIT_BUSY


class EnvironmentFailure(Exception):
  """The machine, not the input: disk full, read-only filesystem, permissions (exit status 74)."""


# errno values that mean the environment failed us, and how they read in messages of libraries
# (tensorstore, used by orbax) that report them as text instead of OSError.
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG,
                       errno.ENOTDIR, errno.EMFILE, errno.ENFILE, errno.ENOMEM}
_ENVIRONMENT_TEXT = ("No space left on device", "Disk quota exceeded", "Read-only file system", "Permission denied",
                     "File too large", "Input/output error", "Operation not permitted",
                     "Out of memory")  # XLA's RESOURCE_EXHAUSTED when activations do not fit (memory.py)


def _chain(e: BaseException):
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    yield e
    e = e.__cause__ or e.__context__


def environment_message(e: BaseException) -> str | None:
  """A one-line description when `e` (or an exception it was raised from) is a failure of the
  environment (disk full, read-only filesystem, permissions); None otherwise."""
  for x in _chain(e):
    if isinstance(x, EnvironmentFailure):
      return str(x)
    if isinstance(x, OSError) and x.errno in _ENVIRONMENT_ERRNOS:
      where = f" {x.filename}" if x.filename else ""
      return f"cannot write or read{where}: {x.strerror or errno.errorcode.get(x.errno, x.errno)}"
  for x in _chain(e):
    text = str(x)
    for needle in _ENVIRONMENT_TEXT:
      if needle in text:
        path = re.search(r'(?:Failed writing|Error opening file|local file|Failed to open)[^"]*"([^"]+)"', text)
        where = f" writing {path.group(1)}" if path else ""
        return f"{needle}{where} ({type(x).__name__} from {type(x).__module__.split('.')[0]})"
  return None


def one_line(text: str, limit: int = 300) -> str:
  """The first non-empty line of `text`, at most `limit` characters."""
  for line in str(text).strip().splitlines():
    if line.strip():
      return line.strip()[:limit]
  return ""
