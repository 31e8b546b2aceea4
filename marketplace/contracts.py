"""Deployment and typed clients of Sterling's contracts (``EnclaveRegistry`` and ``JobMarket``;
``ModelMarket``'s client is :mod:`marketplace.model_market`).

The clients read the committed ABI + bytecode artifacts (no compiler needed at run time),
return dataclasses instead of raw tuples, and send transactions through :class:`~marketplace.chain.Chain`.
A market pays in the native currency or in one ERC-20 token fixed at deployment
(:meth:`MarketClient.payment_token`); amounts are always in the smallest unit of that currency.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NewType, cast

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils import to_checksum_address
from web3.contract import Contract
from web3.logs import DISCARD
from web3.types import BlockIdentifier

from enclave_worker.trusted.onchain import DELTA_SCALE, EPSILON_SCALE, DatasetStatus, JobStatus, Role
from enclave_worker.trusted.receipt import Receipt

from .abi import load_artifact
from .chain import Chain, TxResult, Wei
from .errors import ConfigError, JobNotReady
from .payments import PaymentCurrency

__all__ = [
    "CERTIFICATE_TYPES",
    "DEFAULT_ADMIN_DELAY",
    "DEFAULT_CLOSE_DELAY",
    "DELTA_SCALE",
    "EPSILON_SCALE",
    "MAX_ADMIN_DELAY",
    "MAX_PRICE_PER_JOB",
    "REGISTRY_DOMAIN_NAME",
    "ZERO_ADDRESS",
    "Certificate",
    "DatasetId",
    "DatasetRecord",
    "DatasetStatus",
    "Deployment",
    "EnclaveRecord",
    "JobId",
    "JobRecord",
    "JobStatus",
    "MarketClient",
    "RegistryClient",
    "ResultRecord",
    "Role",
    "Terms",
    "code_version",
    "delta_units",
    "deploy",
    "epsilon_units",
]
"""The SDK's contract API; the constants and enums that mirror the contracts are re-exported from
:mod:`enclave_worker.trusted.onchain`, their one definition."""

logger = logging.getLogger(__name__)

DatasetId = NewType("DatasetId", int)
JobId = NewType("JobId", int)

DEFAULT_ADMIN_DELAY = 2 * 24 * 3600
"""Seconds a governance handover must wait before the new admin accepts it (two days), the
``adminDelay`` of both contracts' ``AccessControlDefaultAdminRules`` unless :func:`deploy` is told otherwise."""
MAX_ADMIN_DELAY = 2**48 - 1
"""``adminDelay`` is a ``uint48``."""
DEFAULT_CLAIM_LEASE = 300
"""Seconds a claim (or a renewal) holds a job; workers renew at a third of it (``docs/jobs.md``)."""
DEFAULT_UNBONDING_PERIOD = 30 * 24 * 3600
"""Seconds from an operator's unstake request to its withdrawal; no job runs longer than half of it."""
DEFAULT_CLOSE_DELAY = 24 * 3600
"""Seconds from a client's close request on a model-market channel to its reclaim (one day): the
time inference operators have to redeem the vouchers they served against."""
ZERO_ADDRESS = "0x" + "00" * 20
"""``paymentToken`` of a market that pays in the native currency."""
MAX_PRICE_PER_JOB = 2**96 - 1
"""Largest ``pricePerJob`` the market accepts (jobs store price snapshots in 96 bits)."""


def _web3_address(address: str) -> ChecksumAddress:
    """``address`` typed as web3 wants it; web3 itself rejects it at run time unless it is a checksum address."""
    return cast(ChecksumAddress, address)


def _error(name: str, *types: str) -> dict[str, Any]:
    return {"type": "error", "name": name, "inputs": [{"name": f"arg{i}", "type": t} for i, t in enumerate(types)]}


