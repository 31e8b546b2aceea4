"""The index's state from the chain's events: one pure step per ``JobMarket`` / ``EnclaveRegistry`` /
``CompetitionMarket`` log.

:func:`apply` folds one decoded log into an :class:`IndexState`: it reads and changes only the
state it is given (no database, no chain), so the same logs applied to the same state always
leave the same state behind. This is the only place that says what an event means:

- datasets: terms (``DatasetListed``, ``TermsUpdated``), ε ledger (listed, reserved, released,
  debited, topped up), status (``DatasetStatusChanged``), restriction flags and allow-lists
  (``AccessRestricted``, ``Consumer…``/``Model…`` ``Allowed``/``Disallowed``), datasheet (``DatasheetSet``);
- jobs: status, price snapshots (from the ``EpsilonReserved`` logs just before ``JobCreated``),
  claim and its holder, lease expiry (``JobClaimed``, ``LeaseRenewed``), releases (``ClaimReleased``:
  Open again), charges of lapsed claims (``ClaimCharged``), result hashes and refund;
- operator stakes (``StakeDeposited``, ``UnstakeRequested``, ``StakeWithdrawn``, ``StakeSlashed``)
  and the market's money totals (:class:`MarketTotals`: Σ pending, locked escrow, total stake and
  what came in and went out), which let the index check conservation;
- the market's emergency stop (``Paused``/``Unpaused``); measurements, enclaves and revocations;
- competitions (:data:`COMPETITION_EVENTS` of the competition market, whose own ``PaymentCredited``
  and ``Withdrawn`` the indexer leaves out): terms, organizer and status (``CompetitionCreated``,
  ``CompetitionClosed`` with its winner, checked against the private ranking), every submission
  (``Submitted``) with its public and private score, the leaderboard's best and next public index
  and the private leader, as ``competitionOf`` / ``submissionOf`` report them (``ScorePosted``);
- the history the index keeps: every change of a dataset's ε ledger (:class:`BudgetRecord`), every
  stage of a job (:class:`JobStageRecord`), every credit and withdrawal (:class:`PaymentRecord`),
  every posted score (:class:`ScoreRecord`) and every bought competition model (:class:`PurchaseRecord`).

:class:`oracle.indexer.Indexer` loads the rows a batch of logs touches (:func:`touched`) into an
``IndexState``, folds the batch, and writes the state and the new history back in the same
database transaction. Values are held as the index stores them: hashes and keys as ``0x`` + lowercase
hex, addresses checksummed, integers exact; every state field has the name of its column.

Example:
    >>> state = replay(logs)  # doctest: +SKIP
    >>> state.datasets[1].remaining_epsilon
    9000000
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from marketplace.competitions import NO_SCORE_LOWER_IS_BETTER, CompetitionStatus, Metric, Split
from marketplace.contracts import DEFAULT_CLAIM_LEASE, DatasetStatus, JobStatus
from marketplace.errors import SterlingError

logger = logging.getLogger(__name__)

BudgetKind = Literal["listed", "terms_updated", "topped_up", "reserved", "released", "debited"]
JobStage = Literal["created", "claimed", "renewed", "released", "charged", "slashed", "settled", "expired", "cancelled"]
PaymentKind = Literal["credited", "withdrawn"]

COMPETITION_EVENTS: frozenset[str] = frozenset({"CompetitionCreated", "Submitted", "ScorePosted", "CompetitionClosed", "ModelBought"})
"""The competition market's events the fold follows (:data:`marketplace.competitions.COMPETITION_EVENTS`)."""
NO_LEADER = 2**32 - 1
"""``CompetitionMarket.NO_LEADER``: the ``winnerIndex`` of a close when no submission has a private score."""


class InconsistentLogs(SterlingError):
    """The logs contradict the state folded so far (a dataset never listed, a ledger below zero, …).

    A consistent chain never gets here: the contracts check what the events report.
    """


class PaymentReason(enum.StrEnum):
    """Why a credit was made (:attr:`PaymentRecord.reason`)."""

    CHANGE = "change"
    """The part of ``maxTotalPrice`` above the job's price, credited back at creation."""
    REFUND = "refund"
    """A cancelled or expired job's escrow."""
    PAYOUT = "payout"
    """A provider's price or the worker fee, at settlement."""
    SLASH = "slash"
    """A provider's share of an operator's slashed stake (after ``StakeSlashed``)."""
    STAKE = "stake"
    """An operator's unbonded stake (after ``StakeWithdrawn``; no job)."""


def hex0x(value: bytes | bytearray) -> str:
    """``0x``-prefixed lowercase hex of raw bytes."""
    return "0x" + bytes(value).hex()


# --------------------------------------------------------------------------- input


@dataclass(frozen=True)
class DecodedLog:
    """One decoded log with where and when it happened.

    ``args`` are the event's arguments as web3 decodes them (``bytes``, checksummed addresses,
    ``int``, structs as mappings by field name); ``extra`` holds facts read beside the log (the
    verifier of an ``EnclaveRegistered`` certificate; the market's ``claim_lease`` seconds for a
    ``JobClaimed``, which does not carry its lease expiry).
    """

    name: str
    args: dict[str, Any]
    contract: str
    block: int
    timestamp: int
    tx_hash: str
    log_index: int
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- state


@dataclass(frozen=True)
class LogPosition:
    """The log that put an entry on an allow-list."""

    block: int
    tx_hash: str
    log_index: int


@dataclass
class DatasetState:
    """A listed dataset: its current terms, status, access restrictions and ε ledger.

    The allow-lists are the raw on-chain mappings (they only matter while the matching flag is
    set), each entry with the log that added it.
    """

    id: int
    provider: str
    content_hash: str
    schema_hash: str
    uri: str
    price_wei: int
    max_epsilon_per_job: int
    total_epsilon: int
    max_delta: int
    expiry: int
    listed_block: int
    listed_at: int
    listed_tx: str
    updated_block: int
    """The block of the last change to the terms, status or restrictions (the listing at first)."""
    spent_epsilon: int = 0
    reserved_epsilon: int = 0
    status: DatasetStatus = DatasetStatus.ACTIVE
    restricted: bool = False
    models_restricted: bool = False
    datasheet_hash: str | None = None
    """The SHA-256 of the provider's current datasheet (``DatasheetSet``; zero withdraws it)."""
    consumers: dict[str, LogPosition] = field(default_factory=dict)
    models: dict[str, LogPosition] = field(default_factory=dict)

    @property
    def remaining_epsilon(self) -> int:
        """ε still available: total budget - spent - reserved."""
        return self.total_epsilon - self.spent_epsilon - self.reserved_epsilon


