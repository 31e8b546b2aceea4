"""``GET``/``HEAD /api/blobs/{sha256}`` serve byte ranges with a strong ETag; ``POST /api/documents``
stores a public JSON object byte for byte, quota-accounted, and refuses everything else with a 4xx."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from enclave_worker.trusted import dataformat
from enclave_worker.trusted.dataset import canonical_json
from marketplace.blobstore import BlobStore
from marketplace.remote_blobs import MAX_DOCUMENT_BYTES
from sterling.gateway import create_app
from tests.gateway.conftest import Gateway

SIZE = 200_000  # a few of FileResponse's 64 KiB chunks


@pytest.fixture(scope="module")
def stored(gateway: Gateway) -> tuple[str, bytes]:
    """A ciphertext uploaded through the gateway: (digest, bytes)."""
    body = dataformat.encrypt_bytes(os.urandom(SIZE), dataformat.new_data_key(), kind=dataformat.Kind.DATASET, context=bytes(32))
    reply = gateway.client.post("/api/blobs", content=body, headers={"content-type": "application/octet-stream"})
    assert reply.status_code == 201, reply.text
    return reply.json()["sha256"], body


def fetch(client: TestClient, digest: str, method: str = "GET", **headers: str) -> tuple[int, dict[str, str], bytes]:
    response = client.request(method, f"/api/blobs/{digest}", headers=headers)
    return response.status_code, dict(response.headers), response.content


def test_the_whole_blob_carries_its_size_a_strong_etag_and_accept_ranges(gateway: Gateway, stored: tuple[str, bytes]) -> None:
    digest, body = stored
    for path_digest in (digest, "0x" + digest.upper()):
        status, headers, content = fetch(gateway.client, path_digest)
        assert status == 200 and content == body
        assert headers["etag"] == f'"{digest}"' and headers["accept-ranges"] == "bytes"
        assert headers["content-length"] == str(len(body)) and headers["content-type"] == "application/octet-stream"


@pytest.mark.parametrize(
    ("spec", "first", "last"),
    [
        ("bytes=10-99", 10, 99),
        ("bytes=70000-", 70_000, None),
        ("bytes=-100", -100, None),
        ("bytes=0-0", 0, 0),
        ("bytes=5-9999999", 5, None),
    ],
)
def test_a_single_range_gets_206_with_exactly_that_slice(
    gateway: Gateway, stored: tuple[str, bytes], spec: str, first: int, last: int | None
) -> None:
    digest, body = stored
    expected = body[first : None if last is None else last + 1]
    status, headers, content = fetch(gateway.client, digest, range=spec)
    assert status == 206 and content == expected
    start = first % len(body)
    assert headers["content-range"] == f"bytes {start}-{start + len(expected) - 1}/{len(body)}"
    assert headers["content-length"] == str(len(expected)) and headers["etag"] == f'"{digest}"'


def test_a_range_past_the_end_gets_416_with_the_size(gateway: Gateway, stored: tuple[str, bytes]) -> None:
    digest, body = stored
    for spec in (f"bytes={len(body)}-", f"bytes={len(body) + 10}-{len(body) + 20}", "bytes=-0"):
        status, headers, content = fetch(gateway.client, digest, range=spec)
        assert status == 416, spec
        assert headers["content-range"] == f"bytes */{len(body)}" and content == b""


def test_a_range_header_that_cannot_be_read_is_ignored(gateway: Gateway, stored: tuple[str, bytes]) -> None:
    """RFC 9110 section 14.2: another unit, or a range that ends before it starts, gets the whole blob (Starlette answers 400)."""
    digest, body = stored
    for spec in ("items=0-5", "bytes=9-2", "bytes", "bytes=x-y"):
        status, _, content = fetch(gateway.client, digest, range=spec)
        assert (status, content) == (200, body), spec


def test_if_range_keeps_the_range_only_for_the_blobs_etag(gateway: Gateway, stored: tuple[str, bytes]) -> None:
    digest, body = stored
    status, _, content = fetch(gateway.client, digest, range="bytes=100-", **{"if-range": f'"{digest}"'})
    assert (status, content) == (206, body[100:])
    for validator in ('"' + "0" * 64 + '"', f'W/"{digest}"'):
        status, _, content = fetch(gateway.client, digest, range="bytes=100-", **{"if-range": validator})
        assert (status, content) == (200, body), validator


def test_head_answers_the_size_without_a_body(gateway: Gateway, stored: tuple[str, bytes]) -> None:
    digest, body = stored
    status, headers, content = fetch(gateway.client, digest, "HEAD")
    assert (status, content) == (200, b"")
    assert headers["content-length"] == str(len(body)) and headers["etag"] == f'"{digest}"' and headers["accept-ranges"] == "bytes"
    status, headers, content = fetch(gateway.client, digest, "HEAD", range="bytes=10-19")
    assert (status, content, headers["content-length"], headers["content-range"]) == (206, b"", "10", f"bytes 10-19/{len(body)}")
    assert fetch(gateway.client, "ab" * 32, "HEAD")[0] == 404


def test_a_missing_blob_is_404(gateway: Gateway) -> None:
    response = gateway.client.get(f"/api/blobs/{'cd' * 32}", headers={"range": "bytes=0-"})
    assert response.status_code == 404 and "cd" * 32 in response.json()["detail"]


# -- POST /api/documents ---------------------------------------------------------------------


def post_document(client: TestClient, body: bytes, *, content_type: str = "application/json", **headers: str) -> tuple[int, dict[str, str]]:
    response = client.post("/api/documents", content=body, headers={"content-type": content_type, **headers})
    return response.status_code, response.json()


def metrics_document() -> bytes:
    """A metrics document as the trainer enclave writes it (canonical JSON, private class counts)."""
    return canonical_json(
        {"accountant": "rdp", "delta": 1e-5, "epochs": 3, "epsilon_spent": 1.25, "rows": 1200, "steps": 90,
         "private_metrics": {"epsilon": 0.25, "metrics": {"class_counts": {"value": [598, 611], "epsilon": 0.25, "scale": 4.0}}},
         "privacy_audit": None}
    )  # fmt: skip


def test_a_document_is_stored_byte_for_byte_under_the_hash_of_its_exact_bytes(gateway: Gateway) -> None:
    canonical = metrics_document()
    spaced = b'{ "b": 1,\n  "a": [1.50, "\\u00e9"] }\n'  # not canonical: kept as sent, or its on-chain hash would not match
    for body in (canonical, spaced):
        digest = hashlib.sha256(body).hexdigest()
        status, reply = post_document(gateway.client, body, **{"x-content-sha256": digest})
        assert (status, reply) == (201, {"sha256": digest})
        assert gateway.client.get(f"/api/blobs/{digest}").content == body
    assert hashlib.sha256(canonical_json(json.loads(spaced))).hexdigest() != hashlib.sha256(spaced).hexdigest()


def test_documents_that_are_not_plain_json_objects_are_refused(gateway: Gateway) -> None:
    cases: list[tuple[bytes, dict[str, str], int, str]] = [
        (b"[1, 2, 3]", {}, 400, "JSON object"),
        (b'"metrics"', {}, 400, "JSON object"),
        (b'{"a": 1, "a": 2}', {}, 400, "'a' twice"),
        (b'{"epsilon": NaN}', {}, 422, "NaN"),
        (b'{"epsilon": 1e999}', {}, 422, "out of range"),
        (b"age,glucose,label\n54,5.1,1\n", {}, 422, "not JSON"),
        (b"", {}, 422, "not JSON"),
        ('{"name": "é"}'.encode("latin-1"), {}, 422, "not JSON"),
        (b"\xef\xbb\xbf{}", {}, 422, "not JSON"),
        (b'{"a":' * 70 + b"1" + b"}" * 70, {}, 400, "nests deeper"),
        (b'{"pad": "' + b"x" * MAX_DOCUMENT_BYTES + b'"}', {}, 413, "limit"),
        (b'{"a": 1}', {"x-content-sha256": "ab" * 32}, 400, "X-Content-SHA256"),
        (b'{"a": 1}', {"x-content-sha256": "nope"}, 400, "64 hex digits"),
    ]
    for body, headers, expected, message in cases:
        status, reply = post_document(gateway.client, body, **headers)
        assert (status, message in str(reply["detail"])) == (expected, True), (body[:40], reply)
        assert not gateway.net.blobs.has(hashlib.sha256(body).hexdigest()), body[:40]
    status, reply = post_document(gateway.client, b'{"a": 1}', content_type="text/csv")
    assert status == 415 and "application/json" in reply["detail"]


@pytest.fixture()
def quota_app(gateway: Gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """A gateway over its own blob store that lets a client keep 100 unreferenced bytes."""
    monkeypatch.setenv("STERLING_UPLOADS_QUOTA_BYTES", "100")
    services = dataclasses.replace(gateway.services, blobs=BlobStore(tmp_path / "store"))
    with TestClient(create_app(gateway.settings, services=services), base_url="http://127.0.0.1:8000") as client:
        yield client


def test_documents_count_against_the_storage_quota(quota_app: TestClient) -> None:
    blobs: BlobStore = quota_app.app.state.services.blobs  # type: ignore[attr-defined]
    big = b'{"pad": "' + b"x" * 120 + b'"}'
    status, reply = post_document(quota_app, big)
    assert status == 507 and "quota" in reply["detail"]
    assert not blobs.has(hashlib.sha256(big).hexdigest())
    first = b'{"pad": "' + b"y" * 50 + b'"}'
    assert post_document(quota_app, first)[0] == 201
    second = b'{"pad": "' + b"z" * 50 + b'"}'
    status, reply = post_document(quota_app, second)  # 61 + 61 bytes > 100
    assert status == 507 and not blobs.has(hashlib.sha256(second).hexdigest())
    assert post_document(quota_app, first)[0] == 201  # the same bytes again: already stored: nothing stored or charged


def test_the_openapi_document_describes_ranges_and_the_documents_route(gateway: Gateway) -> None:
    paths = gateway.client.get("/openapi.json").json()["paths"]
    assert {"206", "404", "416"} <= set(paths["/api/blobs/{sha256}"]["get"]["responses"])
    post = paths["/api/documents"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {"type": "object"}
    assert {"201", "400", "413", "422", "507"} <= set(post["responses"])
