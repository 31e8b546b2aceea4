"""Reads of the chain index for the API: filters, sorting, and rows turned into public models."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal, cast

from eth_utils import to_checksum_address
from sqlalchemy import Select, exists, func, select
from sqlalchemy.orm import Session, selectinload

from enclave_worker.trusted.dataset import Schema
from enclave_worker.trusted.evaluation import ARCHITECTURES
from enclave_worker.trusted.onchain import (
    DELTA_SCALE,
    EPSILON_SCALE,
    NO_SCORE_LOWER_IS_BETTER,
    SCORE_SCALE,
    CompetitionStatus,
    Metric,
    PurchasePolicy,
    Role,
    Split,
)
from marketplace.blobstore import BlobStore
from marketplace.contracts import DatasetStatus, JobStatus
from marketplace.datasheet import Datasheet, InvalidDatasheet, columns_of
from marketplace.errors import BlobNotFound, CiphertextTampered, InvalidDataset
from oracle.index_db import (
    BudgetEvent,
    Competition,
    CompetitionScore,
    CompetitionSubmission,
    Cursor,
    Dataset,
    DatasheetDocument,
    DatasheetTag,
    Enclave,
    EnclaveRevocation,
    Job,
    JobDataset,
    JobEvent,
    MarketState,
    MarketTotals,
    Measurement,
    OperatorStake,
    Payment,
)
from sterling.gateway.errors import BadRequest, NotFound
from sterling.gateway.limits import check_json_depth
from sterling.gateway.schemas import (
    AttestationPublic,
    BudgetEventPublic,
    ColumnPublic,
    CompetitionDetailPublic,
    CompetitionPhase,
    CompetitionPublic,
    DatasetDetailPublic,
    DatasetPublic,
    DatasetSort,
    DatasetStatusName,
    DatasheetSummaryPublic,
    JobDetailPublic,
    JobPaymentPublic,
    JobProgressPublic,
    JobPublic,
    JobStatusName,
    MoneyPublic,
    PaymentPublic,
    RoleName,
    ScorePointPublic,
    StakePublic,
    SubmissionPublic,
    TagCountPublic,
    TimelineEventPublic,
    WorkerPublic,
)

_DATASET_ORDER = {
    "price": (Dataset.price_wei.asc(), Dataset.id.asc()),
    "-price": (Dataset.price_wei.desc(), Dataset.id.asc()),
    "remaining_epsilon": (Dataset.remaining_epsilon.asc(), Dataset.id.asc()),
    "-remaining_epsilon": (Dataset.remaining_epsilon.desc(), Dataset.id.asc()),
    "listed": (Dataset.listed_block.asc(), Dataset.id.asc()),
    "-listed": (Dataset.listed_block.desc(), Dataset.id.desc()),
    # datasets without a datasheet (a NULL title) come last either way
    "title": (DatasheetDocument.title.is_(None), func.lower(DatasheetDocument.title).asc(), Dataset.id.asc()),
    "-title": (DatasheetDocument.title.is_(None), func.lower(DatasheetDocument.title).desc(), Dataset.id.asc()),
    "rows": (DatasheetDocument.rows.is_(None), DatasheetDocument.rows.asc(), Dataset.id.asc()),
    "-rows": (DatasheetDocument.rows.is_(None), DatasheetDocument.rows.desc(), Dataset.id.asc()),
}
_SORTS_ON_DATASHEET = frozenset({"title", "-title", "rows", "-rows"})
MAX_SEARCH_WORDS = 8
MAX_DOCUMENT_BYTES = 1 << 20
MAX_ROW_ID = 2**63 - 1
"""The largest id an index table's (signed 64-bit) key holds: a larger one names nothing indexed."""
DATASET_STATUS: dict[int, DatasetStatusName] = {
    status: cast(DatasetStatusName, status.name.lower()) for status in DatasetStatus  # the API's names: the enum's, lower-cased
}
_STATUS_CODE = {name: code for code, name in DATASET_STATUS.items()}
LISTED_STATUSES: tuple[DatasetStatusName, ...] = (DATASET_STATUS[DatasetStatus.ACTIVE], DATASET_STATUS[DatasetStatus.PAUSED])
"""What the dataset list shows unless asked for other statuses: delisted datasets are hidden."""