@dataclass
class JobState:
    """A training job and its current state; ``prices`` are the per-dataset snapshots of its creation."""

    id: int
    consumer: str
    status: JobStatus
    model_spec_hash: str
    epsilon: int
    delta: int
    consumer_key: str
    escrow_wei: int
    worker_fee_wei: int
    claim_deadline: int
    """While Open, the last second it can be claimed (``JobCreated``; the completion deadline after a
    ``ClaimReleased``); 0 otherwise, as ``job()`` reports it."""
    completion_deadline: int
    created_block: int
    created_at: int
    created_tx: str
    updated_block: int
    dataset_ids: tuple[int, ...]
    prices: tuple[int, ...]
    enclave: str | None = None
    """The holding enclave while Claimed (the last holder once settled or expired; ``None`` while Open)."""
    operator: str | None = None
    """The enclave's operator when it claimed the job."""
    lease_expiry: int = 0
    """While Claimed: the claim lapses after this second unless renewed (0 otherwise, as ``job()``)."""
    charges: int = 0
    """Lapsed claims whose ε was debited (``ClaimCharged``): each dataset's ε was spent ``charges`` extra times."""
    epsilon_spent: int | None = None
    model_hash: str | None = None
    result_hash: str | None = None
    metrics_hash: str | None = None
    refund_wei: int | None = None
    """Escrow credited back to the consumer by ``JobCancelled`` or ``JobExpired``."""


@dataclass
class OperatorStake:
    """An operator's stake, as ``stakeOf`` reports it, plus what was slashed from it over time."""

    operator: str
    amount: int = 0
    unbonding_end: int = 0
    """0 while it may claim; else the second its stake can be withdrawn (``UnstakeRequested``)."""
    slashed_wei: int = 0
    """Σ ``StakeSlashed`` of the operator (gone to providers)."""
    updated_block: int = 0


@dataclass
class MarketTotals:
    """The market's money, from the events: where it is and what came in and went out.

    ``balance_wei`` (Σ in - Σ out) is what the market holds; conservation says it equals
    ``pending_wei + locked_escrow_wei + total_stake_wei`` after every transaction.
    """

    pending_wei: int = 0
    """Σ credited - Σ withdrawn over all accounts (Σ ``pendingWithdrawal``)."""
    locked_escrow_wei: int = 0
    """Σ escrow of Open and Claimed jobs (``lockedEscrow``)."""
    total_stake_wei: int = 0
    """Σ operator stakes (``totalStake``)."""
    received_wei: int = 0
    """Σ paid in: escrow and change at creation, stake deposits."""
    paid_out_wei: int = 0
    """Σ ``Withdrawn``."""
    updated_block: int = 0

    @property
    def balance_wei(self) -> int:
        """What the market holds by its events (its native or token balance)."""
        return self.received_wei - self.paid_out_wei

    @property
    def imbalance_wei(self) -> int:
        """``balance - (Σ pending + locked escrow + total stake)``: 0 between transactions of a consistent chain."""
        return self.balance_wei - (self.pending_wei + self.locked_escrow_wei + self.total_stake_wei)

    @property
    def conserved(self) -> bool:
        """No total below zero and no imbalance (the totals of a whole chain, between transactions).

        A state folded from part of the chain (hand-written logs, a partial index) holds changes,
        not totals, and need not satisfy this.
        """
        parts = (self.pending_wei, self.locked_escrow_wei, self.total_stake_wei, self.balance_wei)
        return min(parts) >= 0 and self.imbalance_wei == 0


@dataclass
class MarketPause:
    """The market-wide emergency stop and its last change."""

    paused: bool
    changed_block: int
    changed_at: int
    changed_by: str


@dataclass
class MeasurementState:
    """Governance's last decision on one (role, measurement)."""

    approved: bool
    block: int


@dataclass
class EnclaveState:
    """A registered enclave's latest certificate."""

    role: int
    measurement: str
    encryption_key: str
    operator: str
    valid_until: int
    verifier: str | None
    registered_block: int
    registered_at: int
    registered_tx: str


@dataclass(frozen=True)
class Revocation:
    """Governance revoked an enclave instance for good (the first revocation)."""

    block: int
    timestamp: int
    tx_hash: str


@dataclass(frozen=True)
class Reservation:
    """An ``EpsilonReserved`` waiting for the ``JobCreated`` that follows it in the same transaction."""

    dataset_id: int
    epsilon: int
    price_wei: int
    tx_hash: str


@dataclass
class CompetitionState:
    """A competition as ``competitionOf`` reports it: its terms (fixed at creation), status,
    leaderboard (public best, next public index), private ranking (leader) and, once closed, its winner."""

    id: int
    organizer: str
    test_set_hash: str
    schema_hash: str
    rules_hash: str
    prize_wei: int
    metric: int
    """:class:`~marketplace.competitions.Metric`'s value."""
    public_split_bps: int
    ladder_step: int
    opens_at: int
    closes_at: int
    scoring_period: int
    submission_cap: int
    max_parameters: int
    architectures: int
    """A mask of :class:`~marketplace.competitions.Architecture` bits."""
    purchase_policy: int
    """:class:`~marketplace.competitions.PurchasePolicy`'s value."""
    public_best: int
    """The leaderboard's best: 0 (higher-is-better) or :data:`NO_SCORE_LOWER_IS_BETTER` before any public score."""
    created_block: int
    created_at: int
    created_tx: str
    updated_block: int
    """The block of the last change (a submission, a score, the close; the creation at first)."""
    status: CompetitionStatus = CompetitionStatus.OPEN
    submission_count: int = 0
    next_public: int = 0
    """Index of the next submission to score on the public split."""
    private_scored: int = 0
    leader: int | None = None
    """Index of the best private score so far (ties: the earlier submission); ``None`` before any."""
    leader_score: int = 0
    winner_index: int | None = None
    """Once closed: the submission that won the prize (``None``: nothing was scored, the prize went back)."""
    winner: str | None = None
    """Once closed: its participant, credited the prize."""
    closed_block: int | None = None
    closed_at: int | None = None


@dataclass
class SubmissionState:
    """A submission to a competition, as ``submissionOf`` reports it, plus its weights hash (only in ``Submitted``)."""

    competition_id: int
    index: int
    participant: str
    content_hash: str
    weights_hash: str
    ask_price_wei: int
    submitted_at: int
    """The block time of its ``Submitted`` (the contract's ``submittedAt``)."""
    submitted_block: int
    submitted_tx: str
    updated_block: int
    public_score: int | None = None
    """The Ladder's leaderboard value released for it; ``None`` until scored on the public split."""
    private_score: int | None = None
    """``None`` until scored on the private split."""


