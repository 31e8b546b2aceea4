"""EnclaveRegistry: governance, certificates, activity."""

from __future__ import annotations

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak
from web3.logs import DISCARD

from .conftest import (
    ADMIN_DELAY,
    CERTIFICATE_TYPES,
    KEY_MANAGER_MEASUREMENT,
    ONE_YEAR,
    ROLE_KEY_MANAGER,
    ROLE_TRAINER,
    TRAINER_MEASUREMENT,
    ZERO_ADDRESS,
    Deployment,
    cert_tuple,
    certificate,
    domain,
    enclave_info,
    expect_revert,
    logged,
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
    assert reg.defaultAdmin().call() == chain.actors.governance
    assert reg.defaultAdminDelay().call() == ADMIN_DELAY
    assert reg.hasRole(reg.VERIFIER_ROLE().call(), chain.actors.verifier.address).call()


def test_registered_trainer_is_active(chain: Deployment) -> None:
    a = chain.actors
    reg = chain.registry.functions
    assert reg.isActive(a.trainer.address, ROLE_TRAINER).call()
    assert not reg.isActive(a.trainer.address, ROLE_KEY_MANAGER).call()
    assert not reg.isActive(a.other_trainer.address, ROLE_TRAINER).call()
    enclave = reg.enclaveOf(a.trainer.address).call()
    assert enclave[0] == ROLE_TRAINER and enclave[1] == TRAINER_MEASUREMENT
    assert enclave[2] == b"\x42" * 32 and enclave[3] == a.operator
    assert enclave[5] is False  # not revoked
    assert reg.enclaveOf(a.stranger).call() == (0, b"\x00" * 32, b"\x00" * 32, "0x" + "00" * 20, 0, False)
    assert reg.activeOperator(a.trainer.address, ROLE_TRAINER).call() == a.operator
    assert reg.activeOperator(a.trainer.address, ROLE_KEY_MANAGER).call() == ZERO_ADDRESS
    assert reg.activeOperator(a.stranger, ROLE_TRAINER).call() == ZERO_ADDRESS


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
    message = encode_typed_data(domain(chain.w3, chain.registry, "SterlingEnclaveRegistry"), CERTIFICATE_TYPES, cert)
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
    cert = certificate(a.other_trainer.address, a.operator, chain.now() + ONE_YEAR, role=5)  # 1-4 are roles (4: evaluator)
    signature = sign_certificate(chain, a.verifier, cert)
    expect_revert(
        lambda: transact(chain.w3, chain.registry.functions.register(cert_tuple(cert), signature), a.operator),
        "EnclaveRegistryInvalidRole",
        5,
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


def test_approve_measurement_emits_event_and_is_idempotent(chain: Deployment) -> None:
    reg = chain.registry.functions
    measurement = keccak(b"trainer v2")
    assert not reg.isMeasurementApproved(ROLE_TRAINER, measurement).call()
    for _ in range(2):
        receipt = transact(chain.w3, reg.approveMeasurement(ROLE_TRAINER, measurement), chain.actors.governance)
        assert logged(chain.registry, receipt, "MeasurementApproved") == [
            {"role": ROLE_TRAINER, "measurement": measurement}
        ]
    assert reg.isMeasurementApproved(ROLE_TRAINER, measurement).call()
    # approval is per role
    assert not reg.isMeasurementApproved(ROLE_KEY_MANAGER, measurement).call()


def test_revoke_measurement_invalid_role(chain: Deployment) -> None:
    expect_revert(
        lambda: transact(
            chain.w3, chain.registry.functions.revokeMeasurement(5, TRAINER_MEASUREMENT), chain.actors.governance
        ),
        "EnclaveRegistryInvalidRole",
        5,
    )


def test_revoke_enclave_is_permanent(chain: Deployment) -> None:
    a = chain.actors
    reg = chain.registry.functions
    receipt = transact(chain.w3, reg.revokeEnclave(a.trainer.address), a.governance)
    assert logged(chain.registry, receipt, "EnclaveRevoked") == [{"signer": a.trainer.address}]
    info = enclave_info(chain, a.trainer.address)
    assert info["revoked"] is True and info["operator"] == a.operator  # the record is kept
    assert not reg.isActive(a.trainer.address, ROLE_TRAINER).call()
    assert reg.activeOperator(a.trainer.address, ROLE_TRAINER).call() == ZERO_ADDRESS
    # a fresh, verifier-signed certificate cannot bring it back
    expect_revert(lambda: register(chain, a.trainer, a.operator), "EnclaveRegistryEnclaveRevoked", a.trainer.address)
    # idempotent
    transact(chain.w3, reg.revokeEnclave(a.trainer.address), a.governance)
    # other enclaves with the same measurement are unaffected
    register(chain, a.other_trainer, a.operator)
    assert reg.isActive(a.other_trainer.address, ROLE_TRAINER).call()


def test_revoke_unregistered_enclave_blocks_registration(chain: Deployment) -> None:
    a = chain.actors
    transact(chain.w3, chain.registry.functions.revokeEnclave(a.other_trainer.address), a.governance)
    expect_revert(
        lambda: register(chain, a.other_trainer, a.other_operator),
        "EnclaveRegistryEnclaveRevoked",
        a.other_trainer.address,
    )


def test_registration_must_be_in_the_future(chain: Deployment) -> None:
    """validUntil == now is refused at registration (the certificate must be valid after it lands)."""
    a = chain.actors
    now = chain.now()
    cert = certificate(a.other_trainer.address, a.operator, now)
    signature = sign_certificate(chain, a.verifier, cert)
    expect_revert(
        lambda: transact(chain.w3, chain.registry.functions.register(cert_tuple(cert), signature), a.operator),
        "EnclaveRegistryCertificateExpired",
        now,
        now,
    )
