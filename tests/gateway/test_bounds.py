"""Bounded uploads, streams and storage: stalled bodies, concurrency caps, quotas, clean-up, plaintext, Last-Event-ID."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from enclave_worker.trusted import dataformat
from marketplace.blobstore import BlobStore
from marketplace.chain import free_port
from sterling.gateway import create_app
from sterling.gateway.bounds import GatewayBounds
from tests.conftest import toy_package
from tests.gateway.conftest import Gateway, list_toy

HEALTH_BUDGET_MS = 100.0


def bounded_app(gateway: Gateway, store: Path, monkeypatch: pytest.MonkeyPatch, **limits: object) -> FastAPI:
    """A gateway app over its own blob store, with ``STERLING_<UPLOADS|STREAMS>_<FIELD>`` set from ``limits``."""
    for name, value in limits.items():
        monkeypatch.setenv(f"STERLING_{name.upper()}", str(value))
    services = dataclasses.replace(gateway.services, blobs=BlobStore(store))
    return create_app(gateway.settings.model_copy(update={"events_poll_seconds": 0.5, "port": free_port()}), services=services)


@contextmanager
def serve(app: FastAPI) -> Iterator[tuple[str, int]]:
    """Serve ``app`` with uvicorn (as ``sterling up`` does) in a thread, on its settings' port; yields (host, port)."""
    port = app.state.settings.port
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield "127.0.0.1", port
    finally:
        server.should_exit = True
        thread.join(15)


def ciphertext(size: int) -> bytes:
    return dataformat.encrypt_bytes(os.urandom(size), dataformat.new_data_key(), kind=dataformat.Kind.DATASET, context=bytes(32))


def post_blob(client: TestClient, body: bytes) -> httpx.Response:
    response: httpx.Response = client.post("/api/blobs", content=body, headers={"content-type": "application/octet-stream"})
    return response


def connect(port: int, *, source: str = "127.0.0.1") -> socket.socket:
    """A TCP connection to the gateway from ``source`` (any 127.x address is this machine: another client)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    return sock


def start_upload(port: int, *, source: str = "127.0.0.1", length: int = 1 << 20, prefix: bytes | None = None) -> socket.socket:
    """Send an upload's headers and its first bytes (a real STRL header), then nothing more."""
    sock = connect(port, source=source)
    head = f"POST /api/blobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/octet-stream\r\n"
    sock.sendall(f"{head}Content-Length: {length}\r\n\r\n".encode() + (prefix if prefix is not None else ciphertext(4096)[:1000]))
    return sock


