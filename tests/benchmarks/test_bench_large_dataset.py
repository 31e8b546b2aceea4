"""`make bench-large` at 8 MiB: a real trainer enclave scans the rows within its budget and prints the documented lines."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.bench_large_dataset import in_memory_package, package_stream, rows_for
from enclave_worker.trusted.dataset import DatasetPackage

REPO = Path(__file__).resolve().parents[2]


def test_the_streamed_package_is_the_package_of_the_same_rows() -> None:
    rows = rows_for(1, 16)  # 1 MiB: several generation blocks
    streamed = DatasetPackage.from_bytes(b"".join(package_stream(rows, 16)))  # safetensors' own reader
    held = in_memory_package(rows, 16)
    assert streamed.rows == rows == 14_563 and streamed.schema == held.schema
    assert np.array_equal(streamed.features, held.features) and np.array_equal(streamed.labels, held.labels)
    assert 0.3 < held.labels.mean() < 0.7


def test_bench_large_trains_scanned_within_the_budget() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_large_dataset", "--size-mib", "8", "--budget-mib", "120"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    lines = proc.stdout.strip().splitlines()
    plan = next(line for line in lines if line.startswith("enclave plan: "))
    assert plan.startswith("enclave plan: scanned,") and int(re.search(r"(\d+) scans per epoch", plan).group(1)) >= 2, plan  # type: ignore[union-attr]
    memory = next(line for line in lines if line.startswith("enclave memory: "))
    grown, budget = (int(x) for x in re.search(r"grew it by (\d+) MiB \(budget (\d+) MiB\)", memory).groups())  # type: ignore[union-attr]
    assert 0 < grown <= budget == 120, memory  # the plan bounds what the job adds to the process
    summary = re.fullmatch(
        r"bench-large: 8 MiB training peak RSS (\d[\d,]*) MiB, epoch ([\d.]+) s chunked vs ([\d.]+) s in memory \(ratio ([\d.]+)\)",
        lines[-1],
    )
    assert summary is not None, lines[-1]
    peak, chunked, in_memory, ratio = summary.groups()
    assert int(peak.replace(",", "")) > grown and float(chunked) > 0 and float(in_memory) > 0
    assert abs(float(ratio) - float(chunked) / float(in_memory)) < 0.02
