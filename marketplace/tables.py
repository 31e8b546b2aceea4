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

Beyond classification (the browser's reader lists classification tables only; these are the SDK's
and ``sterling dataset publish``'s), a table may be a **regression** (:class:`Regression`: one or
more numeric target columns, each with its declared bounds) or a **survival** table
(:class:`Survival`: a time column, an event column of 0/1 and the declared interval ends), and
may hold **categorical features** (``categories``: a column's declared vocabulary; its cells are
category names, stored as their index). Every label and category column is named; all other
columns are numeric features, in file order. Classification tables read exactly as before.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from enclave_worker.trusted.dataset import DatasetPackage, FeatureBounds, Schema, check_vocabulary

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


def _number(x: float) -> str:
    """A declared number as JavaScript's ``String(x)`` writes it for ordinary values (400, 365.25)."""
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e21 else repr(float(x))


def _few(items: Sequence[str], k: int) -> str:
    return ", ".join(items[:k]) + (", …" if len(items) > k else "")


def label_summary(schema: Schema) -> str:
    """What a schema's label is, in words — the same words as the web UI's ``labelSummary``
    (``web/js/format.js``): "2 classes (benign, malignant)", "regression on 1 target (progression,
    declared 0 to 400)", "survival: time to event in 14 intervals ending at 365.25, 730.5, …"."""
    if schema.task == "regression":
        bounds = schema.target_bounds or ()
        named = [f"{t}, declared {_number(bounds[i][0])} to {_number(bounds[i][1])}" if i < len(bounds) else t
                 for i, t in enumerate(schema.target_names)]  # fmt: skip
        return f"regression on {len(named)} target{'' if len(named) == 1 else 's'} ({_few(named, 4)})"
    if schema.task == "survival":
        bins = [_number(b) for b in schema.time_bins]
        return f"survival: time to event in {len(bins)} interval{'' if len(bins) == 1 else 's'} ending at {_few(bins, 4)}"
    return f"{len(schema.class_names)} classes ({_few(list(schema.class_names), 6)})"


def class_order(names: set[str]) -> list[str]:
    """Class names in index order: numerically when all are integers, else by code point."""
    if all(INTEGER.fullmatch(n) for n in names):
        return sorted(names, key=lambda n: (int(n), n))
    return sorted(names)


Bounds = Mapping[str, tuple[float, float]]
"""Declared ``(lo, hi)`` of feature columns, by column name."""
Categories = Mapping[str, Sequence[str]]
"""Declared vocabularies of categorical feature columns, by column name (a cell holds one of them)."""


@dataclass(frozen=True)
class Regression:
    """A regression table: ``targets`` are the target columns with each one's declared ``(lo, hi)``
    (several: a multi-output model), in the order given."""

    targets: Bounds

    def columns(self) -> list[str]:
        return list(self.targets)


@dataclass(frozen=True)
class Survival:
    """A survival table: the follow-up ``time`` column (≥ 0), the ``event`` column (1: the event was
    observed at that time, 0: censored then) and the declared ends of the follow-up intervals."""

    time: str
    event: str
    time_bins: Sequence[float]

    def columns(self) -> list[str]:
        return [self.time, self.event]


Task = Regression | Survival
"""What a table's label columns are, when it is not a classification table."""


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


def _task_package(
    names: list[str], label_at: list[int], features: np.ndarray, labels: np.ndarray, bounds: Bounds | None, task: Task,
    categories: Categories | None,
) -> DatasetPackage:
    """A regression or survival package from the parsed feature and label columns."""
    label_names = {names[i] for i in label_at}
    feature_names = tuple(n for n in names if n not in label_names)
    for name in bounds or {}:
        if name in label_names:
            raise InvalidDataset(
                f"declared bounds for {json.dumps(name)}: it is a label column, not a feature (a target's bounds go with the target)"
            )
    declared = feature_bounds(feature_names, bounds)
    vocabularies = tuple((name, tuple(values)) for name, values in (categories or {}).items())
    if isinstance(task, Regression):
        schema = Schema("regression", feature_names, (len(feature_names),), feature_bounds=declared,
                        target_names=tuple(task.targets), target_bounds=tuple(task.targets.values()), categories=vocabularies)  # fmt: skip
    else:
        schema = Schema("survival", feature_names, (len(feature_names),), feature_bounds=declared,
                        time_bins=tuple(task.time_bins), categories=vocabularies)  # fmt: skip
    return DatasetPackage(features=features, labels=labels, schema=schema)


