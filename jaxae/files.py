"""How jaxae writes and reads its own small files: atomically, never through a symlink, strictly.

Every file jaxae writes in a workdir goes through here (orbax writes the checkpoints). A replaced file
(config.json, summary.json, a figure) is written to `<name>.tmp` and renamed over the old one with
`os.replace`, so a kill or a full disk leaves the old file or the new one, never half of either. No
write follows a symlink (`O_NOFOLLOW`): a symlink where jaxae writes is refused with one line naming
it, so a workdir can never be used to overwrite files elsewhere. Reading is strict: JSON that jaxae
did not write is a one-line WorkdirError naming the file and the line.
"""

from __future__ import annotations

import errno
import json
import os
from typing import Any, Callable

from jaxae import errors

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def refuse_symlink(path: str) -> None:
  """Raises WorkdirError when `path` is a symlink (jaxae never writes through one)."""
  if os.path.islink(path):
    raise errors.WorkdirError(f"{path} is a symlink (to {os.readlink(path)}): jaxae never writes through a "
                              f"symlink; remove it, or use another --workdir")


def open_fd(path: str, flags: int, mode: int = 0o644) -> int:
  """os.open with O_NOFOLLOW; a symlink at `path` is a WorkdirError naming it."""
  try:
    return os.open(path, flags | _NOFOLLOW | _CLOEXEC, mode)
  except OSError as e:
    if e.errno == errno.ELOOP or (e.errno == errno.EMLINK and os.path.islink(path)):
      refuse_symlink(path)
    raise


def replace_with(path: str, write: Callable[[str], None]) -> str:
  """Writes `path` atomically: `write(tmp)` fills `<path>.tmp`, then it is renamed over `path`.

  The temporary file is created here (O_NOFOLLOW, so a symlink named `<path>.tmp` is refused, not
  followed) and removed again if `write` fails. Returns `path`.
  """
  refuse_symlink(path)
  tmp = path + ".tmp"
  os.close(open_fd(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC))
  try:
    write(tmp)
    os.replace(tmp, path)
  except BaseException:
    try:
      os.unlink(tmp)
    except OSError:
      pass
    raise
  return path


def write_text(path: str, text: str) -> str:
  """Replaces `path` with `text` atomically (fsynced before the rename)."""
  def write(tmp):
    fd = open_fd(tmp, os.O_WRONLY | os.O_TRUNC)
    with os.fdopen(fd, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
  return replace_with(path, write)


def write_json(path: str, obj: Any, **kwargs) -> str:
  return write_text(path, json.dumps(obj, allow_nan=False, **kwargs))


def append_line(path: str, line: str) -> None:
  """Appends one line (`line` + newline) in a single write; never through a symlink."""
  fd = open_fd(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
  try:
    data = (line + "\n").encode()
    written = os.write(fd, data)
    if written != len(data):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
  finally:
    os.close(fd)


def read_text(path: str) -> str:
  fd = open_fd(path, os.O_RDONLY)
  with os.fdopen(fd, "rb") as f:
    raw = f.read()
  try:
    return raw.decode()
  except UnicodeDecodeError as e:
    line = raw[:e.start].count(b"\n") + 1
    raise errors.WorkdirError(f"{path} line {line} is not text (byte {e.start}): this is not a file jaxae wrote; "
                              f"restore it or use --fresh") from None


def read_json(path: str, kind: type | tuple = dict) -> Any:
  """The JSON value in `path`; WorkdirError naming the file and line when it is not what jaxae wrote."""
  text = read_text(path)
  try:
    value = json.loads(text)
  except json.JSONDecodeError as e:
    raise errors.WorkdirError(f"{path} line {e.lineno} is not valid JSON ({e.msg}): this is not a file jaxae "
                              f"wrote; restore it, or use --fresh to discard the run") from None
  if not isinstance(value, kind):
    raise errors.WorkdirError(f"{path} holds a JSON {type(value).__name__}, not what jaxae wrote; restore it, "
                              f"or use --fresh to discard the run")
  return value
