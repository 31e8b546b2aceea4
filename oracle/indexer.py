"""The chain event indexer: ``JobMarket``, ``EnclaveRegistry`` and ``CompetitionMarket`` logs into the SQL index.

Exactly once: each poll reads the logs of a bounded block range ``cursor + 1 … end`` and
writes every derived row *and* the advanced cursor in one database transaction. A crash before
the commit leaves the cursor where it was, so the range is read again; a crash after it has
nothing left to redo. Replays are harmless on top of that: every applied log is recorded in
``chain_events`` under a unique ``(tx_hash, log_index)`` and skipped when seen again, and every
derived history row carries the same unique key.

Every piece of on-chain state a client asks about is rebuilt from the events alone: each
dataset's terms, ε ledger, status, restriction flags and allow-lists; each job's status, price
snapshots, holder, lease, charges and refund; operator stakes and the market's money totals (checked
for conservation after every range); the market's emergency stop; enclaves, measurements and
revocations; and, when the indexer is given the competition market, its competitions, their
submissions and scores, the history of posted scores and the models bought. What
each event means is said once, by the pure fold of :mod:`oracle.fold`: for every range the indexer
loads the rows its new logs touch into an :class:`~oracle.fold.IndexState`, folds the logs in
chain order, and writes the state and the history the fold produced back in the same
transaction. The index is therefore a pure function of the chain up to its cursor.

Example:
    >>> indexer = Indexer(db, market=market, registry=registry, start_block=deployment.block, competitions=competitions)  # doctest: +SKIP
    >>> indexer.poll_once()
    [IndexedRange(from_block=12, to_block=40, events=17)]
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar, cast

from eth_account import Account
from eth_account.messages import encode_typed_data
from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from web3.contract.base_contract import BaseContractEvent
from web3.types import LogReceipt

from marketplace.competitions import CompetitionMarketClient, CompetitionStatus
from marketplace.contracts import CERTIFICATE_TYPES, DatasetStatus, JobStatus, MarketClient, RegistryClient
from marketplace.errors import SterlingError

from . import fold
from .fold import (
    CompetitionState,
    DatasetState,
    DecodedLog,
    EnclaveState,
    IndexState,
    JobState,
    LogPosition,
    MarketPause,
    MeasurementState,
    OperatorStake,
    Revocation,
    SubmissionState,
    hex0x,
)
from .index_db import (
    AllowedConsumer,
    AllowedModel,
    Base,
    BudgetEvent,
    ChainEvent,
    Competition,
    CompetitionPurchase,
    CompetitionScore,
    CompetitionSubmission,
    Cursor,
    Dataset,
    Enclave,
    EnclaveRevocation,
    IndexDatabase,
    IndexedBlock,
    IndexMeta,
    Job,
    JobDataset,
    JobEvent,
    MarketState,
    Measurement,
    Payment,
    cursor_key,
)
from .index_db import MarketTotals as MarketTotalsRow
from .index_db import OperatorStake as OperatorStakeRow

logger = logging.getLogger(__name__)

DEFAULT_BATCH_BLOCKS = 500
REORG_MEMORY = 256
"""Range ends whose hashes the index keeps: a reorganisation forking off below the oldest of them
rebuilds the index from the start block."""
JS_SAFE_INTEGER = 2**53 - 1
_SEEN_CHUNK = 500  # transaction hashes per replay-guard query (SQLite allows 999 parameters in old builds)
_Entry = TypeVar("_Entry", AllowedConsumer, AllowedModel)


class IndexerChainMismatch(SterlingError):
    """The index was built from another chain than the one connected (it was reset or replaced),
    or the logs contradict the index (:class:`~oracle.fold.InconsistentLogs`)."""


class _CursorMoved(SterlingError):
    """Another indexer committed the range first (its commit covers it)."""


def _json_safe(value: Any) -> Any:
    """Event arguments as JSON: bytes as hex, integers beyond JavaScript's range as strings."""
    if isinstance(value, bytes | bytearray):
        return hex0x(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) <= JS_SAFE_INTEGER else str(value)
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _columns(state_type: type, *, skip: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The fields of a fold state class that are columns of the same name."""
    return tuple(f.name for f in fields(state_type) if f.name not in skip)


_DATASET_COLUMNS = _columns(DatasetState, skip=("consumers", "models"))
_JOB_COLUMNS = _columns(JobState, skip=("dataset_ids", "prices"))
_ENCLAVE_COLUMNS = _columns(EnclaveState)
_MARKET_COLUMNS = _columns(MarketPause)
_STAKE_COLUMNS = _columns(OperatorStake)
_TOTALS_COLUMNS = _columns(fold.MarketTotals)
_COMPETITION_COLUMNS = _columns(CompetitionState, skip=("status",))
_SUBMISSION_COLUMNS = _columns(SubmissionState)


@dataclass(frozen=True)
class IndexedRange:
    """A block range committed to the index."""

    from_block: int
    to_block: int
    events: int


class Indexer:
    """Follows the market and registry logs (and the competition market's) into an :class:`~oracle.index_db.IndexDatabase`."""

    def __init__(
        self,
        db: IndexDatabase,
        *,
        market: MarketClient,
        registry: RegistryClient,
        start_block: int,
        batch_blocks: int = DEFAULT_BATCH_BLOCKS,
        confirmations: int = 0,
        competitions: CompetitionMarketClient | None = None,
    ) -> None:
        """Create an indexer; nothing is read until :meth:`poll_once`.

        Args:
            start_block: first block to read (the deployment block).
            batch_blocks: largest block range per ``eth_getLogs`` call and per transaction.
            confirmations: stay this many blocks behind the head (reorg safety on public chains).
            competitions: the competition market to index too (its :data:`~oracle.fold.COMPETITION_EVENTS`);
                ``None``: no competitions. An index keeps the competition market it began with
                (:meth:`cursor`).
        """
        if batch_blocks < 1:
            raise ValueError("batch_blocks must be at least 1")
        self.db = db
        self.market = market
        self.registry = registry
        self.competitions = competitions
        self.chain = market.chain
        self.start_block = start_block
        self.batch_blocks = batch_blocks
        self.confirmations = confirmations
        self.committed_block: int | None = None
        """The last block this indexer committed (or found committed)."""
        self.rollbacks = 0
        """Reorganisations the index was rolled back for (as the cursor records them)."""
        self.key = cursor_key(self.chain.chain_id, market.address, registry.address)
        self._events: dict[tuple[str, str], BaseContractEvent] = {}
        """The followed events by (contract, topic): the competition market's own ``PaymentCredited``
        and ``Withdrawn`` are left out, for the fold knows events by name only."""
        followed: list[tuple[MarketClient | RegistryClient | CompetitionMarketClient, frozenset[str]]] = [
            (market, fold.EVENTS - fold.COMPETITION_EVENTS), (registry, fold.EVENTS - fold.COMPETITION_EVENTS),
        ]  # fmt: skip
        if competitions is not None:
            followed.append((competitions, fold.COMPETITION_EVENTS))
        for client, names in followed:
            # web3 annotates ContractEvents.__iter__ as returning an Iterable; it yields the events.
            for contract_event in cast(Iterable[BaseContractEvent], client.contract.events):
                if contract_event.event_name in names:
                    self._events[(client.address.lower(), contract_event.topic.lower())] = contract_event
        self._checked_chain = False
        self._block_times: dict[int, int] = {}
        self._claim_lease: int | None = None

    # --- cursor -------------------------------------------------------------------------------

    def cursor(self) -> Cursor:
        """The persisted cursor, created at ``start_block - 1`` on first use.

        Raises:
            IndexerChainMismatch: the block at ``start_block`` is not the one the index began from,
                or the index follows another competition market than this indexer (or none while
                this one follows one, or the reverse): its competitions would miss logs.
        """
        with self.db.session() as session:
            cursor = session.get(Cursor, self.key)
        if cursor is not None and self._checked_chain:
            return cursor
        start_hash = hex0x(self.chain.w3.eth.get_block(self.start_block)["hash"])
        competitions = self.competitions.address if self.competitions is not None else None
        with self.db.transaction() as session:
            cursor = session.get(Cursor, self.key)
            if cursor is None:
                cursor = Cursor(
                    key=self.key,
                    chain_id=self.chain.chain_id,
                    market_address=self.market.address,
                    registry_address=self.registry.address,
                    competitions_address=competitions,
                    start_block=self.start_block,
                    start_block_hash=start_hash,
                    last_block=self.start_block - 1,
                    last_block_timestamp=0,
                    last_block_hash="",
                    rollbacks=0,
                )
                session.add(cursor)
                logger.info("new index cursor %s from block %d", self.key, self.start_block)
            elif cursor.start_block_hash != start_hash:
                raise IndexerChainMismatch(
                    f"index cursor {self.key} began at block {cursor.start_block} with hash {cursor.start_block_hash}, "
                    f"but the connected chain has {start_hash} there: the chain was reset; reset the index"
                )
            elif cursor.competitions_address != competitions:
                raise IndexerChainMismatch(
                    f"index cursor {self.key} holds the logs of competition market {cursor.competitions_address}, "
                    f"this indexer follows {competitions}: reset the index"
                )
        self._checked_chain = True
        return cursor

    def last_block(self) -> int:
        """The last block committed to the index."""
        with self.db.session() as session:
            cursor = session.get(Cursor, self.key)
        return cursor.last_block if cursor is not None else self.start_block - 1

    # --- polling ------------------------------------------------------------------------------

    @property
    def version(self) -> tuple[int, int] | None:
        """``(rollbacks, last block)`` of what this indexer committed: it changes whenever the
        index does (a rollback may bring the block back below a height seen before, never the
        pair), so the gateway versions its cached answers with it. ``None`` before the first poll."""
        return None if self.committed_block is None else (self.rollbacks, self.committed_block)

    def poll_once(self) -> list[IndexedRange]:
        """Index everything from the cursor to the head (minus confirmations), batch by batch.

        First, if the block the cursor stands on is no longer the chain's (a reorganisation deeper
        than ``confirmations``), the index is rolled back to where the chains fork (:meth:`_roll_back`).
        """
        cursor = self._follow_reorganisation(self.cursor())
        self.committed_block = cursor.last_block
        self.rollbacks = cursor.rollbacks
        head = int(self.chain.w3.eth.block_number) - self.confirmations
        ranges = []
        start = cursor.last_block + 1
        while start <= head:
            end = min(start + self.batch_blocks - 1, head)
            try:
                ranges.append(self._index_range(start, end))
            except _CursorMoved:
                logger.info("another indexer committed blocks from %d; this poll stops", start)
                break
            start = end + 1
        return ranges

    def run(self, stop: threading.Event, *, interval: float = 1.0) -> None:
        """Poll until ``stop`` is set; failures are logged and the range retried next time.

        A chain mismatch ends the loop: indexing another chain into this index would corrupt it.
        """
        while not stop.is_set():
            try:
                self.poll_once()
            except IndexerChainMismatch:
                logger.exception("indexer stopped")
                return
            except Exception:  # the RPC node or the database hiccupped: the same range is retried
                logger.exception("indexing failed; retrying in %.1f s", interval)
            stop.wait(interval)

    def _index_range(self, start: int, end: int) -> IndexedRange:
        end_hash, end_time = self._block_ref(end)  # before the logs: if the chain reorganises in between, the next poll sees it
        logs = self._fetch(start, end)
        with self.db.transaction() as session:
            cursor = session.get(Cursor, self.key)
            if cursor is None or cursor.last_block != start - 1:
                raise _CursorMoved(f"cursor {self.key} is not at block {start - 1}")
            applied = self._apply_all(session, logs)
            self._advance(session, cursor, end, end_hash, end_time)
        self.committed_block = end  # after the commit: a reader never sees a version ahead of the data
        if logs:
            logger.info("indexed blocks %d-%d: %d events", start, end, applied)
        return IndexedRange(start, end, applied)

    def _advance(self, session: Session, cursor: Cursor, end: int, end_hash: str, end_time: int) -> None:
        """Move the cursor to ``end`` and remember its hash (the oldest remembered beyond :data:`REORG_MEMORY` are dropped)."""
        cursor.last_block, cursor.last_block_hash, cursor.last_block_timestamp = end, end_hash, end_time
        session.merge(IndexedBlock(cursor_key=self.key, block=end, hash=end_hash))
        if end - self.start_block < REORG_MEMORY:
            return  # fewer range ends than that so far
        kept = select(IndexedBlock.block).where(IndexedBlock.cursor_key == self.key).order_by(IndexedBlock.block.desc())
        oldest_kept = session.scalars(kept.offset(REORG_MEMORY - 1).limit(1)).first()
        if oldest_kept is not None:
            session.execute(delete(IndexedBlock).where(IndexedBlock.cursor_key == self.key, IndexedBlock.block < oldest_kept))

    def _block_ref(self, block: int) -> tuple[str, int]:
        """The hash and time of ``block`` on the connected chain."""
        header = self.chain.w3.eth.get_block(block)
        self._block_times[block] = int(header["timestamp"])
        return hex0x(header["hash"]), int(header["timestamp"])

    # --- reorganisations ----------------------------------------------------------------------

    def _follow_reorganisation(self, cursor: Cursor) -> Cursor:
        """The cursor, after rolling the index back if the chain no longer has the block it stands on."""
        if cursor.last_block < self.start_block or not cursor.last_block_hash:
            return cursor
        if self._block_ref(cursor.last_block)[0] == cursor.last_block_hash:
            return cursor
        with self.db.session() as session:
            remembered = session.execute(
                select(IndexedBlock.block, IndexedBlock.hash)
                .where(IndexedBlock.cursor_key == self.key, IndexedBlock.block <= cursor.last_block)
                .order_by(IndexedBlock.block.desc())
            ).all()
        fork = next((block for block, block_hash in remembered if self._block_ref(block)[0] == block_hash), self.start_block - 1)
        return self._roll_back(cursor, fork)

    def _roll_back(self, orphaned: Cursor, fork: int) -> Cursor:
        """Undo every row the logs after ``fork`` produced, in one transaction.

        The index is a pure function of the logs up to its cursor, and its state rows (a dataset's
        ε ledger, a job's status…) fold in every log that touched them, so the rows of the orphaned
        blocks cannot be peeled off one by one: the index is emptied and the canonical logs up to
        ``fork`` are folded again, then the cursor stands on ``fork``. Readers see the old index
        until the commit, then the canonical one, never a mix. The cost is that of indexing up to
        ``fork`` again; it happens only for reorganisations deeper than ``confirmations``.
        """
        logger.warning(
            "chain reorganisation: block %d of the index is no longer the chain's (hash %s); rolling back to block %d",
            orphaned.last_block, orphaned.last_block_hash, fork,
        )  # fmt: skip
        self._block_times.clear()
        with self.db.transaction() as session:
            cursor = session.get(Cursor, self.key)
            if cursor is None or cursor.last_block != orphaned.last_block or cursor.last_block_hash != orphaned.last_block_hash:
                raise _CursorMoved(f"cursor {self.key} moved while a rollback was prepared")
            for table in reversed(Base.metadata.sorted_tables):
                if table.name not in (Cursor.__tablename__, IndexMeta.__tablename__):
                    session.execute(table.delete())
            cursor.last_block, cursor.last_block_hash, cursor.last_block_timestamp = self.start_block - 1, "", 0
            start, events = self.start_block, 0
            while start <= fork:
                end = min(start + self.batch_blocks - 1, fork)
                end_hash, end_time = self._block_ref(end)
                events += self._apply_all(session, self._fetch(start, end))
                self._advance(session, cursor, end, end_hash, end_time)
                start = end + 1
            cursor.rollbacks += 1
            session.flush()
            session.expunge(cursor)
        logger.warning("rolled the index back to block %d: %d canonical events folded again", fork, events)
        return cursor

    def _fetch(self, start: int, end: int) -> list[DecodedLog]:
        """Decode the followed logs of the contracts in ``start … end``, in chain order (no DB access)."""
        raw = self._get_logs(start, end)
        self._block_times.clear()
        decoded = []
        for log in raw:
            topics = log["topics"]
            if not topics:
                continue
            contract_event = self._events.get((str(log["address"]).lower(), hex0x(topics[0]).lower()))
            if contract_event is None:
                continue
            data = contract_event.process_log(log)
            name = str(data["event"])
            block = int(log["blockNumber"])
            tx_hash = hex0x(log["transactionHash"])
            extra: dict[str, Any] = {}
            if name == "EnclaveRegistered":
                extra["verifier"] = self._certificate_verifier(tx_hash)
            elif name == "JobClaimed":
                extra["claim_lease"] = self._market_claim_lease()
            decoded.append(
                DecodedLog(
                    name=name,
                    args=dict(data["args"]),
                    contract=str(log["address"]),
                    block=block,
                    timestamp=self._timestamp(block),
                    tx_hash=tx_hash,
                    log_index=int(log["logIndex"]),
                    extra=extra,
                )
            )
        return decoded

    def _get_logs(self, start: int, end: int) -> list[LogReceipt]:
        """``eth_getLogs`` of the contracts in ``start … end`` (one request), in chain order."""
        addresses = [self.market.contract.address, self.registry.contract.address]
        if self.competitions is not None:
            addresses.append(self.competitions.contract.address)
        raw = list(self.chain.w3.eth.get_logs({"fromBlock": start, "toBlock": end, "address": addresses}))
        raw.sort(key=lambda log: (int(log["blockNumber"]), int(log["logIndex"])))
        return raw

    def _market_claim_lease(self) -> int:
        """The market's ``claimLease`` (immutable, asked once): a ``JobClaimed`` does not carry its lease expiry."""
        if self._claim_lease is None:
            self._claim_lease = self.market.claim_lease()
        return self._claim_lease

    def _timestamp(self, block: int) -> int:
        if block not in self._block_times:
            self._block_times[block] = int(self.chain.w3.eth.get_block(block)["timestamp"])
        return self._block_times[block]

    def _certificate_verifier(self, tx_hash: str) -> str | None:
        """The verifier that signed the certificate registered in ``tx_hash`` (recovered from the calldata)."""
        try:
            tx = self.chain.w3.eth.get_transaction(tx_hash)  # type: ignore[arg-type]
            function, params = self.registry.contract.decode_function_input(tx["input"])
            if function.fn_name != "register":
                return None
            cert = params["cert"]
            fields = ("role", "measurement", "signer", "encryptionKey", "operator", "validUntil")
            message = dict(cert) if isinstance(cert, Mapping) else dict(zip(fields, cert, strict=True))
            signable = encode_typed_data(self.registry.domain(), CERTIFICATE_TYPES, message)
            return str(Account.recover_message(signable, signature=params["signature"]))
        except Exception:  # a register call through another contract, or unusual calldata: unknown verifier
            logger.warning("could not recover the certificate verifier of tx %s", tx_hash)
            return None

    # --- applying events ----------------------------------------------------------------------

    def _apply_all(self, session: Session, logs: list[DecodedLog]) -> int:
        """Fold the logs not applied before into the rows they touch; returns how many were new."""
        new = self._unseen(session, logs)
        if not new:
            return 0
        state = self._load(session, fold.touched(new))
        for log in new:
            self._apply(session, state, log)
        if state.reservations:  # an EpsilonReserved and its JobCreated share a transaction, so one range has both
            raise IndexerChainMismatch(f"reservations without their JobCreated: {state.reservations}")
        if state.credits_due:
            raise IndexerChainMismatch(f"stake slashes or withdrawals without their credits: {state.credits_due}")
        if not state.totals.conserved:  # a range ends between transactions, where the contract keeps money conserved
            raise IndexerChainMismatch(f"the market's money is not conserved by the events: {state.totals}")
        self._store(session, state)
        return len(new)

    def _unseen(self, session: Session, logs: list[DecodedLog]) -> list[DecodedLog]:
        """The logs ``chain_events`` does not hold yet, in their order."""
        tx_hashes = sorted({log.tx_hash for log in logs})
        seen: set[tuple[str, int]] = set()
        for i in range(0, len(tx_hashes), _SEEN_CHUNK):
            chunk = tx_hashes[i : i + _SEEN_CHUNK]
            rows = session.execute(select(ChainEvent.tx_hash, ChainEvent.log_index).where(ChainEvent.tx_hash.in_(chunk)))
            seen.update((tx_hash, log_index) for tx_hash, log_index in rows)
        return [log for log in logs if (log.tx_hash, log.log_index) not in seen]

    def _apply(self, session: Session, state: IndexState, log: DecodedLog) -> None:
        """Record one new log in ``chain_events`` and fold it into ``state``."""
        args = log.args
        dataset_id = args.get("datasetId")
        job_id = args.get("jobId")
        competition_id = args.get("competitionId")
        account = args.get("account", args.get("operator") if log.name in fold.STAKE_EVENTS else None)
        session.add(
            ChainEvent(
                block=log.block,
                timestamp=log.timestamp,
                tx_hash=log.tx_hash,
                log_index=log.log_index,
                contract=log.contract,
                name=log.name,
                dataset_id=int(dataset_id) if dataset_id is not None else None,
                job_id=int(job_id) if job_id is not None else None,
                competition_id=int(competition_id) if competition_id is not None else None,
                account=str(account) if account is not None else None,
                data=_json_safe(args),
            )
        )
        try:
            fold.apply(state, log)
        except fold.InconsistentLogs as e:
            raise IndexerChainMismatch(f"{log.name} in tx {log.tx_hash}: {e}") from e

    # --- rows <-> fold state ------------------------------------------------------------------

    def _load(self, session: Session, keys: fold.StateKeys) -> IndexState:
        """The rows ``keys`` name, as fold state (they stay in the session for :meth:`_store`)."""
        state = IndexState()
        if keys.datasets:
            for row in session.scalars(select(Dataset).where(Dataset.id.in_(sorted(keys.datasets)))):
                state.datasets[row.id] = DatasetState(
                    **{name: getattr(row, name) for name in _DATASET_COLUMNS if name != "status"},
                    status=DatasetStatus(row.status),
                    consumers={c.consumer: LogPosition(c.block, c.tx_hash, c.log_index) for c in row.consumers},
                    models={m.model_spec_hash: LogPosition(m.block, m.tx_hash, m.log_index) for m in row.models},
                )
        if keys.jobs:
            for job in session.scalars(select(Job).where(Job.id.in_(sorted(keys.jobs)))):
                state.jobs[job.id] = JobState(
                    **{name: getattr(job, name) for name in _JOB_COLUMNS if name != "status"},
                    status=JobStatus(job.status),
                    dataset_ids=tuple(d.dataset_id for d in job.datasets),
                    prices=tuple(d.price_wei for d in job.datasets),
                )
        if keys.enclaves:
            signers = sorted(keys.enclaves)
            for enclave in session.scalars(select(Enclave).where(Enclave.signer.in_(signers))):
                state.enclaves[enclave.signer] = EnclaveState(**{name: getattr(enclave, name) for name in _ENCLAVE_COLUMNS})
            for revoked in session.scalars(select(EnclaveRevocation).where(EnclaveRevocation.signer.in_(signers))):
                state.revocations[revoked.signer] = Revocation(block=revoked.block, timestamp=revoked.timestamp, tx_hash=revoked.tx_hash)
        if keys.measurements:
            hashes = sorted({measurement for _, measurement in keys.measurements})
            for approval in session.scalars(select(Measurement).where(Measurement.measurement.in_(hashes))):
                key = (approval.role, approval.measurement)
                state.measurements[key] = MeasurementState(approved=approval.approved, block=approval.block)
        if keys.market:
            pause = session.get(MarketState, self.key)
            if pause is not None:
                state.market = MarketPause(**{name: getattr(pause, name) for name in _MARKET_COLUMNS})
        if keys.operators:
            for stake in session.scalars(select(OperatorStakeRow).where(OperatorStakeRow.operator.in_(sorted(keys.operators)))):
                state.stakes[stake.operator] = OperatorStake(**{name: getattr(stake, name) for name in _STAKE_COLUMNS})
        totals = session.get(MarketTotalsRow, self.key)
        if totals is not None:
            state.totals = fold.MarketTotals(**{name: getattr(totals, name) for name in _TOTALS_COLUMNS})
        if keys.competitions:
            for competition in session.scalars(select(Competition).where(Competition.id.in_(sorted(keys.competitions)))):
                state.competitions[competition.id] = CompetitionState(
                    **{name: getattr(competition, name) for name in _COMPETITION_COLUMNS}, status=CompetitionStatus(competition.status)
                )
        by_competition: dict[int, list[int]] = {}
        for competition_id, index in sorted(keys.submissions):
            by_competition.setdefault(competition_id, []).append(index)
        for competition_id, indexes in by_competition.items():
            named = select(CompetitionSubmission).where(
                CompetitionSubmission.competition_id == competition_id, CompetitionSubmission.index.in_(indexes)
            )
            for submission in session.scalars(named):
                columns = {name: getattr(submission, name) for name in _SUBMISSION_COLUMNS}
                state.submissions[(submission.competition_id, submission.index)] = SubmissionState(**columns)
        return state

    def _store(self, session: Session, state: IndexState) -> None:
        """Write ``state`` (loaded by :meth:`_load`, then folded) and its new history into the session."""
        for dataset in state.datasets.values():
            row = session.get(Dataset, dataset.id)
            if row is None:
                row = Dataset(id=dataset.id)
                session.add(row)
            _copy(dataset, row, (*_DATASET_COLUMNS, "remaining_epsilon"))
            row.status = int(dataset.status)
            _sync(
                row.consumers,
                dataset.consumers,
                lambda key, at: AllowedConsumer(consumer=key, block=at.block, tx_hash=at.tx_hash, log_index=at.log_index),
                key=lambda entry: entry.consumer,
            )
            _sync(
                row.models,
                dataset.models,
                lambda key, at: AllowedModel(model_spec_hash=key, block=at.block, tx_hash=at.tx_hash, log_index=at.log_index),
                key=lambda entry: entry.model_spec_hash,
            )
        for job in state.jobs.values():
            job_row = session.get(Job, job.id)
            if job_row is None:  # created by this range: its datasets never change afterwards
                job_row = Job(id=job.id)
                job_row.datasets = [
                    JobDataset(dataset_id=d, position=i, price_wei=p)
                    for i, (d, p) in enumerate(zip(job.dataset_ids, job.prices, strict=True))
                ]
                session.add(job_row)
            _copy(job, job_row, _JOB_COLUMNS)
            job_row.status = int(job.status)
        if state.market is not None:
            pause = session.get(MarketState, self.key)
            if pause is None:
                pause = MarketState(key=self.key)
                session.add(pause)
            _copy(state.market, pause, _MARKET_COLUMNS)
        for operator, stake in state.stakes.items():
            stake_row = session.get(OperatorStakeRow, operator)
            if stake_row is None:
                stake_row = OperatorStakeRow(operator=operator)
                session.add(stake_row)
            _copy(stake, stake_row, _STAKE_COLUMNS)
        totals_row = session.get(MarketTotalsRow, self.key)
        if totals_row is None:
            totals_row = MarketTotalsRow(key=self.key)
            session.add(totals_row)
        _copy(state.totals, totals_row, _TOTALS_COLUMNS)
        for (role, measurement), decision in state.measurements.items():
            found = session.scalar(select(Measurement).where(Measurement.role == role, Measurement.measurement == measurement))
            if found is None:
                session.add(Measurement(role=role, measurement=measurement, approved=decision.approved, block=decision.block))
            else:
                found.approved, found.block = decision.approved, decision.block
        for signer, enclave in state.enclaves.items():
            enclave_row = session.get(Enclave, signer)
            if enclave_row is None:
                enclave_row = Enclave(signer=signer)
                session.add(enclave_row)
            _copy(enclave, enclave_row, _ENCLAVE_COLUMNS)
        for signer, revocation in state.revocations.items():
            if session.get(EnclaveRevocation, signer) is None:
                session.add(
                    EnclaveRevocation(signer=signer, block=revocation.block, timestamp=revocation.timestamp, tx_hash=revocation.tx_hash)
                )
        session.add_all(BudgetEvent(**asdict(record)) for record in state.budget_events)
        session.add_all(JobEvent(**asdict(record)) for record in state.job_events)
        session.add_all(Payment(**asdict(record)) for record in state.payments)
        for competition in state.competitions.values():
            competition_row = session.get(Competition, competition.id)
            if competition_row is None:
                competition_row = Competition(id=competition.id)
                session.add(competition_row)
            _copy(competition, competition_row, _COMPETITION_COLUMNS)
            competition_row.status = int(competition.status)
        for key, submission in state.submissions.items():
            submission_row = session.get(CompetitionSubmission, key)
            if submission_row is None:
                submission_row = CompetitionSubmission(competition_id=submission.competition_id, index=submission.index)
                session.add(submission_row)
            _copy(submission, submission_row, _SUBMISSION_COLUMNS)
        session.add_all(CompetitionScore(**{**asdict(record), "split": int(record.split)}) for record in state.scores)
        session.add_all(CompetitionPurchase(**asdict(record)) for record in state.purchases)
        session.flush()


def _copy(source: object, target: object, names: Iterable[str]) -> None:
    for name in names:
        setattr(target, name, getattr(source, name))


def _sync(
    rows: list[_Entry], wanted: Mapping[str, LogPosition], make: Callable[[str, LogPosition], _Entry], *, key: Callable[[_Entry], str]
) -> None:
    """Make the allow-list ``rows`` hold exactly the ``wanted`` entries (by key), each with its position.

    Entries kept are updated in place, so an entry removed and added back within one range never
    becomes a delete and an insert of the same unique key in one flush.
    """
    existing = {key(row): row for row in rows}
    for entry_key, row in existing.items():
        if entry_key not in wanted:
            rows.remove(row)  # the orphan is deleted
    for entry_key, at in wanted.items():
        kept = existing.get(entry_key)
        if kept is None:
            rows.append(make(entry_key, at))
        else:
            kept.block, kept.tx_hash, kept.log_index = at.block, at.tx_hash, at.log_index
