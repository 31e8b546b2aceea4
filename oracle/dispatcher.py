"""The job dispatcher: hands claimable jobs to trainer workers and expires what nobody can finish.

Each poll reads the chain and, for every job created since ``from_block`` that is not finished:

* **Open** before its claim deadline → run it on a worker.
* **Claimed under a lapsed lease** before its completion deadline → first ask the key manager
  whether keys were released under the lapsed claim; if not, give the job back (``releaseClaim``,
  free) and run it; if they were, run it only if every dataset still has the job's ε left (the
  re-claim debits the lapsed claim's ε and reserves it again), else leave it to expire.
* **Expirable** (Open past its claim deadline; Claimed past its completion deadline or lapsed for
  a whole extra lease) → ``expireJob``, so the consumer is refunded without waiting for anyone.

The jobs it watches are found incrementally: each poll reads only the ``JobCreated`` logs of the
blocks since the last one, and a job leaves the watch list once it is finished, so a poll's work
follows the live jobs, not the market's history. With a ``cursor_path`` that watch list and the
last block read are kept on disk, so a restarted dispatcher does not read the whole history again.

What may run again is decided by chain state alone, plus a per-job in-flight set and a short
back-off after a failure (a job a worker just failed is not retried in a tight loop, and goes to
another worker when there is one). Workers (one job at a time each, any operators) run their
jobs of a poll in parallel.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from eth_account.signers.local import LocalAccount

from enclave_worker.trusted.errors import MemoryBudgetExceeded
from enclave_worker.worker import JobOutcome, ProgressFn, TrainerWorker, operator_lock, read_cursor, write_cursor
from marketplace.contracts import JobRecord, JobStatus, MarketClient
from marketplace.errors import ContractReverted, InvalidModelSpec, KeyReleaseRefused, SchemaMismatch

logger = logging.getLogger(__name__)

TERMINAL = (JobStatus.COMPLETED, JobStatus.EXPIRED, JobStatus.CANCELLED)
ORDER_WINDOW = 16
"""Job ids a dispatcher takes in an order of its own before it goes on to newer ones (:meth:`Dispatcher._order`)."""
UNRUNNABLE = (InvalidModelSpec, SchemaMismatch, MemoryBudgetExceeded)
"""What a worker refuses before it claims (a bad spec, mixed schemas, more memory than its enclave's
budget): the job waits ``max_backoff`` before the next try instead of the doubling back-off."""


@dataclass
class _Failure:
    count: int
    not_before: float
    worker: int


class Dispatcher:
    """Polls the market and runs claimable jobs on its workers; expires expirable jobs."""

    def __init__(
        self,
        market: MarketClient,
        workers: Sequence[TrainerWorker],
        *,
        from_block: int = 0,
        expirer: LocalAccount | None = None,
        retry_backoff: float = 1.0,
        max_backoff: float = 300.0,
        cursor_path: Path | None = None,
    ) -> None:
        """
        Args:
            from_block: jobs created before this block are ignored.
            cursor_path: a JSON file keeping the last block read and the unfinished jobs across
                restarts (written after every poll that changed them; ignored if it records
                another market or chain, or cannot be read).
            expirer: the account that sends ``expireJob`` and ``releaseClaim`` for lapsed jobs
                (default: the first worker's operator).
            retry_backoff: wall seconds before a failed job is tried again, doubled on every
                further failure up to ``max_backoff`` (the first retry waits ``retry_backoff``).
        """
        if not workers:
            raise ValueError("a dispatcher needs at least one worker")
        self.market = market
        self.workers = list(workers)
        self.from_block = from_block
        self.expirer = expirer or self.workers[0].operator
        self.retry_backoff = retry_backoff
        self.max_backoff = max_backoff
        self.failures: dict[int, BaseException] = {}
        """The last error of each job whose latest run failed."""
        self.completed = 0
        """Jobs this dispatcher's workers ran to completion."""
        self.last_poll: float | None = None
        """Wall time (``time.time()``) of the last poll that read the chain without an error (:meth:`run`)."""
        self._failed: dict[int, _Failure] = {}
        self._in_flight: set[int] = set()
        self._lock = threading.Lock()
        self._known: set[int] = set()
        self._scanned_to = from_block - 1
        self._salt = bytes.fromhex(self.workers[0].operator.address[2:])
        self._next = 0
        self.cursor_path = cursor_path
        self._load_cursor()

    # --- the persisted cursor ------------------------------------------------------------------

    def _cursor_identity(self) -> dict[str, object]:
        return {"chain_id": self.market.chain.chain_id, "market": self.market.address.lower(), "from_block": self.from_block}

    def _load_cursor(self) -> None:
        saved = read_cursor(self.cursor_path, self._cursor_identity(), fields=("scanned_to", "known"))
        if saved is None:
            return
        scanned_to, known = int(saved["scanned_to"]), {int(j) for j in saved["known"]}
        if scanned_to > int(self.market.chain.w3.eth.block_number):
            logger.warning("dispatcher cursor %s is ahead of the chain (reset?); reading from block %d", self.cursor_path, self.from_block)
            return
        self._scanned_to, self._known = scanned_to, known
        logger.info("dispatcher resumes after block %d with %d unfinished job(s)", scanned_to, len(known))

    def _save_cursor(self) -> None:
        if self.cursor_path is not None:
            write_cursor(self.cursor_path, {**self._cursor_identity(), "scanned_to": self._scanned_to, "known": sorted(self._known)})

    # --- one poll --------------------------------------------------------------------------

    def poll_once(self, *, progress: ProgressFn | None = None, strict: bool = False) -> list[JobOutcome]:
        """Expire what is expirable, then run every claimable job once; returns the outcomes.

        A failing job is logged (and kept in :attr:`failures`); with ``strict`` the first
        failure is raised after the others ran.
        """
        plan = self._plan()
        if not plan:
            return []
        outcomes: list[JobOutcome] = []
        errors: list[BaseException] = []
        queues = [(i, ids) for i, ids in plan.items() if ids]
        if len(queues) == 1:
            self._run_queue(*queues[0], progress=progress, outcomes=outcomes, errors=errors)
        else:
            with ThreadPoolExecutor(max_workers=len(queues), thread_name_prefix="sterling-worker") as pool:
                futures = [
                    pool.submit(self._run_queue, i, ids, progress=progress, outcomes=outcomes, errors=errors) for i, ids in queues
                ]
                for future in futures:
                    future.result()
        if strict and errors:
            raise errors[0]
        return outcomes

    def _run_queue(
        self,
        index: int,
        jobs: list[tuple[int, bool]],
        *,
        progress: ProgressFn | None,
        outcomes: list[JobOutcome],
        errors: list[BaseException],
    ) -> None:
        """Run ``jobs`` one after the other on worker ``index``, recording outcomes and failures."""
        worker = self.workers[index]
        try:
            worker.ensure_enclave()
        except Exception:  # the jobs below fail on their own and are recorded
            logger.exception("worker %s: checking its enclave failed", worker.signer)
        for job_id, rotate in jobs:
            try:
                if rotate and not worker.can_take(job_id):
                    logger.info("job %d: every worker's enclave held it before; worker %s starts a fresh enclave", job_id, worker.signer)
                    worker.rotate_enclave()
                logger.info("dispatching job %d to worker %s", job_id, worker.signer)
                outcome = worker.run_job(job_id, progress=progress)
            except UNRUNNABLE as e:  # refused before any claim: trying again soon would be refused the same way
                logger.warning("job %d cannot run on worker %s: %s", job_id, worker.signer, e)
                self._record_failure(job_id, index, e, delay=self.max_backoff)
                errors.append(e)
            except Exception as e:  # the job failed; the worker gave it back or left it to lapse
                logger.exception("job %d failed on worker %s", job_id, worker.signer)
                self._record_failure(job_id, index, e)
                errors.append(e)
            else:
                with self._lock:
                    self._failed.pop(job_id, None)
                    self.failures.pop(job_id, None)
                    self.completed += 1
                outcomes.append(outcome)
            finally:
                with self._lock:
                    self._in_flight.discard(job_id)

    def _plan(self, idle: set[int] | None = None) -> dict[int, list[tuple[int, bool]]]:
        """Expire expirable jobs, give back lapsed claims that can be, and assign claimable jobs to workers.

        Args:
            idle: the workers that may be given jobs, one each (``None``: every worker, any number).
        """
        chain = self.market.chain
        latest = chain.w3.eth.block_number
        before = (self._scanned_to, frozenset(self._known))
        if latest > self._scanned_to:
            logs = self.market.contract.events.JobCreated().get_logs(from_block=self._scanned_to + 1, to_block=latest)
            self._known.update(int(log["args"]["jobId"]) for log in logs)
            self._scanned_to = latest
        lease = self.market.claim_lease()
        self._catch_up_clock(lease)
        plan: dict[int, list[tuple[int, bool]]] = {}
        for job_id in sorted(self._known, key=self._order):
            with self._lock:
                if job_id in self._in_flight:
                    continue
            job = self.market.job(job_id)
            if job.status in TERMINAL:
                self._known.discard(job_id)
                self._failed.pop(job_id, None)
                continue
            now = chain.now()
            if self._expirable(job, now, lease):
                self._expire(job_id)
                continue
            if job.status is JobStatus.CLAIMED:
                if not (job.lease_expiry <= now < job.completion_deadline):
                    continue  # held under a live lease
                if not self._give_back_lapsed(job) and not self._worth_reclaiming(job):
                    logger.info("job %d: lapsed claim, but a re-claim would find no ε left; leaving it to expire", job_id)
                    continue
            elif job.status is JobStatus.OPEN and now >= job.claim_deadline:
                continue
            picked = self._pick_worker(job_id, idle)
            if picked is None:
                continue
            index, rotate = picked
            if idle is not None:
                idle.discard(index)
            with self._lock:
                self._in_flight.add(job_id)
            plan.setdefault(index, []).append((job_id, rotate))
        if (self._scanned_to, frozenset(self._known)) != before:
            self._save_cursor()
        return plan

    def _order(self, job_id: int) -> tuple[int, bytes]:
        """Oldest first by windows of :data:`ORDER_WINDOW` job ids, and within a window in an order of
        this dispatcher's own (its first operator's): dispatchers of separate worker processes, which
        race for the same jobs, then seldom pick the same one (in one order every pick of one of them
        would be a lost ``claimJob`` and a poll's wait), while no job waits behind newer windows."""
        return job_id // ORDER_WINDOW, hashlib.sha256(self._salt + job_id.to_bytes(32, "big")).digest()

    def _catch_up_clock(self, lease: int) -> None:
        """On an idle local chain (embedded, or anvil mining only on transactions) the latest block's
        time stands still; when a job's lease or deadline passed in wall time but not yet in chain
        time, mine one block so that the decisions below (made in chain time) see it."""
        chain = self.market.chain
        if chain.kind not in ("embedded", "anvil") or not self._known:
            return
        chain_now, wall = chain.now(), int(time.time())
        if wall <= chain_now:
            return
        for job_id in self._known:
            job = self.market.job(job_id)
            boundaries: tuple[int, ...]
            if job.status is JobStatus.OPEN:
                boundaries = (job.claim_deadline,)
            elif job.status is JobStatus.CLAIMED:
                boundaries = (job.lease_expiry, job.lease_expiry + lease, job.completion_deadline)
            else:
                continue
            if any(chain_now <= t < wall for t in boundaries):
                if chain.kind == "anvil":
                    chain.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]  # a block at wall-clock time
                else:
                    chain.advance_time(wall - chain_now)  # the embedded chain's next block keeps a stale time otherwise
                return

    @staticmethod
    def _expirable(job: JobRecord, now: int, lease: int) -> bool:
        """Whether ``expireJob`` succeeds in the next block (``now`` is the latest block's time)."""
        if job.status is JobStatus.OPEN:
            return now >= job.claim_deadline
        if job.status is JobStatus.CLAIMED:
            return now >= job.completion_deadline or now >= job.lease_expiry + lease
        return False

    def _expire(self, job_id: int) -> None:
        try:
            with operator_lock(self.expirer.address):
                self.market.expire_job(self.expirer, job_id)
        except ContractReverted as e:
            logger.warning("expiring job %d failed: %s", job_id, e)
        except Exception:
            logger.exception("expiring job %d failed", job_id)
        else:
            logger.info("expired job %d: its consumer is refunded", job_id)
            self._known.discard(job_id)

    def _give_back_lapsed(self, job: JobRecord) -> bool:
        """Release a lapsed claim under which no key was released (Open again, nothing charged)."""
        key_manager = self.workers[0].key_manager
        try:
            statement = key_manager.claim_release_statement(job.job_id)
        except KeyReleaseRefused:
            return False
        except Exception:
            logger.exception("job %d: asking the key manager about the lapsed claim failed", job.job_id)
            return False
        try:
            with operator_lock(self.expirer.address):
                self.market.release_claim(self.expirer, job.job_id, statement)
        except Exception:
            logger.exception("job %d: releasing the lapsed claim failed", job.job_id)
            return False
        logger.info("job %d: lapsed claim of %s given back (no key was released under it)", job.job_id, job.enclave)
        for worker in self.workers:
            if worker.signer == job.enclave:
                worker.mark_held(job.job_id)  # that claim is retired: its enclave gets no key for the job
        return True

    def _worth_reclaiming(self, job: JobRecord) -> bool:
        """A re-claim debits the lapsed claim's ε and reserves it again: every dataset needs ε left."""
        return all(self.market.remaining_epsilon(i) >= job.epsilon for i in job.dataset_ids)

    def _pick_worker(self, job_id: int, idle: set[int] | None = None) -> tuple[int, bool] | None:
        """The worker for ``job_id`` and whether it must first start a fresh enclave; ``None`` while backing off.

        Workers take turns; the one that failed the job last is avoided when there is another,
        and so is a worker whose current enclave held the job before (it cannot run it again).
        If every worker's enclave held it, the next one in turn starts a fresh enclave for it.
        """
        failure = self._failed.get(job_id)
        if failure is not None and time.monotonic() < failure.not_before:
            return None
        count = len(self.workers)
        order = [(self._next + k) % count for k in range(count)]
        if idle is not None:
            order = [i for i in order if i in idle]
            if not order:
                return None
        if failure is not None and len(order) > 1 and failure.worker in order:
            order.remove(failure.worker)
            order.append(failure.worker)
        index, rotate = next(((i, False) for i in order if self.workers[i].can_take(job_id)), (order[0], True))
        if rotate and self.workers[index].relaunch is None:
            return None
        self._next = index + 1
        return index, rotate

    def _record_failure(self, job_id: int, worker: int, error: BaseException, *, delay: float | None = None) -> None:
        with self._lock:
            previous = self._failed.get(job_id)
            count = previous.count + 1 if previous else 1
            delay = min(self.retry_backoff * 2 ** (count - 1), self.max_backoff) if delay is None else delay
            self._failed[job_id] = _Failure(count=count, not_before=time.monotonic() + delay, worker=worker)
            self.failures[job_id] = error

    @property
    def followed_to(self) -> int:
        """The last block whose ``JobCreated`` logs this dispatcher has read."""
        return self._scanned_to

    @property
    def in_flight(self) -> list[int]:
        """The jobs being run now."""
        with self._lock:
            return sorted(self._in_flight)

    # --- serving ---------------------------------------------------------------------------

    def run(self, stop: threading.Event, *, interval: float = 1.0) -> None:
        """Poll until ``stop`` is set; a failing job is logged and retried by the rules above.

        Unlike :meth:`poll_once`, a poll does not wait for the jobs it starts: each idle worker
        gets one job on a thread of its own, and the next poll, ``interval`` seconds later, goes
        on expiring, giving back and re-claiming while other workers train (a lapsed claim is
        re-claimed within one poll of its lapse, not after the longest running job).
        """
        running: dict[int, threading.Thread] = {}
        sink: list[JobOutcome] = []
        errors: list[BaseException] = []
        while not stop.is_set():
            try:
                idle = {i for i in range(len(self.workers)) if not (i in running and running[i].is_alive())}
                if idle:
                    for index, jobs in self._plan(idle).items():
                        thread = threading.Thread(
                            target=self._run_queue, args=(index, jobs), kwargs={"progress": None, "outcomes": sink, "errors": errors},
                            name=f"sterling-worker-{index}", daemon=True,
                        )  # fmt: skip
                        running[index] = thread
                        thread.start()
                sink.clear()
                errors.clear()
                self.last_poll = time.time()
            except Exception:  # keep serving other jobs; the failure is in the log
                logger.exception("dispatch failed")
            stop.wait(interval)
        for thread in running.values():
            thread.join(timeout=10)
