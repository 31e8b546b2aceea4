"""The job dispatcher: hands open jobs to trainer workers."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from enclave_worker.worker import JobOutcome, ProgressFn, TrainerWorker
from marketplace.contracts import MarketClient

logger = logging.getLogger(__name__)


class Dispatcher:
    """Polls the market for Open jobs and runs each once on the next worker in turn."""

    def __init__(self, market: MarketClient, workers: Sequence[TrainerWorker], *, from_block: int = 0) -> None:
        if not workers:
            raise ValueError("a dispatcher needs at least one worker")
        self.market = market
        self.workers = list(workers)
        self.from_block = from_block
        self._dispatched: set[int] = set()
        self._next = 0

    def poll_once(self, *, progress: ProgressFn | None = None) -> list[JobOutcome]:
        """Run every Open job not yet dispatched; returns their outcomes."""
        outcomes = []
        for job_id in self.market.open_jobs(self.from_block):
            if job_id in self._dispatched:
                continue
            self._dispatched.add(job_id)
            worker = self.workers[self._next % len(self.workers)]
            self._next += 1
            logger.info("dispatching job %d to worker %s", job_id, worker.signer)
            outcomes.append(worker.run_job(job_id, progress=progress))
        return outcomes

    def run(self, stop: threading.Event, *, interval: float = 1.0) -> None:
        """Poll until ``stop`` is set; a failing job is logged and not retried."""
        while not stop.is_set():
            try:
                self.poll_once()
            except Exception:  # keep serving other jobs; the failure is in the log
                logger.exception("dispatch failed")
            stop.wait(interval)
