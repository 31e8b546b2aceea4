// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// @dev Role of an enclave that trains models on decrypted data and signs result receipts.
uint8 constant ROLE_TRAINER = 1;
/// @dev Role of an enclave that holds the providers' data keys and re-wraps them for trainers.
uint8 constant ROLE_KEY_MANAGER = 2;
/// @dev Role of an enclave that serves sealed models (ModelMarket): decrypts queries, runs the model
/// and signs responses; its operator redeems the clients' vouchers.
uint8 constant ROLE_INFERENCE = 3;
/// @dev Role of an enclave that scores sealed competition submissions (CompetitionMarket) on
/// private test sets and signs score receipts.
uint8 constant ROLE_EVALUATOR = 4;

/**
 * @title IEnclaveRegistry
 * @notice Allow-list of attested enclaves. Governance approves code measurements per role; an
 * off-chain attestation verifier checks an enclave's evidence and signs an EIP-712 {Certificate}
 * that the enclave's operator submits with {register}.
 */
interface IEnclaveRegistry {
    /// @notice An attestation verifier's statement about one enclave, signed with EIP-712.
    struct Certificate {
        uint8 role; // ROLE_TRAINER, ROLE_KEY_MANAGER, ROLE_INFERENCE or ROLE_EVALUATOR
        bytes32 measurement; // hash of the enclave's trusted code and pinned dependencies
        address signer; // address of the enclave's secp256k1 signing key
        bytes32 encryptionKey; // the enclave's X25519 public key (HPKE recipient)
        address operator; // the account allowed to submit this certificate and claim jobs
        uint64 validUntil; // unix seconds; the certificate is void after this time
    }

    /// @notice A registered enclave, as returned by {enclaveOf}.
    struct Enclave {
        uint8 role;
        bytes32 measurement;
        bytes32 encryptionKey;
        address operator;
        uint64 validUntil;
        bool revoked;
    }

    /// @dev `role` is none of ROLE_TRAINER, ROLE_KEY_MANAGER, ROLE_INFERENCE, ROLE_EVALUATOR.
    error EnclaveRegistryInvalidRole(uint8 role);
    /// @dev The certificate signature recovers to `recovered`, which does not hold VERIFIER_ROLE.
    error EnclaveRegistryUnknownVerifier(address recovered);
    /// @dev `measurement` is not (or no longer) approved for `role`.
    error EnclaveRegistryMeasurementNotApproved(uint8 role, bytes32 measurement);
    /// @dev The certificate's `validUntil` is not after `currentTime`.
    error EnclaveRegistryCertificateExpired(uint64 validUntil, uint256 currentTime);
    /// @dev `sender` submitted a certificate naming `operator` as the operator.
    error EnclaveRegistryNotOperator(address sender, address operator);
    /// @dev Governance revoked the enclave `signer`; it can never register again.
    error EnclaveRegistryEnclaveRevoked(address signer);

    /// @dev Governance approved `measurement` for `role`.
    event MeasurementApproved(uint8 indexed role, bytes32 indexed measurement);
    /// @dev Governance revoked `measurement` for `role`; enclaves running it stop being active.
    event MeasurementRevoked(uint8 indexed role, bytes32 indexed measurement);
    /// @dev Governance revoked one enclave instance (`signer`), whatever its measurement.
    event EnclaveRevoked(address indexed signer);
    /// @dev An enclave was registered or its registration renewed.
    event EnclaveRegistered(
        address indexed signer,
        address indexed operator,
        uint8 indexed role,
        bytes32 measurement,
        bytes32 encryptionKey,
        uint64 validUntil
    );

    /**
     * @notice Approves `measurement` for `role`.
     * @dev Requirements: caller holds DEFAULT_ADMIN_ROLE; `role` is 1, 2, 3 or 4. Idempotent.
     * Emits {MeasurementApproved}.
     */
    function approveMeasurement(uint8 role, bytes32 measurement) external;

    /**
     * @notice Revokes `measurement` for `role`; enclaves running it immediately stop being active.
     * @dev Requirements: caller holds DEFAULT_ADMIN_ROLE; `role` is 1, 2, 3 or 4. Idempotent.
     * Emits {MeasurementRevoked}.
     */
    function revokeMeasurement(uint8 role, bytes32 measurement) external;

    /**
     * @notice Revokes the single enclave `signer` for good (e.g. its key leaked); it stops being
     * active at once and {register} refuses it afterwards.
     * @dev Requirements: caller holds DEFAULT_ADMIN_ROLE. Idempotent. Emits {EnclaveRevoked}.
     */
    function revokeEnclave(address signer) external;

    /// @notice Whether `measurement` is currently approved for `role`.
    function isMeasurementApproved(uint8 role, bytes32 measurement) external view returns (bool);

    /**
     * @notice Registers (or renews) the enclave described by `cert`.
     * @dev Requirements: `signature` is an EIP-712 signature of `cert` by an account holding
     * VERIFIER_ROLE; `cert.role` is valid; `cert.measurement` is approved for it;
     * `cert.validUntil` is in the future; the caller is `cert.operator`.
     * Emits {EnclaveRegistered}.
     */
    function register(Certificate calldata cert, bytes calldata signature) external;

    /// @notice The registration of `signer`; a zero struct if it never registered.
    function enclaveOf(address signer) external view returns (Enclave memory);

    /// @notice Whether `signer` is registered with `role`, its measurement is still approved, it
    /// was not revoked and its certificate has not expired.
    function isActive(address signer, uint8 role) external view returns (bool);

    /// @notice The operator of `signer` if it {isActive} in `role`, else the zero address (one
    /// call for the market's claim and settlement checks).
    function activeOperator(address signer, uint8 role) external view returns (address);

    /// @notice The EIP-712 digest of `cert` under this registry's domain.
    function hashCertificate(Certificate calldata cert) external view returns (bytes32);
}
