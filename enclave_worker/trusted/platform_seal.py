"""Sealing to the enclave's identity: data only the same code on the same platform can reopen.

The platform derives a sealing key from its secret and the enclave's measurement and hands it to
the enclave at start (SGX: ``EGETKEY`` with MRENCLAVE policy; Nitro: a KMS key whose policy names
the PCRs; simulation: :class:`enclave_worker.sim_platform.SimPlatform`). Code with another
measurement gets another key, so it cannot unseal what this code sealed; a restart of the same
code gets the same key back.

Layout: ``b"STSK" || version (1) || nonce (12) || AES-256-GCM(ciphertext || tag)`` with a label
(what the blob is) as associated data.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import SterlingError

MAGIC = b"STSK"
VERSION = 1
KEY_LEN = 32
MAX_SEALED_BYTES = 1 << 16


class SealedDataInvalid(SterlingError, ValueError):
    """A sealed blob does not open: sealed by other code or another platform, or altered."""


class NoSealingKey(SterlingError, RuntimeError):
    """The enclave was started without a sealing key, so it cannot seal or unseal."""


def seal(seal_key: bytes, plaintext: bytes, *, label: bytes) -> bytes:
    """Encrypt ``plaintext`` under the sealing key, bound to ``label``."""
    if len(seal_key) != KEY_LEN:
        raise NoSealingKey("sealing key must be 32 bytes")
    nonce = os.urandom(12)
    return MAGIC + bytes([VERSION]) + nonce + AESGCM(seal_key).encrypt(nonce, plaintext, label)


def unseal(seal_key: bytes, blob: bytes, *, label: bytes) -> bytes:
    """Open a blob made by :func:`seal` with the same key and label.

    Raises:
        SealedDataInvalid: wrong format, other measurement or platform, other label, or altered.
    """
    if len(seal_key) != KEY_LEN:
        raise NoSealingKey("sealing key must be 32 bytes")
    if len(blob) > MAX_SEALED_BYTES or len(blob) < 5 + 12 + 16 or blob[:4] != MAGIC or blob[4] != VERSION:
        raise SealedDataInvalid("not a Sterling sealed blob of version 1")
    try:
        return AESGCM(seal_key).decrypt(blob[5:17], blob[17:], label)
    except InvalidTag as e:
        raise SealedDataInvalid("sealed blob does not open: sealed by another enclave measurement or platform, or altered") from e
