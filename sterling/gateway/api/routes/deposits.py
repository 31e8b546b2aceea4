"""``POST /api/key-manager/deposits``: hand a provider's HPKE-wrapped data key to the key manager."""

from __future__ import annotations

import logging

from fastapi import APIRouter

from sterling.gateway.api.deps import ServicesDep
from sterling.gateway.errors import BadRequest, NotFound
from sterling.gateway.schemas import DepositCreate, DepositPublic

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/key-manager", tags=["key manager"])


@router.post(
    "/deposits",
    status_code=201,
    response_model=DepositPublic,
    responses={400: {"description": "the wrapped key does not open for the key manager"}, 404: {"description": "ciphertext not stored"}},
)
def deposit(body: DepositCreate, services: ServicesDep) -> DepositPublic:
    """Forward a data key wrapped to the key manager's attested key; the gateway never sees the key itself."""
    if services.key_manager is None:
        raise NotFound("this gateway has no key manager to deposit to")
    content_hash = body.content_hash.lower().removeprefix("0x")
    if not services.blobs.has(content_hash):
        raise NotFound(f"no ciphertext {content_hash} in the blob store: upload it before depositing its key")
    wrapped = bytes.fromhex(body.wrapped_key.removeprefix("0x"))
    if not wrapped:
        raise BadRequest("wrapped_key is empty")
    services.key_manager.deposit(bytes.fromhex(content_hash), wrapped)
    logger.info("forwarded a wrapped key for %s to key manager %s", content_hash, services.key_manager.signer)
    return DepositPublic(content_hash="0x" + content_hash, key_manager=services.key_manager.signer)
