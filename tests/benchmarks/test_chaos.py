"""The short chaos run of ``make test``: six jobs, a fixed kill schedule over every kind of component."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import chaos

pytestmark = [pytest.mark.slow, pytest.mark.anvil]

SEED = 13


def test_schedule_is_seeded_and_printed_in_order() -> None:
    plan = chaos.schedule(SEED, 6, 40.0)
    assert plan == chaos.schedule(SEED, 6, 40.0)
    assert [k.at for k in plan] == sorted(k.at for k in plan)
    assert all(2.0 <= k.at <= 40.0 and k.target in chaos.TARGETS for k in plan)
    assert {k.target for k in plan[:4]} == set(chaos.TARGETS)  # every kind of component is killed
    assert plan != chaos.schedule(SEED + 1, 6, 40.0)


def test_short_chaos_run_keeps_every_promise(tmp_path: Path) -> None:
    lines: list[str] = []
    outcome = chaos.run(jobs=6, kills=4, seed=SEED, lease=8, span=40.0, work_dir=tmp_path, say=lines.append)
    assert lines[0].startswith(f"chaos: seed {SEED}, 6 jobs")
    assert outcome.problems == []
    assert (outcome.forks, outcome.stranded, outcome.value_conserved) == (0, 0, True)
    assert outcome.completed + outcome.refunded == 6
    assert outcome.completed >= 1
    assert outcome.releases >= outcome.completed  # every completed job held its keys: the kills hit real work
    assert outcome.line().endswith("forks 0, stranded 0, value conserved yes")
