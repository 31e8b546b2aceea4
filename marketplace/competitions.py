"""Deployment and typed client of ``CompetitionMarket``: ML competitions scored by attested
evaluator enclaves on private test sets (issue 16).

An organizer creates a competition, escrowing its prize (:meth:`CompetitionMarketClient.create_competition`);
participants submit sealed models during the window, each with a key manager's EIP-712
:class:`~enclave_worker.trusted.competition.Admission` (:meth:`~CompetitionMarketClient.submit`);
an evaluator enclave signs :class:`~enclave_worker.trusted.competition.ScoreReceipt`\\ s that
anyone posts (:meth:`~CompetitionMarketClient.post_score`): public scores in submission order
while the window is open (the Ladder leaderboard), private ones after it closes. The close
(:meth:`~CompetitionMarketClient.close`) credits the prize to the best private score (ties: the
earlier submission) or back to the organizer when nothing was scored; afterwards submitted
models may be bought (:meth:`~CompetitionMarketClient.buy`) as the purchase policy allows.
Payments are pulled with :meth:`~CompetitionMarketClient.withdraw`.

Amounts (:data:`~marketplace.chain.Wei`) are in the market's payment unit: wei, or the smallest
unit of its ERC-20 token (:meth:`CompetitionMarketClient.payment_token`). Reverts raise
:class:`~marketplace.errors.ContractReverted` carrying the contract's custom error name and values.

Example:
    >>> market = CompetitionMarketClient(chain, deployment.competitions)  # doctest: +SKIP
    >>> competition_id, _ = market.create_competition(organizer, terms)  # doctest: +SKIP
    >>> index, _ = market.submit(participant, competition_id, content_hash, weights_hash, Wei(0), admission)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NewType

from eth_account.signers.local import LocalAccount
from eth_utils import event_abi_to_log_topic, to_checksum_address
from web3.contract import Contract
from web3.logs import DISCARD
from web3.types import BlockIdentifier, EventData, LogReceipt

from enclave_worker.trusted.competition import Admission, ScoreReceipt
from enclave_worker.trusted.competition import domain as competition_domain
from enclave_worker.trusted.onchain import (
    NO_SCORE_LOWER_IS_BETTER,
    SCORE_SCALE,
    Architecture,
    CompetitionStatus,
    Metric,
    PurchasePolicy,
    Role,
    Split,
)

from .abi import load_artifact
from .chain import Chain, TxResult, Wei
from .contracts import _TOKEN_ERRORS, DEFAULT_ADMIN_DELAY, MAX_ADMIN_DELAY, ZERO_ADDRESS, _deploy_one, _web3_address
from .errors import ChainUnavailable, ConfigError
from .payments import PullPaymentsClient

__all__ = [
    "ALL_ARCHITECTURES",
    "COMPETITION_EVENTS",
    "MAX_ASK_PRICE",
    "MAX_PRIZE",
    "MAX_PUBLIC_SPLIT_BPS",
    "NO_SCORE_LOWER_IS_BETTER",
    "SCORE_SCALE",
    "Admission",
    "Architecture",
    "CompetitionClosed",
    "CompetitionCreated",
    "CompetitionEvent",
    "CompetitionId",
    "CompetitionMarketClient",
    "CompetitionRecord",
    "CompetitionStatus",
    "CompetitionTerms",
    "Metric",
    "ModelBought",
    "PurchasePolicy",
    "Role",
    "ScorePosted",
    "ScoreReceipt",
    "Split",
    "SubmissionRecord",
    "Submitted",
    "deploy_competition_market",
]

logger = logging.getLogger(__name__)

CompetitionId = NewType("CompetitionId", int)

MAX_PRIZE = 2**128 - 1
"""``CompetitionTerms.prize`` is a ``uint128``."""
MAX_ASK_PRICE = 2**96 - 1
"""A submission's ask price is a ``uint96`` (it shares a storage slot with the participant)."""
MAX_PUBLIC_SPLIT_BPS = 9999
"""``CompetitionMarket.MAX_PUBLIC_SPLIT_BPS``: the private split keeps at least one basis point of the rows."""
ALL_ARCHITECTURES = Architecture.LOGISTIC_REGRESSION | Architecture.MLP | Architecture.CNN
"""Every architecture bit the contract knows."""
_NO_LEADER = 2**32 - 1
_U16, _U32, _U64 = 2**16, 2**32, 2**64