def open_stream(port: int, *, source: str = "127.0.0.1", **headers: str) -> socket.socket:
    sock = connect(port, source=source)
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    sock.sendall(f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n{extra}\r\n".encode("latin-1"))
    return sock


def response_head(sock: socket.socket, *, timeout: float = 10) -> tuple[int, dict[str, str]]:
    """Status and headers of the response on ``sock``."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(4096)
        assert piece, f"connection closed before a response: {data!r}"
        data += piece
    lines = data.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}


def staging_files(store: Path) -> list[Path]:
    tmp = store / "tmp"
    return list(tmp.iterdir()) if tmp.is_dir() else []


def wait_until(predicate: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_a_stalled_upload_gets_408_and_an_aborted_one_one_log_line_both_leave_no_staging_file(
    gateway: Gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    app = bounded_app(gateway, tmp_path, monkeypatch, uploads_body_timeout_seconds=1)
    caplog.set_level(logging.INFO)
    with serve(app) as (_, port):
        stalled = start_upload(port)
        assert wait_until(lambda: len(staging_files(tmp_path)) == 1)
        started = time.monotonic()
        status, headers = response_head(stalled)
        assert status == 408 and headers.get("connection") == "close"
        assert 0.8 < time.monotonic() - started < 5
        assert stalled.recv(65536) == b"" or stalled.recv(65536) == b""  # the body, then the server closes its end
        stalled.close()
        assert wait_until(lambda: not staging_files(tmp_path))

        aborted = start_upload(port)
        assert wait_until(lambda: len(staging_files(tmp_path)) == 1)
        aborted.close()
        assert wait_until(lambda: not staging_files(tmp_path))
        assert wait_until(lambda: sum("aborted" in r.getMessage() for r in caplog.records) == 2)
    aborts = [r for r in caplog.records if "aborted" in r.getMessage()]
    assert [r.getMessage().rsplit(": ", 1)[1] for r in aborts] == ["the body stalled", "the client disconnected"]
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert app.state.bounds.upload_admission.open == 0


def test_uploads_and_streams_are_capped_per_client_429_and_globally_503_with_retry_after(
    gateway: Gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = bounded_app(
        gateway, tmp_path, monkeypatch,
        uploads_max_concurrent=3, uploads_max_concurrent_per_client=2, uploads_body_timeout_seconds=30, uploads_retry_after_seconds=7,
        streams_max_open=3, streams_max_open_per_client=2, streams_retry_after_seconds=9,
    )  # fmt: skip
    with serve(app) as (_, port), ExitStack() as held:
        for opener, retry in ((start_upload, "7"), (open_stream, "9")):
            first = [opener(port) for _ in range(2)]
            for sock in first:
                held.callback(sock.close)
            if opener is open_stream:
                assert all(response_head(sock)[0] == 200 for sock in first)
            else:
                assert wait_until(lambda: app.state.bounds.upload_admission.open == 2)
            status, headers = response_head(opener(port))
            assert (status, headers.get("retry-after")) == (429, retry)
            other = opener(port, source="127.0.0.2")
            held.callback(other.close)
            if opener is open_stream:
                assert response_head(other)[0] == 200
            status, headers = response_head(opener(port, source="127.0.0.3"))
            assert (status, headers.get("retry-after")) == (503, retry)
    assert wait_until(lambda: app.state.bounds.upload_admission.open == 0 and app.state.bounds.stream_admission.open == 0)
    assert wait_until(lambda: not staging_files(tmp_path))


def test_health_answers_within_100_ms_while_500_streams_are_asked_for_and_the_cap_held(
    gateway: Gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = bounded_app(gateway, tmp_path, monkeypatch, streams_max_open_per_client=10_000)
    bounds: GatewayBounds = app.state.bounds
    cap = bounds.streams.max_open
    with serve(app) as (_, port), ExitStack() as held, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        statuses = []
        asked = max(500, cap + 50)  # the finding: 500 open streams took /api/health from 3–6 ms to 1.4 s
        for _ in range(asked):
            sock = open_stream(port)
            held.callback(sock.close)
            statuses.append(response_head(sock)[0])
        assert statuses.count(200) == cap and statuses.count(503) == asked - cap
        assert app.state.feed.open_streams == cap
        timings = []
        for _ in range(40):
            started = time.perf_counter()
            assert client.get("/api/health").status_code == 200
            timings.append((time.perf_counter() - started) * 1000)
            time.sleep(0.05)
    assert statistics.median(timings) < HEALTH_BUDGET_MS / 4 and sorted(timings)[-2] < HEALTH_BUDGET_MS, timings


def test_a_stream_ends_after_its_lifetime(gateway: Gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = bounded_app(gateway, tmp_path, monkeypatch, streams_lifetime_seconds=1)
    with serve(app) as (_, port):
        sock = open_stream(port)
        assert response_head(sock)[0] == 200
        started, data = time.monotonic(), b""
        while not data.endswith(b"0\r\n\r\n"):  # the chunked body's end: the server finished the response
            piece = sock.recv(4096)
            assert piece and time.monotonic() - started < 10
            data += piece
        sock.close()
        assert wait_until(lambda: app.state.feed.open_streams == 0 and app.state.bounds.stream_admission.open == 0)


def test_a_client_over_its_quota_gets_507_and_nothing_is_stored(gateway: Gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = bounded_app(gateway, tmp_path, monkeypatch, uploads_quota_bytes=25_000, uploads_quota_blobs=3)
    client = TestClient(app)
    for _ in range(2):
        assert post_blob(client, ciphertext(10_000)).status_code == 201
    over = ciphertext(10_000)
    response = post_blob(client, over)
    assert response.status_code == 507 and "quota" in response.json()["detail"] and "Nothing was stored" in response.json()["detail"]
    assert not BlobStore(tmp_path).has(hashlib.sha256(over).hexdigest()) and not staging_files(tmp_path)
    assert post_blob(client, ciphertext(1000)).status_code == 201  # 21 kB, 3 blobs: at both quotas
    response = post_blob(client, ciphertext(10))
    assert response.status_code == 507 and "3 blob(s)" in response.json()["detail"]
    usage = app.state.bounds.storage.usage("testclient")
    assert (usage.blobs, 20_000 < usage.bytes < 25_000) == (3, True)


def test_clean_up_deletes_unreferenced_blobs_after_the_grace_period_and_keeps_referenced_ones(
    gateway: Gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = bounded_app(gateway, tmp_path, monkeypatch, uploads_gc_grace_seconds=3600)
    client = TestClient(app)
    store = BlobStore(tmp_path)
    orphan = post_blob(client, ciphertext(5000)).json()["sha256"]
    listed, _ = list_toy(gateway.net, 7141)
    referenced = store.put(gateway.net.blobs.get(listed.content_hash.hex()))
    schema = store.put(gateway.net.blobs.get(listed.schema_hash.hex()))
    gateway.sync()
    storage = app.state.bounds.storage
    assert storage.usage("testclient").blobs == 1
    assert storage.collect().deleted == 0  # within the grace period
    assert store.has(orphan)
    lagging = dataclasses.replace(gateway.services, blobs=store)
    stale = GatewayBounds.for_services(lagging).storage
    stale.head = lambda: 10**9  # an index far behind the chain condemns nothing
    assert stale.collect(now=time.time() + 7200).skipped is not None and store.has(orphan)
    report = storage.collect(now=time.time() + 7200)
    assert (report.deleted, report.kept) == (1, 2)
    assert not store.has(orphan) and store.has(referenced) and store.has(schema)
    assert client.get(f"/api/blobs/{orphan}").status_code == 404
    assert storage.usage("testclient").blobs == 0  # its quota is free again


def test_plaintext_behind_a_valid_header_is_refused_and_real_ciphertext_passes(
    gateway: Gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = TestClient(bounded_app(gateway, tmp_path, monkeypatch))
    key = dataformat.new_data_key()
    package = toy_package(200, 3).to_bytes()
    real = dataformat.encrypt_bytes(package, key, kind=dataformat.Kind.DATASET, context=bytes(32), chunk_size=4096)
    response = post_blob(client, real)
    assert response.status_code == 201, response.json()
    header = real[: dataformat.HEADER_LEN]
    rows = (b"%d,%.1f,%.1f,%d\n" % (30 + i % 50, 4 + i % 7 / 3, 18 + i % 20, i % 2) for i in range(3000))
    csv = b"age,glucose,bmi,label\n" + b"".join(rows)
    floats = np.random.default_rng(1).normal(size=20_000).astype(np.float32).tobytes()
    for payload, evidence in ((csv, "printable text"), (csv[:200], "printable text"), (floats, "histogram")):
        body = header + payload[: len(payload) - len(payload) % 4112] + bytes(16) if len(payload) > 4112 else header + payload
        response = post_blob(client, body)
        assert response.status_code == 400 and "do not look like ciphertext" in response.json()["detail"], response.json()
        assert evidence in response.json()["detail"]
        assert not BlobStore(tmp_path).has(hashlib.sha256(body).hexdigest())
    assert not staging_files(tmp_path)


def test_a_malformed_last_event_id_gets_400(gateway: Gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = bounded_app(gateway, tmp_path, monkeypatch)
    with serve(app) as (_, port):
        for value in ("abc", "12a", "-1", "1" * 19, "\xb2", "0x10", "1 2"):  # "\xb2" is "²": isdigit(), but int() refuses it
            sock = open_stream(port, **{"Last-Event-ID": value})
            status, _ = response_head(sock)
            sock.close()
            assert status == 400, (value, status)
        sock = open_stream(port, **{"Last-Event-ID": "5"})
        assert response_head(sock)[0] == 200
        sock.close()
    response = TestClient(app).get("/api/events", headers={"Last-Event-ID": "12a"})
    assert response.status_code == 400 and "Last-Event-ID must be an event id" in response.json()["detail"]
