"""Host side of the key-manager enclave: keeps providers' wrapped data keys and serves releases.

The trusted key manager holds the X25519 key that providers wrap their data keys to. On a
release request the host reads the job, the dataset and the requesting trainer from the chain
and hands them, with the wrapped key, to the trusted part, which re-wraps the data key to the
trainer's **per-job key** only if the job is Claimed by that enclave, includes the dataset, is not
past its deadline, the per-job key carries that enclave's signature for this job, and the key was
not released for this job to this enclave before (one claim, one key, one run: ``docs/jobs.md``).
Every decision is appended to an audit log, which the host also consults to refuse a repeat
release after the trusted part restarted.

Known limit (walking skeleton): the trusted part takes the host's word for chain state; verifying
it inside the enclave (state proofs against a finalised header) is future work.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from eth_utils import to_canonical_address, to_checksum_address

from marketplace._files import write_atomic
from marketplace.contracts import MarketClient, RegistryClient
from marketplace.errors import KeyReleaseRefused, KeyUnwrapFailed

from .audit import AuditEntry, AuditLog
from .host import EnclaveRequestFailed
from .sim_platform import LaunchedEnclave
from .trusted.onchain import Role

logger = logging.getLogger(__name__)

MAX_WRAPPED_KEY_BYTES = 512


@dataclass(frozen=True)
class JobKey:
    """A trainer enclave's one-time X25519 key for one job, with the enclave's signature over it."""

    public_key: bytes
    signature: bytes


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
        self.audit = AuditLog(state_dir / "audit.jsonl")

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
                dataset, the per-job key is not certified by it, or the key was released already.
        """
        dataset = self.market.dataset(dataset_id)
        job = self.market.job(job_id)
        sealed_path = self._deposits / f"{dataset.content_hash.hex()}.sealed"
        try:
            if not sealed_path.exists():
                raise KeyReleaseRefused(f"no wrapped key was deposited for dataset {dataset_id}")
            if self._released_before(job_id, dataset.content_hash, trainer):
                raise KeyReleaseRefused(
                    f"the key of dataset {dataset_id} was already released for job {job_id} to this enclave: one claim, one key"
                )
            content_hashes = [
                dataset.content_hash if i == dataset_id else self.market.dataset(i).content_hash for i in job.dataset_ids
            ]
            reply = self.enclave.process.request(
                "release",
                chain_id=self.market.chain.chain_id,
                market=self.market.address_bytes,
                job_id=job_id,
                job_status=int(job.status),
                job_enclave=to_canonical_address(job.enclave),
                job_content_hashes=content_hashes,
                job_completion_deadline=job.completion_deadline,
                now=self.market.chain.now(),
                content_hash=dataset.content_hash,
                sealed_key=sealed_path.read_bytes(),
                trainer_signer=to_canonical_address(trainer),
                trainer_active=self.registry.is_active(trainer, Role.TRAINER),
                job_key=job_key.public_key,
                job_key_signature=job_key.signature,
            )
        except EnclaveRequestFailed as e:
            self._log(job_id, dataset_id, dataset.content_hash, trainer, released=False, reason=e.message)
            raise KeyReleaseRefused(e.message) from e
        except KeyReleaseRefused as e:
            self._log(job_id, dataset_id, dataset.content_hash, trainer, released=False, reason=str(e))
            raise
        self._log(job_id, dataset_id, dataset.content_hash, trainer, released=True, reason="claimed by this trainer")
        return bytes(reply["released_key"])

    def _released_before(self, job_id: int, content_hash: bytes, trainer: str) -> bool:
        """Whether the (verified) audit log shows this key released for this job to this trainer."""
        wanted = to_checksum_address(trainer)
        return any(
            e.released and e.job_id == job_id and to_checksum_address(e.trainer) == wanted
            for e in self.audit.entries(content_hash=content_hash)
        )

    def audit_log(self, *, content_hash: bytes | None = None) -> list[AuditEntry]:
        """Release decisions (hash chain verified), optionally only those for one dataset."""
        return self.audit.entries(content_hash=content_hash)

    def _log(self, job_id: int, dataset_id: int, content_hash: bytes, trainer: str, *, released: bool, reason: str) -> None:
        self.audit.append(
            job_id=job_id, dataset_id=dataset_id, content_hash=content_hash, trainer=trainer, released=released, reason=reason
        )
        logger.info("key release job %d dataset %d to %s: %s (%s)", job_id, dataset_id, trainer, released, reason)