# --------------------------------------------------------------------------- history


@dataclass(frozen=True)
class BudgetRecord:
    """One change of a dataset's ε ledger; ``epsilon`` holds, by ``kind``: ``listed`` the total
    budget, ``reserved`` the job's ε (``price_wei``: the price the job pays), ``released`` the ε
    given back, ``debited`` the ε spent, ``topped_up`` the ε added, ``terms_updated`` the new total."""

    dataset_id: int
    job_id: int | None
    kind: BudgetKind
    epsilon: int
    remaining_epsilon: int
    total_epsilon: int
    price_wei: int | None
    block: int
    timestamp: int
    tx_hash: str
    log_index: int


@dataclass(frozen=True)
class JobStageRecord:
    """One stage of a job's timeline."""

    job_id: int
    stage: JobStage
    block: int
    timestamp: int
    tx_hash: str
    log_index: int
    enclave: str | None = None
    operator: str | None = None
    epsilon_spent: int | None = None
    amount_wei: int | None = None


@dataclass(frozen=True)
class PaymentRecord:
    """Money credited to an account (with its reason) or withdrawn by it (``reason`` ``None``)."""

    account: str
    job_id: int | None
    kind: PaymentKind
    reason: PaymentReason | None
    amount_wei: int
    block: int
    timestamp: int
    tx_hash: str
    log_index: int


@dataclass(frozen=True)
class ScoreRecord:
    """One posted score (``ScorePosted``): for the public split the leaderboard's new best, for the private the score."""

    competition_id: int
    index: int
    split: Split
    score: int
    evaluator: str
    block: int
    timestamp: int
    tx_hash: str
    log_index: int


@dataclass(frozen=True)
class PurchaseRecord:
    """A submitted model bought after its competition closed (``ModelBought``)."""

    competition_id: int
    index: int
    buyer: str
    price_wei: int
    block: int
    timestamp: int
    tx_hash: str
    log_index: int


@dataclass
class IndexState:
    """What the fold reads and writes: state by key, plus the history the applied logs produced.

    It may hold only part of the index (the entries a batch of logs touches, see :func:`touched`):
    every event names the entries it changes.
    """

    datasets: dict[int, DatasetState] = field(default_factory=dict)
    jobs: dict[int, JobState] = field(default_factory=dict)
    market: MarketPause | None = None
    measurements: dict[tuple[int, str], MeasurementState] = field(default_factory=dict)
    enclaves: dict[str, EnclaveState] = field(default_factory=dict)
    revocations: dict[str, Revocation] = field(default_factory=dict)
    budget_events: list[BudgetRecord] = field(default_factory=list)
    job_events: list[JobStageRecord] = field(default_factory=list)
    payments: list[PaymentRecord] = field(default_factory=list)
    reservations: dict[int, list[Reservation]] = field(default_factory=dict)
    """By job id; empty again after each complete transaction."""
    stakes: dict[str, OperatorStake] = field(default_factory=dict)
    totals: MarketTotals = field(default_factory=MarketTotals)
    """The whole market's totals (the indexer always loads them)."""
    credits_due: dict[tuple[str, int], tuple[PaymentReason, int]] = field(default_factory=dict)
    """By (tx hash, job id): credits a ``StakeSlashed`` or ``StakeWithdrawn`` announced, with the
    amount still to come; empty again after each complete transaction."""
    competitions: dict[int, CompetitionState] = field(default_factory=dict)
    submissions: dict[tuple[int, int], SubmissionState] = field(default_factory=dict)
    """By (competition id, index)."""
    scores: list[ScoreRecord] = field(default_factory=list)
    purchases: list[PurchaseRecord] = field(default_factory=list)


@dataclass(frozen=True)
class StateKeys:
    """The state entries a batch of logs reads or writes."""

    datasets: frozenset[int]
    jobs: frozenset[int]
    enclaves: frozenset[str]
    """Signers (of ``EnclaveRegistered`` and ``EnclaveRevoked``)."""
    measurements: frozenset[tuple[int, str]]
    market: bool
    """Whether the market's pause flag changes."""
    operators: frozenset[str] = frozenset()
    """Operators whose stake changes (the market's totals are always needed)."""
    competitions: frozenset[int] = frozenset()
    submissions: frozenset[tuple[int, int]] = frozenset()
    """(competition id, index) of the submissions the logs name (a close: its winner)."""


def touched(logs: Iterable[DecodedLog]) -> StateKeys:
    """The entries :func:`apply` needs in the state to fold ``logs``."""
    datasets: set[int] = set()
    jobs: set[int] = set()
    enclaves: set[str] = set()
    measurements: set[tuple[int, str]] = set()
    operators: set[str] = set()
    competitions: set[int] = set()
    submissions: set[tuple[int, int]] = set()
    market = False
    for log in logs:
        a = log.args
        if log.name in COMPETITION_EVENTS:
            competition_id = int(a["competitionId"])
            competitions.add(competition_id)
            if "index" in a:
                submissions.add((competition_id, int(a["index"])))
            if log.name == "CompetitionClosed" and int(a["winnerIndex"]) != NO_LEADER:
                submissions.add((competition_id, int(a["winnerIndex"])))
            continue
        if "datasetId" in a:
            datasets.add(int(a["datasetId"]))
        datasets.update(int(d) for d in a.get("datasetIds", ()))
        if "jobId" in a:
            jobs.add(int(a["jobId"]))
        if log.name in ("EnclaveRegistered", "EnclaveRevoked"):
            enclaves.add(str(a["signer"]))
        if log.name in ("MeasurementApproved", "MeasurementRevoked"):
            measurements.add((int(a["role"]), hex0x(a["measurement"])))
        if log.name in STAKE_EVENTS:
            operators.add(str(a["operator"]))
        market = market or log.name in ("Paused", "Unpaused")
    return StateKeys(
        frozenset(datasets), frozenset(jobs), frozenset(enclaves), frozenset(measurements), market, frozenset(operators),
        frozenset(competitions), frozenset(submissions),
    )  # fmt: skip


# --------------------------------------------------------------------------- the fold


