"""An open-loop HTTP load generator: requests leave on a fixed schedule, whatever the server does.

Each request is due at ``start + i / rate``; its latency is measured from that due time, not from
when a busy client finally sent it, so a slow server cannot hide its queueing (no "coordinated
omission"). Used by ``make bench-api``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class LoadResult:
    """What one load run measured."""

    requests: int
    errors: int
    duration_s: float
    latencies_ms: tuple[float, ...]

    @property
    def achieved_rps(self) -> float:
        return (self.requests - self.errors) / self.duration_s if self.duration_s > 0 else 0.0

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0–100) of successful requests' latencies, in ms (nearest rank)."""
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        rank = math.ceil(q / 100 * len(ordered))
        return ordered[max(0, min(len(ordered), rank) - 1)]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else float("nan")


async def paced(total: int, rate: float, one: Callable[[int, float], Coroutine[Any, Any, None]]) -> None:
    """Start ``one(i, due)`` for ``i < total`` at ``rate`` per second (open loop), each at its due
    time, from one scheduler (not thousands of sleeping tasks); return when all have finished.
    Latencies are measured from ``due``, so queueing in the client is not hidden."""
    start = time.perf_counter() + 0.05
    running: set[asyncio.Task[None]] = set()
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(i, due))
        running.add(task)
        task.add_done_callback(running.discard)
    if running:
        await asyncio.gather(*running)


async def _run(url: str, *, rate: float, duration: float, timeout: float, connections: int) -> LoadResult:
    total = int(rate * duration)
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        start = time.perf_counter()

        async def one(_: int, due: float) -> None:
            nonlocal errors
            try:
                response = await client.get(url)
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append((time.perf_counter() - due) * 1000)
            else:
                errors += 1

        await paced(total, rate, one)
        elapsed = time.perf_counter() - start - 0.05
    return LoadResult(requests=total, errors=errors, duration_s=max(elapsed, duration), latencies_ms=tuple(latencies))


def open_loop(url: str, *, rate: float, duration: float, timeout: float = 5.0, connections: int = 64) -> LoadResult:
    """GET ``url`` at ``rate`` requests per second for ``duration`` seconds (open loop).

    A request fails if it raises, times out after ``timeout`` seconds, or answers other than 200.

    Example:
        >>> result = open_loop("http://127.0.0.1:8000/api/health", rate=50, duration=2)  # doctest: +SKIP
        >>> result.errors
        0
    """
    if rate <= 0 or duration <= 0:
        raise ValueError(f"rate and duration must be positive, got {rate} and {duration}")
    gc.collect()
    gc.freeze()  # the objects alive now are never scanned again: no long collector pauses mid-run
    try:
        return asyncio.run(_run(url, rate=rate, duration=duration, timeout=timeout, connections=connections))
    finally:
        gc.unfreeze()


def open_loop_in_subprocess(url: str, *, rate: float, duration: float, timeout: float = 5.0) -> LoadResult:
    """:func:`open_loop` in a fresh, lightweight Python process, as ``wrk`` would be: the caller's
    own heap (web3, torch) and threads then cannot stall the generator and inflate latencies."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.loadgen", url, "--rate", str(rate), "--duration", str(duration), "--timeout", str(timeout)],
        capture_output=True, text=True, check=True, timeout=duration + 10 * timeout + 60,
    )
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    return LoadResult(requests=doc["requests"], errors=doc["errors"], duration_s=doc["duration_s"], latencies_ms=tuple(doc["latencies_ms"]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Open-loop GET load; prints one JSON line with every latency.")
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    result = open_loop(args.url, rate=args.rate, duration=args.duration, timeout=args.timeout)
    summary = {"requests": result.requests, "errors": result.errors, "duration_s": result.duration_s, "latencies_ms": result.latencies_ms}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
