"""Reading training tables (CSV with a header row, or Parquet) for ``modelmonitor baseline``.

Row numbers in CSV messages are file line numbers (the header is row 1); in Parquet messages the
first data row is row 1.
"""
from __future__ import annotations

import csv
import os
from array import array
from typing import Callable, Sequence

__all__ = ["TableError", "RowLabel", "read_table"]


class TableError(ValueError):
    """Training data that cannot be read or used; the message names the file, row and column."""


# ---------------------------------------------------------------------------------------------
# Reading tables

RowLabel = Callable[[int], str]


def _columns_listing(names: Sequence[str]) -> str:
    shown = [str(n) for n in names[:12]]
    if len(names) > 12:
        shown.append(f"... {len(names) - 12} more")
    return ", ".join(shown)


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_csv(path: str, columns: Sequence[str] | None) -> tuple[dict[str, list], RowLabel]:
    with open(path, newline="", encoding="utf-8-sig") as fh:  # -sig: spreadsheets write a BOM
        reader = csv.reader(fh)
        try:
            header = next(reader, None)
            if header is None:
                raise TableError(f"{path} is empty: a header row with the column names is required")
            header = [name.strip() for name in header]
            if not any(header):
                raise TableError(f"{path} row 1: the header row is empty")
            if all(_looks_numeric(name) for name in header):
                raise TableError(f"{path} row 1 ({', '.join(header[:6])}) looks like data: a header row "
                                 "with the column names is required")
            seen: set[str] = set()
            for i, name in enumerate(header):
                if not name:
                    raise TableError(f"{path} row 1: column {i + 1} of the header has no name")
                if name in seen:
                    raise TableError(f"{path} row 1: column {name!r} appears twice in the header")
                seen.add(name)
            wanted = list(header) if columns is None else list(columns)
            for name in wanted:
                if name not in seen:
                    raise TableError(f"column {name!r} not in {path} (columns: {_columns_listing(header)})")
            positions = [header.index(name) for name in wanted]
            values: list[list[str]] = [[] for _ in wanted]
            lines = array("q")
            width = len(header)
            for record in reader:
                if not record:  # a blank line, typically the last one
                    continue
                if len(record) != width:
                    raise TableError(f"{path} row {reader.line_num}: {len(record)} cells, the header has {width}")
                lines.append(reader.line_num)
                for column, position in zip(values, positions):
                    column.append(record[position])
        except csv.Error as exc:
            raise TableError(f"{path} row {reader.line_num}: not valid CSV ({exc})") from None
        except UnicodeDecodeError as exc:
            raise TableError(f"{path} is not UTF-8 text: {exc}") from None
    if not lines:
        raise TableError(f"{path} has a header but no data rows")
    return dict(zip(wanted, values)), lambda i: f"row {lines[i]}"


def _read_parquet(path: str, columns: Sequence[str] | None) -> tuple[dict[str, list], RowLabel]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise TableError(f"{path} is not a readable Parquet file: {exc}") from None
    names = list(schema.names)
    wanted = names if columns is None else list(columns)
    for name in wanted:
        if name not in names:
            raise TableError(f"column {name!r} not in {path} (columns: {_columns_listing(names)})")
    try:
        table = pq.read_table(path, columns=wanted)
    except (pa.ArrowException, OSError) as exc:
        raise TableError(f"{path}: cannot read Parquet data: {exc}") from None
    if table.num_rows == 0:
        raise TableError(f"{path} has no data rows")
    return {name: table.column(name).to_pylist() for name in wanted}, lambda i: f"row {i + 1}"


def _read(path: str | os.PathLike, columns: Sequence[str] | None) -> tuple[dict[str, list], RowLabel, str]:
    path = os.fspath(path)
    lower = path.lower()
    if lower.endswith(".csv"):
        reader = _read_csv
    elif lower.endswith((".parquet", ".pq")):
        reader = _read_parquet
    else:
        raise TableError(f"{path}: unknown table format (use a .csv or .parquet file)")
    if not os.path.exists(path):
        raise TableError(f"{path}: no such file")
    if os.path.isdir(path):
        raise TableError(f"{path} is a directory, expected a .csv or .parquet file")
    if os.path.getsize(path) == 0:
        raise TableError(f"{path} is empty: a header row with the column names is required"
                         if reader is _read_csv else f"{path} is empty")
    try:
        table, label = reader(path, columns)
    except OSError as exc:
        raise TableError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return table, label, path


def read_table(path: str | os.PathLike, columns: Sequence[str] | None = None) -> dict[str, list]:
    """Columns of a CSV (header row required; cells stay strings) or Parquet file, by extension.

    ``columns`` selects and orders the columns; each must exist.

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "t.csv")
    >>> _ = open(path, "w").write("a,b\\n1,x\\n2,y\\n")
    >>> read_table(path, columns=["b", "a"])
    {'b': ['x', 'y'], 'a': ['1', '2']}
    """
    return _read(path, columns)[0]
