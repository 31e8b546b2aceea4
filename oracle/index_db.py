"""The chain index: SQL tables the indexer writes and the gateway reads (SQLAlchemy 2 ORM).

SQLite under the state directory by default; any SQLAlchemy URL works (``postgresql://…``
with a driver installed). On-chain unsigned integers (wei, micro-ε, δ units, deadlines) can
exceed a signed 64-bit column, so they are stored by :class:`UInt` as zero-padded decimal
strings: exact, and still ordered and compared correctly by SQL.

Every history row derived from a log carries the log's ``(tx_hash, log_index)`` under a
unique constraint, and :class:`ChainEvent` records each applied log once, which is what makes
replaying a block range harmless (see :mod:`oracle.indexer`). State rows (a dataset's terms,
status and allow-lists, a job's status, holder and lease, operator stakes, the market's pause flag
and money totals, revoked enclaves, competitions and their submissions) are what the
logs up to the cursor leave behind: the state of :mod:`oracle.fold`, whose fields have the names of
these columns.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    sessionmaker,
)
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeDecorator

logger = logging.getLogger(__name__)

UINT256_DIGITS = 78
"""Decimal digits of 2**256 - 1: every on-chain unsigned integer fits."""
DEFAULT_DB_NAME = "index.db"
SCHEMA_VERSION = 6
"""Bumped whenever the tables change; an index of another version is dropped and rebuilt from the chain."""


class UInt(TypeDecorator[int]):
    """A non-negative integer up to 2**256 - 1, stored as a zero-padded decimal string."""

    impl = String(UINT256_DIGITS)
    cache_ok = True

    def process_bind_param(self, value: int | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        number = int(value)
        if not 0 <= number < 2**256:
            raise ValueError(f"{number} is not an unsigned 256-bit integer")
        return f"{number:0{UINT256_DIGITS}d}"

    def process_result_value(self, value: str | None, dialect: Dialect) -> int | None:
        return None if value is None else int(value)


class Base(DeclarativeBase):
    """Declarative base of the index tables."""


class IndexMeta(Base):
    """Facts about the index itself (``schema_version``)."""

    __tablename__ = "index_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))


class Cursor(Base):
    """How far the index has got, per (chain, deployment)."""

    __tablename__ = "indexer_cursor"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    market_address: Mapped[str] = mapped_column(String(42))
    registry_address: Mapped[str] = mapped_column(String(42))
    start_block: Mapped[int] = mapped_column(BigInteger)
    start_block_hash: Mapped[str] = mapped_column(String(66))
    competitions_address: Mapped[str | None] = mapped_column(String(42), nullable=True)
    """The competition market whose logs the index holds too (``None``: none)."""
    last_block: Mapped[int] = mapped_column(BigInteger)
    last_block_timestamp: Mapped[int] = mapped_column(BigInteger, default=0)
    last_block_hash: Mapped[str] = mapped_column(String(66), default="")
    """The hash ``last_block`` had when it was indexed: a reorganisation below the cursor changes it."""
    rollbacks: Mapped[int] = mapped_column(BigInteger, default=0)
    """How many times a reorganisation rolled the index back: with ``last_block``, the index's version."""


class IndexedBlock(Base):
    """The hash of each block a committed range ended at (the most recent ones): where a
    reorganisation forked off is the highest of them the chain still has."""

    __tablename__ = "indexed_blocks"

    cursor_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    block: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(66))


BOOKKEEPING_TABLES = frozenset({"index_meta", "indexer_cursor", "indexed_blocks"})
"""Tables about the indexing itself (schema version, cursor, where each range ended), not about
the chain: two indexes of the same chain may differ in them, and in nothing else."""


