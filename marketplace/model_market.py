"""Deployment and typed client of ``ModelMarket``: sealed models served by inference enclaves,
paid per query through payment channels and client-signed cumulative vouchers.

A model owner lists a model (:meth:`ModelMarketClient.list_model`, or
:meth:`ModelMarketClient.list_model_from_job` for the model of a completed Sterling job, whose
(ε, δ) the listing takes from the job); a client deposits into its channel (model, client), bound
to one inference enclave (:meth:`ModelMarketClient.deposit`), and signs :class:`~enclave_worker.trusted.vouchers.Voucher`\\ s whose
``amount`` and ``queries`` are running totals; the operator of the inference enclave that served
the queries redeems the latest voucher (:meth:`ModelMarketClient.redeem`), which credits its fee
and the owner's share for pull withdrawal. A client leaves with :meth:`~ModelMarketClient.request_close`
and, ``closeDelay`` seconds later, :meth:`~ModelMarketClient.reclaim`.

Amounts (:data:`~marketplace.chain.Wei`) are in the market's payment unit: wei, or the smallest
unit of its ERC-20 token (:meth:`ModelMarketClient.payment_token`). Reverts raise
:class:`~marketplace.errors.ContractReverted` carrying the contract's custom error name and values.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NewType

from eth_account.signers.local import LocalAccount
from eth_utils import event_abi_to_log_topic, to_canonical_address, to_checksum_address
from web3.contract import Contract
from web3.logs import DISCARD

from enclave_worker.trusted.onchain import MAX_PROBABILITY_DECIMALS, ModelStatus, OutputPolicy, Role
from enclave_worker.trusted.vouchers import DOMAIN_NAME, DOMAIN_VERSION, Voucher, sign_voucher

from .abi import load_artifact
from .chain import Chain, TxResult, Wei
from .contracts import _TOKEN_ERRORS, DEFAULT_ADMIN_DELAY, DEFAULT_CLOSE_DELAY, MAX_ADMIN_DELAY, ZERO_ADDRESS, _deploy_one, _web3_address
from .errors import ConfigError
from .payments import PullPaymentsClient

__all__ = [
    "DEFAULT_CLOSE_DELAY",
    "MAX_CHANNEL_DEPOSIT",
    "MAX_OPERATOR_FEE_BPS",
    "MAX_PRICE_PER_QUERY",
    "CHANNEL_EVENTS",
    "MODEL_EVENTS",
    "ChannelRecord",
    "MarketChanges",
    "ModelId",
    "ModelMarketClient",
    "ModelRecord",
    "ModelStatus",
    "ModelTerms",
    "OutputPolicy",
    "Redemption",
    "Role",
    "Voucher",
    "deploy_model_market",
]

logger = logging.getLogger(__name__)

ModelId = NewType("ModelId", int)

MAX_PRICE_PER_QUERY = 2**128 - 1
"""``pricePerQuery`` is a ``uint128``."""
MAX_CHANNEL_DEPOSIT = 2**96 - 1
"""A channel's deposits stay below 2⁹⁶ (its ceiling shares a storage slot with its enclave)."""
MAX_OPERATOR_FEE_BPS = 5000
"""``ModelMarket.MAX_OPERATOR_FEE_BPS``: governance may give operators at most half of each payment."""
_U64 = 2**64


