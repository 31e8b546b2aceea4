"""Blobs through a gateway's HTTP API, for a worker on another machine than the blob store.

:class:`GatewayBlobStore` has the methods a trainer worker uses of a local
:class:`~marketplace.blobstore.BlobStore` (:class:`~marketplace.blobstore.BlobAccess`): ``path`` downloads a blob into a
local cache (itself a ``BlobStore``) and returns the cached file, ``get`` reads it, ``has`` asks the
gateway, ``put`` uploads. A download is streamed to a staging file and hashed as it arrives; a
connection that drops, stalls or ends early is resumed with ``Range: bytes=<received>-`` (and
``If-Range`` naming the blob's SHA-256, the gateway's ``ETag``); only bytes that hash to the
requested digest are moved into the cache. So a gateway, or anything between it and the worker,
can withhold a blob but cannot make the worker read altered bytes.

Example:
    >>> with GatewayBlobStore("http://gateway.example:8000", Path("~/.cache/sterling/blobs").expanduser()) as blobs:  # doctest: +SKIP
    ...     ciphertext = blobs.path(content_hash.hex())  # downloaded once, hash-checked
    ...     metrics_hash = blobs.put(metrics)  # a JSON object: POST /api/documents, stored byte for byte
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Literal

import httpx

from enclave_worker.trusted.dataformat import MAGIC
from enclave_worker.trusted.sealing import ENVELOPE_MAGIC

from .blobstore import BlobStore, _check_hex
from .errors import BlobNotFound, CiphertextTampered, SterlingError

logger = logging.getLogger(__name__)

MAX_DOCUMENT_BYTES = 1 << 20
"""Largest JSON document ``POST /api/documents`` takes (1 MiB, the bound of the model specs and dataset
schemas a job commits to). A metrics document is about 1 KB of fixed fields plus, with private
``class_counts``, one noisy count per class (at most about 12 bytes each): ImageNet-1k's (about
1,300 rows a class) is about 6 KB, and 1 MiB holds over 80,000 classes. A tighter limit would leave a worker unable to publish
the metrics of a job it has already trained; the storage quota bounds what the limit lets a client store."""
CONNECT_TIMEOUT_SECONDS = 10.0
TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})
"""Answers a request is retried after (``Retry-After`` honoured, up to ``max_retry_after_seconds``)."""
_HEAD_SNIFF = 4096


class BlobTransferFailed(SterlingError, ConnectionError):
    """The gateway could not be reached, kept failing after the retries, or answered something unusable."""


class BlobUploadRefused(SterlingError, ValueError):
    """Bytes ``put`` will not send (neither ciphertext nor a JSON object), or the gateway refused (4xx, 507 over quota)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class DownloadProgress:
    """How far a download is: ``done`` of ``total`` bytes (``None`` until the gateway says)."""

    digest: str
    done: int
    total: int | None


ProgressCallback = Callable[[DownloadProgress], None]

UPLOAD_PIECE = 1 << 20
"""Bytes sent between two progress reports of an upload."""


class _Upload:
    """An upload's bytes in pieces, reporting each one sent; iterable again, so a retry sends them all again."""

    def __init__(self, data: bytes, digest: str, progress: ProgressCallback) -> None:
        self.data, self.digest, self.progress = data, digest, progress

    def __iter__(self) -> Iterator[bytes]:
        view = memoryview(self.data)
        for start in range(0, len(view), UPLOAD_PIECE):
            piece = bytes(view[start : start + UPLOAD_PIECE])
            yield piece
            self.progress(DownloadProgress(self.digest, start + len(piece), len(view)))


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _upload_kind(data: bytes) -> Literal["ciphertext", "document"]:
    """Which route takes ``data``.

    Raises:
        BlobUploadRefused: neither Sterling ciphertext nor a JSON object of at most :data:`MAX_DOCUMENT_BYTES`.
    """
    if data[:4] in (MAGIC, ENVELOPE_MAGIC):
        return "ciphertext"
    if data[:_HEAD_SNIFF].lstrip()[:1] == b"{":
        if len(data) > MAX_DOCUMENT_BYTES:
            raise BlobUploadRefused(f"a JSON document of {len(data)} bytes is over the gateway's limit of {MAX_DOCUMENT_BYTES} bytes")
        try:
            document = json.loads(data, parse_constant=_refuse_constant)
        except (ValueError, RecursionError) as e:
            raise BlobUploadRefused(f"the document is not standard JSON: {type(e).__name__}: {e}") from e
        if isinstance(document, dict):
            return "document"
    raise BlobUploadRefused(
        f"{len(data)} bytes that are neither Sterling ciphertext (STRL/STRS) nor a JSON object: the gateway stores nothing "
        "else, and plaintext data never leaves this machine"
    )


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    return str(body.get("detail", body))[:300] if isinstance(body, dict) else str(body)[:300]


