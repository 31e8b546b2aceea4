"""The attestation verifier: nonces, evidence, key binding, and the on-chain allow-list."""

from __future__ import annotations

import hashlib

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from eth_keys import keys as eth_keys

from enclave_worker.sim_platform import SimPlatform
from enclave_worker.trusted.onchain import Role
from marketplace.errors import AttestationRejected, ContractReverted
from sterling.localnet import LocalNet
from oracle import verifier as verifier_module
from oracle.attestation import (
    NitroDocumentInvalid,
    NitroPolicy,
    nitro_measurement,
    verify_nitro_document,
)
from oracle.attestation.nitro import _verify
from oracle.verifier import AttestationVerifier
from tests.oracle.nitro_fakes import (
    BASE,
    BASE_T,
    EVERVAULT,
    EVERVAULT_T,
    FAKE_T,
    FakeChain,
    expected_output,
)


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


# ------------------------------------------------------------------------------------ aws-nitro


BASE_DOC = (BASE / "attestation.cose").read_bytes()
EVERVAULT_DOC = (EVERVAULT / "attestation.cose").read_bytes()
# The base document is 6232 s old at its T (the upstream test verified it ~1.7 h after issue), so
# tests certifying it relax the default 5-minute age limit; the chain itself still bounds it to 3 h.
BASE_POLICY = NitroPolicy(max_age_seconds=3 * 3600)


@pytest.fixture(scope="module")
def nitro_measurement_approved(localnet: LocalNet) -> bytes:
    """Governance approves the base document's PCR0-2 for trainers (harmless on the shared chain)."""
    value = nitro_measurement(verify_nitro_document(BASE_DOC, at=BASE_T).pcrs)
    localnet.registry.approve_measurement(localnet.governance, Role.TRAINER, value)
    return value


def nitro_verifier(net: LocalNet) -> AttestationVerifier:
    """A verifier with the registered verifier key and its own (empty) nonce and replay memory."""
    return AttestationVerifier(signer=net.verifier.signer, registry=net.registry)


def test_a_real_nitro_document_certifies_and_registers(localnet: LocalNet, nitro_measurement_approved: bytes) -> None:
    net = localnet
    certificate, signature = nitro_verifier(net).certify_nitro(
        BASE_DOC, role=Role.TRAINER, operator=net.operator.address, at=BASE_T, policy=BASE_POLICY
    )
    pcrs = verify_nitro_document(BASE_DOC, at=BASE_T).pcrs
    assert certificate.measurement == nitro_measurement_approved == hashlib.sha256(
        b"sterling/nitro-measurement/v1" + pcrs[0] + pcrs[1] + pcrs[2]
    ).digest()
    public_key = bytes.fromhex(expected_output(BASE)["public_key"])
    assert certificate.signer == eth_keys.PublicKey(public_key[1:]).to_checksum_address()
    assert certificate.encryption_key == bytes(32)  # user_data is null: nothing can be wrapped to it
    assert certificate.role is Role.TRAINER and certificate.operator == net.operator.address
    assert certificate.valid_until > net.chain.now()  # chain time, not the document's 2024 time
    net.registry.register(net.operator, certificate, signature)
    record = net.registry.enclave_of(certificate.signer)
    assert record.measurement == certificate.measurement and record.operator == net.operator.address


def test_a_nitro_document_is_certified_once(localnet: LocalNet, nitro_measurement_approved: bytes) -> None:
    net = localnet
    verifier = nitro_verifier(net)
    verifier.certify_nitro(BASE_DOC, role=Role.TRAINER, operator=net.operator.address, at=BASE_T, policy=BASE_POLICY)
    with pytest.raises(AttestationRejected, match="replay"):
        verifier.certify_nitro(BASE_DOC, role=Role.TRAINER, operator=net.operator.address, at=BASE_T + 60, policy=BASE_POLICY)


def test_nitro_freshness_without_a_nonce_needs_a_max_age(localnet: LocalNet, nitro_measurement_approved: bytes) -> None:
    net = localnet
    verifier = nitro_verifier(net)
    with pytest.raises(AttestationRejected, match="stale"):  # the default production policy: 5 minutes
        verifier.certify_nitro(BASE_DOC, role=Role.TRAINER, operator=net.operator.address, at=BASE_T)
    with pytest.raises(AttestationRejected, match="freshness unknown"):
        verifier.certify_nitro(BASE_DOC, role=Role.TRAINER, operator=net.operator.address, at=BASE_T, policy=NitroPolicy())
    with pytest.raises(NitroDocumentInvalid, match="certificate not valid at T"):
        verifier.certify_nitro(BASE_DOC, role=Role.TRAINER, operator=net.operator.address, policy=BASE_POLICY)  # now