def apply(state: IndexState, log: DecodedLog) -> None:
    """Apply one log to ``state`` (in place); logs of events the index does not follow change nothing.

    Raises:
        InconsistentLogs: the log names a dataset or job the state does not hold, or would take
            a ledger below zero.
    """
    step = _STEPS.get(log.name)
    if step is not None:
        step(state, log)


def replay(logs: Iterable[DecodedLog], state: IndexState | None = None) -> IndexState:
    """Fold ``logs``, in chain order, into ``state`` (a new, empty one by default) and return it.

    Example:
        >>> replay([]) == IndexState()
        True
    """
    state = state if state is not None else IndexState()
    for log in logs:
        apply(state, log)
    return state


def _dataset(state: IndexState, dataset_id: int) -> DatasetState:
    try:
        return state.datasets[dataset_id]
    except KeyError:  # the market checks existence before it emits
        raise InconsistentLogs(f"event for dataset {dataset_id}, which was never listed") from None


def _job(state: IndexState, job_id: int) -> JobState:
    try:
        return state.jobs[job_id]
    except KeyError:
        raise InconsistentLogs(f"event for job {job_id}, which was never created") from None


def _check_ledger(dataset: DatasetState) -> None:
    """The contract keeps 0 <= spent + reserved <= total; only an inconsistent chain breaks it."""
    if dataset.reserved_epsilon < 0 or dataset.spent_epsilon < 0 or dataset.remaining_epsilon < 0:
        raise InconsistentLogs(
            f"dataset {dataset.id}: ε spent {dataset.spent_epsilon} and reserved {dataset.reserved_epsilon} "
            f"do not fit its total budget {dataset.total_epsilon}"
        )


def _budget(
    state: IndexState, log: DecodedLog, dataset: DatasetState, *, kind: BudgetKind, epsilon: int, job_id: int | None = None,
    price_wei: int | None = None,
) -> None:  # fmt: skip
    """Record the ledger change ``log`` made, with what remains after it."""
    state.budget_events.append(
        BudgetRecord(
            dataset_id=dataset.id,
            job_id=job_id,
            kind=kind,
            epsilon=epsilon,
            remaining_epsilon=dataset.remaining_epsilon,
            total_epsilon=dataset.total_epsilon,
            price_wei=price_wei,
            block=log.block,
            timestamp=log.timestamp,
            tx_hash=log.tx_hash,
            log_index=log.log_index,
        )
    )


def _stage(state: IndexState, log: DecodedLog, job: JobState, stage: JobStage, **fields: Any) -> None:
    state.job_events.append(
        JobStageRecord(
            job_id=job.id, stage=stage, block=log.block, timestamp=log.timestamp, tx_hash=log.tx_hash, log_index=log.log_index, **fields
        )
    )


def _terms(terms: Mapping[str, Any]) -> dict[str, int]:
    """``IDatasetRegistry.Terms`` as the dataset's fields."""
    return {
        "price_wei": int(terms["pricePerJob"]),
        "max_epsilon_per_job": int(terms["maxEpsilonPerJob"]),
        "total_epsilon": int(terms["totalEpsilonBudget"]),
        "max_delta": int(terms["maxDelta"]),
        "expiry": int(terms["expiry"]),
    }


# ---- the dataset registry


def _dataset_listed(state: IndexState, log: DecodedLog) -> None:
    a = log.args
    dataset = DatasetState(
        id=int(a["datasetId"]),
        provider=str(a["provider"]),
        content_hash=hex0x(a["contentHash"]),
        schema_hash=hex0x(a["schemaHash"]),
        uri=str(a["uri"]),
        **_terms(a["terms"]),  # type: ignore[arg-type]  # the five int-valued terms fields, by name
        listed_block=log.block,
        listed_at=log.timestamp,
        listed_tx=log.tx_hash,
        updated_block=log.block,
    )
    state.datasets[dataset.id] = dataset
    _budget(state, log, dataset, kind="listed", epsilon=dataset.total_epsilon)


def _terms_updated(state: IndexState, log: DecodedLog) -> None:
    """New terms replace the old; a new total budget moves what remains (spent and reserved stay)."""
    dataset = _dataset(state, int(log.args["datasetId"]))
    for name, value in _terms(log.args["terms"]).items():
        setattr(dataset, name, value)
    _check_ledger(dataset)
    dataset.updated_block = log.block
    _budget(state, log, dataset, kind="terms_updated", epsilon=dataset.total_epsilon)


def _budget_topped_up(state: IndexState, log: DecodedLog) -> None:
    dataset = _dataset(state, int(log.args["datasetId"]))
    amount, total = int(log.args["amount"]), int(log.args["totalEpsilonBudget"])
    if dataset.total_epsilon + amount != total:
        logger.warning(
            "dataset %d: total budget from events is %d + %d, BudgetToppedUp says %d", dataset.id, dataset.total_epsilon, amount, total
        )
    dataset.total_epsilon = total
    _check_ledger(dataset)
    dataset.updated_block = log.block
    _budget(state, log, dataset, kind="topped_up", epsilon=amount)


def _dataset_status_changed(state: IndexState, log: DecodedLog) -> None:
    dataset = _dataset(state, int(log.args["datasetId"]))
    dataset.status = DatasetStatus(int(log.args["status"]))
    dataset.updated_block = log.block


def _access_restricted(state: IndexState, log: DecodedLog) -> None:
    dataset = _dataset(state, int(log.args["datasetId"]))
    dataset.restricted = bool(log.args["consumers"])
    dataset.models_restricted = bool(log.args["models"])
    dataset.updated_block = log.block


def _datasheet_set(state: IndexState, log: DecodedLog) -> None:
    dataset = _dataset(state, int(log.args["datasetId"]))
    digest = bytes(log.args["datasheetHash"])
    dataset.datasheet_hash = hex0x(digest) if any(digest) else None


def _position(log: DecodedLog) -> LogPosition:
    return LogPosition(log.block, log.tx_hash, log.log_index)


def _consumer_allowed(state: IndexState, log: DecodedLog) -> None:
    # Allowing it again changes nothing, as on-chain: the entry keeps the log that added it.
    _dataset(state, int(log.args["datasetId"])).consumers.setdefault(str(log.args["consumer"]), _position(log))


def _consumer_disallowed(state: IndexState, log: DecodedLog) -> None:
    _dataset(state, int(log.args["datasetId"])).consumers.pop(str(log.args["consumer"]), None)


def _model_allowed(state: IndexState, log: DecodedLog) -> None:
    _dataset(state, int(log.args["datasetId"])).models.setdefault(hex0x(log.args["modelSpecHash"]), _position(log))


