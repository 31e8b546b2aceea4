"""HealthProbe: one read at a time on its own thread, shared by concurrent requests, at most max_age old."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from marketplace.errors import ChainUnavailable
from sterling.gateway.health import STALE_LIMIT_SECONDS, HealthFigures, HealthProbe


class CountingRead:
    def __init__(self, delay: float = 0.0) -> None:
        self.calls = 0
        self.delay = delay
        self.threads: set[str] = set()
        self.fail = False

    def __call__(self) -> HealthFigures:
        self.calls += 1
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        if self.fail:
            raise ChainUnavailable("the chain node does not answer")
        return HealthFigures(chain_id=1337, head_block=self.calls, indexed_block=self.calls, market_paused=False)


def test_concurrent_requests_share_one_read_on_the_probe_thread() -> None:
    read = CountingRead(delay=0.05)
    probe = HealthProbe(read, max_age=0.0)

    async def main() -> list[tuple[HealthFigures, float]]:
        return await asyncio.gather(*(probe.figures() for _ in range(50)))

    results = asyncio.run(main())
    assert read.calls == 1 and {f.head_block for f, _ in results} == {1}
    assert all(name.startswith("sterling-health") for name in read.threads)
    probe.close()


def test_figures_older_than_max_age_are_read_again() -> None:
    now = [100.0]
    read = CountingRead()
    probe = HealthProbe(read, max_age=0.5, clock=lambda: now[0])

    async def main() -> list[int]:
        heads = [(await probe.figures())[0].head_block]
        now[0] += 0.4
        heads.append((await probe.figures())[0].head_block)  # within max_age: the same read
        now[0] += 0.2
        heads.append((await probe.figures())[0].head_block)  # 0.6 s old: read again
        return heads

    assert asyncio.run(main()) == [1, 1, 2]
    probe.close()


def test_a_slow_read_does_not_hold_requests_that_have_recent_figures() -> None:
    read = CountingRead()
    probe = HealthProbe(read, max_age=0.01)

    async def main() -> tuple[float, float, int]:
        await probe.figures()
        read.delay = 0.5
        await asyncio.sleep(0.02)
        slow = asyncio.create_task(probe.figures())  # starts a 0.5 s read
        await asyncio.sleep(0.01)
        started = time.perf_counter()
        figures, age = await probe.figures()  # answered from the last read, with its age
        waited = time.perf_counter() - started
        await slow
        return waited, age, figures.head_block

    waited, age, head = asyncio.run(main())
    assert waited < 0.1 and head == 1 and 0.02 <= age < STALE_LIMIT_SECONDS
    probe.close()


def test_a_failed_read_is_raised_and_remembered_for_max_age() -> None:
    now = [0.0]
    read = CountingRead()
    read.fail = True
    probe = HealthProbe(read, max_age=1.0, clock=lambda: now[0])

    async def main() -> None:
        for _ in range(3):
            with pytest.raises(ChainUnavailable):
                await probe.figures()
        assert read.calls == 1
        read.fail = False
        now[0] += 1.5
        figures, _ = await probe.figures()
        assert figures.head_block == 2

    asyncio.run(main())
    probe.close()
