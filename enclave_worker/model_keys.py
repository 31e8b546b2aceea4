"""Host side of the key manager for served models: owners' model-key deposits and releases to inference enclaves.

A model owner encrypts its weights like a dataset (STRL, a fresh key), wraps the key to the key
manager's attested key and signs an EIP-712 ``Deposit`` under the **model market's** domain
(:class:`~.trusted.vouchers.ModelDeposit`), so a dataset deposit never stands in for a model's.
The trusted part checks the signature, opens the key and seals it with (chain, model market,
owner); the host keeps it at ``model-deposits/<content hash>/<owner>.sealed``, never overwritten.

A release re-wraps the key to an inference enclave's **on-chain** encryption key, and the trusted
part does it only for an ACTIVE, unexpired listing whose on-chain owner made the deposit, to an
enclave the registry shows active in the INFERENCE role. Every deposit and release decision goes to
the key manager's hash-chained audit log (kinds ``model_deposit``, ``model_deposit_refused``,
``model_release``), under the key manager's lock.

Releasing a model key produces no output by itself: what a served model answers is accounted per
query by the vouchers the inference enclave checks (docs/inference.md), so releases are not counted.
"""

from __future__ import annotations

import logging
from pathlib import Path

from eth_utils import to_canonical_address, to_checksum_address

from marketplace.blobstore import BlobStore
from marketplace.contracts import JobRecord, JobStatus, ResultRecord
from marketplace.errors import JobNotReady, KeyReleaseRefused, KeyUnwrapFailed
from marketplace.model_market import ModelMarketClient
from marketplace.serving import JobModel

from .audit import MODEL_DEPOSIT, MODEL_DEPOSIT_REFUSED, MODEL_RELEASE
from .host import EnclaveRequestFailed
from .keymanager import MAX_WRAPPED_KEY_BYTES, SIGNATURE_BYTES, KeyManagerService, _write_new
from .trusted.onchain import Role
from .trusted.receipt import DepositExists, DepositRefused, DepositSignatureInvalid
from .trusted.vouchers import ModelDeposit, VoucherInvalid, model_deposit_signer

logger = logging.getLogger(__name__)


