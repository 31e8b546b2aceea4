"""The chunked AEAD format: round trips, and every kind of damage is rejected with its own error."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave_worker.trusted import dataformat
from enclave_worker.trusted.dataformat import HEADER_LEN, TAG_LEN, Kind
from enclave_worker.trusted.errors import (
    CiphertextDuplicated,
    CiphertextError,
    CiphertextMalformed,
    CiphertextReordered,
    CiphertextTampered,
    CiphertextTrailingData,
    CiphertextTruncated,
)

CHUNK = 1024
CONTEXT = bytes(range(32))


def _encrypt(plaintext: bytes, key: bytes) -> bytes:
    return dataformat.encrypt_bytes(plaintext, key, kind=Kind.DATASET, context=CONTEXT, chunk_size=CHUNK)


def _chunks(ciphertext: bytes) -> list[bytes]:
    body = ciphertext[HEADER_LEN:]
    step = CHUNK + TAG_LEN
    return [body[i : i + step] for i in range(0, len(body), step)]


@given(st.binary(max_size=5 * CHUNK + 7))
@settings(max_examples=60, deadline=None)
def test_round_trip_any_length(plaintext: bytes) -> None:
    key = dataformat.new_data_key()
    ct = _encrypt(plaintext, key)
    assert dataformat.decrypt_bytes(ct, key, kind=Kind.DATASET, context=CONTEXT) == plaintext
    if len(plaintext) >= 16:
        assert plaintext not in ct


def test_every_single_bit_flip_in_every_chunk_is_rejected() -> None:
    key = dataformat.new_data_key()
    ct = _encrypt(bytes(3 * CHUNK + 100), key)
    # One flipped bit at several positions of every chunk and of the header.
    positions = [0, 5, 13, 20, HEADER_LEN - 1]
    for c in range(4):
        start = HEADER_LEN + c * (CHUNK + TAG_LEN)
        positions += [start, start + 1, min(start + CHUNK + TAG_LEN, len(ct)) - 1]
    for pos in positions:
        for bit in (0, 7):
            damaged = bytearray(ct)
            damaged[pos] ^= 1 << bit
            with pytest.raises((CiphertextTampered, CiphertextMalformed)):
                dataformat.decrypt_bytes(bytes(damaged), key, kind=Kind.DATASET, context=CONTEXT)


def test_chunk_reordering_and_duplication_are_rejected() -> None:
    key = dataformat.new_data_key()
    ct = _encrypt(b"".join(bytes([i]) * CHUNK for i in range(3)) + b"tail", key)
    header, chunks = ct[:HEADER_LEN], _chunks(ct)
    swapped = header + chunks[1] + chunks[0] + b"".join(chunks[2:])
    duplicated = header + chunks[0] + chunks[0] + b"".join(chunks[1:])
    dropped = header + chunks[0] + b"".join(chunks[2:])
    with pytest.raises(CiphertextReordered, match="chunk 0 belongs at position 1"):
        dataformat.decrypt_bytes(swapped, key, kind=Kind.DATASET)
    with pytest.raises(CiphertextDuplicated, match="chunk 1 is a copy of chunk 0"):
        dataformat.decrypt_bytes(duplicated, key, kind=Kind.DATASET)
    with pytest.raises(CiphertextReordered, match="chunk 1 belongs at position 2"):
        dataformat.decrypt_bytes(dropped, key, kind=Kind.DATASET)


def test_truncation_at_a_chunk_boundary_is_reported_as_truncation() -> None:
    key = dataformat.new_data_key()
    ct = _encrypt(bytes(3 * CHUNK + 10), key)
    header, chunks = ct[:HEADER_LEN], _chunks(ct)
    with pytest.raises(CiphertextTruncated):
        dataformat.decrypt_bytes(header + chunks[0] + chunks[1], key, kind=Kind.DATASET)
    with pytest.raises(CiphertextTruncated):
        dataformat.decrypt_bytes(header, key, kind=Kind.DATASET)


def test_appended_data_is_rejected() -> None:
    key = dataformat.new_data_key()
    ct = _encrypt(bytes(2 * CHUNK), key)
    with pytest.raises(CiphertextTrailingData, match="follows the final chunk 1"):
        dataformat.decrypt_bytes(ct + bytes(CHUNK + TAG_LEN), key, kind=Kind.DATASET)
    with pytest.raises(CiphertextTrailingData):
        dataformat.decrypt_bytes(ct + b"x", key, kind=Kind.DATASET)


def test_wrong_key_kind_or_context_is_rejected() -> None:
    key = dataformat.new_data_key()
    ct = _encrypt(b"secret rows", key)
    with pytest.raises(CiphertextTampered):
        dataformat.decrypt_bytes(ct, dataformat.new_data_key(), kind=Kind.DATASET)
    with pytest.raises(CiphertextMalformed, match="expected a model"):
        dataformat.decrypt_bytes(ct, key, kind=Kind.MODEL)
    with pytest.raises(CiphertextMalformed, match="another context"):
        dataformat.decrypt_bytes(ct, key, kind=Kind.DATASET, context=bytes(32))


def test_garbage_is_malformed_not_a_crash() -> None:
    key = dataformat.new_data_key()
    for junk in (b"", b"STRL", b"PK\x03\x04" + bytes(100), bytes(HEADER_LEN + 40)):
        with pytest.raises(CiphertextMalformed):
            dataformat.decrypt_bytes(junk, key, kind=Kind.DATASET)


def test_streaming_encrypt_uses_one_chunk_of_memory() -> None:
    key = dataformat.new_data_key()
    src = io.BytesIO(bytes(range(256)) * 4096)  # 1 MiB
    out = io.BytesIO()
    written = dataformat.encrypt_stream(src, out, key, kind=Kind.DATASET, context=CONTEXT, chunk_size=64 * 1024)
    assert written == len(out.getvalue()) == HEADER_LEN + 16 * (64 * 1024 + TAG_LEN)  # the 16th full chunk is the final one
    back = io.BytesIO()
    dataformat.decrypt_stream(io.BytesIO(out.getvalue()), back, key, kind=Kind.DATASET)
    assert back.getvalue() == src.getvalue()


_FUZZ_KEY = bytes(range(32))
_FUZZ_PLAIN = bytes(range(256)) * 10  # 2.5 chunks
_FUZZ_CT = dataformat.encrypt_bytes(_FUZZ_PLAIN, _FUZZ_KEY, kind=Kind.DATASET, context=CONTEXT, chunk_size=CHUNK)


@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=len(_FUZZ_CT) - 1), st.integers(min_value=1, max_value=255)),
        max_size=4,
    ),
    st.integers(min_value=0, max_value=len(_FUZZ_CT) + 40),
    st.binary(max_size=40),
)
@settings(max_examples=10_000, deadline=None)
def test_fuzz_the_ciphertext_reader_damage_is_always_a_ciphertext_error(
    flips: list[tuple[int, int]], cut: int, tail: bytes
) -> None:
    damaged = bytearray(_FUZZ_CT)
    for position, mask in flips:
        damaged[position] ^= mask
    mutated = bytes(damaged[:cut]) + tail
    try:
        plain = dataformat.decrypt_bytes(mutated, _FUZZ_KEY, kind=Kind.DATASET)
    except CiphertextError:
        return
    # Only the untouched ciphertext may decrypt, and then to the original plaintext.
    assert mutated == _FUZZ_CT and plain == _FUZZ_PLAIN