def _model_disallowed(state: IndexState, log: DecodedLog) -> None:
    _dataset(state, int(log.args["datasetId"])).models.pop(hex0x(log.args["modelSpecHash"]), None)


# ---- the job market: ε ledger


def _epsilon_reserved(state: IndexState, log: DecodedLog) -> None:
    """A new job's reservation, with the price it pays (emitted before its ``JobCreated``), or the
    reservation a re-claim makes again for an existing job right after charging the lapsed claim."""
    a = log.args
    dataset_id, job_id, epsilon, price = int(a["datasetId"]), int(a["jobId"]), int(a["epsilon"]), int(a["price"])
    dataset = _dataset(state, dataset_id)
    dataset.reserved_epsilon += epsilon
    _check_ledger(dataset)
    job = state.jobs.get(job_id)
    if job is None:  # a createJob: its JobCreated follows in the same transaction
        state.reservations.setdefault(job_id, []).append(Reservation(dataset_id, epsilon, price, log.tx_hash))
    elif job.status is not JobStatus.CLAIMED or dataset_id not in job.dataset_ids or epsilon != job.epsilon:
        raise InconsistentLogs(f"job {job_id} ({job.status.name}) reserves ε {epsilon} again on dataset {dataset_id}")
    _budget(state, log, dataset, kind="reserved", epsilon=epsilon, job_id=job_id, price_wei=price)


def _epsilon_released(state: IndexState, log: DecodedLog) -> None:
    dataset_id, job_id, epsilon = int(log.args["datasetId"]), int(log.args["jobId"]), int(log.args["epsilon"])
    dataset = _dataset(state, dataset_id)
    dataset.reserved_epsilon -= epsilon
    _check_ledger(dataset)
    _budget(state, log, dataset, kind="released", epsilon=epsilon, job_id=job_id)


def _budget_debited(state: IndexState, log: DecodedLog) -> None:
    """A job's reservation on the dataset is replaced by the ε it spent: at settlement, when a
    claimed job expires (its whole ε), or when a re-claim charges a lapsed claim (its whole ε,
    reserved again by the ``EpsilonReserved`` that follows; the job stays Claimed).

    A dataset's spent ε is therefore the sum of its debits, charges included.
    """
    a = log.args
    dataset_id, job_id = int(a["datasetId"]), int(a["jobId"])
    spent, remaining = int(a["epsilonSpent"]), int(a["remaining"])
    dataset, job = _dataset(state, dataset_id), _job(state, job_id)
    if job.status is not JobStatus.CLAIMED or dataset_id not in job.dataset_ids or spent > job.epsilon:
        raise InconsistentLogs(f"job {job_id} ({job.status.name}) debits ε {spent} of {job.epsilon} on dataset {dataset_id}")
    dataset.reserved_epsilon -= job.epsilon  # every dataset of a job reserved the job's ε (checked at creation)
    dataset.spent_epsilon += spent
    _check_ledger(dataset)
    if dataset.remaining_epsilon != remaining:
        raise InconsistentLogs(
            f"dataset {dataset_id}: the ledger from the events leaves {dataset.remaining_epsilon} ε, BudgetDebited says {remaining}"
        )
    _budget(state, log, dataset, kind="debited", epsilon=spent, job_id=job_id)


# ---- the job market: jobs


def _job_created(state: IndexState, log: DecodedLog) -> None:
    """The job, with each dataset's price from the ``EpsilonReserved`` logs just before it."""
    a = log.args
    job_id, epsilon = int(a["jobId"]), int(a["epsilon"])
    dataset_ids = tuple(int(d) for d in a["datasetIds"])
    reserved = {r.dataset_id: r for r in state.reservations.pop(job_id, []) if r.tx_hash == log.tx_hash}
    if set(reserved) != set(dataset_ids) or any(r.epsilon != epsilon for r in reserved.values()):
        raise InconsistentLogs(
            f"job {job_id}: reservations for datasets {sorted(reserved)}, but it names {list(dataset_ids)} at ε {epsilon}"
        )
    job = JobState(
        id=job_id,
        consumer=str(a["consumer"]),
        status=JobStatus.OPEN,
        model_spec_hash=hex0x(a["modelSpecHash"]),
        epsilon=epsilon,
        delta=int(a["delta"]),
        consumer_key=hex0x(a["consumerKey"]),
        escrow_wei=int(a["escrow"]),
        worker_fee_wei=int(a["workerFee"]),
        claim_deadline=int(a["claimDeadline"]),
        completion_deadline=int(a["completionDeadline"]),
        created_block=log.block,
        created_at=log.timestamp,
        created_tx=log.tx_hash,
        updated_block=log.block,
        dataset_ids=dataset_ids,
        prices=tuple(reserved[d].price_wei for d in dataset_ids),
    )
    state.jobs[job_id] = job
    state.totals.locked_escrow_wei += job.escrow_wei
    state.totals.received_wei += job.escrow_wei  # plus the change, when it is credited back (see _payment_credited)
    state.totals.updated_block = log.block
    _stage(state, log, job, "created", amount_wei=job.escrow_wei)


def _job_claimed(state: IndexState, log: DecodedLog) -> None:
    """A claim of an Open job, or a re-claim of a Claimed one whose lease lapsed (a new holder).

    The lease runs ``claim_lease`` seconds (``log.extra``, default
    :data:`~marketplace.contracts.DEFAULT_CLAIM_LEASE`) from the block, capped at the completion deadline.
    """
    job = _job(state, int(log.args["jobId"]))
    if job.status not in (JobStatus.OPEN, JobStatus.CLAIMED):
        raise InconsistentLogs(f"job {job.id} claimed while {job.status.name}")
    lease = int(log.extra.get("claim_lease", DEFAULT_CLAIM_LEASE))
    job.status = JobStatus.CLAIMED
    job.enclave = str(log.args["enclave"])
    job.operator = str(log.args["operator"])
    job.claim_deadline = 0
    job.lease_expiry = min(log.timestamp + lease, job.completion_deadline)
    job.updated_block = log.block
    _stage(state, log, job, "claimed", enclave=job.enclave, operator=job.operator)


def _claimed(state: IndexState, log: DecodedLog) -> JobState:
    job = _job(state, int(log.args["jobId"]))
    if job.status is not JobStatus.CLAIMED:
        raise InconsistentLogs(f"{log.name} for job {job.id}, which is {job.status.name}")
    return job


