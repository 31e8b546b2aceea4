"""``sterling keymanager``: the key manager and the attestation verifier as a service of their own
(issue 17), for workers and gateways on other machines.

The process launches a key-manager enclave on the simulated platform (development only: on AWS
Nitro the hardware's attestation replaces the platform key), certifies it with its own
:class:`~oracle.verifier.AttestationVerifier` (the account governance granted the verifier role),
registers it on-chain for the operator, and serves over HTTP what a trainer worker, a provider's
deposit and a worker's enclave registration need (clients: :mod:`enclave_worker.remote`). When the
deployment record names a model market and a competition market, it serves the key manager's
model-key and competition-key sides too, over the blob folder it shares with the gateway (clients:
:mod:`enclave_worker.remote_keys`); without them those routes answer 404 ``NotServed``.
``sterling up`` serves the same routes (:func:`served`) from its own key manager to its worker
processes:

=========================== ===========================================================================
``GET /health``              signer, registered or not, chain head, confirmations (503 if the chain is down)
``GET /info``                signer, encryption key, confirmations, chain id, market, registry, and the
                             model market and competition market served (``null``: that side is not)
``POST /attestation/challenge`` a single-use nonce
``POST /attestation/certify``   an enclave's registration certificate and the verifier's signature
``POST /releases``           a dataset key re-wrapped to a trainer enclave's per-job key
``POST /claim-releases``     the key manager's ``ClaimRelease`` signature for a job's claim
``POST /deposits``           a provider's wrapped data key
``POST /model-deposits``     a model owner's wrapped model key
``POST /job-models``         a completed job's model taken for serving (sealed to the key manager, or a ``copy``)
``POST /model-releases``     a listed model's key re-wrapped to an active inference enclave
``POST /test-set-deposits``  an organizer's wrapped test-set key
``POST /admissions``         a participant's sealed model checked against the rules, and its admission
``POST /job-admissions``     a completed job's model admitted as its consumer's entry
``POST /evaluation-releases`` a test set's and a submission's keys, wrapped to an evaluator for one scoring
``POST /purchase-releases``  a bought submission's key, wrapped to the key its buyer gave on-chain
=========================== ===========================================================================

A refusal is ``{"error": <class name>, "detail": <message>}`` with the status of
:data:`enclave_worker.remote.REFUSALS`; a malformed request (bad JSON, bad hex, wrong sizes) is 422
``{"error": "RequestInvalid", ...}`` and reaches neither the enclave nor the state folder. A
release is wrapped to the trainer enclave's per-job key, so no secret crosses the wire in clear;
across machines put TLS in front of the port all the same (``docs/operations.md``).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import uvicorn
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, SecretStr, StrictInt
from pydantic_settings import BaseSettings, SettingsConfigDict

from enclave_worker.competition_keys import CompetitionKeyService
from enclave_worker.keymanager import MAX_WRAPPED_KEY_BYTES, JobKey, KeyManagerService
from enclave_worker.model_keys import ModelKeyService
from enclave_worker.remote import REQUEST_INVALID, NotServed, certificate_json, decode_claims, from_hex, refusal_of, to_hex
from enclave_worker.sim_platform import MAX_EVIDENCE_BYTES, SimPlatform
from enclave_worker.trusted.onchain import Role, Split
from marketplace.blobstore import BlobStore
from marketplace.competing import AdmittedSubmission
from marketplace.errors import ConfigError, ContractReverted, SterlingError
from marketplace.serving import JobModel
from oracle.verifier import AttestationVerifier
from sterling.localnet import attest_and_register
from sterling.standalone import ChainView, service_account

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8100
STATE_LOCK_WAIT_SECONDS = 30.0
"""Seconds a starting key manager waits for another one to let go of its state folder."""
SERVER_STOP_SECONDS = 10.0
"""Seconds :func:`served` waits for its server thread to stop."""
ENV_PREFIX = "STERLING_KEYMANAGER_"
MAX_ID = 2**256 - 1

_HEX = r"^0x([0-9a-fA-F]{2})*$"
Hex32 = Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{64}$", description="32 bytes, 0x-hex")]
Signature = Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{130}$", description="a 65-byte signature, 0x-hex")]
Address = Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{40}$", description="an address, 0x-hex")]
Id = Annotated[StrictInt, Field(ge=0, le=MAX_ID)]
SubmissionIndex = Annotated[StrictInt, Field(ge=0, lt=2**32, description="a submission's index in its competition")]
WrappedKey = Annotated[str, Field(pattern=_HEX, min_length=4, max_length=2 + 2 * MAX_WRAPPED_KEY_BYTES, description="0x-hex")]


# --- settings ----------------------------------------------------------------------------------


class KeyManagerSettings(BaseSettings):
    """The service's settings: flags, then ``STERLING_KEYMANAGER_<FIELD>``, then the defaults.

    The two account keys are secrets: each comes from its environment variable
    (``STERLING_KEYMANAGER_OPERATOR_KEY``, ``STERLING_KEYMANAGER_VERIFIER_KEY``, hex) or from a file
    holding the hex key (``operator_key_file``, ``verifier_key_file``), never from a command-line
    argument (visible to every user of the machine in the process list).
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    state_dir: Path = Field(default=Path(".sterling-keymanager"), description="the key manager's sealed deposits and audit log")
    blobs: Path | None = Field(
        default=None,
        description="the blob folder shared with the gateway: model, copy and test-set ciphertexts and jobs' sealed results "
        "(default: <state_dir>/blobs)",
    )
    platform_key: Path | None = Field(
        default=None, description="the simulated platform's Ed25519 key (development only; default: <state_dir>/sim-platform.pem)"
    )
    host: str = Field(default="127.0.0.1", description="address to listen on")
    port: int = Field(default=DEFAULT_PORT, ge=1, le=65535, description="port to listen on")
    confirmations: int = Field(default=0, ge=0, description="blocks a claim must have on top of it before a key is released for it")
    operator_key: SecretStr | None = Field(default=None, description="the operator account's private key (hex)")
    operator_key_file: Path | None = Field(default=None, description="a file holding the operator account's private key (hex)")
    verifier_key: SecretStr | None = Field(default=None, description="the verifier account's private key (hex)")
    verifier_key_file: Path | None = Field(default=None, description="a file holding the verifier account's private key (hex)")

    @property
    def sim_platform_key(self) -> Path:
        return self.platform_key if self.platform_key is not None else self.state_dir / "sim-platform.pem"

    @property
    def blob_dir(self) -> Path:
        return self.blobs if self.blobs is not None else self.state_dir / "blobs"

    def operator(self) -> LocalAccount:
        """The account the key-manager enclave is registered for.

        Raises:
            ConfigError: neither or both of the key and its file are given, or the key is not a key.
        """
        return _account("operator", self.operator_key, self.operator_key_file)

    def verifier(self) -> LocalAccount:
        """The account governance granted the verifier role (it signs registration certificates).

        Raises:
            ConfigError: as :meth:`operator`.
        """
        return _account("verifier", self.verifier_key, self.verifier_key_file)


