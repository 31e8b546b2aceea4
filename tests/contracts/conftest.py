"""Fixtures and helpers for the contract tests: an embedded py-evm chain, the contracts deployed
from the committed artifacts, EIP-712 signing, and custom-error decoding.

Every test runs against a chain snapshot taken after the session-wide deployment and reverted
afterwards, so tests are independent and deployment happens once.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError
from web3.logs import DISCARD
from web3.providers.eth_tester import EthereumTesterProvider

from enclave_worker.trusted.onchain import DELTA_SCALE, EPSILON_SCALE, Role  # noqa: F401 - the tests import DELTA_SCALE from here
from enclave_worker.trusted.receipt import RECEIPT_TYPES
from marketplace import chain as chain_mod
from marketplace.abi import load_artifact
from marketplace.chain import Chain, ErrorDecoder
from marketplace.contracts import CERTIFICATE_TYPES, DatasetStatus, JobStatus

ROLE_TRAINER = int(Role.TRAINER)
ROLE_KEY_MANAGER = int(Role.KEY_MANAGER)
ZERO_ADDRESS = "0x" + "00" * 20

TRAINER_MEASUREMENT = keccak(b"sterling trainer v1")
KEY_MANAGER_MEASUREMENT = keccak(b"sterling key manager v1")
ONE_YEAR = 365 * 24 * 3600
ETHER = 10**18

# Short names for the chain's lifecycle enums (defined once, in the SDK).
STATUS_NONE, STATUS_OPEN, STATUS_CLAIMED, STATUS_COMPLETED, STATUS_EXPIRED, STATUS_CANCELLED = (
    JobStatus.NONE,
    JobStatus.OPEN,
    JobStatus.CLAIMED,
    JobStatus.COMPLETED,
    JobStatus.EXPIRED,
    JobStatus.CANCELLED,
)
DATASET_ACTIVE, DATASET_PAUSED, DATASET_DELISTED = DatasetStatus.ACTIVE, DatasetStatus.PAUSED, DatasetStatus.DELISTED
# Governance handover delay the tests deploy with (seconds).
ADMIN_DELAY = 3 * 24 * 3600
# Claim lease and unbonding period the tests deploy with (seconds). The lease is shorter than the
# default 7,200-second completion window of :func:`job_request`, so leases can lapse in tests.
CLAIM_LEASE = 600
UNBONDING_PERIOD = 30 * 24 * 3600
# Stake each operator deposits at deployment: native currency (wei) or payment-token units. It
# covers the Σ prices of any job the tests create (16 datasets at 0.1 ether is 1.6 ether).
STAKE = 10 * ETHER
TOKEN_STAKE = 10**11


# --------------------------------------------------------------------------- revert decoding


def _all_abis() -> list[list[dict[str, Any]]]:
    return [
        load_artifact("EnclaveRegistry")["abi"],
        load_artifact("JobMarket")["abi"],
        load_artifact("PaymentReceiverMock", test=True)["abi"],
        load_artifact("TestStablecoin", test=True)["abi"],
        load_artifact("HookToken", test=True)["abi"],
    ]


ERRORS = ErrorDecoder(_all_abis())
"""Every custom error of the deployed contracts and the test helpers (plus Error and Panic)."""


_REVERTED_BYTES = "execution reverted: b"


def revert_data(exc: BaseException) -> bytes:
    """Extract the raw revert data from an exception raised by web3 (eth-tester or JSON-RPC)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ContractLogicError) and isinstance(seen.data, str):
            return bytes.fromhex(seen.data.removeprefix("0x"))
        if seen.args:
            first = seen.args[0]
            if isinstance(first, Exception) and first.args and isinstance(first.args[0], bytes):
                return first.args[0]
            if isinstance(first, bytes):
                return first
            # web3's eth-tester provider re-raises with the bytes' repr in the message.
            if isinstance(first, str) and first.startswith(_REVERTED_BYTES):
                data = ast.literal_eval(first.removeprefix("execution reverted: "))
                if isinstance(data, bytes):
                    return data
        seen = seen.__cause__ or seen.__context__
    raise AssertionError(f"no revert data in {exc!r}")


