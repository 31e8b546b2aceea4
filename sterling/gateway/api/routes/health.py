"""``GET /api/health``: is the chain reachable, and how far behind is the index?"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from marketplace.errors import ChainUnavailable
from sterling.gateway.health import HealthFigures, HealthProbe
from sterling.gateway.queries import indexed_time, market_paused
from sterling.gateway.schemas import HealthPublic
from sterling.gateway.services import GatewayServices

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


def read_health(services: GatewayServices) -> HealthFigures:
    """One blocking read of the chain head and the index cursor (run by :class:`HealthProbe` on its own thread).

    Raises:
        ChainUnavailable: the chain node does not answer.
    """
    try:
        head = int(services.chain.w3.eth.block_number)
    except Exception as e:  # connection refused, timeouts: the node is down, not the request wrong
        logger.warning("health: chain node unreachable: %s", type(e).__name__)
        raise ChainUnavailable("the chain node does not answer") from e
    with services.index.session() as session:
        indexed, _ = indexed_time(session, services.cursor_key)
        paused = market_paused(session, services.cursor_key)
    return HealthFigures(chain_id=services.chain.chain_id, head_block=head, indexed_block=indexed, market_paused=paused)


def get_probe(request: Request) -> HealthProbe:
    probe: HealthProbe = request.app.state.health
    return probe


@router.get("/health", response_model=HealthPublic)
async def health(probe: Annotated[HealthProbe, Depends(get_probe)]) -> HealthPublic:
    """Chain head, indexed block, the lag between them, and the market's emergency stop (503 if the chain node does not answer).

    Read on a thread of its own and shared by concurrent requests, so it answers while the gateway is
    busy; the figures are at most ``health_max_age_seconds`` old (a few seconds while a read is
    slow), and ``age_ms`` says how old."""
    figures, age = await probe.figures()
    return HealthPublic(
        status="ok", chain_id=figures.chain_id, head_block=figures.head_block, indexed_block=figures.indexed_block,
        lag_blocks=max(figures.head_block - figures.indexed_block, 0), market_paused=figures.market_paused,
        age_ms=round(age * 1000, 1),
    )  # fmt: skip
