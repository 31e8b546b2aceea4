"""Deployment and typed clients of Sterling's contracts (``EnclaveRegistry`` and ``JobMarket``).

The clients read the committed ABI + bytecode artifacts (no compiler needed at run time),
return dataclasses instead of raw tuples, and send transactions through :class:`~marketplace.chain.Chain`.
"""

from __future__ import annotations

import enum
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NewType

from eth_account.signers.local import LocalAccount
from web3.contract import Contract
from web3.logs import DISCARD

from enclave_worker.trusted.receipt import DELTA_SCALE, EPSILON_SCALE, Receipt
from enclave_worker.trusted.roles import Role

from .chain import Chain, TxResult, Wei
from .compile import load_artifact
from .errors import ConfigError, JobNotReady

logger = logging.getLogger(__name__)

DatasetId = NewType("DatasetId", int)
JobId = NewType("JobId", int)


def epsilon_units(epsilon: float) -> int:
    """ε as the contracts' fixed-point integer (micro-ε)."""
    return round(epsilon * EPSILON_SCALE)


def delta_units(delta: float) -> int:
    """δ as the contracts' fixed-point integer (δ × 10¹⁸)."""
    return round(delta * DELTA_SCALE)


class JobStatus(enum.IntEnum):
    """Mirror of ``JobMarket.JobStatus``."""

    NONE = 0
    OPEN = 1
    CLAIMED = 2
    COMPLETED = 3
    EXPIRED = 4


@dataclass(frozen=True)
class Terms:
    """A dataset's on-chain terms, in contract units."""

    price_per_job: Wei
    max_epsilon_per_job: int
    total_epsilon_budget: int
    max_delta: int
    expiry: int = 0

    def as_tuple(self) -> tuple[int, int, int, int, int]:
        return (self.price_per_job, self.max_epsilon_per_job, self.total_epsilon_budget, self.max_delta, self.expiry)


@dataclass(frozen=True)
class DatasetRecord:
    """``JobMarket.dataset(id)``."""

    dataset_id: DatasetId
    provider: str
    content_hash: bytes
    schema_hash: bytes
    uri: str
    terms: Terms
    epsilon_spent: int
    epsilon_reserved: int
    restricted: bool

    @property
    def epsilon_remaining(self) -> int:
        return self.terms.total_epsilon_budget - self.epsilon_spent - self.epsilon_reserved


@dataclass(frozen=True)
class ResultRecord:
    """A job's ``ResultSubmitted`` event."""

    job_id: JobId
    enclave: str
    model_hash: bytes
    result_hash: bytes
    metrics_hash: bytes
    epsilon_spent: int
    block_number: int


@dataclass(frozen=True)
class JobRecord:
    """``JobMarket.job(id)``."""

    job_id: JobId
    consumer: str
    status: JobStatus
    enclave: str
    operator: str
    model_spec_hash: bytes
    epsilon: int
    delta: int
    consumer_key: bytes
    escrow: Wei
    worker_fee: Wei
    claim_deadline: int
    completion_deadline: int
    epsilon_spent: int
    model_hash: bytes
    result_hash: bytes
    dataset_ids: tuple[DatasetId, ...]


@dataclass(frozen=True)
class EnclaveRecord:
    """``EnclaveRegistry.enclaveOf(signer)``."""

    signer: str
    role: int
    measurement: bytes
    encryption_key: bytes
    operator: str
    valid_until: int


@dataclass(frozen=True)
class Certificate:
    """An enclave registration certificate (EIP-712 ``Certificate``), signed by a verifier."""

    role: Role
    measurement: bytes
    signer: str
    encryption_key: bytes
    operator: str
    valid_until: int

    def message(self) -> dict[str, Any]:
        return {
            "role": int(self.role),
            "measurement": self.measurement,
            "signer": self.signer,
            "encryptionKey": self.encryption_key,
            "operator": self.operator,
            "validUntil": self.valid_until,
        }

    def as_tuple(self) -> tuple[int, bytes, str, bytes, str, int]:
        return (int(self.role), self.measurement, self.signer, self.encryption_key, self.operator, self.valid_until)


CERTIFICATE_TYPES: dict[str, list[dict[str, str]]] = {
    "Certificate": [
        {"name": "role", "type": "uint8"},
        {"name": "measurement", "type": "bytes32"},
        {"name": "signer", "type": "address"},
        {"name": "encryptionKey", "type": "bytes32"},
        {"name": "operator", "type": "address"},
        {"name": "validUntil", "type": "uint64"},
    ]
}
REGISTRY_DOMAIN_NAME = "SterlingEnclaveRegistry"


@dataclass(frozen=True)
class Deployment:
    """Where Sterling's contracts live on one chain."""

    chain_id: int
    registry: str
    market: str
    governance: str
    block: int

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Deployment:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, TypeError, json.JSONDecodeError) as e:
            raise ConfigError(f"cannot read deployment {path}: {e}") from e


