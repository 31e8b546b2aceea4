"""The attestation verifier: nonces, evidence, key binding, and the on-chain allow-list."""

from __future__ import annotations

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enclave_worker.sim_platform import SimPlatform
from enclave_worker.trusted.roles import Role
from marketplace.errors import AttestationRejected, ContractReverted
from marketplace.localnet import LocalNet
from oracle.verifier import AttestationVerifier


def test_a_fresh_attestation_certifies_and_registers(localnet: LocalNet) -> None:
    net = localnet
    launched = net.worker.enclave
    claims, evidence = launched.attest(net.verifier.challenge())
    certificate, signature = net.verifier.certify(evidence=evidence, claims=claims, operator=net.operator.address)
    assert certificate.measurement == net.measurement
    assert certificate.signer == net.worker.signer
    assert certificate.valid_until > net.chain.now()
    net.registry.register(net.operator, certificate, signature)
    record = net.registry.enclave_of(net.worker.signer)
    assert record.operator == net.operator.address and record.encryption_key == launched.process.encryption_key


def test_a_nonce_is_single_use_and_must_be_issued(localnet: LocalNet) -> None:
    net = localnet
    nonce = net.verifier.challenge()
    claims, evidence = net.worker.enclave.attest(nonce)
    net.verifier.certify(evidence=evidence, claims=claims, operator=net.operator.address)
    with pytest.raises(AttestationRejected, match="already used"):
        net.verifier.certify(evidence=evidence, claims=claims, operator=net.operator.address)
    claims, evidence = net.worker.enclave.attest(b"\x00" * 32)
    with pytest.raises(AttestationRejected, match="not issued"):
        net.verifier.certify(evidence=evidence, claims=claims, operator=net.operator.address)


def test_evidence_from_another_platform_or_tampered_is_refused(localnet: LocalNet) -> None:
    net = localnet
    rogue = SimPlatform(Ed25519PrivateKey.generate())
    claims = net.worker.enclave.process.request("attest", nonce=net.verifier.challenge())
    with pytest.raises(AttestationRejected, match="pinned platform key"):
        net.verifier.certify(evidence=rogue.quote(net.measurement, claims["report_data"]), claims=claims, operator=net.operator.address)

    claims, evidence = net.worker.enclave.attest(net.verifier.challenge())
    outer = cbor2.loads(evidence)
    outer["body"] = outer["body"][:-1] + bytes([outer["body"][-1] ^ 1])
    with pytest.raises(AttestationRejected):
        net.verifier.certify(evidence=cbor2.dumps(outer), claims=claims, operator=net.operator.address)

    claims, evidence = net.worker.enclave.attest(net.verifier.challenge())
    swapped = dict(claims, encryption_key=b"\x42" * 32)  # a host substituting its own key
    with pytest.raises(AttestationRejected, match="does not bind"):
        net.verifier.certify(evidence=evidence, claims=swapped, operator=net.operator.address)

    for junk in (b"", b"\xff", cbor2.dumps({"body": b"x"})):
        with pytest.raises(AttestationRejected):
            net.verifier.certify(evidence=junk, claims=dict(claims, nonce=net.verifier.challenge()), operator=net.operator.address)


def test_unapproved_measurement_is_refused_and_revocation_stops_claims(fresh_localnet: LocalNet) -> None:
    net = fresh_localnet
    claims = net.worker.enclave.process.request("attest", nonce=net.verifier.challenge())
    evidence = net.platform.quote(b"\x99" * 32, claims["report_data"])  # code nobody approved
    with pytest.raises(AttestationRejected, match="not approved"):
        net.verifier.certify(evidence=evidence, claims=claims, operator=net.operator.address)

    net.registry.revoke_measurement(net.governance, Role.TRAINER, net.measurement)
    assert not net.registry.is_active(net.worker.signer, Role.TRAINER)
    claims, evidence = net.worker.enclave.attest(net.verifier.challenge())
    with pytest.raises(AttestationRejected, match="not approved"):
        net.verifier.certify(evidence=evidence, claims=claims, operator=net.operator.address)


def test_certificate_from_an_unregistered_verifier_is_rejected_on_chain(fresh_localnet: LocalNet) -> None:
    net = fresh_localnet
    impostor = AttestationVerifier(signer=net.chain.new_account(), registry=net.registry, platform_public_key=net.platform.public_key)
    claims, evidence = net.worker.enclave.attest(impostor.challenge())
    certificate, signature = impostor.certify(evidence=evidence, claims=claims, operator=net.operator.address)
    with pytest.raises(ContractReverted) as err:
        net.registry.register(net.operator, certificate, signature)
    assert err.value.error == "EnclaveRegistryUnknownVerifier"
    assert err.value.error_args == (impostor.signer.address,)
