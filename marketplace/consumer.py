"""The consumer workflow: publish a model spec, create a job with escrow, fetch and decrypt the model.

The job's on-chain record (``job()``) carries no result; what the trainer enclave's receipt
committed to (model, result bundle and metrics hashes) is read from its ``ResultSubmitted`` event.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from eth_account.signers.local import LocalAccount
from safetensors.torch import load as load_tensors
from torch import nn

from enclave_worker.trusted import dataformat, keywrap, sealing
from enclave_worker.trusted.dataset import Schema
from enclave_worker.trusted.enclave import model_context
from enclave_worker.trusted.models import ModelSpec, build_model, check_fits

from .blobstore import BlobAccess
from .chain import TxResult, Wei
from .contracts import JobId, JobStatus, MarketClient, delta_units, epsilon_units
from .errors import BlobNotFound, CiphertextTampered, JobNotReady, SchemaMismatch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CreatedJob:
    """A job the consumer created; ``escrow`` is what the market locked (Σ price snapshots + worker fee)."""

    job_id: JobId
    escrow: Wei
    tx: TxResult


class Consumer:
    """A data consumer: an account plus the X25519 key its models are sealed to."""

    def __init__(self, account: LocalAccount, *, market: MarketClient, blobs: BlobAccess, key: X25519PrivateKey | None = None) -> None:
        self.account = account
        self.market = market
        self.blobs = blobs
        self._key = key or X25519PrivateKey.generate()

    @property
    def public_key(self) -> bytes:
        return keywrap.public_key_bytes(self._key)

    def create_job(
        self,
        dataset_ids: Sequence[int],
        spec: ModelSpec,
        *,
        epsilon: float,
        delta: float,
        worker_fee: Wei,
        claim_window: int = 3600,
        completion_window: int = 6 * 3600,
        max_total_price: Wei | None = None,
        seal_to: bytes | None = None,
    ) -> CreatedJob:
        """Publish ``spec`` to the blob store and create a job paying the datasets' prices plus ``worker_fee``.

        Args:
            max_total_price: the most the job may cost (prices + fee); default the current price,
                so a price raised meanwhile makes the job revert instead of costing more.
            seal_to: the X25519 key the model is sealed to; default this consumer's own key. Pass the
                key manager's registered key (``registry.active_key_manager_key(signer)``) to have
                the model sealed for serving instead: nobody, this consumer included, ever holds its
                weights; it can be listed with :func:`marketplace.serving.list_job_model`.

        Raises:
            InvalidModelSpec: the spec's ``metrics_epsilon`` leaves no ε for training, or the spec
                cannot train on the datasets' schema (an image network on a table, a survival head
                on a regression target, …: :func:`~enclave_worker.trusted.models.check_fits`);
                nothing is sent.
            SchemaMismatch: the datasets do not share one schema (nothing is sent).
            ContractReverted: a dataset's terms refuse the job (its custom error says which), or
                ``JobMarketPriceAboveLimit`` when the price exceeds ``max_total_price``.
        """
        spec.training_epsilon(epsilon_units(epsilon))
        schemas = {i: self.market.dataset(i).schema_hash for i in dataset_ids}
        other = next((i for i in dataset_ids if schemas[i] != schemas[dataset_ids[0]]), None)
        if other is not None:
            raise SchemaMismatch(f"datasets {dataset_ids[0]} and {other} have different schemas: one job trains on datasets of one schema")
        if dataset_ids:
            try:
                check_fits(spec, self._schema(dataset_ids[0]))
            except BlobNotFound:
                logger.warning("the datasets' schema is not in the blob store: the spec is not checked against it")
        spec_hash = bytes.fromhex(self.blobs.put(spec.to_bytes()))
        now = self.market.chain.now()
        job_id, tx = self.market.create_job(
            self.account,
            dataset_ids=dataset_ids,
            model_spec_hash=spec_hash,
            epsilon=epsilon_units(epsilon),
            delta=delta_units(delta),
            consumer_key=self.public_key if seal_to is None else seal_to,
            worker_fee=worker_fee,
            claim_deadline=now + claim_window,
            completion_deadline=now + completion_window,
            max_total_price=max_total_price,
        )
        escrow = self.market.job(job_id).escrow
        logger.info("created job %d over datasets %s, escrow %d", job_id, dataset_ids, escrow)
        return CreatedJob(job_id, escrow, tx)

    def cancel_job(self, job_id: int) -> TxResult:
        """Cancel an Open (unclaimed) job: its ε is released and the escrow credited back (see :meth:`withdraw`)."""
        tx = self.market.cancel_job(self.account, job_id)
        logger.info("cancelled job %d in tx %s", job_id, tx.tx_hash)
        return tx

    def withdraw(self) -> tuple[Wei, TxResult]:
        """Withdraw the consumer's refunds and change from the market."""
        return self.market.withdraw(self.account)

    def fetch_metrics(self, job_id: int) -> dict[str, Any]:
        """The metrics document of a completed job, checked against the receipt's ``metricsHash``.

        It holds the ε spent (training and private metrics), the DP-noised training statistics the
        spec asked for, and the privacy audit's result when the spec asked for one.

        Raises:
            JobNotReady: the job has not completed.
            CiphertextTampered: the stored document does not match the receipt.
        """
        job = self.market.job(job_id)
        if job.status is not JobStatus.COMPLETED:
            raise JobNotReady(f"job {job_id} is {job.status.name}, not COMPLETED")
        metrics_hash = self.market.result_submitted(job_id).metrics_hash
        raw = self.blobs.get(metrics_hash.hex())
        if hashlib.sha256(raw).digest() != metrics_hash:
            raise CiphertextTampered(f"job {job_id}: stored metrics do not match the receipt's metrics hash")
        document: dict[str, Any] = json.loads(raw)
        return document

    def fetch_weights(self, job_id: int) -> bytes:
        """Download and decrypt the weights (safetensors bytes) of a completed job (:func:`open_job_model`)."""
        return open_job_model(self.market, self.blobs, self._key, job_id)

    def fetch_model(self, job_id: int) -> nn.Module:
        """Download, decrypt and load the model of a completed job (:meth:`fetch_weights` into its architecture).

        Raises:
            JobNotReady: the job has not completed.
            CiphertextTampered: the stored result or the decrypted weights do not match the on-chain hashes.
        """
        weights = self.fetch_weights(job_id)
        job = self.market.job(job_id)
        spec = ModelSpec.from_bytes(self.blobs.get(job.model_spec_hash.hex()))
        model = build_model(spec, self._schema(job.dataset_ids[0]))
        model.load_state_dict(load_tensors(weights))
        return model.eval()


    def _schema(self, dataset_id: int) -> Schema:
        """The schema dataset ``dataset_id`` was listed with, from the blob store (``BlobNotFound`` if it is not there)."""
        return Schema.from_json(json.loads(self.blobs.get(self.market.dataset(dataset_id).schema_hash.hex())))


