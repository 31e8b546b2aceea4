"""One interface over both evidence formats: ``verify_evidence`` and ``VerifiedEvidence``."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enclave_worker.sim_platform import SimPlatform
from marketplace.errors import AttestationRejected
from oracle.attestation import (
    ATTESTATION_FORMATS,
    NitroDocumentInvalid,
    NitroPolicy,
    NitroPolicyRefused,
    SimEvidenceRejected,
    nitro_measurement,
    verify_evidence,
    verify_nitro_document,
)
from tests.oracle.nitro_fakes import BASE, BASE_T, EVERVAULT, EVERVAULT_T

BASE_DOC = (BASE / "attestation.cose").read_bytes()
EVERVAULT_DOC = (EVERVAULT / "attestation.cose").read_bytes()


def test_formats() -> None:
    assert ATTESTATION_FORMATS == ("sim", "aws-nitro")


def test_nitro_evidence_reduces_to_the_common_shape() -> None:
    verified = verify_evidence(BASE_DOC, format="aws-nitro", at=BASE_T)
    doc = verify_nitro_document(BASE_DOC, at=BASE_T)
    assert verified.format == "aws-nitro"
    assert verified.measurement == nitro_measurement(doc.pcrs) and len(verified.measurement) == 32
    assert verified.pcrs == doc.pcrs and verified.bound_key == doc.public_key
    assert (verified.user_data, verified.nonce) == (None, None)
    assert verified.timestamp == 1732983768387 and verified.module_id == "i-0de38b2b6853cc9e8-enc0193685e7fee7d85"


def test_nitro_policy_applies_through_the_interface() -> None:
    with pytest.raises(NitroPolicyRefused, match="debug-mode"):
        verify_evidence(EVERVAULT_DOC, format="aws-nitro", at=EVERVAULT_T)
    verified = verify_evidence(EVERVAULT_DOC, format="aws-nitro", at=EVERVAULT_T, policy=NitroPolicy(allow_debug=True))
    assert verified.bound_key is None and verified.user_data is not None and len(verified.nonce or b"") == 256
    with pytest.raises(NitroDocumentInvalid, match="certificate not valid at T"):
        verify_evidence(BASE_DOC, format="aws-nitro", at=EVERVAULT_T)


def test_sim_evidence_development_only() -> None:
    platform = SimPlatform(Ed25519PrivateKey.generate())
    evidence = platform.quote(b"\x11" * 32, b"\x22" * 32)
    verified = verify_evidence(evidence, format="sim", platform_public_key=platform.public_key)
    assert verified.format == "sim" and verified.measurement == b"\x11" * 32 and verified.user_data == b"\x22" * 32
    assert verified.pcrs == {} and verified.bound_key is None and abs(verified.timestamp / 1000 - time.time()) < 60

    with pytest.raises(SimEvidenceRejected, match="pinned platform key"):
        verify_evidence(evidence, format="sim", platform_public_key=Ed25519PrivateKey.generate().public_key())
    with pytest.raises(SimEvidenceRejected, match="stale"):
        verify_evidence(evidence, format="sim", at=time.time() + 3600, policy=NitroPolicy(max_age_seconds=60),
                        platform_public_key=platform.public_key)
    with pytest.raises(AttestationRejected):  # a Nitro document is not sim evidence
        verify_evidence(BASE_DOC, format="sim", platform_public_key=platform.public_key)
    with pytest.raises(ValueError, match="platform public key"):
        verify_evidence(evidence, format="sim")


def test_unknown_format_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="unknown attestation format"):
        verify_evidence(BASE_DOC, format="sgx", at=BASE_T)  # type: ignore[arg-type]
