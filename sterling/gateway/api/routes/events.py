"""``GET /api/events``: server-sent events for live updates."""

from __future__ import annotations

import re
from collections.abc import AsyncIterable
from typing import Annotated

from fastapi import APIRouter, Depends, Header
from fastapi.sse import EventSourceResponse, ServerSentEvent

from sterling.gateway.api.deps import FeedDep
from sterling.gateway.bounds import GatewayBounds, get_bounds
from sterling.gateway.errors import BadRequest

router = APIRouter(tags=["events"])

_EVENT_ID = re.compile(r"[0-9]{1,18}")
"""An ``id`` this feed sends: the index's ``chain_events.id``, decimal ASCII (fits 63 bits)."""


LastEventId = Annotated[str | None, Header(description="the last event id received (resume after it)")]


def resume_after(last_event_id: LastEventId = None) -> int | None:
    """The event id to resume after, or ``None`` for "from now on".

    Raises:
        BadRequest: a ``Last-Event-ID`` this feed never sends (not 1–18 ASCII digits).
    """
    if last_event_id is None or last_event_id.strip() == "":
        return None
    value = last_event_id.strip()
    if _EVENT_ID.fullmatch(value) is None:
        raise BadRequest(f"Last-Event-ID must be an event id this feed sent (1-18 decimal digits), not {value[:40]!r}")
    return int(value)


@router.get(
    "/events",
    response_class=EventSourceResponse,
    responses={
        400: {"description": "malformed Last-Event-ID"},
        429: {"description": "too many open streams from this client (Retry-After)"},
        503: {"description": "too many open streams (Retry-After)"},
    },
)
async def events(
    feed: FeedDep,
    bounds: Annotated[GatewayBounds, Depends(get_bounds)],
    after: Annotated[int | None, Depends(resume_after)],
) -> AsyncIterable[ServerSentEvent]:
    """Stream ``block``, ``dataset``, ``job``, ``payment``, ``market``, ``worker`` and ``progress`` events (JSON data).

    Chain events carry an ``id``; a reconnecting ``EventSource`` resumes after ``Last-Event-ID``.
    A stream ends after ``STERLING_STREAMS_LIFETIME_SECONDS`` (the browser reconnects).
    """
    async for event in feed.stream(after, lifetime=bounds.streams.lifetime_seconds):
        yield event