def get_settings(**flags: Any) -> KeyManagerSettings:
    """The settings, with ``flags`` (``None``: not given) over the environment.

    Raises:
        ConfigError: an invalid value (the message names the setting).
    """
    from pydantic import ValidationError

    try:
        return KeyManagerSettings(**{name: value for name, value in flags.items() if value is not None})
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"key manager settings: {problems}") from e


def _account(role: str, key: SecretStr | None, key_file: Path | None) -> LocalAccount:
    secret = key.get_secret_value() if key is not None else None
    return service_account(role, secret, key_file, variable=f"{ENV_PREFIX}{role.upper()}_KEY")


# --- the HTTP API ------------------------------------------------------------------------------


class JobKeyIn(BaseModel):
    public_key: Hex32 = Field(description="the trainer enclave's one-time X25519 key for the job")
    signature: Signature = Field(description="the trainer enclave's signature over it")


class ReleaseCreate(BaseModel):
    job_id: Id
    dataset_id: Id
    trainer: Address = Field(description="the trainer enclave's signer, holding the job's claim")
    job_key: JobKeyIn


class ReleasePublic(BaseModel):
    released_key: str = Field(description="the dataset's key HPKE-wrapped to the job key, 0x-hex")


class ClaimReleaseCreate(BaseModel):
    job_id: Id
    abandoned: str = Field(
        default="0x", pattern=r"^0x([0-9a-fA-F]{130})?$", description="empty, or the holder's 65-byte RunAbandoned signature"
    )


class ClaimReleasePublic(BaseModel):
    signature: str = Field(description="the key manager's 65-byte ClaimRelease signature, 0x-hex")


