"""The gateway never receives plaintext: what it is sent and what it stores is ciphertext or public JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from fastapi.testclient import TestClient
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from enclave_worker.trusted import keywrap
from marketplace.contracts import EPSILON_SCALE, JobStatus
from sterling.gateway.errors import UploadRejected
from sterling.gateway.upload import CiphertextCheck
from tests.conftest import toy_package, toy_spec, toy_terms
from tests.gateway.conftest import Gateway
from tests.gateway.http_flow import create_job_over_http, list_dataset_over_http


@dataclass
class Received:
    method: str
    path: str
    query: bytes
    headers: bytes
    body: bytes


@dataclass
class RecordingApp:
    """Wraps the gateway's ASGI app and keeps every byte of every request it is sent."""

    app: ASGIApp
    requests: list[Received] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []

        async def recording() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
            return message

        try:
            await self.app(scope, recording, send)
        finally:
            headers = b"\n".join(k + b": " + v for k, v in scope["headers"])
            self.requests.append(Received(scope["method"], scope["path"], scope["query_string"], headers, b"".join(chunks)))


def is_ciphertext(data: bytes) -> bool:
    check = CiphertextCheck()
    try:
        check.feed(data)
        check.finish()
    except UploadRejected:
        return False
    return True


def is_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


def files_under(*roots: Path) -> Iterator[Path]:
    for root in roots:
        yield from (p for p in root.rglob("*") if p.is_file())


def test_gateway_receives_and_stores_only_ciphertext_and_public_json(gateway: Gateway) -> None:
    net = gateway.net
    recorder = RecordingApp(gateway.app)
    client = TestClient(recorder)
    provider, consumer = net.chain.new_account(), net.chain.new_account()
    package = toy_package(150, 77)

    listing = list_dataset_over_http(client, provider, package, toy_terms(price=10**17))
    gateway.sync()
    (dataset,) = client.get("/api/datasets", params={"provider": provider.address}).json()["items"]
    assert dataset["content_hash"] == "0x" + listing.content_hash

    consumer_key = X25519PrivateKey.generate()
    receipt = create_job_over_http(
        client, consumer, dataset_ids=[dataset["id"]], spec=toy_spec(epochs=1), consumer_key=keywrap.public_key_bytes(consumer_key),
        max_total_price=10**17, epsilon_units=EPSILON_SCALE,
    )  # fmt: skip
    gateway.sync()
    (job,) = client.get("/api/jobs", params={"consumer": consumer.address}).json()["items"]
    assert int(receipt["blockNumber"], 16) == job["created_block"]
    net.worker.run_job(job["id"])  # the worker enclave decrypts; the gateway only relays and stores
    gateway.sync()
    assert net.market.job(job["id"]).status is JobStatus.COMPLETED
    sealed = client.get(f"/api/jobs/{job['id']}/result")
    assert sealed.status_code == 200 and is_ciphertext(sealed.content)

    # Plaintext the provider holds: the package, rows of it, feature values as text, and the data key.
    features = package.features
    raw_markers = [package.to_bytes()[-256:], features[:4].tobytes(), package.labels[:32].tobytes(), listing.data_key]
    raw_markers += [features[i].tobytes() for i in (0, 17, 42, 99, 149)]
    text_markers = [repr(float(features[i, j])).encode() for i, j in ((0, 0), (5, 2), (77, 3), (120, 1))]
    markers = raw_markers + [m.hex().encode() for m in raw_markers] + text_markers

    # 1. Every byte the gateway received: ciphertext uploads, public JSON otherwise, no plaintext anywhere.
    assert any(r.path == "/api/blobs" and r.method == "POST" for r in recorder.requests)
    for request in recorder.requests:
        if request.method == "POST" and request.path == "/api/blobs":
            assert is_ciphertext(request.body), request.path
        else:
            assert request.body == b"" or is_json(request.body), request.path
        for part in (request.body, request.query, request.headers):
            assert not any(marker in part for marker in markers), (request.method, request.path)
    deposits = [json.loads(r.body) for r in recorder.requests if r.path == "/api/key-manager/deposits"]
    assert [len(bytes.fromhex(d["wrapped_key"])) for d in deposits] == [80]  # HPKE enc + wrapped 32-byte key + tag

    # 2. Everything the gateway and its services keep on disk.
    state_dirs = (gateway.state_dir, net.blobs.root.parent)
    blob_files = list(files_under(net.blobs.root / "sha256"))
    assert blob_files
    for path in blob_files:
        data = path.read_bytes()
        assert is_ciphertext(data) or is_json(data), path
    for path in files_under(*state_dirs):
        data = path.read_bytes()
        assert not any(marker in data for marker in markers), path