def epsilon(units: int) -> float:
    return units / EPSILON_SCALE


def delta(units: int) -> float:
    return units / DELTA_SCALE


def address(value: str) -> str:
    """An EIP-55 address, for matching what the indexer stored."""
    try:
        return str(to_checksum_address("0x" + value.lower().removeprefix("0x")))
    except ValueError as e:
        raise BadRequest(f"{value!r} is not an address") from e


def hash_hex(value: str) -> str:
    """A 32-byte hash as the index stores it: ``0x`` + lowercase hex."""
    return "0x" + value.lower().removeprefix("0x")


@dataclass(frozen=True)
class DatasetFilter:
    """The dataset list's filters (hashable: it is part of the response cache key)."""

    schema_hash: str | None = None
    provider: str | None = None
    min_price: int | None = None
    max_price: int | None = None
    min_remaining_epsilon: float | None = None
    statuses: tuple[DatasetStatusName, ...] = LISTED_STATUSES
    words: tuple[str, ...] = ()
    """Free-text search: every word must be in the datasheet's :meth:`~marketplace.datasheet.Datasheet.search_text`."""
    tags: tuple[str, ...] = ()
    """Every tag must be on the datasheet."""


def search_words(q: str | None) -> tuple[str, ...]:
    """The words of a free-text query, lower-cased, each once, at most :data:`MAX_SEARCH_WORDS`."""
    if not q:
        return ()
    words = tuple(dict.fromkeys(w for w in q.lower().split() if w))
    if len(words) > MAX_SEARCH_WORDS:
        raise BadRequest(f"a search has at most {MAX_SEARCH_WORDS} words, this one has {len(words)}")
    return words


def _filtered_datasets(f: DatasetFilter) -> Select[Dataset]:
    query = select(Dataset).where(Dataset.status.in_(sorted({_STATUS_CODE[s] for s in f.statuses})))
    if f.schema_hash is not None:
        query = query.where(Dataset.schema_hash == hash_hex(f.schema_hash))
    if f.provider is not None:
        query = query.where(Dataset.provider == address(f.provider))
    if f.min_price is not None:
        query = query.where(Dataset.price_wei >= f.min_price)
    if f.max_price is not None:
        query = query.where(Dataset.price_wei <= f.max_price)
    if f.min_remaining_epsilon is not None:
        query = query.where(Dataset.remaining_epsilon >= math.ceil(f.min_remaining_epsilon * EPSILON_SCALE))
    if f.words:
        matching = select(DatasheetDocument.hash).where(*(DatasheetDocument.search_text.contains(w, autoescape=True) for w in f.words))
        query = query.where(Dataset.datasheet_hash.in_(matching))
    for tag in f.tags:
        query = query.where(Dataset.datasheet_hash.in_(select(DatasheetTag.hash).where(DatasheetTag.tag == tag)))
    return query


def dataset_public(row: Dataset) -> DatasetPublic:
    return DatasetPublic(**_dataset_fields(row))


def _summary(document: DatasheetDocument | None) -> DatasheetSummaryPublic | None:
    if document is None:
        return None
    doc = document.document
    return DatasheetSummaryPublic(
        title=doc["title"], description=doc["description"], tags=list(doc["tags"]), license=doc["license"],
        provider_name=doc["provider_name"], rows=int(doc["rows"]), label_name=doc["label"]["name"],
    )  # fmt: skip


