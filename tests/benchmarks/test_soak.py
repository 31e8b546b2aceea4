"""The short soak of ``make test``: streams, slow uploads and reads against ``sterling up``, then nothing left over."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import soak

pytestmark = [pytest.mark.slow, pytest.mark.anvil]


def test_a_short_soak_meets_the_goals(tmp_path: Path) -> None:
    lines: list[str] = []
    result = soak.run(seconds=10, streams=60, uploads=30, rate=100, work_dir=tmp_path, say=lines.append)
    assert lines[-1] == result.line() and lines[-1].startswith("soak: health p99 ")
    assert result.streams_opened >= 60 and len(result.health.latencies_ms) >= 200
    assert min(result.uploads.values()) >= 1  # completed, abandoned and timed out (408) all happened
    assert result.errors == [] and result.health.errors == 0, result.errors[:5]
    assert result.health_p99_ms <= soak.HEALTH_P99_GOAL_MS, lines
    assert result.connections == result.baseline_connections and result.staging_files == result.baseline_staging == 0
    assert result.open_fds - result.outbound_growth <= result.baseline_fds + soak.FD_SLACK, lines
    assert result.goals_met
