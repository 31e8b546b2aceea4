"""``GET /api/health``: is the chain reachable, and how far behind is the index?"""

from __future__ import annotations

import logging

from fastapi import APIRouter

from marketplace.errors import ChainUnavailable
from sterling.gateway.api.deps import ServicesDep, SessionDep
from sterling.gateway.queries import indexed_time, market_paused
from sterling.gateway.schemas import HealthPublic

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthPublic)
def health(services: ServicesDep, session: SessionDep) -> HealthPublic:
    """Chain head, indexed block, the lag between them, and the market's emergency stop (503 if the chain node does not answer)."""
    try:
        head = int(services.chain.w3.eth.block_number)
    except Exception as e:  # connection refused, timeouts: the node is down, not the request wrong
        logger.warning("health: chain node unreachable: %s", type(e).__name__)
        raise ChainUnavailable("the chain node does not answer") from e
    indexed, _ = indexed_time(session, services.cursor_key)
    return HealthPublic(
        status="ok", chain_id=services.chain.chain_id, head_block=head, indexed_block=indexed, lag_blocks=max(head - indexed, 0),
        market_paused=market_paused(session, services.cursor_key),
    )  # fmt: skip
