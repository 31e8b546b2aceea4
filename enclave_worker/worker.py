"""A trainer worker: the untrusted host that claims jobs and runs them through its trainer enclave.

Claims are leases (``docs/jobs.md``): while a job runs, a heartbeat renews the lease whenever a
third of it or less is left; when a run fails the worker gives the job back at once if the key
manager states that the claim's run produced nothing (no data key was released under it, or the
holding enclave signed that it abandoned the run), else it stops renewing so the lease lapses and
any worker can re-claim the job (which charges ε once more). A dead trainer enclave is
replaced through the ``relaunch`` callback, and :meth:`TrainerWorker.recover` gives back the claims
a previous enclave instance of the same operator left behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

from marketplace.blobstore import BlobAccess
from marketplace.chain import TxResult
from marketplace.contracts import JobRecord, JobStatus, MarketClient
from marketplace.errors import (
    BlobNotFound,
    CiphertextTampered,
    ContractReverted,
    InvalidDataset,
    InvalidModelSpec,
    JobNotReady,
    KeyReleaseRefused,
    SchemaMismatch,
)

from .host import EnclaveRequestFailed, FileSource
from .keymanager import JobKey
from .remote import KeyReleaser
from .sim_platform import LaunchedEnclave
from .status import JobStatusBoard
from .trusted.errors import MemoryBudgetExceeded, ProtocolError
from .trusted.models import ModelSpec
from .trusted.onchain import Role
from .trusted.receipt import Receipt

logger = logging.getLogger(__name__)

ProgressFn = Callable[[dict[str, Any]], None]
RelaunchFn = Callable[[], LaunchedEnclave]
"""Starts a new trainer enclave and registers it on-chain for the worker's operator."""

_HASH_READ = 1 << 20
"""Bytes per read when the host hashes a ciphertext file."""
CONFIRMATION_POLL = 1.0
"""Wall seconds between looks at the chain's head while a claim gathers confirmations."""
CONFIRMATION_TIMEOUT = 900.0
"""Longest wait for a claim's confirmations before the run is given up (the claim is then given back)."""
RENEW_FRACTION = 3
"""Renew a lease when ``claimLease / RENEW_FRACTION`` seconds of it or less are left."""
MAX_HEARTBEAT_INTERVAL = 5.0
"""Longest pause (wall seconds) between two looks at a running job's lease."""

_locks_guard = threading.Lock()
_operator_locks: dict[str, threading.RLock] = {}


def operator_lock(address: str) -> threading.RLock:
    """The lock every transaction sent from ``address`` by workers, heartbeats and the dispatcher is sent under.

    :meth:`~marketplace.chain.Chain.transact` reads the account's pending nonce and then sends;
    two threads doing that for one account at once could pick the same nonce.
    """
    with _locks_guard:
        return _operator_locks.setdefault(to_checksum_address(address), threading.RLock())


@dataclass(frozen=True)
class JobOutcome:
    """What running one job produced."""

    job_id: int
    receipt: Receipt
    signature: bytes
    metrics: bytes
    result_hash: str
    claim: TxResult
    submit: TxResult


@dataclass(frozen=True)
class Recovered:
    """What :meth:`TrainerWorker.recover` did with one job a previous enclave left Claimed."""

    job_id: int
    enclave: str
    released: bool
    """``True``: given back (Open, nothing charged); ``False``: keys were released, left to lapse."""
    reason: str


FAILURE_REASON_CHARS = 300
"""A failure's message on the timeline is cut to this many characters."""


def failure_reason(error: BaseException) -> str:
    """A failure as the timeline shows it: the error's type and the first line of its message,
    cut to :data:`FAILURE_REASON_CHARS` (enclave errors carry no data, see docs/enclave-protocol.md)."""
    text = str(error).strip()
    message = text.splitlines()[0] if text else ""
    text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    return text if len(text) <= FAILURE_REASON_CHARS else text[: FAILURE_REASON_CHARS - 1] + "…"


