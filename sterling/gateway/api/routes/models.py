"""Served models: the catalogue, channels, owners' key deposits and ``POST /api/inference``.

The gateway sees request envelopes, encrypted answers and vouchers only: a request is HPKE-encrypted
by the client to the inference enclave's **on-chain** key (the SDK reads it from the registry,
never from this gateway) and its answer is encrypted back to the client; the gateway relays
bytes to the inference host and the enclave's signed receipt back (docs/inference.md).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal

from eth_utils import to_checksum_address
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from enclave_worker.remote_inference import INFERENCE_RESPONSES, served_json
from enclave_worker.trusted.onchain import EPSILON_SCALE, ModelStatus, OutputPolicy
from enclave_worker.trusted.receipt import DepositExists, DepositSignatureInvalid
from marketplace.errors import JobNotReady, KeyReleaseRefused
from marketplace.model_market import ModelRecord
from sterling.gateway.api.deps import ServicesDep
from sterling.gateway.errors import BadRequest, NotFound
from sterling.gateway.schemas import (
    ChannelPublic,
    DepositPublic,
    InferencePublic,
    JobModelCreate,
    JobModelPublic,
    ModelDepositCreate,
    ModelPublic,
)
from sterling.inference_service import refusal_answer

logger = logging.getLogger(__name__)

router = APIRouter(tags=["models"])



_STATUS: dict[ModelStatus, Literal["active", "paused", "delisted"]] = {
    ModelStatus.ACTIVE: "active", ModelStatus.PAUSED: "paused", ModelStatus.DELISTED: "delisted",
}  # fmt: skip
_POLICY: dict[OutputPolicy, Literal["label", "top_k", "probabilities"]] = {
    OutputPolicy.LABEL: "label", OutputPolicy.TOP_K: "top_k", OutputPolicy.PROBABILITIES: "probabilities",
}  # fmt: skip


def _model_public(record: ModelRecord) -> ModelPublic:
    terms = record.terms
    return ModelPublic(
        model_id=record.model_id, owner=record.owner, status=_STATUS[ModelStatus(record.status)],
        weights_hash="0x" + terms.weights_hash.hex(), spec_hash="0x" + terms.spec_hash.hex(),
        content_hash="0x" + terms.content_hash.hex(), price_per_query_wei=str(int(terms.price_per_query)),
        output_policy=_POLICY[OutputPolicy(terms.output_policy)], output_param=terms.output_param, query_cap=terms.query_cap,
        expiry=terms.expiry, restricted=terms.restricted, source_job_id=terms.source_job_id,
        epsilon=terms.epsilon / EPSILON_SCALE if terms.epsilon else None, delta_units=str(terms.delta),
    )  # fmt: skip


def _market(services: ServicesDep) -> Any:
    if services.model_market is None:
        raise NotFound("this gateway serves no model market")
    return services.model_market


@router.get("/models", response_model=list[ModelPublic])
def list_models(services: ServicesDep) -> list[ModelPublic]:
    """Every listed model, newest first (read from the model market contract)."""
    market = _market(services)
    return [_model_public(market.model(i)) for i in range(market.model_count(), 0, -1)]


@router.get("/models/{model_id}", response_model=ModelPublic)
def get_model(model_id: int, services: ServicesDep) -> ModelPublic:
    """One listing, with the inference enclave that serves it here (verify it in the registry before you encrypt to it)."""
    market = _market(services)
    if not 1 <= model_id <= market.model_count():
        raise NotFound(f"model {model_id} is not listed")
    public = _model_public(market.model(model_id))
    if services.inference is not None:
        public.serving_enclave = services.inference.signer
    return public


@router.get("/models/{model_id}/channels/{client}", response_model=ChannelPublic)
def get_channel(model_id: int, client: str, services: ServicesDep) -> ChannelPublic:
    """A client's credit on a model: deposited, redeemed (paid to owner and operator), queries redeemed, close requested."""
    market = _market(services)
    if not 1 <= model_id <= market.model_count():
        raise NotFound(f"model {model_id} is not listed")
    try:
        address = str(to_checksum_address(client))
    except ValueError as e:
        raise BadRequest(f"{client!r} is not an address") from e
    channel = market.channel(model_id, address)
    return ChannelPublic(
        model_id=model_id, client=address, deposited_wei=str(int(channel.deposited)), redeemed_wei=str(int(channel.redeemed)),
        redeemed_queries=channel.redeemed_queries, close_requested_at=channel.close_requested_at,
        balance_wei=str(int(channel.balance)), enclave=channel.enclave,
    )  # fmt: skip


