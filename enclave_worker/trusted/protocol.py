"""The versioned, size-bounded message protocol between the untrusted host and the trusted part.

Frames on the trusted process's stdin/stdout: ``uint32 big-endian length || CBOR map``. Every
request is ``{"v": 1, "op": <name>, ...fields}``; every field is checked against the op's schema
(type, exact or maximum length) before the enclave acts on it. Replies are maps with ``"type"``
one of ``"progress"``, ``"result"`` or ``"error"``; while a ``run`` is under way the enclave may
also send ``"read"`` frames, each answered by one ``{"v": 1, "op": "data", "data": <bytes>}``
frame (:class:`HostChannel`): the ciphertexts stay with the host and are read on demand. See
``docs/enclave-protocol.md``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import IO, Any

import cbor2

from .errors import ProtocolError

PROTOCOL_VERSION = 1
MAX_FRAME_BYTES = 1 << 30
"""Upper bound of one frame (a served model or a test set travels in one frame; a training job's
datasets never do: they are read on demand, :class:`HostChannel`)."""
MAX_READ_BYTES = 32 << 20
"""Upper bound of one ``read`` (a span of whole chunks: about 1 MiB, or one chunk of up to 16 MiB)."""
MAX_SCHEMA_BYTES = 1 << 20

_LEN = struct.Struct(">I")

MAX_MODEL_BYTES = 1 << 29
"""A served model's ciphertext travels in one ``load_model`` frame (at most 512 MiB)."""
MAX_BATCH_REQUESTS = 256
"""Request envelopes in one ``infer`` batch (the same as ``inference.MAX_BATCH_REQUESTS``)."""
MAX_ENVELOPE_BYTES = 4 << 20
"""One request envelope (the same as ``inference.MAX_ENVELOPE_BYTES``)."""


@dataclass(frozen=True)
class Field:
    """One field of a message: its type and size bounds."""

    kind: type
    exact_len: int | None = None
    max_len: int | None = None
    items: dict[str, Field] | None = None  # for lists of maps
    item_len: int | None = None  # for lists of bytes
    max_items: int | None = None


B20 = Field(bytes, exact_len=20)
B32 = Field(bytes, exact_len=32)
UINT = Field(int)
WRAPPED_KEY = Field(bytes, max_len=512)
SIGNATURE = Field(bytes, exact_len=65)

MAX_TEST_SET_BYTES = 1 << 29
"""A competition's encrypted test set travels in one frame (at most 512 MiB)."""

RULES: dict[str, Field] = {
    "competition_id": UINT,
    "test_set_hash": B32,
    "schema_hash": B32,
    "metric": UINT,
    "public_split_bps": UINT,
    "ladder_step": UINT,
    "max_parameters": UINT,
    "architectures": UINT,
}
"""A competition's scoring rules as the host read them from the chain (``evaluation.Rules``)."""

