// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {AccessControlDefaultAdminRules} from
    "@openzeppelin/contracts/access/extensions/AccessControlDefaultAdminRules.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {
    IEnclaveRegistry,
    ROLE_TRAINER as TRAINER,
    ROLE_KEY_MANAGER as KEY_MANAGER,
    ROLE_INFERENCE as INFERENCE,
    ROLE_EVALUATOR as EVALUATOR
} from "./IEnclaveRegistry.sol";

/**
 * @title EnclaveRegistry
 * @notice On-chain allow-list of attested enclaves (see {IEnclaveRegistry}).
 * @dev Governance (DEFAULT_ADMIN_ROLE) approves and revokes measurements, revokes single enclaves
 * and grants VERIFIER_ROLE to the attestation verification services whose EIP-712 certificates
 * {register} accepts. Governance hands over in two steps with a delay
 * ({AccessControlDefaultAdminRules}: beginDefaultAdminTransfer, then acceptDefaultAdminTransfer
 * by the new admin once the delay has passed). Verifying
 * TEE evidence on-chain (P-384 COSE for Nitro) would cost tens of millions of gas, hence the
 * verifier indirection.
 */
contract EnclaveRegistry is IEnclaveRegistry, AccessControlDefaultAdminRules, EIP712 {
    /// @notice Role id for enclaves that train and sign receipts.
    uint8 public constant ROLE_TRAINER = TRAINER;
    /// @notice Role id for key-manager enclaves.
    uint8 public constant ROLE_KEY_MANAGER = KEY_MANAGER;
    /// @notice Role id for inference enclaves serving sealed models (ModelMarket).
    uint8 public constant ROLE_INFERENCE = INFERENCE;
    /// @notice Role id for evaluator enclaves scoring competition submissions (CompetitionMarket).
    uint8 public constant ROLE_EVALUATOR = EVALUATOR;
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
        bool revoked; // slot 0
        bytes32 measurement; // slot 1
        bytes32 encryptionKey; // slot 2
    }

    mapping(address signer => EnclaveRecord) private _enclaves;
    mapping(uint8 role => mapping(bytes32 measurement => bool)) private _approved;

    /// @param adminDelay Seconds a governance handover must wait before the new admin accepts.
    /// @param governance Account receiving DEFAULT_ADMIN_ROLE (approves measurements, grants verifiers).
    constructor(uint48 adminDelay, address governance)
        AccessControlDefaultAdminRules(adminDelay, governance)
        EIP712("SterlingEnclaveRegistry", "1")
    {}

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
    function revokeEnclave(address signer) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _enclaves[signer].revoked = true;
        emit EnclaveRevoked(signer);
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
        if (_enclaves[cert.signer].revoked) {
            revert EnclaveRegistryEnclaveRevoked(cert.signer);
        }

        // A newer certificate for the same signer overwrites the old one (renewal).
        _enclaves[cert.signer] = EnclaveRecord({
            operator: cert.operator,
            validUntil: cert.validUntil,
            role: cert.role,
            revoked: false,
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
            validUntil: e.validUntil,
            revoked: e.revoked
        });
    }

    /// @inheritdoc IEnclaveRegistry
    function isActive(address signer, uint8 role) external view returns (bool) {
        return _activeOperator(signer, role) != address(0);
    }

    /// @inheritdoc IEnclaveRegistry
    function activeOperator(address signer, uint8 role) external view returns (address) {
        return _activeOperator(signer, role);
    }

    /// @dev The operator of `signer` if it is active in `role`, else zero. An unknown signer has
    /// role 0, which never matches a valid role nor an approval; registered operators are never
    /// zero (register requires msg.sender == operator).
    function _activeOperator(address signer, uint8 role) private view returns (address) {
        EnclaveRecord storage e = _enclaves[signer];
        if (e.role != role || e.revoked || e.validUntil < block.timestamp || !_approved[role][e.measurement]) {
            return address(0);
        }
        return e.operator;
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
        if (role != TRAINER && role != KEY_MANAGER && role != INFERENCE && role != EVALUATOR) {
            revert EnclaveRegistryInvalidRole(role);
        }
    }
}
