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


class MalformedSafetensors(SterlingError, ValueError):
    """Bytes that are not a safetensors file with a ``__metadata__`` map in its header."""


class InvalidDataset(SterlingError, ValueError):
    """A canonical dataset package is malformed or does not match its schema."""


class SchemaMismatch(InvalidDataset):
    """Several datasets in one job do not share one schema."""


class InvalidModelSpec(SterlingError, ValueError):
    """A model spec is not valid JSON for a registered architecture, or its hash does not match."""


class MemoryBudgetExceeded(SterlingError, MemoryError):
    """A job cannot fit the trainer enclave's memory budget; refused before any data key is opened."""


class ProtocolError(SterlingError, ValueError):
    """A host<->enclave message is malformed, oversized or of an unknown kind."""


class KeyReleaseRefused(SterlingError, PermissionError):
    """The key manager refused to release a data key; the message says which check failed."""


class RunRefused(SterlingError, PermissionError):
    """A trainer enclave refused to prepare or run a job: each job gets one key and one run per claim."""


class ModelReleaseRefused(KeyReleaseRefused):
    """The key manager refused to deposit or release a served model's key; the message says which check failed."""


class ModelLoadFailed(SterlingError, ValueError):
    """An inference enclave could not load a released model: its ciphertext, weights or spec do not match the listing."""


class ModelNotLoaded(SterlingError, LookupError):
    """An inference request names a model this enclave has not loaded (or has evicted): load it first."""


class EnvelopeMalformed(SterlingError, ValueError):
    """A request envelope's clear header is not one this enclave reads (magic, version, lengths)."""


class RequestTampered(CiphertextTampered):
    """A request envelope's ciphertext does not open for this enclave under its header, or its rows do not
    match the header's row count: altered, swapped header fields, or sent to another enclave's key."""


class InferenceRefused(SterlingError, PermissionError):
    """The inference enclave refused a request; nothing was served or charged. The subclass says why."""


class WrongModel(InferenceRefused):
    """The voucher is for another model than the request, or the request for another model than the batch."""


class WrongEnclave(InferenceRefused):
    """The voucher names another inference enclave: only that enclave's operator could redeem it."""


class ClientNotAllowed(InferenceRefused):
    """The model is restricted and the client is not on its allow-list."""


class VoucherRefused(InferenceRefused):
    """The voucher does not pay for the request under the channel rule (docs/inference.md)."""


class VoucherStale(VoucherRefused):
    """The voucher's query total is not exactly the channel's mark plus the request's rows: a replayed,
    stale or skipped-ahead voucher."""


class VoucherUnderpaid(VoucherRefused):
    """The voucher's amount does not raise the channel's total by the request's rows times the price."""


class VoucherOverDeposit(VoucherRefused):
    """The voucher's amount exceeds what the client deposited on the channel: it could not be redeemed."""


class QueryCapExceeded(VoucherRefused):
    """The voucher's query total exceeds the model's per-client query cap (its extraction budget)."""


class SubmissionRefused(SterlingError, PermissionError):
    """The key manager refused to admit a sealed model to a competition (its rules, its window or its signature)."""


class EvaluationRefused(SterlingError, PermissionError):
    """The evaluator enclave refused to score a submission (a second scoring against another state, a mismatch)."""
