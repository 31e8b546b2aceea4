"""``GET /api/workers``: registered enclaves with their measurement and attestation."""

from __future__ import annotations

from fastapi import APIRouter

from sterling.gateway.api.deps import ServicesDep, SessionDep
from sterling.gateway.queries import list_workers
from sterling.gateway.schemas import WorkerPublic

router = APIRouter(tags=["workers"])


@router.get("/workers", response_model=list[WorkerPublic])
def workers(session: SessionDep, services: ServicesDep) -> list[WorkerPublic]:
    """Trainer and key-manager enclaves as registered on-chain (latest certificate per signer)."""
    return list_workers(session, cursor_key=services.cursor_key, formats=dict(services.attestation_formats))