class DepositCreate(BaseModel):
    content_hash: Hex32 = Field(description="SHA-256 of the dataset ciphertext")
    wrapped_key: str = Field(
        pattern=_HEX, min_length=4, max_length=2 + 2 * MAX_WRAPPED_KEY_BYTES, description="the data key HPKE-wrapped to this key manager"
    )
    provider: Address
    signature: Signature = Field(description="the provider's EIP-712 Deposit signature")


class DepositPublic(BaseModel):
    content_hash: str
    provider: str
    key_manager: str


class ModelDepositCreate(BaseModel):
    content_hash: Hex32 = Field(description="SHA-256 of the model ciphertext")
    wrapped_key: WrappedKey = Field(description="the model key HPKE-wrapped to this key manager")
    owner: Address = Field(description="the model's owner: it lists the model on-chain")
    signature: Signature = Field(description="the owner's EIP-712 Deposit under the model market's domain")


class ModelDepositPublic(BaseModel):
    content_hash: str
    owner: str
    key_manager: str


class JobModelCopyIn(BaseModel):
    content_hash: Hex32 = Field(description="SHA-256 of the copy's ciphertext, in the blob store")
    wrapped_key: WrappedKey = Field(description="the copy's key HPKE-wrapped to this key manager")
    signature: Signature = Field(description="the job's consumer's EIP-712 Deposit under the model market's domain")


