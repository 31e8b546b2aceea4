"""The CSV rules of web/js/crypto/csv.js, written independently in Python: the reference both the
browser's reader (tests/web/test_browser_crypto.py) and the SDK's (tests/marketplace/test_tables.py)
are checked against, and the files both must refuse."""

from __future__ import annotations

import csv
import io
import re

import numpy as np

from enclave_worker.trusted.dataset import DatasetPackage, Schema

# Quoting, CRLF, a BOM, a blank line, non-ASCII names, spaces around cells, float32 edge cases
# (rounding, a tie, subnormals, the largest float32, -0), and class names whose code-point order
# differs from JavaScript's default UTF-16 order ("Ａ" U+FF21 sorts before "😀" U+1F600).
TRICKY_CSV = (
    '\ufeffid,température,"size, cm","say ""hi""",größe,outcome\r\n'
    "1,0.1, 16777217 ,1e-45,3.4028235e38,z\r\n"
    "2,-0,1.00000005960464477539,.5,-2E-3,Ａ\r\n"
    "\r\n"
    "3,123456789.123,7.,+4,1e-38,😀\r\n"
    '4,"5",0.3333333333333333,-1.5e+10,2,z\r\n'
)


def reference_csv_package(text: str, label_column: str | None = None) -> DatasetPackage:
    """The CSV rules of web/js/crypto/csv.js, written independently in Python."""
    rows = [r for r in csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline="")) if r]
    names = [n.strip() for n in rows[0]]
    label_at = names.index(label_column) if label_column else len(names) - 1
    feature_at = [i for i in range(len(names)) if i != label_at]
    features = np.array([[float(r[i]) for i in feature_at] for r in rows[1:]], dtype=np.float64).astype(np.float32)
    label_text = [r[label_at].strip() for r in rows[1:]]
    distinct = set(label_text)
    if all(re.fullmatch(r"[+-]?\d+", s) for s in distinct):
        classes = sorted(distinct, key=lambda s: (int(s), s))
    else:
        classes = sorted(distinct)
    labels = np.array([classes.index(s) for s in label_text], dtype=np.int64)
    schema = Schema("classification", tuple(names[i] for i in feature_at), (len(feature_at),), tuple(classes))
    return DatasetPackage(features=features, labels=labels, schema=schema)


BAD_CSV: list[tuple[str, dict[str, str], str]] = [
    ("", {}, "the CSV file is empty"),
    ("a,b,y\r\n", {}, "header row but no data rows"),
    ("a,b,y\n1,2,p\n3,q\n", {}, "line 3 has 2 cells, the header has 3"),
    ("a,b,y\n1,abc,p\n", {}, 'line 2, column "b": "abc" is not a number'),
    ("a,b,y\n1,,p\n", {}, 'line 2, column "b": is empty'),
    ("a,b,y\n1,1e39,p\n", {}, "too large for float32"),
    ("a,b,y\n1,nan,p\n2,3,q\n", {}, '"nan" is not a number'),
    ("a,b,y\n1,2,p\n3,4,p\n", {}, 'holds a single class "p"'),
    ("a,b,y\n1,2,p\n", {"labelColumn": "outcome"}, 'no column named "outcome"'),
    ("a,a,y\n1,2,p\n", {}, 'column name "a" appears twice'),
    ('a,b,y\n1,"2,p\n', {}, "a quoted field is not closed"),
    ("y\np\nq\n", {}, "no feature columns"),
]
"""CSV files refused, the options they were read with, and a part of the message (the browser's and the SDK's alike)."""
