"""``POST /api/documents``: a public JSON document stored as sent, under the SHA-256 of its exact bytes;
``POST /api/datasheets``: a listing's datasheet, checked, stored under the SHA-256 of its canonical JSON.

A trainer worker stores its job's metrics document here: the enclave hashed those bytes into the
receipt (``metricsHash``, on-chain), so they are kept byte for byte, never re-canonicalised
(model specs and dataset schemas, whose publishers want one canonical form, have
``POST /api/specs`` and ``POST /api/schemas``). Documents are public; they count against the
client's storage quota like ciphertext uploads until the chain refers to them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError

from enclave_worker.trusted.dataset import canonical_json
from marketplace.datasheet import MAX_DATASHEET_BYTES, Datasheet, InvalidDatasheet, document_hash, json_schema
from marketplace.remote_blobs import MAX_DOCUMENT_BYTES
from sterling.gateway.api.deps import BlobsDep, CacheDep, ServicesDep
from sterling.gateway.api.routes.blobs import expected_digest
from sterling.gateway.api.routes.specs import read_limited
from sterling.gateway.bounds import GatewayBounds, client_of, get_bounds
from sterling.gateway.errors import BadRequest, ContentHashMismatch, NonStandardJson
from sterling.gateway.queries import store_datasheet
from sterling.gateway.schemas import DocumentPublic
from sterling.gateway.strict_json import strict_loads

logger = logging.getLogger(__name__)

router = APIRouter(tags=["documents"])

BoundsDep = Annotated[GatewayBounds, Depends(get_bounds)]


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise BadRequest(f"the document names the key {key[:64]!r} twice (parsers disagree on which value counts)")
        document[key] = value
    return document


def parse_document(raw: bytes) -> dict[str, Any]:
    """The JSON object ``raw`` holds, if it is one a committed hash can stand for.

    Raises:
        NonStandardJson: not UTF-8, not JSON, ``NaN``/``Infinity`` or a number out of range (422).
        BadRequest: not an object, or an object naming a key twice (400).
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise NonStandardJson("the document is not UTF-8") from e
    strict_loads(text)
    document = json.loads(text, object_pairs_hook=_refuse_duplicates)
    if not isinstance(document, dict):
        raise BadRequest(f"a document is a JSON object, not {type(document).__name__}")
    return document


@router.post(
    "/documents",
    status_code=201,
    response_model=DocumentPublic,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
            "description": f"a JSON object of at most {MAX_DOCUMENT_BYTES} bytes, stored exactly as sent",
        }
    },
    responses={
        400: {"description": "not a JSON object, a key named twice, nested too deeply, or the X-Content-SHA256 differs"},
        413: {"description": f"over {MAX_DOCUMENT_BYTES} bytes"},
        415: {"description": "not sent as application/json"},
        422: {"description": "not UTF-8 JSON, or NaN / Infinity / a number out of range"},
        507: {"description": "the client's storage quota is used up; nothing stored"},
    },
)
async def publish_document(
    request: Request,
    blobs: BlobsDep,
    bounds: BoundsDep,
    x_content_sha256: Annotated[str | None, Header(description="SHA-256 the body must hash to (hex)")] = None,
) -> DocumentPublic:
    """Store a public JSON object byte for byte; its hash is the SHA-256 of the body as sent (e.g. a job's ``metricsHash``)."""
    expected = expected_digest(x_content_sha256)
    raw = await read_limited(request, limit=MAX_DOCUMENT_BYTES)
    parse_document(raw)
    digest = hashlib.sha256(raw).hexdigest()
    if expected is not None and expected != digest:
        raise ContentHashMismatch(f"the body hashes to {digest}, not to the X-Content-SHA256 {expected} sent with it")
    if blobs.has(digest):  # a retry, or the same document twice: nothing new is stored, nothing charged
        return DocumentPublic(sha256=digest)
    client = client_of(request.scope)
    used = await anyio.to_thread.run_sync(lambda: bounds.storage.usage_for_upload(client, adding=len(raw)))
    with bounds.storage.reservation(client, used=used) as charge:
        charge(len(raw))
        await anyio.to_thread.run_sync(blobs.put, raw)
        bounds.storage.record(client, digest, len(raw))
    logger.info("stored document %s (%d bytes) from %s", digest, len(raw), client)
    return DocumentPublic(sha256=digest)


@router.post(
    "/datasheets",
    status_code=201,
    response_model=DocumentPublic,
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": json_schema()}}}},
    responses={
        400: {"description": "not a JSON object, or a key named twice"},
        413: {"description": f"over {MAX_DATASHEET_BYTES} bytes"},
        422: {"description": "not a valid datasheet: `detail`, and `problems` as [{path, message}]"},
        507: {"description": "the client's storage quota is used up; nothing stored"},
    },
)
async def publish_datasheet(request: Request, services: ServicesDep, cache: CacheDep, bounds: BoundsDep) -> DocumentPublic | JSONResponse:
    """Check a datasheet (docs/datasheets.md) and store the canonical JSON of the document as sent: its SHA-256 is what
    ``setDatasheet`` puts on-chain, and the dataset list is searched by it from then on."""
    raw = await read_limited(request, limit=MAX_DATASHEET_BYTES)
    try:
        document = parse_document(raw)
        datasheet = Datasheet.from_json(document)
    except NonStandardJson as e:
        return _refused(InvalidDatasheet(f"the datasheet is not standard JSON: {e}"))
    except InvalidDatasheet as e:
        return _refused(e)
    body = canonical_json(document)
    digest = document_hash(document).hex()
    if not services.blobs.has(digest):
        client = client_of(request.scope)
        used = await anyio.to_thread.run_sync(lambda: bounds.storage.usage_for_upload(client, adding=len(body)))
        with bounds.storage.reservation(client, used=used) as charge:
            charge(len(body))
            await anyio.to_thread.run_sync(services.blobs.put, body)
            bounds.storage.record(client, digest, len(body))

    def remember() -> None:
        try:
            with services.index.transaction() as session:
                store_datasheet(session, digest, datasheet, document)
        except IntegrityError:
            pass  # the same document, stored by a concurrent request

    await anyio.to_thread.run_sync(remember)
    cache.clear()  # a dataset whose DatasheetSet came before its document now shows it
    logger.info("stored datasheet %s (%r, %d bytes)", digest, datasheet.title[:60], len(body))
    return DocumentPublic(sha256=digest)


def _refused(error: InvalidDatasheet) -> JSONResponse:
    problems = [{"path": path, "message": message} for path, message in error.problems]
    return JSONResponse({"detail": str(error), "problems": problems}, status_code=422)