_TOKEN_ERRORS: list[dict[str, Any]] = [
    # OpenZeppelin ERC-20 (ERC-6093 IERC20Errors): what a payment token's transferFrom or
    # approve reverts with; SafeERC20 bubbles them up through the market.
    _error("ERC20InsufficientBalance", "address", "uint256", "uint256"),
    _error("ERC20InvalidSender", "address"),
    _error("ERC20InvalidReceiver", "address"),
    _error("ERC20InsufficientAllowance", "address", "uint256", "uint256"),
    _error("ERC20InvalidApprover", "address"),
    _error("ERC20InvalidSpender", "address"),
]
"""Errors a market call can revert with that are not in the market's own ABI."""


def epsilon_units(epsilon: float) -> int:
    """ε as the contracts' fixed-point integer (micro-ε)."""
    return round(epsilon * EPSILON_SCALE)


def delta_units(delta: float) -> int:
    """δ as the contracts' fixed-point integer (δ × 10¹⁸)."""
    return round(delta * DELTA_SCALE)


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
    """Only allow-listed consumers may buy."""
    models_restricted: bool
    """Only allow-listed model specs may be trained."""
    status: DatasetStatus

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
    tx_hash: str = ""
    """The ``submitResult`` transaction (0x-hex)."""


@dataclass(frozen=True)
class JobRecord:
    """``JobMarket.job(id)``; the result hashes are in :class:`ResultRecord` (the ``ResultSubmitted`` event)."""

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
    """While Open, the last second it can be claimed (0 otherwise)."""
    completion_deadline: int
    epsilon_spent: int
    dataset_ids: tuple[DatasetId, ...]
    prices: tuple[Wei, ...]
    """Each dataset's price snapshot at creation, in ``dataset_ids`` order (what its provider is paid)."""
    lease_expiry: int = 0
    """While Claimed, the second after which the claim lapses unless its operator renews it."""
    charges: int = 0
    """Lapsed claims whose ε was debited (each re-claim after a lapse adds one; ``docs/jobs.md``)."""


@dataclass(frozen=True)
class StakeRecord:
    """``JobMarket.stakeOf(operator)``: what a claim's operator answers with (``docs/jobs.md``)."""

    amount: Wei
    unbonding_end: int
    """0 while the operator may claim; else the second its stake can be withdrawn."""


@dataclass(frozen=True)
class EnclaveRecord:
    """``EnclaveRegistry.enclaveOf(signer)``."""

    signer: str
    role: int
    measurement: bytes
    encryption_key: bytes
    operator: str
    valid_until: int
    revoked: bool
    """Governance revoked this enclave instance for good."""


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
    payment_token: str | None = None
    """The ERC-20 token the market pays in; ``None`` for the native currency."""
    code_version: str = ""
    """:func:`code_version` of the artifacts deployed (empty in records from before it existed)."""
    model_market: str | None = None
    """The ``ModelMarket`` serving sealed models (``None`` in records from before it existed)."""
    competitions: str | None = None
    """The ``CompetitionMarket`` running ML competitions (``None`` in records from before it existed)."""

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Deployment:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, TypeError, json.JSONDecodeError) as e:
            raise ConfigError(f"cannot read deployment {path}: {e}") from e


def code_version() -> str:
    """A short hash of the committed contract bytecode: a recorded deployment of other code is stale."""
    digest = hashlib.sha256()
    for name in ("EnclaveRegistry", "JobMarket", "ModelMarket", "CompetitionMarket"):
        digest.update(bytes.fromhex(load_artifact(name)["bytecode"].removeprefix("0x")))
    return digest.hexdigest()[:16]


def _deploy_one(chain: Chain, account: LocalAccount, name: str, *args: Any) -> tuple[str, TxResult]:
    artifact = load_artifact(name)
    factory = chain.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    chain.register_errors(artifact["abi"])
    constructor = factory.constructor(*args)
    result = chain.transact(account, constructor, name=f"deploy {name}")  # type: ignore[arg-type]  # builds/sends like a ContractFunction
    address = result.receipt["contractAddress"]
    assert address is not None
    return str(address), result


