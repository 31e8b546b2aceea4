// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/**
 * @title IDatasetRegistry
 * @notice Listing of encrypted datasets with their terms, access lists and privacy budgets.
 * Implemented by {JobMarket} through the abstract {DatasetRegistry}.
 * @dev Units: ε is a uint64 fixed-point number in micro-units (EPSILON_SCALE = 1e6, ε = 1.0 is
 * 1_000_000); δ is a uint64 scaled by 1e18 (DELTA_SCALE, δ = 1e-5 is 1e13); prices in the
 * market's payment unit (wei, or the smallest unit of its ERC-20 token); times in unix seconds.
 */
interface IDatasetRegistry {
    /// @notice A provider's terms for one dataset. The provider may change them with
    /// {updateTerms}; every job snapshots the price it pays when it is created.
    struct Terms {
        uint128 pricePerJob; // paid to the provider by every job that uses the dataset
        uint64 maxEpsilonPerJob; // largest ε (micro-units) one job may spend
        uint64 totalEpsilonBudget; // ε (micro-units) all jobs together may ever spend
        uint64 maxDelta; // largest δ (scaled by 1e18) one job may use
        uint64 expiry; // unix seconds at or after which no new job may use the dataset; 0 = never
    }

    /// @notice Whether new jobs may use a dataset. Running jobs always finish.
    enum DatasetStatus {
        Active, // 0: open for new jobs
        Paused, // 1: the provider paused it; it can be resumed
        Delisted // 2: the provider delisted it for good
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
        bool modelsRestricted; // true when only allow-listed model specs may be trained
        DatasetStatus status;
    }

    /// @notice Why terms were rejected; the value of {DatasetRegistryInvalidTerms}.
    enum TermsProblem {
        ZeroContentHash, // 0: contentHash is zero
        ZeroEpsilonPerJob, // 1: maxEpsilonPerJob is zero
        EpsilonPerJobAboveBudget, // 2: maxEpsilonPerJob > totalEpsilonBudget
        ZeroDelta, // 3: maxDelta is zero
        ExpiryPassed, // 4: expiry is set and not in the future
        BudgetBelowCommitted, // 5: totalEpsilonBudget < ε already spent + reserved
        PriceTooHigh // 6: pricePerJob >= 2^96 (jobs store prices in 96 bits)
    }

    /// @dev The terms are invalid for the given `reason` (a {TermsProblem}).
    error DatasetRegistryInvalidTerms(TermsProblem reason);
    /// @dev More entries (`count`) than the maximum (`max`) were given in one call.
    error DatasetRegistryTooManyEntries(uint256 count, uint256 max);
    /// @dev No dataset has id `datasetId`.
    error DatasetRegistryUnknownDataset(uint256 datasetId);
    /// @dev `caller` is not the provider of `datasetId`.
    error DatasetRegistryNotProvider(uint256 datasetId, address caller);
    /// @dev The dataset was delisted; it can no longer be changed.
    error DatasetRegistryDelisted(uint256 datasetId);
    /// @dev A top-up of `amount` ε is zero or would overflow the budget.
    error DatasetRegistryInvalidTopUp(uint256 datasetId, uint64 amount);

    /// @dev A provider listed a dataset.
    event DatasetListed(
        uint256 indexed datasetId,
        address indexed provider,
        bytes32 contentHash,
        bytes32 schemaHash,
        string uri,
        Terms terms
    );
    /// @dev The provider replaced the dataset's terms.
    event TermsUpdated(uint256 indexed datasetId, Terms terms);
    /// @dev The provider added `amount` ε to the budget, which is now `totalEpsilonBudget`.
    event BudgetToppedUp(uint256 indexed datasetId, uint64 amount, uint64 totalEpsilonBudget);
    /// @dev The provider paused, resumed or delisted the dataset.
    event DatasetStatusChanged(uint256 indexed datasetId, DatasetStatus status);
    /// @dev Whether consumers and model specs must be allow-listed for the dataset.
    event AccessRestricted(uint256 indexed datasetId, bool consumers, bool models);
    /// @dev `consumer` may create jobs on the dataset when consumers are restricted.
    event ConsumerAllowed(uint256 indexed datasetId, address indexed consumer);
    /// @dev `consumer` was removed from the dataset's allow-list.
    event ConsumerDisallowed(uint256 indexed datasetId, address indexed consumer);
    /// @dev Jobs with model spec `modelSpecHash` may use the dataset when models are restricted.
    event ModelAllowed(uint256 indexed datasetId, bytes32 indexed modelSpecHash);
    /// @dev `modelSpecHash` was removed from the dataset's model allow-list.
    event ModelDisallowed(uint256 indexed datasetId, bytes32 indexed modelSpecHash);
    /// @dev The provider published (or replaced) the dataset's datasheet: the SHA-256 of its
    /// canonical JSON (docs/datasheets.md); zero withdraws it.
    event DatasheetSet(uint256 indexed datasetId, bytes32 datasheetHash);