REQUESTS: dict[str, dict[str, Field]] = {
    "hello": {},
    "attest": {"nonce": Field(bytes, max_len=64)},
    "deposit": {
        "chain_id": UINT,
        "market": B20,
        "content_hash": B32,
        "wrapped_key": Field(bytes, max_len=512),
        "provider": B20,
        "signature": Field(bytes, exact_len=65),
    },
    "release": {
        "chain_id": UINT,
        "market": B20,
        "job_id": UINT,
        "job_status": UINT,
        "job_enclave": B20,
        "job_content_hashes": Field(list, item_len=32, max_items=16),
        "job_completion_deadline": UINT,
        "job_lease_expiry": UINT,
        "job_charges": UINT,
        "now": UINT,
        "content_hash": B32,
        "dataset_provider": B20,
        "sealed_key": Field(bytes, max_len=512),
        "trainer_signer": B20,
        "trainer_active": Field(bool),
        "job_key": B32,
        "job_key_signature": Field(bytes, exact_len=65),
    },
    "release_claim": {
        "chain_id": UINT,
        "market": B20,
        "job_id": UINT,
        "job_status": UINT,
        "job_enclave": B20,
        "job_charges": UINT,
        "abandoned": Field(bytes, max_len=65),
    },
    "deposit_model": {
        "chain_id": UINT,
        "model_market": B20,
        "content_hash": B32,
        "wrapped_key": Field(bytes, max_len=512),
        "owner": B20,
        "signature": Field(bytes, exact_len=65),
    },
    "deposit_job_model": {
        "chain_id": UINT,
        "market": B20,
        "model_market": B20,
        "job_id": UINT,
        "job_status": UINT,
        "job_consumer": B20,
        "job_consumer_key": B32,
        "result_hash": B32,
        "model_hash": B32,
        "sealed_result": Field(bytes, max_len=MAX_MODEL_BYTES),
    },
    "deposit_job_model_copy": {
        "chain_id": UINT,
        "model_market": B20,
        "job_id": UINT,
        "job_status": UINT,
        "job_consumer": B20,
        "model_hash": B32,
        "ciphertext": Field(bytes, max_len=MAX_MODEL_BYTES),
        "wrapped_key": Field(bytes, max_len=512),
        "signature": Field(bytes, exact_len=65),
    },
    "release_model": {
        "chain_id": UINT,
        "model_market": B20,
        "model_id": UINT,
        "model_status": UINT,
        "model_owner": B20,
        "model_content_hash": B32,
        "model_expiry": UINT,
        "model_source_job": UINT,
        "now": UINT,
        "sealed_key": Field(bytes, max_len=512),
        "inference_signer": B20,
        "inference_active": Field(bool),
        "inference_key": B32,
    },
    "load_model": {
        "chain_id": UINT,
        "model_market": B20,
        "model_id": UINT,
        "weights_hash": B32,
        "spec_hash": B32,
        "content_hash": B32,
        "price_per_query": UINT,
        "output_policy": UINT,
        "output_param": UINT,
        "query_cap": UINT,
        "released_key": Field(bytes, max_len=512),
        "ciphertext": Field(bytes, max_len=MAX_MODEL_BYTES),
        "model_spec": Field(bytes, max_len=1 << 20),
        "measurement": B32,
    },
    "infer": {
        "chain_id": UINT,
        "model_market": B20,
        "model_id": UINT,
        "requests": Field(
            list,
            max_items=MAX_BATCH_REQUESTS,
            items={
                "envelope": Field(bytes, max_len=MAX_ENVELOPE_BYTES),
                "deposited": UINT,
                "redeemed": UINT,
                "redeemed_queries": UINT,
                "allowed": Field(bool),
                "channel_enclave": B20,
            },
        ),
    },
    "deposit_test_set": {
        "chain_id": UINT,
        "competitions": B20,
        "organizer": B20,
        "wrapped_key": WRAPPED_KEY,
        "signature": SIGNATURE,
        "ciphertext": Field(bytes, max_len=MAX_TEST_SET_BYTES),
    },
    "admit_submission": {
        "chain_id": UINT,
        "competitions": B20,
        **RULES,
        "competition_status": UINT,
        "closes_at": UINT,
        "now": UINT,
        "participant": B20,
        "ciphertext": Field(bytes, max_len=MAX_MODEL_BYTES),
        "wrapped_key": WRAPPED_KEY,
        "signature": SIGNATURE,
    },
    "admit_job_model": {
        "chain_id": UINT,
        "market": B20,
        "competitions": B20,
        **RULES,
        "competition_status": UINT,
        "closes_at": UINT,
        "now": UINT,
        "job_id": UINT,
        "job_status": UINT,
        "job_consumer": B20,
        "job_consumer_key": B32,
        "result_hash": B32,
        "model_hash": B32,
        "sealed_result": Field(bytes, max_len=MAX_MODEL_BYTES),
    },
    "release_evaluation": {
        "chain_id": UINT,
        "competitions": B20,
        **RULES,
        "competition_status": UINT,
        "organizer": B20,
        "closes_at": UINT,
        "now": UINT,
        "index": UINT,
        "split": UINT,
        "previous_best": UINT,
        "next_public": UINT,
        "public_scored": Field(bool),
        "private_scored": Field(bool),
        "participant": B20,
        "submission_hash": B32,
        "test_set_sealed_key": WRAPPED_KEY,
        "submission_sealed_key": WRAPPED_KEY,
        "evaluator_signer": B20,
        "evaluator_active": Field(bool),
        "evaluator_key": B32,
    },
    "release_purchase": {
        "chain_id": UINT,
        "competitions": B20,
        "competition_id": UINT,
        "competition_status": UINT,
        "index": UINT,
        "participant": B20,
        "submission_hash": B32,
        "buyer": B20,
        "buyer_key": B32,
        "submission_sealed_key": WRAPPED_KEY,
    },
    "score": {
        "chain_id": UINT,
        "competitions": B20,
        **RULES,
        "index": UINT,
        "split": UINT,
        "previous_best": UINT,
        "test_set_key": WRAPPED_KEY,
        "test_set": Field(bytes, max_len=MAX_TEST_SET_BYTES),
        "submission_hash": B32,
        "submission_key": WRAPPED_KEY,
        "submission": Field(bytes, max_len=MAX_MODEL_BYTES),
    },
    "prepare_job": {"chain_id": UINT, "market": B20, "job_id": UINT},
    "plan": {
        "model_spec": Field(bytes, max_len=1 << 20),
        "datasets": Field(
            list,
            max_items=16,
            items={"size": UINT, "header": Field(bytes, exact_len=52), "schema": Field(bytes, max_len=MAX_SCHEMA_BYTES)},
        ),
    },
    "abandon": {"chain_id": UINT, "market": B20, "job_id": UINT, "job_charges": UINT},
    "run": {
        "chain_id": UINT,
        "market": B20,
        "job_id": UINT,
        "model_spec": Field(bytes, max_len=1 << 20),
        "model_spec_hash": B32,
        "epsilon": UINT,
        "delta": UINT,
        "consumer_key": B32,
        "datasets": Field(
            list,
            max_items=16,
            items={
                "content_hash": B32,
                "released_key": Field(bytes, max_len=512),
                "size": UINT,
                "schema": Field(bytes, max_len=MAX_SCHEMA_BYTES),
            },
        ),
    },
}