@router.post(
    "/key-manager/model-deposits",
    status_code=201,
    response_model=DepositPublic,
    responses={400: {"description": "not signed by the owner, or the key does not open"}, 404: {"description": "ciphertext not stored"},
               409: {"description": "this owner deposited a key for this ciphertext already"}},
)  # fmt: skip
def deposit_model_key(body: ModelDepositCreate, services: ServicesDep) -> DepositPublic:
    """Forward a model key wrapped to the key manager's attested key, with the owner's EIP-712 deposit signature."""
    if services.model_keys is None:
        raise NotFound("this gateway has no key manager for models")
    content_hash = body.content_hash.lower().removeprefix("0x")
    if not services.blobs.has(content_hash):
        raise NotFound(f"no ciphertext {content_hash} in the blob store: upload it before depositing its key")
    owner = str(to_checksum_address("0x" + body.owner.removeprefix("0x")))
    try:
        services.model_keys.deposit(
            bytes.fromhex(content_hash), bytes.fromhex(body.wrapped_key.removeprefix("0x")), owner=owner,
            signature=bytes.fromhex(body.signature.removeprefix("0x")),
        )  # fmt: skip
    except DepositSignatureInvalid as e:
        raise BadRequest(f"deposit refused: {e}") from e
    except DepositExists as e:
        raise HTTPException(status_code=409, detail=f"deposit refused: {e}") from e
    return DepositPublic(content_hash="0x" + content_hash, key_manager=services.model_keys.signer, provider=owner)


@router.post(
    "/key-manager/job-models",
    status_code=201,
    response_model=JobModelPublic,
    responses={404: {"description": "no such job, or it has not completed"}, 409: {"description": "the job's model was taken already"},
               403: {"description": "no copy: the job sealed its model to its consumer; a copy: it is not the job's model"},
               400: {"description": "the copy is not signed by the job's consumer"}},
)  # fmt: skip
def take_job_model(body: JobModelCreate, services: ServicesDep) -> JobModelPublic:
    """Have the key manager take a completed job's model for serving: one the job sealed to it (the
    weights never leave the enclaves), or a ``copy`` from a consumer who had it sealed to itself,
    checked against the job's receipt. Its consumer then lists it with ``ModelMarket.listModelFromJob``."""
    if services.model_keys is None:
        raise NotFound("this gateway has no key manager for models")
    if not 1 <= body.job_id <= services.market.job_count():
        raise NotFound(f"job {body.job_id} does not exist")
    try:
        if body.copy_ is None:
            taken = services.model_keys.deposit_from_job(body.job_id)
        else:
            copy = body.copy_
            taken = services.model_keys.deposit_job_model_copy(
                body.job_id, bytes.fromhex(copy.content_hash.removeprefix("0x")), bytes.fromhex(copy.wrapped_key.removeprefix("0x")),
                signature=bytes.fromhex(copy.signature.removeprefix("0x")),
            )  # fmt: skip
    except JobNotReady as e:
        raise NotFound(str(e)) from e
    except DepositSignatureInvalid as e:
        raise BadRequest(f"deposit refused: {e}") from e
    except DepositExists as e:
        raise HTTPException(status_code=409, detail=str(e)) from e
    except KeyReleaseRefused as e:
        raise HTTPException(status_code=403, detail=str(e)) from e
    return JobModelPublic(
        job_id=taken.job_id, content_hash="0x" + taken.content_hash.hex(), weights_hash="0x" + taken.weights_hash.hex(), owner=taken.owner
    )


@router.post(
    "/inference",
    response_model=InferencePublic,
    responses=INFERENCE_RESPONSES,
    openapi_extra={"requestBody": {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}},
)
async def infer(request: Request) -> Response:
    """Relay one request envelope (``application/octet-stream``, built by ``marketplace.inference.build_request``)
    to the inference enclave; answers the encrypted response and the enclave's receipt signature.

    The hot path of serving: no dependency injection or response-model validation (the answer is a
    few fixed hex fields), so the gateway spends its time on the request, not on the framework."""
    inference = request.app.state.services.inference
    if inference is None:
        raise NotFound("this gateway serves no inference enclave")
    envelope = await request.body()
    try:
        served = await asyncio.wrap_future(inference.submit(envelope))
    except Exception as e:
        refused = refusal_answer(e)
        if refused is None:
            raise
        return refused
    return Response(served_json(served), media_type="application/json")