def _content_range(header: str | None) -> tuple[int, int | None]:
    """``(first byte, size)`` of a ``Content-Range: bytes a-b/size`` (size ``None`` if ``*``).

    Raises:
        ValueError: not a byte range.
    """
    unit, _, spec = (header or "").strip().partition(" ")
    span, _, size = spec.partition("/")
    first, _, _last = span.partition("-")
    if unit.lower() != "bytes" or not first.isdigit():
        raise ValueError(f"not a byte range: {header!r}")
    return int(first), int(size) if size.isdigit() else None


class GatewayBlobStore:
    """The blob store behind a gateway (``GET``/``HEAD /api/blobs/{sha256}``, ``POST /api/blobs``, ``POST /api/documents``),
    with a local content-addressed cache; a :class:`~marketplace.blobstore.BlobAccess` like :class:`~marketplace.blobstore.BlobStore`.

    Args:
        url: the gateway's base URL (``http://`` or ``https://``; the API is under ``<url>/api``).
        cache: the folder of the local cache (a :class:`~marketplace.blobstore.BlobStore`; :attr:`root`).
        timeout: seconds a read, write or wait for a pooled connection may take (connecting: 10 s).
        retries: attempts in a row that may fail (a dropped connection, a transient status) before
            the operation gives up; an attempt of a download that received bytes resets the count,
            so a download always ends (every attempt that does not fail moves it forward).
        backoff_seconds: the wait after the first failure, doubled after each further one (at most 30 s).
        max_retry_after_seconds: the longest ``Retry-After`` honoured (a longer one waits this long).
        progress: called as a download or an upload proceeds, with the bytes moved so far and the total.
        transport: an ``httpx`` transport (tests; default: HTTP/1.1 over TCP).

    Example:
        >>> blobs = GatewayBlobStore("http://10.0.0.5:8000", Path("/var/cache/sterling"), progress=print)  # doctest: +SKIP
        >>> blobs.get(spec_hash.hex())
        b'{"architecture": ...}'
    """

    def __init__(
        self,
        url: str,
        cache: Path,
        *,
        timeout: float = 60.0,
        retries: int = 5,
        backoff_seconds: float = 0.5,
        max_retry_after_seconds: float = 30.0,
        progress: ProgressCallback | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        parts = httpx.URL(url)
        if parts.scheme not in ("http", "https") or not parts.host:
            raise ValueError(f"{url!r} is not an http:// or https:// URL")
        if retries < 0 or backoff_seconds < 0 or max_retry_after_seconds < 0:
            raise ValueError("retries, backoff_seconds and max_retry_after_seconds must not be negative")
        self.url = url.rstrip("/")
        self.cache = BlobStore(cache)
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self.max_retry_after_seconds = max_retry_after_seconds
        self.progress = progress
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT_SECONDS),
            headers={"accept-encoding": "identity"},  # byte ranges count the stored bytes, not a compressed form
            transport=transport,
        )

    @property
    def root(self) -> Path:
        """The local cache's folder."""
        return self.cache.root

    def blob_url(self, digest: str) -> str:
        return f"{self.url}/api/blobs/{_check_hex(digest)}"

    # -- reading ------------------------------------------------------------------------------

    def path(self, digest: str) -> Path:
        """The blob's file in the local cache, downloaded first if it is not there.

        Raises:
            BlobNotFound: the gateway has no such blob (404).
            CiphertextTampered: the bytes served do not hash to ``digest``; nothing was cached.
            BlobTransferFailed: the gateway did not serve it within the retries.
            ValueError: ``digest`` is not a SHA-256 hex digest.
        """
        target = self.cache.path(digest)
        if not target.is_file():
            self._download(_check_hex(digest))
        return target

    def get(self, digest: str) -> bytes:
        """The blob's bytes (downloaded into the cache first if needed), checked against ``digest``.

        Raises:
            BlobNotFound, CiphertextTampered, BlobTransferFailed: as :meth:`path`.
        """
        self.path(digest)
        return self.cache.get(digest)

    def has(self, digest: str) -> bool:
        """Whether the gateway holds the blob (``HEAD``; the cache is not consulted).

        Raises:
            BlobTransferFailed: no answer, or one that is neither 200 nor 404.
        """
        url = self.blob_url(digest)
        response = self._send("HEAD", url)
        if response.status_code == 404:
            return False
        if response.status_code != 200:
            raise BlobTransferFailed(f"HEAD {url}: HTTP {response.status_code}")
        return True

    # -- writing ------------------------------------------------------------------------------

    def put(self, data: bytes) -> str:
        """Upload a ciphertext (``STRL``/``STRS``: ``POST /api/blobs``) or a JSON object (``POST /api/documents``,
        stored byte for byte); returns the SHA-256 hex digest of ``data``, which the gateway confirmed.

        Raises:
            BlobUploadRefused: ``data`` is neither (nothing is sent), or the gateway refused it
                (not well-formed ciphertext, too large, the client's storage quota used up: ``status``).
            BlobTransferFailed: no answer within the retries, or an answer naming another digest.
        """
        kind = _upload_kind(data)
        digest = hashlib.sha256(data).hexdigest()
        route, media_type = ("blobs", "application/octet-stream") if kind == "ciphertext" else ("documents", "application/json")
        url = f"{self.url}/api/{route}"
        headers = {"content-type": media_type, "x-content-sha256": digest}
        body: bytes | _Upload = data
        if self.progress is not None:
            body, headers["content-length"] = _Upload(data, digest, self.progress), str(len(data))
        response = self._send("POST", url, content=body, headers=headers)
        if response.status_code != 201:
            message = f"POST {url} of {kind} {digest} ({len(data)} bytes): HTTP {response.status_code}: {_detail(response)}"
            if 400 <= response.status_code < 500 or response.status_code == 507:
                raise BlobUploadRefused(message, status=response.status_code)
            raise BlobTransferFailed(message)
        answered = str(response.json().get("sha256", "")).lower().removeprefix("0x")
        if answered != digest:
            raise BlobTransferFailed(f"POST {url}: the gateway stored {answered or 'nothing'} for bytes hashing to {digest}")
        logger.info("uploaded %s %s (%d bytes) to %s", kind, digest, len(data), self.url)
        return digest

    # -- the HTTP part ------------------------------------------------------------------------

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> GatewayBlobStore:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.close()

    def _pause(self, failures: int, response: httpx.Response | None = None) -> None:
        """Wait before attempt ``failures + 1``: the answer's ``Retry-After`` (seconds), else exponential back-off."""
        retry_after = response.headers.get("retry-after", "") if response is not None else ""
        if retry_after.strip().isdigit():
            delay = min(float(retry_after), self.max_retry_after_seconds)
        else:
            delay = min(self.backoff_seconds * 2 ** (failures - 1), 30.0)
        time.sleep(delay)

    def _send(
        self, method: str, url: str, *, content: bytes | _Upload | None = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        """One request, retried after a connection failure or a transient status (uploads are idempotent: content-addressed).

        Raises:
            BlobTransferFailed: every attempt failed to connect or to read the answer.
        """
        failures = 0
        while True:
            try:
                response = self._client.request(method, url, content=content, headers=headers)
            except httpx.TransportError as e:
                failures += 1
                if failures > self.retries:
                    raise BlobTransferFailed(f"{method} {url}: {type(e).__name__}: {e} (gave up after {failures} attempts)") from e
                logger.warning("%s %s failed (%s), attempt %d of %d", method, url, type(e).__name__, failures, self.retries + 1)
                self._pause(failures)
                continue
            if response.status_code in TRANSIENT_STATUSES and failures < self.retries:
                failures += 1
                logger.warning("%s %s: HTTP %d, attempt %d of %d", method, url, response.status_code, failures, self.retries + 1)
                self._pause(failures, response)
                continue
            return response

    def _download(self, digest: str) -> None:
        """Fetch a blob into a staging file, resuming with ranges, and move it into the cache if it hashes to ``digest``."""
        url = self.blob_url(digest)
        staged = self.cache.staging_file()
        try:
            with staged.open("wb") as out:
                received = self._fetch(digest, url, out)
            if received != digest:
                raise CiphertextTampered(
                    f"the bytes {url} served hash to {received}, not to the blob's digest {digest}; nothing was cached"
                )
            self.cache.commit(staged, digest)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise

    def _fetch(self, digest: str, url: str, out: BinaryIO) -> str:
        """Write the blob's bytes to ``out``; returns their SHA-256 hex digest.

        Raises:
            BlobNotFound: 404.
            BlobTransferFailed: retries used up, or an answer that is not the blob or the range asked for.
        """
        sha, done, total = hashlib.sha256(), 0, None
        failures, reported = 0, -1
        while True:
            headers = {"range": f"bytes={done}-", "if-range": f'"{digest}"'} if done else {}
            moved = False
            try:
                with self._client.stream("GET", url, headers=headers) as response:
                    status = response.status_code
                    if status == 404:
                        raise BlobNotFound(f"no blob {digest} at {url}")
                    if status in TRANSIENT_STATUSES and failures < self.retries:
                        failures += 1
                        logger.warning("GET %s: HTTP %d, attempt %d of %d", url, status, failures, self.retries + 1)
                        self._pause(failures, response)
                        continue
                    if status == 206 and done:
                        try:
                            first, total = _content_range(response.headers.get("content-range"))
                        except ValueError as e:
                            raise BlobTransferFailed(f"GET {url} with a range: {e}") from e
                        if first != done:
                            raise BlobTransferFailed(f"GET {url}: asked for bytes from {done}, the gateway sent them from {first}")
                    elif status == 200:
                        if done:
                            logger.warning("GET %s ignored the range from %d: downloading %s again from the start", url, done, digest)
                            out.seek(0)
                            out.truncate()
                            sha, done = hashlib.sha256(), 0
                        length = response.headers.get("content-length", "")
                        total = int(length) if length.isdigit() else None
                    else:
                        response.read()
                        raise BlobTransferFailed(f"GET {url} (from byte {done}): HTTP {status}: {_detail(response)}")
                    for chunk in response.iter_bytes():
                        if total is not None and done + len(chunk) > total:
                            raise BlobTransferFailed(f"GET {url}: the gateway sent more than the {total} bytes it announced")
                        out.write(chunk)
                        sha.update(chunk)
                        done += len(chunk)
                        moved = True
                        if self.progress is not None:
                            self.progress(DownloadProgress(digest, done, total))
                            reported = done
            except httpx.TransportError as e:
                failures = 1 if moved else failures + 1
                if failures > self.retries:
                    raise BlobTransferFailed(
                        f"GET {url}: {type(e).__name__}: {e} after {done} bytes of blob {digest} (gave up after {failures} attempts)"
                    ) from e
                logger.warning("GET %s cut after %d bytes (%s): resuming, attempt %d", url, done, type(e).__name__, failures + 1)
                self._pause(failures)
                continue
            if total is None or done >= total:
                break
            failures = 1 if moved else failures + 1  # the answer ended early without an error
            if failures > self.retries:
                raise BlobTransferFailed(f"GET {url}: {done} of {total} bytes of blob {digest} after {failures} attempts")
            logger.warning("GET %s ended after %d of %d bytes: resuming, attempt %d of %d", url, done, total, failures, self.retries + 1)
            self._pause(failures)
        if self.progress is not None and reported != done:
            self.progress(DownloadProgress(digest, done, total if total is not None else done))
        logger.info("downloaded blob %s (%d bytes) from %s", digest, done, self.url)
        return sha.hexdigest()
