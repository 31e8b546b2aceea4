"""Sterling's exceptions: the shared hierarchy (defined by the trusted package) plus host-side errors."""

from __future__ import annotations

from typing import Any

from enclave_worker.trusted.errors import (
    CiphertextError,
    CiphertextMalformed,
    CiphertextTampered,
    CiphertextTrailingData,
    CiphertextTruncated,
    InvalidDataset,
    InvalidModelSpec,
    KeyReleaseRefused,
    KeyUnwrapFailed,
    ProtocolError,
    RunRefused,
    SchemaMismatch,
    SterlingError,
)

__all__ = [
    "AttestationRejected",
    "BlobNotFound",
    "ChainUnavailable",
    "CiphertextError",
    "CiphertextMalformed",
    "CiphertextTampered",
    "CiphertextTrailingData",
    "CiphertextTruncated",
    "ConfigError",
    "ContractReverted",
    "InvalidDataset",
    "InvalidModelSpec",
    "JobNotReady",
    "KeyReleaseRefused",
    "KeyUnwrapFailed",
    "ProtocolError",
    "RunRefused",
    "SchemaMismatch",
    "SterlingError",
]


class ConfigError(SterlingError, ValueError):
    """Configuration (brownie-config.yaml, environment) is missing or invalid."""


class ChainUnavailable(SterlingError, ConnectionError):
    """The chain could not be reached or a local node could not be started."""


class ContractReverted(SterlingError):
    """A contract call reverted; ``error`` is the custom error's name and ``args`` its values.

    Example:
        ``ContractReverted("JobMarketEpsilonPerJobExceeded", (1, 3000000, 2000000))``
    """

    def __init__(self, error: str, args: tuple[Any, ...], *, function: str = "") -> None:
        rendered = ", ".join(a.hex() if isinstance(a, bytes) else str(a) for a in args)
        where = f"{function}: " if function else ""
        super().__init__(f"{where}{error}({rendered})")
        self.error = error
        self.error_args = args
        self.function = function


class AttestationRejected(SterlingError, PermissionError):
    """Attestation evidence was refused: the message says which check failed."""


class BlobNotFound(SterlingError, KeyError):
    """No blob with that content hash is in the store."""


class JobNotReady(SterlingError):
    """A job has not reached the state an operation needs (e.g. fetching a result before settlement)."""


class ResponseRejected(SterlingError, PermissionError):
    """An inference response was refused by the client SDK: its receipt is not signed by the enclave the
    request was encrypted to, or does not match the request, the response, the listing's weights hash,
    the registry's measurement or the voucher; or the response does not decrypt."""
