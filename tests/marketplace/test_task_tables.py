"""Regression and survival tables, and categorical columns, read from CSV and Parquet
(``marketplace.tables``): the same files a provider exports give the packages of
``marketplace.datasets`` byte for byte, and every mistake is refused with its line and column."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from marketplace import datasets
from marketplace.errors import InvalidDataset
from marketplace.tables import InvalidTable, Regression, Survival, label_summary, parse_csv, read_table


def _csv(header: list[str], rows: list[list[object]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def _number(x: np.float32) -> str:
    return repr(float(x))  # exact for float32 values: rounds back to the same float32


def _diabetes_csv() -> str:
    data = datasets.diabetes()
    header = [*data.schema.feature_names, "progression"]
    return _csv(header, [[*map(_number, x), _number(y[0])] for x, y in zip(data.features, data.labels, strict=True)])


def _flchain_rows() -> tuple[list[str], list[list[object]]]:
    """flchain with its categorical columns written as category names, time and event last."""
    data = datasets.flchain(categorical=True)
    vocabularies = dict(data.schema.categories)
    header = [*data.schema.feature_names, "futime", "death"]
    rows = []
    for x, (time, event) in zip(data.features, data.labels, strict=True):
        cells: list[object] = [vocabularies[n][int(v)] if n in vocabularies else _number(v) for n, v in zip(data.schema.feature_names, x, strict=True)]
        rows.append([*cells, _number(time), int(event)])
    return header, rows


def test_a_regression_csv_reads_as_the_shipped_diabetes_package() -> None:
    data = datasets.diabetes()
    bounds = dict(zip(data.schema.feature_names, data.schema.feature_bounds or (), strict=True))
    read = parse_csv(_diabetes_csv(), task=Regression({"progression": (0.0, 400.0)}), bounds=bounds)
    assert read.schema == data.schema and read.schema.hash() == data.schema.hash()
    assert read.to_bytes() == data.to_bytes()
    assert label_summary(read.schema) == "regression on 1 target (progression, declared 0 to 400)"


def test_several_targets_make_a_multi_output_table_in_the_order_given() -> None:
    text = _csv(["x", "cd4", "y", "cd8"], [[1, 350, 2, 900], [2, 410.5, 3, 1200]])
    read = parse_csv(text, task=Regression({"cd8": (0.0, 3000.0), "cd4": (0.0, 1500.0)}))
    assert read.schema.feature_names == ("x", "y") and read.schema.target_names == ("cd8", "cd4")
    np.testing.assert_array_equal(read.labels, np.array([[900, 350], [1200, 410.5]], np.float32))
    np.testing.assert_array_equal(read.features, np.array([[1, 2], [2, 3]], np.float32))
    assert read.schema.num_outputs == 2


def test_a_survival_csv_with_category_names_reads_as_the_shipped_flchain_package(tmp_path: Path) -> None:
    data = datasets.flchain(categorical=True)
    header, rows = _flchain_rows()
    bounds = {n: b for n, b in zip(data.schema.feature_names, data.schema.feature_bounds or (), strict=True) if b is not None}
    task = Survival("futime", "death", list(data.schema.time_bins))
    categories = dict(data.schema.categories)
    path = tmp_path / "flchain.csv"
    path.write_text(_csv(header, rows))
    read = read_table(path, task=task, bounds=bounds, categories=categories)
    assert read.schema.hash() == data.schema.hash() and read.to_bytes() == data.to_bytes()
    assert label_summary(read.schema).startswith("survival: time to event in 14 intervals ending at 365.25, 730.5, 1095.75, 1461, …")
    # The same table as Parquet (category names as text, the event as integers) gives the same package.
    columns = list(zip(*rows, strict=True))
    table = pa.table({name: pa.array([str(v) for v in column]) if name in categories else pa.array([float(v) for v in column])
                      for name, column in zip(header, columns, strict=True)})  # fmt: skip
    table = table.set_column(header.index("death"), "death", pa.array([int(v) for v in columns[-1]], pa.int8()))
    pq.write_table(table, tmp_path / "flchain.parquet")
    assert read_table(tmp_path / "flchain.parquet", task=task, bounds=bounds, categories=categories).to_bytes() == data.to_bytes()


@pytest.mark.parametrize(
    ("text", "options", "error", "message"),
    [
        ("a,sex,t,e\n1,F,3,1\n2,X,4,0\n", {"categories": {"sex": ["F", "M"]}}, InvalidTable,
         'line 3, column "sex": "X" is not one of its declared categories (F, M)'),
        ("a,t,e\n1,-3,1\n", {}, InvalidTable, 'line 2, column "t": a follow-up time of -3 is negative'),
        ("a,t,e\n1,3,2\n", {}, InvalidTable, 'line 2, column "e": an event is 1 (observed) or 0 (censored), not 2'),
        ("a,t,e\n1,,1\n", {}, InvalidTable, 'line 2, column "t": is empty'),
        ("a,t,e\n1,3,1\n", {"label_column": "e"}, InvalidTable, "names its label columns in its task"),
        ("a,t,e\n1,3,1\n", {"bounds": {"t": (0, 10)}}, InvalidDataset, 'declared bounds for "t": it is a label column'),
        ("a,t,e\n1,3,1\n", {"categories": {"e": ["0", "1"]}}, InvalidTable, 'categorical column "e": it is a label column'),
        ("a,t,e\n1,3,1\n", {"categories": {"z": ["0", "1"]}}, InvalidTable, 'categorical column "z": it is not a column of the table'),
        ("a,t,e\n1,3,1\n", {"categories": {"a": ["1"]}}, InvalidDataset, "needs 2 to"),
        ("a,time,e\n1,3,1\n", {}, InvalidTable, 'no column named "t"'),
        ("t,e\n3,1\n", {}, InvalidTable, "no feature columns besides the label columns"),
    ],
)  # fmt: skip
def test_survival_tables_refuse_each_mistake_with_where_and_why(text: str, options: dict[str, object], error: type[Exception], message: str) -> None:
    with pytest.raises(error) as refused:
        parse_csv(text, task=Survival("t", "e", [5.0, 10.0]), **options)  # type: ignore[arg-type]
    assert message in str(refused.value)


def test_regression_tables_refuse_unbounded_or_textual_targets_and_bad_time_bins() -> None:
    with pytest.raises(InvalidTable, match='line 2, column "y": "high" is not a number'):
        parse_csv("x,y\n1,high\n", task=Regression({"y": (0.0, 1.0)}))
    with pytest.raises(InvalidDataset, match=r"target_bounds of target 0 \('y'\): the lower bound 5 is not below"):
        parse_csv("x,y\n1,2\n", task=Regression({"y": (5.0, 1.0)}))
    with pytest.raises(InvalidDataset, match="increasing positive time_bins"):
        parse_csv("x,t,e\n1,2,1\n", task=Survival("t", "e", [10.0, 5.0]))
    # A classification table with a categorical column: names become indices, the label stays a class.
    read = parse_csv("sex,age,y\nM,30,yes\nF,40,no\n", categories={"sex": ["F", "M"]})
    np.testing.assert_array_equal(read.features, np.array([[1, 30], [0, 40]], np.float32))
    assert read.schema.categories == (("sex", ("F", "M")),) and read.schema.class_names == ("no", "yes")
