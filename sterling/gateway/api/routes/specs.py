"""``POST /api/specs`` and ``POST /api/schemas``: public JSON documents whose hashes go on-chain."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request

from enclave_worker.trusted.dataset import Schema, canonical_json
from enclave_worker.trusted.models import MAX_SPEC_BYTES, ModelSpec, check_fits
from marketplace.blobstore import BlobStore
from marketplace.errors import InvalidDataset, InvalidModelSpec
from sterling.gateway.api.deps import BlobsDep
from sterling.gateway.errors import NonStandardJson, PayloadTooLarge
from sterling.gateway.schemas import DocumentPublic
from sterling.gateway.strict_json import strict_loads

router = APIRouter(tags=["documents"])


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


async def read_limited(request: Request, *, limit: int) -> bytes:
    """The whole request body, refused with 413 as soon as it passes ``limit`` bytes."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"document exceeds {limit} bytes")
    return bytes(body)


def _stored_schema(blobs: BlobStore, digest: str) -> Schema:
    """The dataset schema stored under ``digest``.

    Raises:
        BlobNotFound: nothing is stored under it (404).
        InvalidDataset: what is stored there is not a schema (a schema is at most ``MAX_SPEC_BYTES``
            of JSON: a ciphertext is refused by its size, never read into memory).
    """
    path = blobs.path(digest)
    if path.exists() and path.stat().st_size > MAX_SPEC_BYTES:
        raise InvalidDataset(f"blob {digest} is not a dataset schema (larger than {MAX_SPEC_BYTES} bytes)")
    try:
        document = strict_loads(blobs.get(digest))
        if not isinstance(document, dict):
            raise InvalidDataset("not a JSON object")
        return Schema.from_json(document)
    except (NonStandardJson, InvalidDataset, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise InvalidDataset(f"blob {digest} is not a dataset schema: {e}") from e


@router.post(
    "/specs",
    status_code=201,
    response_model=DocumentPublic,
    openapi_extra=_json_body(ModelSpec.model_json_schema()),
    responses={
        404: {"description": "no stored schema of that hash"},
        422: {"description": "not a valid model spec, or not one for that schema"},
    },
)
async def publish_spec(
    request: Request,
    blobs: BlobsDep,
    schema: str | None = Query(
        default=None,
        pattern="^[0-9a-f]{64}$",
        description="a stored dataset schema's hash: the spec is then also refused (422, with the reason) unless it "
        "trains on datasets of that schema, as the trainer would refuse it once the job is paid",
    ),
) -> DocumentPublic:
    """Validate a model spec exactly as the worker will, store its canonical JSON; the hash is the job's ``modelSpecHash``."""
    fitted = None if schema is None else _stored_schema(blobs, schema)
    raw = await read_limited(request, limit=MAX_SPEC_BYTES)
    try:
        strict_loads(raw)  # NaN passes "input_scale must be positive"; a 5,000-digit integer is a ValueError, not a spec error
        spec = ModelSpec.from_bytes(raw)
    except NonStandardJson as e:
        raise InvalidModelSpec(f"model spec is not standard JSON: {e}") from e
    except RecursionError as e:
        raise InvalidModelSpec("model spec is nested too deeply") from e
    if fitted is not None:
        check_fits(spec, fitted)
    return DocumentPublic(sha256=blobs.put(spec.to_bytes()))


@router.post(
    "/schemas",
    status_code=201,
    response_model=DocumentPublic,
    openapi_extra=_json_body(
        {
            "type": "object",
            "required": ["version", "task", "feature_names", "feature_shape", "class_names"],
            "properties": {
                "version": {"type": "integer", "const": 1},
                "task": {"type": "string", "enum": ["classification", "regression", "survival"]},
                "feature_names": {"type": "array", "items": {"type": "string"}},
                "feature_shape": {"type": "array", "items": {"type": "integer", "minimum": 1}},
                "class_names": {"type": "array", "items": {"type": "string"}, "description": "classification: two or more, else empty"},
                "target_names": {"type": "array", "items": {"type": "string"}, "description": "regression: one per target"},
                "target_bounds": {
                    "type": "array",
                    "description": "regression: declared [low, high] per target (docs/formats.md)",
                    "items": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
                },
                "time_bins": {"type": "array", "items": {"type": "number"}, "description": "survival: the intervals' increasing end times"},
                "categories": {
                    "type": "object",
                    "description": "categorical features: name → vocabulary (the value is the index into it)",
                    "additionalProperties": {"type": "array", "items": {"type": "string"}},
                },
                "feature_bounds": {
                    "type": "array",
                    "description": "declared [low, high] per flattened feature, or null (docs/datasheets.md)",
                    "items": {"anyOf": [{"type": "null"}, {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}]},
                },
            },
        }
    ),
    responses={422: {"description": "not a valid dataset schema"}},
)
async def publish_schema(request: Request, blobs: BlobsDep) -> DocumentPublic:
    """Validate a dataset schema, store its canonical JSON; the hash is the listing's ``schemaHash``."""
    raw = await read_limited(request, limit=MAX_SPEC_BYTES)
    try:
        document = strict_loads(raw)
    except NonStandardJson as e:
        raise InvalidDataset(f"schema is not standard JSON: {e}") from e
    if not isinstance(document, dict):
        raise InvalidDataset("a dataset schema is a JSON object")
    schema = Schema.from_json(document)
    return DocumentPublic(sha256=blobs.put(canonical_json(schema.to_json())))