@dataclass(frozen=True)
class ModelTerms:
    """What a model owner lists (``IModelMarket.ModelTerms``), in contract units."""

    weights_hash: bytes
    """SHA-256 of the plaintext safetensors."""
    spec_hash: bytes
    """SHA-256 of the model-spec JSON."""
    content_hash: bytes
    """SHA-256 of the encrypted weights in the blob store."""
    price_per_query: Wei
    """Price of one row."""
    output_policy: OutputPolicy
    output_param: int
    """0 for LABEL, k >= 1 for TOP_K, decimals 0..6 for PROBABILITIES."""
    query_cap: int
    """Rows one client may ask over its channel's life (the extraction budget)."""
    expiry: int = 0
    """No deposits from this unix second on; 0 = never."""
    restricted: bool = False
    """Only allow-listed clients may deposit."""
    source_job_id: int = 0
    """The ``JobMarket`` job that trained the model; 0 = not trained here. Set by the contract
    (:meth:`ModelMarketClient.list_model_from_job`); ``list_model`` refuses a non-zero one."""
    epsilon: int = 0
    """ε (micro-units) that job spent, taken from the job; 0 when not trained here."""
    delta: int = 0
    """δ (× 10¹⁸) of that job, taken from the job; 0 when not trained here."""

    def validate(self) -> None:
        """Refuse terms the contract would revert on, before sending anything.

        Raises:
            ConfigError: a hash is not 32 non-zero bytes, the output policy/parameter pair, the
                query cap, the price or a fixed-point value is out of range.
        """
        for name in ("weights_hash", "spec_hash", "content_hash"):
            value = getattr(self, name)
            if len(value) != 32 or not any(value):
                raise ConfigError(f"{name} must be 32 bytes and not all zero")
        policy = OutputPolicy(self.output_policy)
        valid = {
            OutputPolicy.LABEL: self.output_param == 0,
            OutputPolicy.TOP_K: 1 <= self.output_param <= 255,
            OutputPolicy.PROBABILITIES: 0 <= self.output_param <= MAX_PROBABILITY_DECIMALS,
        }[policy]
        if not valid:
            raise ConfigError(f"output parameter {self.output_param} is not valid for {policy.name}")
        if not 1 <= self.query_cap < _U64:
            raise ConfigError(f"query_cap must be a positive 64-bit number, got {self.query_cap}")
        if not 0 <= self.price_per_query <= MAX_PRICE_PER_QUERY:
            raise ConfigError(f"price_per_query must fit 128 bits, got {self.price_per_query}")
        for name in ("expiry", "epsilon", "delta"):
            if not 0 <= getattr(self, name) < _U64:
                raise ConfigError(f"{name} must fit 64 bits")

    def as_tuple(self) -> tuple[bytes, bytes, bytes, int, int, int, int, int, bool, int, int, int]:
        """The ABI tuple, in struct order."""
        return (
            self.weights_hash, self.spec_hash, self.content_hash, int(self.price_per_query), int(self.output_policy),
            self.output_param, self.query_cap, self.expiry, self.restricted, self.source_job_id, self.epsilon, self.delta,
        )  # fmt: skip

    @classmethod
    def from_tuple(cls, t: Sequence[Any]) -> ModelTerms:
        return cls(
            weights_hash=bytes(t[0]),
            spec_hash=bytes(t[1]),
            content_hash=bytes(t[2]),
            price_per_query=Wei(int(t[3])),
            output_policy=OutputPolicy(int(t[4])),
            output_param=int(t[5]),
            query_cap=int(t[6]),
            expiry=int(t[7]),
            restricted=bool(t[8]),
            source_job_id=int(t[9]),
            epsilon=int(t[10]),
            delta=int(t[11]),
        )


@dataclass(frozen=True)
class ModelRecord:
    """``ModelMarket.modelOf(id)``."""

    model_id: ModelId
    owner: str
    status: ModelStatus
    terms: ModelTerms


@dataclass(frozen=True)
class ChannelRecord:
    """``ModelMarket.channelOf(id, client)``: the chain state of one payment channel."""

    model_id: ModelId
    client: str
    deposited: Wei
    """The ceiling a voucher's cumulative amount may reach (a reclaim lowers it to ``redeemed``)."""
    redeemed: Wei
    """Cumulative amount of the last redeemed voucher."""
    redeemed_queries: int
    """Cumulative rows of the last redeemed voucher."""
    close_requested_at: int
    """Unix second of the pending close request; 0 = none."""
    enclave: str
    """The inference enclave (signer address) the channel is bound to: only its vouchers are
    redeemable; the zero address before the first deposit."""

    @property
    def balance(self) -> Wei:
        """What the market holds for the channel (``deposited - redeemed``)."""
        return Wei(self.deposited - self.redeemed)