class JobModelCreate(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    job_id: Id
    copy_: JobModelCopyIn | None = Field(default=None, alias="copy", description="the consumer's copy, if the job sealed the model to it")


class JobModelPublic(BaseModel):
    job_id: int
    content_hash: str = Field(description="SHA-256 of the model ciphertext in the blob store")
    weights_hash: str = Field(description="SHA-256 of the weights (the receipt's modelHash)")
    owner: str = Field(description="the job's consumer: the only account whose listing gets the key")


class ModelReleaseCreate(BaseModel):
    model_id: Id
    enclave: Address = Field(description="the inference enclave's signer")


class TestSetDepositCreate(BaseModel):
    content_hash: Hex32 = Field(description="SHA-256 of the test set ciphertext, in the blob store")
    wrapped_key: WrappedKey = Field(description="the test set's key HPKE-wrapped to this key manager")
    organizer: Address
    signature: Signature = Field(description="the organizer's EIP-712 Deposit under the competition market's domain")


class TestSetDepositPublic(BaseModel):
    content_hash: str
    schema_hash: str
    rows: int
    key_manager: str


class AdmissionCreate(BaseModel):
    competition_id: Id
    content_hash: Hex32 = Field(description="SHA-256 of the model ciphertext, in the blob store")
    wrapped_key: WrappedKey = Field(description="the model key wrapped with the submission binding")
    participant: Address
    signature: Signature = Field(description="the participant's EIP-712 Deposit under the competition market's domain")


class JobAdmissionCreate(BaseModel):
    competition_id: Id
    job_id: Id


class AdmissionPublic(BaseModel):
    competition_id: int
    participant: str
    content_hash: str
    weights_hash: str
    admission: str = Field(description="the key manager's EIP-712 Admission signature")
    key_manager: str


class EvaluationReleaseCreate(BaseModel):
    competition_id: Id
    index: SubmissionIndex
    split: Literal["public", "private"]
    evaluator: Address = Field(description="the evaluator enclave's signer")


class EvaluationReleasePublic(BaseModel):
    test_set_key: str = Field(description="the test set's key HPKE-wrapped to the evaluator, 0x-hex")
    submission_key: str = Field(description="the submission's key HPKE-wrapped to the evaluator, 0x-hex")
    previous_best: int = Field(description="the leaderboard best the scoring is bound to (0 for a private scoring)")


class PurchaseReleaseCreate(BaseModel):
    competition_id: Id
    index: SubmissionIndex
    buyer: Address


class ChallengePublic(BaseModel):
    nonce: str = Field(description="32 bytes, single use, valid for five minutes")


class CertifyCreate(BaseModel):
    evidence: str = Field(pattern=_HEX, min_length=4, max_length=2 + 2 * MAX_EVIDENCE_BYTES, description="the platform-signed evidence")
    claims: dict[Annotated[str, Field(max_length=64)], StrictInt | Annotated[str, Field(pattern=_HEX, max_length=2 + 2 * 256)]] = Field(
        max_length=16, description="the enclave's attest reply: integers as numbers, bytes as 0x-hex"
    )
    operator: Address


class CertificatePublic(BaseModel):
    role: int
    measurement: str
    signer: str
    encryption_key: str
    operator: str
    valid_until: int


class CertifyPublic(BaseModel):
    certificate: CertificatePublic
    signature: str


class InfoPublic(BaseModel):
    signer: str
    encryption_key: str
    confirmations: int
    chain_id: int
    market: str
    registry: str
    verifier: str
    model_market: str | None = Field(description="the model market whose keys this key manager serves (null: none)")
    competitions: str | None = Field(description="the competition market whose keys this key manager serves (null: none)")


class HealthPublic(BaseModel):
    status: str
    signer: str
    registered: bool | None
    head_block: int | None
    confirmations: int
    error: str | None = None


class ErrorPublic(BaseModel):
    error: str
    detail: str


@dataclass(frozen=True)
class KeyManagerNode:
    """What one ``sterling keymanager`` process serves (``None``: that side of the key manager is not served)."""

    view: ChainView
    key_manager: KeyManagerService
    verifier: AttestationVerifier
    model_keys: ModelKeyService | None = None
    competition_keys: CompetitionKeyService | None = None


def create_app(node: KeyManagerNode) -> FastAPI:
    """The service's HTTP API over ``node`` (no work at import time; the process builds it once)."""
    app = FastAPI(title="Sterling key manager", version="1", docs_url=None, redoc_url=None)
    km, view = node.key_manager, node.view
    verifier_lock = threading.Lock()  # the verifier's nonce table is not shared between threads otherwise
    errors: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorPublic, "description": text}
        for code, text in ((400, "refused: bad signature, key or sizes"), (403, "refused"), (409, "deposited already"), (422, "malformed"))
    }
    side_errors = errors | {404: {"model": ErrorPublic, "description": "this key manager does not serve that side (NotServed)"}}

    def model_keys() -> ModelKeyService:
        if node.model_keys is None:
            raise NotServed("this key manager serves no model market")
        return node.model_keys

    def competition_keys() -> CompetitionKeyService:
        if node.competition_keys is None:
            raise NotServed("this key manager serves no competition market")
        return node.competition_keys

    @app.exception_handler(SterlingError)
    def refused(request: Request, error: SterlingError) -> JSONResponse:
        matched = refusal_of(error)
        if matched is None:
            logger.error("%s %s failed: %s: %s", request.method, request.url.path, type(error).__name__, error)
            return JSONResponse({"error": type(error).__name__, "detail": str(error)}, status_code=500)
        family, status = matched
        content: dict[str, Any] = {"error": family.__name__, "detail": str(error)}
        if isinstance(error, ContractReverted):
            args = [to_hex(a) if isinstance(a, bytes) else a for a in error.error_args]
            content["revert"] = {"error": error.error, "args": args, "function": error.function}
        logger.info("%s %s refused: %s", request.method, request.url.path, family.__name__)
        return JSONResponse(content, status_code=status)

    @app.exception_handler(Exception)
    def failed(request: Request, error: Exception) -> JSONResponse:
        logger.error("%s %s failed: %s", request.method, request.url.path, type(error).__name__)  # uvicorn logs the traceback
        return JSONResponse({"error": "InternalError", "detail": "the key manager failed to answer; its log says why"}, status_code=500)

    @app.exception_handler(RequestValidationError)
    def malformed(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in error.errors())
        return JSONResponse({"error": REQUEST_INVALID, "detail": problems}, status_code=422)

    @app.get("/health", response_model=HealthPublic, responses={503: {"model": HealthPublic, "description": "the chain is unreachable"}})
    def health() -> HealthPublic | JSONResponse:
        """Serving, the enclave's registration and the chain head; 503 when the chain does not answer."""
        try:
            head = int(view.chain.w3.eth.block_number)
            registered = view.registry.is_active(km.signer, Role.KEY_MANAGER)
        except Exception as e:  # noqa: BLE001 - any failure to read the chain is the answer
            down = HealthPublic(
                status="chain unreachable", signer=km.signer, registered=None, head_block=None, confirmations=km.confirmations,
                error=type(e).__name__,
            )  # fmt: skip
            return JSONResponse(down.model_dump(), status_code=503)
        return HealthPublic(status="ok", signer=km.signer, registered=registered, head_block=head, confirmations=km.confirmations)

    @app.get("/info", response_model=InfoPublic)
    def info() -> InfoPublic:
        """The key manager enclave's keys and the deployment it serves (read once by clients)."""
        return InfoPublic(
            signer=km.signer, encryption_key=to_hex(km.enclave.process.encryption_key), confirmations=km.confirmations,
            chain_id=view.chain.chain_id, market=view.market.address, registry=view.registry.address,
            verifier=node.verifier.signer.address,
            model_market=node.model_keys.model_market.address if node.model_keys is not None else None,
            competitions=node.competition_keys.competitions.address if node.competition_keys is not None else None,
        )  # fmt: skip

    @app.post("/attestation/challenge", response_model=ChallengePublic)
    def challenge() -> ChallengePublic:
        with verifier_lock:
            return ChallengePublic(nonce=to_hex(node.verifier.challenge()))

    @app.post("/attestation/certify", response_model=CertifyPublic, responses=errors)
    def certify(body: CertifyCreate) -> CertifyPublic:
        """Check ``sim`` evidence against the nonce, the pinned platform key and the approved measurements; sign a certificate."""
        claims = decode_claims(body.claims)
        with verifier_lock:
            certificate, signature = node.verifier.certify(evidence=from_hex(body.evidence), claims=claims, operator=body.operator)
        return CertifyPublic(certificate=CertificatePublic.model_validate(certificate_json(certificate)), signature=to_hex(signature))

    @app.post("/releases", response_model=ReleasePublic, responses=errors)
    def release(body: ReleaseCreate) -> ReleasePublic:
        """Release a dataset's key to the trainer enclave holding the job's claim, wrapped to its per-job key; once per claim."""
        job_key = JobKey(public_key=from_hex(body.job_key.public_key), signature=from_hex(body.job_key.signature))
        released = km.release(job_id=body.job_id, dataset_id=body.dataset_id, trainer=body.trainer, job_key=job_key)
        return ReleasePublic(released_key=to_hex(released))

    @app.post("/claim-releases", response_model=ClaimReleasePublic, responses=errors)
    def claim_release(body: ClaimReleaseCreate) -> ClaimReleasePublic:
        """Sign ``ClaimRelease`` for the job's claim if no key went out under it (or its holder abandoned the run)."""
        return ClaimReleasePublic(signature=to_hex(km.claim_release_statement(body.job_id, abandoned=from_hex(body.abandoned))))

    @app.post("/deposits", status_code=201, response_model=DepositPublic, responses=errors)
    def deposit(body: DepositCreate) -> DepositPublic:
        """Keep a provider's data key wrapped to this key manager, sealed; never replaced."""
        provider = str(to_checksum_address(body.provider))
        km.deposit(from_hex(body.content_hash), from_hex(body.wrapped_key), provider=provider, signature=from_hex(body.signature))
        return DepositPublic(content_hash=body.content_hash.lower(), provider=provider, key_manager=km.signer)

    # --- the model-key side (404 NotServed without a model market) ---

    @app.post("/model-deposits", status_code=201, response_model=ModelDepositPublic, responses=side_errors)
    def deposit_model(body: ModelDepositCreate) -> ModelDepositPublic:
        """Keep a model owner's key wrapped to this key manager, sealed with the owner; never replaced."""
        keys, owner = model_keys(), str(to_checksum_address(body.owner))
        keys.deposit(from_hex(body.content_hash), from_hex(body.wrapped_key), owner=owner, signature=from_hex(body.signature))
        return ModelDepositPublic(content_hash=body.content_hash.lower(), owner=owner, key_manager=km.signer)

    @app.post("/job-models", status_code=201, response_model=JobModelPublic, responses=side_errors)
    def take_job_model(body: JobModelCreate) -> JobModelPublic:
        """Take a completed job's model for serving: sealed to this key manager by the job, or a ``copy`` from its consumer."""
        keys, copy = model_keys(), body.copy_
        if copy is None:
            taken = keys.deposit_from_job(body.job_id)
        else:
            taken = keys.deposit_job_model_copy(
                body.job_id, from_hex(copy.content_hash), from_hex(copy.wrapped_key), signature=from_hex(copy.signature)
            )
        return _job_model(taken)

    @app.post("/model-releases", response_model=ReleasePublic, responses=side_errors)
    def release_model(body: ModelReleaseCreate) -> ReleasePublic:
        """Release a listed model's key, re-wrapped to an active inference enclave's on-chain key."""
        released = model_keys().release(model_id=body.model_id, enclave=str(to_checksum_address(body.enclave)))
        return ReleasePublic(released_key=to_hex(released))

    # --- the competition side (404 NotServed without a competition market) ---

    @app.post("/test-set-deposits", status_code=201, response_model=TestSetDepositPublic, responses=side_errors)
    def deposit_test_set(body: TestSetDepositCreate) -> TestSetDepositPublic:
        """Open an organizer's test set (its ciphertext in the blob store) and keep its key, sealed; never replaced."""
        keys, organizer = competition_keys(), str(to_checksum_address(body.organizer))
        deposit = keys.deposit_test_set(
            from_hex(body.content_hash), from_hex(body.wrapped_key), organizer=organizer, signature=from_hex(body.signature)
        )
        return TestSetDepositPublic(
            content_hash=to_hex(deposit.content_hash), schema_hash=to_hex(deposit.schema_hash), rows=deposit.rows, key_manager=km.signer
        )

    @app.post("/admissions", status_code=201, response_model=AdmissionPublic, responses=side_errors)
    def admit(body: AdmissionCreate) -> AdmissionPublic:
        """Check a participant's sealed model against the competition's rules and sign its admission (a repeat: the same)."""
        admitted = competition_keys().admit(
            body.competition_id, from_hex(body.content_hash), from_hex(body.wrapped_key),
            participant=str(to_checksum_address(body.participant)), signature=from_hex(body.signature),
        )  # fmt: skip
        return _admission(admitted, km.signer)

    @app.post("/job-admissions", status_code=201, response_model=AdmissionPublic, responses=side_errors)
    def admit_job_model(body: JobAdmissionCreate) -> AdmissionPublic:
        """Admit a completed job's model, sealed to this key manager, as its consumer's entry (a repeat: the same)."""
        return _admission(competition_keys().admit_job_model(body.competition_id, body.job_id), km.signer)

    @app.post("/evaluation-releases", response_model=EvaluationReleasePublic, responses=side_errors)
    def release_evaluation(body: EvaluationReleaseCreate) -> EvaluationReleasePublic:
        """Release a test set's and a submission's keys to an active evaluator, for the one scoring due."""
        released = competition_keys().release_evaluation(
            body.competition_id, body.index, Split[body.split.upper()], evaluator=str(to_checksum_address(body.evaluator))
        )
        return EvaluationReleasePublic(
            test_set_key=to_hex(released.test_set_key), submission_key=to_hex(released.submission_key),
            previous_best=released.previous_best,
        )  # fmt: skip

    @app.post("/purchase-releases", response_model=ReleasePublic, responses=side_errors)
    def release_purchase(body: PurchaseReleaseCreate) -> ReleasePublic:
        """Release a bought submission's key, wrapped to the key its buyer gave on-chain with the payment."""
        released = competition_keys().release_purchase(body.competition_id, body.index, buyer=str(to_checksum_address(body.buyer)))
        return ReleasePublic(released_key=to_hex(released))

    return app