class ChainEvent(Base):
    """Every applied log, once: the replay guard and the feed of live updates."""

    __tablename__ = "chain_events"
    __table_args__ = (UniqueConstraint("tx_hash", "log_index", name="uq_chain_events_log"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    block: Mapped[int] = mapped_column(BigInteger, index=True)
    timestamp: Mapped[int] = mapped_column(BigInteger)
    tx_hash: Mapped[str] = mapped_column(String(66))
    log_index: Mapped[int] = mapped_column(Integer)
    contract: Mapped[str] = mapped_column(String(42))
    name: Mapped[str] = mapped_column(String(64))
    dataset_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    job_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    competition_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    account: Mapped[str | None] = mapped_column(String(42), nullable=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class Dataset(Base):
    """A listed dataset: its current terms, status, access restrictions and ε ledger."""

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    provider: Mapped[str] = mapped_column(String(42), index=True)
    content_hash: Mapped[str] = mapped_column(String(66))
    schema_hash: Mapped[str] = mapped_column(String(66), index=True)
    uri: Mapped[str] = mapped_column(String(2048))
    price_wei: Mapped[int] = mapped_column(UInt, index=True)
    max_epsilon_per_job: Mapped[int] = mapped_column(UInt)
    total_epsilon: Mapped[int] = mapped_column(UInt)
    spent_epsilon: Mapped[int] = mapped_column(UInt, default=0)
    reserved_epsilon: Mapped[int] = mapped_column(UInt, default=0)
    remaining_epsilon: Mapped[int] = mapped_column(UInt, index=True)
    max_delta: Mapped[int] = mapped_column(UInt)
    expiry: Mapped[int] = mapped_column(UInt)
    listed_block: Mapped[int] = mapped_column(BigInteger, index=True)
    listed_at: Mapped[int] = mapped_column(BigInteger)
    listed_tx: Mapped[str] = mapped_column(String(66))
    status: Mapped[int] = mapped_column(Integer, index=True, default=0)
    """``IDatasetRegistry.DatasetStatus``: 0 active, 1 paused, 2 delisted."""
    restricted: Mapped[bool] = mapped_column(Boolean, default=False)
    """Only allow-listed consumers may buy (``AccessRestricted.consumers``)."""
    models_restricted: Mapped[bool] = mapped_column(Boolean, default=False)
    """Only allow-listed model specs may be trained (``AccessRestricted.models``)."""
    updated_block: Mapped[int] = mapped_column(BigInteger)
    """The block of the last change to the terms, status or restrictions (the listing at first)."""
    datasheet_hash: Mapped[str | None] = mapped_column(String(66), index=True, nullable=True, default=None)
    """The SHA-256 of the provider's current datasheet (``DatasheetSet``), ``None`` without one."""
    datasheet_document: Mapped[DatasheetDocument | None] = relationship(
        primaryjoin="foreign(Dataset.datasheet_hash) == DatasheetDocument.hash", viewonly=True, lazy="selectin"
    )
    """The document, when this gateway holds it (not chain state: see :class:`DatasheetDocument`)."""

    consumers: Mapped[list[AllowedConsumer]] = relationship(
        order_by=lambda: [AllowedConsumer.block, AllowedConsumer.log_index], lazy="selectin", cascade="all, delete-orphan"
    )
    models: Mapped[list[AllowedModel]] = relationship(
        order_by=lambda: [AllowedModel.block, AllowedModel.log_index], lazy="selectin", cascade="all, delete-orphan"
    )


class DatasheetDocument(Base):
    """A datasheet document this gateway holds, by hash: what search and the cards read.

    Content-addressed, not chain state: a row says "these bytes, which hash to ``hash``, are a
    valid datasheet". Rows are added when a document is published (``POST /api/datasheets``)
    and, for a hash the chain names, from the blob store when the list is next read, so a
    rebuilt index finds them again.
    """

    __tablename__ = "datasheets"

    hash: Mapped[str] = mapped_column(String(66), primary_key=True)
    title: Mapped[str] = mapped_column(String(200), index=True)
    rows: Mapped[int] = mapped_column(BigInteger, index=True)
    search_text: Mapped[str] = mapped_column(Text)
    """Lower-cased title, description, tags, provider, label and column words (``Datasheet.search_text``)."""
    document: Mapped[dict[str, Any]] = mapped_column(JSON)

    tags: Mapped[list[DatasheetTag]] = relationship(order_by=lambda: DatasheetTag.position, lazy="selectin", cascade="all, delete-orphan")


class DatasheetTag(Base):
    """One tag of a datasheet (a row per tag, so a tag filter is an indexed join on every database)."""

    __tablename__ = "datasheet_tags"

    hash: Mapped[str] = mapped_column(ForeignKey("datasheets.hash", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(32), primary_key=True, index=True)
    position: Mapped[int] = mapped_column(Integer)


class AllowedConsumer(Base):
    """An account currently on a dataset's consumer allow-list (added by the log it names).

    The list only matters while :attr:`Dataset.restricted` is set, as on-chain.
    """

    __tablename__ = "dataset_consumers"
    __table_args__ = (UniqueConstraint("dataset_id", "consumer", name="uq_dataset_consumers_entry"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), index=True)
    consumer: Mapped[str] = mapped_column(String(42))
    block: Mapped[int] = mapped_column(BigInteger)
    tx_hash: Mapped[str] = mapped_column(String(66))
    log_index: Mapped[int] = mapped_column(Integer)


class AllowedModel(Base):
    """A model-spec hash currently on a dataset's model allow-list (added by the log it names).

    The list only matters while :attr:`Dataset.models_restricted` is set, as on-chain.
    """

    __tablename__ = "dataset_models"
    __table_args__ = (UniqueConstraint("dataset_id", "model_spec_hash", name="uq_dataset_models_entry"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), index=True)
    model_spec_hash: Mapped[str] = mapped_column(String(66))
    block: Mapped[int] = mapped_column(BigInteger)
    tx_hash: Mapped[str] = mapped_column(String(66))
    log_index: Mapped[int] = mapped_column(Integer)


class BudgetEvent(Base):
    """One change of a dataset's ε ledger.

    ``kind`` and what ``epsilon`` holds: ``listed`` (the total budget), ``reserved`` (the job's ε;
    ``price_wei`` is the price the job pays), ``released`` (the ε given back), ``debited`` (the ε
    spent), ``topped_up`` (the ε added), ``terms_updated`` (the new total budget).
    """

    __tablename__ = "dataset_budget_events"
    __table_args__ = (UniqueConstraint("tx_hash", "log_index", name="uq_budget_events_log"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset_id: Mapped[int] = mapped_column(BigInteger, index=True)
    job_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)
    kind: Mapped[str] = mapped_column(String(16))
    epsilon: Mapped[int] = mapped_column(UInt)
    remaining_epsilon: Mapped[int] = mapped_column(UInt)
    total_epsilon: Mapped[int] = mapped_column(UInt)
    price_wei: Mapped[int | None] = mapped_column(UInt, nullable=True)
    block: Mapped[int] = mapped_column(BigInteger)
    timestamp: Mapped[int] = mapped_column(BigInteger)
    tx_hash: Mapped[str] = mapped_column(String(66))
    log_index: Mapped[int] = mapped_column(Integer)


class Job(Base):
    """A training job and its current state."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    consumer: Mapped[str] = mapped_column(String(42), index=True)
    status: Mapped[int] = mapped_column(Integer, index=True)
    model_spec_hash: Mapped[str] = mapped_column(String(66))
    epsilon: Mapped[int] = mapped_column(UInt)
    delta: Mapped[int] = mapped_column(UInt)
    consumer_key: Mapped[str] = mapped_column(String(66))
    escrow_wei: Mapped[int] = mapped_column(UInt)
    worker_fee_wei: Mapped[int] = mapped_column(UInt)
    claim_deadline: Mapped[int] = mapped_column(UInt)
    """While Open, the last second it can be claimed (the completion deadline after a release); 0 otherwise, as ``job()``."""
    completion_deadline: Mapped[int] = mapped_column(UInt)
    enclave: Mapped[str | None] = mapped_column(String(42), nullable=True)
    """The holder while Claimed (a re-claim replaces it; a release clears it)."""
    operator: Mapped[str | None] = mapped_column(String(42), nullable=True)
    lease_expiry: Mapped[int] = mapped_column(UInt, default=0)
    """While Claimed: the claim lapses after this second unless renewed (0 otherwise, as ``job()``)."""
    charges: Mapped[int] = mapped_column(Integer, default=0)
    """Lapsed claims whose ε was debited (``ClaimCharged``): ε spent ``charges`` extra times per dataset."""
    epsilon_spent: Mapped[int | None] = mapped_column(UInt, nullable=True)
    model_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    result_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    metrics_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    refund_wei: Mapped[int | None] = mapped_column(UInt, nullable=True)
    """Escrow credited back to the consumer by ``JobCancelled`` or ``JobExpired``."""
    created_block: Mapped[int] = mapped_column(BigInteger, index=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    created_tx: Mapped[str] = mapped_column(String(66))
    updated_block: Mapped[int] = mapped_column(BigInteger)

    datasets: Mapped[list[JobDataset]] = relationship(order_by="JobDataset.position", lazy="selectin", cascade="all, delete-orphan")


class JobDataset(Base):
    """A dataset of a job, in job order, with the price the job pays for it (``EpsilonReserved``)."""

    __tablename__ = "job_datasets"
    __table_args__ = (UniqueConstraint("job_id", "position", name="uq_job_datasets_position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    dataset_id: Mapped[int] = mapped_column(BigInteger, index=True)
    position: Mapped[int] = mapped_column(Integer)
    price_wei: Mapped[int] = mapped_column(UInt)


class JobEvent(Base):
    """One stage of a job's timeline: created, claimed, renewed (lease), released (claim given
    back), charged (a lapsed claim's ε debited on re-claim), slashed (the operator's stake),
    settled, expired or cancelled."""

    __tablename__ = "job_events"
    __table_args__ = (UniqueConstraint("tx_hash", "log_index", name="uq_job_events_log"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(BigInteger, index=True)
    stage: Mapped[str] = mapped_column(String(16))
    block: Mapped[int] = mapped_column(BigInteger)
    timestamp: Mapped[int] = mapped_column(BigInteger)
    tx_hash: Mapped[str] = mapped_column(String(66))
    log_index: Mapped[int] = mapped_column(Integer)
    enclave: Mapped[str | None] = mapped_column(String(42), nullable=True)
    operator: Mapped[str | None] = mapped_column(String(42), nullable=True)
    epsilon_spent: Mapped[int | None] = mapped_column(UInt, nullable=True)
    amount_wei: Mapped[int | None] = mapped_column(UInt, nullable=True)


class Enclave(Base):
    """A registered enclave (trainer worker or key manager), latest certificate."""

    __tablename__ = "enclaves"

    signer: Mapped[str] = mapped_column(String(42), primary_key=True)
    role: Mapped[int] = mapped_column(Integer, index=True)
    measurement: Mapped[str] = mapped_column(String(66))
    encryption_key: Mapped[str] = mapped_column(String(66))
    operator: Mapped[str] = mapped_column(String(42))
    valid_until: Mapped[int] = mapped_column(UInt)
    verifier: Mapped[str | None] = mapped_column(String(42), nullable=True)
    registered_block: Mapped[int] = mapped_column(BigInteger)
    registered_at: Mapped[int] = mapped_column(BigInteger)
    registered_tx: Mapped[str] = mapped_column(String(66))


class EnclaveRevocation(Base):
    """Governance revoked this enclave instance for good (``EnclaveRevoked``; first revocation kept).

    A separate table because a signer can be revoked before it ever registers.
    """

    __tablename__ = "enclave_revocations"

    signer: Mapped[str] = mapped_column(String(42), primary_key=True)
    block: Mapped[int] = mapped_column(BigInteger)
    timestamp: Mapped[int] = mapped_column(BigInteger)
    tx_hash: Mapped[str] = mapped_column(String(66))


class Measurement(Base):
    """Governance's decision on one (role, measurement)."""

    __tablename__ = "measurements"
    __table_args__ = (UniqueConstraint("role", "measurement", name="uq_measurements_role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    role: Mapped[int] = mapped_column(Integer)
    measurement: Mapped[str] = mapped_column(String(66))
    approved: Mapped[bool] = mapped_column(Boolean)
    block: Mapped[int] = mapped_column(BigInteger)


class Payment(Base):
    """Money credited to an account (payout, refund, change) or withdrawn by it."""

    __tablename__ = "payments"
    __table_args__ = (
        UniqueConstraint("tx_hash", "log_index", name="uq_payments_log"),
        Index("ix_payments_account_block", "account", "block"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account: Mapped[str] = mapped_column(String(42))
    job_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)
    kind: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(16), nullable=True)
    """For credits: ``change``, ``refund``, ``payout``, ``slash`` or ``stake`` (:class:`oracle.fold.PaymentReason`);
    ``None`` for withdrawals."""
    amount_wei: Mapped[int] = mapped_column(UInt)
    block: Mapped[int] = mapped_column(BigInteger)
    timestamp: Mapped[int] = mapped_column(BigInteger)
    tx_hash: Mapped[str] = mapped_column(String(66))
    log_index: Mapped[int] = mapped_column(Integer)


class MarketState(Base):
    """The market-wide emergency stop (``Paused`` / ``Unpaused``), per cursor key."""

    __tablename__ = "market_state"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    changed_block: Mapped[int] = mapped_column(BigInteger)
    changed_at: Mapped[int] = mapped_column(BigInteger)
    changed_by: Mapped[str] = mapped_column(String(42))


class OperatorStake(Base):
    """An operator's stake (``stakeOf``) and what was slashed from it."""

    __tablename__ = "operator_stakes"

    operator: Mapped[str] = mapped_column(String(42), primary_key=True)
    amount: Mapped[int] = mapped_column(UInt, index=True)
    unbonding_end: Mapped[int] = mapped_column(UInt, default=0)
    """0 while it may claim; else the second its stake can be withdrawn."""
    slashed_wei: Mapped[int] = mapped_column(UInt, default=0)
    updated_block: Mapped[int] = mapped_column(BigInteger)


class MarketTotals(Base):
    """The market's money by its events, per cursor key (:class:`oracle.fold.MarketTotals`).

    Conservation: ``received_wei - paid_out_wei == pending_wei + locked_escrow_wei + total_stake_wei``.
    """

    __tablename__ = "market_totals"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    pending_wei: Mapped[int] = mapped_column(UInt, default=0)
    locked_escrow_wei: Mapped[int] = mapped_column(UInt, default=0)
    total_stake_wei: Mapped[int] = mapped_column(UInt, default=0)
    received_wei: Mapped[int] = mapped_column(UInt, default=0)
    paid_out_wei: Mapped[int] = mapped_column(UInt, default=0)
    updated_block: Mapped[int] = mapped_column(BigInteger, default=0)


class Competition(Base):
    """A competition (``competitionOf``): its terms, organizer, status, leaderboard, private ranking and close."""

    __tablename__ = "competitions"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    organizer: Mapped[str] = mapped_column(String(42), index=True)
    status: Mapped[int] = mapped_column(Integer, index=True)
    """``ICompetitionMarket.CompetitionStatus``: 1 open, 2 closed."""
    test_set_hash: Mapped[str] = mapped_column(String(66))
    schema_hash: Mapped[str] = mapped_column(String(66))
    rules_hash: Mapped[str] = mapped_column(String(66))
    prize_wei: Mapped[int] = mapped_column(UInt)
    metric: Mapped[int] = mapped_column(Integer)
    public_split_bps: Mapped[int] = mapped_column(Integer)
    ladder_step: Mapped[int] = mapped_column(BigInteger)
    opens_at: Mapped[int] = mapped_column(UInt)
    closes_at: Mapped[int] = mapped_column(UInt)
    scoring_period: Mapped[int] = mapped_column(UInt)
    submission_cap: Mapped[int] = mapped_column(Integer)
    max_parameters: Mapped[int] = mapped_column(BigInteger)
    architectures: Mapped[int] = mapped_column(Integer)
    purchase_policy: Mapped[int] = mapped_column(Integer)
    submission_count: Mapped[int] = mapped_column(BigInteger, default=0)
    next_public: Mapped[int] = mapped_column(BigInteger, default=0)
    """Index of the next submission to score on the public split."""
    private_scored: Mapped[int] = mapped_column(BigInteger, default=0)
    public_best: Mapped[int] = mapped_column(UInt)
    """The leaderboard's best: 0 (higher-is-better) or 2**64 - 1 (lower-is-better) before any public score."""
    leader: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """Index of the best private score so far (ties: the earlier submission)."""
    leader_score: Mapped[int] = mapped_column(UInt, default=0)
    winner_index: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """Once closed: the submission that won (``None``: nothing was scored and the prize went back to the organizer)."""
    winner: Mapped[str | None] = mapped_column(String(42), nullable=True)
    created_block: Mapped[int] = mapped_column(BigInteger, index=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    created_tx: Mapped[str] = mapped_column(String(66))
    closed_block: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    closed_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    updated_block: Mapped[int] = mapped_column(BigInteger)


class CompetitionSubmission(Base):
    """A submission to a competition (``submissionOf``) with the weights hash of its ``Submitted`` log."""

    __tablename__ = "competition_submissions"

    competition_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    index: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    participant: Mapped[str] = mapped_column(String(42), index=True)
    content_hash: Mapped[str] = mapped_column(String(66))
    weights_hash: Mapped[str] = mapped_column(String(66))
    ask_price_wei: Mapped[int] = mapped_column(UInt)
    submitted_at: Mapped[int] = mapped_column(BigInteger)
    submitted_block: Mapped[int] = mapped_column(BigInteger)
    submitted_tx: Mapped[str] = mapped_column(String(66))
    public_score: Mapped[int | None] = mapped_column(UInt, nullable=True)
    """The Ladder's leaderboard value released for it (``None`` until scored on the public split)."""
    private_score: Mapped[int | None] = mapped_column(UInt, nullable=True)
    updated_block: Mapped[int] = mapped_column(BigInteger)


class CompetitionScore(Base):
    """One posted score (``ScorePosted``): the leaderboard over time. ``split``: 1 public, 2 private."""

    __tablename__ = "competition_scores"
    __table_args__ = (
        UniqueConstraint("tx_hash", "log_index", name="uq_competition_scores_log"),
        Index("ix_competition_scores_competition_block", "competition_id", "block", "log_index"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    competition_id: Mapped[int] = mapped_column(BigInteger)
    index: Mapped[int] = mapped_column(BigInteger)
    split: Mapped[int] = mapped_column(Integer)
    score: Mapped[int] = mapped_column(UInt)
    evaluator: Mapped[str] = mapped_column(String(42))
    block: Mapped[int] = mapped_column(BigInteger)
    timestamp: Mapped[int] = mapped_column(BigInteger)
    tx_hash: Mapped[str] = mapped_column(String(66))
    log_index: Mapped[int] = mapped_column(Integer)


class CompetitionPurchase(Base):
    """A submitted model bought after its competition closed (``ModelBought``)."""

    __tablename__ = "competition_purchases"
    __table_args__ = (UniqueConstraint("tx_hash", "log_index", name="uq_competition_purchases_log"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    competition_id: Mapped[int] = mapped_column(BigInteger, index=True)
    index: Mapped[int] = mapped_column(BigInteger)
    buyer: Mapped[str] = mapped_column(String(42), index=True)
    price_wei: Mapped[int] = mapped_column(UInt)
    block: Mapped[int] = mapped_column(BigInteger)
    timestamp: Mapped[int] = mapped_column(BigInteger)
    tx_hash: Mapped[str] = mapped_column(String(66))
    log_index: Mapped[int] = mapped_column(Integer)


def cursor_key(chain_id: int, market: str, registry: str) -> str:
    """The cursor of one deployment on one chain."""
    return f"{chain_id}:{market}:{registry}"


def default_url(state_dir: Path) -> str:
    """The default database: SQLite in ``state_dir``."""
    return f"sqlite:///{(state_dir / DEFAULT_DB_NAME).resolve()}"


def _sqlite_pragmas(dbapi_connection: Any, connection_record: ConnectionPoolEntry) -> None:
    """WAL lets the gateway read while the indexer writes; wait for a lock instead of failing."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


class IndexDatabase:
    """Engine and sessions of the chain index.

    Example:
        >>> db = IndexDatabase(default_url(Path(".sterling")))  # doctest: +SKIP
        >>> db.create_schema()
        >>> with db.session() as session:
        ...     session.query(Dataset).count()
    """

    def __init__(self, url: str) -> None:
        self.url = url
        connect_args: dict[str, Any] = {}
        if url.startswith("sqlite"):
            connect_args = {"check_same_thread": False, "timeout": 10}
            path = url.split("///", 1)[1] if "///" in url else ""
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = create_engine(url, connect_args=connect_args)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def create_schema(self) -> None:
        """Create missing tables; an index written with another :data:`SCHEMA_VERSION` is rebuilt empty.

        The index is a function of the chain, so dropping it loses nothing: the indexer reads the
        logs again from the deployment block.
        """
        existing = set(inspect(self.engine).get_table_names())
        if existing & set(Base.metadata.tables):
            version = None
            if IndexMeta.__tablename__ in existing:
                with self.session() as session:
                    row = session.get(IndexMeta, "schema_version")
                    version = row.value if row is not None else None
            if version != str(SCHEMA_VERSION):
                logger.warning("the chain index has schema version %s, not %d: rebuilding it", version, SCHEMA_VERSION)
                self.reset()
                return
        Base.metadata.create_all(self.engine)
        self._stamp_version()

    def reset(self) -> None:
        """Drop and recreate every table (the chain under the index was replaced, or the schema changed)."""
        logger.info("resetting the chain index at %s", self.engine.url.render_as_string(hide_password=True))
        Base.metadata.drop_all(self.engine)
        Base.metadata.create_all(self.engine)
        self._stamp_version()

    def _stamp_version(self) -> None:
        with self.transaction() as session:
            session.merge(IndexMeta(key="schema_version", value=str(SCHEMA_VERSION)))

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session for reading; nothing is committed."""
        with self._sessions() as session:
            yield session

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work is committed on success and rolled back on any error."""
        with self._sessions() as session, session.begin():
            yield session

    def close(self) -> None:
        self.engine.dispose()