    /**
     * @notice Lists a dataset; the caller becomes its provider.
     * @dev Requirements: the market is not paused; `contentHash` non-zero; `pricePerJob` < 2^96;
     * 0 < `maxEpsilonPerJob` <= `totalEpsilonBudget`; `maxDelta` > 0; `expiry` zero or in the
     * future; at most MAX_LIST_ENTRIES (64) allowed consumers and as many allowed models. An
     * empty `allowedConsumers` lets anyone buy; an empty `allowedModels` allows any model spec.
     * Ids start at 1 and fit 32 bits (jobs store them packed).
     * Emits {DatasetListed}, {AccessRestricted} when a list is non-empty, and one
     * {ConsumerAllowed} / {ModelAllowed} per entry.
     * @param contentHash SHA-256 of the dataset ciphertext in the blob store (never changes).
     * @param schemaHash hash of the canonical schema (features, labels).
     * @param uri where the ciphertext can be fetched.
     * @param terms the provider's terms.
     * @param allowedConsumers the only accounts that may buy; empty for anyone.
     * @param allowedModels hashes of the only model specs jobs may train; empty for any.
     * @return datasetId the new dataset's id.
     */
    function listDataset(
        bytes32 contentHash,
        bytes32 schemaHash,
        string calldata uri,
        Terms calldata terms,
        address[] calldata allowedConsumers,
        bytes32[] calldata allowedModels
    ) external returns (uint256 datasetId);

    /**
     * @notice Replaces the terms of a dataset. Jobs already created keep the price they paid.
     * @dev Requirements: caller is the provider; not delisted; the terms pass the listing checks
     * and `totalEpsilonBudget` >= ε spent + reserved (lowering the budget below what is committed
     * would break the ledger). Emits {TermsUpdated}.
     */
    function updateTerms(uint256 datasetId, Terms calldata terms) external;

    /**
     * @notice Adds `amount` ε to the dataset's total budget.
     * @dev Requirements: caller is the provider; not delisted; `amount` > 0 and the budget does
     * not overflow uint64. Emits {BudgetToppedUp}.
     */
    function topUpBudget(uint256 datasetId, uint64 amount) external;

    /**
     * @notice Pauses (`paused` true) or resumes a dataset. A paused dataset accepts no new jobs;
     * jobs already created finish normally.
     * @dev Requirements: caller is the provider; not delisted. Emits {DatasetStatusChanged}.
     */
    function setDatasetPaused(uint256 datasetId, bool paused) external;

    /**
     * @notice Delists a dataset for good: no new jobs, no further changes; running jobs finish.
     * @dev Requirements: caller is the provider; not already delisted. Emits {DatasetStatusChanged}.
     */
    function delistDataset(uint256 datasetId) external;

    /**
     * @notice Sets whether only allow-listed consumers (`consumers`) and model specs (`models`)
     * may use the dataset.
     * @dev Requirements: caller is the provider; not delisted. Emits {AccessRestricted}.
     */
    function setAccessRestrictions(uint256 datasetId, bool consumers, bool models) external;

    /**
     * @notice Publishes the dataset's datasheet (title, description, tags, licence, provenance,
     * row count, what each column means): `datasheetHash` is the SHA-256 of its canonical JSON,
     * which is public and served by gateways (docs/datasheets.md). Descriptive only: the schema
     * the enclave reads (and its declared bounds) is the listing's `schemaHash`, fixed for good.
     * May be called again to correct it; zero withdraws it.
     * @dev Requirements: caller is the provider; not delisted. Emits {DatasheetSet}.
     */
    function setDatasheet(uint256 datasetId, bytes32 datasheetHash) external;

    /**
     * @notice Adds (`allowed` true) or removes accounts on the consumer allow-list. The list is
     * only enforced while consumers are restricted ({setAccessRestrictions}).
     * @dev Requirements: caller is the provider; not delisted; at most MAX_LIST_ENTRIES entries.
     * Emits {ConsumerAllowed} or {ConsumerDisallowed} per entry.
     */
    function setConsumersAllowed(uint256 datasetId, address[] calldata consumers, bool allowed) external;

    /**
     * @notice Adds (`allowed` true) or removes model-spec hashes on the model allow-list. The
     * list is only enforced while models are restricted ({setAccessRestrictions}).
     * @dev Requirements: caller is the provider; not delisted; at most MAX_LIST_ENTRIES entries.
     * Emits {ModelAllowed} or {ModelDisallowed} per entry.
     */
    function setModelsAllowed(uint256 datasetId, bytes32[] calldata modelSpecHashes, bool allowed) external;

    /// @notice The dataset `datasetId`. Reverts with {DatasetRegistryUnknownDataset} if unknown.
    function dataset(uint256 datasetId) external view returns (DatasetInfo memory);

    /// @notice ε (micro-units) still available: total budget − spent − reserved.
    /// Reverts with {DatasetRegistryUnknownDataset} if unknown.
    function remainingEpsilon(uint256 datasetId) external view returns (uint64);

    /// @notice Whether `consumer` may create jobs using `datasetId` (false for unknown datasets).
    function isConsumerAllowed(uint256 datasetId, address consumer) external view returns (bool);

    /// @notice Whether jobs training `modelSpecHash` may use `datasetId` (false for unknown datasets).
    function isModelAllowed(uint256 datasetId, bytes32 modelSpecHash) external view returns (bool);

    /// @notice Number of datasets listed so far (also the latest id).
    function datasetCount() external view returns (uint256);

    /// @notice The SHA-256 of the dataset's current datasheet (zero when it has none).
    function datasheetOf(uint256 datasetId) external view returns (bytes32);
}
