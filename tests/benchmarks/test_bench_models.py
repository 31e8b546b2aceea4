"""`make bench-models` runs end to end (a short run: few rows and steps) and prints its documented last line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAST = re.compile(
    r"bench-models: resnet32 dp epoch (\d+\.\d\d) min \(ratio (\d+\.\d\d)\), vgg9 dp epoch (\d+\.\d\d) min \(ratio (\d+\.\d\d)\), "
    r"resnet32 enclave inference (\d+) img/s"
)


@pytest.mark.slow
def test_a_short_bench_models_run_prints_the_documented_last_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_models", "--rows", "512", "--steps", "2", "--job-rounds", "1",
         "--bulk", "300", "--repeats", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=900, check=True,
    )  # fmt: skip
    lines = proc.stdout.strip().splitlines()
    match = LAST.fullmatch(lines[-1])
    assert match, lines[-1]
    resnet_minutes, resnet_ratio, vgg_minutes, vgg_ratio, rate = (float(v) for v in match.groups())
    assert all(0.3 < r < 10 for r in (resnet_ratio, vgg_ratio)) and resnet_minutes > 0 and vgg_minutes > 0 and rate > 0
    job = next(line for line in lines if line.startswith("resnet32 job"))
    assert "through the enclave" in job and "held-out accuracy" in job
    served = next(line for line in lines if line.startswith("resnet32 inference through the enclave"))
    assert "labels equal to the model's own on 300/300" in served  # the enclave serves the model's own labels


def test_a_partial_run_says_so_instead_of_the_summary() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_models", "--rows", "300", "--steps", "1", "--job-rounds", "0", "--models", "vgg9"],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("bench-models (partial run): vgg9 dp epoch") and "inference" not in last
