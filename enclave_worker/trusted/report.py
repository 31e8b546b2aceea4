"""The report data an enclave asks its platform to bind into attestation evidence."""

from __future__ import annotations

import hashlib

from .onchain import Role


def report_data(role: Role, signer: bytes, encryption_key: bytes, nonce: bytes) -> bytes:
    """``sha256("sterling/v1/report" || role || signer (20) || X25519 key (32) || nonce)``.

    A verifier recomputes it from the claimed keys and its own nonce, so evidence for one
    enclave's keys cannot be reused for another's, nor replayed against another challenge.
    """
    return hashlib.sha256(b"sterling/v1/report" + bytes([int(role)]) + signer + encryption_key + nonce).digest()