def _deploy_one(chain: Chain, account: LocalAccount, name: str, *args: Any) -> tuple[str, TxResult]:
    artifact = load_artifact(name)
    factory = chain.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    chain.register_errors(artifact["abi"])
    result = chain.transact(account, factory.constructor(*args), name=f"deploy {name}")  # type: ignore[arg-type]
    address = result.receipt["contractAddress"]
    assert address is not None
    return str(address), result


def deploy(chain: Chain, governance: LocalAccount) -> Deployment:
    """Deploy the enclave registry and the job market, governed by ``governance``."""
    registry, _ = _deploy_one(chain, governance, "EnclaveRegistry", governance.address)
    market, result = _deploy_one(chain, governance, "JobMarket", registry)
    deployment = Deployment(
        chain_id=chain.chain_id,
        registry=registry,
        market=market,
        governance=governance.address,
        block=int(result.receipt["blockNumber"]),
    )
    logger.info("deployed registry %s and market %s on chain %d", registry, market, deployment.chain_id)
    return deployment


class RegistryClient:
    """Typed access to ``EnclaveRegistry``."""

    def __init__(self, chain: Chain, address: str) -> None:
        artifact = load_artifact("EnclaveRegistry")
        chain.register_errors(artifact["abi"])
        self.chain = chain
        self.contract: Contract = chain.w3.eth.contract(address=address, abi=artifact["abi"])  # type: ignore[call-overload]
        self.address = address

    def domain(self) -> dict[str, Any]:
        return {"name": REGISTRY_DOMAIN_NAME, "version": "1", "chainId": self.chain.chain_id, "verifyingContract": self.address}

    def approve_measurement(self, governance: LocalAccount, role: Role, measurement: bytes) -> TxResult:
        return self.chain.transact(governance, self.contract.functions.approveMeasurement(int(role), measurement))

    def revoke_measurement(self, governance: LocalAccount, role: Role, measurement: bytes) -> TxResult:
        return self.chain.transact(governance, self.contract.functions.revokeMeasurement(int(role), measurement))

    def is_measurement_approved(self, role: Role, measurement: bytes) -> bool:
        return bool(self.chain.call(self.contract.functions.isMeasurementApproved(int(role), measurement)))

    def add_verifier(self, governance: LocalAccount, verifier: str) -> TxResult:
        role = self.chain.call(self.contract.functions.VERIFIER_ROLE())
        return self.chain.transact(governance, self.contract.functions.grantRole(role, verifier), name="grantRole(VERIFIER)")

    def is_verifier(self, account: str) -> bool:
        """Whether ``account`` holds ``VERIFIER_ROLE`` (its certificates are accepted)."""
        role = self.chain.call(self.contract.functions.VERIFIER_ROLE())
        return bool(self.chain.call(self.contract.functions.hasRole(role, account)))

    def register(self, operator: LocalAccount, certificate: Certificate, signature: bytes) -> TxResult:
        name = f"register {'trainer' if certificate.role is Role.TRAINER else 'key manager'}"
        return self.chain.transact(operator, self.contract.functions.register(certificate.as_tuple(), signature), name=name)

    def enclave_of(self, signer: str) -> EnclaveRecord:
        role, measurement, key, operator, valid_until = self.chain.call(self.contract.functions.enclaveOf(signer))
        return EnclaveRecord(signer, int(role), bytes(measurement), bytes(key), str(operator), int(valid_until))

    def is_active(self, signer: str, role: Role) -> bool:
        return bool(self.chain.call(self.contract.functions.isActive(signer, int(role))))

    def active_key_manager_key(self, signer: str) -> bytes:
        """The attested X25519 key of an active key manager (what providers wrap data keys to)."""
        if not self.is_active(signer, Role.KEY_MANAGER):
            raise ConfigError(f"{signer} is not an active key manager enclave")
        return self.enclave_of(signer).encryption_key


