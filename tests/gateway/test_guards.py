"""The pure request guards: JSON nesting depth and ciphertext framing, fed in arbitrary pieces."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from enclave_worker.trusted import dataformat
from sterling.gateway.errors import UploadRejected
from sterling.gateway.limits import JsonDepthScanner, NestedTooDeeply
from sterling.gateway.upload import CiphertextCheck

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab', max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(alphabet='[]{}"\\ab', max_size=4), inner, max_size=3),
    max_leaves=30,
)


def depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


@given(value=json_values, cut=st.integers(min_value=0, max_value=200), limit=st.integers(min_value=0, max_value=6))
def test_depth_scanner_agrees_with_the_parsed_depth_whatever_the_chunking(value: object, cut: int, limit: int) -> None:
    text = json.dumps(value).encode()
    scanner = JsonDepthScanner(limit)
    try:
        for piece in (text[:cut], text[cut:]):
            scanner.feed(piece)
    except NestedTooDeeply:
        assert depth(value) > limit
    else:
        assert depth(value) <= limit


def test_ciphertext_check_reads_the_header_across_tiny_pieces() -> None:
    body = dataformat.encrypt_bytes(b"x" * 5000, dataformat.new_data_key(), kind=dataformat.Kind.DATASET, context=bytes(32), chunk_size=1024)
    check = CiphertextCheck()
    for i in range(len(body)):
        check.feed(body[i : i + 1])
    layout = check.finish()
    assert (layout.format, layout.chunk_size, layout.chunks, layout.header_end) == ("STRL", 1024, 5, dataformat.HEADER_LEN)
    early = CiphertextCheck()
    with pytest.raises(UploadRejected, match="expected magic"):
        for i in range(len(body)):
            early.feed(b"PK\x03\x04"[i : i + 1] if i < 4 else body[i : i + 1])
    assert early.size == 4  # refused as soon as the magic could be read