class ModelKeyService:
    """Model-key deposits and releases, through a key manager's trusted part (shares its lock and audit log)."""

    def __init__(self, key_manager: KeyManagerService, model_market: ModelMarketClient, *, blobs: BlobStore | None = None) -> None:
        self.key_manager = key_manager
        self.model_market = model_market
        self.blobs = blobs
        self._deposits = key_manager.state_dir / "model-deposits"
        self._deposits.mkdir(parents=True, exist_ok=True)

    @property
    def signer(self) -> str:
        return self.key_manager.signer

    def deposit_path(self, content_hash: bytes, owner: str) -> Path:
        return self._deposits / content_hash.hex() / f"{to_checksum_address(owner)}.sealed"

    def deposit(self, content_hash: bytes, wrapped_key: bytes, *, owner: str, signature: bytes) -> None:
        """Accept ``owner``'s model key, wrapped to this key manager, for the model ciphertext ``content_hash``.

        Raises:
            DepositSignatureInvalid: ``signature`` is not ``owner``'s ``ModelDeposit`` for this chain,
                model market and key manager.
            DepositExists: ``owner`` deposited a key for ``content_hash`` already (it is kept).
            KeyUnwrapFailed: malformed sizes, or the key does not open for this key manager.
        """
        km = self.key_manager
        chain_id, market = self.model_market.chain.chain_id, self.model_market.address_bytes
        with km.lock:
            try:
                try:
                    owner = str(to_checksum_address(owner))
                except ValueError as e:
                    raise DepositSignatureInvalid(f"the model deposit's owner {owner!r} is not an address") from e
                if len(content_hash) != 32 or len(wrapped_key) > MAX_WRAPPED_KEY_BYTES:
                    raise KeyUnwrapFailed("a model deposit needs a 32-byte content hash and a wrapped key of at most 512 bytes")
                if len(signature) != SIGNATURE_BYTES:
                    raise DepositSignatureInvalid(f"the deposit signature must be {SIGNATURE_BYTES} bytes, got {len(signature)}")
                statement = ModelDeposit(content_hash=content_hash, wrapped_key=wrapped_key, key_manager=to_canonical_address(km.signer))
                try:
                    signer = model_deposit_signer(statement, signature, chain_id=chain_id, model_market=market)
                except VoucherInvalid as e:
                    raise DepositSignatureInvalid(f"the model deposit signature is malformed ({e})") from e
                if signer != to_canonical_address(owner):
                    raise DepositSignatureInvalid(
                        f"the model deposit for {content_hash.hex()} is not signed by {owner} for chain {chain_id}, "
                        f"model market {self.model_market.address} and key manager {km.signer}"
                    )
                target = self.deposit_path(content_hash, owner)
                if target.exists():
                    raise DepositExists(f"owner {owner} already deposited a key for model ciphertext {content_hash.hex()}")
                try:
                    reply = km.enclave.process.request(
                        "deposit_model", chain_id=chain_id, model_market=market, content_hash=content_hash,
                        wrapped_key=wrapped_key, owner=to_canonical_address(owner), signature=signature,
                    )  # fmt: skip
                except EnclaveRequestFailed as e:
                    if e.error == DepositSignatureInvalid.__name__:
                        raise DepositSignatureInvalid(e.message) from e
                    raise KeyUnwrapFailed(f"model deposit for {content_hash.hex()} refused: {e.message}") from e
                try:
                    _write_new(target, reply["sealed_key"])
                except FileExistsError as e:
                    raise DepositExists(f"owner {owner} already deposited a key for model ciphertext {content_hash.hex()}") from e
            except (DepositRefused, KeyUnwrapFailed) as e:
                km.append_audit(
                    job_id=0, dataset_id=0, content_hash=content_hash, trainer="", released=False, reason=str(e),
                    kind=MODEL_DEPOSIT_REFUSED, provider=owner,
                )  # fmt: skip
                raise
            km.append_audit(
                job_id=0, dataset_id=0, content_hash=content_hash, trainer="", released=False,
                reason="signed by the owner under the model market's domain; sealed with its address", kind=MODEL_DEPOSIT, provider=owner,
            )  # fmt: skip
            logger.info("deposited the key of model ciphertext %s by %s", content_hash.hex(), owner)

    def deposit_from_job(self, job_id: int) -> JobModel:
        """Take the model of completed job ``job_id``, which its consumer had sealed to this key
        manager (for serving: nobody, the consumer included, ever holds its weights).

        The trusted part opens the sealed result, checks it against the receipt's result and model
        hashes, and seals the model key with the job's consumer (the only one who may list it, with
        ``listModelFromJob``) and the job id; the model's ciphertext goes to the blob store, where
        inference hosts fetch it. Anyone may ask (the result is public ciphertext); a job's model is
        taken once.

        Raises:
            JobNotReady: the job has not completed.
            DepositExists: the job's model was taken already.
            KeyReleaseRefused: the job's model was sealed to its consumer, or the result does not open or check.
            ValueError: this service has no blob store.
        """
        km, (blobs, job, result) = self.key_manager, self._completed_job(job_id)
        with km.lock:
            try:
                sealed_result = blobs.get(result.result_hash.hex())
                try:
                    reply = km.enclave.process.request(
                        "deposit_job_model", chain_id=km.market.chain.chain_id, market=km.market.address_bytes,
                        model_market=self.model_market.address_bytes, job_id=job_id, job_status=int(job.status),
                        job_consumer=to_canonical_address(job.consumer), job_consumer_key=job.consumer_key,
                        result_hash=result.result_hash, model_hash=result.model_hash, sealed_result=sealed_result,
                    )  # fmt: skip
                except EnclaveRequestFailed as e:
                    raise KeyReleaseRefused(f"job {job_id}'s model cannot be taken for serving: {e.message}") from e
                content_hash: bytes = reply["content_hash"]
                target = self.deposit_path(content_hash, job.consumer)
                if target.exists():
                    raise DepositExists(f"job {job_id}'s model was taken for serving already")
                stored = blobs.put(sealed_result[reply["ciphertext_offset"] :])
                if stored != content_hash.hex():
                    raise KeyReleaseRefused(f"job {job_id}: the model ciphertext stored is not the one the key manager sealed")
                try:
                    _write_new(target, reply["sealed_key"])
                except FileExistsError as e:
                    raise DepositExists(f"job {job_id}'s model was taken for serving already") from e
            except (DepositRefused, KeyReleaseRefused) as e:
                km.append_audit(
                    job_id=job_id, dataset_id=0, content_hash=result.result_hash, trainer="", released=False, reason=str(e),
                    kind=MODEL_DEPOSIT_REFUSED, provider=str(job.consumer),
                )  # fmt: skip
                raise
            km.append_audit(
                job_id=job_id, dataset_id=0, content_hash=content_hash, trainer="", released=False,
                reason="sealed to the key manager by the job's receipt; kept for its consumer", kind=MODEL_DEPOSIT,
                provider=str(job.consumer),
            )  # fmt: skip
        logger.info("took job %d's model for serving (ciphertext %s, for %s)", job_id, content_hash.hex(), job.consumer)
        return JobModel(job_id=job_id, content_hash=content_hash, weights_hash=reply["weights_hash"], owner=str(job.consumer))

    def deposit_job_model_copy(self, job_id: int, content_hash: bytes, wrapped_key: bytes, *, signature: bytes) -> JobModel:
        """Take for serving the model of completed job ``job_id`` whose consumer had it sealed to
        itself ("as well as to itself"): the consumer uploaded a copy of the weights to the blob
        store (``content_hash``), encrypted under a fresh key wrapped to this key manager, and signed
        its EIP-712 ``Deposit`` (:func:`marketplace.serving.list_job_model` does all of it).

        The trusted part checks that the job's consumer signed it and that it decrypts to the weights
        the job's receipt names (``modelHash``), and seals the key as for a model sealed to the key
        manager by the job itself: it is released only for the job's own listing (``listModelFromJob``).

        Raises:
            JobNotReady: the job has not completed.
            DepositSignatureInvalid: not signed by the job's consumer for this chain, model market and key manager.
            DepositExists: a key for this copy was deposited already.
            KeyReleaseRefused: the copy is not in the blob store, does not open, or is not the job's model.
            ValueError: this service has no blob store.
        """
        km, (blobs, job, result) = self.key_manager, self._completed_job(job_id)
        with km.lock:
            try:
                if len(content_hash) != 32 or len(wrapped_key) > MAX_WRAPPED_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
                    raise KeyReleaseRefused(
                        "a model copy needs a 32-byte content hash, a wrapped key of at most 512 bytes and a 65-byte signature"
                    )
                if not blobs.has(content_hash.hex()):
                    raise KeyReleaseRefused(f"no model ciphertext {content_hash.hex()} in the blob store: upload the copy first")
                target = self.deposit_path(content_hash, job.consumer)
                if target.exists():
                    raise DepositExists(f"a key for job {job_id}'s model copy {content_hash.hex()} was deposited already")
                try:
                    reply = km.enclave.process.request(
                        "deposit_job_model_copy", chain_id=self.model_market.chain.chain_id,
                        model_market=self.model_market.address_bytes, job_id=job_id, job_status=int(job.status),
                        job_consumer=to_canonical_address(job.consumer), model_hash=result.model_hash,
                        ciphertext=blobs.get(content_hash.hex()), wrapped_key=wrapped_key, signature=signature,
                    )  # fmt: skip
                except EnclaveRequestFailed as e:
                    if e.error == DepositSignatureInvalid.__name__:
                        raise DepositSignatureInvalid(e.message) from e
                    raise KeyReleaseRefused(f"job {job_id}'s model copy cannot be taken for serving: {e.message}") from e
                try:
                    _write_new(target, reply["sealed_key"])
                except FileExistsError as e:
                    raise DepositExists(f"a key for job {job_id}'s model copy {content_hash.hex()} was deposited already") from e
            except (DepositRefused, KeyReleaseRefused) as e:
                km.append_audit(
                    job_id=job_id, dataset_id=0, content_hash=content_hash, trainer="", released=False, reason=str(e),
                    kind=MODEL_DEPOSIT_REFUSED, provider=str(job.consumer),
                )  # fmt: skip
                raise
            km.append_audit(
                job_id=job_id, dataset_id=0, content_hash=content_hash, trainer="", released=False,
                reason="a copy signed by the job's consumer, checked against the receipt's model hash; kept for its consumer",
                kind=MODEL_DEPOSIT, provider=str(job.consumer),
            )  # fmt: skip
        logger.info("took a copy of job %d's model for serving (ciphertext %s, for %s)", job_id, content_hash.hex(), job.consumer)
        return JobModel(job_id=job_id, content_hash=content_hash, weights_hash=result.model_hash, owner=str(job.consumer))

    def _completed_job(self, job_id: int) -> tuple[BlobStore, JobRecord, ResultRecord]:
        """The blob store, a job whose model may be taken for serving, and its receipt's event.

        Raises:
            JobNotReady: the job has not completed.
            ValueError: this service has no blob store (where results and copies are read).
        """
        if self.blobs is None:
            raise ValueError("this model-key service has no blob store to read a job's model from")
        job = self.key_manager.market.job(job_id)
        if job.status is not JobStatus.COMPLETED:
            raise JobNotReady(f"job {job_id} is {job.status.name}, not COMPLETED")
        return self.blobs, job, self.key_manager.market.result_submitted(job_id)

    def release(self, *, model_id: int, enclave: str) -> bytes:
        """The key of listed model ``model_id``, re-wrapped to inference enclave ``enclave``'s on-chain key.

        Raises:
            KeyReleaseRefused: no deposit by the listing's owner, the model is not active or has
                expired, or ``enclave`` is not an active inference enclave.
        """
        km = self.key_manager
        with km.lock:
            record = self.model_market.model(model_id)
            content_hash = record.terms.content_hash
            try:
                if record.owner == "0x" + "00" * 20 or int(record.status) == 0:
                    raise KeyReleaseRefused(f"there is no model {model_id} on model market {self.model_market.address}")
                sealed_path = self.deposit_path(content_hash, record.owner)
                if not sealed_path.exists():
                    raise KeyReleaseRefused(f"no key was deposited for model {model_id} by its owner {record.owner}")
                enclave_record = km.registry.enclave_of(enclave)
                try:
                    reply = km.enclave.process.request(
                        "release_model",
                        chain_id=self.model_market.chain.chain_id,
                        model_market=self.model_market.address_bytes,
                        model_id=model_id,
                        model_status=int(record.status),
                        model_owner=to_canonical_address(record.owner),
                        model_content_hash=content_hash,
                        model_expiry=record.terms.expiry,
                        model_source_job=record.terms.source_job_id,
                        now=self.model_market.chain.now(),
                        sealed_key=sealed_path.read_bytes(),
                        inference_signer=to_canonical_address(enclave),
                        inference_active=km.registry.is_active(enclave, Role.INFERENCE),
                        inference_key=enclave_record.encryption_key,
                    )
                except EnclaveRequestFailed as e:
                    raise KeyReleaseRefused(e.message) from e
            except KeyReleaseRefused as e:
                km.append_audit(
                    job_id=0, dataset_id=model_id, content_hash=content_hash, trainer=str(to_checksum_address(enclave)),
                    released=False, reason=str(e), kind=MODEL_RELEASE,
                )  # fmt: skip
                raise
            km.append_audit(
                job_id=0, dataset_id=model_id, content_hash=content_hash, trainer=str(to_checksum_address(enclave)),
                released=True, reason="active listing, owner's deposit, active inference enclave", kind=MODEL_RELEASE,
            )  # fmt: skip
            released: bytes = reply["released_key"]
            return released