def _label_columns(names: list[str], task: Task) -> list[int]:
    """Where ``task``'s label columns are in the header.

    Raises:
        InvalidTable: a named column that is not in the header, or named twice.
    """
    wanted = task.columns()
    for name in wanted:
        if name not in names:
            raise InvalidTable(f"no column named {json.dumps(name)} (columns: {', '.join(names)})")
        if wanted.count(name) > 1:
            raise InvalidTable(f"column {json.dumps(name)} is named twice among the label columns")
    if len(names) <= len(wanted):
        raise InvalidTable("the table has no feature columns besides the label columns")
    return [names.index(name) for name in wanted]


def _category_columns(names: list[str], label_at: list[int], categories: Categories | None) -> dict[int, dict[str, int]]:
    """Column index → (category name → its index) of each declared categorical feature column.

    Raises:
        InvalidTable: a categorical column that is not a feature column of the table.
        InvalidDataset: a vocabulary of fewer than two or repeated categories.
    """
    found: dict[int, dict[str, int]] = {}
    for name, vocabulary in (categories or {}).items():
        if name not in names or names.index(name) in label_at:
            what = "is a label column" if name in names else "is not a column of the table"
            raise InvalidTable(f"categorical column {json.dumps(name)}: it {what}")
        check_vocabulary(name, vocabulary)  # before any row is read: a bad vocabulary, not a row, is the mistake
        found[names.index(name)] = {str(v): i for i, v in enumerate(vocabulary)}
    return found


def _cell_number(cell: str, where: str) -> float:
    """A numeric cell (a feature, a target, a time or an event) as float32.

    Raises:
        InvalidTable: empty, not a decimal number, or too large for float32 (``where`` says where).
    """
    value = _float32(cell)
    if not math.isfinite(value):
        if cell == "":
            what = "is empty"
        else:
            what = f"{cell} is too large for float32" if DECIMAL.fullmatch(cell) else f"{json.dumps(cell)} is not a number"
        raise InvalidTable(f"{where}: {what}")
    return value


def _numeric_column(column: Any, name: str) -> np.ndarray:
    """A Parquet column of numbers without nulls as float32.

    Raises:
        InvalidTable: not a numeric column, an empty value, or a value too large for float32.
    """
    import pyarrow as pa

    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or pa.types.is_boolean(column.type)):
        raise InvalidTable(f"column {json.dumps(name)} is {column.type}, not numbers")
    if column.null_count:
        raise InvalidTable(f"column {json.dumps(name)} has {column.null_count} empty value(s)")
    with np.errstate(over="ignore", invalid="ignore"):
        values: np.ndarray = column.to_numpy().astype(np.float64).astype(np.float32)
    if not np.isfinite(values).all():
        row = int(np.argmax(~np.isfinite(values)))
        raise InvalidTable(f"row {row + 1}, column {json.dumps(name)}: {column[row].as_py()} is not a float32 number")
    return values


def _check_task_labels(task: Task, labels: np.ndarray, row: Callable[[int], str]) -> None:
    """A survival table's times are ≥ 0 and its events 0 or 1 (``row(r)`` names row ``r`` in a message).

    Raises:
        InvalidTable: the first row that breaks either, with its column.
    """
    if not isinstance(task, Survival):
        return
    negative = np.flatnonzero(labels[:, 0] < 0)
    if negative.size:
        r = int(negative[0])
        raise InvalidTable(f"{row(r)}, column {json.dumps(task.time)}: a follow-up time of {labels[r, 0]:g} is negative")
    neither = np.flatnonzero(~np.isin(labels[:, 1], (0.0, 1.0)))
    if neither.size:
        r = int(neither[0])
        raise InvalidTable(f"{row(r)}, column {json.dumps(task.event)}: an event is 1 (observed) or 0 (censored), not {labels[r, 1]:g}")