@dataclass(frozen=True)
class Redemption:
    """A ``VoucherRedeemed`` event: what one redeem moved."""

    model_id: ModelId
    client: str
    enclave: str
    operator: str
    amount: Wei
    """The channel's new redeemed total."""
    queries: int
    paid: Wei
    """What left the channel (the increase over the previous total)."""
    fee: Wei
    """The operator's share of ``paid``; the owner was credited the rest."""


def deploy_model_market(
    chain: Chain,
    governance: LocalAccount,
    registry: str,
    payment_token: str | None = None,
    *,
    job_market: str,
    admin_delay: int = DEFAULT_ADMIN_DELAY,
    close_delay: int = DEFAULT_CLOSE_DELAY,
) -> tuple[str, TxResult]:
    """Deploy a ``ModelMarket`` over the enclave registry at ``registry``, governed by ``governance``.

    (:func:`marketplace.contracts.deploy` deploys one with the registry and job market.)

    Args:
        payment_token: the ERC-20 token deposits and payments use; ``None`` (or the zero address)
            for the native currency.
        job_market: the ``JobMarket`` whose completed jobs' models may be listed
            (:meth:`ModelMarketClient.list_model_from_job`).
        admin_delay: seconds a governance handover must wait.
        close_delay: seconds from a client's close request to its reclaim.

    Returns:
        The market's address and the deployment transaction.

    Raises:
        ConfigError: a delay is out of range, or ``payment_token`` or ``job_market`` is not a contract.
        ContractReverted: the constructor reverted.
    """
    if not 0 <= admin_delay <= MAX_ADMIN_DELAY:
        raise ConfigError(f"admin_delay must fit 48 bits, got {admin_delay}")
    if not 0 < close_delay < _U64:
        raise ConfigError(f"close_delay must be a positive 64-bit number of seconds, got {close_delay}")
    token = ZERO_ADDRESS
    if payment_token is not None:
        try:
            token = str(to_checksum_address(payment_token))
        except ValueError as e:
            raise ConfigError(f"payment token {payment_token!r} is not an address") from e
        if token != ZERO_ADDRESS and not chain.w3.eth.get_code(_web3_address(token)):
            raise ConfigError(f"payment token {token} is not a contract on chain {chain.chain_id}")
    try:
        jobs = str(to_checksum_address(job_market))
    except ValueError as e:
        raise ConfigError(f"job market {job_market!r} is not an address") from e
    if not chain.w3.eth.get_code(_web3_address(jobs)):
        raise ConfigError(f"job market {jobs} is not a contract on chain {chain.chain_id}")
    address, result = _deploy_one(chain, governance, "ModelMarket", registry, jobs, token, admin_delay, governance.address, close_delay)
    logger.info("deployed model market %s over registry %s on chain %d", address, registry, chain.chain_id)
    return address, result


CHANNEL_EVENTS = frozenset({"ChannelBound", "Deposited", "CloseRequested", "Reclaimed", "VoucherRedeemed"})
"""Events that change one channel (model id and client are their first two indexed topics)."""
MODEL_EVENTS = frozenset({"ModelRepriced", "ModelStatusChanged", "ClientsAllowed"})
"""Events that change a listing's terms, status or allow-list (model id is their first indexed topic)."""


@dataclass(frozen=True)
class MarketChanges:
    """What the model market's logs say changed in a block range (see :meth:`ModelMarketClient.changes`)."""

    channels: frozenset[tuple[int, bytes]]
    """(model id, client's 20-byte address) of every channel a channel event names."""
    models: frozenset[int]
    """Models whose price, status or allow-list changed."""


