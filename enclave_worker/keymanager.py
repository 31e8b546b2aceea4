"""Host side of the key-manager enclave: keeps providers' wrapped data keys and serves releases.

The trusted key manager holds the X25519 key that providers wrap their data keys to. On a
release request the host reads the job, the dataset and the requesting trainer from the chain
and hands them, with the wrapped key, to the trusted part, which re-wraps the data key to the
trainer's **per-job key** only if the job is Claimed by that enclave, includes the dataset, is not
past its completion deadline nor its lease, the per-job key carries that enclave's signature for
this job, the key was not released for this job to this enclave before (one claim, one key, one
run: ``docs/jobs.md``), the claim was not given back, and the key's prior releases for the job
are at most the job's on-chain ``charges`` (the counter rule: no more runs hold a dataset's key
than the chain debits its ε for).

:meth:`KeyManagerService.claim_release_statement` has the trusted part sign the EIP-712
``ClaimRelease(jobId, enclave, charges)`` that ``JobMarket.releaseClaim`` takes to give a claim
back without an ε charge; it signs only if no key of the job went to the holder under this claim,
and retires the claim: no key is released under it afterwards.

Every decision is appended to a hash-chained audit log. The host replays it into an in-memory
index when it starts (verifying the chain) and keeps the index current on every append, and
applies the same rules from it, so a restarted trusted part (fresh memory) does not release
twice to a claim, to a retired claim, or past the counter rule, and does not sign a statement
for a claim that had a key.

Known limit (walking skeleton): the trusted part takes the host's word for chain state; verifying
it inside the enclave (state proofs against a finalised header) is future work.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from eth_utils import to_canonical_address, to_checksum_address

from marketplace._files import write_atomic
from marketplace.contracts import JobStatus, MarketClient, RegistryClient
from marketplace.errors import KeyReleaseRefused, KeyUnwrapFailed

from .audit import CLAIM_RELEASE, RELEASE, AuditEntry, AuditLog
from .host import EnclaveRequestFailed
from .sim_platform import LaunchedEnclave
from .trusted.onchain import Role
from .trusted.receipt import ClaimRelease, claim_release_signer, counter_message, keys_released_message, retired_claim_message

logger = logging.getLogger(__name__)

MAX_WRAPPED_KEY_BYTES = 512


@dataclass(frozen=True)
class JobKey:
    """A trainer enclave's one-time X25519 key for one job, with the enclave's signature over it."""

    public_key: bytes
    signature: bytes


@dataclass
class _DecisionIndex:
    """What the audit log says was released and retired, for the rules the host applies itself."""

    released_to: set[tuple[int, str, str]] = field(default_factory=set)  # (job, content hash, trainer)
    release_counts: Counter[tuple[int, str]] = field(default_factory=Counter)  # (job, content hash) -> releases
    claims_with_keys: dict[tuple[int, str], set[int | None]] = field(default_factory=dict)  # (job, trainer) -> charges
    retired: set[tuple[int, str, int | None]] = field(default_factory=set)  # (job, trainer, charges)

    def add(self, e: AuditEntry) -> None:
        trainer = str(to_checksum_address(e.trainer))
        if e.kind == RELEASE and e.released:
            self.released_to.add((e.job_id, e.content_hash, trainer))
            self.release_counts[(e.job_id, e.content_hash)] += 1
            self.claims_with_keys.setdefault((e.job_id, trainer), set()).add(e.charges)
        elif e.kind == CLAIM_RELEASE and e.retired:
            self.retired.add((e.job_id, trainer, e.charges))

    def keys_released_under(self, job_id: int, trainer: str, charges: int) -> bool:
        """Whether a key of the job went to ``trainer`` under this claim (a release logged without
        its charges, from before leases, counts for every claim)."""
        logged = self.claims_with_keys.get((job_id, trainer), set())
        return charges in logged or None in logged


class KeyManagerService:
    """The key manager's untrusted host: storage of wrapped keys, chain reads, audit log."""

    def __init__(self, enclave: LaunchedEnclave, *, market: MarketClient, registry: RegistryClient, state_dir: Path) -> None:
        if enclave.process.role is not Role.KEY_MANAGER:
            raise ValueError("KeyManagerService needs a key-manager enclave")
        self.enclave = enclave
        self.market = market
        self.registry = registry
        self.state_dir = state_dir
        self._deposits = state_dir / "deposits"
        self._deposits.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()  # one decision at a time: the audit log is a hash chain
        self.audit = AuditLog(state_dir / "audit.jsonl")  # verified here: a broken chain stops the start
        self._index = _DecisionIndex()
        self._index_generation = -1
        self._sync_index()

    def _sync_index(self) -> _DecisionIndex:
        """The index of the audit log, rebuilt only if the log was (re-)loaded from disk since."""
        self.audit.refresh()
        if self._index_generation != self.audit.generation:
            self._index = _DecisionIndex()
            for entry in self.audit.loaded():
                self._index.add(entry)
            self._index_generation = self.audit.generation
        return self._index

    @property
    def signer(self) -> str:
        return str(to_checksum_address(self.enclave.process.signer))

    def deposit(self, content_hash: bytes, wrapped_key: bytes) -> None:
        """Accept a provider's data key wrapped to this key manager for the dataset ``content_hash``.

        The trusted part opens it and returns it sealed to its own measurement; only that sealed
        blob is stored, so it survives restarts of the same code and nothing else can open it.

        Raises:
            KeyUnwrapFailed: the wrapped key does not open under this key manager and binding.
        """
        if len(content_hash) != 32 or len(wrapped_key) > MAX_WRAPPED_KEY_BYTES:
            raise KeyUnwrapFailed("deposit needs a 32-byte content hash and a wrapped key of at most 512 bytes")
        try:
            reply = self.enclave.process.request("deposit", content_hash=content_hash, wrapped_key=wrapped_key)
        except EnclaveRequestFailed as e:
            raise KeyUnwrapFailed(f"deposit for {content_hash.hex()} refused: {e.message}") from e
        write_atomic(self._deposits / f"{content_hash.hex()}.sealed", reply["sealed_key"])
        logger.info("deposited wrapped key for dataset %s", content_hash.hex())

    def release(self, *, job_id: int, dataset_id: int, trainer: str, job_key: JobKey) -> bytes:
        """Release a dataset's key, re-wrapped to ``trainer``'s per-job key, for one job, once.

        Args:
            job_key: the key the trainer enclave created and certified for this job
                (:meth:`~enclave_worker.worker.TrainerWorker.prepare_job`).

        Raises:
            KeyReleaseRefused: the chain does not show ``trainer`` holding this job over this
                dataset under an unexpired lease, the per-job key is not certified by it, the key
                was released to it already, its claim was given back, or the key's releases for
                the job already number more than the job's charges (the counter rule).
        """
        with self._lock:
            dataset = self.market.dataset(dataset_id)
            job = self.market.job(job_id)
            sealed_path = self._deposits / f"{dataset.content_hash.hex()}.sealed"
            charges = job.charges
            try:
                if not sealed_path.exists():
                    raise KeyReleaseRefused(f"no wrapped key was deposited for dataset {dataset_id}")
                content_hashes = [dataset.content_hash if i == dataset_id else self.market.dataset(i).content_hash for i in job.dataset_ids]
                now = self.market.chain.now()
                holder = str(to_checksum_address(trainer))
                # The log's rules, for a request that passes the trusted part's chain-state checks (for
                # any other it refuses with that check's reason).
                if (
                    job.status is JobStatus.CLAIMED
                    and str(to_checksum_address(job.enclave)) == holder
                    and dataset.content_hash in content_hashes
                    and now <= job.completion_deadline
                    and now <= job.lease_expiry
                ):
                    index = self._sync_index()
                    if (job_id, holder, charges) in index.retired:
                        raise KeyReleaseRefused(retired_claim_message(job_id, charges))
                    if (job_id, dataset.content_hash.hex(), holder) in index.released_to:
                        raise KeyReleaseRefused(
                            f"the key of dataset {dataset_id} was already released for job {job_id} to this enclave: one claim, one key"
                        )
                    prior = index.release_counts[(job_id, dataset.content_hash.hex())]
                    if prior > charges:
                        raise KeyReleaseRefused(counter_message(f"dataset {dataset_id}", job_id, prior, charges))
                reply = self.enclave.process.request(
                    "release",
                    chain_id=self.market.chain.chain_id,
                    market=self.market.address_bytes,
                    job_id=job_id,
                    job_status=int(job.status),
                    job_enclave=to_canonical_address(job.enclave),
                    job_content_hashes=content_hashes,
                    job_completion_deadline=job.completion_deadline,
                    job_lease_expiry=job.lease_expiry,
                    job_charges=charges,
                    now=now,
                    content_hash=dataset.content_hash,
                    sealed_key=sealed_path.read_bytes(),
                    trainer_signer=to_canonical_address(trainer),
                    trainer_active=self.registry.is_active(trainer, Role.TRAINER),
                    job_key=job_key.public_key,
                    job_key_signature=job_key.signature,
                )
            except EnclaveRequestFailed as e:
                self._log(job_id, dataset_id, dataset.content_hash, trainer, charges, released=False, reason=e.message)
                raise KeyReleaseRefused(e.message) from e
            except KeyReleaseRefused as e:
                self._log(job_id, dataset_id, dataset.content_hash, trainer, charges, released=False, reason=str(e))
                raise
            self._log(job_id, dataset_id, dataset.content_hash, trainer, charges, released=True, reason="claimed by this trainer")
            return bytes(reply["released_key"])

    def claim_release_statement(self, job_id: int) -> bytes:
        """The key manager's EIP-712 ``ClaimRelease(jobId, enclave, charges)`` for the job's current
        claim, for ``JobMarket.releaseClaim`` (``MarketClient.release_claim``) to give it back with no ε charged.

        Signed only if no data key of the job was released to the holding enclave under the job's
        current ``charges``; the claim is then retired for good (logged once per dataset of the
        job): no key is ever released under it.

        Returns:
            The 65-byte signature by this key manager's enclave signer.

        Raises:
            KeyReleaseRefused: the job is not Claimed, or a key of it was released under this
                claim (then the job can only be re-claimed, with an ε charge, after its lease lapses).
        """
        with self._lock:
            job = self.market.job(job_id)
            datasets = [(int(i), self.market.dataset(i).content_hash) for i in job.dataset_ids]
            holder = str(to_checksum_address(job.enclave))
            try:
                if job.status is not JobStatus.CLAIMED:
                    raise KeyReleaseRefused(f"job {job_id} is not in the Claimed state")
                if self._sync_index().keys_released_under(job_id, holder, job.charges):
                    raise KeyReleaseRefused(keys_released_message(job_id, to_canonical_address(holder), job.charges))
                reply = self.enclave.process.request(
                    "release_claim",
                    chain_id=self.market.chain.chain_id,
                    market=self.market.address_bytes,
                    job_id=job_id,
                    job_status=int(job.status),
                    job_enclave=to_canonical_address(holder),
                    job_charges=job.charges,
                )
            except EnclaveRequestFailed as e:
                self._log_statement(job_id, datasets, holder, job.charges, retired=False, reason=e.message)
                raise KeyReleaseRefused(e.message) from e
            except KeyReleaseRefused as e:
                self._log_statement(job_id, datasets, holder, job.charges, retired=False, reason=str(e))
                raise
            signature = bytes(reply["signature"])
            statement = ClaimRelease(job_id=job_id, enclave=to_canonical_address(holder), charges=job.charges)
            try:
                signer = claim_release_signer(statement, signature, chain_id=self.market.chain.chain_id, market=self.market.address_bytes)
            except Exception:  # a malformed signature recovers to nobody
                signer = b""
            # Logged before anything else can fail: the trusted part has retired the claim already.
            self._log_statement(
                job_id, datasets, holder, job.charges, retired=True, reason="ClaimRelease signed: no key under this claim, ever"
            )
            if signer != to_canonical_address(self.enclave.process.signer):
                raise KeyReleaseRefused(f"the key manager's ClaimRelease for job {job_id} does not recover to its signer")
            return signature

    def audit_log(self, *, content_hash: bytes | None = None) -> list[AuditEntry]:
        """Key-release and claim-release decisions (hash chain verified), optionally only those for one dataset."""
        return self.audit.entries(content_hash=content_hash)

    def _append(self, **entry: object) -> None:
        generation = self.audit.generation
        appended = self.audit.append(**entry)  # type: ignore[arg-type]
        if generation == self._index_generation == self.audit.generation:
            self._index.add(appended)
        else:
            self._sync_index()  # the file changed under us and was re-loaded (it now holds this entry)

    def _log(self, job_id: int, dataset_id: int, content_hash: bytes, trainer: str, charges: int, *, released: bool, reason: str) -> None:
        self._append(
            job_id=job_id, dataset_id=dataset_id, content_hash=content_hash, trainer=trainer, released=released,
            reason=reason, kind=RELEASE, charges=charges,
        )  # fmt: skip
        logger.info("key release job %d dataset %d to %s: %s (%s)", job_id, dataset_id, trainer, released, reason)

    def _log_statement(
        self, job_id: int, datasets: list[tuple[int, bytes]], holder: str, charges: int, *, retired: bool, reason: str
    ) -> None:
        for dataset_id, content_hash in datasets:
            self._append(
                job_id=job_id, dataset_id=dataset_id, content_hash=content_hash, trainer=holder, released=False,
                reason=reason, kind=CLAIM_RELEASE, charges=charges, retired=retired,
            )  # fmt: skip
        logger.info("claim release job %d of %s (charges %d): %s (%s)", job_id, holder, charges, retired, reason)
