"""Bounds on what one client, and all of them together, can hold open on the gateway.

Every request body must make progress: a body that sends nothing for
``uploads.body_timeout_seconds`` is answered ``408`` (``Connection: close``), and the upload
route removes its staging file. Uploads (``POST /api/blobs``) and event streams
(``GET /api/events``) are admitted up to a global cap (beyond it: ``503``) and a cap per client
(beyond it: ``429``), both with ``Retry-After``. A stream whose client stops reading for
``streams.send_timeout_seconds`` is cut; every stream ends after ``streams.lifetime_seconds``
(an ``EventSource`` reconnects on its own, resuming from ``Last-Event-ID``).

A client is the address uvicorn reports for the connection (an IPv6 client: its /64 network);
``docs/security.md`` ("Uploads, streams and storage") says why and what it does not stop.
Settings: :class:`UploadLimits` (``STERLING_UPLOADS_<FIELD>``) and :class:`StreamLimits`
(``STERLING_STREAMS_<FIELD>``).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
from collections import Counter
from dataclasses import dataclass
from enum import Enum

import anyio
from fastapi import Request
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from marketplace.errors import ConfigError
from sterling.gateway.services import GatewayServices
from sterling.gateway.storage import StorageGuard

logger = logging.getLogger(__name__)

GiB = 1 << 30


class UploadLimits(BaseSettings):
    """Request bodies, uploads and stored bytes (``STERLING_UPLOADS_<FIELD>``)."""

    model_config = SettingsConfigDict(env_prefix="STERLING_UPLOADS_", frozen=True, extra="forbid")

    body_timeout_seconds: float = Field(default=30.0, gt=0, description="a request body that sends nothing for this long gets 408")
    max_concurrent: int = Field(default=32, ge=1, description="uploads in progress at once, all clients (beyond: 503)")
    max_concurrent_per_client: int = Field(default=4, ge=1, description="uploads in progress at once per client (beyond: 429)")
    quota_bytes: int = Field(default=2 * GiB, ge=0, description="stored bytes per client that nothing on-chain refers to yet")
    quota_blobs: int = Field(default=1000, ge=0, description="stored blobs per client that nothing on-chain refers to yet")
    gc_grace_seconds: float = Field(default=86_400.0, ge=0, description="age after which an unreferenced blob is deleted")
    gc_interval_seconds: float = Field(default=600.0, gt=0, description="how often the clean-up runs")
    gc_max_index_lag_blocks: int = Field(default=12, ge=0, description="no clean-up while the index is further behind the chain")
    entropy_check: bool = Field(default=True, description="refuse payloads whose bytes do not look like ciphertext")
    retry_after_seconds: int = Field(default=5, ge=1, description="Retry-After of a refused upload")


class StreamLimits(BaseSettings):
    """Server-sent event streams (``STERLING_STREAMS_<FIELD>``)."""

    model_config = SettingsConfigDict(env_prefix="STERLING_STREAMS_", frozen=True, extra="forbid")

    max_open: int = Field(default=256, ge=1, description="open event streams, all clients (beyond: 503)")
    max_open_per_client: int = Field(default=16, ge=1, description="open event streams per client (beyond: 429)")
    lifetime_seconds: float = Field(default=900.0, gt=0, description="a stream ends after this long (the browser reconnects)")
    send_timeout_seconds: float = Field(default=30.0, gt=0, description="a stream whose client reads nothing for this long is cut")
    retry_after_seconds: int = Field(default=5, ge=1, description="Retry-After of a refused stream")


def client_of(scope: Scope) -> str:
    """The client a request is accounted to: its IP address (IPv6: the /64 network), or ``unknown``."""
    client = scope.get("client")
    host = client[0] if client else None
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return str(host)  # a test client's or a unix socket's name
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class Refusal(Enum):
    """Why an admission was refused."""

    GLOBAL = 503
    CLIENT = 429


class Admission:
    """Counts what is open, in total and per client, against two caps (thread-safe)."""

    def __init__(self, *, total: int, per_client: int) -> None:
        self.max_total = total
        self.max_per_client = per_client
        self.open = 0
        self._by_client: Counter[str] = Counter()
        self._lock = threading.Lock()

    def acquire(self, client: str) -> Refusal | None:
        """Admit one more for ``client``, or say which cap refuses it."""
        with self._lock:
            if self._by_client[client] >= self.max_per_client:
                return Refusal.CLIENT
            if self.open >= self.max_total:
                return Refusal.GLOBAL
            self.open += 1
            self._by_client[client] += 1
            return None

    def release(self, client: str) -> None:
        with self._lock:
            self.open -= 1
            self._by_client[client] -= 1
            if self._by_client[client] <= 0:
                del self._by_client[client]

    def open_for(self, client: str) -> int:
        with self._lock:
            return self._by_client[client]


class BodyTimeout(HTTPException):
    """A request body made no progress for the configured time (answered 408, connection closed)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            status_code=408, detail=f"the request body sent nothing for {seconds:g} s; request aborted", headers={"Connection": "close"}
        )


