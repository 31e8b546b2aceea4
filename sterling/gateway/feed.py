"""Live updates for server-sent events, read from the chain index and the worker status board.

Each open stream polls on its own (no shared background task): the index for events applied
since the last one it sent (``chain_events.id``, which is also the SSE ``id`` a browser
resumes from with ``Last-Event-ID``) and for a new indexed block, and the status board for
changed jobs. When the client goes away the stream's generator is cancelled and nothing of it
remains; :attr:`EventFeed.open_streams` counts the live ones.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi.sse import ServerSentEvent
from sqlalchemy import func, select

from enclave_worker.status import JobStatusBoard
from oracle.index_db import ChainEvent, Cursor, IndexDatabase
from sterling.gateway.queries import progress_public

logger = logging.getLogger(__name__)

MAX_EVENTS_PER_POLL = 500
_DATASET_EVENTS = frozenset(
    {
        "DatasetListed", "TermsUpdated", "BudgetToppedUp", "DatasetStatusChanged", "AccessRestricted",
        "ConsumerAllowed", "ConsumerDisallowed", "ModelAllowed", "ModelDisallowed",
        "EpsilonReserved", "EpsilonReleased", "BudgetDebited",
    }
)  # fmt: skip
_JOB_STAGES = {
    "JobCreated": "created", "JobClaimed": "claimed", "ResultSubmitted": "settled", "JobExpired": "expired", "JobCancelled": "cancelled",
    "LeaseRenewed": "renewed", "ClaimReleased": "released", "ClaimCharged": "charged", "StakeSlashed": "slashed",
}  # fmt: skip
_STAKE_EVENTS = {"StakeDeposited": "deposited", "UnstakeRequested": "unbonding", "StakeWithdrawn": "withdrawn"}
_PAYMENT_KINDS = {"PaymentCredited": "credited", "Withdrawn": "withdrawn"}
_MARKET_EVENTS = {"Paused": True, "Unpaused": False}


def event_of(row: ChainEvent) -> ServerSentEvent:
    """The SSE message for one indexed chain event."""
    where = {"block": row.block, "timestamp": row.timestamp, "tx_hash": row.tx_hash, "event": row.name}
    data: dict[str, Any]
    if row.name in _DATASET_EVENTS:
        kind = "dataset"
        data = {"dataset_id": row.dataset_id, "job_id": row.job_id, **where}
    elif row.name in _JOB_STAGES:
        kind = "job"
        data = {"job_id": row.job_id, "stage": _JOB_STAGES[row.name], **where}
    elif row.name in _PAYMENT_KINDS:
        kind = "payment"
        data = {
            "account": row.account,
            "job_id": row.job_id,
            "amount_wei": str(row.data.get("amount")),
            "kind": _PAYMENT_KINDS[row.name],
            **where,
        }
    elif row.name in _STAKE_EVENTS:
        kind = "stake"
        data = {"operator": row.account, "change": _STAKE_EVENTS[row.name], "amount_wei": str(row.data.get("amount")), **where}
    elif row.name in _MARKET_EVENTS:
        kind = "market"
        data = {"paused": _MARKET_EVENTS[row.name], "account": row.account, **where}
    else:
        kind = "worker"
        data = {"signer": row.data.get("signer"), **where}
    return ServerSentEvent(event=kind, id=str(row.id), data=data)


class EventFeed:
    """Produces the event streams of ``GET /api/events``."""

    def __init__(self, index: IndexDatabase, *, cursor_key: str, status: JobStatusBoard | None, poll_seconds: float) -> None:
        self.index = index
        self.cursor_key = cursor_key
        self.status = status
        self.poll_seconds = poll_seconds
        self.open_streams = 0
        self._closed = False

    def close(self) -> None:
        """End every open stream at its next poll (the server is shutting down); new ones end at once."""
        self._closed = True

    def _latest(self) -> tuple[int, int]:
        with self.index.session() as session:
            last_id = session.scalar(select(func.max(ChainEvent.id))) or 0
            cursor = session.get(Cursor, self.cursor_key)
        return last_id, cursor.last_block if cursor is not None else -1

    def _since(self, last_id: int) -> tuple[list[ChainEvent], int]:
        """Events after ``last_id`` and the indexed block, read in one snapshot."""
        with self.index.session() as session, session.begin():
            newer = select(ChainEvent).where(ChainEvent.id > last_id).order_by(ChainEvent.id).limit(MAX_EVENTS_PER_POLL)
            rows = list(session.scalars(newer))
            cursor = session.get(Cursor, self.cursor_key)
        return rows, cursor.last_block if cursor is not None else -1

    def _progress_versions(self) -> dict[int, int]:
        return self.status.versions() if self.status is not None else {}

    async def stream(self, last_event_id: str | None = None) -> AsyncIterator[ServerSentEvent]:
        """Events from now on (or after ``last_event_id``): block, dataset, job, payment, market, worker, progress."""
        self.open_streams += 1
        try:
            latest_id, block = await anyio.to_thread.run_sync(self._latest)
            last_id = int(last_event_id) if last_event_id and last_event_id.isdigit() else latest_id
            seen = await anyio.to_thread.run_sync(self._progress_versions)
            yield ServerSentEvent(event="block", data={"indexed_block": block}, retry=2000)
            while not self._closed:
                await anyio.sleep(self.poll_seconds)
                rows, indexed = await anyio.to_thread.run_sync(self._since, last_id)
                for row in rows:
                    last_id = row.id
                    yield event_of(row)
                if indexed != block and len(rows) < MAX_EVENTS_PER_POLL:
                    block = indexed
                    yield ServerSentEvent(event="block", data={"indexed_block": block})
                versions = await anyio.to_thread.run_sync(self._progress_versions)
                for job_id, version in sorted(versions.items()):
                    if seen.get(job_id) != version and self.status is not None:
                        progress = progress_public(self.status.get(job_id))
                        if progress is not None:
                            yield ServerSentEvent(event="progress", data=progress.model_dump())
                seen = versions
        finally:
            self.open_streams -= 1