def _job_model(taken: JobModel) -> JobModelPublic:
    return JobModelPublic(
        job_id=taken.job_id, content_hash=to_hex(taken.content_hash), weights_hash=to_hex(taken.weights_hash), owner=taken.owner
    )


def _admission(admitted: AdmittedSubmission, key_manager: str) -> AdmissionPublic:
    return AdmissionPublic(
        competition_id=admitted.competition_id, participant=admitted.participant, content_hash=to_hex(admitted.content_hash),
        weights_hash=to_hex(admitted.weights_hash), admission=to_hex(admitted.admission), key_manager=key_manager,
    )  # fmt: skip


# --- the process -------------------------------------------------------------------------------


@contextmanager
def started_node(view: ChainView, settings: KeyManagerSettings) -> Iterator[KeyManagerNode]:
    """Launch the key-manager enclave, certify and register it, and yield the node; the enclave stops on exit.

    The node serves the model-key side when the deployment record names a model market, and the
    competition side when it names a competition market, both over the blob folder ``settings.blob_dir``.

    Raises:
        ConfigError: a key is missing, or the verifier account does not hold the verifier role.
        AttestationRejected: governance has not approved the enclave's measurement for the key-manager role.
    """
    operator, verifier_key = settings.operator(), settings.verifier()
    if not view.registry.is_verifier(verifier_key.address):
        raise ConfigError(f"{verifier_key.address} is not a verifier of registry {view.registry.address}: governance grants the role")
    with _state_locked(settings.state_dir / "key-manager", wait=STATE_LOCK_WAIT_SECONDS):
        yield from _node(view, settings, operator, verifier_key)


