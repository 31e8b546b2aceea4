"""Sealed envelopes: an object encrypted with a fresh data key that is HPKE-wrapped to a recipient.

Layout: ``b"STRS" || version (1) || uint16 wrapped-key length || wrapped key || Sterling ciphertext``
(see :mod:`.dataformat`). Used for trained models sent to the consumer.
"""

from __future__ import annotations

import struct

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from . import dataformat, keywrap
from .errors import CiphertextMalformed

ENVELOPE_MAGIC = b"STRS"
ENVELOPE_VERSION = 1
_PREFIX = struct.Struct(">4sBH")
MAX_WRAPPED_LEN = 512


def seal(
    plaintext: bytes,
    recipient_public_key: bytes,
    *,
    info: bytes,
    kind: dataformat.Kind,
    context: bytes,
) -> bytes:
    """Encrypt ``plaintext`` so only the holder of ``recipient_public_key``'s private key opens it."""
    key = dataformat.new_data_key()
    wrapped = keywrap.wrap(key, recipient_public_key, info=info)
    body = dataformat.encrypt_bytes(plaintext, key, kind=kind, context=context)
    return _PREFIX.pack(ENVELOPE_MAGIC, ENVELOPE_VERSION, len(wrapped)) + wrapped + body


def open_sealed(
    envelope: bytes,
    private_key: X25519PrivateKey,
    *,
    info: bytes,
    kind: dataformat.Kind,
    context: bytes,
) -> bytes:
    """Open an envelope made by :func:`seal`.

    Raises:
        CiphertextMalformed: not an envelope, or bound to another context.
        KeyUnwrapFailed: not addressed to this key or this binding.
        CiphertextTampered / CiphertextTruncated / CiphertextTrailingData: body damaged.
    """
    key, body = open_key(envelope, private_key, info=info)
    return dataformat.decrypt_bytes(body, key, kind=kind, context=context)


def open_key(envelope: bytes, private_key: X25519PrivateKey, *, info: bytes) -> tuple[bytes, bytes]:
    """The data key of an envelope made by :func:`seal`, and its Sterling ciphertext (not decrypted).

    The key manager uses it for a model sealed to it for serving: it keeps the key, and the
    ciphertext is what inference enclaves decrypt.

    Raises:
        CiphertextMalformed: not an envelope.
        KeyUnwrapFailed: not addressed to this key or this binding.
    """
    if len(envelope) < _PREFIX.size:
        raise CiphertextMalformed("sealed envelope is too short")
    magic, version, wrapped_len = _PREFIX.unpack_from(envelope)
    if magic != ENVELOPE_MAGIC:
        raise CiphertextMalformed("not a Sterling sealed envelope (bad magic)")
    if version != ENVELOPE_VERSION:
        raise CiphertextMalformed(f"unsupported envelope version {version}")
    if wrapped_len > MAX_WRAPPED_LEN or len(envelope) < _PREFIX.size + wrapped_len:
        raise CiphertextMalformed("sealed envelope has an invalid wrapped-key length")
    wrapped = envelope[_PREFIX.size : _PREFIX.size + wrapped_len]
    return keywrap.unwrap(wrapped, private_key, info=info), envelope[_PREFIX.size + wrapped_len :]