def store_datasheet(session: Session, digest: str, datasheet: Datasheet, document: dict[str, Any]) -> None:
    """Remember a valid datasheet document under its hash (``0x`` hex); a second store changes nothing."""
    key = hash_hex(digest)
    if session.get(DatasheetDocument, key) is not None:
        return
    row = DatasheetDocument(hash=key, title=datasheet.title, rows=datasheet.rows, search_text=datasheet.search_text(), document=document)
    row.tags = [DatasheetTag(hash=key, tag=tag, position=i) for i, tag in enumerate(datasheet.tags)]
    session.add(row)


def sync_datasheets(session: Session, blobs: BlobStore) -> int:
    """Load the datasheets the chain names and the blob store holds but the table lacks; returns how many.

    After an index rebuild, or for a document that reached the blob store by another route. A
    document that is missing or not a valid datasheet is left out (the card shows no datasheet).
    """
    named = session.scalars(
        select(Dataset.datasheet_hash)
        .where(Dataset.datasheet_hash.is_not(None), ~exists().where(DatasheetDocument.hash == Dataset.datasheet_hash))
        .distinct()
    ).all()
    added = 0
    for digest in named:
        if digest is None:
            continue
        document = read_json_blob(blobs, digest.removeprefix("0x"))
        if document is None:
            continue
        try:
            datasheet = Datasheet.from_json(document)
        except InvalidDatasheet:
            continue
        store_datasheet(session, digest, datasheet, document)
        added += 1
    return added


def dataset_tags(session: Session, *, limit: int = 100) -> list[TagCountPublic]:
    """Tags of the listed (active or paused) datasets' datasheets, most used first."""
    count = func.count(Dataset.id)
    rows = session.execute(
        select(DatasheetTag.tag, count)
        .join(Dataset, Dataset.datasheet_hash == DatasheetTag.hash)
        .where(Dataset.status.in_(sorted(_STATUS_CODE[s] for s in LISTED_STATUSES)))
        .group_by(DatasheetTag.tag)
        .order_by(count.desc(), DatasheetTag.tag.asc())
        .limit(limit)
    ).all()
    return [TagCountPublic(tag=tag, count=n) for tag, n in rows]


def _dataset_fields(row: Dataset) -> dict[str, Any]:
    return {
        "id": row.id,
        "provider": row.provider,
        "status": DATASET_STATUS[row.status],
        "content_hash": row.content_hash,
        "schema_hash": row.schema_hash,
        "uri": row.uri,
        "price_wei": str(row.price_wei),
        "max_epsilon_per_job": epsilon(row.max_epsilon_per_job),
        "total_epsilon": epsilon(row.total_epsilon),
        "remaining_epsilon": epsilon(row.remaining_epsilon),
        "reserved_epsilon": epsilon(row.reserved_epsilon),
        "spent_epsilon": epsilon(row.spent_epsilon),
        "max_delta": delta(row.max_delta),
        "expiry": row.expiry,
        "restricted": row.restricted,
        "allowed_consumers": [c.consumer for c in row.consumers],
        "models_restricted": row.models_restricted,
        "allowed_models": [m.model_spec_hash for m in row.models],
        "listed_block": row.listed_block,
        "listed_at": row.listed_at,
        "listed_tx": row.listed_tx,
        "updated_block": row.updated_block,
        "datasheet_hash": row.datasheet_hash,
        "datasheet": _summary(row.datasheet_document),
    }


def list_datasets(session: Session, f: DatasetFilter, *, sort: DatasetSort, limit: int, offset: int) -> tuple[list[DatasetPublic], int]:
    query = _filtered_datasets(f)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    with_lists = query.options(selectinload(Dataset.consumers), selectinload(Dataset.models), selectinload(Dataset.datasheet_document))
    if sort in _SORTS_ON_DATASHEET:
        with_lists = with_lists.outerjoin(DatasheetDocument, DatasheetDocument.hash == Dataset.datasheet_hash)
    page = with_lists.order_by(*_DATASET_ORDER[sort]).limit(limit).offset(offset)
    rows = session.scalars(page).all()
    return [dataset_public(r) for r in rows], total


