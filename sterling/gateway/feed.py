"""Live updates for server-sent events, read from the chain index and the worker status board.

Open streams share one poll (no background task): whichever stream is due first reads a
:class:`_Snapshot` — the newest event id, the indexed block, the status board's versions — at
most once per ``poll_seconds``, and the others reuse it, so 500 idle streams cost one small
query per poll, not 1,500 (each used to poll on its own, and together they starved the thread
pool ``/api/health`` runs in). Only a stream that is behind the newest event reads the events
applied since the last one it sent (``chain_events.id``, which is also the SSE ``id`` a browser
resumes from with ``Last-Event-ID``). A stream ends after its ``lifetime`` (the browser
reconnects and resumes); when the client goes away the stream's generator is cancelled and
nothing of it remains; :attr:`EventFeed.open_streams` counts the live ones.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
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
_COMPETITION_CHANGES = {
    "CompetitionCreated": "created", "Submitted": "submitted", "ScorePosted": "scored", "CompetitionClosed": "closed",
    "ModelBought": "bought",
}  # fmt: skip


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
    elif row.name in _COMPETITION_CHANGES:
        kind = "competition"
        data = {"competition_id": row.competition_id, "change": _COMPETITION_CHANGES[row.name], "index": row.data.get("index"), **where}
    else:
        kind = "worker"
        data = {"signer": row.data.get("signer"), **where}
    return ServerSentEvent(event=kind, id=str(row.id), data=data)


@dataclass(frozen=True)
class _Snapshot:
    """What every stream compares itself against, read once per poll for all of them."""

    taken: float
    latest_id: int
    block: int
    versions: dict[int, int]


class EventFeed:
    """Produces the event streams of ``GET /api/events``."""

    def __init__(self, index: IndexDatabase, *, cursor_key: str, status: JobStatusBoard | None, poll_seconds: float) -> None:
        self.index = index
        self.cursor_key = cursor_key
        self.status = status
        self.poll_seconds = poll_seconds
        self.open_streams = 0
        self._closed = False
        self._snapshot: _Snapshot | None = None
        self._refreshing = False

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

    def _read_snapshot(self) -> _Snapshot:
        latest_id, block = self._latest()
        return _Snapshot(taken=time.monotonic(), latest_id=latest_id, block=block, versions=self._progress_versions())

    async def _shared_snapshot(self, *, max_age: float | None = None) -> _Snapshot:
        """The latest snapshot, read again if it is ``max_age`` (a poll interval) old and no other stream is reading it already.

        A burst of new streams waits for the one read in progress rather than starting its own
        (hundreds of simultaneous reads would queue for the index's few pooled connections).
        """
        max_age = self.poll_seconds if max_age is None else max_age
        while self._snapshot is None and self._refreshing:
            await anyio.sleep(0.01)
        snapshot = self._snapshot
        if snapshot is not None and (self._refreshing or time.monotonic() - snapshot.taken < max_age):
            return snapshot
        self._refreshing = True
        try:
            snapshot = await anyio.to_thread.run_sync(self._read_snapshot)
        finally:
            self._refreshing = False
        self._snapshot = snapshot
        return snapshot

    async def stream(self, after: int | None = None, *, lifetime: float = math.inf) -> AsyncIterator[ServerSentEvent]:
        """Events from now on (or after event id ``after``): block, dataset, job, payment, market, competition, worker, progress.

        The stream ends after ``lifetime`` seconds (or when the feed is closed).
        """
        self.open_streams += 1
        deadline = time.monotonic() + lifetime
        try:
            first = await self._shared_snapshot()
            last_id = after if after is not None else first.latest_id
            block, seen = first.block, first.versions
            yield ServerSentEvent(event="block", data={"indexed_block": block}, retry=2000)
            while not self._closed and time.monotonic() < deadline:
                await anyio.sleep(self.poll_seconds)
                snapshot = await self._shared_snapshot()
                indexed, more = snapshot.block, False
                if snapshot.latest_id > last_id:
                    rows, indexed = await anyio.to_thread.run_sync(self._since, last_id)
                    for row in rows:
                        last_id = row.id
                        yield event_of(row)
                    more = len(rows) >= MAX_EVENTS_PER_POLL
                if indexed != block and not more:
                    block = indexed
                    yield ServerSentEvent(event="block", data={"indexed_block": block})
                versions = snapshot.versions
                for job_id, version in sorted(versions.items()):
                    if seen.get(job_id) != version and self.status is not None:
                        progress = progress_public(self.status.get(job_id))
                        if progress is not None:
                            yield ServerSentEvent(event="progress", data=progress.model_dump())
                seen = versions
        finally:
            self.open_streams -= 1