_TERMS_FIELDS = (
    "testSetHash", "schemaHash", "rulesHash", "prize", "metric", "publicSplitBps", "ladderStep", "opensAt", "closesAt",
    "scoringPeriod", "submissionCap", "maxParameters", "architectures", "purchasePolicy",
)  # fmt: skip
"""``ICompetitionMarket.CompetitionTerms``'s fields, in struct order."""


def _check_hash(name: str, value: bytes) -> None:
    if len(value) != 32 or not any(value):
        raise ConfigError(f"{name} must be 32 bytes and not all zero")


@dataclass(frozen=True)
class CompetitionTerms:
    """What an organizer fixes at creation (``ICompetitionMarket.CompetitionTerms``), in contract units."""

    test_set_hash: bytes
    """SHA-256 of the encrypted test set in the blob store."""
    schema_hash: bytes
    """SHA-256 of the canonical schema JSON submissions must take."""
    rules_hash: bytes
    """SHA-256 of the rules document (description, training data location, dataset ids)."""
    prize: Wei
    """Escrowed at creation; goes to the best private score (or back, if nothing was scored)."""
    metric: Metric
    public_split_bps: int
    """Share of the test rows in the public split, 1..9999 basis points."""
    ladder_step: int
    """The Ladder's step η, in 10⁻⁶ metric units (>= 1)."""
    opens_at: int
    """First unix second of the submission window."""
    closes_at: int
    """First second after it: submissions are taken in ``[opens_at, closes_at)``."""
    scoring_period: int
    """Seconds after ``closes_at`` reserved for private scores; from then on anyone may close."""
    submission_cap: int
    """Submissions per participant (>= 1)."""
    max_parameters: int = 0
    """Largest model a submission may be, in parameters; 0 = no limit (checked by the key manager)."""
    architectures: Architecture = ALL_ARCHITECTURES
    """The architectures submissions may use (checked by the key manager)."""
    purchase_policy: PurchasePolicy = PurchasePolicy.NONE
    """Who may buy submitted models after the close."""

    @property
    def open_to_all_at(self) -> int:
        """From this second on anyone may close the competition (``closes_at + scoring_period``)."""
        return self.closes_at + self.scoring_period

    def validate(self, now: int | None = None) -> None:
        """Refuse terms the contract would revert on, before sending anything.

        Args:
            now: the chain's time; when given, a window that ends by then is refused too.

        Raises:
            ConfigError: a hash is not 32 non-zero bytes, or a field is out of the contract's range
                (the message names it).
        """
        _check_hash("test_set_hash", self.test_set_hash)
        _check_hash("schema_hash", self.schema_hash)
        _check_hash("rules_hash", self.rules_hash)
        if not 0 < self.prize <= MAX_PRIZE:
            raise ConfigError(f"prize must be positive and fit 128 bits, got {self.prize}")
        try:
            Metric(self.metric)
        except ValueError as e:
            raise ConfigError(f"metric must be one of {[m.name for m in Metric]}, got {self.metric}") from e
        if not 1 <= self.public_split_bps <= MAX_PUBLIC_SPLIT_BPS:
            raise ConfigError(f"public_split_bps must be 1..{MAX_PUBLIC_SPLIT_BPS}, got {self.public_split_bps}")
        if not 1 <= self.ladder_step < _U32:
            raise ConfigError(f"ladder_step must be a positive 32-bit number, got {self.ladder_step}")
        for name in ("opens_at", "closes_at", "scoring_period"):
            if not 0 <= getattr(self, name) < _U64:
                raise ConfigError(f"{name} must fit 64 bits")
        if self.closes_at <= self.opens_at:
            raise ConfigError(f"the window is empty: closes_at {self.closes_at} is not after opens_at {self.opens_at}")
        if now is not None and self.closes_at <= now:
            raise ConfigError(f"the window is over: closes_at {self.closes_at} is not after the chain's time {now}")
        if self.scoring_period == 0:
            raise ConfigError("scoring_period must be positive")
        if not 1 <= self.submission_cap < _U16:
            raise ConfigError(f"submission_cap must be 1..{_U16 - 1}, got {self.submission_cap}")
        if not 0 <= self.max_parameters < _U32:
            raise ConfigError(f"max_parameters must fit 32 bits, got {self.max_parameters}")
        architectures = int(self.architectures)
        if architectures == 0 or architectures & ~int(ALL_ARCHITECTURES):
            raise ConfigError(f"architectures must be a non-empty set of {[a.name for a in Architecture]}, got {architectures}")
        try:
            PurchasePolicy(self.purchase_policy)
        except ValueError as e:
            raise ConfigError(f"purchase_policy must be one of {[p.name for p in PurchasePolicy]}, got {self.purchase_policy}") from e

    def as_tuple(self) -> tuple[bytes, bytes, bytes, int, int, int, int, int, int, int, int, int, int, int]:
        """The ABI tuple, in struct order."""
        return (
            self.test_set_hash, self.schema_hash, self.rules_hash, int(self.prize), int(self.metric), self.public_split_bps,
            self.ladder_step, self.opens_at, self.closes_at, self.scoring_period, self.submission_cap, self.max_parameters,
            int(self.architectures), int(self.purchase_policy),
        )  # fmt: skip

    @classmethod
    def from_tuple(cls, t: Sequence[Any] | Mapping[str, Any]) -> CompetitionTerms:
        """The terms from the ABI tuple (a view's output) or the name-keyed struct (an event's argument)."""
        if isinstance(t, Mapping):
            t = [t[name] for name in _TERMS_FIELDS]
        return cls(
            test_set_hash=bytes(t[0]),
            schema_hash=bytes(t[1]),
            rules_hash=bytes(t[2]),
            prize=Wei(int(t[3])),
            metric=Metric(int(t[4])),
            public_split_bps=int(t[5]),
            ladder_step=int(t[6]),
            opens_at=int(t[7]),
            closes_at=int(t[8]),
            scoring_period=int(t[9]),
            submission_cap=int(t[10]),
            max_parameters=int(t[11]),
            architectures=Architecture(int(t[12])),
            purchase_policy=PurchasePolicy(int(t[13])),
        )