def read_json_blob(blobs: BlobStore, digest: str | None) -> dict[str, Any] | None:
    """A public JSON document from the blob store (spec, schema, metrics), or ``None``."""
    if digest is None:
        return None
    try:
        if blobs.path(digest).stat().st_size > MAX_DOCUMENT_BYTES:
            return None
        raw = blobs.get(digest)
        check_json_depth(raw)
        document = json.loads(raw)
    except (BlobNotFound, CiphertextTampered, FileNotFoundError, ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


def dataset_detail(session: Session, dataset_id: int, blobs: BlobStore) -> DatasetDetailPublic:
    row = session.get(Dataset, dataset_id)
    if row is None:
        raise NotFound(f"dataset {dataset_id} is not listed (or not indexed yet)")
    history = session.scalars(
        select(BudgetEvent).where(BudgetEvent.dataset_id == dataset_id).order_by(BudgetEvent.block, BudgetEvent.log_index)
    )
    job_ids = session.scalars(select(JobDataset.job_id).where(JobDataset.dataset_id == dataset_id).order_by(JobDataset.job_id))
    schema = read_json_blob(blobs, row.schema_hash)
    fields = _dataset_fields(row)
    document = row.datasheet_document
    fields["datasheet"] = document.document if document is not None else None
    return DatasetDetailPublic(
        **fields,
        schema=schema,
        columns=_columns_public(schema, document),
        budget_history=[
            BudgetEventPublic(
                block=e.block, timestamp=e.timestamp, tx_hash=e.tx_hash, job_id=e.job_id,
                kind=e.kind,  # type: ignore[arg-type]  # str column; pydantic checks the Literal
                epsilon=epsilon(e.epsilon), remaining_epsilon=epsilon(e.remaining_epsilon), total_epsilon=epsilon(e.total_epsilon),
                price_wei=str(e.price_wei) if e.price_wei is not None else None,
            )
            for e in history
        ],
        job_ids=list(job_ids),
    )  # fmt: skip


def _columns_public(schema_doc: dict[str, Any] | None, document: DatasheetDocument | None) -> list[ColumnPublic]:
    if schema_doc is None:
        return []
    try:
        schema = Schema.from_json(schema_doc)
        datasheet = Datasheet.from_json(document.document) if document is not None else None
    except (InvalidDataset, InvalidDatasheet):
        return []
    return [ColumnPublic(**column) for column in columns_of(schema, datasheet)]


def status_name(status: int) -> JobStatusName:
    return JobStatus(status).name.lower()  # type: ignore[return-value]  # the lower-cased names of indexed statuses


def _job_fields(row: Job) -> dict[str, Any]:
    return {
        "id": row.id,
        "consumer": row.consumer,
        "status": status_name(row.status),
        "dataset_ids": [d.dataset_id for d in row.datasets],
        "prices_wei": [str(d.price_wei) for d in row.datasets],
        "model_spec_hash": row.model_spec_hash,
        "epsilon": epsilon(row.epsilon),
        "delta": delta(row.delta),
        "epsilon_spent": epsilon(row.epsilon_spent) if row.epsilon_spent is not None else None,
        "escrow_wei": str(row.escrow_wei),
        "worker_fee_wei": str(row.worker_fee_wei),
        "consumer_key": row.consumer_key,
        "enclave": row.enclave,
        "operator": row.operator,
        "claim_deadline": row.claim_deadline,
        "completion_deadline": row.completion_deadline,
        "lease_expiry": row.lease_expiry or 0,
        "charges": row.charges or 0,
        "model_hash": row.model_hash,
        "result_hash": row.result_hash,
        "metrics_hash": row.metrics_hash,
        "refund_wei": str(row.refund_wei) if row.refund_wei is not None else None,
        "created_block": row.created_block,
        "created_at": row.created_at,
    }


def list_jobs(
    session: Session, *, consumer: str | None, status: JobStatusName | None, dataset_id: int | None, limit: int, offset: int
) -> tuple[list[JobPublic], int]:
    query = select(Job)
    if consumer is not None:
        query = query.where(Job.consumer == address(consumer))
    if status is not None:
        query = query.where(Job.status == int(JobStatus[status.upper()]))
    if dataset_id is not None:
        query = query.where(Job.id.in_(select(JobDataset.job_id).where(JobDataset.dataset_id == dataset_id)))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Job.id.desc()).limit(limit).offset(offset)).all()
    return [JobPublic(**_job_fields(r)) for r in rows], total


