// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {
    IEnclaveRegistry,
    ROLE_TRAINER as TRAINER,
    ROLE_KEY_MANAGER as KEY_MANAGER
} from "./IEnclaveRegistry.sol";

/**
 * @title EnclaveRegistry
 * @notice On-chain allow-list of attested enclaves (see {IEnclaveRegistry}).
 * @dev Governance (DEFAULT_ADMIN_ROLE) approves measurements and grants VERIFIER_ROLE to the
 * attestation verification services whose EIP-712 certificates {register} accepts. Verifying
 * TEE evidence on-chain (P-384 COSE for Nitro) would cost tens of millions of gas, hence the
 * verifier indirection.
 */
contract EnclaveRegistry is IEnclaveRegistry, AccessControl, EIP712 {
    /// @notice Role id for enclaves that train and sign receipts.
    uint8 public constant ROLE_TRAINER = TRAINER;
    /// @notice Role id for key-manager enclaves.
    uint8 public constant ROLE_KEY_MANAGER = KEY_MANAGER;
    /// @notice AccessControl role of attestation verifiers allowed to sign certificates.
    bytes32 public constant VERIFIER_ROLE = keccak256("VERIFIER_ROLE");
    /// @notice EIP-712 type hash of {IEnclaveRegistry-Certificate}.
    bytes32 public constant CERTIFICATE_TYPEHASH = keccak256(
        "Certificate(uint8 role,bytes32 measurement,address signer,bytes32 encryptionKey,address operator,uint64 validUntil)"
    );

    /// @dev Storage form of {IEnclaveRegistry-Enclave}, packed so that {isActive} reads two slots.
    struct EnclaveRecord {
        address operator; // slot 0
        uint64 validUntil; // slot 0
        uint8 role; // slot 0
        bytes32 measurement; // slot 1
        bytes32 encryptionKey; // slot 2
    }

    mapping(address signer => EnclaveRecord) private _enclaves;
    mapping(uint8 role => mapping(bytes32 measurement => bool)) private _approved;

    /// @param governance Account receiving DEFAULT_ADMIN_ROLE (approves measurements, grants verifiers).
    constructor(address governance) EIP712("SterlingEnclaveRegistry", "1") {
        _grantRole(DEFAULT_ADMIN_ROLE, governance);
    }

    /// @inheritdoc IEnclaveRegistry
    function approveMeasurement(uint8 role, bytes32 measurement) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _checkRoleId(role);
        _approved[role][measurement] = true;
        emit MeasurementApproved(role, measurement);
    }

    /// @inheritdoc IEnclaveRegistry
    function revokeMeasurement(uint8 role, bytes32 measurement) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _checkRoleId(role);
        _approved[role][measurement] = false;
        emit MeasurementRevoked(role, measurement);
    }

    /// @inheritdoc IEnclaveRegistry
    function isMeasurementApproved(uint8 role, bytes32 measurement) external view returns (bool) {
        return _approved[role][measurement];
    }

    /// @inheritdoc IEnclaveRegistry
    function register(Certificate calldata cert, bytes calldata signature) external {
        address recovered = ECDSA.recoverCalldata(_hashCertificate(cert), signature);
        if (!hasRole(VERIFIER_ROLE, recovered)) {
            revert EnclaveRegistryUnknownVerifier(recovered);
        }
        _checkRoleId(cert.role);
        if (!_approved[cert.role][cert.measurement]) {
            revert EnclaveRegistryMeasurementNotApproved(cert.role, cert.measurement);
        }
        if (cert.validUntil <= block.timestamp) {
            revert EnclaveRegistryCertificateExpired(cert.validUntil, block.timestamp);
        }
        if (msg.sender != cert.operator) {
            revert EnclaveRegistryNotOperator(msg.sender, cert.operator);
        }

        // A newer certificate for the same signer overwrites the old one (renewal).
        _enclaves[cert.signer] = EnclaveRecord({
            operator: cert.operator,
            validUntil: cert.validUntil,
            role: cert.role,
            measurement: cert.measurement,
            encryptionKey: cert.encryptionKey
        });
        emit EnclaveRegistered(
            cert.signer, cert.operator, cert.role, cert.measurement, cert.encryptionKey, cert.validUntil
        );
    }

    /// @inheritdoc IEnclaveRegistry
    function enclaveOf(address signer) external view returns (Enclave memory) {
        EnclaveRecord storage e = _enclaves[signer];
        return Enclave({
            role: e.role,
            measurement: e.measurement,
            encryptionKey: e.encryptionKey,
            operator: e.operator,
            validUntil: e.validUntil
        });
    }

    /// @inheritdoc IEnclaveRegistry
    function isActive(address signer, uint8 role) external view returns (bool) {
        EnclaveRecord storage e = _enclaves[signer];
        // An unknown signer has role 0, which never matches a valid role nor an approval.
        return e.role == role && e.validUntil >= block.timestamp && _approved[role][e.measurement];
    }

    /// @inheritdoc IEnclaveRegistry
    function hashCertificate(Certificate calldata cert) external view returns (bytes32) {
        return _hashCertificate(cert);
    }

    /// @dev EIP-712 digest of `cert` under the "SterlingEnclaveRegistry" v1 domain.
    function _hashCertificate(Certificate calldata cert) private view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(
                abi.encode(
                    CERTIFICATE_TYPEHASH,
                    cert.role,
                    cert.measurement,
                    cert.signer,
                    cert.encryptionKey,
                    cert.operator,
                    cert.validUntil
                )
            )
        );
    }

    /// @dev Reverts with {EnclaveRegistryInvalidRole} unless `role` is a known role id.
    function _checkRoleId(uint8 role) private pure {
        if (role != TRAINER && role != KEY_MANAGER) {
            revert EnclaveRegistryInvalidRole(role);
        }
    }
}