def decode_revert(data: bytes) -> tuple[str, tuple[Any, ...]]:
    """Decode revert ``data`` against every known error selector into (name, args)."""
    reverted = ERRORS.decode(data)
    if reverted.error == "UnknownRevert":
        raise AssertionError(f"unknown revert selector in {data.hex()}")
    return reverted.error, reverted.error_args


def _normalise(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("0x") and len(value) == 42:
        return value.lower()
    return value


def expect_revert(send: Callable[[], Any], name: str, *args: Any) -> None:
    """Assert that ``send()`` reverts with custom error ``name`` carrying exactly ``args``.

    Addresses are compared case-insensitively.
    """
    with pytest.raises(Exception) as info:  # noqa: PT011 - the type varies by provider
        send()
    got_name, got_args = decode_revert(revert_data(info.value))
    assert (got_name, tuple(_normalise(a) for a in got_args)) == (
        name,
        tuple(_normalise(a) for a in args),
    )


# --------------------------------------------------------------------------- chain fixtures


@dataclass(frozen=True)
class Actors:
    """Accounts of the test chain, by role."""

    governance: str
    operator: str
    providers: tuple[str, str, str]
    consumer: str
    other_operator: str
    stranger: str
    verifier: LocalAccount
    trainer: LocalAccount
    other_trainer: LocalAccount
    key_manager: LocalAccount


@dataclass(frozen=True)
class Deployment:
    """The deployed contracts and the actors that set them up."""

    w3: Web3
    registry: Contract
    market: Contract
    actors: Actors
    token: Contract | None = None  # the payment token; None for the native currency

    def now(self) -> int:
        """Timestamp of the pending block (the one the next transaction lands in)."""
        return int(self.w3.eth.get_block("pending")["timestamp"])

    def travel_to(self, timestamp: int) -> None:
        """Move the pending block's time to ``timestamp`` (forward only)."""
        self.w3.provider.ethereum_tester.time_travel(timestamp)  # type: ignore[attr-defined]


def transact(w3: Web3, call: Any, sender: str, value: int = 0) -> Any:
    """Send ``call`` from ``sender`` and return the receipt, asserting success."""
    tx_hash = call.transact({"from": sender, "value": value})
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
    assert receipt["status"] == 1
    return receipt


def deploy(w3: Web3, name: str, sender: str, *args: Any, test: bool = False) -> Contract:
    """Deploy contract ``name`` from its committed artifact."""
    artifact = load_artifact(name, test=test)
    factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    receipt = transact(w3, factory.constructor(*args), sender)
    return w3.eth.contract(address=receipt["contractAddress"], abi=artifact["abi"])


def domain(w3: Web3, contract: Contract, name: str) -> dict[str, Any]:
    """EIP-712 domain of ``contract``."""
    return {
        "name": name,
        "version": "1",
        "chainId": w3.eth.chain_id,
        "verifyingContract": contract.address,
    }


def certificate(
    signer: str,
    operator: str,
    valid_until: int,
    *,
    role: int = ROLE_TRAINER,
    measurement: bytes = TRAINER_MEASUREMENT,
    encryption_key: bytes = b"\x42" * 32,
) -> dict[str, Any]:
    """A Certificate as a dict keyed by the EIP-712 field names."""
    return {
        "role": role,
        "measurement": measurement,
        "signer": signer,
        "encryptionKey": encryption_key,
        "operator": operator,
        "validUntil": valid_until,
    }


def cert_tuple(cert: dict[str, Any]) -> tuple[Any, ...]:
    """The Certificate dict as the ABI tuple, in struct order."""
    return tuple(cert[f["name"]] for f in CERTIFICATE_TYPES["Certificate"])


def sign_certificate(d: Deployment, key: LocalAccount, cert: dict[str, Any]) -> bytes:
    """EIP-712 signature of ``cert`` by ``key`` under the registry's domain."""
    signed = Account.sign_typed_data(
        key.key, domain(d.w3, d.registry, "SterlingEnclaveRegistry"), CERTIFICATE_TYPES, cert
    )
    return bytes(signed.signature)


def register(d: Deployment, enclave: LocalAccount, operator: str, **kwargs: Any) -> Any:
    """Register ``enclave`` (run by ``operator``) with a verifier-signed certificate."""
    valid_until = kwargs.pop("valid_until", d.now() + ONE_YEAR)
    cert = certificate(enclave.address, operator, valid_until, **kwargs)
    signature = sign_certificate(d, d.actors.verifier, cert)
    return transact(d.w3, d.registry.functions.register(cert_tuple(cert), signature), operator)


def receipt_for(
    d: Deployment, job_id: int, epsilon_spent: int, *, datasets_hash: bytes | None = None
) -> dict[str, Any]:
    """A Receipt dict for ``job_id`` with fixed model/result/metrics hashes."""
    return {
        "jobId": job_id,
        "datasetsHash": datasets_hash
        if datasets_hash is not None
        else bytes(d.market.functions.datasetsHashOf(job_id).call()),
        "modelHash": keccak(b"model"),
        "resultHash": keccak(b"result"),
        "metricsHash": keccak(b"metrics"),
        "epsilonSpent": epsilon_spent,
    }


def receipt_tuple(receipt: dict[str, Any]) -> tuple[Any, ...]:
    """The Receipt dict as the ABI tuple, in struct order."""
    return tuple(receipt[f["name"]] for f in RECEIPT_TYPES["Receipt"])


def sign_receipt(d: Deployment, key: LocalAccount, receipt: dict[str, Any]) -> bytes:
    """EIP-712 signature of ``receipt`` by ``key`` under the market's domain."""
    signed = Account.sign_typed_data(
        key.key, domain(d.w3, d.market, "SterlingJobMarket"), RECEIPT_TYPES, receipt
    )
    return bytes(signed.signature)


def terms(
    *,
    price: int = ETHER // 10,
    max_epsilon: int = 2 * EPSILON_SCALE,
    budget: int = 10 * EPSILON_SCALE,
    max_delta: int = 10**13,
    expiry: int = 0,
) -> tuple[int, int, int, int, int]:
    """A Terms tuple (pricePerJob, maxEpsilonPerJob, totalEpsilonBudget, maxDelta, expiry)."""
    return (price, max_epsilon, budget, max_delta, expiry)


def list_dataset(
    d: Deployment,
    provider: str,
    *,
    content: bytes = b"data",
    allowed: list[str] | None = None,
    models: list[bytes] | None = None,
    **term_kwargs: Any,
) -> int:
    """List a dataset from ``provider`` and return its id."""
    call = d.market.functions.listDataset(
        keccak(content), keccak(b"schema"), "blob://" + content.hex(), terms(**term_kwargs), allowed or [], models or []
    )
    dataset_id = int(call.call({"from": provider}))
    transact(d.w3, call, provider)
    return dataset_id


MODEL_SPEC = keccak(b"model spec")


def job_request(
    d: Deployment,
    dataset_ids: list[int],
    *,
    epsilon: int = EPSILON_SCALE,
    delta: int = 10**13,
    worker_fee: int = ETHER // 100,
    max_total_price: int | None = None,
    claim_window: int = 3600,
    completion_window: int = 7200,
    model_spec: bytes = MODEL_SPEC,
) -> tuple[Any, ...]:
    """A JobRequest tuple; ``max_total_price`` defaults to the current price (prices + fee)."""
    if max_total_price is None:
        max_total_price = worker_fee + sum(d.market.functions.dataset(i).call()[4][0] for i in dataset_ids)
    now = d.now()
    return (
        dataset_ids,
        model_spec,
        epsilon,
        delta,
        keccak(b"consumer key"),
        worker_fee,
        max_total_price,
        now + claim_window,
        now + completion_window,
    )


def create_job(
    d: Deployment,
    dataset_ids: list[int],
    *,
    consumer: str | None = None,
    value: int | None = None,
    **request_kwargs: Any,
) -> int:
    """Create a job; native mode pays ``value`` (default: the request's maxTotalPrice)."""
    consumer = consumer or d.actors.consumer
    request = job_request(d, dataset_ids, **request_kwargs)
    if value is None:
        value = request[6] if d.token is None else 0
    call = d.market.functions.createJob(request)
    job_id = int(call.call({"from": consumer, "value": value}))
    transact(d.w3, call, consumer, value)
    return job_id


@pytest.fixture(scope="session")
def w3() -> Web3:
    """An in-process py-evm chain."""
    return Web3(EthereumTesterProvider())


@pytest.fixture(scope="session")
def sdk_chain() -> Chain:
    """An in-process py-evm chain driven through the SDK (:class:`marketplace.chain.Chain`: local
    keys sign, reverts arrive as ``ContractReverted``), shared by the tests that use the SDK's
    clients; each module deploys its own contracts on it and reverts its tests by snapshot."""
    return chain_mod.embedded()


@pytest.fixture(scope="session")
def actors(w3: Web3) -> Actors:
    """Funded chain accounts plus off-chain signing keys (verifier, enclaves)."""
    return actors_of(w3)


def actors_of(w3: Web3) -> Actors:
    """The actors on ``w3``'s funded accounts, with fixed off-chain signing keys."""
    a = w3.eth.accounts
    return Actors(
        governance=a[0],
        operator=a[1],
        providers=(a[2], a[3], a[4]),
        consumer=a[5],
        other_operator=a[6],
        stranger=a[7],
        verifier=Account.from_key(keccak(b"verifier")),
        trainer=Account.from_key(keccak(b"trainer enclave")),
        other_trainer=Account.from_key(keccak(b"other trainer enclave")),
        key_manager=Account.from_key(keccak(b"key manager enclave")),
    )


@pytest.fixture(scope="session")
def deployment(w3: Web3, actors: Actors) -> Deployment:
    """Registry and market deployed from committed artifacts; trainer measurement approved,
    one verifier granted and the trainer enclave registered to ``actors.operator``."""
    return deploy_all(w3, actors)


def deploy_all(w3: Web3, actors: Actors, *, token: Contract | None = None, stake: bool = True) -> Deployment:
    """Deploy registry and market (paying in ``token`` if given) with :data:`CLAIM_LEASE` and
    :data:`UNBONDING_PERIOD`, approve the measurements, grant the verifier, register the trainer
    enclave to ``actors.operator`` and, if ``stake``, have both operators deposit a stake
    (:data:`STAKE` wei, or :data:`TOKEN_STAKE` token units minted to them)."""
    registry = deploy(w3, "EnclaveRegistry", actors.governance, ADMIN_DELAY, actors.governance)
    token_address = token.address if token is not None else ZERO_ADDRESS
    market = deploy(
        w3,
        "JobMarket",
        actors.governance,
        registry.address,
        token_address,
        ADMIN_DELAY,
        actors.governance,
        CLAIM_LEASE,
        UNBONDING_PERIOD,
    )
    d = Deployment(w3=w3, registry=registry, market=market, actors=actors, token=token)
    gov = actors.governance
    transact(w3, registry.functions.approveMeasurement(ROLE_TRAINER, TRAINER_MEASUREMENT), gov)
    transact(w3, registry.functions.approveMeasurement(ROLE_KEY_MANAGER, KEY_MANAGER_MEASUREMENT), gov)
    verifier_role = registry.functions.VERIFIER_ROLE().call()
    transact(w3, registry.functions.grantRole(verifier_role, actors.verifier.address), gov)
    register(d, actors.trainer, actors.operator)
    if stake:
        for operator in (actors.operator, actors.other_operator):
            deposit_stake(d, operator, STAKE if token is None else TOKEN_STAKE)
    return d


def deposit_stake(d: Deployment, operator: str, amount: int) -> Any:
    """``operator`` deposits ``amount`` of stake: sent as value in native mode; in token mode
    minted to it (test tokens mint freely) and approved first."""
    if d.token is None:
        return transact(d.w3, d.market.functions.depositStake(amount), operator, amount)
    transact(d.w3, d.token.functions.mint(operator, amount), d.actors.governance)
    transact(d.w3, d.token.functions.approve(d.market.address, amount), operator)
    return transact(d.w3, d.market.functions.depositStake(amount), operator)


def stake_of(d: Deployment, operator: str) -> tuple[int, int]:
    """``stakeOf(operator)``: (amount, unbondingEnd)."""
    amount, unbonding_end = d.market.functions.stakeOf(operator).call()
    return int(amount), int(unbonding_end)


KEY_MANAGER_RELEASE_TYPES = {
    "ClaimRelease": [
        {"name": "jobId", "type": "uint256"},
        {"name": "enclave", "type": "address"},
        {"name": "charges", "type": "uint16"},
    ]
}
"""EIP-712 types of the key manager's no-release statement ({JobMarket-releaseClaim})."""


def sign_release(
    d: Deployment,
    key: LocalAccount,
    job_id: int,
    enclave: str,
    charges: int,
    *,
    market: Contract | None = None,
    chain_id: int | None = None,
) -> bytes:
    """EIP-712 ``ClaimRelease(jobId, enclave, charges)`` signed by ``key`` under the market's domain
    (``market`` and ``chain_id`` override it, to forge signatures for another domain)."""
    dom = domain(d.w3, market or d.market, "SterlingJobMarket")
    if chain_id is not None:
        dom["chainId"] = chain_id
    message = {"jobId": job_id, "enclave": enclave, "charges": charges}
    return bytes(Account.sign_typed_data(key.key, dom, KEY_MANAGER_RELEASE_TYPES, message).signature)


def register_key_manager(d: Deployment, operator: str | None = None, *, key: LocalAccount | None = None) -> Any:
    """Register the key-manager enclave (``key``, default ``actors.key_manager``) to ``operator``
    (default the governance account, which runs the key manager in these tests)."""
    return register(
        d,
        key or d.actors.key_manager,
        operator or d.actors.governance,
        role=ROLE_KEY_MANAGER,
        measurement=KEY_MANAGER_MEASUREMENT,
    )


@pytest.fixture(scope="function")
def chain(deployment: Deployment) -> Iterator[Deployment]:
    """The session deployment, reverted to its initial state after the test."""
    tester = deployment.w3.provider.ethereum_tester  # type: ignore[attr-defined]
    snapshot = tester.take_snapshot()
    yield deployment
    tester.revert_to_snapshot(snapshot)


# --------------------------------------------------------------------------- struct views


def _named(outputs: list[dict[str, Any]], value: tuple[Any, ...]) -> dict[str, Any]:
    """The ABI struct ``value`` as a dict keyed by its component names (top level only)."""
    return {component["name"]: field for component, field in zip(outputs, value, strict=True)}


def _struct_view(contract: Contract, function: str, *args: Any) -> dict[str, Any]:
    (output,) = next(i for i in contract.abi if i.get("name") == function and i["type"] == "function")["outputs"]
    return _named(output["components"], getattr(contract.functions, function)(*args).call())


def dataset_info(d: Deployment, dataset_id: int) -> dict[str, Any]:
    """``dataset(dataset_id)`` keyed by DatasetInfo field names (``terms`` stays a tuple)."""
    return _struct_view(d.market, "dataset", dataset_id)


def job_info(d: Deployment, job_id: int) -> dict[str, Any]:
    """``job(job_id)`` keyed by JobInfo field names."""
    return _struct_view(d.market, "job", job_id)


def enclave_info(d: Deployment, signer: str) -> dict[str, Any]:
    """``enclaveOf(signer)`` keyed by Enclave field names."""
    return _struct_view(d.registry, "enclaveOf", signer)


def logged(contract: Contract, receipt: Any, event: str) -> list[dict[str, Any]]:
    """The arguments of every ``event`` that ``contract`` emitted in the transaction ``receipt``."""
    return [dict(e["args"]) for e in contract.events[event]().process_receipt(receipt, errors=DISCARD)]


# --------------------------------------------------------------------------- lifecycle helpers


def claim_job(d: Deployment, job_id: int, *, enclave: LocalAccount | None = None, operator: str | None = None) -> Any:
    """Claim ``job_id`` for ``enclave`` (default: the trainer) from ``operator`` (default: its operator)."""
    enclave_address = (enclave or d.actors.trainer).address
    return transact(d.w3, d.market.functions.claimJob(job_id, enclave_address), operator or d.actors.operator)


def submit_call(d: Deployment, job_id: int, receipt: dict[str, Any], *, key: LocalAccount | None = None) -> Any:
    """The submitResult call for ``receipt`` signed by ``key`` (default: the trainer enclave)."""
    signature = sign_receipt(d, key or d.actors.trainer, receipt)
    return d.market.functions.submitResult(job_id, receipt_tuple(receipt), signature)


def submit_result(
    d: Deployment, job_id: int, receipt: dict[str, Any], *, key: LocalAccount | None = None, sender: str | None = None
) -> Any:
    """Submit ``receipt`` for ``job_id`` signed by ``key``, sent by ``sender`` (default: the operator)."""
    return transact(d.w3, submit_call(d, job_id, receipt, key=key), sender or d.actors.operator)


def complete_job(d: Deployment, job_id: int, epsilon_spent: int = 1) -> Any:
    """Claim ``job_id`` with the trainer and settle it with a receipt spending ``epsilon_spent``."""
    claim_job(d, job_id)
    return submit_result(d, job_id, receipt_for(d, job_id, epsilon_spent))


def holdings(d: Deployment, account: str) -> int:
    """``account``'s balance in the market's payment unit (ether, or the payment token)."""
    if d.token is None:
        return int(d.w3.eth.get_balance(account))  # type: ignore[arg-type]
    return int(d.token.functions.balanceOf(account).call())


def market_funds(d: Deployment) -> int:
    """The market's holdings less the operators' stakes (``totalStake``): what the escrow and the
    pending withdrawals account for."""
    return holdings(d, d.market.address) - int(d.market.functions.totalStake().call())


def keep_alive(d: Deployment, job_id: int, until: int, *, operator: str | None = None) -> None:
    """Travel to ``until`` while renewing ``job_id``'s lease at each expiry, as a live worker's
    heartbeat would (from ``operator``, default ``actors.operator``)."""
    while True:
        lease = int(d.market.functions.job(job_id).call()[15])
        if lease >= until:
            break
        d.travel_to(lease)
        transact(d.w3, d.market.functions.renewLease(job_id), operator or d.actors.operator)
    d.travel_to(until)


def withdraw_all(d: Deployment, account: str) -> int:
    """Withdraw ``account``'s pending payments and return what it received (gas excluded)."""
    before = holdings(d, account)
    receipt = transact(d.w3, d.market.functions.withdraw(), account)
    gas_cost = receipt["gasUsed"] * receipt["effectiveGasPrice"] if d.token is None else 0
    return holdings(d, account) - before + gas_cost


def assert_solvent(d: Deployment, accounts: list[str]) -> None:
    """The market holds exactly Σ pending withdrawals of ``accounts`` + lockedEscrow() + totalStake()."""
    pending = sum(d.market.functions.pendingWithdrawal(a).call() for a in accounts)
    locked = d.market.functions.lockedEscrow().call() + d.market.functions.totalStake().call()
    assert holdings(d, d.market.address) == pending + locked


def everyone(d: Deployment) -> list[str]:
    """Every chain account the actors use (for :func:`assert_solvent`)."""
    a = d.actors
    return [a.governance, a.operator, *a.providers, a.consumer, a.other_operator, a.stranger]


def deploy_token_market(d: Deployment, token_name: str, *, stake: bool = True) -> Deployment:
    """A fresh registry and market paying in a new ``token_name`` test token (on ``d``'s chain).

    The consumer is minted 10^12 token units; if ``stake``, each operator is minted and stakes
    :data:`TOKEN_STAKE` units. Deployed inside a test, the ``chain`` fixture's snapshot removes
    it afterwards.
    """
    token = deploy(d.w3, token_name, d.actors.governance, test=True)
    transact(d.w3, token.functions.mint(d.actors.consumer, 10**12), d.actors.governance)
    return deploy_all(d.w3, d.actors, token=token, stake=stake)


def send_unchecked(w3: Web3, call: Any, sender: str, value: int = 0, *, gas: int = 3_000_000) -> bytes:
    """Send ``call`` with a fixed gas limit (no estimation, so no early revert) and return its hash."""
    return bytes(call.transact({"from": sender, "value": value, "gas": gas}))


def replay_revert(w3: Web3, tx_hash: bytes) -> tuple[str, tuple[Any, ...]]:
    """Re-run the mined, reverted transaction ``tx_hash`` on the state after its block and decode
    its error. Valid when no later transaction of that block changed what it read."""
    tx = w3.eth.get_transaction(tx_hash)  # type: ignore[arg-type]
    call = {"from": tx["from"], "to": tx["to"], "data": tx["input"], "value": tx["value"], "gas": tx["gas"]}
    with pytest.raises(Exception) as info:  # noqa: PT011 - the type varies by provider
        w3.eth.call(call, block_identifier=tx["blockNumber"])  # type: ignore[arg-type]
    return decode_revert(revert_data(info.value))