def _lease_renewed(state: IndexState, log: DecodedLog) -> None:
    job = _claimed(state, log)
    job.lease_expiry = int(log.args["leaseExpiry"])
    job.updated_block = log.block
    _stage(state, log, job, "renewed", enclave=str(log.args["enclave"]))


def _claim_released(state: IndexState, log: DecodedLog) -> None:
    """The key manager stated no key went to the holder: Open again until the completion deadline, ε still reserved."""
    job = _claimed(state, log)
    released = str(log.args["enclave"])
    job.status = JobStatus.OPEN
    job.enclave = None
    job.operator = None
    job.claim_deadline = job.completion_deadline
    job.lease_expiry = 0
    job.charges = int(log.args["charges"])
    job.updated_block = log.block
    _stage(state, log, job, "released", enclave=released)


def _claim_charged(state: IndexState, log: DecodedLog) -> None:
    """A re-claim charged the lapsed claim (its ``BudgetDebited`` and ``EpsilonReserved`` came just before)."""
    job = _claimed(state, log)
    charges = int(log.args["charges"])
    if charges != job.charges + 1:
        raise InconsistentLogs(f"job {job.id}: charge {charges} after {job.charges}")
    job.charges = charges
    job.updated_block = log.block
    _stage(state, log, job, "charged", enclave=str(log.args["enclave"]), operator=job.operator, epsilon_spent=job.epsilon)


def _result_submitted(state: IndexState, log: DecodedLog) -> None:
    a = log.args
    job = _job(state, int(a["jobId"]))
    job.status = JobStatus.COMPLETED
    job.epsilon_spent = int(a["epsilonSpent"])
    job.model_hash = hex0x(a["modelHash"])
    job.result_hash = hex0x(a["resultHash"])
    job.metrics_hash = hex0x(a["metricsHash"])
    job.lease_expiry = 0
    job.updated_block = log.block
    _unlock(state, log, job)
    _stage(state, log, job, "settled", enclave=str(a["enclave"]), epsilon_spent=job.epsilon_spent)


def _job_refunded(state: IndexState, log: DecodedLog, *, status: JobStatus, stage: JobStage) -> None:
    """An expired or cancelled job: its escrow was credited back (the credit came just before)."""
    job = _job(state, int(log.args["jobId"]))
    refund = int(log.args["refund"])
    job.status = status
    job.refund_wei = refund
    job.claim_deadline = 0
    job.lease_expiry = 0
    job.updated_block = log.block
    _unlock(state, log, job)
    for i in range(len(state.payments) - 1, -1, -1):  # the credit is in this transaction, so in this state's history
        credit = state.payments[i]
        if credit.tx_hash != log.tx_hash:
            break
        payout = credit.kind == "credited" and credit.reason is PaymentReason.PAYOUT  # not a slash share to a consumer-provider
        if payout and credit.job_id == job.id and credit.account == job.consumer:
            state.payments[i] = replace(credit, reason=PaymentReason.REFUND)
            break
    _stage(state, log, job, stage, amount_wei=refund)


def _job_expired(state: IndexState, log: DecodedLog) -> None:
    _job_refunded(state, log, status=JobStatus.EXPIRED, stage="expired")


def _job_cancelled(state: IndexState, log: DecodedLog) -> None:
    _job_refunded(state, log, status=JobStatus.CANCELLED, stage="cancelled")


# ---- the job market: money and the emergency stop


def _unlock(state: IndexState, log: DecodedLog, job: JobState) -> None:
    """The job's escrow leaves the locked escrow (settled, expired or cancelled)."""
    state.totals.locked_escrow_wei -= job.escrow_wei
    state.totals.updated_block = log.block


def _payment(state: IndexState, log: DecodedLog, *, job_id: int | None, kind: PaymentKind, reason: PaymentReason | None) -> None:
    state.payments.append(
        PaymentRecord(
            account=str(log.args["account"]), job_id=job_id, kind=kind, reason=reason, amount_wei=int(log.args["amount"]),
            block=log.block, timestamp=log.timestamp, tx_hash=log.tx_hash, log_index=log.log_index,
        )
    )  # fmt: skip


def _payment_credited(state: IndexState, log: DecodedLog) -> None:
    """A credit; its reason is ``slash`` or ``stake`` after a ``StakeSlashed`` or ``StakeWithdrawn`` in
    the same transaction (until their amount is credited), ``change`` in the job's creation, else
    ``payout`` until a refund event says otherwise."""
    job_id, amount = int(log.args["jobId"]), int(log.args["amount"])
    due_key = (log.tx_hash, job_id)
    job = state.jobs.get(job_id)
    due = state.credits_due.get(due_key)
    if due is not None:
        reason, left = due
        if amount > left:
            raise InconsistentLogs(f"a {reason} credit of {amount} in tx {log.tx_hash}, but only {left} was announced")
        if left == amount:
            del state.credits_due[due_key]
        else:
            state.credits_due[due_key] = (reason, left - amount)
    elif job is not None and job.created_tx == log.tx_hash:
        reason = PaymentReason.CHANGE
        state.totals.received_wei += amount  # paid in with the escrow, credited back at once
    else:
        reason = PaymentReason.PAYOUT
    state.totals.pending_wei += amount
    state.totals.updated_block = log.block
    _payment(state, log, job_id=None if reason is PaymentReason.STAKE else job_id, kind="credited", reason=reason)


def _withdrawn(state: IndexState, log: DecodedLog) -> None:
    amount = int(log.args["amount"])
    state.totals.pending_wei -= amount
    state.totals.paid_out_wei += amount
    state.totals.updated_block = log.block
    _payment(state, log, job_id=None, kind="withdrawn", reason=None)


# ---- the job market: operator stakes


def _stake(state: IndexState, log: DecodedLog, *, create: bool = False) -> OperatorStake:
    operator = str(log.args["operator"])
    stake = state.stakes.get(operator)
    if stake is None:
        if not create:
            raise InconsistentLogs(f"{log.name} for operator {operator}, which never staked")
        stake = state.stakes[operator] = OperatorStake(operator=operator)
    stake.updated_block = log.block
    state.totals.updated_block = log.block
    return stake


def _stake_deposited(state: IndexState, log: DecodedLog) -> None:
    stake = _stake(state, log, create=True)
    amount, total = int(log.args["amount"]), int(log.args["total"])
    stake.amount += amount
    if stake.amount != total:
        raise InconsistentLogs(f"operator {stake.operator}: stake from the events is {stake.amount}, StakeDeposited says {total}")
    state.totals.total_stake_wei += amount
    state.totals.received_wei += amount


