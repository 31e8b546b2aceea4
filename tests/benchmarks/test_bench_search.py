"""``make bench-search`` times every query shape of the dataset search and prints its documented last line."""

from __future__ import annotations

import re

from benchmarks.bench_search import SHAPES, main


def test_bench_search_times_every_shape_and_prints_the_summary() -> None:
    lines: list[str] = []
    assert main(["--datasets", "300", "--rounds", "3"], out=lines.append) == 0
    assert [line.split(" median ")[0].strip() for line in lines[:-1]] == list(SHAPES)
    summary = re.fullmatch(
        r"bench-search: 300 datasets, free text ([\d.]+) ms \(ratio ([\d.]+)\), tag ([\d.]+) ms \(ratio [\d.]+\), "
        r"sort by title ([\d.]+) ms \(ratio [\d.]+\)",
        lines[-1],
    )
    assert summary is not None, lines[-1]
    assert all(float(v) > 0 for v in summary.groups())
