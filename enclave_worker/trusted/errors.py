"""Exception hierarchy shared by every Sterling package.

The trusted enclave code defines the root so that it imports nothing from the untrusted side;
``marketplace.errors`` re-exports these and adds the host-side errors.
"""

from __future__ import annotations


class SterlingError(Exception):
    """Root of every error Sterling raises on purpose."""


class CiphertextError(SterlingError, ValueError):
    """A Sterling ciphertext could not be decrypted; the subclass says why."""


class CiphertextMalformed(CiphertextError):
    """The bytes are not a Sterling ciphertext of the expected kind (bad magic, version, header)."""


class CiphertextTampered(CiphertextError):
    """A chunk failed authentication: flipped bits, reordered or duplicated chunks, or a wrong key."""


class CiphertextReordered(CiphertextTampered):
    """A chunk authenticates, but at another position than the one it was found at."""


class CiphertextDuplicated(CiphertextTampered):
    """A chunk is a copy of an earlier chunk of the same object."""


class CiphertextTruncated(CiphertextError):
    """The stream ended before its final chunk."""


class CiphertextTrailingData(CiphertextError):
    """Bytes follow the final chunk."""


class KeyUnwrapFailed(SterlingError, ValueError):
    """An HPKE-wrapped key did not open with this key pair and binding (wrong recipient or context)."""


class InvalidDataset(SterlingError, ValueError):
    """A canonical dataset package is malformed or does not match its schema."""


class SchemaMismatch(InvalidDataset):
    """Several datasets in one job do not share one schema."""


class InvalidModelSpec(SterlingError, ValueError):
    """A model spec is not valid JSON for a registered architecture, or its hash does not match."""


class ProtocolError(SterlingError, ValueError):
    """A host<->enclave message is malformed, oversized or of an unknown kind."""


class KeyReleaseRefused(SterlingError, PermissionError):
    """The key manager refused to release a data key; the message says which check failed."""


class RunRefused(SterlingError, PermissionError):
    """A trainer enclave refused to prepare or run a job: each job gets one key and one run per claim."""