def deploy(
    chain: Chain,
    governance: LocalAccount,
    *,
    payment_token: str | None = None,
    admin_delay: int = DEFAULT_ADMIN_DELAY,
    claim_lease: int = DEFAULT_CLAIM_LEASE,
    unbonding_period: int = DEFAULT_UNBONDING_PERIOD,
    close_delay: int = DEFAULT_CLOSE_DELAY,
) -> Deployment:
    """Deploy the enclave registry, the job market, the model market and the competition market,
    governed by ``governance``.

    Args:
        payment_token: address of the ERC-20 token all payments use; ``None`` for the native currency.
        admin_delay: seconds a governance handover (``beginDefaultAdminTransfer``) must wait.
        claim_lease: seconds a claim or lease renewal holds a job (``JobMarket.claimLease``).
        unbonding_period: seconds from an operator's unstake request to its withdrawal; a job
            may run at most half of it from creation to completion deadline.
        close_delay: seconds from a client's close request on a model-market channel to its
            reclaim (``ModelMarket.closeDelay``).

    Raises:
        ConfigError: ``admin_delay`` is not a ``uint48``, ``close_delay`` not a positive ``uint64``,
            or ``payment_token`` has no code.
        ContractReverted: a constructor reverted.

    Example:
        >>> deployment = deploy(chain, governance, payment_token=usdc.address)  # doctest: +SKIP
    """
    if not 0 <= admin_delay <= MAX_ADMIN_DELAY:
        raise ConfigError(f"admin_delay must fit 48 bits, got {admin_delay}")
    if not 0 < close_delay < 2**64:
        raise ConfigError(f"close_delay must be a positive 64-bit number of seconds, got {close_delay}")
    if payment_token is not None:
        try:
            checksummed = to_checksum_address(payment_token)
        except ValueError as e:
            raise ConfigError(f"payment token {payment_token!r} is not an address") from e
        payment_token = str(checksummed)
        if payment_token == ZERO_ADDRESS:
            payment_token = None
        elif not chain.w3.eth.get_code(checksummed):
            raise ConfigError(f"payment token {payment_token} is not a contract on chain {chain.chain_id}")
    registry, _ = _deploy_one(chain, governance, "EnclaveRegistry", admin_delay, governance.address)
    market, result = _deploy_one(
        chain, governance, "JobMarket", registry, payment_token or ZERO_ADDRESS, admin_delay, governance.address,
        claim_lease, unbonding_period,
    )  # fmt: skip
    model_market, _ = _deploy_one(
        chain, governance, "ModelMarket", registry, market, payment_token or ZERO_ADDRESS, admin_delay, governance.address,
        close_delay,
    )  # fmt: skip
    competitions, _ = _deploy_one(
        chain, governance, "CompetitionMarket", registry, payment_token or ZERO_ADDRESS, admin_delay, governance.address
    )
    deployment = Deployment(
        chain_id=chain.chain_id,
        registry=registry,
        market=market,
        governance=governance.address,
        block=int(result.receipt["blockNumber"]),
        payment_token=payment_token,
        code_version=code_version(),
        model_market=model_market,
        competitions=competitions,
    )
    logger.info(
        "deployed registry %s, market %s, model market %s and competition market %s on chain %d, paying in %s",
        registry, market, model_market, competitions, deployment.chain_id, payment_token or "the native currency",
    )  # fmt: skip
    return deployment


