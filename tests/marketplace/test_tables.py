"""A provider's table → a dataset package: the SDK reads CSV as the browser does (one reference), and Parquet alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from marketplace.tables import InvalidTable, parse_csv, read_table
from tests.csv_reference import BAD_CSV, TRICKY_CSV, reference_csv_package


def test_the_tricky_csv_gives_the_browser_s_package_byte_for_byte() -> None:
    ours, reference = parse_csv(TRICKY_CSV), reference_csv_package(TRICKY_CSV)
    assert ours.to_bytes() == reference.to_bytes()
    labelled = parse_csv("a,y,b\n1,p,2\n3,q,4\n", label_column="y")
    assert labelled.schema.feature_names == ("a", "b") and labelled.labels.tolist() == [0, 1]
    assert labelled.to_bytes() == reference_csv_package("a,y,b\n1,p,2\n3,q,4\n", "y").to_bytes()


def test_integer_labels_are_ordered_by_value() -> None:
    package = parse_csv("x,label\n1,10\n2,2\n3,0\n4,-1\n5,2\n")
    assert list(package.schema.class_names) == ["-1", "0", "2", "10"] and package.labels.tolist() == [3, 2, 1, 0, 2]


@pytest.mark.parametrize(("text", "options", "message"), BAD_CSV)
def test_bad_csv_files_get_the_browser_s_messages(text: str, options: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidTable) as refused:
        parse_csv(text, label_column=options.get("labelColumn"))
    assert message in str(refused.value)


def test_parquet_follows_the_same_rules(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": [1.5, 2.0, 3.25], "b": [1, 2, 3], "y": ["no", "yes", "no"]}), path)
    package = read_table(path)
    assert package.to_bytes() == parse_csv("a,b,y\n1.5,1,no\n2,2,yes\n3.25,3,no\n").to_bytes()
    pq.write_table(pa.table({"a": ["x", "y"], "y": [0, 1]}), path)
    with pytest.raises(InvalidTable, match='column "a" is string, not numbers'):
        read_table(path)
    pq.write_table(pa.table({"a": [1.0, None], "y": [0, 1]}), path)
    with pytest.raises(InvalidTable, match='column "a" has 1 empty value'):
        read_table(path)
    pq.write_table(pa.table({"a": [1.0, float("inf")], "y": [0, 1]}), path)
    with pytest.raises(InvalidTable, match='row 2, column "a": inf is not a float32 number'):
        read_table(path)
    path.write_bytes(b"not parquet")
    with pytest.raises(InvalidTable, match="not a readable Parquet file"):
        read_table(path)


def test_a_csv_file_is_read_as_utf8_and_refused_clearly_otherwise(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes("\ufeffa,y\n1,é\n2,ü\n".encode())
    assert list(read_table(path).schema.class_names) == ["é", "ü"]
    assert np.array_equal(read_table(path).features, np.array([[1], [2]], dtype=np.float32))
    path.write_bytes(b"a,y\n1,\xff\n")
    with pytest.raises(InvalidTable, match="not UTF-8"):
        read_table(path)
    with pytest.raises(InvalidTable, match="cannot read"):
        read_table(tmp_path / "missing.csv")