@dataclass(frozen=True)
class CompetitionRecord:
    """``CompetitionMarket.competitionOf(id)``."""

    competition_id: CompetitionId
    organizer: str
    status: CompetitionStatus
    terms: CompetitionTerms
    submission_count: int
    next_public: int
    """Index of the next submission to score on the public split (public scores go in order)."""
    private_scored: int
    """Submissions scored on the private split."""
    public_best: int
    """The leaderboard's best; 0 (higher-is-better) or :data:`NO_SCORE_LOWER_IS_BETTER` before any."""
    leader: int | None
    """Index of the best private score so far (ties: the earlier submission); ``None`` before any."""
    leader_score: int
    """Its private score (0 before any)."""

    @property
    def fully_scored(self) -> bool:
        """Every submission has a private score (the organizer may close once the window is over)."""
        return self.private_scored == self.submission_count


@dataclass(frozen=True)
class SubmissionRecord:
    """``CompetitionMarket.submissionOf(id, index)``."""

    competition_id: CompetitionId
    index: int
    participant: str
    content_hash: bytes
    """SHA-256 of the sealed model's ciphertext."""
    ask_price: Wei
    """What a buyer pays after the close; 0 = not for sale."""
    submitted_at: int
    public_score: int
    """The Ladder's leaderboard value released for it (valid if ``public_scored``)."""
    private_score: int
    """Valid if ``private_scored``."""
    public_scored: bool
    private_scored: bool


