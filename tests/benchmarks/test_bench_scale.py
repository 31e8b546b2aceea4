"""`make bench-scale` at a small size: the services as processes on anvil and PostgreSQL, every part
measured, and the documented last line (the full run is `make bench-scale`, docs/operations.md)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.anvil, pytest.mark.slow]


def test_bench_scale_measures_every_part_with_the_services_as_processes() -> None:
    args = ["--history", "150", "--small-history", "50", "--pickups", "2", "--batch-jobs", "2", "--batch-epochs", "1",
            "--long-epochs", "50", "--load-seconds", "2", "--rate", "50",
            "--large-args", "--size-mib", "8", "--budget-mib", "120"]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_scale", *args], cwd=REPO, capture_output=True, text=True, timeout=900, check=False
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    seeded = [int(m.group(1)) for line in lines if (m := re.search(r"seeded (\d+) listings and \1 past jobs", line))]
    assert seeded[0] == 50 and sum(seeded) + 2 == 150, lines  # the history tops up to 150 jobs with the 2 timed ones
    assert any("both workers followed the history" in line for line in lines)
    mining = [int(m.group(1)) for line in lines if (m := re.search(r"\(a\) .* anvil mines a block in (\d+) ms .* Sterling's share is [\d.]+ s", line))]
    assert len(mining) == 2, lines  # the node's share of a pickup, and the rest, at each history size
    summary = re.fullmatch(
        r"bench-scale: pickup p50 ([\d.]+) s at 150 jobs \(([\d.]+) s at 50\), gateway p99 ([\d.]+) ms \(postgres\), "
        r"2-worker speed-up ([\d.]+), 1 GiB training peak RSS ([\d,]+) MiB",
        lines[-1],
    )
    assert summary, lines[-1]
    pickup, pickup_small, p99, speedup, rss = (float(x.replace(",", "")) for x in summary.groups())
    assert 0 < pickup < 30 and 0 < pickup_small < 30  # a worker process picked each new job up
    assert 0 < p99 < 10_000 and speedup > 0 and rss > 100
    assert not any("no longer training" in line for line in lines)  # the load ran while the job trained
