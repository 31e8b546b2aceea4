"""HPKE key wrapping and sealed envelopes: bindings hold, wrong recipients and contexts fail."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from enclave_worker.trusted import dataformat, keywrap, sealing
from enclave_worker.trusted.errors import (
    CiphertextMalformed,
    CiphertextTampered,
    KeyUnwrapFailed,
)

MARKET = bytes(range(20))


def test_wrap_round_trip_and_binding() -> None:
    recipient = X25519PrivateKey.generate()
    key = dataformat.new_data_key()
    info = keywrap.release_info(31337, MARKET, 7, b"\x11" * 32)
    wrapped = keywrap.wrap(key, keywrap.public_key_bytes(recipient), info=info)
    assert keywrap.unwrap(wrapped, recipient, info=info) == key
    # Another job, chain, market or dataset: the same bytes do not open.
    for other in (
        keywrap.release_info(31337, MARKET, 8, b"\x11" * 32),
        keywrap.release_info(1, MARKET, 7, b"\x11" * 32),
        keywrap.release_info(31337, bytes(20), 7, b"\x11" * 32),
        keywrap.release_info(31337, MARKET, 7, b"\x12" * 32),
        keywrap.datakey_info(b"\x11" * 32),
    ):
        with pytest.raises(KeyUnwrapFailed):
            keywrap.unwrap(wrapped, recipient, info=other)
    with pytest.raises(KeyUnwrapFailed):
        keywrap.unwrap(wrapped, X25519PrivateKey.generate(), info=info)
    with pytest.raises(KeyUnwrapFailed):
        keywrap.unwrap(b"short", recipient, info=info)


def test_wrap_rejects_a_malformed_public_key() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        keywrap.wrap(dataformat.new_data_key(), b"\x01" * 31, info=b"x")


def test_sealed_envelope_opens_only_for_its_recipient_and_context() -> None:
    recipient = X25519PrivateKey.generate()
    info, context = keywrap.model_info(1, MARKET, 3), b"\x07" * 32
    sealed = sealing.seal(b"weights" * 1000, keywrap.public_key_bytes(recipient), info=info, kind=dataformat.Kind.MODEL, context=context)
    assert sealing.open_sealed(sealed, recipient, info=info, kind=dataformat.Kind.MODEL, context=context) == b"weights" * 1000
    with pytest.raises(KeyUnwrapFailed):
        sealing.open_sealed(sealed, X25519PrivateKey.generate(), info=info, kind=dataformat.Kind.MODEL, context=context)
    with pytest.raises(CiphertextMalformed):
        sealing.open_sealed(sealed, recipient, info=info, kind=dataformat.Kind.MODEL, context=b"\x08" * 32)
    damaged = bytearray(sealed)
    damaged[-5] ^= 0x40
    with pytest.raises(CiphertextTampered):
        sealing.open_sealed(bytes(damaged), recipient, info=info, kind=dataformat.Kind.MODEL, context=context)
    for junk in (b"", b"STRS", b"XXXX\x01\x00\x10" + bytes(100), b"STRS\x01\xff\xff"):
        with pytest.raises(CiphertextMalformed):
            sealing.open_sealed(junk, recipient, info=info, kind=dataformat.Kind.MODEL, context=context)
