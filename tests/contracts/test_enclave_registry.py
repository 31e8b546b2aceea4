"""EnclaveRegistry: governance, certificates, activity."""

from __future__ import annotations

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak
from web3.logs import DISCARD

from .conftest import (
    CERTIFICATE_TYPES,
    KEY_MANAGER_MEASUREMENT,
    ONE_YEAR,
    ROLE_KEY_MANAGER,
    ROLE_TRAINER,
    TRAINER_MEASUREMENT,
    Deployment,
    cert_tuple,
    certificate,
    domain,
    expect_revert,
    register,
    sign_certificate,
    transact,
)


def test_constants(chain: Deployment) -> None:
    reg = chain.registry.functions
    assert reg.ROLE_TRAINER().call() == ROLE_TRAINER
    assert reg.ROLE_KEY_MANAGER().call() == ROLE_KEY_MANAGER
    assert reg.VERIFIER_ROLE().call() == keccak(b"VERIFIER_ROLE")
    assert reg.CERTIFICATE_TYPEHASH().call() == keccak(
        b"Certificate(uint8 role,bytes32 measurement,address signer,bytes32 encryptionKey,"
        b"address operator,uint64 validUntil)"
    )


def test_registered_trainer_is_active(chain: Deployment) -> None:
    a = chain.actors
    reg = chain.registry.functions
    assert reg.isActive(a.trainer.address, ROLE_TRAINER).call()
    assert not reg.isActive(a.trainer.address, ROLE_KEY_MANAGER).call()
    assert not reg.isActive(a.other_trainer.address, ROLE_TRAINER).call()
    enclave = reg.enclaveOf(a.trainer.address).call()
    assert enclave[0] == ROLE_TRAINER and enclave[1] == TRAINER_MEASUREMENT
    assert enclave[2] == b"\x42" * 32 and enclave[3] == a.operator
    assert reg.enclaveOf(a.stranger).call() == (0, b"\x00" * 32, b"\x00" * 32, "0x" + "00" * 20, 0)


def test_register_emits_event_and_renewal_overwrites(chain: Deployment) -> None:
    a = chain.actors
    valid_until = chain.now() + 2 * ONE_YEAR
    receipt = register(chain, a.trainer, a.operator, valid_until=valid_until, encryption_key=b"\x07" * 32)
    (event,) = chain.registry.events.EnclaveRegistered().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["signer"] == a.trainer.address
    assert event["args"]["operator"] == a.operator
    assert event["args"]["role"] == ROLE_TRAINER
    assert event["args"]["validUntil"] == valid_until
    enclave = chain.registry.functions.enclaveOf(a.trainer.address).call()
    assert enclave[2] == b"\x07" * 32 and enclave[4] == valid_until


def test_hash_certificate_matches_eip712(chain: Deployment) -> None:
    a = chain.actors
    cert = certificate(a.trainer.address, a.operator, 12345)
    message = encode_typed_data(
        domain(chain.w3, chain.registry, "SterlingEnclaveRegistry"), CERTIFICATE_TYPES, cert
    )
    expected = keccak(b"\x19" + message.version + message.header + message.body)
    assert chain.registry.functions.hashCertificate(cert_tuple(cert)).call() == expected


def test_register_key_manager(chain: Deployment) -> None:
    a = chain.actors
    register(chain, a.key_manager, a.other_operator, role=ROLE_KEY_MANAGER, measurement=KEY_MANAGER_MEASUREMENT)
    assert chain.registry.functions.isActive(a.key_manager.address, ROLE_KEY_MANAGER).call()


def test_register_unknown_verifier(chain: Deployment) -> None:
    a = chain.actors
    cert = certificate(a.other_trainer.address, a.operator, chain.now() + ONE_YEAR)
    signature = sign_certificate(chain, a.other_trainer, cert)
    expect_revert(
        lambda: transact(chain.w3, chain.registry.functions.register(cert_tuple(cert), signature), a.operator),
        "EnclaveRegistryUnknownVerifier",
        a.other_trainer.address,
    )


def test_register_invalid_role(chain: Deployment) -> None:
    a = chain.actors
    cert = certificate(a.other_trainer.address, a.operator, chain.now() + ONE_YEAR, role=3)
    signature = sign_certificate(chain, a.verifier, cert)
    expect_revert(
        lambda: transact(chain.w3, chain.registry.functions.register(cert_tuple(cert), signature), a.operator),
        "EnclaveRegistryInvalidRole",
        3,
    )


