"""``GET /api/events``: server-sent events for live updates."""

from __future__ import annotations

from collections.abc import AsyncIterable
from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.sse import EventSourceResponse, ServerSentEvent

from sterling.gateway.api.deps import FeedDep

router = APIRouter(tags=["events"])


@router.get("/events", response_class=EventSourceResponse)
async def events(feed: FeedDep, last_event_id: Annotated[str | None, Header(max_length=32)] = None) -> AsyncIterable[ServerSentEvent]:
    """Stream ``block``, ``dataset``, ``job``, ``payment``, ``market``, ``worker`` and ``progress`` events (JSON data).

    Chain events carry an ``id``; a reconnecting ``EventSource`` resumes after ``Last-Event-ID``.
    """
    async for event in feed.stream(last_event_id):
        yield event