def _check(name: str, value: Any, spec: Field) -> None:
    if spec.kind is int and (isinstance(value, bool) or not isinstance(value, int) or value < 0 or value >= 2**256):
        raise ProtocolError(f"field {name!r} must be an unsigned 256-bit integer")
    if spec.kind is not int and not isinstance(value, spec.kind):
        raise ProtocolError(f"field {name!r} must be {spec.kind.__name__}, got {type(value).__name__}")
    if isinstance(value, (bytes, list)):
        if spec.exact_len is not None and len(value) != spec.exact_len:
            raise ProtocolError(f"field {name!r} must have length {spec.exact_len}, got {len(value)}")
        if spec.max_len is not None and len(value) > spec.max_len:
            raise ProtocolError(f"field {name!r} exceeds {spec.max_len} bytes")
    if isinstance(value, list):
        if spec.max_items is not None and not 1 <= len(value) <= spec.max_items:
            raise ProtocolError(f"field {name!r} must hold 1..{spec.max_items} items, got {len(value)}")
        for i, item in enumerate(value):
            if spec.items is not None:
                _check_map(f"{name}[{i}]", item, spec.items)
            elif spec.item_len is not None and (not isinstance(item, bytes) or len(item) != spec.item_len):
                raise ProtocolError(f"field {name}[{i}] must be {spec.item_len} bytes")


def _check_map(name: str, value: Any, fields: dict[str, Field]) -> None:
    if not isinstance(value, dict):
        raise ProtocolError(f"{name} must be a map")
    unknown = set(value) - set(fields)
    missing = set(fields) - set(value)
    if unknown or missing:
        raise ProtocolError(f"{name}: unknown fields {sorted(map(str, unknown))}, missing fields {sorted(missing)}")
    for key, spec in fields.items():
        _check(f"{name}.{key}", value[key], spec)


def validate_request(message: Any) -> tuple[str, dict[str, Any]]:
    """Check a decoded request against its op's schema.

    Returns:
        ``(op, fields)`` without the envelope keys.

    Raises:
        ProtocolError: wrong version, unknown op, missing, extra or ill-typed fields.
    """
    if not isinstance(message, dict):
        raise ProtocolError("request must be a map")
    if message.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version {message.get('v')!r} (this enclave speaks {PROTOCOL_VERSION})")
    op = message.get("op")
    if not isinstance(op, str) or op not in REQUESTS:
        raise ProtocolError(f"unknown op {op!r}")
    fields = {k: v for k, v in message.items() if k not in ("v", "op")}
    _check_map(op, fields, REQUESTS[op])
    return op, fields