def test_register_measurement_not_approved(chain: Deployment) -> None:
    a = chain.actors
    bad = keccak(b"tampered trainer")
    cert = certificate(a.other_trainer.address, a.operator, chain.now() + ONE_YEAR, measurement=bad)
    signature = sign_certificate(chain, a.verifier, cert)
    expect_revert(
        lambda: transact(chain.w3, chain.registry.functions.register(cert_tuple(cert), signature), a.operator),
        "EnclaveRegistryMeasurementNotApproved",
        ROLE_TRAINER,
        bad,
    )


def test_register_expired_certificate(chain: Deployment) -> None:
    a = chain.actors
    valid_until = chain.now() - 1
    cert = certificate(a.other_trainer.address, a.operator, valid_until)
    signature = sign_certificate(chain, a.verifier, cert)
    call = chain.registry.functions.register(cert_tuple(cert), signature)
    chain.travel_to(chain.now() + 10)
    now = chain.now()
    expect_revert(
        lambda: transact(chain.w3, call, a.operator),
        "EnclaveRegistryCertificateExpired",
        valid_until,
        now,
    )


def test_register_not_operator(chain: Deployment) -> None:
    a = chain.actors
    cert = certificate(a.other_trainer.address, a.operator, chain.now() + ONE_YEAR)
    signature = sign_certificate(chain, a.verifier, cert)
    expect_revert(
        lambda: transact(chain.w3, chain.registry.functions.register(cert_tuple(cert), signature), a.stranger),
        "EnclaveRegistryNotOperator",
        a.stranger,
        a.operator,
    )


def test_revoked_measurement_deactivates(chain: Deployment) -> None:
    a = chain.actors
    receipt = transact(
        chain.w3, chain.registry.functions.revokeMeasurement(ROLE_TRAINER, TRAINER_MEASUREMENT), a.governance
    )
    (event,) = chain.registry.events.MeasurementRevoked().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["measurement"] == TRAINER_MEASUREMENT
    assert not chain.registry.functions.isMeasurementApproved(ROLE_TRAINER, TRAINER_MEASUREMENT).call()
    assert not chain.registry.functions.isActive(a.trainer.address, ROLE_TRAINER).call()


def test_certificate_expiry_deactivates(chain: Deployment) -> None:
    a = chain.actors
    valid_until = chain.now() + 100
    register(chain, a.other_trainer, a.operator, valid_until=valid_until)
    chain.travel_to(valid_until)
    # isActive is inclusive of validUntil; one second later the enclave is inactive.
    transact(chain.w3, chain.registry.functions.approveMeasurement(ROLE_TRAINER, TRAINER_MEASUREMENT), a.governance)
    assert chain.registry.functions.isActive(a.other_trainer.address, ROLE_TRAINER).call()
    chain.travel_to(valid_until + 2)
    transact(chain.w3, chain.registry.functions.approveMeasurement(ROLE_TRAINER, TRAINER_MEASUREMENT), a.governance)
    assert not chain.registry.functions.isActive(a.other_trainer.address, ROLE_TRAINER).call()


def test_approve_invalid_role(chain: Deployment) -> None:
    expect_revert(
        lambda: transact(
            chain.w3, chain.registry.functions.approveMeasurement(0, TRAINER_MEASUREMENT), chain.actors.governance
        ),
        "EnclaveRegistryInvalidRole",
        0,
    )


def test_governance_functions_refuse_strangers(chain: Deployment) -> None:
    a = chain.actors
    reg = chain.registry.functions
    admin = reg.DEFAULT_ADMIN_ROLE().call()
    for call in (
        reg.approveMeasurement(ROLE_TRAINER, keccak(b"x")),
        reg.revokeMeasurement(ROLE_TRAINER, TRAINER_MEASUREMENT),
        reg.grantRole(reg.VERIFIER_ROLE().call(), a.stranger),
    ):
        expect_revert(
            lambda call=call: transact(chain.w3, call, a.stranger),
            "AccessControlUnauthorizedAccount",
            a.stranger,
            admin,
        )


def test_revoked_verifier_cannot_certify(chain: Deployment) -> None:
    a = chain.actors
    reg = chain.registry.functions
    transact(chain.w3, reg.revokeRole(reg.VERIFIER_ROLE().call(), a.verifier.address), a.governance)
    cert = certificate(Account.create().address, a.operator, chain.now() + ONE_YEAR)
    signature = sign_certificate(chain, a.verifier, cert)
    expect_revert(
        lambda: transact(chain.w3, reg.register(cert_tuple(cert), signature), a.operator),
        "EnclaveRegistryUnknownVerifier",
        a.verifier.address,
    )