class RegistryClient:
    """Typed access to ``EnclaveRegistry``."""

    def __init__(self, chain: Chain, address: str) -> None:
        artifact = load_artifact("EnclaveRegistry")
        chain.register_errors(artifact["abi"])
        self.chain = chain
        self.contract: Contract = chain.w3.eth.contract(address=_web3_address(address), abi=artifact["abi"])
        self.address = address

    def domain(self) -> dict[str, Any]:
        return {"name": REGISTRY_DOMAIN_NAME, "version": "1", "chainId": self.chain.chain_id, "verifyingContract": self.address}

    def approve_measurement(self, governance: LocalAccount, role: Role, measurement: bytes) -> TxResult:
        return self.chain.transact(governance, self.contract.functions.approveMeasurement(int(role), measurement))

    def revoke_measurement(self, governance: LocalAccount, role: Role, measurement: bytes) -> TxResult:
        return self.chain.transact(governance, self.contract.functions.revokeMeasurement(int(role), measurement))

    def revoke_enclave(self, governance: LocalAccount, signer: str) -> TxResult:
        """Revoke one enclave instance for good (e.g. its key leaked): it stops being active and cannot register again."""
        return self.chain.transact(governance, self.contract.functions.revokeEnclave(signer))

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
        name = f"register {certificate.role.name.lower().replace('_', ' ')}"
        return self.chain.transact(operator, self.contract.functions.register(certificate.as_tuple(), signature), name=name)

    def enclave_of(self, signer: str) -> EnclaveRecord:
        role, measurement, key, operator, valid_until, revoked = self.chain.call(self.contract.functions.enclaveOf(signer))
        return EnclaveRecord(signer, int(role), bytes(measurement), bytes(key), str(operator), int(valid_until), bool(revoked))

    def is_active(self, signer: str, role: Role) -> bool:
        return bool(self.chain.call(self.contract.functions.isActive(signer, int(role))))

    def active_operator(self, signer: str, role: Role) -> str | None:
        """The operator of ``signer`` if it is active in ``role``, else ``None``."""
        operator = str(self.chain.call(self.contract.functions.activeOperator(signer, int(role))))
        return None if int(operator, 16) == 0 else operator

    def active_key_manager_key(self, signer: str) -> bytes:
        """The attested X25519 key of an active key manager (what providers wrap data keys to)."""
        if not self.is_active(signer, Role.KEY_MANAGER):
            raise ConfigError(f"{signer} is not an active key manager enclave")
        return self.enclave_of(signer).encryption_key


