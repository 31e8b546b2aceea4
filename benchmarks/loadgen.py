"""An open-loop HTTP load generator: requests leave on a fixed schedule, whatever the server does.

Each request is due at ``start + i / rate``; its latency is measured from that due time, not from
when a busy client finally sent it, so a slow server cannot hide its queueing (no "coordinated
omission"). Used by ``make bench-api``.

Requests wait for one of the ``connections`` connections here (:class:`_Connections`, first come first
served, O(1) a request), never in httpx's connection pool: httpcore re-scans every queued request on each request that joins or leaves
its pool, so when a server stall queued a few hundred requests there, the generator spent all its CPU
in that scan, fell further behind, queued more, and ran for minutes (``make bench-api`` on a busy
machine: 60 s of load not done after 170 s). A request that waits longer than ``timeout`` for a
connection, or takes longer than ``timeout`` once it has one, is an error; so a run always ends
within about ``duration + 2 * timeout`` seconds, whatever the server does.
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
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import IO, Any

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


PROGRESS_SECONDS = 10.0
"""How often a run says how far it got (on stderr)."""


class LoadGeneratorFailed(RuntimeError):
    """The load generator's process did not finish in time, or failed: the message says how far it got."""


class _Connections:
    """``count`` connection slots, handed to waiting requests first come, first served, in O(1) per
    request whatever the queue (``asyncio.Semaphore.locked`` scans its waiters; httpcore's pool
    scans its queue on every change)."""

    def __init__(self, count: int) -> None:
        self._free = count
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self, *, deadline: float) -> bool:
        """Take a slot, waiting until ``deadline`` (``time.perf_counter``) at most; ``False`` if none came."""
        if self._free > 0:  # a slot is free only while no live request waits: release hands it over
            self._free -= 1
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout=max(0.0, deadline - time.perf_counter()))
        except TimeoutError:  # wait_for cancelled the waiter: release() skips it
            return False
        return True

    def release(self) -> None:
        """Hand the slot to the longest-waiting request, or free it."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1


async def _run(url: str, *, rate: float, duration: float, timeout: float, connections: int, progress: IO[str] | None) -> LoadResult:
    total = int(rate * duration)
    latencies: list[float] = []
    errors = 0
    started = waiting = 0
    slots = _Connections(connections)  # the requests' queue: see the module's docstring
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        start = time.perf_counter()

        async def one(_: int, due: float) -> None:
            nonlocal errors, started, waiting
            started += 1
            waiting += 1
            taken = await slots.acquire(deadline=due + timeout)  # httpx's pool timeout, counted from the due time
            waiting -= 1
            if not taken:
                errors += 1
                return
            ok = False
            try:
                async with asyncio.timeout(timeout):
                    response = await client.get(url)
                ok = response.status_code == 200
            except (httpx.HTTPError, TimeoutError):
                pass
            finally:
                slots.release()
            if ok:
                latencies.append((time.perf_counter() - due) * 1000)
            else:
                errors += 1

        async def report() -> None:
            while True:
                await asyncio.sleep(PROGRESS_SECONDS)
                done = len(latencies) + errors
                print(
                    f"loadgen: {time.perf_counter() - start:.0f} s: {started} of {total} requests started, {len(latencies)} answered, "
                    f"{errors} errors, {started - done - waiting} in flight, {waiting} waiting for a connection",
                    file=progress, flush=True,
                )  # fmt: skip

        reporter = asyncio.create_task(report()) if progress is not None else None
        try:
            await paced(total, rate, one)
        finally:
            if reporter is not None:
                reporter.cancel()
        elapsed = time.perf_counter() - start - 0.05
    return LoadResult(requests=total, errors=errors, duration_s=max(elapsed, duration), latencies_ms=tuple(latencies))


def open_loop(
    url: str, *, rate: float, duration: float, timeout: float = 5.0, connections: int = 64, progress: IO[str] | None = None
) -> LoadResult:
    """GET ``url`` at ``rate`` requests per second for ``duration`` seconds (open loop).

    A request fails if it raises, waits more than ``timeout`` seconds for one of the ``connections``,
    takes more than ``timeout`` seconds once it has one, or answers other than 200. Every
    :data:`PROGRESS_SECONDS` the run's progress is written to ``progress`` when given.

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
        return asyncio.run(_run(url, rate=rate, duration=duration, timeout=timeout, connections=connections, progress=progress))
    finally:
        gc.unfreeze()


def open_loop_in_subprocess(url: str, *, rate: float, duration: float, timeout: float = 5.0) -> LoadResult:
    """:func:`open_loop` in a fresh, lightweight Python process, as ``wrk`` would be: the caller's
    own heap (web3, torch) and threads then cannot stall the generator and inflate latencies.

    Its progress lines are passed on to this process's stderr as they come.

    Raises:
        LoadGeneratorFailed: the process failed, or had not finished ``duration + 2 * timeout + 60``
            seconds after it started (it is killed); the message gives its last progress line.
    """
    limit = duration + 2 * timeout + 60
    args = [sys.executable, "-m", "benchmarks.loadgen", url, "--rate", str(rate), "--duration", str(duration), "--timeout", str(timeout)]
    # The result (every latency, ~20 bytes a request) goes to a file, the progress lines to a pipe read
    # by a thread as they come: no pipe the generator writes to can fill up and block it.
    with tempfile.TemporaryFile("w+") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.PIPE, text=True)
        said: deque[str] = deque(maxlen=5)
        relay = threading.Thread(target=_relay, args=(process.stderr, said), daemon=True)
        relay.start()
        try:
            process.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            relay.join(5)
            last = said[-1] if said else "no progress line"
            raise LoadGeneratorFailed(
                f"the load generator ({rate:g} req/s for {duration:g} s against {url}) had not finished after {limit:g} s "
                f"and was killed; its last progress line: {last}"
            ) from None
        relay.join(5)
        if process.returncode != 0:
            raise LoadGeneratorFailed(f"the load generator exited with {process.returncode}: {' | '.join(said) or 'no output'}")
        out.seek(0)
        lines = out.read().strip().splitlines()
    if not lines:
        raise LoadGeneratorFailed("the load generator printed no result")
    doc = json.loads(lines[-1])
    return LoadResult(requests=doc["requests"], errors=doc["errors"], duration_s=doc["duration_s"], latencies_ms=tuple(doc["latencies_ms"]))


def _relay(stream: IO[str] | None, said: deque[str]) -> None:
    """Pass a child's stderr lines on to ours, keeping the last few."""
    if stream is None:
        return
    with stream:
        for line in stream:
            said.append(line.rstrip())
            print(line, end="", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Open-loop GET load; prints one JSON line with every latency.")
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    result = open_loop(args.url, rate=args.rate, duration=args.duration, timeout=args.timeout, progress=sys.stderr)
    summary = {"requests": result.requests, "errors": result.errors, "duration_s": result.duration_s, "latencies_ms": result.latencies_ms}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
