"""``GET /api/payments``: credits (prices, worker fees, refunds) and withdrawals."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from sterling.gateway.api.deps import SessionDep
from sterling.gateway.api.routes.datasets import MAX_ID
from sterling.gateway.queries import list_payments
from sterling.gateway.schemas import ADDRESS_PATTERN, PaymentListPublic

router = APIRouter(tags=["payments"])


@router.get("/payments", response_model=PaymentListPublic)
def payments(
    session: SessionDep,
    account: Annotated[str | None, Query(pattern=ADDRESS_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> PaymentListPublic:
    """Payments newest first; with ``account``, also what it can withdraw (``pending_wei``)."""
    items, total, pending = list_payments(session, account=account, limit=limit, offset=offset)
    return PaymentListPublic(items=items, total=total, pending_wei=str(pending) if pending is not None else None)