def get_job(session: Session, job_id: int) -> Job:
    row = session.get(Job, job_id)
    if row is None:
        raise NotFound(f"job {job_id} does not exist (or is not indexed yet)")
    return row


def job_detail(session: Session, job_id: int, blobs: BlobStore, progress: dict[str, Any] | None) -> JobDetailPublic:
    row = get_job(session, job_id)
    timeline = session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.block, JobEvent.log_index))
    payments = session.scalars(
        select(Payment).where(Payment.job_id == job_id, Payment.kind == "credited").order_by(Payment.block, Payment.log_index)
    )
    return JobDetailPublic(
        **_job_fields(row),
        model_spec=read_json_blob(blobs, row.model_spec_hash),
        metrics=read_json_blob(blobs, row.metrics_hash),
        timeline=[
            TimelineEventPublic(
                stage=e.stage,  # type: ignore[arg-type]  # str column; pydantic checks the Literal
                block=e.block, timestamp=e.timestamp, tx_hash=e.tx_hash,
                enclave=e.enclave, operator=e.operator,
                epsilon_spent=epsilon(e.epsilon_spent) if e.epsilon_spent is not None else None,
                amount_wei=str(e.amount_wei) if e.amount_wei is not None else None,
            )
            for e in timeline
        ],
        progress=progress_public(progress),
        payments=[
            JobPaymentPublic(
                account=p.account, amount_wei=str(p.amount_wei),
                reason=p.reason or "payout",  # type: ignore[arg-type]  # str column; pydantic checks the Literal
            )
            for p in payments
        ],
    )  # fmt: skip


def progress_public(entry: dict[str, Any] | None) -> JobProgressPublic | None:
    """A status board entry for the API; the worker reports the settled ε spent in micro-units."""
    if not entry:
        return None
    fields = dict(entry)
    if isinstance(fields.get("epsilon_spent"), int):
        fields["epsilon_spent"] = epsilon(fields["epsilon_spent"])
    return JobProgressPublic.model_validate(fields)


def indexed_time(session: Session, key: str) -> tuple[int, int]:
    """The last indexed block and its timestamp (``(-1, 0)`` before the first poll)."""
    cursor = session.get(Cursor, key)
    return (cursor.last_block, cursor.last_block_timestamp) if cursor is not None else (-1, 0)


def market_paused(session: Session, key: str) -> bool:
    """Whether the market's emergency stop is on, as of the indexed block."""
    state = session.get(MarketState, key)
    return bool(state is not None and state.paused)


def list_workers(session: Session, *, cursor_key: str, formats: dict[str, str]) -> list[WorkerPublic]:
    _, now = indexed_time(session, cursor_key)
    approved = {(m.role, m.measurement) for m in session.scalars(select(Measurement).where(Measurement.approved.is_(True)))}
    revoked = {r.signer: r.block for r in session.scalars(select(EnclaveRevocation))}
    workers = []
    for e in session.scalars(select(Enclave).order_by(Enclave.registered_block, Enclave.signer)):
        is_approved = (e.role, e.measurement) in approved
        workers.append(
            WorkerPublic(
                signer=e.signer,
                role=cast(RoleName, Role(e.role).name.lower()),
                measurement=e.measurement,
                measurement_approved=is_approved,
                operator=e.operator,
                encryption_key=e.encryption_key,
                valid_until=e.valid_until,
                active=is_approved and e.signer not in revoked and e.valid_until >= now,
                revoked=e.signer in revoked,
                revoked_block=revoked.get(e.signer),
                registered_block=e.registered_block,
                registered_at=e.registered_at,
                attestation=AttestationPublic(
                    format=formats.get(e.verifier or "", "unknown"),
                    verifier=e.verifier,
                    verified_at=e.registered_at,
                    certificate_tx=e.registered_tx,
                    valid_until=e.valid_until,
                ),
            )
        )
    return workers


