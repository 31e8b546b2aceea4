"""A provider's table (CSV or Parquet) → a canonical dataset package, by the web UI's rules.

The CSV rules are those of ``web/js/crypto/csv.js`` (docs/web-crypto.md), so a file listed from
the terminal and the same file listed in the browser give byte-identical packages (a test checks
both against one reference): the first row names the columns; one column holds the label (the
last unless named); every other column, in file order, is a numeric feature (decimal numbers,
rounded to float32); class names are the distinct labels, ordered by integer value when all are
integers, else by code point; a row's label is its class's index. A Parquet file follows the
same rules over its columns: features must be numeric columns without nulls, the label any
column (its values as text).

A provider may declare public bounds for some feature columns (``bounds``, by column name): they go
into the schema (``feature_bounds``), where the enclave's models clip and scale by them. They are
the provider's declaration, never computed from the rows.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from enclave_worker.trusted.dataset import DatasetPackage, FeatureBounds, Schema

from .errors import InvalidDataset, SterlingError

DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
INTEGER = re.compile(r"[+-]?\d+")


class InvalidTable(SterlingError, ValueError):
    """The table cannot be a dataset; the message says where (line and column) and why."""


def _float32(cell: str) -> float:
    """A decimal cell rounded to float32 (NaN when not a decimal, ±inf when it overflows float32),
    as JavaScript's ``Math.fround(Number(cell))`` and numpy's ``astype(np.float32)`` round it."""
    if not DECIMAL.fullmatch(cell):
        return math.nan
    with np.errstate(over="ignore"):
        return float(np.float32(float(cell)))


def class_order(names: set[str]) -> list[str]:
    """Class names in index order: numerically when all are integers, else by code point."""
    if all(INTEGER.fullmatch(n) for n in names):
        return sorted(names, key=lambda n: (int(n), n))
    return sorted(names)


Bounds = Mapping[str, tuple[float, float]]
"""Declared ``(lo, hi)`` of feature columns, by column name."""


def feature_bounds(feature_names: tuple[str, ...], bounds: Bounds | None, *, label: str | None = None) -> FeatureBounds | None:
    """Declared bounds by column name as the schema's ``feature_bounds`` (``None`` for a column not named).

    The values are checked and normalised by the schema (:class:`Schema`); here only the names.

    Raises:
        InvalidDataset: a name that is not a feature column (the label column included).
    """
    if not bounds:
        return None
    for name in bounds:
        if name not in feature_names:
            what = "is the label column, not a feature" if name == label else "is not a column of the table"
            raise InvalidDataset(f"declared bounds for {json.dumps(name)}: it {what} (feature columns: {', '.join(feature_names)})")
    return tuple(bounds.get(name) for name in feature_names)


def _package(names: list[str], label_at: int, features: np.ndarray, label_text: list[str], bounds: Bounds | None) -> DatasetPackage:
    classes = class_order(set(label_text))
    if len(classes) < 2:
        raise InvalidTable(
            f"label column {json.dumps(names[label_at])} holds a single class {json.dumps(classes[0])}; classification needs at least two"
        )
    index = {name: i for i, name in enumerate(classes)}
    feature_names = tuple(n for i, n in enumerate(names) if i != label_at)
    declared = feature_bounds(feature_names, bounds, label=names[label_at])
    schema = Schema("classification", feature_names, (len(feature_names),), tuple(classes), feature_bounds=declared)
    labels = np.array([index[t] for t in label_text], dtype=np.int64)
    return DatasetPackage(features=features, labels=labels, schema=schema)


def _columns(names: list[str], label_column: str | None) -> int:
    for i, name in enumerate(names):
        if not name:
            raise InvalidTable(f"column {i + 1} has no name in the header row")
        if names.index(name) != i:
            raise InvalidTable(f"column name {json.dumps(name)} appears twice in the header row")
    label_at = len(names) - 1 if label_column is None else (names.index(label_column.strip()) if label_column.strip() in names else -1)
    if label_at < 0:
        raise InvalidTable(f"no column named {json.dumps(label_column)} (columns: {', '.join(names)})")
    if len(names) < 2:
        raise InvalidTable("the CSV file has no feature columns besides the label")
    return label_at


def parse_csv(text: str, *, label_column: str | None = None, bounds: Bounds | None = None) -> DatasetPackage:
    """A CSV text as a dataset package.

    Args:
        bounds: the provider's declared ``(lo, hi)`` of some feature columns, by name, put in the
            schema (never computed from the rows).

    Raises:
        InvalidTable: empty, no data rows, an unknown label column, a ragged row, a cell that is not a
            number (or overflows float32), an empty label, a single class, a quote left open.
        InvalidDataset: declared bounds for an unknown column, or bounds the schema refuses.
    """
    records: list[tuple[int, list[str]]] = []
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""), strict=True)
    start = 1
    try:
        for cells in reader:
            if cells and not (len(cells) == 1 and cells[0] == ""):
                records.append((start, cells))
            start = reader.line_num + 1
    except csv.Error as e:
        message = "a quoted field is not closed" if "end of data" in str(e) or "EOF" in str(e) else str(e)
        raise InvalidTable(f"line {start}: {message}") from e
    if not records:
        raise InvalidTable("the CSV file is empty")
    names = [n.strip() for n in records[0][1]]
    label_at = _columns(names, label_column)
    data = records[1:]
    if not data:
        raise InvalidTable("the CSV file has a header row but no data rows")
    feature_at = [i for i in range(len(names)) if i != label_at]
    features = np.empty((len(data), len(feature_at)), dtype=np.float32)
    label_text = []
    for r, (line, cells) in enumerate(data):
        if len(cells) != len(names):
            raise InvalidTable(f"line {line} has {len(cells)} cells, the header has {len(names)}")
        for j, col in enumerate(feature_at):
            cell = cells[col].strip()
            value = _float32(cell)
            if not math.isfinite(value):
                what = (
                    "is empty"
                    if cell == ""
                    else f"{cell} is too large for float32"
                    if DECIMAL.fullmatch(cell)
                    else f"{json.dumps(cell)} is not a number"
                )
                raise InvalidTable(f"line {line}, column {json.dumps(names[col])}: {what}")
            features[r, j] = value
        label = cells[label_at].strip()
        if not label:
            raise InvalidTable(f"line {line}, label column {json.dumps(names[label_at])} is empty")
        label_text.append(label)
    return _package(names, label_at, features, label_text, bounds)


def read_parquet(path: Path, *, label_column: str | None = None, bounds: Bounds | None = None) -> DatasetPackage:
    """A Parquet file as a dataset package (numeric feature columns without nulls; any label column).

    Raises:
        InvalidTable: not Parquet, an unknown label column, a non-numeric or null feature, a single class.
        InvalidDataset: declared ``bounds`` (as for :func:`parse_csv`) for an unknown column, or refused.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise InvalidTable(f"{path} is not a readable Parquet file: {e}") from e
    names = [str(n) for n in table.column_names]
    label_at = _columns(names, label_column)
    if table.num_rows == 0:
        raise InvalidTable(f"{path} holds no rows")
    features = np.empty((table.num_rows, len(names) - 1), dtype=np.float32)
    j = 0
    for i, name in enumerate(names):
        if i == label_at:
            continue
        column = table.column(i)
        if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or pa.types.is_boolean(column.type)):
            raise InvalidTable(f"column {json.dumps(name)} is {column.type}, not numbers")
        if column.null_count:
            raise InvalidTable(f"column {json.dumps(name)} has {column.null_count} empty value(s)")
        with np.errstate(over="ignore", invalid="ignore"):
            values = column.to_numpy().astype(np.float64).astype(np.float32)
        if not np.isfinite(values).all():
            row = int(np.argmax(~np.isfinite(values)))
            raise InvalidTable(f"row {row + 1}, column {json.dumps(name)}: {column[row].as_py()} is not a float32 number")
        features[:, j] = values
        j += 1
    label = table.column(label_at)
    if label.null_count:
        raise InvalidTable(f"label column {json.dumps(names[label_at])} has {label.null_count} empty value(s)")
    label_text = [str(v).strip() for v in label.to_pylist()]
    if any(not t for t in label_text):
        raise InvalidTable(f"label column {json.dumps(names[label_at])} has empty labels")
    return _package(names, label_at, features, label_text, bounds)


def read_table(path: Path, *, label_column: str | None = None, bounds: Bounds | None = None) -> DatasetPackage:
    """``path`` (``.parquet``/``.pq``, else CSV in UTF-8) as a dataset package.

    Args:
        bounds: declared ``(lo, hi)`` of feature columns by name (:func:`parse_csv`).

    Raises:
        InvalidTable: the file cannot be read or breaks the rules (the message says where).
        InvalidDataset: declared bounds for an unknown column, or bounds the schema refuses.
    """
    if path.suffix.lower() in (".parquet", ".pq"):
        return read_parquet(path, label_column=label_column, bounds=bounds)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InvalidTable(f"cannot read {path}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise InvalidTable(f"{path} is not UTF-8 text (byte {e.start})") from e
    return parse_csv(text, label_column=label_column, bounds=bounds)
