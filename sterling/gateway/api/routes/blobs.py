"""``/api/blobs``: upload and fetch ciphertext (the only private data the gateway ever holds).

``GET`` and ``HEAD /api/blobs/{sha256}`` serve byte ranges (``206`` with ``Content-Range``, ``416``
past the end), so a worker on another machine resumes a cut download where it stopped; the
``ETag`` is the quoted SHA-256 (a strong validator: the bytes at that URL never change), which
``If-Range`` can name.
"""

from __future__ import annotations

import hashlib
import logging
import stat
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Header, Path, Request
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import FileResponse, MalformedRangeHeader

from enclave_worker.trusted.dataformat import Kind
from sterling.gateway.api.deps import BlobsDep, SettingsDep
from sterling.gateway.api.routes.jobs import BINARY
from sterling.gateway.bounds import BodyTimeout, GatewayBounds, client_of, get_bounds
from sterling.gateway.errors import ContentHashMismatch, NotFound, PayloadTooLarge, UploadRejected
from sterling.gateway.schemas import BlobPublic
from sterling.gateway.upload import CiphertextCheck

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/blobs", tags=["blobs"])

BLOB_PATH = "/api/blobs"
Sha256Path = Annotated[str, Path(pattern=r"^(0x)?[0-9a-fA-F]{64}$", description="SHA-256 of the blob, hex")]
_FLUSH_BYTES = 1 << 20
BoundsDep = Annotated[GatewayBounds, Depends(get_bounds)]


@router.post(
    "",
    status_code=201,
    response_model=BlobPublic,
    openapi_extra={"requestBody": {"required": True, "content": BINARY, "description": "a Sterling ciphertext (docs/formats.md)"}},
    responses={
        400: {"description": "not well-formed Sterling ciphertext, or a payload that looks like plaintext"},
        408: {"description": "the body made no progress for the body timeout"},
        413: {"description": "over the size limit"},
        429: {"description": "too many concurrent uploads from this client (Retry-After)"},
        503: {"description": "too many concurrent uploads (Retry-After)"},
        507: {"description": "the client's storage quota is used up; nothing stored"},
    },
)
async def upload_blob(
    request: Request,
    blobs: BlobsDep,
    settings: SettingsDep,
    bounds: BoundsDep,
    x_content_sha256: Annotated[str | None, Header(description="SHA-256 the body must hash to (hex)")] = None,
) -> BlobPublic:
    """Store a ciphertext under its SHA-256: only well-formed ``STRL``/``STRS`` objects are accepted.

    The body is streamed to disk while its header, framing and byte statistics are checked and its
    hash computed; anything that is not Sterling ciphertext (a CSV, a plaintext safetensors file,
    plaintext behind a copied header, …) gets a 400. The bytes count against the client's storage
    quota until a listing, job or result refers to them (507 beyond it).
    """
    expected = expected_digest(x_content_sha256)
    client = client_of(request.scope)
    check = CiphertextCheck(entropy=bounds.uploads.entropy_check)
    digest = hashlib.sha256()
    staged = blobs.staging_file()
    try:
        declared = request.headers.get("content-length", "")
        adding = int(declared) if declared.isdigit() else None
        used = await anyio.to_thread.run_sync(lambda: bounds.storage.usage_for_upload(client, adding=adding))
        with bounds.storage.reservation(client, used=used, staging=staged) as charge:
            with staged.open("wb") as out:
                pending = bytearray()
                async for chunk in request.stream():
                    if check.size + len(chunk) > settings.max_blob_bytes:
                        raise PayloadTooLarge(f"upload exceeds the limit of {settings.max_blob_bytes} bytes")
                    charge(len(chunk))
                    check.feed(chunk)
                    digest.update(chunk)
                    pending += chunk
                    if len(pending) >= _FLUSH_BYTES:
                        await anyio.to_thread.run_sync(out.write, bytes(pending))
                        pending.clear()
                await anyio.to_thread.run_sync(out.write, bytes(pending))
            layout = check.finish()
            sha256 = digest.hexdigest()
            if expected is not None and expected != sha256:
                raise ContentHashMismatch(f"the body hashes to {sha256}, not to the X-Content-SHA256 {expected} sent with it")
            blobs.commit(staged, sha256)
            bounds.storage.record(client, sha256, check.size)
    except (BodyTimeout, ClientDisconnect) as e:
        staged.unlink(missing_ok=True)
        reason = "the body stalled" if isinstance(e, BodyTimeout) else "the client disconnected"
        logger.warning("upload from %s aborted after %d bytes: %s", client, check.size, reason)
        if isinstance(e, BodyTimeout):
            raise
        raise HTTPException(status_code=400, detail="the client disconnected before the upload ended") from None
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    logger.info("accepted %s %s upload %s (%d bytes)", layout.format, layout.kind.name.lower(), sha256, check.size)
    return BlobPublic(sha256=sha256, size=check.size, format=layout.format, kind="dataset" if layout.kind is Kind.DATASET else "model")


def expected_digest(header: str | None) -> str | None:
    """The digest an ``X-Content-SHA256`` header announces (lower-case hex), ``None`` without one.

    Raises:
        UploadRejected: the header is not 64 hex digits (``0x`` allowed).
    """
    if header is None:
        return None
    value = header.strip().lower().removeprefix("0x")
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise UploadRejected("X-Content-SHA256 must be 64 hex digits")
    return value


class BlobResponse(FileResponse):
    """A stored blob, with Starlette's ranges (one, or several as ``multipart/byteranges``), ``If-Range`` and ``HEAD``.

    One change: a ``Range`` header this server cannot read (another unit, ``bytes=5-2``, garbage)
    is ignored and the whole blob sent with 200, as RFC 9110 section 14.2 asks, where Starlette
    answers a plain-text 400.
    """

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        try:
            return super()._parse_range_header(http_range, file_size)
        except MalformedRangeHeader:
            return []  # Starlette serves the whole file for an empty list


_BLOB_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": BINARY, "description": "the whole blob; `ETag` is its quoted SHA-256, `Accept-Ranges: bytes`"},
    206: {"content": BINARY, "description": "the byte range the `Range` header asked for (`Content-Range: bytes a-b/size`)"},
    404: {"description": "no such blob"},
    416: {"description": "the range starts at or past the end of the blob (`Content-Range: bytes */size`)"},
}


@router.head("/{sha256}", response_class=BlobResponse, include_in_schema=False)
@router.get("/{sha256}", response_class=BlobResponse, responses=_BLOB_RESPONSES)
def get_blob(sha256: Sha256Path, blobs: BlobsDep) -> BlobResponse:
    """A blob's bytes (ciphertext, or a public JSON document such as a model spec); clients check the hash.

    ``Range: bytes=a-b``, ``bytes=a-`` and ``bytes=-n`` (the last ``n`` bytes) get 206 with that
    slice, a range starting past the end 416; ``If-Range`` with the ``ETag`` (the quoted SHA-256)
    keeps the range, any other validator gets the whole blob. ``HEAD`` answers the headers only
    (``Content-Length`` is the size).
    """
    digest = sha256.lower().removeprefix("0x")
    path = blobs.path(digest)
    try:
        status = path.stat()
    except FileNotFoundError:
        raise NotFound(f"no blob {digest} in the store") from None
    if not stat.S_ISREG(status.st_mode):
        raise NotFound(f"no blob {digest} in the store")
    return BlobResponse(path, media_type="application/octet-stream", stat_result=status, headers={"ETag": f'"{digest}"'})