def list_payments(session: Session, *, account: str | None, limit: int, offset: int) -> tuple[list[PaymentPublic], int, int | None]:
    """Payments newest first, their count, and the account's pending balance (credited − withdrawn)."""
    query = select(Payment)
    pending = None
    if account is not None:
        who = address(account)
        query = query.where(Payment.account == who)
        amounts = session.execute(select(Payment.kind, Payment.amount_wei).where(Payment.account == who)).all()
        pending = sum(a if k == "credited" else -a for k, a in amounts)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Payment.block.desc(), Payment.log_index.desc()).limit(limit).offset(offset)).all()
    items = [
        PaymentPublic(
            account=p.account, job_id=p.job_id, amount_wei=str(p.amount_wei),
            kind=p.kind, reason=p.reason,  # type: ignore[arg-type]  # str columns; pydantic checks the Literals
            block=p.block, timestamp=p.timestamp, tx_hash=p.tx_hash,
        )
        for p in rows
    ]  # fmt: skip
    return items, total, pending


def stake_public(row: OperatorStake) -> StakePublic:
    return StakePublic(
        operator=row.operator, amount_wei=str(row.amount), unbonding_end=row.unbonding_end, slashed_wei=str(row.slashed_wei),
        updated_block=row.updated_block,
    )  # fmt: skip


def operator_stake(session: Session, operator: str) -> StakePublic:
    """``operator``'s stake (zero, like ``stakeOf``, if it never staked)."""
    who = address(operator)
    row = session.get(OperatorStake, who)
    if row is None:
        return StakePublic(operator=who, amount_wei="0", unbonding_end=0, slashed_wei="0", updated_block=None)
    return stake_public(row)


def market_money(session: Session, key: str) -> MoneyPublic:
    """The market's money totals as of the indexed block (all zero before the first money event)."""
    row = session.get(MarketTotals, key)
    pending, locked, stake, balance = (0, 0, 0, 0) if row is None else (
        row.pending_wei, row.locked_escrow_wei, row.total_stake_wei, row.received_wei - row.paid_out_wei,
    )  # fmt: skip
    return MoneyPublic(
        balance_wei=str(balance), pending_wei=str(pending), locked_escrow_wei=str(locked), total_stake_wei=str(stake),
        conserved=balance == pending + locked + stake,
    )  # fmt: skip


def list_stakes(session: Session, *, limit: int, offset: int) -> tuple[list[StakePublic], int]:
    """Operators that ever staked, largest stake first."""
    total = session.scalar(select(func.count()).select_from(OperatorStake)) or 0
    rows = session.scalars(
        select(OperatorStake).order_by(OperatorStake.amount.desc(), OperatorStake.operator).limit(limit).offset(offset)
    ).all()
    return [stake_public(r) for r in rows], total


_POLICY: dict[PurchasePolicy, Literal["none", "organizer", "anyone"]] = {
    PurchasePolicy.NONE: "none", PurchasePolicy.ORGANIZER: "organizer", PurchasePolicy.ANYONE: "anyone",
}  # fmt: skip


def competition_phase(row: Competition, now: int) -> CompetitionPhase:
    """Where a competition stands at chain time ``now`` (its status from the index, its window from its terms)."""
    if row.status == CompetitionStatus.CLOSED:
        return "closed"
    if now < row.opens_at:
        return "upcoming"
    if now < row.closes_at:
        return "submissions"
    return "scoring" if now < row.closes_at + row.scoring_period else "closable"