def deploy_competition_market(
    chain: Chain,
    governance: LocalAccount,
    registry: str,
    payment_token: str | None = None,
    *,
    admin_delay: int = DEFAULT_ADMIN_DELAY,
) -> tuple[str, TxResult]:
    """Deploy a ``CompetitionMarket`` over the enclave registry at ``registry``, governed by ``governance``.

    (:func:`marketplace.contracts.deploy` deploys one with the other contracts.)

    Args:
        payment_token: the ERC-20 token prizes and purchases use; ``None`` (or the zero address)
            for the native currency.
        admin_delay: seconds a governance handover must wait.

    Returns:
        The market's address and the deployment transaction.

    Raises:
        ConfigError: ``admin_delay`` is out of range, or ``payment_token`` is not a contract.
        ContractReverted: the constructor reverted.
    """
    if not 0 <= admin_delay <= MAX_ADMIN_DELAY:
        raise ConfigError(f"admin_delay must fit 48 bits, got {admin_delay}")
    token = ZERO_ADDRESS
    if payment_token is not None:
        try:
            token = str(to_checksum_address(payment_token))
        except ValueError as e:
            raise ConfigError(f"payment token {payment_token!r} is not an address") from e
        if token != ZERO_ADDRESS and not chain.w3.eth.get_code(_web3_address(token)):
            raise ConfigError(f"payment token {token} is not a contract on chain {chain.chain_id}")
    address, result = _deploy_one(chain, governance, "CompetitionMarket", registry, token, admin_delay, governance.address)
    logger.info("deployed competition market %s over registry %s on chain %d", address, registry, chain.chain_id)
    return address, result


# --- events --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Logged:
    block_number: int
    log_index: int
    tx_hash: str


@dataclass(frozen=True)
class CompetitionCreated(_Logged):
    competition_id: CompetitionId
    organizer: str
    terms: CompetitionTerms


@dataclass(frozen=True)
class Submitted(_Logged):
    competition_id: CompetitionId
    index: int
    participant: str
    content_hash: bytes
    weights_hash: bytes
    """SHA-256 of the plaintext weights (kept only in this event: a buyer checks what it decrypts against it)."""
    ask_price: Wei


@dataclass(frozen=True)
class ScorePosted(_Logged):
    competition_id: CompetitionId
    index: int
    split: Split
    score: int
    evaluator: str


@dataclass(frozen=True)
class CompetitionClosed(_Logged):
    competition_id: CompetitionId
    winner_index: int | None
    """The winning submission; ``None`` when nothing was scored and the prize went back to the organizer."""
    winner: str | None
    prize: Wei


@dataclass(frozen=True)
class ModelBought(_Logged):
    competition_id: CompetitionId
    index: int
    buyer: str
    price: Wei
    buyer_key: bytes
    """The buyer's X25519 public key the key manager wraps the model key to."""


CompetitionEvent = CompetitionCreated | Submitted | ScorePosted | CompetitionClosed | ModelBought
COMPETITION_EVENTS = frozenset({"CompetitionCreated", "Submitted", "ScorePosted", "CompetitionClosed", "ModelBought"})
"""The events :meth:`CompetitionMarketClient.changes` reports (payments and governance are left out)."""


def _event(name: str, data: EventData) -> CompetitionEvent:
    a = data["args"]
    block, position, tx = int(data["blockNumber"]), int(data["logIndex"]), "0x" + bytes(data["transactionHash"]).hex()
    competition_id = CompetitionId(int(a["competitionId"]))
    if name == "CompetitionCreated":
        return CompetitionCreated(
            block, position, tx, competition_id=competition_id, organizer=str(a["organizer"]), terms=CompetitionTerms.from_tuple(a["terms"])
        )
    if name == "Submitted":
        return Submitted(
            block, position, tx, competition_id=competition_id, index=int(a["index"]), participant=str(a["participant"]),
            content_hash=bytes(a["contentHash"]), weights_hash=bytes(a["weightsHash"]), ask_price=Wei(int(a["askPrice"])),
        )  # fmt: skip
    if name == "ScorePosted":
        return ScorePosted(
            block, position, tx, competition_id=competition_id, index=int(a["index"]), split=Split(int(a["split"])), score=int(a["score"]),
            evaluator=str(a["evaluator"]),
        )  # fmt: skip
    if name == "CompetitionClosed":
        none = int(a["winnerIndex"]) == _NO_LEADER
        return CompetitionClosed(
            block, position, tx, competition_id=competition_id, winner_index=None if none else int(a["winnerIndex"]),
            winner=None if none else str(a["winner"]), prize=Wei(int(a["prize"])),
        )  # fmt: skip
    return ModelBought(
        block, position, tx, competition_id=competition_id, index=int(a["index"]), buyer=str(a["buyer"]), price=Wei(int(a["price"])),
        buyer_key=bytes(a["buyerKey"]),
    )  # fmt: skip


