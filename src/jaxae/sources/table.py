"""`csv:PATH`: a numeric table, one example per row, optionally a header row and a label column.

Read with the csv module into memory (pandas is not a dependency). The text is UTF-8, with or without
a byte-order mark (as Excel saves it), or UTF-16 / UTF-32 with their byte-order mark; anything else is
refused naming the line and byte, never guessed. The first row is a header when
one of its cells is not a number while the cell below it is. Every column but `data.label_column` is
an input feature, so inputs are vectors (N, D) float32; a column that is not numeric is an error
naming it (encode or drop it first): jaxae does not guess encodings of categories.
"""

from __future__ import annotations

import codecs
import csv
import io

import numpy as np

from jaxae.sources.base import DataError, Options, Split, as_labels, expand


# Byte-order marks, longest first (UTF-32-LE's begins with UTF-16-LE's).
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"), (codecs.BOM_UTF8, "utf-8"),
         (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))


def _text(raw: bytes, where: str) -> str:
  """The file's text: the encoding its byte-order mark names (the mark removed), else UTF-8.

  Raises DataError naming the line and byte of the first byte that is not text in that encoding.
  """
  encoding, start = "utf-8", 0
  for bom, name in _BOMS:
    if raw.startswith(bom):
      encoding, start = name, len(bom)
      break
  try:
    text = raw[start:].decode(encoding)
  except UnicodeDecodeError as e:
    line = raw[start:start + e.start].count(b"\n" if encoding == "utf-8" else "\n".encode(encoding)) + 1
    raise DataError(f"{where} line {line} is not {encoding.upper()} text (byte {start + e.start}): save the table as "
                    f"UTF-8") from None
  if "\x00" in text:  # valid UTF-8, but no table has NUL characters: UTF-16 without its byte-order mark
    line = text[:text.index("\x00")].count("\n") + 1
    raise DataError(f"{where} line {line} is not {encoding.upper()} text (a NUL character: UTF-16 without a "
                    f"byte-order mark?): save the table as UTF-8")
  return text


def _is_number(cell: str) -> bool:
  try:
    float(cell)
  except ValueError:
    return False
  return True


def _has_header(rows: list[list[str]]) -> bool:
  if len(rows) == 1:
    return not all(_is_number(c) for c in rows[0])
  return any(not _is_number(a) and _is_number(b) for a, b in zip(rows[0], rows[1]))


def _label_index(label_column: str, names: list[str], header: bool, where: str) -> int | None:
  """The column `data.label_column` names: a header name, else an integer index (negative from the end)."""
  if label_column == "":
    return None
  if header and label_column in names:
    return names.index(label_column)
  try:
    index = int(label_column)
  except ValueError:
    raise DataError(f"{where}: data.label_column={label_column!r} is not a column "
                    f"({'columns: ' + ', '.join(names) if header else 'the table has no header row'})") from None
  if not -len(names) <= index < len(names):
    raise DataError(f"{where}: data.label_column={label_column!r} is out of range for {len(names)} columns")
  return index % len(names)


def _numbers(body: list[tuple[int, list[str]]], names: list[str], where: str) -> np.ndarray:
  """(N, columns) float64 from the text cells; DataError naming every non-numeric column."""
  try:
    return np.array([row for _, row in body], np.float64)
  except ValueError:
    pass
  bad = []
  for j, name in enumerate(names):
    line, cell = next(((line, row[j]) for line, row in body if not _is_number(row[j])), (0, ""))
    if line:
      bad.append(f"{name!r} (line {line}: {cell!r})")
  raise DataError(f"{where}: non-numeric columns {', '.join(bad)}: encode them as numbers or drop them")


def read(argument: str, options: Options) -> Split:
  """Inputs (N, D) float32 from every column but `options.label_column`; labels (N,) int32 from it.

  Raises DataError for a missing file, no data rows, rows of different lengths, non-numeric
  columns, or a label column that does not exist or holds fractional values.
  """
  path, where = expand(argument), f"csv:{argument}"
  try:
    with open(path, "rb") as f:
      raw = f.read()
  except OSError as e:
    raise DataError(f"cannot read {where}: {e}") from None
  try:
    reader = csv.reader(io.StringIO(_text(raw, where), newline=""))
    numbered = [(reader.line_num, row) for row in reader if row]
  except csv.Error as e:
    raise DataError(f"cannot read {where}: line {reader.line_num}: {e}") from None
  rows = [row for _, row in numbered]
  header = bool(rows) and _has_header(rows)
  body = numbered[1:] if header else numbered
  if not body:
    raise DataError(f"{where} has no data rows")
  width = len(rows[0])
  for line, row in body:
    if len(row) != width:
      raise DataError(f"{where}: line {line} has {len(row)} cells, the first row {width}")
  names = [c.strip() for c in rows[0]] if header else [str(j) for j in range(width)]
  label = _label_index(options.label_column, names, header, where)
  table = _numbers(body, names, where)
  if label is None:
    return Split(table.astype(np.float32), None, where)
  if width == 1:
    raise DataError(f"{where}: the only column is the label column {names[label]!r}: no inputs left")
  labels = as_labels(table[:, label], f"{where} column {names[label]!r}")
  return Split(np.delete(table, label, axis=1).astype(np.float32), labels, where)
