"""`make bench-dp` runs end to end and prints its documented last line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_dp_prints_the_documented_last_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_dp", "--epochs", "1", "--batch-sizes", "256", "--job-rounds", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=True,
    )
    lines = proc.stdout.strip().splitlines()
    assert re.fullmatch(r"dp/non-dp epoch time at batch 256: mlp \d+\.\d\d, cnn \d+\.\d\d", lines[-1]), lines[-1]
    assert any(line.startswith("whole job through the enclave") for line in lines)
    ratios = [float(x) for x in re.findall(r"\d+\.\d\d", lines[-1])]
    assert all(0.5 < r < 10 for r in ratios)  # sanity only: the figures themselves are reported from `make bench-dp`
