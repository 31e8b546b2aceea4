"""An open-loop HTTP load generator: requests leave on a fixed schedule, whatever the server does.

Each request is due at ``start + i / rate``; its latency is measured from that due time, not from
when a busy client finally sent it, so a slow server cannot hide its queueing (no "coordinated
omission"). Used by ``make bench-api``.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from dataclasses import dataclass

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


async def _run(url: str, *, rate: float, duration: float, timeout: float, connections: int) -> LoadResult:
    total = int(rate * duration)
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        start = time.perf_counter() + 0.05

        async def one(i: int) -> None:
            nonlocal errors
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                response = await client.get(url)
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append((time.perf_counter() - due) * 1000)
            else:
                errors += 1

        await asyncio.gather(*(one(i) for i in range(total)))
        elapsed = time.perf_counter() - start
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
    return asyncio.run(_run(url, rate=rate, duration=duration, timeout=timeout, connections=connections))