def encode_frame(message: dict[str, Any]) -> bytes:
    body = cbor2.dumps(message)
    if len(body) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {len(body)} bytes exceeds {MAX_FRAME_BYTES}")
    return _LEN.pack(len(body)) + body


def decode_frame_body(body: bytes) -> Any:
    try:
        return cbor2.loads(body)
    except Exception as e:  # cbor2 raises several decoder error types for malformed input
        raise ProtocolError(f"frame is not valid CBOR: {type(e).__name__}") from e


def read_frame(src: IO[bytes], *, limit: int = MAX_FRAME_BYTES) -> Any | None:
    """Read one frame; ``None`` at a clean end of stream.

    Raises:
        ProtocolError: oversized, truncated or undecodable frame.
    """
    prefix = src.read(_LEN.size)
    if not prefix:
        return None
    if len(prefix) < _LEN.size:
        raise ProtocolError("stream ended inside a frame length")
    (length,) = _LEN.unpack(prefix)
    if length > limit:
        raise ProtocolError(f"frame of {length} bytes exceeds the limit of {limit}")
    body = src.read(length)
    if len(body) != length:
        raise ProtocolError(f"stream ended inside a frame ({len(body)} of {length} bytes)")
    return decode_frame_body(body)


def write_frame(dst: IO[bytes], message: dict[str, Any]) -> None:
    dst.write(encode_frame(message))
    dst.flush()


READ_REPLY: dict[str, Field] = {"length": UINT}
"""The host's answer to a ``read`` frame: the frame ``{"v": 1, "op": "data", "length": n}``, then
``n`` raw bytes (not CBOR: a bulk payload is read straight into the enclave's buffer, no decoding)."""


class HostChannel:
    """The trusted side of one session's frames: replies and progress out, and, during a request,
    byte ranges of the host's ciphertexts in (``read``). Nothing it reads is trusted: the caller
    checks every byte (:mod:`.hosted`).

    A read whose reply cannot be parsed leaves the stream out of step; the channel is then
    ``broken`` and the session must end (as for a corrupt request frame).
    """

    def __init__(self, src: IO[bytes], dst: IO[bytes]) -> None:
        self._src = src
        self._dst = dst
        self.broken = False

    def emit(self, message: dict[str, Any]) -> None:
        write_frame(self._dst, {"v": PROTOCOL_VERSION, **message})

    def read_into(self, dataset: int, offset: int, out: memoryview) -> int:
        """Ask the host for ``len(out)`` bytes at ``offset`` of the request's dataset ``dataset``,
        into ``out``.

        Returns:
            How many bytes the host sent (at most ``len(out)``; the caller checks the count and the bytes).

        Raises:
            ProtocolError: the request is too large, or the host closed the stream, did not answer
                with a ``data`` frame, or announced more bytes than asked for.
        """
        length = len(out)
        if length > MAX_READ_BYTES:
            raise ProtocolError(f"a read is at most {MAX_READ_BYTES} bytes, not {length}")
        self.emit({"type": "read", "dataset": dataset, "offset": offset, "length": length})
        self.broken = True  # until the whole reply is in
        reply = read_frame(self._src, limit=1024)
        if reply is None:
            raise ProtocolError("the host closed the stream during a read")
        if not isinstance(reply, dict) or reply.get("v") != PROTOCOL_VERSION or reply.get("op") != "data":
            raise ProtocolError("the host answered a read with something other than a data frame")
        fields = {k: v for k, v in reply.items() if k not in ("v", "op")}
        _check_map("data", fields, READ_REPLY)
        sent: int = fields["length"]
        if sent > length:
            raise ProtocolError(f"the host answered a read of {length} bytes with {sent}")
        got = 0
        while got < sent:
            n = self._src.readinto(out[got:sent])  # type: ignore[attr-defined]  # a binary stream: BufferedReader, BytesIO
            if not n:
                raise ProtocolError(f"the stream ended inside a read's data ({got} of {sent} bytes)")
            got += n
        self.broken = False
        return sent
