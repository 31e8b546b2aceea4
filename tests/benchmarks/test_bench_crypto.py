"""The crypto benchmark runs, round-trips, and streams in bounded memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks import bench_crypto

REPO = Path(__file__).resolve().parents[2]


def test_streaming_64_mib_grows_peak_memory_by_less_than_16_mib(tmp_path: Path) -> None:
    result = bench_crypto.run(64 << 20, rounds=3, workdir=tmp_path)
    assert result.peak_growth_mib < 16
    assert 0.3 < result.ratio < 3  # same order as raw AES-GCM; the figure itself comes from `make bench-crypto`
    assert list(tmp_path.iterdir()) == []  # cleaned up


def test_command_prints_the_documented_last_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_crypto", "--size-mib", "16", "--rounds", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=True,
    )
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("bench-crypto: ratio to raw AES-GCM ")
    assert last.endswith(" MiB") and "peak memory growth" in last
