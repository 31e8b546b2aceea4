"""``make bench-search``: the cost of searching datasets by their datasheets (issue 19).

An index database (SQLite in a temporary folder, or ``--database-url``) is filled with ``--datasets``
synthetic listings, each with a datasheet of 40 description words, two tags and 20 described
columns. Then the dataset list the API serves (:func:`sterling.gateway.queries.list_datasets`, a
page of 50 with its total) is timed for each query shape, interleaved round by round so that
machine noise hits every shape alike; the unfiltered newest-first list is the baseline each is
read against. Prints one line per shape and the summary::

    bench-search: N datasets, free text X ms (ratio R), tag Y ms (ratio S), sort by title Z ms (ratio T)

The API caches a rendered page until the index moves (docs/gateway.md), so these are the cost of a
first read.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from marketplace.datasheet import Datasheet
from oracle.index_db import Dataset, IndexDatabase
from sterling.gateway.queries import DatasetFilter, list_datasets, store_datasheet
from sterling.gateway.schemas import DatasetSort

WORDS = (
    "credit", "hospital", "retail", "churn", "sensor", "traffic", "energy", "genome", "survey", "payments", "fraud", "loans",
    "imaging", "claims", "weather", "admissions", "outcomes", "defaults", "readings", "visits",
)  # fmt: skip
TAGS = ("finance", "health", "retail", "iot", "tabular", "images", "survival", "credit-scoring")
SHAPES: dict[str, tuple[DatasetFilter, DatasetSort]] = {
    "baseline (newest first)": (DatasetFilter(), "-listed"),
    "free text, one word": (DatasetFilter(words=("credit",)), "-listed"),
    "free text, two words": (DatasetFilter(words=("credit", "hospital")), "-listed"),
    "tag": (DatasetFilter(tags=("finance",)), "-listed"),
    "sort by title": (DatasetFilter(), "title"),
    "text + tag, sort by rows": (DatasetFilter(words=("credit",), tags=("finance",)), "-rows"),
}


def fill(db: IndexDatabase, count: int, *, seed: int = 0) -> None:
    """``count`` active listings with datasheets, as the indexer and ``POST /api/datasheets`` would leave them."""
    rng = random.Random(seed)
    with db.transaction() as session:
        for i in range(1, count + 1):
            first, second = rng.sample(WORDS, 2)
            sheet = Datasheet.from_json({
                "version": 1, "title": f"{first.title()} {second} {i}", "description": " ".join(rng.choices(WORDS, k=40)),
                "tags": rng.sample(TAGS, 2), "license": "CC-BY-4.0", "provider_name": f"Provider {i % 50}",
                "rows": rng.randint(100, 10**6), "label": {"name": "y"},
                "columns": [{"name": f"c{j}", "description": rng.choice(WORDS), "unit": "u"} for j in range(20)],
            })  # fmt: skip
            digest = "0x" + sheet.hash().hex()
            store_datasheet(session, digest, sheet, sheet.to_json())
            session.add(Dataset(
                id=i, provider="0x" + "11" * 20, content_hash="0x" + f"{i:064x}", schema_hash="0x" + "33" * 32, uri="sterling-blob:",
                price_wei=10**17 + i, max_epsilon_per_job=10**6, total_epsilon=10**7, spent_epsilon=0, reserved_epsilon=0,
                remaining_epsilon=10**7, max_delta=10, expiry=0, listed_block=i, listed_at=i, listed_tx="0x" + "44" * 32, status=0,
                updated_block=i, datasheet_hash=digest,
            ))  # fmt: skip


def measure(db: IndexDatabase, *, rounds: int) -> dict[str, list[float]]:
    """Seconds per page of 50, per shape, ``rounds`` times, the shapes interleaved."""
    times: dict[str, list[float]] = {name: [] for name in SHAPES}
    for _ in range(rounds):
        for name, (f, sort) in SHAPES.items():
            with db.session() as session:
                started = time.perf_counter()
                list_datasets(session, f, sort=sort, limit=50, offset=0)
                times[name].append(time.perf_counter() - started)
    return times


def main(argv: list[str] | None = None, *, out: Callable[[str], Any] = print) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temporary folder")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        db = IndexDatabase(args.database_url or f"sqlite:///{Path(tmp) / 'index.db'}")
        db.create_schema()
        try:
            fill(db, args.datasets)
            times = measure(db, rounds=args.rounds)
        finally:
            db.close()
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    base = medians["baseline (newest first)"]
    for name, ts in times.items():
        ordered = sorted(ts)
        low, high = ordered[len(ordered) // 10], ordered[-1 - len(ordered) // 10]
        spread = f"p10 {low * 1000:.1f}, p90 {high * 1000:.1f}"
        out(f"{name:26s} median {medians[name] * 1000:7.1f} ms ({spread}), ratio {medians[name] / base:.2f}")

    def shown(name: str) -> str:
        return f"{medians[name] * 1000:.1f} ms (ratio {medians[name] / base:.2f})"

    out(
        f"bench-search: {args.datasets} datasets, free text {shown('free text, one word')}, tag {shown('tag')}, "
        f"sort by title {shown('sort by title')}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
