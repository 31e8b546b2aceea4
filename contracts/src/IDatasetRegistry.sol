// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/**
 * @title IDatasetRegistry
 * @notice Listing of encrypted datasets with their terms and privacy budgets. Implemented by
 * {JobMarket} through the abstract {DatasetRegistry}.
 * @dev Units: ε is a uint64 fixed-point number in micro-units (EPSILON_SCALE = 1e6, ε = 1.0 is
 * 1_000_000); δ is a uint64 scaled by 1e18 (DELTA_SCALE, δ = 1e-5 is 1e13); prices in wei;
 * times in unix seconds.
 */
interface IDatasetRegistry {
    /// @notice A provider's terms for one dataset. They cannot change after listing.
    struct Terms {
        uint128 pricePerJob; // wei paid to the provider by every job that uses the dataset
        uint64 maxEpsilonPerJob; // largest ε (micro-units) one job may spend
        uint64 totalEpsilonBudget; // ε (micro-units) all jobs together may ever spend
        uint64 maxDelta; // largest δ (scaled by 1e18) one job may use
        uint64 expiry; // unix seconds after which no new job may use the dataset; 0 = never
    }

    /// @notice A dataset as returned by {dataset}.
    struct DatasetInfo {
        address provider;
        bytes32 contentHash;
        bytes32 schemaHash;
        string uri;
        Terms terms;
        uint64 epsilonSpent; // ε debited by completed (or expired after claim) jobs
        uint64 epsilonReserved; // ε held by open and claimed jobs
        bool restricted; // true when only allow-listed consumers may buy
    }

    /// @notice Why {listDataset} rejected the terms; the value of {DatasetRegistryInvalidTerms}.
    enum TermsProblem {
        ZeroContentHash, // 0: contentHash is zero
        ZeroEpsilonPerJob, // 1: maxEpsilonPerJob is zero
        EpsilonPerJobAboveBudget, // 2: maxEpsilonPerJob > totalEpsilonBudget
        ZeroDelta, // 3: maxDelta is zero
        ExpiryPassed // 4: expiry is set and not in the future
    }

    /// @dev The listing's terms are invalid for the given `reason` (a {TermsProblem}).
    error DatasetRegistryInvalidTerms(TermsProblem reason);
    /// @dev More allowed consumers (`count`) than the maximum (`max`) were given.
    error DatasetRegistryTooManyConsumers(uint256 count, uint256 max);
    /// @dev No dataset has id `datasetId`.
    error DatasetRegistryUnknownDataset(uint256 datasetId);

    /// @dev A provider listed a dataset.
    event DatasetListed(
        uint256 indexed datasetId,
        address indexed provider,
        bytes32 contentHash,
        bytes32 schemaHash,
        string uri,
        Terms terms
    );
    /// @dev `consumer` may create jobs on the restricted dataset `datasetId`.
    event ConsumerAllowed(uint256 indexed datasetId, address indexed consumer);

    /**
     * @notice Lists a dataset; the caller becomes its provider.
     * @dev Requirements: `contentHash` non-zero; 0 < `maxEpsilonPerJob` <= `totalEpsilonBudget`;
     * `maxDelta` > 0; `expiry` zero or in the future; at most MAX_ALLOWED_CONSUMERS (64) allowed
     * consumers. An empty `allowedConsumers` lets anyone buy. Ids start at 1.
     * Emits {DatasetListed} and one {ConsumerAllowed} per allowed consumer.
     * @param contentHash SHA-256 of the dataset ciphertext in the blob store.
     * @param schemaHash hash of the canonical schema (features, labels).
     * @param uri where the ciphertext can be fetched.
     * @param terms the provider's terms.
     * @param allowedConsumers the only accounts that may buy; empty for anyone.
     * @return datasetId the new dataset's id.
     */
    function listDataset(
        bytes32 contentHash,
        bytes32 schemaHash,
        string calldata uri,
        Terms calldata terms,
        address[] calldata allowedConsumers
    ) external returns (uint256 datasetId);

    /// @notice The dataset `datasetId`. Reverts with {DatasetRegistryUnknownDataset} if unknown.
    function dataset(uint256 datasetId) external view returns (DatasetInfo memory);

    /// @notice ε (micro-units) still available: total budget − spent − reserved.
    /// Reverts with {DatasetRegistryUnknownDataset} if unknown.
    function remainingEpsilon(uint256 datasetId) external view returns (uint64);

    /// @notice Whether `consumer` may create jobs using `datasetId` (false for unknown datasets).
    function isConsumerAllowed(uint256 datasetId, address consumer) external view returns (bool);

    /// @notice Number of datasets listed so far (also the latest id).
    function datasetCount() external view returns (uint256);
}
