"""``POST /api/key-manager/deposits``: hand a provider's HPKE-wrapped data key to the key manager.

A deposit names its provider and carries the provider's EIP-712 ``Deposit`` signature
(:mod:`enclave_worker.trusted.receipt`); the key manager's trusted part checks it, and keeps one
key per (content hash, provider), never replaced: a bad signature is answered 400, a second
deposit by the same provider 409.
"""

from __future__ import annotations

import logging

from eth_utils import to_checksum_address
from fastapi import APIRouter, HTTPException

from enclave_worker.trusted.receipt import DepositExists, DepositSignatureInvalid
from sterling.gateway.api.deps import ServicesDep
from sterling.gateway.errors import BadRequest, NotFound
from sterling.gateway.schemas import DepositCreate, DepositPublic

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/key-manager", tags=["key manager"])


@router.post(
    "/deposits",
    status_code=201,
    response_model=DepositPublic,
    responses={
        400: {"description": "the signature is not the provider's, or the wrapped key does not open for the key manager"},
        404: {"description": "ciphertext not stored"},
        409: {"description": "this provider already deposited a key for this ciphertext (the first is kept)"},
    },
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
    provider = str(to_checksum_address("0x" + body.provider.removeprefix("0x")))
    signature = bytes.fromhex(body.signature.removeprefix("0x"))
    try:
        services.key_manager.deposit(bytes.fromhex(content_hash), wrapped, provider=provider, signature=signature)
    except DepositSignatureInvalid as e:
        raise BadRequest(f"deposit refused: {e}") from e
    except DepositExists as e:
        raise HTTPException(status_code=409, detail=f"deposit refused: {e}") from e
    logger.info("forwarded a wrapped key for %s by %s to key manager %s", content_hash, provider, services.key_manager.signer)
    return DepositPublic(content_hash="0x" + content_hash, key_manager=services.key_manager.signer, provider=provider)
