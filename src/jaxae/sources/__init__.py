"""Data sources: one module per kind of `data.source`, registered here under its prefix.

`data.source='npy:runs/x.npy'` is looked up by its prefix ('npy'); the text after the first colon
goes to the reader. A reader is `read(argument: str, options: Options) -> Split` and raises
DataError (one line) for anything it cannot read. A new source is one new module plus one
`register` line below; `configs.validate` accepts every registered prefix.
"""

from __future__ import annotations

from typing import Callable

from jaxae.sources import arrays, dsprites, embedded, folder, hf, idx, table, tfds
from jaxae.sources.base import DataError, Options, Split

Reader = Callable[[str, Options], Split]
_READERS: dict[str, tuple[Reader, str]] = {}


def register(prefix: str, reader: Reader, usage: str) -> None:
  """Makes `prefix:ARG` (or the bare name `prefix`, when `usage` has no colon) read by `reader`.

  `usage` is how error messages show the source, e.g. 'csv:PATH'.
  """
  if prefix in _READERS:
    raise ValueError(f"data source prefix {prefix!r} is registered twice")
  _READERS[prefix] = (reader, usage)


def usages() -> str:
  return ", ".join(repr(usage) for _, usage in _READERS.values())


def lookup(source: str) -> tuple[Reader, str]:
  """(reader, argument) for a `data.source` string. Raises DataError for an unknown or malformed one."""
  prefix, colon, argument = str(source).partition(":")
  reader, usage = _READERS.get(prefix, (None, ""))
  if reader is None or bool(colon) != (":" in usage) or (colon and not argument):
    raise DataError(f"data source {source!r} must be one of {usages()}")
  return reader, argument


def read(source: str, options: Options = Options()) -> Split:
  """The split `source` names (see `lookup`), read by its registered reader. Raises DataError."""
  reader, argument = lookup(source)
  return reader(argument, options)


register("embedded", embedded.read, "embedded")
register("idx", idx.read, "idx:DIR")
register("tfds", tfds.read, "tfds:NAME")
register("npy", arrays.read_npy, "npy:PATH")
register("npz", arrays.read_npz, "npz:PATH")
register("folder", folder.read, "folder:DIR")
register("csv", table.read, "csv:PATH")
register("hf", hf.read, "hf:PATH")
register("dsprites", dsprites.read, "dsprites")
