"""How jaxae writes and reads its own small files: atomically, never through a symlink, strictly.

Every file jaxae writes in a workdir goes through here (orbax writes the checkpoints). A replaced file
(config.json, summary.json, a figure) is written to `<name>.tmp` and renamed over the old one with
`os.replace`, so a kill or a full disk leaves the old file or the new one, never half of either. No
write follows a symlink (`O_NOFOLLOW`): a symlink where jaxae writes is refused with one line naming
it, so a workdir can never be used to overwrite files elsewhere. Reading is strict: JSON that jaxae
did not write is a one-line WorkdirError naming the file and the line.

Inside `confined(root)` (a workdir, or export's --out) every write below `root` is also checked at
every folder between `root` and the file: a symlink at any level is refused, and a folder is created
only by `make_dirs`, never through a link. With `record=True` each path is appended to
`<root>/manifest.jsonl` before it is written: `--fresh` deletes what that record lists and nothing else.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from typing import Any, Callable, Iterator

from jaxae import errors

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
MANIFEST = "manifest.jsonl"  # what jaxae wrote in a workdir: one JSON object a line, {kind: path relative to it}
KINDS = ("file", "dir", "tree")  # tree: a folder a library fills (orbax, tensorboardX), owned whole


class _Root:
  """A folder that writes are confined to (see `confined`)."""

  def __init__(self, root: str, record: bool):
    self.root, self.record, self.seen = os.path.abspath(root), record, set()
    if record:  # what is listed already is not listed again (a resumed run rewrites the same files)
      try:
        listed = read_manifest(self.root) or {}
      except errors.WorkdirError:  # refused where it matters: --fresh reads it strictly
        listed = {}
      self.seen = {(kind, rel) for kind, rels in listed.items() for rel in rels}


_ROOTS: list[_Root] = []


@contextlib.contextmanager
def confined(root: str, record: bool = True) -> Iterator[None]:
  """While the body runs, writes below `root` pass no symlink at any level, and (record) are recorded.

  Recording appends `{"file" | "dir" | "tree": relative path}` to `<root>/manifest.jsonl` before the
  write, so a kill mid-write still leaves the path listed. Nested roots: the outermost one that holds a
  path checks and records it.
  """
  _ROOTS.append(_Root(root, record))
  try:
    yield
  finally:
    _ROOTS.pop()


def _root_of(path: str) -> tuple[_Root, str] | None:
  """(root, path relative to it) of the outermost confining root that holds `path`, or None."""
  path = os.path.abspath(path)
  for r in _ROOTS:
    if path == r.root or path.startswith(r.root.rstrip(os.sep) + os.sep):
      return r, os.path.relpath(path, r.root)
  return None


def check_levels(path: str, last_is_dir: bool) -> None:
  """Below a confining root: no symlink at any existing level of `path`, folders where folders go, and
  (last_is_dir False) not a folder where the file goes. WorkdirError naming the level; no-op elsewhere."""
  found = _root_of(path)
  if found is None:
    return
  root, rel = found
  if rel == ".":
    return
  parts = rel.split(os.sep)
  here = root.root
  for i, part in enumerate(parts):
    here = os.path.join(here, part)
    if not os.path.lexists(here):
      return
    refuse_symlink(here)
    if (i < len(parts) - 1 or last_is_dir) and not os.path.isdir(here):
      raise errors.WorkdirError(f"{here} is a file, but jaxae writes a folder there: move it out of the way")
    if i == len(parts) - 1 and not last_is_dir and os.path.isdir(here):
      raise errors.WorkdirError(f"{here} is a folder, but jaxae writes a file there: move it out of the way")


def record(path: str, kind: str = "file") -> None:
  """Lists `path` in its root's manifest.jsonl (no-op outside a recording `confined` root)."""
  found = _root_of(path)
  if found is None or not found[0].record or found[1] == "." or (kind, found[1]) in found[0].seen:
    return
  root, rel = found
  if rel == MANIFEST:
    return
  check_levels(path, kind != "file")
  _append(os.path.join(root.root, MANIFEST), json.dumps({kind: rel.replace(os.sep, "/")}))
  root.seen.add((kind, rel))


def make_dirs(path: str) -> str:
  """os.makedirs(path, exist_ok=True), but below a confining root each level is checked (no symlink, no
  file where a folder goes) and each folder it creates is recorded. Returns `path`."""
  found = _root_of(path)
  if found is None or found[1] == ".":
    os.makedirs(path, exist_ok=True)
    return path
  root, rel = found
  here = root.root
  os.makedirs(here, exist_ok=True)  # the root: a workdir, or export's --out (its parents are the user's path)
  for part in rel.split(os.sep):
    here = os.path.join(here, part)
    if os.path.lexists(here):
      refuse_symlink(here)
      if not os.path.isdir(here):
        raise errors.WorkdirError(f"{here} is a file, but jaxae writes a folder there: move it out of the way")
      continue
    record(here, "dir")
    try:
      os.mkdir(here)
    except FileExistsError:  # made meanwhile by another writer: check what it is
      refuse_symlink(here)
  return path


def record_tree(path: str) -> str:
  """Records `path` as a folder a library fills (checkpoints/, a TensorBoard run): owned whole."""
  check_levels(path, True)
  record(path, "tree")
  return path


def read_manifest(root: str) -> dict[str, set[str]] | None:
  """{kind: set of relative paths} that `<root>/manifest.jsonl` lists; None without one.

  A line cut short by a kill (the last one) is skipped; anything else that is not jaxae's record, or
  a path that leaves `root`, is a WorkdirError naming the line.
  """
  path = os.path.join(root, MANIFEST)
  if not os.path.lexists(path):
    return None
  lines = read_text(path).split("\n")
  out: dict[str, set[str]] = {k: set() for k in KINDS}
  for n, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      entry = json.loads(line)
    except json.JSONDecodeError:
      if n == len(lines):  # the last line, without its newline: a kill while appending
        continue
      entry = None
    ok = isinstance(entry, dict) and len(entry) == 1 and next(iter(entry)) in KINDS
    rel = next(iter(entry.values())) if ok else None
    if not (isinstance(rel, str) and rel and not os.path.isabs(rel) and ".." not in rel.split("/")):
      raise errors.WorkdirError(f"{path} line {n} is not a record jaxae wrote: restore it, or delete the workdir "
                                f"yourself")
    out[next(iter(entry))].add(os.path.normpath(rel))
  return out


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
  followed) and removed again if `write` fails. Inside `confined`, every level below the root is
  checked and `path` is recorded first. Returns `path`.
  """
  refuse_symlink(path)
  check_levels(path, False)
  record(path)
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
  """Appends one line (`line` + newline) in a single write; never through a symlink (recorded inside
  `confined`)."""
  check_levels(path, False)
  record(path)
  _append(path, line)


def _append(path: str, line: str) -> None:
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