class MarketClient:
    """Typed access to ``JobMarket`` (dataset registry, jobs, privacy-budget ledger, payments)."""

    def __init__(self, chain: Chain, address: str) -> None:
        artifact = load_artifact("JobMarket")
        chain.register_errors(artifact["abi"])
        chain.register_errors(load_artifact("EnclaveRegistry")["abi"])
        self.chain = chain
        self.contract: Contract = chain.w3.eth.contract(address=address, abi=artifact["abi"])  # type: ignore[call-overload]
        self.address = address

    @property
    def address_bytes(self) -> bytes:
        return bytes.fromhex(self.address[2:])

    # --- datasets ---------------------------------------------------------------------------

    def list_dataset(
        self,
        provider: LocalAccount,
        *,
        content_hash: bytes,
        schema_hash: bytes,
        uri: str,
        terms: Terms,
        allowed_consumers: tuple[str, ...] = (),
    ) -> tuple[DatasetId, TxResult]:
        fn = self.contract.functions.listDataset(content_hash, schema_hash, uri, terms.as_tuple(), list(allowed_consumers))
        result = self.chain.transact(provider, fn)
        (event,) = self.contract.events.DatasetListed().process_receipt(result.receipt, errors=DISCARD)
        return DatasetId(int(event["args"]["datasetId"])), result

    def dataset(self, dataset_id: int) -> DatasetRecord:
        d = self.chain.call(self.contract.functions.dataset(dataset_id))
        provider, content_hash, schema_hash, uri, terms, spent, reserved, restricted = d
        return DatasetRecord(
            dataset_id=DatasetId(dataset_id),
            provider=str(provider),
            content_hash=bytes(content_hash),
            schema_hash=bytes(schema_hash),
            uri=str(uri),
            terms=Terms(Wei(int(terms[0])), int(terms[1]), int(terms[2]), int(terms[3]), int(terms[4])),
            epsilon_spent=int(spent),
            epsilon_reserved=int(reserved),
            restricted=bool(restricted),
        )

    def remaining_epsilon(self, dataset_id: int) -> int:
        return int(self.chain.call(self.contract.functions.remainingEpsilon(dataset_id)))

    # --- jobs -------------------------------------------------------------------------------

    def create_job(
        self,
        consumer: LocalAccount,
        *,
        dataset_ids: list[int],
        model_spec_hash: bytes,
        epsilon: int,
        delta: int,
        consumer_key: bytes,
        worker_fee: Wei,
        claim_deadline: int,
        completion_deadline: int,
        value: Wei,
    ) -> tuple[JobId, TxResult]:
        fn = self.contract.functions.createJob(
            dataset_ids, model_spec_hash, epsilon, delta, consumer_key, worker_fee, claim_deadline, completion_deadline
        )
        result = self.chain.transact(consumer, fn, value=value)
        (event,) = self.contract.events.JobCreated().process_receipt(result.receipt, errors=DISCARD)
        return JobId(int(event["args"]["jobId"])), result

    def price_of(self, dataset_ids: list[int]) -> Wei:
        """Sum of the datasets' current prices per job."""
        return Wei(sum(self.dataset(i).terms.price_per_job for i in dataset_ids))

    def claim_job(self, operator: LocalAccount, job_id: int, enclave: str) -> TxResult:
        return self.chain.transact(operator, self.contract.functions.claimJob(job_id, enclave))

    def submit_result(self, sender: LocalAccount, receipt: Receipt, signature: bytes) -> TxResult:
        return self.chain.transact(sender, self.contract.functions.submitResult(receipt.job_id, receipt.as_tuple(), signature))

    def expire_job(self, sender: LocalAccount, job_id: int) -> TxResult:
        return self.chain.transact(sender, self.contract.functions.expireJob(job_id))

    def withdraw(self, account: LocalAccount) -> tuple[Wei, TxResult]:
        amount = self.pending_withdrawal(account.address)
        return amount, self.chain.transact(account, self.contract.functions.withdraw())

    def pending_withdrawal(self, account: str) -> Wei:
        return Wei(int(self.chain.call(self.contract.functions.pendingWithdrawal(account))))

    def job(self, job_id: int) -> JobRecord:
        j = self.chain.call(self.contract.functions.job(job_id))
        return JobRecord(
            job_id=JobId(job_id),
            consumer=str(j[0]),
            status=JobStatus(int(j[1])),
            enclave=str(j[2]),
            operator=str(j[3]),
            model_spec_hash=bytes(j[4]),
            epsilon=int(j[5]),
            delta=int(j[6]),
            consumer_key=bytes(j[7]),
            escrow=Wei(int(j[8])),
            worker_fee=Wei(int(j[9])),
            claim_deadline=int(j[10]),
            completion_deadline=int(j[11]),
            epsilon_spent=int(j[12]),
            model_hash=bytes(j[13]),
            result_hash=bytes(j[14]),
            dataset_ids=tuple(DatasetId(int(i)) for i in j[15]),
        )

    def result_submitted(self, job_id: int) -> ResultRecord:
        """The ``ResultSubmitted`` event of ``job_id``: what its receipt committed to.

        Raises:
            JobNotReady: no result has been submitted for the job.
        """
        logs = self.contract.events.ResultSubmitted().get_logs(from_block=0, argument_filters={"jobId": job_id})
        if not logs:
            raise JobNotReady(f"job {job_id} has no submitted result")
        args = logs[-1]["args"]
        return ResultRecord(
            job_id=JobId(int(args["jobId"])),
            enclave=str(args["enclave"]),
            model_hash=bytes(args["modelHash"]),
            result_hash=bytes(args["resultHash"]),
            metrics_hash=bytes(args["metricsHash"]),
            epsilon_spent=int(args["epsilonSpent"]),
            block_number=int(logs[-1]["blockNumber"]),
        )

    def job_count(self) -> int:
        return int(self.chain.call(self.contract.functions.jobCount()))

    def open_jobs(self, from_block: int = 0) -> list[JobId]:
        """Ids of jobs created since ``from_block`` that are still Open."""
        logs = self.contract.events.JobCreated().get_logs(from_block=from_block)
        ids = [JobId(int(log["args"]["jobId"])) for log in logs]
        return [i for i in ids if self.job(i).status is JobStatus.OPEN]