class MarketClient(PaymentCurrency):
    """Typed access to ``JobMarket`` (dataset registry, jobs, privacy-budget ledger, payments).

    Amounts (:data:`~marketplace.chain.Wei`) are in the market's payment unit: wei, or the
    smallest unit of its ERC-20 token (see :meth:`payment_token`; the payment currency's methods
    are :class:`~marketplace.payments.PaymentCurrency`'s).
    """

    def __init__(self, chain: Chain, address: str) -> None:
        artifact = load_artifact("JobMarket")
        chain.register_errors(artifact["abi"])
        chain.register_errors(load_artifact("EnclaveRegistry")["abi"])
        chain.register_errors(_TOKEN_ERRORS)
        self.chain = chain
        self.contract: Contract = chain.w3.eth.contract(address=_web3_address(address), abi=artifact["abi"])
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
        allowed_models: tuple[bytes, ...] = (),
    ) -> tuple[DatasetId, TxResult]:
        """List a dataset; empty ``allowed_consumers`` lets anyone buy, empty ``allowed_models`` allows any model spec hash."""
        fn = self.contract.functions.listDataset(
            content_hash, schema_hash, uri, terms.as_tuple(), list(allowed_consumers), list(allowed_models)
        )
        result = self.chain.transact(provider, fn)
        (event,) = self.contract.events.DatasetListed().process_receipt(result.receipt, errors=DISCARD)
        return DatasetId(int(event["args"]["datasetId"])), result

    def update_terms(self, provider: LocalAccount, dataset_id: int, terms: Terms) -> TxResult:
        """Replace the dataset's terms; jobs already created keep the price they paid."""
        return self.chain.transact(provider, self.contract.functions.updateTerms(dataset_id, terms.as_tuple()))

    def top_up_budget(self, provider: LocalAccount, dataset_id: int, amount: int) -> TxResult:
        """Add ``amount`` ε (micro-units) to the dataset's total budget."""
        return self.chain.transact(provider, self.contract.functions.topUpBudget(dataset_id, amount))

    def set_dataset_paused(self, provider: LocalAccount, dataset_id: int, paused: bool) -> TxResult:
        """Pause (no new jobs; running jobs finish) or resume the dataset."""
        return self.chain.transact(provider, self.contract.functions.setDatasetPaused(dataset_id, paused))

    def set_datasheet(self, provider: LocalAccount, dataset_id: int, datasheet_hash: bytes) -> TxResult:
        """Publish (or replace; zero withdraws) the SHA-256 of the dataset's datasheet (docs/datasheets.md)."""
        return self.chain.transact(provider, self.contract.functions.setDatasheet(dataset_id, datasheet_hash))

    def datasheet_of(self, dataset_id: int) -> bytes:
        """The SHA-256 of the dataset's current datasheet (32 zero bytes when it has none)."""
        return bytes(self.contract.functions.datasheetOf(dataset_id).call())

    def delist_dataset(self, provider: LocalAccount, dataset_id: int) -> TxResult:
        """Delist the dataset for good: no new jobs, no further changes; running jobs finish."""
        return self.chain.transact(provider, self.contract.functions.delistDataset(dataset_id))

    def set_access_restrictions(self, provider: LocalAccount, dataset_id: int, *, consumers: bool, models: bool) -> TxResult:
        """Whether only allow-listed consumers (``consumers``) and model specs (``models``) may use the dataset."""
        return self.chain.transact(provider, self.contract.functions.setAccessRestrictions(dataset_id, consumers, models))

    def set_consumers_allowed(self, provider: LocalAccount, dataset_id: int, consumers: Sequence[str], allowed: bool) -> TxResult:
        """Add (``allowed``) or remove accounts on the dataset's consumer allow-list."""
        return self.chain.transact(provider, self.contract.functions.setConsumersAllowed(dataset_id, list(consumers), allowed))

    def set_models_allowed(self, provider: LocalAccount, dataset_id: int, model_spec_hashes: Sequence[bytes], allowed: bool) -> TxResult:
        """Add (``allowed``) or remove model-spec hashes on the dataset's model allow-list."""
        fn = self.contract.functions.setModelsAllowed(dataset_id, list(model_spec_hashes), allowed)
        return self.chain.transact(provider, fn)

    def is_consumer_allowed(self, dataset_id: int, consumer: str) -> bool:
        """Whether ``consumer`` may create jobs on the dataset (``False`` for unknown datasets)."""
        return bool(self.chain.call(self.contract.functions.isConsumerAllowed(dataset_id, consumer)))

    def is_model_allowed(self, dataset_id: int, model_spec_hash: bytes) -> bool:
        """Whether jobs training ``model_spec_hash`` may use the dataset (``False`` for unknown datasets)."""
        return bool(self.chain.call(self.contract.functions.isModelAllowed(dataset_id, model_spec_hash)))

    def dataset(self, dataset_id: int) -> DatasetRecord:
        d = self.chain.call(self.contract.functions.dataset(dataset_id))
        provider, content_hash, schema_hash, uri, terms, spent, reserved, restricted, models_restricted, status = d
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
            models_restricted=bool(models_restricted),
            status=DatasetStatus(int(status)),
        )

    def remaining_epsilon(self, dataset_id: int) -> int:
        return int(self.chain.call(self.contract.functions.remainingEpsilon(dataset_id)))

    def dataset_count(self) -> int:
        return int(self.chain.call(self.contract.functions.datasetCount()))

    # --- jobs -------------------------------------------------------------------------------

    def create_job(
        self,
        consumer: LocalAccount,
        *,
        dataset_ids: Sequence[int],
        model_spec_hash: bytes,
        epsilon: int,
        delta: int,
        consumer_key: bytes,
        worker_fee: Wei,
        claim_deadline: int,
        completion_deadline: int,
        max_total_price: Wei | None = None,
    ) -> tuple[JobId, TxResult]:
        """Create a job (``IJobMarket.createJob``), paying at most ``max_total_price``.

        ``max_total_price`` defaults to the datasets' current prices plus ``worker_fee``, so a price
        raised before the transaction lands makes it revert instead of paying more. In native
        mode the transaction sends ``max_total_price`` and the market credits any change to the
        consumer's pending withdrawal; in token mode the market is first approved for
        ``max_total_price`` (if its allowance is lower) and pulls exactly the price.

        Raises:
            ContractReverted: a dataset's terms refuse the job, or ``JobMarketPriceAboveLimit``
                when the price exceeds ``max_total_price`` (nothing is paid or reserved).
        """
        if max_total_price is None:
            max_total_price = Wei(self.price_of(dataset_ids) + worker_fee)
        request = (
            list(dataset_ids), model_spec_hash, epsilon, delta, consumer_key, worker_fee, max_total_price,
            claim_deadline, completion_deadline,
        )  # fmt: skip
        value = self._pay(consumer, max_total_price)
        result = self.chain.transact(consumer, self.contract.functions.createJob(request), value=value)
        (event,) = self.contract.events.JobCreated().process_receipt(result.receipt, errors=DISCARD)
        return JobId(int(event["args"]["jobId"])), result

    def cancel_job(self, consumer: LocalAccount, job_id: int) -> TxResult:
        """Cancel an Open job: its ε is released and the full escrow credited back to the consumer."""
        return self.chain.transact(consumer, self.contract.functions.cancelJob(job_id))

    def price_of(self, dataset_ids: Sequence[int]) -> Wei:
        """Sum of the datasets' current prices per job."""
        return Wei(sum(self.dataset(i).terms.price_per_job for i in dataset_ids))

    def claim_job(self, operator: LocalAccount, job_id: int, enclave: str) -> TxResult:
        """Claim an Open job, or re-claim one whose lease lapsed (that charges the lapsed claim its ε).

        Raises:
            ContractReverted: e.g. ``JobMarketLeaseActive``, ``JobMarketStakeTooLow``,
                ``JobMarketBudgetExhausted`` (a re-claim finds no ε left).
        """
        return self.chain.transact(operator, self.contract.functions.claimJob(job_id, enclave))

    def renew_lease(self, operator: LocalAccount, job_id: int) -> TxResult:
        """Extend the holder's claim by ``claimLease`` seconds (``JobMarketLeaseLapsed`` once lapsed)."""
        return self.chain.transact(operator, self.contract.functions.renewLease(job_id))

    def release_claim(self, sender: LocalAccount, job_id: int, key_manager_signature: bytes) -> TxResult:
        """Give a claimed job back (Open, nothing charged) on the key manager's no-release statement."""
        return self.chain.transact(sender, self.contract.functions.releaseClaim(job_id, key_manager_signature))

    def claim_lease(self) -> int:
        """Seconds a claim or renewal holds a job."""
        return int(self.chain.call(self.contract.functions.claimLease()))

    def unbonding_period(self) -> int:
        """Seconds from an unstake request to the withdrawal; also the longest job."""
        return int(self.chain.call(self.contract.functions.unbondingPeriod()))

    def deposit_stake(self, operator: LocalAccount, amount: Wei) -> TxResult:
        """Add ``amount`` to ``operator``'s stake (in token mode the market is approved first if needed)."""
        value = self._pay(operator, amount)
        return self.chain.transact(operator, self.contract.functions.depositStake(amount), value=value)

    def request_unstake(self, operator: LocalAccount) -> TxResult:
        """Start unbonding ``operator``'s whole stake; it claims no more jobs."""
        return self.chain.transact(operator, self.contract.functions.requestUnstake())

    def withdraw_stake(self, operator: LocalAccount) -> TxResult:
        """Move an unbonded stake to the pending withdrawal (then :meth:`withdraw`)."""
        return self.chain.transact(operator, self.contract.functions.withdrawStake())

    def stake_of(self, operator: str) -> StakeRecord:
        amount, unbonding_end = self.chain.call(self.contract.functions.stakeOf(operator))
        return StakeRecord(Wei(int(amount)), int(unbonding_end))

    def total_stake(self) -> Wei:
        return Wei(int(self.chain.call(self.contract.functions.totalStake())))

    def ensure_stake(self, operator: LocalAccount, minimum: Wei) -> TxResult | None:
        """Top ``operator``'s stake up to ``minimum`` (``None`` if it already has that much)."""
        current = self.stake_of(operator.address).amount
        if current >= minimum:
            return None
        return self.deposit_stake(operator, Wei(minimum - current))

    def submit_result(self, sender: LocalAccount, receipt: Receipt, signature: bytes) -> TxResult:
        return self.chain.transact(sender, self.contract.functions.submitResult(receipt.job_id, receipt.as_tuple(), signature))

    def expire_job(self, sender: LocalAccount, job_id: int) -> TxResult:
        return self.chain.transact(sender, self.contract.functions.expireJob(job_id))

    def withdraw(self, account: LocalAccount) -> tuple[Wei, TxResult]:
        """Send ``account`` all its pending payments (native currency or the payment token).

        Returns:
            The amount withdrawn (from the ``Withdrawn`` event) and the transaction.

        Raises:
            ContractReverted: ``JobMarketNothingToWithdraw`` when nothing is pending.
        """
        result = self.chain.transact(account, self.contract.functions.withdraw())
        (event,) = self.contract.events.Withdrawn().process_receipt(result.receipt, errors=DISCARD)
        return Wei(int(event["args"]["amount"])), result

    def pending_withdrawal(self, account: str) -> Wei:
        return Wei(int(self.chain.call(self.contract.functions.pendingWithdrawal(account))))

    def job(self, job_id: int, *, block: BlockIdentifier = "latest") -> JobRecord:
        """Job ``job_id`` as of ``block`` (the latest by default)."""
        j = self.chain.call(self.contract.functions.job(job_id), block=block)
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
            dataset_ids=tuple(DatasetId(int(i)) for i in j[13]),
            prices=tuple(Wei(int(p)) for p in j[14]),
            lease_expiry=int(j[15]),
            charges=int(j[16]),
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
            tx_hash="0x" + bytes(logs[-1]["transactionHash"]).hex(),
        )

    def job_count(self) -> int:
        return int(self.chain.call(self.contract.functions.jobCount()))

    def locked_escrow(self) -> Wei:
        """Sum of the escrow of all Open and Claimed jobs."""
        return Wei(int(self.chain.call(self.contract.functions.lockedEscrow())))

    # --- emergency stop ---------------------------------------------------------------------

    def pause(self, account: LocalAccount) -> TxResult:
        """Emergency stop (``PAUSER_ROLE``): no new listings, jobs, claims or settlements."""
        return self.chain.transact(account, self.contract.functions.pause())

    def unpause(self, account: LocalAccount) -> TxResult:
        """End an emergency stop (``DEFAULT_ADMIN_ROLE``)."""
        return self.chain.transact(account, self.contract.functions.unpause())

    def paused(self) -> bool:
        return bool(self.chain.call(self.contract.functions.paused()))

    def open_jobs(self, from_block: int = 0) -> list[JobId]:
        """Ids of jobs created since ``from_block`` that are still Open."""
        logs = self.contract.events.JobCreated().get_logs(from_block=from_block)
        ids = [JobId(int(log["args"]["jobId"])) for log in logs]
        return [i for i in ids if self.job(i).status is JobStatus.OPEN]