def _competition_fields(row: Competition, now: int) -> dict[str, Any]:
    metric = Metric(row.metric)
    has_best = row.next_public > 0 and row.public_best != NO_SCORE_LOWER_IS_BETTER
    return {
        "competition_id": row.id,
        "organizer": row.organizer,
        "status": "closed" if row.status == CompetitionStatus.CLOSED else "open",
        "phase": competition_phase(row, now),
        "test_set_hash": row.test_set_hash,
        "schema_hash": row.schema_hash,
        "rules_hash": row.rules_hash,
        "prize_wei": str(row.prize_wei),
        "metric": metric.name.lower(),
        "higher_is_better": metric.higher_is_better,
        "public_split_bps": row.public_split_bps,
        "ladder_step": row.ladder_step / SCORE_SCALE,
        "opens_at": row.opens_at,
        "closes_at": row.closes_at,
        "open_to_all_at": row.closes_at + row.scoring_period,
        "submission_cap": row.submission_cap,
        "max_parameters": row.max_parameters,
        "architectures": [name for name, bit in ARCHITECTURES.items() if bit & row.architectures],
        "purchase_policy": _POLICY[PurchasePolicy(row.purchase_policy)],
        "submission_count": row.submission_count,
        "next_public": row.next_public,
        "private_scored": row.private_scored,
        "public_best": row.public_best / SCORE_SCALE if has_best else None,
        "leader": row.leader,
    }


def list_competitions(session: Session, *, now: int) -> list[CompetitionPublic]:
    """Every indexed competition, newest first; ``now`` is the chain's time (for the phase)."""
    rows = session.scalars(select(Competition).order_by(Competition.id.desc()))
    return [CompetitionPublic(**_competition_fields(row, now)) for row in rows]


def submission_weights_hash(session: Session, competition_id: int, index: int) -> str | None:
    """The weights hash submission ``index`` was admitted with, from its indexed ``Submitted`` log
    (``None`` until the indexer has seen it)."""
    row = session.get(CompetitionSubmission, (competition_id, index)) if 0 < competition_id <= MAX_ROW_ID else None
    return None if row is None else row.weights_hash


def competition_detail(session: Session, competition_id: int, blobs: BlobStore, *, now: int) -> CompetitionDetailPublic:
    """One competition with its rules (from the blob store), its submissions in index order and
    every posted score in chain order.

    Raises:
        NotFound: no such competition in the index.
    """
    row = session.get(Competition, competition_id) if 0 < competition_id <= MAX_ROW_ID else None
    if row is None:
        raise NotFound(f"competition {competition_id} does not exist (or is not indexed yet)")
    submissions = session.scalars(
        select(CompetitionSubmission).where(CompetitionSubmission.competition_id == competition_id).order_by(CompetitionSubmission.index)
    )
    history = session.scalars(
        select(CompetitionScore)
        .where(CompetitionScore.competition_id == competition_id)
        .order_by(CompetitionScore.block, CompetitionScore.log_index)
    )
    return CompetitionDetailPublic(
        **_competition_fields(row, now),
        rules=read_json_blob(blobs, row.rules_hash),
        submissions=[
            SubmissionPublic(
                index=s.index, participant=s.participant, content_hash=s.content_hash, weights_hash=s.weights_hash,
                ask_price_wei=str(s.ask_price_wei),
                submitted_at=s.submitted_at, public_score=s.public_score / SCORE_SCALE if s.public_score is not None else None,
                private_score=s.private_score / SCORE_SCALE if s.private_score is not None else None,
            )
            for s in submissions
        ],
        history=[
            ScorePointPublic(
                index=e.index, split="public" if e.split == Split.PUBLIC else "private", score=e.score / SCORE_SCALE,
                block=e.block, time=e.timestamp,
            )
            for e in history
        ],
    )  # fmt: skip