@contextmanager
def _state_locked(folder: Path, *, wait: float) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (its ``.lock`` file) while the block runs, waiting up to
    ``wait`` seconds for another process to let go: two key managers appending to one audit log
    would fork its hash chain (a restarted ``sterling up`` starts a new one while the old one stops).

    Raises:
        ConfigError: another process kept the lock for ``wait`` seconds.
    """
    folder.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise ConfigError(
                        f"another key manager has used the state folder {folder} for {wait:.0f} s: stop it first "
                        "(two key managers must never share their sealed deposits and audit log)"
                    ) from None
                time.sleep(0.1)
        yield
    finally:
        os.close(descriptor)  # and with it the lock


def _node(view: ChainView, settings: KeyManagerSettings, operator: LocalAccount, verifier_key: LocalAccount) -> Iterator[KeyManagerNode]:
    platform = SimPlatform.load_or_create(settings.sim_platform_key)
    enclave = platform.launch(Role.KEY_MANAGER)
    try:
        verifier = AttestationVerifier(signer=verifier_key, registry=view.registry, platform_public_key=platform.public_key)
        tx = attest_and_register(enclave, verifier, view.registry, operator)
        key_manager = KeyManagerService(
            enclave, market=view.market, registry=view.registry, state_dir=settings.state_dir / "key-manager",
            confirmations=settings.confirmations,
        )  # fmt: skip
        logger.info(
            "key manager enclave %s registered for operator %s in tx %s (measurement %s, sim attestation: development only)",
            key_manager.signer, operator.address, tx.tx_hash, enclave.measurement.hex(),
        )  # fmt: skip
        model_market, competitions = view.model_market(), view.competitions()
        blobs = BlobStore(settings.blob_dir) if model_market is not None or competitions is not None else None
        model_keys = ModelKeyService(key_manager, model_market, blobs=blobs) if model_market is not None else None
        competition_keys = (
            CompetitionKeyService(key_manager, competitions, blobs=blobs) if competitions is not None and blobs is not None else None
        )
        logger.info(
            "serving the model-key side: %s; the competition side: %s; blobs in %s",
            model_market.address if model_market else "no", competitions.address if competitions else "no", settings.blob_dir,
        )  # fmt: skip
        yield KeyManagerNode(
            view=view, key_manager=key_manager, verifier=verifier, model_keys=model_keys, competition_keys=competition_keys
        )
    finally:
        enclave.close()


@contextmanager
def served(node: KeyManagerNode, *, host: str = "127.0.0.1", port: int) -> Iterator[str]:
    """Serve ``node``'s routes from a thread of this process until the block ends; yields their URL.

    ``sterling up`` serves its in-process key manager so to its ``sterling worker`` processes.

    Raises:
        ConfigError: the routes could not be served (the port is taken, say).
    """
    server = uvicorn.Server(uvicorn.Config(create_app(node), host=host, port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name="sterling-keymanager-routes", daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise ConfigError(f"cannot serve the key manager's routes on {host}:{port}")
            time.sleep(0.02)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(SERVER_STOP_SECONDS)


def run_keymanager(view: ChainView, settings: KeyManagerSettings, *, stop: threading.Event) -> None:
    """Serve the key manager and the verifier on ``settings.host:port`` until ``stop``.

    Raises:
        ConfigError, AttestationRejected: as :func:`started_node`; nothing is served then.
    """
    with started_node(view, settings) as node:
        app = create_app(node)
        server = uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning", lifespan="off"))

        def exit_on_stop() -> None:
            stop.wait()
            server.should_exit = True

        threading.Thread(target=exit_on_stop, name="sterling-keymanager-stop", daemon=True).start()
        logger.info("serving key manager %s on http://%s:%d", node.key_manager.signer, settings.host, settings.port)
        server.run()
        logger.info("key manager %s stopped", node.key_manager.signer)
