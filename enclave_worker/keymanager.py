"""Host side of the key-manager enclave: keeps providers' wrapped data keys and serves releases.

A deposit carries the provider's address and its EIP-712 ``Deposit(contentHash, wrappedKeyHash,
keyManager)`` signature under the market's domain (:mod:`.trusted.receipt`); the trusted part
checks it and seals the data key together with the provider's address and the market. The host
keeps one sealed key per (content hash, provider), at ``deposits/<content hash>/<provider>.sealed``,
never overwritten, so nobody's deposit displaces or blocks another's; a release uses only the
deposit of the listing's on-chain provider, and the trusted part checks the sealed provider again.
Deposits stored by earlier versions as ``deposits/<content hash>.sealed`` carry no provider and
are never used: their providers deposit again.

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
import os
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from eth_utils import to_canonical_address, to_checksum_address

from marketplace.contracts import JobRecord, JobStatus, MarketClient, RegistryClient
from marketplace.errors import ContractReverted, KeyReleaseRefused, KeyUnwrapFailed

from .audit import CLAIM_RELEASE, DEPOSIT, DEPOSIT_KINDS, DEPOSIT_REFUSED, RELEASE, RELEASE_KINDS, AuditEntry, AuditLog
from .host import EnclaveRequestFailed
from .sim_platform import LaunchedEnclave
from .trusted.onchain import Role
from .trusted.receipt import (
    ClaimRelease,
    Deposit,
    DepositExists,
    DepositRefused,
    DepositSignatureInvalid,
    RunAbandoned,
    check_deposit,
    claim_release_signer,
    counter_message,
    keys_released_message,
    retired_claim_message,
)

logger = logging.getLogger(__name__)

MAX_WRAPPED_KEY_BYTES = 512
SIGNATURE_BYTES = 65


def _write_new(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` whole (fsynced) only if ``target`` does not exist yet.

    Raises:
        FileExistsError: ``target`` exists; it is left as it was.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.link(tmp, target)  # atomic, and never replaces an existing file
    finally:
        Path(tmp).unlink(missing_ok=True)


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
        if e.kind == RELEASE and e.released:
            trainer = str(to_checksum_address(e.trainer))
            self.released_to.add((e.job_id, e.content_hash, trainer))
            self.release_counts[(e.job_id, e.content_hash)] += 1
            self.claims_with_keys.setdefault((e.job_id, trainer), set()).add(e.charges)
        elif e.kind == CLAIM_RELEASE and e.retired:
            trainer = str(to_checksum_address(e.trainer))
            self.retired.add((e.job_id, trainer, e.charges))
            if e.abandoned and (e.job_id, e.content_hash, trainer) in self.released_to:
                # The holder's run produced nothing: its release no longer counts against the charges.
                self.release_counts[(e.job_id, e.content_hash)] -= 1
                self.claims_with_keys.get((e.job_id, trainer), set()).discard(e.charges)

    def keys_released_under(self, job_id: int, trainer: str, charges: int) -> bool:
        """Whether a key of the job went to ``trainer`` under this claim (a release logged without
        its charges, from before leases, counts for every claim)."""
        logged = self.claims_with_keys.get((job_id, trainer), set())
        return charges in logged or None in logged



def unconfirmed_message(what: str, confirmations: int) -> str:
    """Why a key is not released yet: ``what`` is not ``confirmations`` blocks deep."""
    return (
        f"{what} is not yet {confirmations} blocks deep: the key is released once no reorganisation of that depth "
        "can take it back; ask again in a few blocks"
    )

class KeyManagerService:
    """The key manager's untrusted host: storage of wrapped keys, chain reads, audit log."""

    def __init__(
        self, enclave: LaunchedEnclave, *, market: MarketClient, registry: RegistryClient, state_dir: Path, confirmations: int = 0
    ) -> None:
        """
        Args:
            confirmations: blocks a claim (or, for a competition, a purchase) must have on top of it
                before a key is released for it, so that no reorganisation of that depth can take the
                claim or the payment back after the key went out (0: local chains).
        """
        if enclave.process.role is not Role.KEY_MANAGER:
            raise ValueError("KeyManagerService needs a key-manager enclave")
        if confirmations < 0:
            raise ValueError(f"confirmations must be at least 0, got {confirmations}")
        self.confirmations = confirmations
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

    @property
    def lock(self) -> threading.RLock:
        """Held for every decision (the audit log is a hash chain); :class:`~.model_keys.ModelKeyService` shares it."""
        return self._lock

    def append_audit(self, **entry: object) -> None:
        """Append a decision to the audit log, keeping the release index current (hold :attr:`lock`)."""
        self._append(**entry)

    def deposit_path(self, content_hash: bytes, provider: str) -> Path:
        """Where the sealed key ``provider`` deposited for ``content_hash`` is kept."""
        return self._deposits / content_hash.hex() / f"{to_checksum_address(provider)}.sealed"

    def deposit(self, content_hash: bytes, wrapped_key: bytes, *, provider: str, signature: bytes) -> None:
        """Accept ``provider``'s data key wrapped to this key manager for the ciphertext ``content_hash``.

        The trusted part checks ``signature``, the provider's EIP-712 ``Deposit`` under this market's
        domain and chain (:func:`~enclave_worker.trusted.receipt.sign_deposit`), opens the key and
        returns it sealed to its own measurement together with the provider's address; only that
        sealed blob is stored, so it survives restarts of the same code and nothing else can open
        it. Every deposit, accepted or refused, is appended to the audit log.

        Args:
            provider: the depositing provider's address; only its deposit is ever released for a
                dataset it lists (:meth:`release`).
            signature: 65 bytes, by ``provider``.

        Raises:
            DepositSignatureInvalid: ``signature`` is not ``provider``'s over this deposit, chain id,
                market and key manager.
            DepositExists: ``provider`` already deposited a key for ``content_hash`` (it is kept).
            KeyUnwrapFailed: malformed sizes, or the wrapped key does not open under this key
                manager and binding.
        """
        with self._lock:
            try:
                try:
                    provider = str(to_checksum_address(provider))
                except ValueError as e:
                    raise DepositSignatureInvalid(f"the deposit's provider {provider!r} is not an address") from e
                if len(content_hash) != 32 or len(wrapped_key) > MAX_WRAPPED_KEY_BYTES:
                    raise KeyUnwrapFailed("deposit needs a 32-byte content hash and a wrapped key of at most 512 bytes")
                if len(signature) != SIGNATURE_BYTES:
                    raise DepositSignatureInvalid(f"the deposit signature must be {SIGNATURE_BYTES} bytes, got {len(signature)}")
                # Checked here first so a forged deposit is refused as such, not as a duplicate; the
                # trusted part checks it again before it seals anything.
                statement = Deposit(content_hash=content_hash, wrapped_key=wrapped_key, key_manager=to_canonical_address(self.signer))
                check_deposit(
                    statement, signature, provider=to_canonical_address(provider), chain_id=self.market.chain.chain_id,
                    market=self.market.address_bytes,
                )  # fmt: skip
                target = self.deposit_path(content_hash, provider)
                if target.exists():
                    raise DepositExists(self._exists_message(content_hash, provider))
                try:
                    reply = self.enclave.process.request(
                        "deposit",
                        chain_id=self.market.chain.chain_id,
                        market=self.market.address_bytes,
                        content_hash=content_hash,
                        wrapped_key=wrapped_key,
                        provider=to_canonical_address(provider),
                        signature=signature,
                    )
                except EnclaveRequestFailed as e:
                    if e.error == DepositSignatureInvalid.__name__:
                        raise DepositSignatureInvalid(e.message) from e
                    raise KeyUnwrapFailed(f"deposit for {content_hash.hex()} refused: {e.message}") from e
                try:
                    _write_new(target, reply["sealed_key"])
                except FileExistsError as e:
                    raise DepositExists(self._exists_message(content_hash, provider)) from e
            except (DepositRefused, KeyUnwrapFailed) as e:
                self._append(
                    job_id=0, dataset_id=0, content_hash=content_hash, trainer="", released=False, reason=str(e),
                    kind=DEPOSIT_REFUSED, provider=provider,
                )  # fmt: skip
                logger.info("deposit for %s by %s refused: %s", content_hash.hex(), provider, type(e).__name__)
                raise
            self._append(
                job_id=0, dataset_id=0, content_hash=content_hash, trainer="", released=False,
                reason="signed by the provider; sealed with its address", kind=DEPOSIT, provider=provider,
            )  # fmt: skip
            logger.info("deposited wrapped key for dataset %s by %s", content_hash.hex(), provider)

    @staticmethod
    def _exists_message(content_hash: bytes, provider: str) -> str:
        return f"provider {provider} already deposited a key for {content_hash.hex()}: a deposit is never replaced"

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
            sealed_path = self.deposit_path(dataset.content_hash, dataset.provider)
            charges = job.charges
            try:
                if not sealed_path.exists():
                    raise KeyReleaseRefused(f"no wrapped key was deposited for dataset {dataset_id} by its provider {dataset.provider}")
                content_hashes = [dataset.content_hash if i == dataset_id else self.market.dataset(i).content_hash for i in job.dataset_ids]
                now = self.market.chain.now()
                holder = str(to_checksum_address(trainer))
                if self.confirmations and not self._claim_confirmed(job):
                    raise KeyReleaseRefused(unconfirmed_message(f"job {job_id}'s claim", self.confirmations))
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
                    dataset_provider=to_canonical_address(dataset.provider),
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

    def _claim_confirmed(self, job: JobRecord) -> bool:
        """Whether the chain ``confirmations`` blocks back already shows the job as it is now
        (status, holder, charges); a job created since is not confirmed either."""
        try:
            confirmed = self.market.job(job.job_id, block=self.market.chain.confirmed_block(self.confirmations))
        except ContractReverted:  # JobMarketUnknownJob: the job itself is younger than that
            return False
        return (confirmed.status, confirmed.enclave, confirmed.charges) == (job.status, job.enclave, job.charges)

    def claim_release_statement(self, job_id: int, *, abandoned: bytes = b"") -> bytes:
        """The key manager's EIP-712 ``ClaimRelease(jobId, enclave, charges)`` for the job's current
        claim, for ``JobMarket.releaseClaim`` (``MarketClient.release_claim``) to give it back with no ε charged.

        Signed only if no data key of the job was released to the holding enclave under the job's
        current ``charges``, or if ``abandoned`` is the holder's signed ``RunAbandoned`` for this
        claim (its run failed and produced nothing; the releases under it then no longer count
        against the charges); the claim is then retired for good (logged once per dataset of the
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
                with_keys = self._sync_index().keys_released_under(job_id, holder, job.charges)
                if with_keys and not self._abandoned_by_holder(job_id, holder, job.charges, abandoned):
                    raise KeyReleaseRefused(keys_released_message(job_id, to_canonical_address(holder), job.charges))
                reply = self.enclave.process.request(
                    "release_claim",
                    chain_id=self.market.chain.chain_id,
                    market=self.market.address_bytes,
                    job_id=job_id,
                    job_status=int(job.status),
                    job_enclave=to_canonical_address(holder),
                    job_charges=job.charges,
                    abandoned=abandoned if with_keys else b"",
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
                job_id, datasets, holder, job.charges, retired=True, abandoned=with_keys,
                reason="ClaimRelease signed on the holder's RunAbandoned: its run produced nothing" if with_keys
                else "ClaimRelease signed: no key under this claim, ever",
            )  # fmt: skip
            if signer != to_canonical_address(self.enclave.process.signer):
                raise KeyReleaseRefused(f"the key manager's ClaimRelease for job {job_id} does not recover to its signer")
            return signature

    def audit_log(self, *, content_hash: bytes | None = None, kinds: tuple[str, ...] = RELEASE_KINDS) -> list[AuditEntry]:
        """Key-release and claim-release decisions (hash chain verified), optionally only those for one dataset.

        Args:
            kinds: the decisions wanted (:mod:`.audit` kinds); :meth:`deposit_log` has the deposits.
        """
        return self.audit.entries(content_hash=content_hash, kinds=kinds)

    def deposit_log(self, *, content_hash: bytes | None = None) -> list[AuditEntry]:
        """Accepted and refused deposits (hash chain verified), optionally only those for one ciphertext."""
        return self.audit.entries(content_hash=content_hash, kinds=DEPOSIT_KINDS)

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

    def _abandoned_by_holder(self, job_id: int, holder: str, charges: int, signature: bytes) -> bool:
        """Whether ``signature`` is the holder's ``RunAbandoned`` for this claim (the trusted part checks it again)."""
        statement = RunAbandoned(job_id=job_id, enclave=to_canonical_address(holder), charges=charges)
        try:
            signer = claim_release_signer(statement, signature, chain_id=self.market.chain.chain_id, market=self.market.address_bytes)
        except Exception:  # absent or malformed: recovers to nobody
            return False
        return signer == to_canonical_address(holder)

    def _log_statement(
        self, job_id: int, datasets: list[tuple[int, bytes]], holder: str, charges: int, *, retired: bool, reason: str,
        abandoned: bool = False,
    ) -> None:
        for dataset_id, content_hash in datasets:
            self._append(
                job_id=job_id, dataset_id=dataset_id, content_hash=content_hash, trainer=holder, released=False,
                reason=reason, kind=CLAIM_RELEASE, charges=charges, retired=retired, abandoned=abandoned,
            )  # fmt: skip
        logger.info("claim release job %d of %s (charges %d): %s (%s)", job_id, holder, charges, retired, reason)