# --- client --------------------------------------------------------------------------------------


class CompetitionMarketClient(PullPaymentsClient):
    """Typed access to ``CompetitionMarket`` (competitions, submissions, scores, purchases, payments).

    The payment currency, :meth:`withdraw` and :meth:`credits` are
    :class:`~marketplace.payments.PullPaymentsClient`'s (the contract's ``PullPayments``).
    """

    _WITHDRAW_NAME = "withdraw (competitions)"

    def __init__(self, chain: Chain, address: str) -> None:
        artifact = load_artifact("CompetitionMarket")
        chain.register_errors(artifact["abi"])
        chain.register_errors(load_artifact("EnclaveRegistry")["abi"])
        chain.register_errors(_TOKEN_ERRORS)
        self.chain = chain
        self.contract: Contract = chain.w3.eth.contract(address=_web3_address(address), abi=artifact["abi"])
        self.address = address
        self._event_names = {
            event_abi_to_log_topic(item): str(item["name"])
            for item in artifact["abi"]
            if item.get("type") == "event" and item["name"] in COMPETITION_EVENTS
        }

    @property
    def address_bytes(self) -> bytes:
        return bytes.fromhex(self.address[2:])

    def domain(self) -> dict[str, Any]:
        """The EIP-712 domain admissions and score receipts are signed under."""
        return competition_domain(self.chain.chain_id, self.address_bytes)

    def registry(self) -> str:
        """The ``EnclaveRegistry`` whose key managers admit submissions and whose evaluators sign scores."""
        return str(self.chain.call(self.contract.functions.registry()))

    # --- competitions -----------------------------------------------------------------------

    def create_competition(self, organizer: LocalAccount, terms: CompetitionTerms) -> tuple[CompetitionId, TxResult]:
        """Create a competition organized by ``organizer``, escrowing ``terms.prize``.

        In native mode the transaction sends the prize; in token mode the market is first
        approved for it (if its allowance is lower), then pulls it.

        Raises:
            ConfigError: the terms are out of range or the window is already over (checked before sending).
            ContractReverted: e.g. ``CompetitionMarketInvalidWindow`` (the window ended before the
                transaction landed), ``ERC20InsufficientBalance``,
                ``PullPaymentsTokenTransferShortfall``.

        Example:
            >>> competition_id, _ = market.create_competition(organizer, terms)  # doctest: +SKIP
        """
        terms.validate(now=self.chain.now())
        value = self._pay(organizer, terms.prize)
        result = self.chain.transact(organizer, self.contract.functions.createCompetition(terms.as_tuple()), value=value)
        (event,) = self.contract.events.CompetitionCreated().process_receipt(result.receipt, errors=DISCARD)
        competition_id = CompetitionId(int(event["args"]["competitionId"]))
        logger.info("created competition %d (prize %d) in tx %s", competition_id, terms.prize, result.tx_hash)
        return competition_id, result

    def close(self, sender: LocalAccount, competition_id: int) -> TxResult:
        """Close a competition and credit its prize to the winner (or back to the organizer).

        Before ``terms.open_to_all_at`` only the organizer may, once every submission is
        privately scored; from then on anyone.

        Raises:
            ContractReverted: ``CompetitionMarketSubmissionsStillOpen``, ``CompetitionMarketNotOrganizer``,
                ``CompetitionMarketScoringIncomplete``, ``CompetitionMarketInvalidStatus`` (closed already).
        """
        return self.chain.transact(sender, self.contract.functions.close(competition_id), name="close competition")

    def competition(self, competition_id: int) -> CompetitionRecord:
        """The competition ``competition_id``.

        Raises:
            ContractReverted: ``CompetitionMarketUnknownCompetition``.
        """
        c = self.chain.call(self.contract.functions.competitionOf(competition_id))
        organizer, status, terms, count, next_public, private_scored, public_best, leader, leader_score, has_leader = c
        return CompetitionRecord(
            competition_id=CompetitionId(competition_id),
            organizer=str(organizer),
            status=CompetitionStatus(int(status)),
            terms=CompetitionTerms.from_tuple(terms),
            submission_count=int(count),
            next_public=int(next_public),
            private_scored=int(private_scored),
            public_best=int(public_best),
            leader=int(leader) if has_leader else None,
            leader_score=int(leader_score),
        )

    def competition_count(self) -> int:
        """Competitions created so far (ids run from 1 to this)."""
        return int(self.chain.call(self.contract.functions.competitionCount()))

    # --- submissions ------------------------------------------------------------------------

    def submit(
        self, participant: LocalAccount, competition_id: int, content_hash: bytes, weights_hash: bytes, ask_price: Wei | int,
        admission: bytes,
    ) -> tuple[int, TxResult]:  # fmt: skip
        """Submit ``participant``'s sealed model, admitted by a key manager's ``admission`` signature.

        Args:
            content_hash: SHA-256 of the sealed model's ciphertext.
            weights_hash: SHA-256 of the plaintext weights (logged for buyers).
            ask_price: what a buyer pays after the close; 0 = not for sale.
            admission: the key manager's EIP-712 :class:`~enclave_worker.trusted.competition.Admission`
                signature for (``competition_id``, ``participant``, ``content_hash``, ``weights_hash``).

        Returns:
            The submission's index in the competition and the transaction.

        Raises:
            ConfigError: a hash is not 32 bytes or the price does not fit 96 bits.
            ContractReverted: ``CompetitionMarketOutsideSubmissionWindow``,
                ``CompetitionMarketSubmissionCapReached``, ``CompetitionMarketDuplicateSubmission``
                (a copied ciphertext), ``CompetitionMarketInvalidAdmission``, ...
        """
        if len(content_hash) != 32 or len(weights_hash) != 32:
            raise ConfigError("content_hash and weights_hash must be 32 bytes")
        if not 0 <= ask_price <= MAX_ASK_PRICE:
            raise ConfigError(f"ask_price must fit 96 bits, got {ask_price}")
        fn = self.contract.functions.submit(competition_id, content_hash, weights_hash, int(ask_price), admission)
        result = self.chain.transact(participant, fn, name="submit (competition)")
        (event,) = self.contract.events.Submitted().process_receipt(result.receipt, errors=DISCARD)
        return int(event["args"]["index"]), result

    def submission(self, competition_id: int, index: int) -> SubmissionRecord:
        """Submission ``index`` of ``competition_id``.

        Raises:
            ContractReverted: ``CompetitionMarketUnknownSubmission``.
        """
        s = self.chain.call(self.contract.functions.submissionOf(competition_id, index))
        participant, content_hash, ask_price, submitted_at, public_score, private_score, public_scored, private_scored = s
        return SubmissionRecord(
            competition_id=CompetitionId(competition_id),
            index=index,
            participant=str(participant),
            content_hash=bytes(content_hash),
            ask_price=Wei(int(ask_price)),
            submitted_at=int(submitted_at),
            public_score=int(public_score),
            private_score=int(private_score),
            public_scored=bool(public_scored),
            private_scored=bool(private_scored),
        )

    def submissions(self, competition_id: int) -> list[SubmissionRecord]:
        """Every submission of ``competition_id``, in index order (one call each)."""
        count = self.competition(competition_id).submission_count
        return [self.submission(competition_id, i) for i in range(count)]

    def submissions_by(self, competition_id: int, participant: str) -> int:
        """How many submissions ``participant`` made to ``competition_id``."""
        return int(self.chain.call(self.contract.functions.submissionsBy(competition_id, participant)))

    def weights_hash(self, competition_id: int, index: int, *, from_block: int = 0) -> bytes:
        """The plaintext weights hash submission ``index`` was admitted with (from its ``Submitted`` event).

        Raises:
            ContractReverted: ``CompetitionMarketUnknownSubmission``.
            ChainUnavailable: the node no longer serves the event's logs (search from a later ``from_block``
                on a node that keeps them).
        """
        self.submission(competition_id, index)
        logs = self.contract.events.Submitted().get_logs(from_block=from_block, argument_filters={"competitionId": competition_id})
        for log in logs:
            if int(log["args"]["index"]) == index:
                return bytes(log["args"]["weightsHash"])
        raise ChainUnavailable(f"the node has no Submitted log of submission {index} of competition {competition_id}")

    # --- scores -----------------------------------------------------------------------------

    def post_score(self, sender: LocalAccount, receipt: ScoreReceipt, signature: bytes) -> TxResult:
        """Post an evaluator's signed score receipt (anyone may send it).

        Raises:
            ContractReverted: ``CompetitionMarketUnknownEvaluator`` (not an active evaluator, or
                an altered receipt), ``CompetitionMarketPublicScoreOutOfOrder``,
                ``CompetitionMarketStalePreviousBest``, ``CompetitionMarketAlreadyScored``,
                ``CompetitionMarketPrivateScoringNotStarted``, ...
        """
        fn = self.contract.functions.postScore(receipt.as_tuple(), signature)
        split = Split(receipt.split).name.lower() if receipt.split in set(Split) else f"split {int(receipt.split)}"
        return self.chain.transact(sender, fn, name=f"postScore ({split})")

    def hash_score(self, receipt: ScoreReceipt) -> bytes:
        """The contract's EIP-712 digest of ``receipt``."""
        return bytes(self.chain.call(self.contract.functions.hashScore(receipt.as_tuple())))

    def hash_admission(self, admission: Admission) -> bytes:
        """The contract's EIP-712 digest of ``admission``."""
        m = admission.message()
        fn = self.contract.functions.hashAdmission(m["competitionId"], m["participant"], m["contentHash"], m["weightsHash"])
        return bytes(self.chain.call(fn))

    # --- purchases --------------------------------------------------------------------------

    def buy(self, buyer: LocalAccount, competition_id: int, index: int, buyer_key: bytes) -> TxResult:
        """Buy submission ``index`` of a closed competition at its ask price.

        The price is read from the chain first; in native mode the transaction sends it, in
        token mode the market is approved for it first (if its allowance is lower).

        Args:
            buyer_key: the buyer's 32-byte X25519 public key; the key manager wraps the model key to it.

        Raises:
            ContractReverted: ``CompetitionMarketInvalidStatus`` (not closed),
                ``CompetitionMarketNotForSale``, ``CompetitionMarketBuyerNotAllowed``,
                ``CompetitionMarketAlreadyBought``, ``CompetitionMarketUnknownSubmission``, ...
        """
        price = self.submission(competition_id, index).ask_price
        value = self._pay(buyer, price)
        fn = self.contract.functions.buy(competition_id, index, buyer_key)
        return self.chain.transact(buyer, fn, value=value, name="buy (competition model)")

    def purchase_key(self, competition_id: int, index: int, buyer: str, *, block: BlockIdentifier = "latest") -> bytes:
        """The X25519 key ``buyer`` bought submission ``index`` with (as of ``block``); 32 zero bytes if it did not buy it."""
        return bytes(self.chain.call(self.contract.functions.purchaseOf(competition_id, index, buyer), block=block))

    # --- events -----------------------------------------------------------------------------

    def changes(self, from_block: int, to_block: int) -> list[CompetitionEvent]:
        """The competition events of blocks ``from_block`` to ``to_block`` (both included), in
        log order: creations, submissions, scores, closes and purchases (one ``eth_getLogs`` call),
        for the evaluator's watcher and the indexer."""
        logs = self.chain.w3.eth.get_logs({"address": self.contract.address, "fromBlock": from_block, "toBlock": to_block})
        events: list[CompetitionEvent] = []
        for log in logs:
            name = self._decodable(log)
            if name is not None:
                events.append(_event(name, self.contract.events[name]().process_log(log)))
        return events

    def _decodable(self, log: LogReceipt) -> str | None:
        topics = log["topics"]
        return self._event_names.get(bytes(topics[0])) if topics else None
