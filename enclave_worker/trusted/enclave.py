"""The trusted part's request handlers: one :class:`Enclave` per process, holding its keys in memory.

An enclave has a role (trainer, key manager or inference), a secp256k1 signing key (its on-chain identity)
and an X25519 key (what data keys, model keys and inference requests are encrypted to), both generated inside at start and never
leaving it. It does no I/O of its own: the host passes every input, and everything is checked
before use.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from eth_account import Account
from eth_utils import to_canonical_address, to_checksum_address
from safetensors.torch import save as save_tensors

from . import dataformat, dp_metrics, evaluation, inference, jobkeys, keywrap, memory_budget, platform_seal, privacy_audit, sealing
from .competition import Admission, CompetitionSignatureInvalid, check_signed_by
from .competition import sign as sign_competition
from .dataset import DatasetPackage, Schema, canonical_json, max_rows
from .errors import (
    CiphertextMalformed,
    CiphertextTampered,
    InvalidDataset,
    InvalidModelSpec,
    KeyReleaseRefused,
    ModelReleaseRefused,
    ProtocolError,
    SchemaMismatch,
    SubmissionRefused,
)
from .hosted import EncryptedPackage, Fingerprints, HostedCiphertext, ReadFn
from .models import ModelSpec
from .onchain import DELTA_SCALE, CompetitionStatus, JobStatus, ModelStatus, Role, Split
from .platform_seal import NoSealingKey
from .receipt import (
    MAX_CHARGES,
    ClaimRelease,
    Deposit,
    DepositSignatureInvalid,
    Receipt,
    RunAbandoned,
    check_deposit,
    claim_release_signer,
    counter_message,
    datasets_hash,
    epsilon_to_units,
    keys_released_message,
    retired_claim_message,
    sign_claim_release,
    sign_receipt,
)
from .report import report_data
from .training import train_dp
from .trainset import ArraySegment, ScannedRows, Segment
from .vouchers import ModelDeposit, VoucherInvalid, model_deposit_signer

Emit = Callable[[dict[str, Any]], None]

Claim = tuple[int, bytes, int, bytes, int]
"""(chain id, market, job id, holding enclave, the job's charges count): one claim on a job."""


def _sealed_key_label(content_hash: bytes) -> bytes:
    return b"sterling/v2/sealed-datakey/" + content_hash


_SEALED_KEY_BINDING = 32 + 20 + 20
"""A sealed data key's plaintext: ``chain id (uint256) || market || provider || data key``."""


def _seal_binding(chain_id: int, market: bytes, provider: bytes) -> bytes:
    return chain_id.to_bytes(32, "big") + market + provider


def _sealed_model_key_label(content_hash: bytes) -> bytes:
    return b"sterling/v1/sealed-modelkey/" + content_hash


def _sealed_job_model_key_label(content_hash: bytes) -> bytes:
    return b"sterling/v1/sealed-job-modelkey/" + content_hash


def _sealed_test_set_key_label(content_hash: bytes) -> bytes:
    return b"sterling/v1/sealed-testset-key/" + content_hash


def _sealed_submission_key_label(content_hash: bytes) -> bytes:
    return b"sterling/v1/sealed-submission-key/" + content_hash


_SEALED_COMPETITION_BINDING = _SEALED_KEY_BINDING + 32
"""A sealed test-set key's binding adds the test set's schema hash, a submission key's its competition id."""

Evaluation = tuple[int, bytes, int, int, int]
"""(chain id, competition market, competition id, submission index, split): one scoring."""


def model_context(chain_id: int, market: bytes, job_id: int) -> bytes:
    """The 32-byte context a sealed model's ciphertext is bound to."""
    return hashlib.sha256(keywrap.model_info(chain_id, market, job_id)).digest()


class Enclave:
    """State and handlers of one trusted process."""

    def __init__(
        self,
        role: Role,
        *,
        seal_key: bytes | None = None,
        model_cache: int = inference.DEFAULT_MODEL_CACHE,
        memory_budget: int = memory_budget.DEFAULT_BUDGET,
    ) -> None:
        self.role = role
        self._seal_key = seal_key
        self.memory_budget = memory_budget  # trainer: what a job's plan must fit (memory_budget.plan)
        self._account = Account.create()
        self._box = X25519PrivateKey.generate()
        self.signer = to_canonical_address(self._account.address)
        self.encryption_key = keywrap.public_key_bytes(self._box)
        self._job_keys = jobkeys.JobKeyRing()  # trainer: one key and one run per job
        # Key manager (docs/jobs.md, property 1): what it released and which claims it gave back.
        self._released: set[tuple[int, bytes, int, bytes, bytes]] = set()  # (chain, market, job, dataset, enclave)
        self._release_counts: dict[tuple[int, bytes, int, bytes], int] = {}  # (chain, market, job, dataset) -> releases
        self._claims_with_keys: set[Claim] = set()  # claims some data key was released under
        self._retired: set[Claim] = set()  # claims given back by a signed ClaimRelease: never a key under them
        # Inference: loaded models and the channels' voucher marks (docs/inference.md).
        # Competitions: the leaderboard best each scoring's keys were released against (key manager).
        self._evaluations: dict[Evaluation, int] = {}
        self._server = None
        if role is Role.INFERENCE:
            self._server = inference.InferenceServer(bytes(self._account.key), self._box, cache_size=model_cache)
        self._evaluator = evaluation.Evaluator(self._account, self._box) if role is Role.EVALUATOR else None

    def handle(self, op: str, fields: dict[str, Any], emit: Emit, *, read: ReadFn | None = None) -> dict[str, Any]:
        """Dispatch one validated request; returns the result map.

        Args:
            read: asks the host for byte ranges of the request's datasets (a trainer's ``run``
                reads its ciphertexts through it; :class:`.protocol.HostChannel`).
        """
        handlers: dict[str, Callable[[dict[str, Any], Emit], dict[str, Any]]] = {
            "hello": self._hello,
            "attest": self._attest,
        }
        if self.role is Role.KEY_MANAGER:
            handlers |= {
                "deposit": self._deposit,
                "release": self._release,
                "release_claim": self._release_claim,
                "deposit_model": self._deposit_model,
                "release_model": self._release_model,
                "deposit_job_model": self._deposit_job_model,
                "deposit_job_model_copy": self._deposit_job_model_copy,
                "deposit_test_set": self._deposit_test_set,
                "admit_submission": self._admit_submission,
                "admit_job_model": self._admit_job_model,
                "release_evaluation": self._release_evaluation,
                "release_purchase": self._release_purchase,
            }
        elif self.role is Role.INFERENCE:
            handlers |= {"load_model": self._load_model, "infer": self._infer}
        elif self.role is Role.EVALUATOR:
            handlers |= {"score": self._score}
        else:
            handlers |= {
                "prepare_job": self._prepare_job,
                "plan": self._plan,
                "run": partial(self._run, read=read),
                "abandon": self._abandon,
            }
        if op not in handlers:
            raise ProtocolError(f"op {op!r} is not served by a {self.role.name.lower()} enclave")
        return handlers[op](fields, emit)

    def _hello(self, fields: dict[str, Any], emit: Emit) -> dict[str, Any]:
        return {"role": int(self.role), "signer": self.signer, "encryption_key": self.encryption_key}

    def _attest(self, fields: dict[str, Any], emit: Emit) -> dict[str, Any]:
        nonce: bytes = fields["nonce"]
        return {
            "role": int(self.role),
            "signer": self.signer,
            "encryption_key": self.encryption_key,
            "nonce": nonce,
            "report_data": report_data(self.role, self.signer, self.encryption_key, nonce),
        }

    # --- key manager -------------------------------------------------------------------------

    def _sealing_key(self) -> bytes:
        if self._seal_key is None:
            raise NoSealingKey("this enclave was started without a sealing key; it cannot keep data keys")
        return self._seal_key

    def _deposit(self, fields: dict[str, Any], emit: Emit) -> dict[str, Any]:
        """Check the provider's EIP-712 ``Deposit`` signature, open its wrapped data key and re-seal
        it, together with the provider's address and the market, for storage by the host.

        The sealed key is released only for a dataset of that market whose on-chain provider is
        that address (:meth:`_release`), so a deposit by anyone else never reaches a job.
        """
        content_hash: bytes = fields["content_hash"]
        statement = Deposit(content_hash=content_hash, wrapped_key=fields["wrapped_key"], key_manager=self.signer)
        check_deposit(statement, fields["signature"], provider=fields["provider"], chain_id=fields["chain_id"], market=fields["market"])
        key = keywrap.unwrap(fields["wrapped_key"], self._box, info=keywrap.datakey_info(content_hash))
        binding = _seal_binding(fields["chain_id"], fields["market"], fields["provider"])
        return {"sealed_key": platform_seal.seal(self._sealing_key(), binding + key, label=_sealed_key_label(content_hash))}

    def _release(self, fields: dict[str, Any], emit: Emit) -> dict[str, Any]:
        """Re-wrap a data key to the per-job key of the enclave holding the job, within the counter rule.

        Releases for one (chain, market, job, dataset) are counted: a release happens only while
        the prior releases are at most the job's on-chain ``charges`` (each charge is one ε debit
        of the dataset, the settlement or expiry the last one), so no more runs ever hold the key
        than the chain debits ε for, even if the chain forgets a claim. Never under a lapsed
        lease, never twice to one enclave, never under a claim given back by :meth:`_release_claim`,
        and only a key sealed by :meth:`_deposit` for this market and the dataset's on-chain provider.
        """
        job_id, charges = fields["job_id"], fields["job_charges"]
        if charges > MAX_CHARGES:
            raise ProtocolError(f"field 'job_charges' must be at most {MAX_CHARGES}")
        if not fields["trainer_active"]:
            raise KeyReleaseRefused("the requesting trainer enclave is not active in the registry")
        if fields["job_status"] != JobStatus.CLAIMED:
            raise KeyReleaseRefused(f"job {fields['job_id']} is not in the Claimed state")
        if fields["job_enclave"] != fields["trainer_signer"]:
            raise KeyReleaseRefused(f"job {fields['job_id']} is not claimed by this trainer enclave")
        if fields["content_hash"] not in fields["job_content_hashes"]:
            raise KeyReleaseRefused(f"the dataset is not part of job {fields['job_id']}")
        if fields["now"] > fields["job_completion_deadline"]:
            raise KeyReleaseRefused(f"job {fields['job_id']} is past its completion deadline")
        if fields["now"] > fields["job_lease_expiry"]:
            raise KeyReleaseRefused(
                f"the claim on job {job_id} lapsed at {fields['job_lease_expiry']} (now {fields['now']}): "
                "no key is released under a lapsed claim"
            )
        jobkeys.check_job_key(
            chain_id=fields["chain_id"],
            market=fields["market"],
            job_id=fields["job_id"],
            job_key=fields["job_key"],
            signature=fields["job_key_signature"],
            enclave=fields["job_enclave"],
        )
        claim: Claim = (fields["chain_id"], fields["market"], job_id, fields["job_enclave"], charges)
        if claim in self._retired:
            raise KeyReleaseRefused(retired_claim_message(job_id, charges))
        release = (fields["chain_id"], fields["market"], job_id, fields["content_hash"], fields["job_enclave"])
        if release in self._released:
            raise KeyReleaseRefused(f"the key of this dataset was already released for job {job_id} to this enclave: one claim, one key")
        counted = (fields["chain_id"], fields["market"], job_id, fields["content_hash"])
        prior = self._release_counts.get(counted, 0)
        if prior > charges:
            raise KeyReleaseRefused(counter_message("this dataset", job_id, prior, charges))
        sealed = platform_seal.unseal(self._sealing_key(), fields["sealed_key"], label=_sealed_key_label(fields["content_hash"]))
        binding, key = sealed[:_SEALED_KEY_BINDING], sealed[_SEALED_KEY_BINDING:]
        if binding != _seal_binding(fields["chain_id"], fields["market"], fields["dataset_provider"]):
            raise KeyReleaseRefused(
                f"the sealed key of this dataset was deposited by {to_checksum_address(binding[52:72])}, not by the dataset's "
                f"on-chain provider {to_checksum_address(fields['dataset_provider'])} on this market"
            )
        info = keywrap.release_info(fields["chain_id"], fields["market"], job_id, fields["content_hash"])
        wrapped = keywrap.wrap(key, fields["job_key"], info=info)
        self._released.add(release)
        self._release_counts[counted] = prior + 1
        self._claims_with_keys.add(claim)
        return {"released_key": wrapped}

    def _release_claim(self, fields: dict[str, Any], emit: Emit) -> dict[str, Any]:
        """Sign ``ClaimRelease(job, holder, charges)`` if no key of the job went to the holder under
        this claim, or if the holder signed ``RunAbandoned`` for it (``abandoned``; empty when it
        did not), and retire the claim: no key is ever released under it afterwards.

        An abandoned claim's releases no longer count against the job's charges (its run produced
        nothing and never will), so the next claim gets the keys without an ε charge; the holder
        itself still never gets a key of the job again."""
        job_id, charges = fields["job_id"], fields["job_charges"]
        chain_id, market, holder = fields["chain_id"], fields["market"], fields["job_enclave"]
        if charges > MAX_CHARGES:
            raise ProtocolError(f"field 'job_charges' must be at most {MAX_CHARGES}")
        if fields["job_status"] != JobStatus.CLAIMED:
            raise KeyReleaseRefused(f"job {job_id} is not in the Claimed state")
        claim: Claim = (chain_id, market, job_id, holder, charges)
        if claim in self._claims_with_keys:
            abandoned = RunAbandoned(job_id=job_id, enclave=holder, charges=charges)
            try:
                signer = claim_release_signer(abandoned, fields["abandoned"], chain_id=chain_id, market=market)
            except Exception:  # absent or malformed: recovers to nobody
                signer = b""
            if signer != holder:
                raise KeyReleaseRefused(keys_released_message(job_id, holder, charges))
            for release in [r for r in self._released if r[:3] == (chain_id, market, job_id) and r[4] == holder]:
                self._release_counts[release[:4]] -= 1
            self._claims_with_keys.discard(claim)
        statement = ClaimRelease(job_id=job_id, enclave=holder, charges=charges)
        signature = sign_claim_release(self._account, statement, chain_id=chain_id, market=market)
        self._retired.add(claim)
        return {"signature": signature}

    def _deposit_model(self, fields: dict[str, Any], emit: Emit) -> dict[str, Any]:
        """Check the model owner's EIP-712 ``Deposit`` (under the model market's domain), open its
        wrapped model key and re-seal it with (chain id, model market, owner) for storage by the host.

        The sealed key is released only for a listing of that model market whose on-chain owner is
        that address (:meth:`_release_model`).
        """
        content_hash: bytes = fields["content_hash"]
        chain_id, model_market, owner = fields["chain_id"], fields["model_market"], fields["owner"]
        statement = ModelDeposit(content_hash=content_hash, wrapped_key=fields["wrapped_key"], key_manager=self.signer)
        try:
            signer = model_deposit_signer(statement, fields["signature"], chain_id=chain_id, model_market=model_market)
        except VoucherInvalid as e:
            raise DepositSignatureInvalid(f"the model deposit signature is malformed ({e})") from e
        if signer != owner:
            raise DepositSignatureInvalid(
                f"the model deposit for {content_hash.hex()} is not signed by owner {to_checksum_address(owner)} for chain {chain_id}, "
                f"model market {to_checksum_address(model_market)} and key manager {to_checksum_address(self.signer)}"
            )
        key = keywrap.unwrap(fields["wrapped_key"], self._box, info=keywrap.modelkey_info(content_hash))
        binding = _seal_binding(chain_id, model_market, owner)
        return {"sealed_key": platform_seal.seal(self._sealing_key(), binding + key, label=_sealed_model_key_label(content_hash))}

    def _deposit_job_model(self, fields: dict[str, Any], emit: Emit) -> dict[str, Any]:
        """Take the model of a completed job whose consumer had it sealed to this key manager (for
        serving, so that nobody ever holds its weights): open the sealed result, check it is the
        receipt's, and seal its key with (chain id, model market, the job's consumer, the job id).

        Its key is released only for a listing of that model market whose owner is the consumer
        and whose ``sourceJobId`` is this job (:meth:`_release_model`), so a listing cannot show
        the ε of one job while serving the weights of another.
        """
        chain_id, job_id = fields["chain_id"], fields["job_id"]
        key, body, weights = self._open_job_result(fields)
        inference.weights_schema(weights, model_id=0)  # servable: it carries its input schema
        del weights
        content_hash = hashlib.sha256(body).digest()
        return {
            "sealed_key": self._seal_job_model_key(chain_id, fields["model_market"], fields["job_consumer"], job_id, key, content_hash),
            "content_hash": content_hash,
            "weights_hash": fields["model_hash"],
            "ciphertext_offset": len(fields["sealed_result"]) - len(body),
        }

    def _open_job_result(self, fields: dict[str, Any]) -> tuple[bytes, bytes, bytes]:
        """Open the sealed result of a completed job whose consumer had it sealed to this key
        manager, checked against the receipt's result and model hashes.

        Returns:
            ``(model key, model ciphertext, weights)``: the ciphertext is the result without its
            wrapped key, under the job's fresh model key.
        """
        chain_id, market, job_id = fields["chain_id"], fields["market"], fields["job_id"]
        if fields["job_status"] != JobStatus.COMPLETED:
            raise ModelReleaseRefused(f"job {job_id} is not completed")
        if fields["job_consumer_key"] != self.encryption_key:
            raise ModelReleaseRefused(f"job {job_id}'s model was sealed to its consumer, not to this key manager")
        sealed_result: bytes = fields["sealed_result"]
        if hashlib.sha256(sealed_result).digest() != fields["result_hash"]:
            raise CiphertextTampered(f"job {job_id}: the sealed result does not match the receipt's result hash")
        key, body = sealing.open_key(sealed_result, self._box, info=keywrap.model_info(chain_id, market, job_id))
        weights = dataformat.decrypt_bytes(body, key, kind=dataformat.Kind.MODEL, context=model_context(chain_id, market, job_id))
        if hashlib.sha256(weights).digest() != fields["model_hash"]:
            raise CiphertextTampered(f"job {job_id}: the decrypted model does not match the receipt's model hash")
        return key, body, weights

    def _deposit_job_model_copy(self, fields: dict[str, Any], emit: Emit) -> dict[str, Any]:
        """Take for serving the model of a completed job whose consumer had it sealed to ITSELF: the
        consumer, who holds the weights, deposits a copy encrypted under a fresh key wrapped to this
        key manager (as an owner lists any model) with its EIP-712 ``Deposit``. The copy must be
        signed by the job's consumer and decrypt to weights whose SHA-256 is the job's receipt's
        ``modelHash`` (the ciphertext's AEAD context is that hash too), so the listing that shows the
        job's ε and δ serves exactly the weights that job trained. The key is then sealed as
        :meth:`_deposit_job_model` seals it (released only for the job's own listing).
        """
        chain_id, model_market, job_id = fields["chain_id"], fields["model_market"], fields["job_id"]
        if fields["job_status"] != JobStatus.COMPLETED:
            raise ModelReleaseRefused(f"job {job_id} is not completed")
        ciphertext: bytes = fields["ciphertext"]
        content_hash = hashlib.sha256(ciphertext).digest()
        statement = ModelDeposit(content_hash=content_hash, wrapped_key=fields["wrapped_key"], key_manager=self.signer)
        try:
            signer = model_deposit_signer(statement, fields["signature"], chain_id=chain_id, model_market=model_market)
        except VoucherInvalid as e:
            raise DepositSignatureInvalid(f"the model deposit signature is malformed ({e})") from e
        if signer != fields["job_consumer"]:
            raise DepositSignatureInvalid(
                f"the copy of job {job_id}'s model is not signed by the job's consumer {to_checksum_address(fields['job_consumer'])} "
                f"for chain {chain_id}, model market {to_checksum_address(model_market)} and key manager {to_checksum_address(self.signer)}"
            )
        key = keywrap.unwrap(fields["wrapped_key"], self._box, info=keywrap.modelkey_info(content_hash))
        weights = dataformat.decrypt_bytes(ciphertext, key, kind=dataformat.Kind.MODEL, context=fields["model_hash"])
        if hashlib.sha256(weights).digest() != fields["model_hash"]:
            raise CiphertextTampered(f"job {job_id}: the copy does not decrypt to the model its receipt names")
        inference.weights_schema(weights, model_id=0)  # servable: it carries its input schema
        del weights
        return {
            "sealed_key": self._seal_job_model_key(chain_id, model_market, fields["job_consumer"], job_id, key, content_hash),
            "content_hash": content_hash,
            "weights_hash": fields["model_hash"],
        }

    def _seal_job_model_key(
        self, chain_id: int, model_market: bytes, consumer: bytes, job_id: int, key: bytes, content_hash: bytes
    ) -> bytes:
        """A job's model key sealed with (chain id, model market, the job's consumer, the job id)."""
        binding = _seal_binding(chain_id, model_market, consumer) + job_id.to_bytes(32, "big")
        return platform_seal.seal(self._sealing_key(), binding + key, label=_sealed_job_model_key_label(content_hash))

    def _release_model(self, fields: dict[str, Any], emit: Emit) -> dict[str, Any]:
        """Re-wrap a model key to an active inference enclave's on-chain encryption key.

        Only for an ACTIVE, unexpired listing whose on-chain owner deposited the sealed key (for this
        chain and model market), and only to an enclave the registry shows active in the INFERENCE
        role (``inference_active``: a trainer, key manager, revoked or unapproved enclave is refused).
        """
        model_id, content_hash = fields["model_id"], fields["model_content_hash"]
        chain_id, model_market = fields["chain_id"], fields["model_market"]
        enclave = to_checksum_address(fields["inference_signer"])
        if not fields["inference_active"]:
            raise ModelReleaseRefused(f"enclave {enclave} is not an active inference enclave in the registry")
        if fields["model_status"] != ModelStatus.ACTIVE:
            raise ModelReleaseRefused(
                f"model {model_id} is not active (status {fields['model_status']}, not ACTIVE = {int(ModelStatus.ACTIVE)})"
            )
        if fields["model_expiry"] != 0 and fields["now"] >= fields["model_expiry"]:
            raise ModelReleaseRefused(f"model {model_id} expired at {fields['model_expiry']} (now {fields['now']})")
        source_job = fields["model_source_job"]
        if source_job:  # trained here: the key came from that job's sealed result (:meth:`_deposit_job_model`)
            sealed = platform_seal.unseal(self._sealing_key(), fields["sealed_key"], label=_sealed_job_model_key_label(content_hash))
            sealed_job = int.from_bytes(sealed[_SEALED_KEY_BINDING : _SEALED_KEY_BINDING + 32], "big")
            if sealed_job != source_job:
                raise ModelReleaseRefused(f"model {model_id} lists job {source_job} as its source, but its weights are job {sealed_job}'s")
            binding, key = sealed[:_SEALED_KEY_BINDING], sealed[_SEALED_KEY_BINDING + 32 :]
        else:
            sealed = platform_seal.unseal(self._sealing_key(), fields["sealed_key"], label=_sealed_model_key_label(content_hash))
            binding, key = sealed[:_SEALED_KEY_BINDING], sealed[_SEALED_KEY_BINDING:]
        if binding != _seal_binding(chain_id, model_market, fields["model_owner"]):
            raise ModelReleaseRefused(
                f"the sealed key of model {model_id} was deposited by {to_checksum_address(binding[52:72])}, not by its on-chain "
                f"owner {to_checksum_address(fields['model_owner'])} on this model market"
            )
        info = keywrap.model_release_info(chain_id, model_market, model_id, content_hash)
        return {"released_key": keywrap.wrap(key, fields["inference_key"], info=info)}

    # --- key manager: competitions ------------------------------------------------------------

    def _deposit_test_set(self, fields: dict[str, Any], emit: Emit) -> dict[str, Any]:
        """Check the organizer's EIP-712 ``Deposit`` (under the competition market's domain), open
        the test set and re-seal its key with (chain id, competition market, organizer, schema hash).

        The key is released only to an evaluator scoring a competition of that market whose
        on-chain organizer is that address and whose terms name this test set and schema
        (:meth:`_release_evaluation`). The test set is decrypted here once, so a competition is
        never created over a test set that does not open or has no valid schema.
        """
        chain_id, competitions, organizer = fields["chain_id"], fields["competitions"], fields["organizer"]
        ciphertext: bytes = fields["ciphertext"]
        content_hash = hashlib.sha256(ciphertext).digest()
        statement = Deposit(content_hash=content_hash, wrapped_key=fields["wrapped_key"], key_manager=self.signer)
        try:
            check_signed_by(
                statement, fields["signature"], organizer, chain_id=chain_id, competitions=competitions, what="the test-set deposit"
            )
        except CompetitionSignatureInvalid as e:
            raise DepositSignatureInvalid(str(e)) from e
        key = keywrap.unwrap(fields["wrapped_key"], self._box, info=keywrap.test_set_info(chain_id, competitions, content_hash))
        package = DatasetPackage.from_bytes(dataformat.decrypt_bytes(ciphertext, key, kind=dataformat.Kind.DATASET))
        schema_hash = package.schema.hash()
        binding = _seal_binding(chain_id, competitions, organizer) + schema_hash
        return {
            "sealed_key": platform_seal.seal(self._sealing_key(), binding + key, label=_sealed_test_set_key_label(content_hash)),
            "content_hash": content_hash,
            "schema_hash": schema_hash,
            "rows": package.rows,
        }

    def _admit_submission(self, fields: dict[str, Any], emit: Emit) -> dict[str, Any]:
        """Open a participant's sealed model, check it against the competition's rules, seal its key
        with (chain id, competition market, participant, competition id) and sign its ``Admission``.

        The model key must be wrapped with :func:`keywrap.submission_info` for this competition and
        participant, and the participant must have signed the deposit: a ciphertext and wrapped key
        copied from someone else do not open under another name. ``CompetitionMarket.submit`` takes
        the admission only from the participant it names.
        """
        chain_id, competitions, participant = fields["chain_id"], fields["competitions"], fields["participant"]
        rules = evaluation.Rules.from_fields(fields)
        self._check_window(rules, fields)
        ciphertext: bytes = fields["ciphertext"]
        content_hash = hashlib.sha256(ciphertext).digest()
        statement = Deposit(content_hash=content_hash, wrapped_key=fields["wrapped_key"], key_manager=self.signer)
        try:
            check_signed_by(
                statement, fields["signature"], participant, chain_id=chain_id, competitions=competitions, what="the submission"
            )
        except CompetitionSignatureInvalid as e:
            raise DepositSignatureInvalid(str(e)) from e
        info = keywrap.submission_info(chain_id, competitions, rules.competition_id, participant, content_hash)
        key = keywrap.unwrap(fields["wrapped_key"], self._box, info=info)
        weights = dataformat.decrypt_bytes(ciphertext, key, kind=dataformat.Kind.MODEL)
        evaluation.open_submission(weights, rules=rules)
        weights_hash = hashlib.sha256(weights).digest()
        del weights
        return self._admitted(chain_id, competitions, rules.competition_id, participant, key, content_hash, weights_hash)

    def _admit_job_model(self, fields: dict[str, Any], emit: Emit) -> dict[str, Any]:
        """Admit the model of a completed job, sealed to this key manager, as its consumer's
        submission: the participant never holds the weights. The job's model ciphertext becomes the
        submission's (``ciphertext_offset`` into the sealed result); the rest is :meth:`_admit_submission`'s."""
        chain_id, competitions, participant = fields["chain_id"], fields["competitions"], fields["job_consumer"]
        rules = evaluation.Rules.from_fields(fields)
        self._check_window(rules, fields)
        key, body, weights = self._open_job_result(fields)
        evaluation.open_submission(weights, rules=rules)
        del weights
        reply = self._admitted(
            chain_id, competitions, rules.competition_id, participant, key, hashlib.sha256(body).digest(), fields["model_hash"]
        )
        return reply | {"ciphertext_offset": len(fields["sealed_result"]) - len(body)}

    @staticmethod
    def _check_window(rules: evaluation.Rules, fields: dict[str, Any]) -> None:
        if fields["competition_status"] != CompetitionStatus.OPEN:
            raise SubmissionRefused(f"competition {rules.competition_id} is not open")
        if fields["now"] >= fields["closes_at"]:
            raise SubmissionRefused(f"competition {rules.competition_id}'s window closed at {fields['closes_at']} (now {fields['now']})")

    def _admitted(
        self,
        chain_id: int,
        competitions: bytes,
        competition_id: int,
        participant: bytes,
        key: bytes,
        content_hash: bytes,
        weights_hash: bytes,
    ) -> dict[str, Any]:
        """Seal an admitted model's key with (chain id, competition market, participant, competition id) and sign its admission."""
        admission = Admission(competition_id=competition_id, participant=participant, content_hash=content_hash, weights_hash=weights_hash)
        binding = _seal_binding(chain_id, competitions, participant) + competition_id.to_bytes(32, "big")
        return {
            "sealed_key": platform_seal.seal(self._sealing_key(), binding + key, label=_sealed_submission_key_label(content_hash)),
            "content_hash": content_hash,
            "weights_hash": weights_hash,
            "admission": sign_competition(self._account, admission, chain_id=chain_id, competitions=competitions),
        }

    def _unseal_submission_key(self, fields: dict[str, Any], competition_id: int) -> bytes:
        """The key of the submission the request names, checked against its on-chain participant and competition."""
        sealed = platform_seal.unseal(
            self._sealing_key(), fields["submission_sealed_key"], label=_sealed_submission_key_label(fields["submission_hash"])
        )
        binding, key = sealed[:_SEALED_COMPETITION_BINDING], sealed[_SEALED_COMPETITION_BINDING:]
        expected = _seal_binding(fields["chain_id"], fields["competitions"], fields["participant"]) + competition_id.to_bytes(32, "big")
        if binding != expected:
            raise KeyReleaseRefused(
                f"the sealed key of submission {fields['index']} was admitted for {to_checksum_address(binding[52:72])} to competition "
                f"{int.from_bytes(binding[72:104], 'big')}, not for its on-chain participant "
                f"{to_checksum_address(fields['participant'])} to competition {competition_id}"
            )
        return key

    def _release_evaluation(self, fields: dict[str, Any], emit: Emit) -> dict[str, Any]:
        """Re-wrap the test set's key and a submission's key to an active evaluator, for ONE scoring.

        PUBLIC: only for the next submission in order (the chain's ``nextPublic``), not yet scored;
        PRIVATE: only from the close of the window on, not yet scored. Both keys are bound to the
        submission, the split and ``previous_best`` (:func:`keywrap.evaluation_info`), and a
        scoring is released against one best only: asked again with another, it is refused, so
        no host gets a submission's public score against several leaderboard states.
        """
        rules = evaluation.Rules.from_fields(fields)
        chain_id, competitions, competition_id = fields["chain_id"], fields["competitions"], rules.competition_id
        index, previous_best = fields["index"], fields["previous_best"]
        if index >= 2**32 or previous_best >= 2**64:
            raise ProtocolError("index is a uint32 and previous_best a uint64")
        if not fields["evaluator_active"]:
            raise KeyReleaseRefused(f"enclave {to_checksum_address(fields['evaluator_signer'])} is not an active evaluator in the registry")
        if fields["competition_status"] != CompetitionStatus.OPEN:
            raise KeyReleaseRefused(f"competition {competition_id} is not open: its scores are final")
        if fields["split"] not in (s.value for s in Split):
            raise ProtocolError(f"unknown split {fields['split']}")
        split = Split(fields["split"])
        if split is Split.PUBLIC:
            if fields["public_scored"]:
                raise KeyReleaseRefused(f"submission {index} of competition {competition_id} has its public score")
            if index != fields["next_public"]:
                raise KeyReleaseRefused(
                    f"public scores are posted in submission order: submission {fields['next_public']} is next, not {index}"
                )
        else:
            if fields["now"] < fields["closes_at"]:
                raise KeyReleaseRefused(
                    f"competition {competition_id}'s private split is scored from {fields['closes_at']} on (now {fields['now']})"
                )
            if fields["private_scored"]:
                raise KeyReleaseRefused(f"submission {index} of competition {competition_id} has its private score")
            if previous_best != 0:
                raise ProtocolError("a private scoring takes previous_best 0")
        scoring: Evaluation = (chain_id, competitions, competition_id, index, int(split))
        released_against = self._evaluations.get(scoring)
        if released_against is not None and released_against != previous_best:
            raise KeyReleaseRefused(
                f"submission {index} of competition {competition_id} was released for {split.name.lower()} scoring against best "
                f"{released_against}, not {previous_best}: one submission, one score per split"
            )
        sealed = platform_seal.unseal(
            self._sealing_key(), fields["test_set_sealed_key"], label=_sealed_test_set_key_label(rules.test_set_hash)
        )
        binding, data_key = sealed[:_SEALED_COMPETITION_BINDING], sealed[_SEALED_COMPETITION_BINDING:]
        if binding != _seal_binding(chain_id, competitions, fields["organizer"]) + rules.schema_hash:
            raise KeyReleaseRefused(
                f"the test set of competition {competition_id} was deposited by {to_checksum_address(binding[52:72])} with schema "
                f"{binding[72:104].hex()}, not by its organizer "
                f"{to_checksum_address(fields['organizer'])} with schema {rules.schema_hash.hex()}"
            )
        model_key = self._unseal_submission_key(fields, competition_id)

        def wrap(key: bytes, content_hash: bytes) -> bytes:
            info = keywrap.evaluation_info(chain_id, competitions, competition_id, index, int(split), previous_best, content_hash)
            return keywrap.wrap(key, fields["evaluator_key"], info=info)

        self._evaluations[scoring] = previous_best
        return {"test_set_key": wrap(data_key, rules.test_set_hash), "submission_key": wrap(model_key, fields["submission_hash"])}

    def _release_purchase(self, fields: dict[str, Any], emit: Emit) -> dict[str, Any]:
        """Re-wrap a bought submission's model key to its buyer's on-chain key (``purchaseOf``):
        only after the close, and only for a buyer the chain shows paid (a non-zero key)."""
        competition_id, index = fields["competition_id"], fields["index"]
        if index >= 2**32:
            raise ProtocolError("index is a uint32")
        if fields["competition_status"] != CompetitionStatus.CLOSED:
            raise KeyReleaseRefused(f"competition {competition_id} is not closed: no model is sold before the close")
        if fields["buyer_key"] == bytes(32):
            raise KeyReleaseRefused(
                f"{to_checksum_address(fields['buyer'])} has not bought submission {index} of competition {competition_id}: "
                "every unsold model stays sealed"
            )
        key = self._unseal_submission_key(fields, competition_id)
        info = keywrap.purchase_info(
            fields["chain_id"], fields["competitions"], competition_id, index, fields["buyer"], fields["submission_hash"]
        )
        return {"released_key": keywrap.wrap(key, fields["buyer_key"], info=info)}

    # --- evaluator -----------------------------------------------------------------------------

    def _score(self, fields: dict[str, Any], emit: Emit) -> dict[str, Any]:
        """Score one submission on one split (:meth:`evaluation.Evaluator.score`)."""
        assert self._evaluator is not None  # handle() routes this op to an evaluator only
        if fields["split"] not in (s.value for s in Split):
            raise ProtocolError(f"unknown split {fields['split']}")
        if fields["index"] >= 2**32 or fields["previous_best"] >= 2**64:
            raise ProtocolError("index is a uint32 and previous_best a uint64")
        scored = self._evaluator.score(
            chain_id=fields["chain_id"],
            competitions=fields["competitions"],
            rules=evaluation.Rules.from_fields(fields),
            index=fields["index"],
            split=Split(fields["split"]),
            previous_best=fields["previous_best"],
            test_set_key=fields["test_set_key"],
            test_set=fields["test_set"],
            submission_hash=fields["submission_hash"],
            submission_key=fields["submission_key"],
            submission=fields["submission"],
        )
        return scored.to_reply()

    # --- inference ---------------------------------------------------------------------------

    def _inference(self) -> inference.InferenceServer:
        assert self._server is not None  # handle() routes these ops to an inference enclave only
        return self._server

    def _load_model(self, fields: dict[str, Any], emit: Emit) -> dict[str, Any]:
        """Open a released model, check it against the listing's hashes and keep it loaded (LRU)."""
        terms = inference.ListingTerms.from_fields(fields["model_id"], fields)
        loaded = self._inference().load(
            chain_id=fields["chain_id"],
            model_market=fields["model_market"],
            terms=terms,
            released_key=fields["released_key"],
            ciphertext=fields["ciphertext"],
            model_spec=fields["model_spec"],
            measurement=fields["measurement"],
        )
        return {"model_id": terms.model_id, "features": loaded.features, "loaded": len(self._inference().models)}

    def _infer(self, fields: dict[str, Any], emit: Emit) -> dict[str, Any]:
        """Answer a batch of request envelopes for one model (:meth:`inference.InferenceServer.infer`)."""
        items = fields["requests"]
        if sum(len(item["envelope"]) for item in items) > inference.MAX_BATCH_BYTES:
            raise ProtocolError(f"a batch's envelopes hold at most {inference.MAX_BATCH_BYTES} bytes together")
        requests = [
            (
                item["envelope"],
                inference.ChannelState(
                    deposited=item["deposited"],
                    redeemed=item["redeemed"],
                    redeemed_queries=item["redeemed_queries"],
                    allowed=item["allowed"],
                    enclave=item["channel_enclave"],
                ),
            )
            for item in items
        ]
        results = self._inference().infer(
            chain_id=fields["chain_id"], model_market=fields["model_market"], model_id=fields["model_id"], requests=requests
        )
        return {"results": results}

    # --- trainer -----------------------------------------------------------------------------

    def _prepare_job(self, fields: dict[str, Any], emit: Emit) -> dict[str, Any]:
        """Create the job's one-time key pair and certify its public half with this enclave's signer."""
        chain_id, market, job_id = fields["chain_id"], fields["market"], fields["job_id"]
        job_key = self._job_keys.prepare((chain_id, market, job_id))
        return {"job_key": job_key, "signature": jobkeys.sign_job_key(self._account, chain_id, market, job_id, job_key)}

    def _abandon(self, fields: dict[str, Any], emit: Emit) -> dict[str, Any]:
        """Sign ``RunAbandoned(job, this enclave, charges)`` for a job this enclave prepared and
        produced nothing from (a failed run, or one never started); its key is forgotten first, so
        the job never runs here afterwards."""
        chain_id, market, job_id, charges = fields["chain_id"], fields["market"], fields["job_id"], fields["job_charges"]
        if charges > MAX_CHARGES:
            raise ProtocolError(f"field 'job_charges' must be at most {MAX_CHARGES}")
        self._job_keys.abandon((chain_id, market, job_id))
        statement = RunAbandoned(job_id=job_id, enclave=self.signer, charges=charges)
        return {"signature": sign_claim_release(self._account, statement, chain_id=chain_id, market=market)}

    def _plan(self, fields: dict[str, Any], emit: Emit) -> dict[str, Any]:
        """The memory plan a ``run`` of this spec on these datasets would follow, from what is known
        before decryption (the ciphertexts' headers and sizes, the schema declared for them): lets
        the host learn that a job cannot fit before it claims the job or asks for any key.

        Raises:
            MemoryBudgetExceeded: the job cannot fit this enclave's budget.
        """
        spec = ModelSpec.from_bytes(fields["model_spec"])
        schema = _declared_schema(fields["datasets"])
        layouts = []
        for i, item in enumerate(fields["datasets"]):
            header = dataformat.Header.decode(item["header"])
            if header.kind != dataformat.Kind.DATASET:
                raise CiphertextMalformed(f"dataset {i}: the ciphertext holds a {header.kind.name.lower()}, expected a dataset")
            layouts.append(dataformat.Layout.of(header, item["size"]))
        upper = [(lay, max_rows(lay.plaintext_size, schema)) for lay in layouts]
        return self._memory_plan(spec, schema, upper, spec.audit_canaries).to_reply()

    def _memory_plan(
        self, spec: ModelSpec, schema: Schema, datasets: list[tuple[dataformat.Layout, int]], canaries: int
    ) -> memory_budget.MemoryPlan:
        shapes = [memory_budget.DatasetShape(chunk_size=lay.chunk_size, chunks=lay.chunks, rows=rows) for lay, rows in datasets]
        return memory_budget.plan(spec, schema, shapes, budget=self.memory_budget, canaries=canaries)

    def _run(self, fields: dict[str, Any], emit: Emit, read: ReadFn | None = None) -> dict[str, Any]:
        """Train the job on its datasets, read from the host on demand, and sign the receipt.

        Order (``docs/enclave-protocol.md``, "Datasets larger than the enclave"): the spec, the
        declared schema and the memory plan, before the job's key is taken (a job that cannot fit
        leaves its key unused); then every ciphertext once against its content hash (fingerprinting
        its chunks); then the data keys, the packages' headers and an exact plan; then the rows,
        all in memory when they fit, else scanned window by window (:mod:`.trainset`).
        """
        chain_id: int = fields["chain_id"]
        market: bytes = fields["market"]
        job_id: int = fields["job_id"]
        if read is None:
            raise ProtocolError("a run reads its datasets from the host: it needs the host channel")
        raw_spec: bytes = fields["model_spec"]
        if hashlib.sha256(raw_spec).digest() != fields["model_spec_hash"]:
            raise InvalidModelSpec("model spec does not match the job's modelSpecHash")
        spec = ModelSpec.from_bytes(raw_spec)
        training_epsilon = spec.training_epsilon(fields["epsilon"])
        delta = fields["delta"] / DELTA_SCALE
        items = fields["datasets"]
        declared = _declared_schema(items)
        sources = [HostedCiphertext(i, item["content_hash"], item["size"], read) for i, item in enumerate(items)]
        layouts = [source.layout for source in sources]
        # The memory budget, from the declared schema and the ciphertexts' sizes: a job that cannot
        # fit is refused here, before its key is taken or any data key opened.
        self._memory_plan(spec, declared, [(lay, max_rows(lay.plaintext_size, declared)) for lay in layouts], spec.audit_canaries)
        # One claim, one key, one run: the job's key is handed out once, before anything that
        # touches the data can fail, so no request (even a failing one) can be repeated with the
        # same released keys.
        job_key = self._job_keys.take((chain_id, market, job_id))
        fingerprints = Fingerprints()
        for source in sources:
            source.verify(fingerprints)  # the content hash, before any data key is opened
        packages: list[EncryptedPackage] = []
        for i, (source, item) in enumerate(zip(sources, items, strict=True)):
            key = keywrap.unwrap(
                item["released_key"],
                job_key,
                info=keywrap.release_info(chain_id, market, job_id, source.content_hash),
            )
            package = EncryptedPackage.open(source, key)
            if package.schema != declared:
                raise SchemaMismatch(f"dataset {i}: its package's schema {package.schema.hash().hex()} is not the schema declared for it")
            packages.append(package)
        content_hashes = [source.content_hash for source in sources]
        del job_key  # every data key is open; the job's key is of no further use
        canaries = None
        segments: list[Segment] = list(packages)
        if spec.audit_canaries:
            # Random-input canaries and secret coin flips: nothing about them comes from the
            # providers' rows, so the audit below is post-processing of the DP model.
            rng = np.random.default_rng(secrets.randbits(128))
            features, labels = privacy_audit.random_canaries(declared, spec, count=spec.audit_canaries, rng=rng)
            canaries = privacy_audit.CanaryPlan.draw(features, labels, rng)
            segments.append(ArraySegment(canaries.features[canaries.included], canaries.labels[canaries.included], declared))
        exact = [(lay, p.rows) for lay, p in zip(layouts, packages, strict=True)]
        plan = self._memory_plan(spec, declared, exact, sum(s.rows for s in segments[len(packages) :]))
        providers = ScannedRows(packages)
        data: DatasetPackage | ScannedRows
        training_rows: DatasetPackage | ScannedRows
        if plan.mode == "in_memory":
            training_rows = ScannedRows(segments).load()  # one scan; every row checked
            data = training_rows  # the providers' rows, for the private metrics: the canaries come last
            if canaries is not None:
                n = providers.rows
                data = DatasetPackage(features=training_rows.features[:n], labels=training_rows.labels[:n], schema=declared)
        else:
            providers.check()  # one scan; every row checked
            training_rows = ScannedRows(segments, window_steps=plan.window_steps, window_rows=plan.window_rows)
            data = providers
        emit({"type": "progress", "stage": "training", "epoch": 0, "epochs": spec.epochs, "epsilon": 0.0})
        result = train_dp(
            spec,
            training_rows,
            epsilon=training_epsilon,
            delta=delta,
            progress=lambda epoch, epochs, eps: emit(
                {"type": "progress", "stage": "training", "epoch": epoch, "epochs": epochs, "epsilon": eps}
            ),
        )
        epsilon_spent = result.epsilon_spent + spec.metrics_epsilon
        spent_units = epsilon_to_units(result.epsilon_spent) + epsilon_to_units(spec.metrics_epsilon)
        if spent_units > fields["epsilon"]:
            raise ProtocolError(f"accountant reports {epsilon_spent} above the job's epsilon; refusing to sign")
        weights = save_tensors(
            {k: v.detach().contiguous() for k, v in result.model.state_dict().items()},
            metadata={
                inference.WEIGHTS_SPEC_KEY: raw_spec.decode(),
                inference.WEIGHTS_SCHEMA_KEY: canonical_json(data.schema.to_json()).decode(),  # so it can be served as is
                "sterling_job_id": str(job_id),
            },
        )
        sealed = sealing.seal(
            weights,
            fields["consumer_key"],
            info=keywrap.model_info(chain_id, market, job_id),
            kind=dataformat.Kind.MODEL,
            context=model_context(chain_id, market, job_id),
        )
        private = dp_metrics.release(result.model, data, spec.private_metrics, spec.metrics_epsilon) if spec.private_metrics else None
        audit = None
        if canaries is not None:
            audit = canaries.evaluate(
                result.model,
                epsilon_target=result.epsilon_spent,
                delta=delta,
                guess_included=0,
                guess_excluded=spec.audit_canaries // 4,
            ).to_json()
        metrics = canonical_json(
            {
                "accountant": result.accountant,
                "delta": result.delta,
                "epochs": result.epochs,
                "epsilon_spent": epsilon_spent,
                "epsilon_training": result.epsilon_spent,
                "noise_multiplier": result.noise_multiplier,
                "sample_rate": result.sample_rate,
                "steps": result.steps,
                "rows": data.rows,
                "private_metrics": private,
                "privacy_audit": audit,
                "metrics_policy": (
                    "statistics of the providers' rows are released only as private_metrics, with DP noise and their ε "
                    "counted in epsilon_spent; rows is public (it follows from the ciphertext sizes); privacy_audit uses "
                    "random canaries independent of the data and costs no ε; evaluate accuracy on consumer-held data"
                ),
            }
        )
        receipt = Receipt(
            job_id=job_id,
            datasets_hash=datasets_hash(content_hashes),
            model_hash=hashlib.sha256(weights).digest(),
            result_hash=hashlib.sha256(sealed).digest(),
            metrics_hash=hashlib.sha256(metrics).digest(),
            epsilon_spent=spent_units,
        )
        signature = sign_receipt(self._account, receipt, chain_id=chain_id, market=market)
        self._job_keys.produced((chain_id, market, job_id))  # nothing can fail from here to the reply
        return {
            "sealed_model": sealed,
            "metrics": metrics,
            "receipt": {
                "job_id": receipt.job_id,
                "datasets_hash": receipt.datasets_hash,
                "model_hash": receipt.model_hash,
                "result_hash": receipt.result_hash,
                "metrics_hash": receipt.metrics_hash,
                "epsilon_spent": receipt.epsilon_spent,
            },
            "signature": signature,
        }


def _declared_schema(items: list[dict[str, Any]]) -> Schema:
    """The one schema the host declares for a job's datasets (each package's own is checked
    against it once decrypted).

    Raises:
        InvalidDataset: a declared schema is not a valid schema document.
        SchemaMismatch: the datasets are declared with different schemas.
    """
    schemas: list[Schema] = []
    for i, item in enumerate(items):
        try:
            doc = json.loads(item["schema"])
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InvalidDataset(f"dataset {i}: the schema declared for it is not JSON") from e
        if not isinstance(doc, dict):
            raise InvalidDataset(f"dataset {i}: the schema declared for it is not a JSON object")
        schemas.append(Schema.from_json(doc))
    for i, schema in enumerate(schemas[1:], start=1):
        if schema != schemas[0]:
            raise SchemaMismatch(f"dataset {i} has schema {schema.hash().hex()}, dataset 0 has {schemas[0].hash().hex()}")
    return schemas[0]