def _package(
    names: list[str], label_at: int, features: np.ndarray, label_text: list[str], bounds: Bounds | None,
    categories: Categories | None = None,
) -> DatasetPackage:
    classes = class_order(set(label_text))
    if len(classes) < 2:
        raise InvalidTable(
            f"label column {json.dumps(names[label_at])} holds a single class {json.dumps(classes[0])}; classification needs at least two"
        )
    index = {name: i for i, name in enumerate(classes)}
    feature_names = tuple(n for i, n in enumerate(names) if i != label_at)
    declared = feature_bounds(feature_names, bounds, label=names[label_at])
    vocabularies = tuple((name, tuple(values)) for name, values in (categories or {}).items())
    schema = Schema("classification", feature_names, (len(feature_names),), tuple(classes), feature_bounds=declared,
                    categories=vocabularies)  # fmt: skip
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


def _label_positions(names: list[str], label_column: str | None, task: Task | None) -> list[int]:
    """The label column of a classification table, or ``task``'s label columns, after the header's checks."""
    label_at = _columns(names, label_column if task is None else None)
    if task is None:
        return [label_at]
    if label_column is not None:
        raise InvalidTable("a regression or survival table names its label columns in its task, not as the label column")
    return _label_columns(names, task)


def _category_miss(name: str, cell: str, vocabulary: Mapping[str, int]) -> InvalidTable:
    known = list(vocabulary)
    shown = ", ".join(known[:8]) + (", …" if len(known) > 8 else "")
    return InvalidTable(f"column {json.dumps(name)}: {json.dumps(cell)} is not one of its declared categories ({shown})")


