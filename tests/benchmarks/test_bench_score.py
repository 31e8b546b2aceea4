"""`make bench-score` runs the real key manager and evaluator processes and prints its documented last lines."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_score_scores_in_the_enclave_above_the_goal() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_score", "--rows", "3000", "--rounds", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    lines = proc.stdout.strip().splitlines()
    summary = next(line for line in lines if line.startswith("scoring throughput: median "))
    figures = [float(x.replace(",", "")) for x in re.findall(r"([\d,]+) rows/s", summary)]
    assert len(figures) == 5, summary
    assert figures[0] >= 1_000, summary  # the goal: >= 1,000 rows/s (measured ~37,000 on 10,000 rows)
    assert lines[-1].startswith("test set 3000 rows")
