"""The host↔enclave message protocol: validation, framing, and a fuzz of the parser."""

from __future__ import annotations

import io
import struct

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave_worker.trusted import protocol
from enclave_worker.trusted.errors import ProtocolError


def _release(**overrides: object) -> dict[str, object]:
    message: dict[str, object] = {
        "v": 1,
        "op": "release",
        "chain_id": 1,
        "market": bytes(20),
        "job_id": 1,
        "job_status": 2,
        "job_enclave": bytes(20),
        "job_content_hashes": [bytes(32)],
        "job_completion_deadline": 10,
        "job_lease_expiry": 10,
        "job_charges": 0,
        "now": 5,
        "content_hash": bytes(32),
        "dataset_provider": bytes(20),
        "sealed_key": bytes(80),
        "trainer_signer": bytes(20),
        "trainer_active": True,
        "job_key": bytes(32),
        "job_key_signature": bytes(65),
    }
    message.update(overrides)
    return message


def test_valid_request_passes_and_strips_the_envelope() -> None:
    op, fields = protocol.validate_request(_release())
    assert op == "release"
    assert "v" not in fields and fields["job_id"] == 1


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"v": 2}, "unsupported protocol version"),
        ({"op": "steal_keys"}, "unknown op"),
        ({"market": bytes(19)}, "length 20"),
        ({"job_id": -1}, "unsigned"),
        ({"job_id": True}, "unsigned"),
        ({"job_id": 2**256}, "unsigned"),
        ({"sealed_key": bytes(513)}, "exceeds 512"),
        ({"job_content_hashes": []}, "1..16"),
        ({"job_content_hashes": [bytes(32)] * 17}, "1..16"),
        ({"job_content_hashes": [bytes(31)]}, "32 bytes"),
        ({"trainer_active": 1}, "must be bool"),
        ({"extra": 1}, "unknown fields"),
    ],
)
def test_invalid_requests_are_refused_with_a_clear_reason(overrides: dict[str, object], match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        protocol.validate_request(_release(**overrides))


def test_missing_field_is_named() -> None:
    message = _release()
    del message["now"]
    with pytest.raises(ProtocolError, match="missing fields \\['now'\\]"):
        protocol.validate_request(message)


def test_frames_round_trip_and_oversized_or_truncated_frames_fail() -> None:
    buf = io.BytesIO(protocol.encode_frame({"v": 1, "op": "hello"}) + protocol.encode_frame({"v": 1, "op": "attest", "nonce": b"n"}))
    assert protocol.read_frame(buf) == {"v": 1, "op": "hello"}
    assert protocol.read_frame(buf)["nonce"] == b"n"
    assert protocol.read_frame(buf) is None
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        protocol.read_frame(io.BytesIO(struct.pack(">I", 1000) + bytes(1000)), limit=999)
    with pytest.raises(ProtocolError, match="inside a frame"):
        protocol.read_frame(io.BytesIO(struct.pack(">I", 10) + b"abc"))
    with pytest.raises(ProtocolError, match="frame length"):
        protocol.read_frame(io.BytesIO(b"\x00\x00"))


@given(st.binary(max_size=200))
@settings(max_examples=5000, deadline=None)
def test_fuzz_arbitrary_frame_bytes_never_crash_the_parser(body: bytes) -> None:
    stream = io.BytesIO(struct.pack(">I", len(body)) + body)
    try:
        message = protocol.read_frame(stream)
        protocol.validate_request(message)
    except ProtocolError:
        pass


_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**270) | st.binary(max_size=40) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)


@given(st.sampled_from(sorted(protocol.REQUESTS)), st.dictionaries(st.sampled_from(sorted({k for f in protocol.REQUESTS.values() for k in f})), _values, max_size=8))
@settings(max_examples=5000, deadline=None)
def test_fuzz_structured_requests_are_accepted_or_refused_never_crash(op: str, fields: dict[str, object]) -> None:
    try:
        protocol.validate_request(cbor2.loads(cbor2.dumps({"v": 1, "op": op, **fields})))
    except ProtocolError:
        pass