def _unstake_requested(state: IndexState, log: DecodedLog) -> None:
    stake = _stake(state, log)
    if int(log.args["amount"]) != stake.amount or stake.unbonding_end:
        raise InconsistentLogs(f"operator {stake.operator}: unstake of {log.args['amount']} from a stake of {stake.amount}")
    stake.unbonding_end = int(log.args["unbondingEnd"])


def _stake_withdrawn(state: IndexState, log: DecodedLog) -> None:
    """The whole stake goes to the operator's pending withdrawal (the ``PaymentCredited`` with job id 0 that follows)."""
    stake = _stake(state, log)
    amount = int(log.args["amount"])
    if amount != stake.amount or not stake.unbonding_end:
        raise InconsistentLogs(f"operator {stake.operator}: withdrawal of {amount} from a stake of {stake.amount}")
    stake.amount, stake.unbonding_end = 0, 0
    state.totals.total_stake_wei -= amount
    if amount:
        state.credits_due[(log.tx_hash, 0)] = (PaymentReason.STAKE, amount)


def _stake_slashed(state: IndexState, log: DecodedLog) -> None:
    """Part of the stake goes to the job's providers (a ``PaymentCredited`` each follows)."""
    stake = _stake(state, log)
    job = _job(state, int(log.args["jobId"]))
    amount = int(log.args["amount"])
    if amount > stake.amount:
        raise InconsistentLogs(f"operator {stake.operator}: slash of {amount} from a stake of {stake.amount}")
    stake.amount -= amount
    stake.slashed_wei += amount
    state.totals.total_stake_wei -= amount
    state.credits_due[(log.tx_hash, job.id)] = (PaymentReason.SLASH, amount)
    _stage(state, log, job, "slashed", operator=stake.operator, amount_wei=amount)


def _pause(state: IndexState, log: DecodedLog, *, paused: bool) -> None:
    state.market = MarketPause(paused=paused, changed_block=log.block, changed_at=log.timestamp, changed_by=str(log.args["account"]))


def _paused(state: IndexState, log: DecodedLog) -> None:
    _pause(state, log, paused=True)


def _unpaused(state: IndexState, log: DecodedLog) -> None:
    _pause(state, log, paused=False)


# ---- the enclave registry


def _measurement(state: IndexState, log: DecodedLog, *, approved: bool) -> None:
    key = (int(log.args["role"]), hex0x(log.args["measurement"]))
    state.measurements[key] = MeasurementState(approved=approved, block=log.block)


def _measurement_approved(state: IndexState, log: DecodedLog) -> None:
    _measurement(state, log, approved=True)


def _measurement_revoked(state: IndexState, log: DecodedLog) -> None:
    _measurement(state, log, approved=False)


def _enclave_registered(state: IndexState, log: DecodedLog) -> None:
    """A newer certificate for the same signer overwrites the old one, as on-chain."""
    a = log.args
    state.enclaves[str(a["signer"])] = EnclaveState(
        role=int(a["role"]),
        measurement=hex0x(a["measurement"]),
        encryption_key=hex0x(a["encryptionKey"]),
        operator=str(a["operator"]),
        valid_until=int(a["validUntil"]),
        verifier=log.extra.get("verifier"),
        registered_block=log.block,
        registered_at=log.timestamp,
        registered_tx=log.tx_hash,
    )


def _enclave_revoked(state: IndexState, log: DecodedLog) -> None:
    """Revocation is for good and idempotent on-chain: the first one is kept."""
    state.revocations.setdefault(str(log.args["signer"]), Revocation(block=log.block, timestamp=log.timestamp, tx_hash=log.tx_hash))


# ---- the competition market


def _competition(state: IndexState, competition_id: int) -> CompetitionState:
    try:
        return state.competitions[competition_id]
    except KeyError:
        raise InconsistentLogs(f"event for competition {competition_id}, which was never created") from None


def _open_competition(state: IndexState, log: DecodedLog) -> CompetitionState:
    competition = _competition(state, int(log.args["competitionId"]))
    if competition.status is not CompetitionStatus.OPEN:
        raise InconsistentLogs(f"{log.name} for competition {competition.id}, which is {competition.status.name}")
    return competition


def _submission(state: IndexState, competition_id: int, index: int) -> SubmissionState:
    try:
        return state.submissions[(competition_id, index)]
    except KeyError:
        raise InconsistentLogs(f"event for submission {index} of competition {competition_id}, which was never made") from None


def _metric(value: int) -> Metric:
    try:
        return Metric(value)
    except ValueError:  # the market refuses other metrics at creation
        raise InconsistentLogs(f"unknown metric {value}") from None


def _takes_the_lead(metric: Metric, score: int, index: int, leader_score: int, leader: int) -> bool:
    """``CompetitionMarket._beats``: strictly better, or equal and submitted earlier (a lower index)."""
    if score == leader_score:
        return index < leader
    return score > leader_score if metric.higher_is_better else score < leader_score


def _competition_created(state: IndexState, log: DecodedLog) -> None:
    a, t = log.args, log.args["terms"]
    competition_id = int(a["competitionId"])
    if competition_id in state.competitions:
        raise InconsistentLogs(f"competition {competition_id} created twice")
    metric = _metric(int(t["metric"]))
    state.competitions[competition_id] = CompetitionState(
        id=competition_id,
        organizer=str(a["organizer"]),
        test_set_hash=hex0x(t["testSetHash"]),
        schema_hash=hex0x(t["schemaHash"]),
        rules_hash=hex0x(t["rulesHash"]),
        prize_wei=int(t["prize"]),
        metric=int(metric),
        public_split_bps=int(t["publicSplitBps"]),
        ladder_step=int(t["ladderStep"]),
        opens_at=int(t["opensAt"]),
        closes_at=int(t["closesAt"]),
        scoring_period=int(t["scoringPeriod"]),
        submission_cap=int(t["submissionCap"]),
        max_parameters=int(t["maxParameters"]),
        architectures=int(t["architectures"]),
        purchase_policy=int(t["purchasePolicy"]),
        public_best=0 if metric.higher_is_better else NO_SCORE_LOWER_IS_BETTER,
        created_block=log.block,
        created_at=log.timestamp,
        created_tx=log.tx_hash,
        updated_block=log.block,
    )


