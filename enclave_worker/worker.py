"""A trainer worker: the untrusted host that claims jobs and runs them through its trainer enclave."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

from marketplace.blobstore import BlobStore
from marketplace.chain import TxResult
from marketplace.contracts import JobStatus, MarketClient
from marketplace.errors import (
    BlobNotFound,
    CiphertextTampered,
    InvalidModelSpec,
    JobNotReady,
    SchemaMismatch,
)

from .host import EnclaveRequestFailed
from .keymanager import JobKey, KeyManagerService
from .sim_platform import LaunchedEnclave
from .status import JobStatusBoard
from .trusted.models import ModelSpec
from .trusted.onchain import Role
from .trusted.receipt import Receipt

logger = logging.getLogger(__name__)

ProgressFn = Callable[[dict[str, Any]], None]


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


class TrainerWorker:
    """Claims jobs for one trainer enclave and settles them on-chain."""

    def __init__(
        self,
        enclave: LaunchedEnclave,
        *,
        operator: LocalAccount,
        market: MarketClient,
        key_manager: KeyManagerService,
        blobs: BlobStore,
        status: JobStatusBoard | None = None,
    ) -> None:
        if enclave.process.role is not Role.TRAINER:
            raise ValueError("TrainerWorker needs a trainer enclave")
        self.enclave = enclave
        self.operator = operator
        self.market = market
        self.key_manager = key_manager
        self.blobs = blobs
        self.status = status

    @property
    def signer(self) -> str:
        return str(to_checksum_address(self.enclave.process.signer))

    def run_job(self, job_id: int, *, progress: ProgressFn | None = None) -> JobOutcome:
        """Claim ``job_id``, obtain its data keys, train in the enclave, store the sealed model, submit the receipt.

        Raises:
            JobNotReady: the job is not Open.
            InvalidModelSpec, SchemaMismatch: the job cannot run; nothing was claimed or released.
            KeyReleaseRefused, ContractReverted, EnclaveRequestFailed: a step was refused.
        """
        progress = self._with_status(job_id, progress)
        job = self.market.job(job_id)
        if job.status is not JobStatus.OPEN:
            raise JobNotReady(f"job {job_id} is {job.status.name}, not OPEN")
        raw_spec = self._checked_spec(job_id, job.model_spec_hash, job.epsilon)
        records = [self.market.dataset(i) for i in job.dataset_ids]
        if len({r.schema_hash for r in records}) != 1:
            raise SchemaMismatch(f"job {job_id} joins datasets with different schemas; refusing before any key is requested")
        claim = self.market.claim_job(self.operator, job_id, self.signer)
        if progress:
            progress({"stage": "claimed", "job_id": job_id})
        chain_id, market = self.market.chain.chain_id, self.market.address_bytes
        job_key = self.prepare_job(job_id)
        datasets = []
        for dataset_id, record in zip(job.dataset_ids, records, strict=True):
            released = self.key_manager.release(job_id=job_id, dataset_id=dataset_id, trainer=self.signer, job_key=job_key)
            datasets.append(
                {
                    "content_hash": record.content_hash,
                    "released_key": released,
                    "ciphertext": self.blobs.get(record.content_hash.hex()),
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
        except EnclaveRequestFailed:
            logger.error("enclave failed job %d", job_id)
            raise
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
        submit = self.market.submit_result(self.operator, receipt, reply["signature"])
        if progress:
            progress({"stage": "settled", "job_id": job_id, "epsilon_spent": receipt.epsilon_spent})
        logger.info("job %d settled in tx %s", job_id, submit.tx_hash)
        return JobOutcome(job_id, receipt, reply["signature"], reply["metrics"], result_hash, claim, submit)

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
