"""The gateway's domain errors and the HTTP status each error family maps to."""

from __future__ import annotations

from enclave_worker.remote import NotServed, ServiceFailed, ServiceUnreachable
from enclave_worker.trusted.errors import EvaluationRefused, SubmissionRefused
from enclave_worker.trusted.receipt import DepositExists, DepositSignatureInvalid
from marketplace.errors import (
    BlobNotFound,
    ChainUnavailable,
    CiphertextError,
    ContractReverted,
    InvalidDataset,
    InvalidModelSpec,
    JobNotReady,
    KeyReleaseRefused,
    KeyUnwrapFailed,
    SterlingError,
)


class GatewayError(SterlingError):
    """Root of the errors the gateway raises for a request it refuses."""


class NotFound(GatewayError, LookupError):
    """The requested dataset, job, blob or result does not exist (yet)."""


class UploadRejected(GatewayError, ValueError):
    """An upload is not well-formed Sterling ciphertext; the message says what is wrong."""


class ContentHashMismatch(UploadRejected):
    """The uploaded bytes do not hash to the ``X-Content-SHA256`` the client announced."""


class PayloadTooLarge(GatewayError):
    """A request body exceeds the configured limit."""


class BadRequest(GatewayError, ValueError):
    """Malformed input the request models could not catch (e.g. a hex field that is not hex)."""


class NonStandardJson(GatewayError, ValueError):
    """A JSON body uses what RFC 8259 does not allow (``NaN``, ``Infinity``, a number out of range) or is not JSON."""


STATUS_OF: tuple[tuple[type[BaseException], int], ...] = (
    (NotFound, 404),
    (BlobNotFound, 404),
    (JobNotReady, 404),
    (DepositExists, 409),
    (DepositSignatureInvalid, 400),
    (SubmissionRefused, 403),
    (EvaluationRefused, 403),
    (KeyReleaseRefused, 403),
    (PayloadTooLarge, 413),
    (InvalidModelSpec, 422),
    (InvalidDataset, 422),
    (NonStandardJson, 422),
    (UploadRejected, 400),
    (CiphertextError, 400),
    (KeyUnwrapFailed, 400),
    (BadRequest, 400),
    (ContractReverted, 400),
    (NotServed, 404),
    (ChainUnavailable, 503),
    (ServiceUnreachable, 503),
    (ServiceFailed, 502),
)
"""First match wins: specific families before their bases."""


def status_of(error: BaseException) -> int:
    """The HTTP status of a domain error; any other error is the gateway's fault (500)."""
    for family, status in STATUS_OF:
        if isinstance(error, family):
            return status
    return 500
