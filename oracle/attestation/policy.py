"""What Sterling accepts from a verified AWS Nitro document: pure functions, no state, no crypto.

:func:`~oracle.attestation.nitro.verify_nitro_document` establishes that AWS hardware signed a
document; this module decides whether its contents are acceptable (production mode, expected
PCRs, age). The 32-byte measurement Sterling's contracts store, :func:`nitro_measurement`, is
defined next to the document in :mod:`oracle.attestation.nitro` and re-exported here. Single-use
nonces and replay memory are state and live with the verifier service (:mod:`oracle.verifier`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from marketplace.errors import AttestationRejected

from .nitro import MEASURED_PCRS, MEASUREMENT_DOMAIN, NitroDocument, nitro_measurement

__all__ = [
    "MEASUREMENT_DOMAIN",
    "PRODUCTION_POLICY",
    "NitroPolicy",
    "NitroPolicyRefused",
    "check_nitro_policy",
    "is_debug_mode",
    "nitro_measurement",
]

FUTURE_SKEW_SECONDS = 60
"""How far a document's timestamp may be ahead of ``T`` (clock skew between the NSM and us)."""


class NitroPolicyRefused(AttestationRejected):
    """A correctly signed Nitro document whose contents the policy does not accept."""


@dataclass(frozen=True)
class NitroPolicy:
    """What a verified Nitro document must show to be accepted.

    Attributes:
        allow_debug: accept debug-mode enclaves (PCR0-2 all zero: the parent instance can read the
            enclave's memory). Never in production.
        expected_pcrs: PCR values that must match exactly, by index (e.g. ``{0: image, 8: signer}``).
        max_age_seconds: refuse documents whose timestamp is more than this many seconds before ``T``.
    """

    allow_debug: bool = False
    expected_pcrs: Mapping[int, bytes] | None = None
    max_age_seconds: int | None = None


PRODUCTION_POLICY = NitroPolicy()
"""No debug mode; PCRs are judged by the on-chain allow-list of :func:`nitro_measurement`."""


def is_debug_mode(pcrs: Mapping[int, bytes]) -> bool:
    """True if any of PCR0-2 is absent or all zero, as the NSM reports for debug-mode enclaves."""
    return any(not any(pcrs.get(i, b"")) for i in MEASURED_PCRS)


def check_nitro_policy(document: NitroDocument, policy: NitroPolicy, *, at: float) -> None:
    """Accept ``document`` under ``policy`` at time ``at`` (Unix seconds) or raise.

    Checks, in order: debug mode, expected PCRs, age.

    Raises:
        NitroPolicyRefused: one-line reason, e.g. ``measurement mismatch: PCR0 is ec74bf..., expected 0000...``.
    """
    if not policy.allow_debug and is_debug_mode(document.pcrs):
        raise NitroPolicyRefused("debug-mode enclave refused: PCR0-2 are all zero (production policy)")
    for index, expected in sorted((policy.expected_pcrs or {}).items()):
        actual = document.pcrs.get(index)
        if actual != expected:
            shown = actual.hex() if actual is not None else "absent"
            raise NitroPolicyRefused(f"measurement mismatch: PCR{index} is {shown}, expected {expected.hex()}")
    if policy.max_age_seconds is not None:
        age_ms = round(at * 1000) - document.timestamp_ms
        if age_ms > policy.max_age_seconds * 1000:
            raise NitroPolicyRefused(
                f"document is stale: produced {age_ms / 1000:.0f} s before T, limit {policy.max_age_seconds} s"
            )
        if age_ms < -FUTURE_SKEW_SECONDS * 1000:
            raise NitroPolicyRefused(f"document timestamp is {-age_ms / 1000:.0f} s after T")