class LeaseHeartbeat:
    """Renews one job's lease from a background thread until stopped.

    It looks at the lease every ``interval`` wall seconds and renews it once ``claimLease /
    RENEW_FRACTION`` seconds of it or less are left (never past the completion deadline, where the
    lease is capped anyway). Failures are logged; the run goes on (a lapsed lease only means
    another worker may re-claim the job).
    """

    def __init__(self, worker: TrainerWorker, job_id: int, *, lease: int, interval: float) -> None:
        self.worker = worker
        self.job_id = job_id
        self.lease = lease
        self.interval = interval
        self.renewals = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lease-heartbeat-{job_id}", daemon=True)

    def start(self) -> LeaseHeartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop renewing; returns once no renewal is under way."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def _loop(self) -> None:
        market = self.worker.market
        while not self._stop.wait(self.interval):
            try:
                job = market.job(self.job_id)
                if job.status is not JobStatus.CLAIMED or job.enclave != self.worker.signer:
                    logger.warning("job %d is no longer held by %s; lease heartbeat stops", self.job_id, self.worker.signer)
                    return
                now = max(market.chain.now(), int(time.time()))
                if job.lease_expiry >= job.completion_deadline or job.lease_expiry - now > self.lease // RENEW_FRACTION:
                    continue
                with operator_lock(self.worker.operator.address):
                    if self._stop.is_set():
                        return
                    market.renew_lease(self.worker.operator, self.job_id)
                self.renewals += 1
                logger.info("renewed the lease on job %d (renewal %d)", self.job_id, self.renewals)
            except ContractReverted as e:
                if e.error == "JobMarketLeaseLapsed":
                    logger.error("the lease on job %d lapsed before it was renewed; heartbeat stops", self.job_id)
                    return
                logger.warning("renewing the lease on job %d failed: %s", self.job_id, e)
            except Exception:  # a chain hiccup: try again at the next beat
                logger.exception("lease heartbeat for job %d failed", self.job_id)


