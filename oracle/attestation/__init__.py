"""Attestation evidence verification: one interface over Sterling's two evidence formats.

* ``aws-nitro`` — AWS Nitro Enclaves attestation documents (COSE_Sign1 signed by the Nitro
  Security Module, chained to the pinned AWS Nitro Root-G1). The production format.
* ``sim`` — evidence from :class:`enclave_worker.sim_platform.SimPlatform`. **Development only**:
  it is signed by a key on the developer's own machine and proves nothing about real hardware.

Both are reduced to a :class:`VerifiedEvidence` carrying a 32-byte measurement comparable with the
on-chain allow-list (``EnclaveRegistry.isMeasurementApproved``). See ``docs/attestation.md``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal, get_args

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from enclave_worker.sim_platform import EvidenceInvalid, SimEvidence
from marketplace.errors import AttestationRejected

from .nitro import (
    AWS_NITRO_ROOT_G1_SHA256,
    MAX_DOCUMENT_BYTES,
    NitroDocument,
    NitroDocumentInvalid,
    aws_nitro_root,
    verify_nitro_document,
)
from .policy import (
    MEASUREMENT_DOMAIN,
    PRODUCTION_POLICY,
    NitroPolicy,
    NitroPolicyRefused,
    check_nitro_policy,
    is_debug_mode,
    nitro_measurement,
)

__all__ = [
    "ATTESTATION_FORMATS",
    "AWS_NITRO_ROOT_G1_SHA256",
    "MAX_DOCUMENT_BYTES",
    "MEASUREMENT_DOMAIN",
    "PRODUCTION_POLICY",
    "AttestationFormat",
    "NitroDocument",
    "NitroDocumentInvalid",
    "NitroPolicy",
    "NitroPolicyRefused",
    "SimEvidenceRejected",
    "VerifiedEvidence",
    "aws_nitro_root",
    "check_nitro_policy",
    "is_debug_mode",
    "nitro_measurement",
    "verify_evidence",
    "verify_nitro_document",
]

AttestationFormat = Literal["sim", "aws-nitro"]
ATTESTATION_FORMATS: tuple[AttestationFormat, ...] = get_args(AttestationFormat)


class SimEvidenceRejected(AttestationRejected):
    """Simulated (development-only) evidence is malformed, badly signed or too old."""


@dataclass(frozen=True)
class VerifiedEvidence:
    """Evidence of either format after verification and policy, in one shape.

    Attributes:
        format: ``"aws-nitro"`` or ``"sim"`` (development only).
        measurement: the 32-byte value the on-chain allow-list holds: :func:`nitro_measurement` of
            PCR0-2 for Nitro, :func:`enclave_worker.measurement.measure` for sim.
        pcrs: the Nitro PCRs by index; empty for sim.
        bound_key: the key the hardware bound into the evidence (Nitro ``public_key``); ``None`` for
            sim, whose keys are bound through ``user_data`` (the report data hash).
        user_data: Nitro ``user_data``; for sim the 32-byte report data
            (:func:`enclave_worker.trusted.report.report_data`).
        nonce: Nitro ``nonce``; ``None`` for sim (its nonce is inside the report data).
        timestamp: when the evidence was produced, Unix milliseconds.
        module_id: the Nitro enclave id; ``None`` for sim.
    """

    format: AttestationFormat
    measurement: bytes
    pcrs: dict[int, bytes]
    bound_key: bytes | None
    user_data: bytes | None
    nonce: bytes | None
    timestamp: int
    module_id: str | None = None


def verify_evidence(
    evidence: bytes,
    *,
    format: AttestationFormat,
    at: float | None = None,
    policy: NitroPolicy = PRODUCTION_POLICY,
    platform_public_key: Ed25519PublicKey | None = None,
) -> VerifiedEvidence:
    """Verify evidence of either format and apply ``policy``.

    Args:
        evidence: the raw evidence bytes.
        format: ``"aws-nitro"`` or ``"sim"`` (development only).
        at: verification time ``T`` in Unix seconds; ``None`` means ``time.time()``.
        policy: for Nitro, debug mode / expected PCRs / maximum age; for sim only
            ``max_age_seconds`` applies.
        platform_public_key: the pinned simulated-platform key (required for ``sim``).

    Raises:
        AttestationRejected: :class:`NitroDocumentInvalid`, :class:`NitroPolicyRefused` or
            :class:`SimEvidenceRejected`, with a one-line reason.

    Example:
        >>> v = verify_evidence(doc, format="aws-nitro", at=1732990000)
        >>> v.measurement == nitro_measurement(v.pcrs)
        True
    """
    now = time.time() if at is None else at
    if format == "aws-nitro":
        document = verify_nitro_document(evidence, at=now)
        check_nitro_policy(document, policy, at=now)
        try:
            measurement = nitro_measurement(document.pcrs)
        except ValueError as e:
            raise NitroPolicyRefused(str(e)) from e
        return VerifiedEvidence(
            format="aws-nitro",
            measurement=measurement,
            pcrs=dict(document.pcrs),
            bound_key=document.public_key,
            user_data=document.user_data,
            nonce=document.nonce,
            timestamp=document.timestamp_ms,
            module_id=document.module_id,
        )
    if format == "sim":
        return _verify_sim(evidence, at=now, policy=policy, platform_public_key=platform_public_key)
    raise ValueError(f"unknown attestation format {format!r}; expected one of {ATTESTATION_FORMATS}")


def _verify_sim(
    evidence: bytes, *, at: float, policy: NitroPolicy, platform_public_key: Ed25519PublicKey | None
) -> VerifiedEvidence:
    """Simulated evidence (development only): the pinned platform key's signature, and its age."""
    if platform_public_key is None:
        raise ValueError("sim evidence needs the pinned platform public key")
    try:
        parsed = SimEvidence.parse(evidence, platform_public_key)
    except EvidenceInvalid as e:
        raise SimEvidenceRejected(str(e)) from e
    if not isinstance(parsed.timestamp, int) or isinstance(parsed.timestamp, bool):
        raise SimEvidenceRejected("malformed sim evidence: timestamp is not an integer")
    if policy.max_age_seconds is not None and at - parsed.timestamp > policy.max_age_seconds:
        raise SimEvidenceRejected(f"sim evidence is stale: produced {at - parsed.timestamp:.0f} s before T")
    return VerifiedEvidence(
        format="sim",
        measurement=parsed.measurement,
        pcrs={},
        bound_key=None,
        user_data=parsed.report_data,
        nonce=None,
        timestamp=parsed.timestamp * 1000,
    )
