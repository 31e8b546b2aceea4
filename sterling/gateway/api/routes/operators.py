"""``/api/operators``: operator stakes (what a claim's operator answers with) and the market's money."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from sterling.gateway.api.deps import ServicesDep, SessionDep
from sterling.gateway.api.routes.datasets import MAX_ID
from sterling.gateway.queries import list_stakes, market_money, operator_stake
from sterling.gateway.schemas import ADDRESS_PATTERN, StakeListPublic, StakePublic

router = APIRouter(prefix="/operators", tags=["operators"])


@router.get("", response_model=StakeListPublic)
def operators(
    session: SessionDep,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> StakeListPublic:
    """Operators that ever staked, largest stake first, with the market's money totals."""
    items, total = list_stakes(session, limit=limit, offset=offset)
    return StakeListPublic(items=items, total=total, money=market_money(session, services.cursor_key))


@router.get("/{operator}/stake", response_model=StakePublic)
def stake(operator: Annotated[str, Path(pattern=ADDRESS_PATTERN)], session: SessionDep) -> StakePublic:
    """One operator's stake, unbonding end and slashed total (zero if it never staked, like ``stakeOf``)."""
    return operator_stake(session, operator)