class TrainerWorker:
    """Claims jobs for one trainer enclave and settles them on-chain."""

    def __init__(
        self,
        enclave: LaunchedEnclave,
        *,
        operator: LocalAccount,
        market: MarketClient,
        key_manager: KeyReleaser,
        blobs: BlobAccess,
        status: JobStatusBoard | None = None,
        relaunch: RelaunchFn | None = None,
        heartbeat_interval: float | None = None,
        confirmations: int = 0,
    ) -> None:
        """
        Args:
            confirmations: blocks to wait for on top of a claim before asking for its data keys
                (the depth a key manager with as many confirmations asks before it releases them).
            relaunch: starts and registers a replacement trainer enclave when this one dies
                (``None``: a dead enclave stays dead and every later job fails).
            heartbeat_interval: wall seconds between looks at a running job's lease (default:
                a tenth of the market's claim lease, at most :data:`MAX_HEARTBEAT_INTERVAL`).
        """
        if enclave.process.role is not Role.TRAINER:
            raise ValueError("TrainerWorker needs a trainer enclave")
        self.enclave = enclave
        self.operator = operator
        self.market = market
        self.key_manager = key_manager
        self.blobs = blobs
        self.status = status
        self.relaunch = relaunch
        self.heartbeat_interval = heartbeat_interval
        if confirmations < 0:
            raise ValueError(f"confirmations must be at least 0, got {confirmations}")
        self.confirmations = confirmations
        self.relaunches = 0
        self._busy = threading.RLock()
        self._held: set[int] = set()  # jobs the current enclave instance claimed (it never runs them again)

    @property
    def signer(self) -> str:
        return str(to_checksum_address(self.enclave.process.signer))

    # --- running a job ---------------------------------------------------------------------

    def _await_confirmations(self, job_id: int, claim: TxResult) -> None:
        """Wait until ``confirmations`` blocks lie on the claim (while the lease heartbeat keeps it).

        Raises:
            KeyReleaseRefused: the blocks did not come in :data:`CONFIRMATION_TIMEOUT` seconds.
        """
        if not self.confirmations:
            return
        target = int(claim.receipt["blockNumber"]) + self.confirmations
        deadline = time.monotonic() + CONFIRMATION_TIMEOUT
        while (head := int(self.market.chain.w3.eth.block_number)) < target:
            if time.monotonic() > deadline:
                raise KeyReleaseRefused(
                    f"job {job_id}'s claim got {head - target + self.confirmations} of {self.confirmations} confirmations "
                    f"in {CONFIRMATION_TIMEOUT:.0f} s; its keys were not asked for"
                )
            time.sleep(CONFIRMATION_POLL)
        logger.info("job %d: the claim is %d blocks deep; asking for its keys", job_id, self.confirmations)

    def can_take(self, job_id: int) -> bool:
        """Whether the current enclave instance may still run ``job_id``.

        An enclave prepares a job once, and the key manager never releases under a claim it
        retired, so an enclave that held a job (and gave it back, or failed it) never gets to run
        it again: another worker, or this worker after :meth:`rotate_enclave`, must.
        """
        return job_id not in self._held

    def mark_held(self, job_id: int) -> None:
        """Record that the current enclave held ``job_id`` (e.g. a claim it made that was given back for it)."""
        self._held.add(job_id)

    def claimable(self, job: JobRecord, now: int | None = None) -> bool:
        """Whether the chain lets this worker claim ``job`` now: Open before its claim deadline,
        or Claimed under a lapsed lease before its completion deadline (a charged re-claim)."""
        now = self.market.chain.now() if now is None else now
        if job.status is JobStatus.OPEN:
            return now < job.claim_deadline
        return job.status is JobStatus.CLAIMED and job.lease_expiry <= now < job.completion_deadline

    def run_job(self, job_id: int, *, progress: ProgressFn | None = None) -> JobOutcome:
        """Claim ``job_id``, obtain its data keys, train in the enclave, store the sealed model, submit the receipt.

        A Claimed job whose lease lapsed is re-claimed (the chain charges the lapsed claim's ε).
        While the job runs its lease is renewed. If the run fails, the claim is given back when
        the key manager states no key was released under it, else left to lapse; a dead trainer
        enclave is relaunched (``relaunch``) before the error is raised.

        Raises:
            JobNotReady: the job is neither Open nor Claimed under a lapsed lease.
            InvalidModelSpec, SchemaMismatch, InvalidDataset, MemoryBudgetExceeded: the job cannot run
                (here: it cannot fit the trainer enclave's memory budget); nothing was claimed or released.
            KeyReleaseRefused, ContractReverted, EnclaveRequestFailed, ProtocolError: a step was refused or failed.
        """
        with self._busy:
            return self._run_job(job_id, progress)

    def _run_job(self, job_id: int, progress: ProgressFn | None) -> JobOutcome:
        progress = self._with_status(job_id, progress)
        job = self.market.job(job_id)
        if not self.claimable(job):
            detail = "its lease has not lapsed" if job.status is JobStatus.CLAIMED else "not OPEN"
            raise JobNotReady(f"job {job_id} is {job.status.name}, {detail}")
        if not self.can_take(job_id):
            raise JobNotReady(f"this worker's enclave {self.signer} held job {job_id} before and cannot run it again")
        raw_spec = self._checked_spec(job_id, job.model_spec_hash, job.epsilon)
        records = [self.market.dataset(i) for i in job.dataset_ids]
        if len({r.schema_hash for r in records}) != 1:
            raise SchemaMismatch(f"job {job_id} joins datasets with different schemas; refusing before any key is requested")
        schemas = [self._schema(job_id, dataset_id, r.schema_hash) for dataset_id, r in zip(job.dataset_ids, records, strict=True)]
        self._check_memory(job_id, raw_spec, records, schemas)
        with operator_lock(self.operator.address):
            claim = self.market.claim_job(self.operator, job_id, self.signer)
        self._held.add(job_id)
        if progress:
            progress({"stage": "claimed", "job_id": job_id})
        heartbeat = LeaseHeartbeat(self, job_id, lease=self.market.claim_lease(), interval=self._heartbeat_interval()).start()
        try:
            self._await_confirmations(job_id, claim)
            reply = self._train(job_id, job, records, schemas, raw_spec, progress)
            r = reply["receipt"]
            receipt = Receipt(
                job_id=r["job_id"],
                datasets_hash=r["datasets_hash"],
                model_hash=r["model_hash"],
                result_hash=r["result_hash"],
                metrics_hash=r["metrics_hash"],
                epsilon_spent=r["epsilon_spent"],
            )
            result_hash = self.blobs.put(reply["sealed_model"])
            self.blobs.put(reply["metrics"])
            with operator_lock(self.operator.address):
                submit = self.market.submit_result(self.operator, receipt, reply["signature"])
        except BaseException as e:
            heartbeat.stop()
            logger.error("job %d failed after its claim: %s", job_id, e)
            given_back = self.give_back(job_id)  # first: the statement needs the key manager, not the trainer
            self._report_failure(job_id, e, given_back, progress)
            self._relaunch_if_dead()
            raise
        finally:
            heartbeat.stop()
        if progress:
            progress({"stage": "settled", "job_id": job_id, "epsilon_spent": receipt.epsilon_spent})
        logger.info("job %d settled in tx %s", job_id, submit.tx_hash)
        return JobOutcome(job_id, receipt, reply["signature"], reply["metrics"], result_hash, claim, submit)

    def _train(
        self, job_id: int, job: JobRecord, records: list[Any], schemas: list[bytes], raw_spec: bytes, progress: ProgressFn | None
    ) -> dict[str, Any]:
        chain_id, market = self.market.chain.chain_id, self.market.address_bytes
        job_key = self.prepare_job(job_id)
        with ExitStack() as files:
            datasets = []
            for dataset_id, record, schema in zip(job.dataset_ids, records, schemas, strict=True):
                released = self.key_manager.release(job_id=job_id, dataset_id=dataset_id, trainer=self.signer, job_key=job_key)
                datasets.append(
                    {
                        "content_hash": record.content_hash,
                        "released_key": released,
                        "schema": schema,
                        # The file stays here; the enclave reads it on demand (docs/enclave-protocol.md).
                        "ciphertext": files.enter_context(self._ciphertext(record.content_hash, verify=True)),
                    }
                )
            if progress:
                progress({"stage": "keys released", "job_id": job_id, "datasets": len(datasets)})
            try:
                reply = self.enclave.process.request(
                    "run",
                    progress=progress,
                    chain_id=chain_id,
                    market=market,
                    job_id=job_id,
                    model_spec=raw_spec,
                    model_spec_hash=job.model_spec_hash,
                    epsilon=job.epsilon,
                    delta=job.delta,
                    consumer_key=job.consumer_key,
                    datasets=datasets,
                )
            except (EnclaveRequestFailed, ProtocolError):
                logger.error("enclave failed job %d", job_id)
                raise
        return reply

    def _ciphertext(self, content_hash: bytes, *, verify: bool) -> FileSource:
        """A dataset's ciphertext file in the blob store, opened for the enclave's reads.

        Args:
            verify: hash the file first (streaming, one read's memory), as the blob store checks
                what it reads; the enclave checks it again, this only fails early.

        Raises:
            BlobNotFound: no such blob.
            CiphertextTampered: ``verify`` and the stored bytes no longer match their hash.
        """
        digest = content_hash.hex()
        path = self.blobs.path(digest)
        try:
            source = FileSource(path)
        except FileNotFoundError as e:
            raise BlobNotFound(f"no blob {digest} in {self.blobs.root}") from e
        if verify:
            sha = hashlib.sha256()
            for offset in range(0, source.size, _HASH_READ):
                sha.update(source.read(offset, _HASH_READ))
            if sha.digest() != content_hash:
                source.close()
                raise CiphertextTampered(f"blob {digest} was altered in storage")
        return source

    def _schema(self, job_id: int, dataset_id: int, schema_hash: bytes) -> bytes:
        """A dataset's canonical schema JSON from the blob store (the provider stores it when listing).

        Raises:
            InvalidDataset: it is not in the blob store, or does not match its hash.
        """
        try:
            return self.blobs.get(schema_hash.hex())
        except (BlobNotFound, CiphertextTampered) as e:
            raise InvalidDataset(f"job {job_id}: the schema {schema_hash.hex()} of dataset {dataset_id} is not in the blob store") from e

    def _check_memory(self, job_id: int, raw_spec: bytes, records: list[Any], schemas: list[bytes]) -> None:
        """Ask the trainer enclave whether the job fits its memory budget, before the job is claimed
        or any key requested (the enclave checks again in ``run``, before it takes the job's key).

        Raises:
            MemoryBudgetExceeded: it does not fit (the message gives the need and the budget).
            BlobNotFound: a dataset's ciphertext is not in the blob store.
        """
        with ExitStack() as files:
            datasets = [
                {"schema": schema, "ciphertext": files.enter_context(self._ciphertext(record.content_hash, verify=False))}
                for record, schema in zip(records, schemas, strict=True)
            ]
            try:
                plan = self.enclave.process.request("plan", model_spec=raw_spec, datasets=datasets)
            except EnclaveRequestFailed as e:
                if e.error == "MemoryBudgetExceeded":
                    raise MemoryBudgetExceeded(f"job {job_id}: {e.message}; refusing before any key is requested") from e
                raise
            except (ProtocolError, OSError) as e:
                # A dead enclave: the claim path below meets it too, gives the claim back and
                # relaunches the enclave (and the enclave plans again in run, before its key is taken).
                logger.warning("job %d: the trainer enclave did not answer the memory plan: %s", job_id, e)
                return
        logger.info(
            "job %d: memory plan %s, ~%d MiB of %d MiB, %d scan(s) per epoch",
            job_id, plan["mode"], plan["needs"] >> 20, plan["budget"] >> 20, plan["scans_per_epoch"],
        )  # fmt: skip

    def _report_failure(self, job_id: int, error: BaseException, given_back: bool, progress: ProgressFn | None) -> None:
        """Put the failure and what became of the claim on the job's timeline (status board and
        ``progress``): given back (Open again, nothing charged) or left to lapse at the lease's
        expiry, after which any worker may re-claim the job, charging its ε once more."""
        if given_back:
            outcome = "given back: the job is Open again, nothing charged"
        else:
            try:
                lapse = self.market.job(job_id).lease_expiry
                outcome = f"not given back: the claim lapses at {lapse} (unix time); a re-claim charges ε once more"
            except Exception:  # noqa: BLE001 - the chain may be what failed
                outcome = "not given back: the claim lapses at its lease expiry; a re-claim charges ε once more"
        event = {"stage": "failed", "job_id": job_id, "error": failure_reason(error), "outcome": outcome, "given_back": given_back}
        if progress is None:
            return
        try:
            progress(event)
        except Exception:  # noqa: BLE001 - reporting must not hide the failure itself
            logger.exception("job %d: could not report its failure", job_id)

    # --- giving claims back ----------------------------------------------------------------

    def give_back(self, job_id: int) -> bool:
        """Give a job this worker's operator holds back to Open with nothing charged, if the key
        manager certifies that the claim's run produced nothing.

        Asks the key manager for its ``ClaimRelease`` statement: it signs if no data key was
        released under the claim, or, when keys were, on the holding enclave's own
        ``RunAbandoned`` — which this worker's enclave signs if it holds the job and produced no
        result from it (it then never runs the job). Then sends ``releaseClaim``. When neither is
        possible (the holder was a previous, dead enclave, or the key manager or chain cannot be
        reached) the claim is left to lapse: after ``claimLease`` any worker may re-claim the job,
        charging its ε again.

        Returns:
            Whether the job is Open again.
        """
        try:
            # One request to the key manager: with the abandonment if this enclave can sign one
            # (it is ignored when no key was released under the claim).
            statement = self.key_manager.claim_release_statement(job_id, abandoned=self._abandon(job_id) or b"")
            with operator_lock(self.operator.address):
                self.market.release_claim(self.operator, job_id, statement)
        except KeyReleaseRefused as e:
            logger.warning("job %d: keys were released under the claim (%s); leaving it to lapse", job_id, e)
            return False
        except Exception:  # noqa: BLE001 - any failure here leaves the job to lapse, which is safe
            logger.exception("job %d: could not give the claim back; leaving it to lapse", job_id)
            return False
        logger.info("job %d given back: Open again, nothing charged", job_id)
        return True

    def _abandon(self, job_id: int) -> bytes | None:
        """This worker's enclave's ``RunAbandoned`` for the job, if it holds the job and can sign
        one (alive, prepared the job, produced nothing from it); else ``None``."""
        job = self.market.job(job_id)
        if job.status is not JobStatus.CLAIMED or to_checksum_address(job.enclave) != self.signer:
            return None
        try:
            reply = self.enclave.process.request(
                "abandon", chain_id=self.market.chain.chain_id, market=self.market.address_bytes, job_id=job_id, job_charges=job.charges
            )
        except (EnclaveRequestFailed, ProtocolError, OSError) as e:
            logger.warning("job %d: the trainer enclave did not abandon it: %s", job_id, e)
            return None
        return bytes(reply["signature"])

    def recover(self, *, from_block: int = 0, keep: Iterable[str] = (), cursor_path: Path | None = None) -> list[Recovered]:
        """Give back the jobs earlier enclaves of this worker's operator left Claimed.

        After a restart the worker runs a new enclave instance; jobs the previous instance held
        are found from ``JobClaimed`` events of this operator since ``from_block``. Each one
        still Claimed by another enclave of this operator (not this worker's, nor any in
        ``keep``: enclaves of the operator that are still running) is released when the key
        manager states no key was released under the claim, else left to lapse.

        Args:
            cursor_path: a JSON file keeping the last block read and the operator's jobs that were
                still Claimed then: a later call reads only the ``JobClaimed`` logs after that
                block and looks again at those jobs, so its work follows the new claims and the
                live ones, not the market's history (ignored if it records another chain, market,
                operator or ``from_block``, or cannot be read).
        """
        keep_set = {to_checksum_address(a) for a in keep} | {self.signer}
        identity = {
            "chain_id": self.market.chain.chain_id, "market": self.market.address.lower(),
            "operator": self.operator.address.lower(), "from_block": from_block,
        }  # fmt: skip
        head = int(self.market.chain.w3.eth.block_number)
        start, watched = from_block, set[int]()
        saved = read_cursor(cursor_path, identity)
        if saved is not None and int(saved["scanned_to"]) <= head:
            start, watched = int(saved["scanned_to"]) + 1, {int(j) for j in saved["claimed"]}
        logs = (
            self.market.contract.events.JobClaimed().get_logs(
                from_block=start, to_block=head, argument_filters={"operator": self.operator.address}
            )
            if start <= head
            else []
        )
        done: list[Recovered] = []
        still_claimed: set[int] = set()
        for job_id in sorted(watched | {int(log["args"]["jobId"]) for log in logs}):
            job = self.market.job(job_id)
            if job.status is not JobStatus.CLAIMED or job.operator != self.operator.address:
                continue
            if to_checksum_address(job.enclave) in keep_set:
                still_claimed.add(job_id)
                continue
            released = self.give_back(job_id)
            if not released:
                still_claimed.add(job_id)
            reason = "no key was released under the claim" if released else "left to lapse: keys were released (or the release failed)"
            done.append(Recovered(job_id=job_id, enclave=job.enclave, released=released, reason=reason))
        if cursor_path is not None:
            write_cursor(cursor_path, {**identity, "scanned_to": head, "claimed": sorted(still_claimed)})
        if done:
            logger.info("recovered %d job(s) of earlier enclaves: %s", len(done), done)
        return done

    # --- the enclave -----------------------------------------------------------------------

    def alive(self) -> bool:
        """Whether the trainer enclave still answers."""
        try:
            self.enclave.process.request("hello")
        except (ProtocolError, OSError, ValueError):
            return False
        except EnclaveRequestFailed:
            return True
        return True

    def _relaunch_if_dead(self) -> None:
        """Replace a trainer enclave that no longer answers (see ``relaunch``)."""
        if self.alive():
            return
        logger.error("trainer enclave %s (pid %d) is gone", self.signer, self.enclave.process.pid)
        self._replace_enclave()

    def _replace_enclave(self) -> bool:
        old = self.enclave
        try:
            old.close()
        except Exception:  # noqa: BLE001 - the process may be gone already
            logger.debug("closing the old enclave failed", exc_info=True)
        if self.relaunch is None:
            logger.error("no relaunch callback: this worker cannot run jobs any more")
            return False
        try:
            self.enclave = self.relaunch()
        except Exception:
            logger.exception("relaunching the trainer enclave failed")
            return False
        self.relaunches += 1
        self._held.clear()
        logger.warning("relaunched the trainer enclave: new signer %s", self.signer)
        return True

    def rotate_enclave(self) -> bool:
        """Replace the trainer enclave by a fresh, registered instance (which may run jobs the old one held).

        Returns:
            Whether a new enclave runs now (``False`` without a ``relaunch`` callback).
        """
        with self._busy:
            if self.relaunch is None:
                return False
            return self._replace_enclave()

    def ensure_enclave(self) -> None:
        """Relaunch the trainer enclave if it died while idle."""
        with self._busy:
            self._relaunch_if_dead()

    def prepare_job(self, job_id: int) -> JobKey:
        """Have the enclave create its one-time key for ``job_id``.

        One claim, one key, one run: the key manager wraps data keys only to this key, and the
        enclave uses it for one run and forgets it; it never prepares a job twice (``docs/jobs.md``).

        Raises:
            EnclaveRequestFailed: ``RunRefused`` if this enclave prepared the job before.
        """
        reply = self.enclave.process.request(
            "prepare_job", chain_id=self.market.chain.chain_id, market=self.market.address_bytes, job_id=job_id
        )
        return JobKey(public_key=reply["job_key"], signature=reply["signature"])

    def _heartbeat_interval(self) -> float:
        if self.heartbeat_interval is not None:
            return self.heartbeat_interval
        return min(self.market.claim_lease() / 10, MAX_HEARTBEAT_INTERVAL)

    def _with_status(self, job_id: int, progress: ProgressFn | None) -> ProgressFn | None:
        """Record every progress event on the status board too."""
        if self.status is None:
            return progress
        board = self.status

        def report(event: dict[str, Any]) -> None:
            board.update(job_id, event)
            if progress is not None:
                progress(event)

        return report

    def _checked_spec(self, job_id: int, spec_hash: bytes, epsilon_units: int) -> bytes:
        """The job's model spec, validated before the job is claimed or any key is requested.

        Raises:
            InvalidModelSpec: missing from the blob store, not a valid spec, or its metrics ε
                leaves none of the job's ε for training.
        """
        try:
            raw = self.blobs.get(spec_hash.hex())
        except BlobNotFound as e:
            raise InvalidModelSpec(f"job {job_id}: model spec {spec_hash.hex()} is not in the blob store") from e
        except CiphertextTampered as e:
            raise InvalidModelSpec(f"job {job_id}: the stored model spec does not match the job's modelSpecHash") from e
        ModelSpec.from_bytes(raw).training_epsilon(epsilon_units)
        return raw


def read_cursor(
    path: Path | None, identity: dict[str, object], *, fields: Iterable[str] = ("scanned_to", "claimed")
) -> dict[str, Any] | None:
    """A JSON cursor file's contents if it records ``identity`` (chain, market, …) and holds
    ``fields`` (a block number, then lists of job ids), else ``None``: missing, unreadable or another's."""
    if path is None or not path.exists():
        return None
    try:
        saved: dict[str, Any] = json.loads(path.read_text())
        if {k: saved.get(k) for k in identity} != identity:
            logger.warning("cursor %s is of another chain, market or account; ignored", path)
            return None
        block, *lists = fields
        int(saved[block]), [[int(j) for j in saved[name]] for name in lists]
    except (OSError, ValueError, KeyError, TypeError) as e:
        logger.warning("unreadable cursor %s (%s); ignored", path, e)
        return None
    return saved


def write_cursor(path: Path, state: dict[str, Any]) -> None:
    """Replace ``path`` with ``state`` atomically (a crash leaves the old cursor or the new one)."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(state))
    os.replace(temporary, path)
