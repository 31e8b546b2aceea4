"""The chain event indexer: ``JobMarket`` and ``EnclaveRegistry`` logs into the SQL index.

Exactly once: each poll reads the logs of a bounded block range ``cursor + 1 … end`` and
writes every derived row *and* the advanced cursor in one database transaction. A crash before
the commit leaves the cursor where it was, so the range is read again; a crash after it has
nothing left to redo. Replays are harmless on top of that: every applied log is recorded in
``chain_events`` under a unique ``(tx_hash, log_index)`` and skipped when seen again, and every
derived history row carries the same unique key.

Every piece of on-chain state a client asks about is rebuilt from the events alone: each
dataset's terms (``DatasetListed``, ``TermsUpdated``), ε ledger (listed, reserved, released,
debited, topped up), status (``DatasetStatusChanged``), restriction flags and allow-lists
(``AccessRestricted``, ``Consumer…``/``Model…`` ``Allowed``/``Disallowed``); each job's status,
price snapshots and refund; the market's emergency stop (``Paused``/``Unpaused``); enclaves,
measurements and revocations. The index is therefore a pure function of the chain up to its cursor.

Example:
    >>> indexer = Indexer(db, market=market, registry=registry, start_block=deployment.block)  # doctest: +SKIP
    >>> indexer.poll_once()
    [IndexedRange(from_block=12, to_block=40, events=17)]
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from eth_account import Account
from eth_account.messages import encode_typed_data
from sqlalchemy import select
from sqlalchemy.orm import Session
from web3.contract.base_contract import BaseContractEvent

from marketplace.contracts import (
    CERTIFICATE_TYPES,
    DatasetStatus,
    JobStatus,
    MarketClient,
    RegistryClient,
)
from marketplace.errors import SterlingError

from .index_db import (
    AllowedConsumer,
    AllowedModel,
    BudgetEvent,
    ChainEvent,
    Cursor,
    Dataset,
    Enclave,
    EnclaveRevocation,
    IndexDatabase,
    Job,
    JobDataset,
    JobEvent,
    MarketState,
    Measurement,
    Payment,
    PaymentReason,
    cursor_key,
)

logger = logging.getLogger(__name__)

DEFAULT_BATCH_BLOCKS = 500
JS_SAFE_INTEGER = 2**53 - 1


class IndexerChainMismatch(SterlingError):
    """The index was built from another chain than the one connected (it was reset or replaced)."""


class _CursorMoved(SterlingError):
    """Another indexer committed the range first (its commit covers it)."""


def hex0x(value: bytes | bytearray) -> str:
    """``0x``-prefixed lowercase hex of raw bytes."""
    return "0x" + bytes(value).hex()


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


@dataclass(frozen=True)
class DecodedLog:
    """One decoded log with where and when it happened."""

    name: str
    args: dict[str, Any]
    contract: str
    block: int
    timestamp: int
    tx_hash: str
    log_index: int
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class IndexedRange:
    """A block range committed to the index."""

    from_block: int
    to_block: int
    events: int


class Indexer:
    """Follows the market and registry logs into an :class:`~oracle.index_db.IndexDatabase`."""

    def __init__(
        self,
        db: IndexDatabase,
        *,
        market: MarketClient,
        registry: RegistryClient,
        start_block: int,
        batch_blocks: int = DEFAULT_BATCH_BLOCKS,
        confirmations: int = 0,
    ) -> None:
        """Create an indexer; nothing is read until :meth:`poll_once`.

        Args:
            start_block: first block to read (the deployment block).
            batch_blocks: largest block range per ``eth_getLogs`` call and per transaction.
            confirmations: stay this many blocks behind the head (reorg safety on public chains).
        """
        if batch_blocks < 1:
            raise ValueError("batch_blocks must be at least 1")
        self.db = db
        self.market = market
        self.registry = registry
        self.chain = market.chain
        self.start_block = start_block
        self.batch_blocks = batch_blocks
        self.confirmations = confirmations
        self.committed_block: int | None = None
        """The last block this indexer committed (or found committed); an in-process version of the index."""
        self.key = cursor_key(self.chain.chain_id, market.address, registry.address)
        self._events: dict[tuple[str, str], BaseContractEvent] = {}
        for client in (market, registry):
            # web3 annotates ContractEvents.__iter__ as returning an Iterable; it yields the events.
            for contract_event in cast(Iterable[BaseContractEvent], client.contract.events):
                self._events[(client.address.lower(), contract_event.topic.lower())] = contract_event
        self._checked_chain = False
        self._block_times: dict[int, int] = {}
        self._handlers: dict[str, Callable[[Session, DecodedLog], None]] = {
            "DatasetListed": self._dataset_listed,
            "TermsUpdated": self._terms_updated,
            "BudgetToppedUp": self._budget_topped_up,
            "DatasetStatusChanged": self._dataset_status_changed,
            "AccessRestricted": self._access_restricted,
            "ConsumerAllowed": self._consumer_allowed,
            "ConsumerDisallowed": self._consumer_disallowed,
            "ModelAllowed": self._model_allowed,
            "ModelDisallowed": self._model_disallowed,
            "EpsilonReserved": self._epsilon_reserved,
            "EpsilonReleased": self._epsilon_released,
            "BudgetDebited": self._budget_debited,
            "JobCreated": self._job_created,
            "JobClaimed": self._job_claimed,
            "ResultSubmitted": self._result_submitted,
            "JobExpired": self._job_expired,
            "JobCancelled": self._job_cancelled,
            "PaymentCredited": self._payment_credited,
            "Withdrawn": self._withdrawn,
            "Paused": self._market_paused,
            "Unpaused": self._market_unpaused,
            "MeasurementApproved": self._measurement_approved,
            "MeasurementRevoked": self._measurement_revoked,
            "EnclaveRegistered": self._enclave_registered,
            "EnclaveRevoked": self._enclave_revoked,
        }

    # --- cursor -------------------------------------------------------------------------------

    def cursor(self) -> Cursor:
        """The persisted cursor, created at ``start_block - 1`` on first use.

        Raises:
            IndexerChainMismatch: the block at ``start_block`` is not the one the index began from.
        """
        with self.db.session() as session:
            cursor = session.get(Cursor, self.key)
        if cursor is not None and self._checked_chain:
            return cursor
        start_hash = hex0x(self.chain.w3.eth.get_block(self.start_block)["hash"])
        with self.db.transaction() as session:
            cursor = session.get(Cursor, self.key)
            if cursor is None:
                cursor = Cursor(
                    key=self.key,
                    chain_id=self.chain.chain_id,
                    market_address=self.market.address,
                    registry_address=self.registry.address,
                    start_block=self.start_block,
                    start_block_hash=start_hash,
                    last_block=self.start_block - 1,
                    last_block_timestamp=0,
                )
                session.add(cursor)
                logger.info("new index cursor %s from block %d", self.key, self.start_block)
            elif cursor.start_block_hash != start_hash:
                raise IndexerChainMismatch(
                    f"index cursor {self.key} began at block {cursor.start_block} with hash {cursor.start_block_hash}, "
                    f"but the connected chain has {start_hash} there: the chain was reset; reset the index"
                )
        self._checked_chain = True
        return cursor

    def last_block(self) -> int:
        """The last block committed to the index."""
        with self.db.session() as session:
            cursor = session.get(Cursor, self.key)
        return cursor.last_block if cursor is not None else self.start_block - 1

    # --- polling ------------------------------------------------------------------------------

    def poll_once(self) -> list[IndexedRange]:
        """Index everything from the cursor to the head (minus confirmations), batch by batch."""
        cursor = self.cursor()
        self.committed_block = max(self.committed_block or -1, cursor.last_block)
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
        logs = self._fetch(start, end)
        end_time = self._timestamp(end)
        with self.db.transaction() as session:
            cursor = session.get(Cursor, self.key)
            if cursor is None or cursor.last_block != start - 1:
                raise _CursorMoved(f"cursor {self.key} is not at block {start - 1}")
            applied = 0
            for log in logs:
                if self._apply(session, log):
                    applied += 1
            cursor.last_block = end
            cursor.last_block_timestamp = end_time
        self.committed_block = end  # after the commit: a reader never sees a version ahead of the data
        if logs:
            logger.info("indexed blocks %d-%d: %d events", start, end, applied)
        return IndexedRange(start, end, applied)

    def _fetch(self, start: int, end: int) -> list[DecodedLog]:
        """Decode the logs of both contracts in ``start … end``, in chain order (no DB access)."""
        raw = []
        for client in (self.market, self.registry):
            raw.extend(self.chain.w3.eth.get_logs({"fromBlock": start, "toBlock": end, "address": client.contract.address}))
        raw.sort(key=lambda log: (int(log["blockNumber"]), int(log["logIndex"])))
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
            if name not in self._handlers:
                continue
            block = int(log["blockNumber"])
            tx_hash = hex0x(log["transactionHash"])
            extra = {"verifier": self._certificate_verifier(tx_hash)} if name == "EnclaveRegistered" else {}
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

    def _apply(self, session: Session, log: DecodedLog) -> bool:
        """Apply one log unless it was applied before; returns whether it was new."""
        seen = session.scalar(select(ChainEvent.id).where(ChainEvent.tx_hash == log.tx_hash, ChainEvent.log_index == log.log_index))
        if seen is not None:
            return False
        args = log.args
        dataset_id = args.get("datasetId")
        job_id = args.get("jobId")
        account = args.get("account")
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
                account=str(account) if account is not None else None,
                data=_json_safe(args),
            )
        )
        self._handlers[log.name](session, log)
        session.flush()
        return True

    def _dataset_listed(self, session: Session, log: DecodedLog) -> None:
        a, terms = log.args, log.args["terms"]
        total = int(terms["totalEpsilonBudget"])
        session.add(
            Dataset(
                id=int(a["datasetId"]),
                provider=str(a["provider"]),
                content_hash=hex0x(a["contentHash"]),
                schema_hash=hex0x(a["schemaHash"]),
                uri=str(a["uri"]),
                price_wei=int(terms["pricePerJob"]),
                max_epsilon_per_job=int(terms["maxEpsilonPerJob"]),
                total_epsilon=total,
                spent_epsilon=0,
                reserved_epsilon=0,
                remaining_epsilon=total,
                max_delta=int(terms["maxDelta"]),
                expiry=int(terms["expiry"]),
                listed_block=log.block,
                listed_at=log.timestamp,
                listed_tx=log.tx_hash,
                status=int(DatasetStatus.ACTIVE),
                restricted=False,
                models_restricted=False,
                updated_block=log.block,
            )
        )
        self._budget(session, log, dataset_id=int(a["datasetId"]), job_id=None, kind="listed", epsilon=total, remaining=total, total=total)

    def _terms_updated(self, session: Session, log: DecodedLog) -> None:
        """New terms replace the old; a new total budget moves what remains (spent and reserved stay)."""
        terms = log.args["terms"]
        dataset = self._dataset(session, int(log.args["datasetId"]))
        dataset.price_wei = int(terms["pricePerJob"])
        dataset.max_epsilon_per_job = int(terms["maxEpsilonPerJob"])
        dataset.total_epsilon = int(terms["totalEpsilonBudget"])
        dataset.max_delta = int(terms["maxDelta"])
        dataset.expiry = int(terms["expiry"])
        dataset.remaining_epsilon = self._recompute_remaining(dataset)
        dataset.updated_block = log.block
        self._budget(
            session, log, dataset_id=dataset.id, job_id=None, kind="terms_updated", epsilon=dataset.total_epsilon,
            remaining=dataset.remaining_epsilon, total=dataset.total_epsilon,
        )  # fmt: skip

    def _budget_topped_up(self, session: Session, log: DecodedLog) -> None:
        dataset = self._dataset(session, int(log.args["datasetId"]))
        amount, total = int(log.args["amount"]), int(log.args["totalEpsilonBudget"])
        if dataset.total_epsilon + amount != total:
            logger.warning("dataset %d: total budget from events is %d + %d, BudgetToppedUp says %d", dataset.id, dataset.total_epsilon, amount, total)
        dataset.total_epsilon = total
        dataset.remaining_epsilon = self._recompute_remaining(dataset)
        dataset.updated_block = log.block
        self._budget(
            session, log, dataset_id=dataset.id, job_id=None, kind="topped_up", epsilon=amount,
            remaining=dataset.remaining_epsilon, total=total,
        )  # fmt: skip

    @staticmethod
    def _recompute_remaining(dataset: Dataset) -> int:
        remaining = dataset.total_epsilon - dataset.spent_epsilon - dataset.reserved_epsilon
        if remaining < 0:  # the contract keeps spent + reserved <= total; only an inconsistent chain gets here
            raise IndexerChainMismatch(f"dataset {dataset.id}: ε spent and reserved exceed its total budget")
        return remaining

    def _dataset_status_changed(self, session: Session, log: DecodedLog) -> None:
        dataset = self._dataset(session, int(log.args["datasetId"]))
        dataset.status = int(DatasetStatus(int(log.args["status"])))
        dataset.updated_block = log.block

    def _access_restricted(self, session: Session, log: DecodedLog) -> None:
        dataset = self._dataset(session, int(log.args["datasetId"]))
        dataset.restricted = bool(log.args["consumers"])
        dataset.models_restricted = bool(log.args["models"])
        dataset.updated_block = log.block

    def _consumer_allowed(self, session: Session, log: DecodedLog) -> None:
        dataset, consumer = self._dataset(session, int(log.args["datasetId"])), str(log.args["consumer"])
        if not any(c.consumer == consumer for c in dataset.consumers):  # allowing it again changes nothing, as on-chain
            dataset.consumers.append(AllowedConsumer(consumer=consumer, block=log.block, tx_hash=log.tx_hash, log_index=log.log_index))

    def _consumer_disallowed(self, session: Session, log: DecodedLog) -> None:
        dataset, consumer = self._dataset(session, int(log.args["datasetId"])), str(log.args["consumer"])
        dataset.consumers = [c for c in dataset.consumers if c.consumer != consumer]  # the orphan is deleted

    def _model_allowed(self, session: Session, log: DecodedLog) -> None:
        dataset, model = self._dataset(session, int(log.args["datasetId"])), hex0x(log.args["modelSpecHash"])
        if not any(m.model_spec_hash == model for m in dataset.models):
            dataset.models.append(AllowedModel(model_spec_hash=model, block=log.block, tx_hash=log.tx_hash, log_index=log.log_index))

    def _model_disallowed(self, session: Session, log: DecodedLog) -> None:
        dataset, model = self._dataset(session, int(log.args["datasetId"])), hex0x(log.args["modelSpecHash"])
        dataset.models = [m for m in dataset.models if m.model_spec_hash != model]

    def _dataset(self, session: Session, dataset_id: int) -> Dataset:
        dataset = session.get(Dataset, dataset_id)
        if dataset is None:  # cannot happen for a consistent chain: the market checks existence
            raise IndexerChainMismatch(f"event for dataset {dataset_id}, which was never listed")
        return dataset

    def _budget(
        self, session: Session, log: DecodedLog, *, dataset_id: int, job_id: int | None, kind: str, epsilon: int, remaining: int, total: int,
        price_wei: int | None = None,
    ) -> None:  # fmt: skip
        session.add(
            BudgetEvent(
                dataset_id=dataset_id,
                job_id=job_id,
                kind=kind,
                epsilon=epsilon,
                remaining_epsilon=remaining,
                total_epsilon=total,
                price_wei=price_wei,
                block=log.block,
                timestamp=log.timestamp,
                tx_hash=log.tx_hash,
                log_index=log.log_index,
            )
        )

    def _epsilon_reserved(self, session: Session, log: DecodedLog) -> None:
        """A new job's reservation, with the price it pays (emitted before its ``JobCreated``)."""
        dataset_id, job_id, epsilon = int(log.args["datasetId"]), int(log.args["jobId"]), int(log.args["epsilon"])
        dataset = self._dataset(session, dataset_id)
        dataset.reserved_epsilon += epsilon
        dataset.remaining_epsilon = self._recompute_remaining(dataset)
        self._budget(
            session, log, dataset_id=dataset_id, job_id=job_id, kind="reserved", epsilon=epsilon, remaining=dataset.remaining_epsilon,
            total=dataset.total_epsilon, price_wei=int(log.args["price"]),
        )  # fmt: skip

    def _epsilon_released(self, session: Session, log: DecodedLog) -> None:
        dataset_id, job_id, epsilon = int(log.args["datasetId"]), int(log.args["jobId"]), int(log.args["epsilon"])
        dataset = self._dataset(session, dataset_id)
        dataset.reserved_epsilon -= epsilon
        dataset.remaining_epsilon = self._recompute_remaining(dataset)
        self._budget(
            session, log, dataset_id=dataset_id, job_id=job_id, kind="released", epsilon=epsilon, remaining=dataset.remaining_epsilon,
            total=dataset.total_epsilon,
        )  # fmt: skip

    def _budget_debited(self, session: Session, log: DecodedLog) -> None:
        """A job's reservation on the dataset is replaced by the ε it spent."""
        dataset_id, job_id = int(log.args["datasetId"]), int(log.args["jobId"])
        spent, remaining = int(log.args["epsilonSpent"]), int(log.args["remaining"])
        dataset = self._dataset(session, dataset_id)
        reserved = session.scalar(
            select(BudgetEvent.epsilon).where(
                BudgetEvent.dataset_id == dataset_id, BudgetEvent.job_id == job_id, BudgetEvent.kind == "reserved"
            )
        )
        dataset.reserved_epsilon -= int(reserved or 0)
        dataset.spent_epsilon += spent
        computed = dataset.total_epsilon - dataset.spent_epsilon - dataset.reserved_epsilon
        if computed != remaining:
            logger.warning("dataset %d: ledger from events gives %d remaining, BudgetDebited says %d", dataset_id, computed, remaining)
            dataset.spent_epsilon = dataset.total_epsilon - dataset.reserved_epsilon - remaining
        dataset.remaining_epsilon = remaining
        self._budget(
            session, log, dataset_id=dataset_id, job_id=job_id, kind="debited", epsilon=spent, remaining=remaining, total=dataset.total_epsilon
        )

    def _job(self, session: Session, job_id: int) -> Job:
        job = session.get(Job, job_id)
        if job is None:
            raise IndexerChainMismatch(f"event for job {job_id}, which was never created")
        return job

    def _job_created(self, session: Session, log: DecodedLog) -> None:
        """The job, with each dataset's price from the ``EpsilonReserved`` logs just before it."""
        a = log.args
        job_id = int(a["jobId"])
        job = Job(
            id=job_id,
            consumer=str(a["consumer"]),
            status=int(JobStatus.OPEN),
            model_spec_hash=hex0x(a["modelSpecHash"]),
            epsilon=int(a["epsilon"]),
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
        )
        reserved = session.execute(
            select(BudgetEvent.dataset_id, BudgetEvent.price_wei).where(
                BudgetEvent.job_id == job_id, BudgetEvent.kind == "reserved", BudgetEvent.tx_hash == log.tx_hash
            )
        ).all()
        prices = {int(dataset_id): int(price or 0) for dataset_id, price in reserved}
        dataset_ids = [int(d) for d in a["datasetIds"]]
        if set(prices) != set(dataset_ids):
            raise IndexerChainMismatch(f"job {job_id}: reservations for datasets {sorted(prices)}, but it names {dataset_ids}")
        job.datasets = [JobDataset(dataset_id=d, position=i, price_wei=prices[d]) for i, d in enumerate(dataset_ids)]
        session.add(job)
        self._stage(session, log, job_id=job_id, stage="created", amount_wei=int(a["escrow"]))

    def _stage(self, session: Session, log: DecodedLog, *, job_id: int, stage: str, **fields: Any) -> None:
        session.add(
            JobEvent(job_id=job_id, stage=stage, block=log.block, timestamp=log.timestamp, tx_hash=log.tx_hash, log_index=log.log_index, **fields)
        )

    def _job_claimed(self, session: Session, log: DecodedLog) -> None:
        job = self._job(session, int(log.args["jobId"]))
        job.status = int(JobStatus.CLAIMED)
        job.enclave = str(log.args["enclave"])
        job.operator = str(log.args["operator"])
        job.updated_block = log.block
        self._stage(session, log, job_id=job.id, stage="claimed", enclave=job.enclave, operator=job.operator)

    def _result_submitted(self, session: Session, log: DecodedLog) -> None:
        a = log.args
        job = self._job(session, int(a["jobId"]))
        job.status = int(JobStatus.COMPLETED)
        job.epsilon_spent = int(a["epsilonSpent"])
        job.model_hash = hex0x(a["modelHash"])
        job.result_hash = hex0x(a["resultHash"])
        job.metrics_hash = hex0x(a["metricsHash"])
        job.updated_block = log.block
        self._stage(session, log, job_id=job.id, stage="settled", enclave=str(a["enclave"]), epsilon_spent=job.epsilon_spent)

    def _job_expired(self, session: Session, log: DecodedLog) -> None:
        self._job_refunded(session, log, status=JobStatus.EXPIRED, stage="expired")

    def _job_cancelled(self, session: Session, log: DecodedLog) -> None:
        self._job_refunded(session, log, status=JobStatus.CANCELLED, stage="cancelled")

    def _job_refunded(self, session: Session, log: DecodedLog, *, status: JobStatus, stage: str) -> None:
        """An expired or cancelled job: its escrow was credited back (the credit came just before)."""
        job = self._job(session, int(log.args["jobId"]))
        refund = int(log.args["refund"])
        job.status = int(status)
        job.refund_wei = refund
        job.updated_block = log.block
        credit = session.scalar(
            select(Payment).where(
                Payment.tx_hash == log.tx_hash, Payment.job_id == job.id, Payment.account == job.consumer, Payment.kind == "credited"
            )
        )
        if credit is not None:
            credit.reason = PaymentReason.REFUND
        self._stage(session, log, job_id=job.id, stage=stage, amount_wei=refund)

    def _payment_credited(self, session: Session, log: DecodedLog) -> None:
        """A credit; its reason is ``change`` in the job's creation, else ``payout`` until a refund event says otherwise."""
        a = log.args
        job_id = int(a["jobId"])
        job = session.get(Job, job_id)
        reason = PaymentReason.CHANGE if job is not None and job.created_tx == log.tx_hash else PaymentReason.PAYOUT
        session.add(
            Payment(
                account=str(a["account"]), job_id=job_id, kind="credited", reason=reason, amount_wei=int(a["amount"]),
                block=log.block, timestamp=log.timestamp, tx_hash=log.tx_hash, log_index=log.log_index,
            )
        )  # fmt: skip

    def _withdrawn(self, session: Session, log: DecodedLog) -> None:
        a = log.args
        session.add(
            Payment(
                account=str(a["account"]), job_id=None, kind="withdrawn", reason=None, amount_wei=int(a["amount"]),
                block=log.block, timestamp=log.timestamp, tx_hash=log.tx_hash, log_index=log.log_index,
            )
        )  # fmt: skip

    def _market_paused(self, session: Session, log: DecodedLog) -> None:
        self._market_state(session, log, paused=True)

    def _market_unpaused(self, session: Session, log: DecodedLog) -> None:
        self._market_state(session, log, paused=False)

    def _market_state(self, session: Session, log: DecodedLog, *, paused: bool) -> None:
        row = session.get(MarketState, self.key) or MarketState(key=self.key)
        row.paused = paused
        row.changed_block = log.block
        row.changed_at = log.timestamp
        row.changed_by = str(log.args["account"])
        session.add(row)

    def _measurement(self, session: Session, log: DecodedLog, *, approved: bool) -> None:
        role, measurement = int(log.args["role"]), hex0x(log.args["measurement"])
        row = session.scalar(select(Measurement).where(Measurement.role == role, Measurement.measurement == measurement))
        if row is None:
            session.add(Measurement(role=role, measurement=measurement, approved=approved, block=log.block))
        else:
            row.approved, row.block = approved, log.block

    def _measurement_approved(self, session: Session, log: DecodedLog) -> None:
        self._measurement(session, log, approved=True)

    def _measurement_revoked(self, session: Session, log: DecodedLog) -> None:
        self._measurement(session, log, approved=False)

    def _enclave_registered(self, session: Session, log: DecodedLog) -> None:
        """A newer certificate for the same signer overwrites the old one, as on-chain."""
        a = log.args
        signer = str(a["signer"])
        row = session.get(Enclave, signer) or Enclave(signer=signer)
        row.role = int(a["role"])
        row.measurement = hex0x(a["measurement"])
        row.encryption_key = hex0x(a["encryptionKey"])
        row.operator = str(a["operator"])
        row.valid_until = int(a["validUntil"])
        row.verifier = log.extra.get("verifier")
        row.registered_block = log.block
        row.registered_at = log.timestamp
        row.registered_tx = log.tx_hash
        session.add(row)

    def _enclave_revoked(self, session: Session, log: DecodedLog) -> None:
        """Revocation is for good and idempotent on-chain: the first one is kept."""
        signer = str(log.args["signer"])
        if session.get(EnclaveRevocation, signer) is None:
            session.add(EnclaveRevocation(signer=signer, block=log.block, timestamp=log.timestamp, tx_hash=log.tx_hash))
