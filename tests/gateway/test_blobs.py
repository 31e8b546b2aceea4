"""Blob upload accepts only well-formed Sterling ciphertext; everything else gets a clear 4xx."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from fastapi.testclient import TestClient

from enclave_worker.trusted import dataformat, keywrap, sealing
from tests.conftest import toy_package
from tests.gateway.conftest import Gateway

LIMIT = 8192


@pytest.fixture(scope="module")
def small(gateway: Gateway) -> Iterator[TestClient]:
    """The same gateway with an 8 KiB upload limit."""
    with TestClient(gateway.app_with(max_blob_bytes=LIMIT)) as client:
        yield client


def ciphertext(size: int = 1000, *, chunk_size: int = 1024, kind: dataformat.Kind = dataformat.Kind.DATASET) -> bytes:
    return dataformat.encrypt_bytes(bytes(range(256)) * (size // 256 + 1), dataformat.new_data_key(), kind=kind, context=bytes(32), chunk_size=chunk_size)


def upload(client: TestClient, body: bytes | Iterator[bytes], **headers: str) -> tuple[int, dict[str, object]]:
    response = client.post("/api/blobs", content=body, headers={"content-type": "application/octet-stream", **headers})
    return response.status_code, response.json()


def test_well_formed_ciphertext_is_stored_under_its_hash(gateway: Gateway, small: TestClient) -> None:
    for body in (ciphertext(0), ciphertext(1024 * 3), ciphertext(1500), ciphertext(10, kind=dataformat.Kind.MODEL)):
        status, reply = upload(small, body, **{"x-content-sha256": hashlib.sha256(body).hexdigest()})
        assert status == 201, reply
        assert reply["sha256"] == hashlib.sha256(body).hexdigest() and reply["size"] == len(body) and reply["format"] == "STRL"
        fetched = gateway.client.get(f"/api/blobs/{reply['sha256']}")
        assert fetched.status_code == 200 and fetched.content == body
    consumer_key = X25519PrivateKey.generate()
    envelope = sealing.seal(b"weights", keywrap.public_key_bytes(consumer_key), info=b"i", kind=dataformat.Kind.MODEL, context=bytes(32))
    status, reply = upload(small, envelope)
    assert status == 201 and reply["format"] == "STRS" and reply["kind"] == "model"


def test_anything_else_is_refused_with_a_clear_4xx(gateway: Gateway, small: TestClient) -> None:
    good = ciphertext(3000)
    header = bytearray(good[: dataformat.HEADER_LEN])
    wrong_version = bytearray(good)
    wrong_version[4] = 2
    wrong_kind = bytearray(good)
    wrong_kind[5] = 9
    tiny_chunks = bytearray(good)
    tiny_chunks[8:12] = (16).to_bytes(4, "big")
    cases: list[tuple[bytes, str]] = [
        (b"age,glucose,label\n54,5.1,1\n61,7.3,0\n", "plaintext text"),
        (toy_package(20, 1).to_bytes(), "safetensors"),
        (b"", "too short"),
        (bytes(header[:30]), "ends inside the 52-byte STRL header"),
        (b"XXXX" + good[4:], "expected magic STRL"),
        (bytes(wrong_version), "unsupported ciphertext version 2"),
        (bytes(wrong_kind), "unknown ciphertext kind 9"),
        (bytes(tiny_chunks), "chunk size 16 outside"),
        (good[: dataformat.HEADER_LEN + 10], "no final chunk"),
        (good[: dataformat.HEADER_LEN + 1024 + 16 + 5], "ends inside a chunk tag"),
        (b"STRS\x02\x00\x50" + good, "unsupported sealed-envelope version 2"),
        (b"STRS\x01\x00\x00" + good, "wrapped key of 0 bytes"),
    ]
    for body, message in cases:
        status, reply = upload(small, body)
        assert status == 400, (message, reply)
        assert message in str(reply["detail"]), (message, reply)
    status, reply = upload(small, good, **{"x-content-sha256": "ab" * 32})
    assert status == 400 and "X-Content-SHA256" in str(reply["detail"])
    status, reply = upload(small, good, **{"x-content-sha256": "not-hex"})
    assert status == 400 and "64 hex digits" in str(reply["detail"])
    assert not (gateway.net.blobs.path(hashlib.sha256(good).hexdigest())).exists()
    assert list((gateway.net.blobs.root / "tmp").iterdir()) == []  # nothing half-written is left behind


def test_uploads_over_the_limit_get_413_with_or_without_a_content_length(small: TestClient) -> None:
    big = ciphertext(LIMIT * 2)
    status, reply = upload(small, big)
    assert status == 413 and "limit" in str(reply["detail"])

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while streaming
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000]

    status, reply = upload(small, chunks())
    assert status == 413 and "limit" in str(reply["detail"])
    status, reply = upload(small, ciphertext(LIMIT // 2))
    assert status == 201