class ModelMarketClient(PullPaymentsClient):
    """Typed access to ``ModelMarket`` (listings, channels, vouchers, payments).

    The payment currency, :meth:`withdraw` and :meth:`credits` are
    :class:`~marketplace.payments.PullPaymentsClient`'s (the contract's ``PullPayments``).
    """

    _WITHDRAW_NAME = "withdraw (model market)"

    def __init__(self, chain: Chain, address: str) -> None:
        artifact = load_artifact("ModelMarket")
        chain.register_errors(artifact["abi"])
        chain.register_errors(load_artifact("EnclaveRegistry")["abi"])
        chain.register_errors(load_artifact("JobMarket")["abi"])  # listModelFromJob passes on JobMarketUnknownJob
        chain.register_errors(_TOKEN_ERRORS)
        self.chain = chain
        self.contract: Contract = chain.w3.eth.contract(address=_web3_address(address), abi=artifact["abi"])
        self.address = address
        self._event_names = {
            event_abi_to_log_topic(item): str(item["name"]) for item in artifact["abi"] if item.get("type") == "event"
        }  # fmt: skip

    @property
    def address_bytes(self) -> bytes:
        return bytes.fromhex(self.address[2:])

    def domain(self) -> dict[str, Any]:
        """The EIP-712 domain vouchers and response receipts are signed under."""
        return {"name": DOMAIN_NAME, "version": DOMAIN_VERSION, "chainId": self.chain.chain_id, "verifyingContract": self.address}

    # --- listings ---------------------------------------------------------------------------

    def list_model(self, owner: LocalAccount, terms: ModelTerms) -> tuple[ModelId, TxResult]:
        """List a model owned by ``owner`` (Active at once), not trained by a Sterling job.

        Raises:
            ConfigError: the terms are out of range, or carry a source job, ε or δ (a model trained
                here is listed with :meth:`list_model_from_job`); checked before sending.
            ContractReverted: e.g. ``ModelMarketInvalidExpiry`` (an expiry already past).
        """
        terms.validate()
        if terms.source_job_id or terms.epsilon or terms.delta:
            raise ConfigError("list_model takes no source job, ε or δ: list a model trained by a Sterling job with list_model_from_job")
        return self._listed(self.chain.transact(owner, self.contract.functions.listModel(terms.as_tuple())))

    def list_model_from_job(self, owner: LocalAccount, job_id: int, terms: ModelTerms) -> tuple[ModelId, TxResult]:
        """List the model trained by job ``job_id`` of the market's job market, as its consumer ``owner``.

        The listing records the job as its source and the job's ε spent and δ, whatever ``terms``
        says about them. The chain cannot check ``terms.weights_hash`` against the job's result
        (the job market keeps its model hash only in the ``ResultSubmitted`` event); the key
        manager and the inference enclave do: a listing whose weights are not the job's is never
        served.

        Raises:
            ConfigError: the terms are out of range (checked before sending).
            ContractReverted: ``ModelMarketJobNotCompleted``, ``ModelMarketNotJobConsumer``,
                ``ModelMarketJobAlreadyListed``, ``JobMarketUnknownJob``, or as :meth:`list_model`.
        """
        terms.validate()
        return self._listed(self.chain.transact(owner, self.contract.functions.listModelFromJob(job_id, terms.as_tuple())))

    def _listed(self, result: TxResult) -> tuple[ModelId, TxResult]:
        (event,) = self.contract.events.ModelListed().process_receipt(result.receipt, errors=DISCARD)
        return ModelId(int(event["args"]["modelId"])), result

    def job_market(self) -> str:
        """The ``JobMarket`` whose completed jobs' models :meth:`list_model_from_job` lists."""
        return str(self.chain.call(self.contract.functions.jobMarket()))

    def set_price(self, owner: LocalAccount, model_id: int, price_per_query: Wei) -> TxResult:
        """Change the price per row; vouchers already signed keep their amounts."""
        return self.chain.transact(owner, self.contract.functions.setPrice(model_id, price_per_query))

    def pause(self, owner: LocalAccount, model_id: int) -> TxResult:
        """Stop serving and deposits (``ModelMarketInvalidStatus`` unless Active)."""
        return self.chain.transact(owner, self.contract.functions.pause(model_id), name="pause model")

    def resume(self, owner: LocalAccount, model_id: int) -> TxResult:
        """Serve again (``ModelMarketInvalidStatus`` unless Paused)."""
        return self.chain.transact(owner, self.contract.functions.resume(model_id), name="resume model")

    def delist(self, owner: LocalAccount, model_id: int) -> TxResult:
        """Delist for good; signed vouchers stay redeemable and clients reclaim the rest."""
        return self.chain.transact(owner, self.contract.functions.delist(model_id))

    def set_allowed(self, owner: LocalAccount, model_id: int, clients: Sequence[str], allowed: bool) -> TxResult:
        """Add (``allowed``) or remove ``clients`` on a restricted model's allow-list (64 per call)."""
        return self.chain.transact(owner, self.contract.functions.setAllowed(model_id, list(clients), allowed))

    def model(self, model_id: int) -> ModelRecord:
        """The listing ``model_id``.

        Raises:
            ContractReverted: ``ModelMarketUnknownModel``.
        """
        owner, status, terms = self.chain.call(self.contract.functions.modelOf(model_id))
        return ModelRecord(ModelId(model_id), str(owner), ModelStatus(int(status)), ModelTerms.from_tuple(terms))

    def model_count(self) -> int:
        return int(self.chain.call(self.contract.functions.modelCount()))

    def is_allowed(self, model_id: int, client: str) -> bool:
        """Whether ``client`` may deposit as far as the allow-list goes (``False`` for unknown models)."""
        return bool(self.chain.call(self.contract.functions.isAllowed(model_id, client)))

    # --- channels ---------------------------------------------------------------------------

    def deposit(self, client: LocalAccount, model_id: int, amount: Wei, enclave: str) -> TxResult:
        """Add ``amount`` to ``client``'s channel on ``model_id``, served by inference enclave
        ``enclave`` (cancels a pending close).

        The first deposit binds the channel to ``enclave``; later ones must name the same enclave
        until the channel has nothing left to spend (fully redeemed, or reclaimed), when a deposit
        naming another enclave rebinds it. Only the bound enclave's vouchers are redeemable.

        In native mode the transaction sends ``amount``; in token mode the market is first
        approved for ``amount`` if its allowance is lower, then pulls it.

        Raises:
            ContractReverted: e.g. ``ModelMarketChannelBoundElsewhere`` (the channel still holds
                credit for another enclave: close it first), ``ModelMarketEnclaveNotActive``
                (binding to an enclave that is not an active inference enclave),
                ``ModelMarketInvalidStatus``, ``ModelMarketModelExpired``,
                ``ModelMarketClientNotAllowed``, ``ERC20InsufficientBalance``.
        """
        value = self._pay(client, amount)
        return self.chain.transact(client, self.contract.functions.deposit(model_id, amount, enclave), value=value)

    def request_close(self, client: LocalAccount, model_id: int) -> TxResult:
        """Start closing ``client``'s channel; :meth:`reclaim` works ``close_delay()`` seconds later."""
        return self.chain.transact(client, self.contract.functions.requestClose(model_id))

    def reclaim(self, client: LocalAccount, model_id: int) -> tuple[Wei, TxResult]:
        """Credit ``client`` what its channel holds beyond the redeemed total, and close it.

        Returns:
            The amount credited (then :meth:`withdraw`) and the transaction.

        Raises:
            ContractReverted: ``ModelMarketCloseNotRequested`` or ``ModelMarketCloseDelayNotPassed``.
        """
        result = self.chain.transact(client, self.contract.functions.reclaim(model_id))
        (event,) = self.contract.events.Reclaimed().process_receipt(result.receipt, errors=DISCARD)
        return Wei(int(event["args"]["amount"])), result

    def changes(self, from_block: int, to_block: int) -> MarketChanges:
        """The channels and listings that changed in blocks ``from_block`` to ``to_block`` (both
        included), from the market's logs: one ``eth_getLogs`` call whatever the number of channels,
        so a server can cache channel states and re-read only those an event names."""
        logs = self.chain.w3.eth.get_logs({"address": self.contract.address, "fromBlock": from_block, "toBlock": to_block})
        channels: set[tuple[int, bytes]] = set()
        models: set[int] = set()
        for log in logs:
            topics = log["topics"]
            name = self._event_names.get(bytes(topics[0])) if topics else None
            if name in CHANNEL_EVENTS:
                channels.add((int.from_bytes(bytes(topics[1]), "big"), to_canonical_address(bytes(topics[2])[12:])))
            elif name in MODEL_EVENTS:
                models.add(int.from_bytes(bytes(topics[1]), "big"))
        return MarketChanges(channels=frozenset(channels), models=frozenset(models))

    def channel(self, model_id: int, client: str) -> ChannelRecord:
        deposited, redeemed, queries, close_requested_at, enclave = self.chain.call(self.contract.functions.channelOf(model_id, client))
        return ChannelRecord(
            model_id=ModelId(model_id),
            client=str(to_checksum_address(client)),
            deposited=Wei(int(deposited)),
            redeemed=Wei(int(redeemed)),
            redeemed_queries=int(queries),
            close_requested_at=int(close_requested_at),
            enclave=str(to_checksum_address(enclave)),
        )

    def close_delay(self) -> int:
        """Seconds from a close request to the reclaim."""
        return int(self.chain.call(self.contract.functions.closeDelay()))

    # --- vouchers ---------------------------------------------------------------------------

    def hash_voucher(self, voucher: Voucher) -> bytes:
        """The contract's EIP-712 digest of ``voucher`` (equal to ``voucher.digest(...)`` for this market)."""
        return bytes(self.chain.call(self.contract.functions.hashVoucher(voucher.as_tuple())))

    def sign_voucher(self, client: LocalAccount, voucher: Voucher) -> bytes:
        """``client``'s signature of ``voucher`` under this market's domain (a local key; wallets
        sign :data:`~enclave_worker.trusted.vouchers.VOUCHER_TYPES` with :meth:`domain`)."""
        return sign_voucher(bytes(client.key), voucher, chain_id=self.chain.chain_id, model_market=self.address_bytes)

    def redeem(self, operator: LocalAccount, voucher: Voucher, signature: bytes) -> tuple[Redemption, TxResult]:
        """Redeem ``voucher`` as the operator of its inference enclave.

        Returns:
            What the redeem moved (the ``VoucherRedeemed`` event) and the transaction.

        Raises:
            ContractReverted: ``ModelMarketEnclaveNotActive``, ``ModelMarketNotEnclaveOperator``,
                ``ModelMarketWrongEnclave`` (the channel is bound to another enclave),
                ``ModelMarketStaleVoucher`` (replayed or stale), ``ModelMarketQueriesDecreased``,
                ``ModelMarketQueryCapExceeded``, ``ModelMarketInsufficientDeposit``,
                ``ModelMarketInvalidVoucherSignature``, ``ModelMarketUnknownModel``.
        """
        result = self.chain.transact(operator, self.contract.functions.redeem(voucher.as_tuple(), signature))
        (event,) = self.contract.events.VoucherRedeemed().process_receipt(result.receipt, errors=DISCARD)
        args = event["args"]
        redemption = Redemption(
            model_id=ModelId(int(args["modelId"])),
            client=str(args["client"]),
            enclave=str(args["enclave"]),
            operator=str(args["operator"]),
            amount=Wei(int(args["amount"])),
            queries=int(args["queries"]),
            paid=Wei(int(args["paid"])),
            fee=Wei(int(args["fee"])),
        )
        return redemption, result

    # --- settings ---------------------------------------------------------------------------

    def operator_fee_bps(self) -> int:
        """The operator's share of each redeemed payment, in basis points."""
        return int(self.chain.call(self.contract.functions.operatorFeeBps()))

    def set_operator_fee(self, governance: LocalAccount, bps: int) -> TxResult:
        """Governance: set the operator's share (at most :data:`MAX_OPERATOR_FEE_BPS`)."""
        return self.chain.transact(governance, self.contract.functions.setOperatorFee(bps))

    def registry(self) -> str:
        return str(self.chain.call(self.contract.functions.registry()))