@dataclass
class GatewayBounds:
    """The limits, the admission counters and the storage guard of one gateway app."""

    uploads: UploadLimits
    streams: StreamLimits
    storage: StorageGuard
    upload_admission: Admission
    stream_admission: Admission

    @classmethod
    def for_services(
        cls, services: GatewayServices, *, uploads: UploadLimits | None = None, streams: StreamLimits | None = None
    ) -> GatewayBounds:
        """Bounds over the services' blob store and index, limits from the environment unless given.

        Raises:
            ConfigError: an invalid ``STERLING_UPLOADS_*`` or ``STERLING_STREAMS_*`` value.
        """
        try:
            uploads = uploads if uploads is not None else UploadLimits()
            streams = streams if streams is not None else StreamLimits()
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
            raise ConfigError(f"invalid gateway bounds (STERLING_UPLOADS_* / STERLING_STREAMS_*): {problems}") from e
        storage = StorageGuard(
            services.blobs, services.index, cursor_key=services.cursor_key, head=lambda: int(services.chain.w3.eth.block_number),
            quota_bytes=uploads.quota_bytes, quota_blobs=uploads.quota_blobs, grace_seconds=uploads.gc_grace_seconds,
            interval_seconds=uploads.gc_interval_seconds, max_index_lag_blocks=uploads.gc_max_index_lag_blocks,
        )  # fmt: skip
        return cls(
            uploads=uploads,
            streams=streams,
            storage=storage,
            upload_admission=Admission(total=uploads.max_concurrent, per_client=uploads.max_concurrent_per_client),
            stream_admission=Admission(total=streams.max_open, per_client=streams.max_open_per_client),
        )


def get_bounds(request: Request) -> GatewayBounds:
    """The app's :class:`GatewayBounds` (a route dependency)."""
    bounds: GatewayBounds = request.app.state.bounds
    return bounds


async def _refuse(send: Send, status: int, detail: str, retry_after: int) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(retry_after).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BoundsMiddleware:
    """Applies :class:`GatewayBounds`: body read timeout, upload and stream admission, stream send timeout.

    It also starts the storage clean-up when it is due (in a thread of its own, one pass at a time).
    """

    def __init__(self, app: ASGIApp, *, bounds: GatewayBounds, upload_path: str, events_path: str) -> None:
        self.app = app
        self.bounds = bounds
        self.upload_path = upload_path
        self.events_path = events_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        bounds = self.bounds
        bounds.storage.collect_if_due()
        path, method = scope["path"], scope["method"]
        if method == "POST" and path == self.upload_path:
            admission, what, retry = bounds.upload_admission, "uploads", bounds.uploads.retry_after_seconds
        elif method == "GET" and path == self.events_path:
            admission, what, retry = bounds.stream_admission, "event streams", bounds.streams.retry_after_seconds
        else:
            await self.app(scope, self._timed_receive(receive), send)
            return
        client = client_of(scope)
        refusal = admission.acquire(client)
        if refusal is Refusal.CLIENT:
            detail = f"too many concurrent {what} from {client} (at most {admission.max_per_client}); retry later"
            await _refuse(send, refusal.value, detail, retry)
            return
        if refusal is Refusal.GLOBAL:
            await _refuse(send, refusal.value, f"the gateway serves {admission.max_total} concurrent {what} at most; retry later", retry)
            return
        try:
            if admission is bounds.stream_admission:
                await self._stream(scope, receive, send, client)
            else:
                await self.app(scope, self._timed_receive(receive), send)
        finally:
            admission.release(client)

    def _timed_receive(self, receive: Receive) -> Receive:
        """``receive`` that raises :class:`BodyTimeout` when the body stalls (once it is complete, it waits freely)."""
        timeout = self.bounds.uploads.body_timeout_seconds
        complete = False

        async def timed() -> Message:
            nonlocal complete
            if complete:
                return await receive()
            try:
                with anyio.fail_after(timeout):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout(timeout) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        return timed

    async def _stream(self, scope: Scope, receive: Receive, send: Send, client: str) -> None:
        """Run an event stream; cut it when its client has read nothing for the send timeout."""
        timeout = self.bounds.streams.send_timeout_seconds
        with anyio.CancelScope() as stream_scope:

            async def timed_send(message: Message) -> None:
                with anyio.move_on_after(timeout) as stalled:
                    await send(message)
                if stalled.cancelled_caught:
                    logger.warning("event stream of %s cut: the client read nothing for %g s", client, timeout)
                    stream_scope.cancel()

            await self.app(scope, receive, timed_send)