class BlobReader(Protocol):
    """Read access to content-addressed blobs: a local :class:`BlobStore` or a gateway's."""

    def get(self, digest: str) -> bytes: ...


def open_job_model(market: MarketClient, blobs: BlobReader, key: X25519PrivateKey, job_id: int) -> bytes:
    """Download and decrypt the weights (safetensors bytes) of completed job ``job_id`` with the
    consumer's ``key``, checked against the hashes its receipt committed to on-chain.

    Raises:
        JobNotReady: the job has not completed.
        CiphertextTampered: the stored result or the decrypted weights do not match the on-chain hashes.
        KeyUnwrapFailed: ``key`` is not the job's consumer key (the model does not open).
    """
    job = market.job(job_id)
    if job.status is not JobStatus.COMPLETED:
        raise JobNotReady(f"job {job_id} is {job.status.name}, not COMPLETED")
    result = market.result_submitted(job_id)
    sealed = blobs.get(result.result_hash.hex())
    if hashlib.sha256(sealed).digest() != result.result_hash:
        raise CiphertextTampered(f"job {job_id}: the stored sealed model does not match the receipt's result hash")
    chain_id, address = market.chain.chain_id, market.address_bytes
    weights = sealing.open_sealed(
        sealed,
        key,
        info=keywrap.model_info(chain_id, address, job_id),
        kind=dataformat.Kind.MODEL,
        context=model_context(chain_id, address, job_id),
    )
    if hashlib.sha256(weights).digest() != result.model_hash:
        raise CiphertextTampered(f"job {job_id}: decrypted model does not match the receipt's model hash")
    return weights
