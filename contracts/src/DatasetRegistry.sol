// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {IDatasetRegistry} from "./IDatasetRegistry.sol";

/**
 * @title DatasetRegistry
 * @notice Datasets, their immutable terms, consumer allow-lists and privacy-budget ledgers.
 * @dev Abstract: {JobMarket} inherits it and moves the ledger (reserve, release, debit) through
 * the internal functions below, which keep `epsilonSpent + epsilonReserved <= totalEpsilonBudget`
 * for every dataset.
 */
abstract contract DatasetRegistry is IDatasetRegistry {
    /// @notice Largest allow-list accepted by {listDataset} (bounds the listing loop).
    uint256 public constant MAX_ALLOWED_CONSUMERS = 64;

    /// @dev Storage form of a dataset, packed so that creating and settling a job touch few slots.
    struct DatasetRecord {
        // slot 0: read by createJob (expiry, restricted) and settlement (provider)
        address provider;
        uint64 expiry;
        bool restricted;
        // slot 1: read by createJob
        uint128 pricePerJob;
        uint64 maxEpsilonPerJob;
        uint64 maxDelta;
        // slot 2: the privacy-budget ledger; written by createJob, settlement and expiry
        uint64 totalEpsilonBudget;
        uint64 epsilonSpent;
        uint64 epsilonReserved;
        // slots 3-5: only read by views and receipt checks
        bytes32 contentHash;
        bytes32 schemaHash;
        string uri;
    }

    mapping(uint256 datasetId => DatasetRecord) private _datasets;
    mapping(uint256 datasetId => mapping(address consumer => bool)) private _allowedConsumers;
    /// @dev uint64 so that every valid dataset id fits the job's packed storage.
    uint64 private _datasetCount;

    /// @inheritdoc IDatasetRegistry
    function listDataset(
        bytes32 contentHash,
        bytes32 schemaHash,
        string calldata uri,
        Terms calldata terms,
        address[] calldata allowedConsumers
    ) external returns (uint256 datasetId) {
        _checkTerms(contentHash, terms);
        uint256 consumerCount = allowedConsumers.length;
        if (consumerCount > MAX_ALLOWED_CONSUMERS) {
            revert DatasetRegistryTooManyConsumers(consumerCount, MAX_ALLOWED_CONSUMERS);
        }

        datasetId = ++_datasetCount; // checked: reverts rather than wrap after 2^64 - 1 listings
        DatasetRecord storage ds = _datasets[datasetId];
        ds.provider = msg.sender;
        ds.expiry = terms.expiry;
        ds.restricted = consumerCount != 0;
        ds.pricePerJob = terms.pricePerJob;
        ds.maxEpsilonPerJob = terms.maxEpsilonPerJob;
        ds.maxDelta = terms.maxDelta;
        ds.totalEpsilonBudget = terms.totalEpsilonBudget;
        ds.contentHash = contentHash;
        ds.schemaHash = schemaHash;
        ds.uri = uri;
        emit DatasetListed(datasetId, msg.sender, contentHash, schemaHash, uri, terms);

        mapping(address consumer => bool) storage allowed = _allowedConsumers[datasetId];
        for (uint256 i = 0; i < consumerCount; ++i) {
            address consumer = allowedConsumers[i];
            allowed[consumer] = true;
            emit ConsumerAllowed(datasetId, consumer);
        }
    }

    /// @inheritdoc IDatasetRegistry
    function dataset(uint256 datasetId) external view returns (DatasetInfo memory) {
        DatasetRecord storage ds = _existingDataset(datasetId);
        return DatasetInfo({
            provider: ds.provider,
            contentHash: ds.contentHash,
            schemaHash: ds.schemaHash,
            uri: ds.uri,
            terms: Terms({
                pricePerJob: ds.pricePerJob,
                maxEpsilonPerJob: ds.maxEpsilonPerJob,
                totalEpsilonBudget: ds.totalEpsilonBudget,
                maxDelta: ds.maxDelta,
                expiry: ds.expiry
            }),
            epsilonSpent: ds.epsilonSpent,
            epsilonReserved: ds.epsilonReserved,
            restricted: ds.restricted
        });
    }

    /// @inheritdoc IDatasetRegistry
    function remainingEpsilon(uint256 datasetId) external view returns (uint64) {
        return _remainingEpsilon(_existingDataset(datasetId));
    }

    /// @inheritdoc IDatasetRegistry
    function isConsumerAllowed(uint256 datasetId, address consumer) external view returns (bool) {
        if (!_datasetExists(datasetId)) {
            return false;
        }
        return _isConsumerAllowed(_datasets[datasetId], datasetId, consumer);
    }

    /// @inheritdoc IDatasetRegistry
    function datasetCount() external view returns (uint256) {
        return _datasetCount;
    }

    /// @dev Whether `datasetId` was listed. Listed ids are exactly 1.._datasetCount.
    function _datasetExists(uint256 datasetId) internal view returns (bool) {
        return datasetId != 0 && datasetId <= _datasetCount;
    }

    /// @dev The record of `datasetId` without an existence check (a zero record if unknown).
    function _datasetRecord(uint256 datasetId) internal view returns (DatasetRecord storage) {
        return _datasets[datasetId];
    }

    /// @dev Whether `consumer` may buy `ds` (which has id `datasetId`).
    function _isConsumerAllowed(DatasetRecord storage ds, uint256 datasetId, address consumer)
        internal
        view
        returns (bool)
    {
        return !ds.restricted || _allowedConsumers[datasetId][consumer];
    }

    /// @dev ε still available on `ds`.
    function _remainingEpsilon(DatasetRecord storage ds) internal view returns (uint64) {
        // unchecked: the ledger invariant spent + reserved <= total is kept by the functions below.
        unchecked {
            return ds.totalEpsilonBudget - ds.epsilonSpent - ds.epsilonReserved;
        }
    }

    /// @dev Reserves `epsilon` on `ds`; the caller has checked `epsilon <= _remainingEpsilon(ds)`.
    function _reserveEpsilon(DatasetRecord storage ds, uint64 epsilon) internal {
        // unchecked: epsilon <= total - spent - reserved, so reserved + epsilon <= total fits uint64.
        unchecked {
            ds.epsilonReserved += epsilon;
        }
    }

    /// @dev Releases an earlier reservation of `reserved` unspent.
    function _releaseEpsilon(DatasetRecord storage ds, uint64 reserved) internal {
        // unchecked: `reserved` was added by _reserveEpsilon for the same job and is removed once.
        unchecked {
            ds.epsilonReserved -= reserved;
        }
    }

    /// @dev Replaces an earlier reservation of `reserved` by `spent <= reserved` spent ε and
    /// returns the remaining budget.
    function _debitEpsilon(DatasetRecord storage ds, uint64 reserved, uint64 spent)
        internal
        returns (uint64 remaining)
    {
        // unchecked: `reserved` was added by _reserveEpsilon for the same job and is removed once;
        // spent <= reserved, so spent + reserved stays <= total and nothing overflows.
        unchecked {
            uint64 newSpent = ds.epsilonSpent + spent;
            uint64 newReserved = ds.epsilonReserved - reserved;
            ds.epsilonSpent = newSpent;
            ds.epsilonReserved = newReserved;
            remaining = ds.totalEpsilonBudget - newSpent - newReserved;
        }
    }

    /// @dev The record of `datasetId`; reverts with {DatasetRegistryUnknownDataset} if unknown.
    function _existingDataset(uint256 datasetId) private view returns (DatasetRecord storage) {
        if (!_datasetExists(datasetId)) {
            revert DatasetRegistryUnknownDataset(datasetId);
        }
        return _datasets[datasetId];
    }

    /// @dev Reverts with {DatasetRegistryInvalidTerms} on the first problem found.
    function _checkTerms(bytes32 contentHash, Terms calldata terms) private view {
        if (contentHash == bytes32(0)) {
            revert DatasetRegistryInvalidTerms(TermsProblem.ZeroContentHash);
        }
        if (terms.maxEpsilonPerJob == 0) {
            revert DatasetRegistryInvalidTerms(TermsProblem.ZeroEpsilonPerJob);
        }
        if (terms.maxEpsilonPerJob > terms.totalEpsilonBudget) {
            revert DatasetRegistryInvalidTerms(TermsProblem.EpsilonPerJobAboveBudget);
        }
        if (terms.maxDelta == 0) {
            revert DatasetRegistryInvalidTerms(TermsProblem.ZeroDelta);
        }
        if (terms.expiry != 0 && terms.expiry <= block.timestamp) {
            revert DatasetRegistryInvalidTerms(TermsProblem.ExpiryPassed);
        }
    }
}