def _submitted(state: IndexState, log: DecodedLog) -> None:
    """Submission indexes run from 0 in the order of the ``Submitted`` logs."""
    a = log.args
    competition = _open_competition(state, log)
    index = int(a["index"])
    if index != competition.submission_count:
        raise InconsistentLogs(f"competition {competition.id}: submission {index} after {competition.submission_count} submissions")
    state.submissions[(competition.id, index)] = SubmissionState(
        competition_id=competition.id,
        index=index,
        participant=str(a["participant"]),
        content_hash=hex0x(a["contentHash"]),
        weights_hash=hex0x(a["weightsHash"]),
        ask_price_wei=int(a["askPrice"]),
        submitted_at=log.timestamp,
        submitted_block=log.block,
        submitted_tx=log.tx_hash,
        updated_block=log.block,
    )
    competition.submission_count += 1
    competition.updated_block = log.block


def _score_posted(state: IndexState, log: DecodedLog) -> None:
    """A public score is the leaderboard's new best (posted in submission order); a private one may take the lead."""
    a = log.args
    competition = _open_competition(state, log)
    index, score = int(a["index"]), int(a["score"])
    submission = _submission(state, competition.id, index)
    try:
        split = Split(int(a["split"]))
    except ValueError:
        raise InconsistentLogs(f"competition {competition.id}: a score on unknown split {a['split']}") from None
    if split is Split.PUBLIC:
        if submission.public_score is not None or index != competition.next_public:
            raise InconsistentLogs(f"competition {competition.id}: public score of submission {index}, next is {competition.next_public}")
        submission.public_score = score
        competition.public_best = score
        competition.next_public += 1
    else:
        if submission.private_score is not None:
            raise InconsistentLogs(f"competition {competition.id}: submission {index} scored twice on the private split")
        submission.private_score = score
        leader = competition.leader
        if leader is None or _takes_the_lead(_metric(competition.metric), score, index, competition.leader_score, leader):
            competition.leader, competition.leader_score = index, score
        competition.private_scored += 1
    submission.updated_block = competition.updated_block = log.block
    state.scores.append(
        ScoreRecord(
            competition_id=competition.id, index=index, split=split, score=score, evaluator=str(a["evaluator"]),
            block=log.block, timestamp=log.timestamp, tx_hash=log.tx_hash, log_index=log.log_index,
        )
    )  # fmt: skip


def _competition_closed(state: IndexState, log: DecodedLog) -> None:
    """The prize goes to the private leader's participant, or back to the organizer when nothing was scored."""
    a = log.args
    competition = _open_competition(state, log)
    winner_index, prize = int(a["winnerIndex"]), int(a["prize"])
    expected = NO_LEADER if competition.leader is None else competition.leader
    if winner_index != expected or prize != competition.prize_wei:
        leading = "no submission" if competition.leader is None else f"submission {competition.leader}"
        raise InconsistentLogs(
            f"competition {competition.id}: closed with winner index {winner_index} and prize {prize}, "
            f"but the events leave {leading} leading for {competition.prize_wei}"
        )
    if competition.leader is not None:
        winner = str(a["winner"])
        if winner != _submission(state, competition.id, competition.leader).participant:
            raise InconsistentLogs(f"competition {competition.id}: the prize went to {winner}, not submission {winner_index}'s participant")
        competition.winner_index, competition.winner = competition.leader, winner
    competition.status = CompetitionStatus.CLOSED
    competition.closed_block, competition.closed_at = log.block, log.timestamp
    competition.updated_block = log.block


def _model_bought(state: IndexState, log: DecodedLog) -> None:
    a = log.args
    competition = _competition(state, int(a["competitionId"]))
    index, price = int(a["index"]), int(a["price"])
    submission = _submission(state, competition.id, index)
    if competition.status is not CompetitionStatus.CLOSED or price != submission.ask_price_wei:
        raise InconsistentLogs(
            f"competition {competition.id} ({competition.status.name}): "
            f"submission {index} asking {submission.ask_price_wei} bought for {price}"
        )
    state.purchases.append(
        PurchaseRecord(
            competition_id=competition.id, index=index, buyer=str(a["buyer"]), price_wei=price,
            block=log.block, timestamp=log.timestamp, tx_hash=log.tx_hash, log_index=log.log_index,
        )
    )  # fmt: skip


_STEPS: dict[str, Callable[[IndexState, DecodedLog], None]] = {
    "DatasetListed": _dataset_listed,
    "TermsUpdated": _terms_updated,
    "BudgetToppedUp": _budget_topped_up,
    "DatasetStatusChanged": _dataset_status_changed,
    "AccessRestricted": _access_restricted,
    "DatasheetSet": _datasheet_set,
    "ConsumerAllowed": _consumer_allowed,
    "ConsumerDisallowed": _consumer_disallowed,
    "ModelAllowed": _model_allowed,
    "ModelDisallowed": _model_disallowed,
    "EpsilonReserved": _epsilon_reserved,
    "EpsilonReleased": _epsilon_released,
    "BudgetDebited": _budget_debited,
    "JobCreated": _job_created,
    "JobClaimed": _job_claimed,
    "ResultSubmitted": _result_submitted,
    "JobExpired": _job_expired,
    "JobCancelled": _job_cancelled,
    "LeaseRenewed": _lease_renewed,
    "ClaimReleased": _claim_released,
    "ClaimCharged": _claim_charged,
    "PaymentCredited": _payment_credited,
    "Withdrawn": _withdrawn,
    "StakeDeposited": _stake_deposited,
    "UnstakeRequested": _unstake_requested,
    "StakeWithdrawn": _stake_withdrawn,
    "StakeSlashed": _stake_slashed,
    "Paused": _paused,
    "Unpaused": _unpaused,
    "MeasurementApproved": _measurement_approved,
    "MeasurementRevoked": _measurement_revoked,
    "EnclaveRegistered": _enclave_registered,
    "EnclaveRevoked": _enclave_revoked,
    "CompetitionCreated": _competition_created,
    "Submitted": _submitted,
    "ScorePosted": _score_posted,
    "CompetitionClosed": _competition_closed,
    "ModelBought": _model_bought,
}

STAKE_EVENTS: frozenset[str] = frozenset({"StakeDeposited", "UnstakeRequested", "StakeWithdrawn", "StakeSlashed"})
"""The events that change an operator's stake (their ``operator`` argument names it)."""

EVENTS: frozenset[str] = frozenset(_STEPS)
"""The events the fold follows (of ``JobMarket``, ``EnclaveRegistry`` and, :data:`COMPETITION_EVENTS`,
``CompetitionMarket``); others change nothing. The fold tells events apart by name only, so the
indexer hands it nothing else of the competition market (its ``PaymentCredited`` and ``Withdrawn``
are not the job market's)."""
