"""``GatewayBlobStore`` against a real gateway served by uvicorn: downloads that resume with a
``Range`` request after a dropped connection, hash checks that keep altered bytes out of the
cache, uploads of ciphertext and of metrics documents, busy gateways and absent ones.

The gateway app is wrapped in :class:`Faults`, an ASGI layer that records every blob request and,
when a test asks, cuts a response after N bytes, alters the bytes served, ignores a ``Range``
header or answers 503 with ``Retry-After``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from enclave_worker.trusted import dataformat, keywrap, sealing
from enclave_worker.trusted.dataset import canonical_json
from marketplace.blobstore import BlobAccess, BlobStore
from marketplace.chain import free_port
from marketplace.errors import BlobNotFound, CiphertextTampered
from marketplace.remote_blobs import BlobTransferFailed, BlobUploadRefused, DownloadProgress, GatewayBlobStore
from sterling.gateway import create_app
from sterling.localnet import LocalNet
from tests.gateway.conftest import make_gateway

SIZE = 300_000
CUT_AFTER = 100_000  # inside the second of FileResponse's 64 KiB chunks


@dataclasses.dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]


class Faults:
    """ASGI middleware over the gateway app that misbehaves on ``/api/blobs/...`` responses as a test asks."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.seen: list[Seen] = []
        self.reset()

    def reset(self) -> None:
        self.seen.clear()
        self.cut_after: int | None = None  # the next blob response ends (connection dropped) after this many body bytes
        self.tamper = False  # flip a bit of every blob response
        self.ignore_range_once = False  # the next ranged request is answered as if it had no Range header
        self.busy: list[int] = []  # status codes to answer the next requests with (Retry-After: 1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not (scope["path"].startswith("/api/blobs") or scope["path"] == "/api/documents"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        self.seen.append(Seen(scope["method"], scope["path"], headers))
        if self.busy:
            status = self.busy.pop(0)
            await send({"type": "http.response.start", "status": status, "headers": [(b"retry-after", b"1"), (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        if self.ignore_range_once and "range" in headers:
            self.ignore_range_once = False
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k != b"range"]}
        cut, self.cut_after = self.cut_after, None
        tamper, sent = self.tamper, 0

        async def misbehaving(message: Message) -> None:
            nonlocal sent, tamper
            if message["type"] == "http.response.body":
                body = bytes(message.get("body", b""))
                if tamper and body:
                    body, tamper = bytes([body[0] ^ 1]) + body[1:], False
                if cut is not None and sent + len(body) >= cut:
                    await send({"type": "http.response.body", "body": body[: cut - sent], "more_body": True})
                    raise ConnectionAbortedError(f"test: the connection drops after {cut} bytes")
                sent += len(body)
                message = {**message, "body": body}
            await send(message)

        await self.app(scope, receive, misbehaving)


@dataclasses.dataclass
class Served:
    url: str
    faults: Faults
    store: BlobStore  # the gateway's own blob store


@pytest.fixture(scope="module")
def served(localnet: LocalNet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A gateway over its own blob store, behind :class:`Faults`, served by uvicorn on a free port."""
    gateway = make_gateway(localnet, tmp_path_factory.mktemp("remote-gateway"))
    store = BlobStore(tmp_path_factory.mktemp("remote-store"))
    app = create_app(gateway.settings, services=dataclasses.replace(gateway.services, blobs=store))
    faults = Faults(app)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(faults, host="127.0.0.1", port=port, log_level="critical", lifespan="off"))
    thread = threading.Thread(target=server.run, name="test-uvicorn-blobs", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield Served(f"http://127.0.0.1:{port}", faults, store)
    finally:
        server.should_exit = True
        thread.join(15)
        gateway.client.close()
        gateway.index.close()


@pytest.fixture()
def faults(served: Served) -> Iterator[Faults]:
    served.faults.reset()
    yield served.faults
    served.faults.reset()


@pytest.fixture()
def remote(served: Served, tmp_path: Path) -> Iterator[GatewayBlobStore]:
    """A worker's view of the gateway, with a cache of its own and quick retries."""
    with GatewayBlobStore(served.url, tmp_path / "cache", backoff_seconds=0.01, retries=3) as blobs:
        yield blobs


def ciphertext(size: int = SIZE) -> bytes:
    return dataformat.encrypt_bytes(os.urandom(size), dataformat.new_data_key(), kind=dataformat.Kind.DATASET, context=bytes(32))


def uploaded(served: Served, body: bytes) -> str:
    """Store ``body`` through the gateway (as a provider would); its digest."""
    digest = hashlib.sha256(body).hexdigest()
    response = httpx.post(f"{served.url}/api/blobs", content=body, headers={"content-type": "application/octet-stream"})
    assert response.status_code == 201 and response.json()["sha256"] == digest, response.text
    return digest


def gets(faults: Faults) -> list[Seen]:
    return [seen for seen in faults.seen if seen.method == "GET"]


def cache_is_empty(blobs: GatewayBlobStore) -> bool:
    """Nothing committed and nothing staged in the local cache."""
    committed = list(blobs.cache.digests())
    staged = list(blobs.cache.staging_dir.iterdir()) if blobs.cache.staging_dir.is_dir() else []
    return committed == [] and staged == []


def test_a_download_lands_in_the_cache_once_and_reports_progress(served: Served, faults: Faults, tmp_path: Path) -> None:
    body = ciphertext()
    digest = uploaded(served, body)
    reports: list[DownloadProgress] = []
    with GatewayBlobStore(served.url, tmp_path / "cache", progress=reports.append) as blobs:
        faults.reset()
        path = blobs.path(digest)
        assert path.read_bytes() == body and path == BlobStore(tmp_path / "cache").path(digest)
        assert blobs.get(digest) == body and blobs.path("0x" + digest.upper()) == path
        assert len(gets(faults)) == 1  # the second and third read come from the cache
    done = [r.done for r in reports]
    assert len(done) >= 2 and done == sorted(set(done)) and done[-1] == len(body)
    assert {r.total for r in reports} == {len(body)} and {r.digest for r in reports} == {digest}


def test_a_dropped_connection_is_resumed_from_the_offset_with_a_range_request(served: Served, faults: Faults, tmp_path: Path) -> None:
    body = ciphertext()
    digest = uploaded(served, body)
    reports: list[DownloadProgress] = []
    with GatewayBlobStore(served.url, tmp_path / "cache", backoff_seconds=0.01, progress=reports.append) as blobs:
        faults.reset()
        faults.cut_after = CUT_AFTER
        path = blobs.path(digest)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    first, second = gets(faults)
    assert "range" not in first.headers
    assert second.headers["range"] == f"bytes={CUT_AFTER}-" and second.headers["if-range"] == f'"{digest}"'
    done = [r.done for r in reports]
    assert CUT_AFTER in done and done == sorted(set(done)) and done[-1] == len(body)


def test_a_gateway_that_ignores_the_range_is_read_again_from_the_start(served: Served, faults: Faults, remote: GatewayBlobStore) -> None:
    body = ciphertext()
    digest = uploaded(served, body)
    faults.reset()
    faults.cut_after, faults.ignore_range_once = CUT_AFTER, True
    assert remote.get(digest) == body
    assert [g.headers.get("range") for g in gets(faults)] == [None, f"bytes={CUT_AFTER}-"]


def test_altered_bytes_raise_ciphertext_tampered_and_nothing_is_cached(served: Served, faults: Faults, remote: GatewayBlobStore) -> None:
    digest = uploaded(served, ciphertext())
    faults.reset()
    faults.tamper = True
    with pytest.raises(CiphertextTampered, match=digest):
        remote.path(digest)
    assert cache_is_empty(remote)
    faults.tamper, faults.cut_after = True, CUT_AFTER  # altered in the part before a resume
    with pytest.raises(CiphertextTampered):
        remote.get(digest)
    assert cache_is_empty(remote)


def test_a_missing_blob_raises_blob_not_found(served: Served, faults: Faults, remote: GatewayBlobStore) -> None:
    missing = "ef" * 32
    with pytest.raises(BlobNotFound, match=missing):
        remote.path(missing)
    with pytest.raises(BlobNotFound):
        remote.get(missing)
    assert not remote.has(missing) and cache_is_empty(remote)
    with pytest.raises(ValueError, match="SHA-256"):
        remote.path("not-a-digest")


def test_put_uploads_ciphertext_and_metrics_documents_under_the_hash_of_their_exact_bytes(
    served: Served, faults: Faults, remote: GatewayBlobStore, tmp_path: Path
) -> None:
    consumer_key = keywrap.public_key_bytes(X25519PrivateKey.generate())
    sealed_model = sealing.seal(b"weights", consumer_key, info=b"i", kind=dataformat.Kind.MODEL, context=bytes(32))
    items = [ciphertext(5000), sealed_model]
    metrics = canonical_json({"accountant": "rdp", "epsilon_spent": 1.0, "private_metrics": None, "rows": 120, "steps": 12})
    spaced = b'{"rows": 120,  "note": "kept exactly as sent"}\n'
    items += [metrics, spaced]
    faults.reset()
    for data in items:
        digest = remote.put(data)
        assert digest == hashlib.sha256(data).hexdigest() and remote.has(digest)
        assert served.store.get(digest) == data
        with GatewayBlobStore(served.url, tmp_path / f"other-{digest[:8]}") as other:  # another machine reads it back
            assert other.get(digest) == data
    posts = [(s.path, s.headers["content-type"], s.headers["x-content-sha256"]) for s in faults.seen if s.method == "POST"]
    expected_routes = ["/api/blobs"] * (len(items) - 2) + ["/api/documents"] * 2
    assert [p for p, _, _ in posts] == expected_routes
    assert [h for _, _, h in posts] == [hashlib.sha256(d).hexdigest() for d in items]
    assert json.loads(served.store.get(hashlib.sha256(spaced).hexdigest())) == {"rows": 120, "note": "kept exactly as sent"}


def test_put_refuses_plaintext_before_sending_it_and_the_gateway_refuses_it_too(
    served: Served, faults: Faults, remote: GatewayBlobStore
) -> None:
    csv = b"age,glucose,label\n54,5.1,1\n61,7.3,0\n"
    faults.reset()
    for data in (csv, b"[1, 2]", b'{"epsilon": NaN}', b"{not json", b'{"pad": "' + b"x" * (1 << 20) + b'"}'):
        with pytest.raises(ValueError) as refused:
            remote.put(data)
        assert isinstance(refused.value, BlobUploadRefused) and refused.value.status is None
    assert faults.seen == []  # nothing left this machine
    for route, media_type, status in (("blobs", "application/octet-stream", 400), ("documents", "application/json", 422)):
        response = httpx.post(f"{served.url}/api/{route}", content=csv, headers={"content-type": media_type})
        assert response.status_code == status, response.text
    assert not served.store.has(hashlib.sha256(csv).hexdigest())


def test_a_refusal_from_the_gateway_names_its_status_and_detail(served: Served, remote: GatewayBlobStore) -> None:
    truncated = ciphertext(5000)[:30]  # the magic STRL, then the header ends
    with pytest.raises(BlobUploadRefused, match="HTTP 400.*52-byte STRL header") as refused:
        remote.put(truncated)
    assert refused.value.status == 400 and f"{served.url}/api/blobs" in str(refused.value)


def test_a_busy_gateway_is_retried_after_its_retry_after(served: Served, faults: Faults, remote: GatewayBlobStore) -> None:
    body = ciphertext(2000)
    digest = uploaded(served, body)
    faults.reset()
    faults.busy = [503]
    started = time.monotonic()
    assert remote.get(digest) == body
    assert time.monotonic() - started >= 0.9  # Retry-After: 1
    assert len(gets(faults)) == 2
    faults.busy = [429, 503]
    assert remote.has(digest) and len(faults.seen) == 5
    faults.busy = [503]
    assert remote.put(ciphertext(100)) and faults.seen[-2].method == faults.seen[-1].method == "POST"


def test_retries_are_bounded_and_the_error_names_the_url_and_digest(served: Served, faults: Faults, tmp_path: Path) -> None:
    digest = uploaded(served, ciphertext(2000))
    with GatewayBlobStore(served.url, tmp_path / "cache", retries=1, max_retry_after_seconds=0) as impatient:
        faults.reset()
        faults.busy = [503, 503, 503]
        with pytest.raises(BlobTransferFailed, match=f"{served.url}/api/blobs/{digest}.*HTTP 503"):
            impatient.path(digest)
        assert len(faults.seen) == 2 and cache_is_empty(impatient)
    nobody = f"http://127.0.0.1:{free_port()}"
    with GatewayBlobStore(nobody, tmp_path / "cache2", retries=2, backoff_seconds=0.01) as unreachable:
        with pytest.raises(BlobTransferFailed, match=f"{nobody}/api/blobs/{digest}.*3 attempts") as failed:
            unreachable.path(digest)
        assert isinstance(failed.value, ConnectionError) and cache_is_empty(unreachable)


def test_both_stores_offer_what_a_worker_uses(tmp_path: Path, remote: GatewayBlobStore) -> None:
    stores: list[BlobAccess] = [BlobStore(tmp_path / "local"), remote]
    for store in stores:
        assert all(callable(getattr(store, name)) for name in ("path", "get", "has", "put")) and store.root.is_dir()
    with pytest.raises(ValueError, match="http"):
        GatewayBlobStore("ftp://gateway", tmp_path / "c")


def test_an_upload_reports_its_progress_and_is_sent_whole_again_after_a_busy_answer(served: Served, faults: Faults, tmp_path: Path) -> None:
    from marketplace.remote_blobs import UPLOAD_PIECE

    data = ciphertext(3 * UPLOAD_PIECE + 123)
    reports: list[DownloadProgress] = []
    faults.reset()
    faults.busy = [503]
    with GatewayBlobStore(served.url, tmp_path / "up", progress=reports.append, backoff_seconds=0.01, retries=3) as uploader:
        digest = uploader.put(data)
    assert served.store.get(digest) == data
    assert [s.method for s in faults.seen] == ["POST", "POST"]  # refused once, then sent whole again
    assert {r.total for r in reports} == {len(data)} and {r.digest for r in reports} == {digest}
    assert reports[-1].done == len(data) and all(0 < r.done <= len(data) for r in reports)
    assert [r.done for r in reports].count(len(data)) >= 1 and len(reports) >= 4  # a report per MiB piece sent