def parse_csv(
    text: str, *, label_column: str | None = None, bounds: Bounds | None = None, task: Task | None = None,
    categories: Categories | None = None,
) -> DatasetPackage:  # fmt: skip
    """A CSV text as a dataset package.

    Args:
        bounds: the provider's declared ``(lo, hi)`` of some feature columns, by name, put in the
            schema (never computed from the rows).
        task: a :class:`Regression` or :class:`Survival` table (its label columns named there);
            default classification on ``label_column``.
        categories: declared vocabularies of categorical feature columns, by name.

    Raises:
        InvalidTable: empty, no data rows, an unknown label column, a ragged row, a cell that is not a
            number (or overflows float32), an empty label, a single class, a quote left open; a
            category not in its column's vocabulary; a negative time or an event other than 0/1.
        InvalidDataset: declared bounds for an unknown column, or bounds, time bins or vocabularies the schema refuses.
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
    label_at = _label_positions(names, label_column, task)
    codes = _category_columns(names, label_at, categories)
    data = records[1:]
    if not data:
        raise InvalidTable("the CSV file has a header row but no data rows")
    feature_at = [i for i in range(len(names)) if i not in label_at]
    features = np.empty((len(data), len(feature_at)), dtype=np.float32)
    label_values = np.empty((len(data), len(label_at)), dtype=np.float32)
    label_text = []
    for r, (line, cells) in enumerate(data):
        if len(cells) != len(names):
            raise InvalidTable(f"line {line} has {len(cells)} cells, the header has {len(names)}")
        for j, col in enumerate(feature_at):
            cell = cells[col].strip()
            if col in codes:
                if cell not in codes[col]:
                    raise InvalidTable(f"line {line}, {_category_miss(names[col], cell, codes[col])}")
                features[r, j] = codes[col][cell]
                continue
            features[r, j] = _cell_number(cell, f"line {line}, column {json.dumps(names[col])}")
        if task is not None:
            for k, col in enumerate(label_at):
                label_values[r, k] = _cell_number(cells[col].strip(), f"line {line}, column {json.dumps(names[col])}")
            continue
        label = cells[label_at[0]].strip()
        if not label:
            raise InvalidTable(f"line {line}, label column {json.dumps(names[label_at[0]])} is empty")
        label_text.append(label)
    if task is not None:
        _check_task_labels(task, label_values, lambda r: f"line {data[r][0]}")
        return _task_package(names, label_at, features, label_values, bounds, task, categories)
    return _package(names, label_at[0], features, label_text, bounds, categories)


def read_parquet(
    path: Path, *, label_column: str | None = None, bounds: Bounds | None = None, task: Task | None = None,
    categories: Categories | None = None,
) -> DatasetPackage:  # fmt: skip
    """A Parquet file as a dataset package (numeric feature columns without nulls; any label column;
    ``task`` and ``categories`` as for :func:`parse_csv`, a categorical column's values read as text).

    Raises:
        InvalidTable: not Parquet, an unknown label column, a non-numeric or null feature, a single class,
            a category not in its vocabulary, a label that is not a number (regression, survival).
        InvalidDataset: declared ``bounds`` (as for :func:`parse_csv`) for an unknown column, or refused.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise InvalidTable(f"{path} is not a readable Parquet file: {e}") from e
    names = [str(n) for n in table.column_names]
    label_at = _label_positions(names, label_column, task)
    codes = _category_columns(names, label_at, categories)
    if table.num_rows == 0:
        raise InvalidTable(f"{path} holds no rows")
    features = np.empty((table.num_rows, len(names) - len(label_at)), dtype=np.float32)
    j = 0
    for i, name in enumerate(names):
        if i in label_at:
            continue
        column = table.column(i)
        if i in codes:
            for row, value in enumerate(column.to_pylist()):
                cell = "" if value is None else str(value).strip()
                if cell not in codes[i]:
                    raise InvalidTable(f"row {row + 1}, {_category_miss(name, cell, codes[i])}")
                features[row, j] = codes[i][cell]
            j += 1
            continue
        features[:, j] = _numeric_column(column, name)
        j += 1
    if task is not None:
        labels = np.stack([_numeric_column(table.column(i), names[i]) for i in label_at], axis=1)
        _check_task_labels(task, labels, lambda r: f"row {r + 1}")
        return _task_package(names, label_at, features, labels, bounds, task, categories)
    label = table.column(label_at[0])
    if label.null_count:
        raise InvalidTable(f"label column {json.dumps(names[label_at[0]])} has {label.null_count} empty value(s)")
    label_text = [str(v).strip() for v in label.to_pylist()]
    if any(not t for t in label_text):
        raise InvalidTable(f"label column {json.dumps(names[label_at[0]])} has empty labels")
    return _package(names, label_at[0], features, label_text, bounds, categories)


def read_table(
    path: Path, *, label_column: str | None = None, bounds: Bounds | None = None, task: Task | None = None,
    categories: Categories | None = None,
) -> DatasetPackage:  # fmt: skip
    """``path`` (``.parquet``/``.pq``, else CSV in UTF-8) as a dataset package.

    Args:
        bounds: declared ``(lo, hi)`` of feature columns by name (:func:`parse_csv`).
        task: a :class:`Regression` or :class:`Survival` table; default classification.
        categories: declared vocabularies of categorical feature columns, by name.

    Raises:
        InvalidTable: the file cannot be read or breaks the rules (the message says where).
        InvalidDataset: declared bounds for an unknown column, or bounds the schema refuses.
    """
    if path.suffix.lower() in (".parquet", ".pq"):
        return read_parquet(path, label_column=label_column, bounds=bounds, task=task, categories=categories)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InvalidTable(f"cannot read {path}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise InvalidTable(f"{path} is not UTF-8 text (byte {e.start})") from e
    return parse_csv(text, label_column=label_column, bounds=bounds, task=task, categories=categories)