def test_an_unapproved_nitro_measurement_is_refused(localnet: LocalNet) -> None:
    net = localnet
    with pytest.raises(AttestationRejected, match="not approved for role key_manager"):
        nitro_verifier(net).certify_nitro(
            BASE_DOC, role=Role.KEY_MANAGER, operator=net.operator.address, at=BASE_T, policy=BASE_POLICY
        )


def test_nitro_debug_mode_binding_and_foreign_nonces_are_refused(localnet: LocalNet, nitro_measurement_approved: bytes) -> None:
    net = localnet
    verifier = nitro_verifier(net)
    with pytest.raises(AttestationRejected, match="debug-mode"):
        verifier.certify_nitro(EVERVAULT_DOC, role=Role.TRAINER, operator=net.operator.address, at=EVERVAULT_T)
    with pytest.raises(AttestationRejected, match="not issued"):  # evervault's nonce is not one of ours
        verifier.certify_nitro(EVERVAULT_DOC, role=Role.TRAINER, operator=net.operator.address, at=EVERVAULT_T,
                               policy=NitroPolicy(allow_debug=True))
    with pytest.raises(AttestationRejected, match="user_data mismatch"):
        verifier.certify_nitro(BASE_DOC, role=Role.TRAINER, operator=net.operator.address, at=BASE_T, policy=BASE_POLICY,
                               encryption_key=b"\x42" * 32)


def test_nitro_nonce_binding_and_keys_with_a_fake_root(
    localnet: LocalNet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The nonce path and a bound X25519 key, with a self-made chain standing in for AWS's."""
    net = localnet
    chain = FakeChain()
    monkeypatch.setattr(verifier_module, "verify_nitro_document", lambda document, *, at: _verify(document, at=at, root=chain.root))
    account = net.chain.new_account()
    public_key = b"\x04" + eth_keys.PrivateKey(bytes(account.key)).public_key.to_bytes()
    encryption_key = X25519PrivateKey.generate().public_key().public_bytes_raw()
    verifier = nitro_verifier(net)
    nonce = verifier.challenge()
    document = chain.document(chain.payload(public_key=public_key, user_data=encryption_key, nonce=nonce))
    net.registry.approve_measurement(net.governance, Role.TRAINER, nitro_measurement(chain.payload()["pcrs"]))

    certificate, signature = verifier.certify_nitro(
        document, role=Role.TRAINER, operator=net.operator.address, at=FAKE_T, encryption_key=encryption_key
    )
    assert certificate.signer == account.address and certificate.encryption_key == encryption_key
    net.registry.register(net.operator, certificate, signature)
    assert net.registry.enclave_of(account.address).encryption_key == encryption_key
    with pytest.raises(AttestationRejected, match="already used"):
        verifier.certify_nitro(document, role=Role.TRAINER, operator=net.operator.address, at=FAKE_T)

    bad_key = chain.document(chain.payload(public_key=b"\x04" + b"\x01" * 64, nonce=verifier.challenge(), timestamp=FAKE_T * 1000 + 1))
    with pytest.raises(AttestationRejected, match="not a point on secp256k1"):
        verifier.certify_nitro(bad_key, role=Role.TRAINER, operator=net.operator.address, at=FAKE_T)
    short_user_data = chain.document(chain.payload(public_key=public_key, user_data=b"\x01" * 16, nonce=verifier.challenge(), timestamp=FAKE_T * 1000 + 2))
    with pytest.raises(AttestationRejected, match="32-byte X25519 key"):
        verifier.certify_nitro(short_user_data, role=Role.TRAINER, operator=net.operator.address, at=FAKE_T)


def test_sim_is_refused_when_no_platform_key_is_pinned(localnet: LocalNet) -> None:
    net = localnet
    verifier = nitro_verifier(net)
    claims, evidence = net.worker.enclave.attest(verifier.challenge())
    with pytest.raises(AttestationRejected, match="'sim' is not enabled"):
        verifier.certify(evidence=evidence, claims=claims, operator=net.operator.address)
