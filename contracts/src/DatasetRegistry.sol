// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {IDatasetRegistry} from "./IDatasetRegistry.sol";

/**
 * @title DatasetRegistry
 * @notice Datasets, their terms, consumer and model allow-lists and privacy-budget ledgers.
 * @dev Abstract: {JobMarket} inherits it and moves the ledger (reserve, release, debit) through
 * the internal functions below, which keep `epsilonSpent + epsilonReserved <= totalEpsilonBudget`
 * for every dataset. The market-wide emergency pause ({Pausable}) stops new listings.
 */
abstract contract DatasetRegistry is IDatasetRegistry, Pausable {
    /// @notice Largest allow-list change accepted in one call (bounds the loops).
    uint256 public constant MAX_LIST_ENTRIES = 64;

    /// @dev Storage form of a dataset, packed so that creating and settling a job touch few slots.
    struct DatasetRecord {
        // slot 0: read by createJob (expiry, flags, status) and settlement (provider)
        address provider;
        uint64 expiry;
        bool restricted;
        bool modelsRestricted;
        DatasetStatus status;
        // slot 1: read by createJob
        uint128 pricePerJob;
        uint64 maxEpsilonPerJob;
        uint64 maxDelta;
        // slot 2: the privacy-budget ledger; written by createJob, settlement, expiry, cancel
        uint64 totalEpsilonBudget;
        uint64 epsilonSpent;
        uint64 epsilonReserved;
        // slots 3-5: only read by views and receipt checks; never change after listing
        bytes32 contentHash;
        bytes32 schemaHash;
        string uri;
    }

    mapping(uint256 datasetId => DatasetRecord) private _datasets;
    mapping(uint256 datasetId => mapping(address consumer => bool)) private _allowedConsumers;
    mapping(uint256 datasetId => mapping(bytes32 modelSpecHash => bool)) private _allowedModels;
    mapping(uint256 datasetId => bytes32 datasheetHash) private _datasheets;
    /// @dev uint32 so that every valid dataset id fits the job's packed storage (the checked
    /// increment reverts after 2^32 - 1 listings).
    uint32 private _datasetCount;

    /// @dev Reverts unless the caller is the provider of the existing, not delisted `datasetId`.
    modifier onlyProvider(uint256 datasetId) {
        _checkProvider(datasetId);
        _;
    }

    /// @inheritdoc IDatasetRegistry
    function listDataset(
        bytes32 contentHash,
        bytes32 schemaHash,
        string calldata uri,
        Terms calldata terms,
        address[] calldata allowedConsumers,
        bytes32[] calldata allowedModels
    ) external whenNotPaused returns (uint256 datasetId) {
        if (contentHash == bytes32(0)) {
            revert DatasetRegistryInvalidTerms(TermsProblem.ZeroContentHash);
        }
        _checkTerms(terms);
        _checkEntryCount(allowedConsumers.length);
        _checkEntryCount(allowedModels.length);

        datasetId = ++_datasetCount; // checked: reverts rather than wrap after 2^32 - 1 listings
        DatasetRecord storage ds = _datasets[datasetId];
        ds.provider = msg.sender;
        ds.contentHash = contentHash;
        ds.schemaHash = schemaHash;
        ds.uri = uri;
        _storeTerms(ds, terms);
        emit DatasetListed(datasetId, msg.sender, contentHash, schemaHash, uri, terms);

        bool consumers = allowedConsumers.length != 0;
        bool models = allowedModels.length != 0;
        if (consumers || models) {
            ds.restricted = consumers;
            ds.modelsRestricted = models;
            emit AccessRestricted(datasetId, consumers, models);
            _setConsumers(datasetId, allowedConsumers, true);
            _setModels(datasetId, allowedModels, true);
        }
    }

    /// @inheritdoc IDatasetRegistry
    function updateTerms(uint256 datasetId, Terms calldata terms) external onlyProvider(datasetId) {
        _checkTerms(terms);
        DatasetRecord storage ds = _datasets[datasetId];
        // checked: spent + reserved <= total <= type(uint64).max
        if (terms.totalEpsilonBudget < ds.epsilonSpent + ds.epsilonReserved) {
            revert DatasetRegistryInvalidTerms(TermsProblem.BudgetBelowCommitted);
        }
        _storeTerms(ds, terms);
        emit TermsUpdated(datasetId, terms);
    }

    /// @inheritdoc IDatasetRegistry
    function topUpBudget(uint256 datasetId, uint64 amount) external onlyProvider(datasetId) {
        DatasetRecord storage ds = _datasets[datasetId];
        uint256 total = uint256(ds.totalEpsilonBudget) + amount;
        if (amount == 0 || total > type(uint64).max) {
            revert DatasetRegistryInvalidTopUp(datasetId, amount);
        }
        ds.totalEpsilonBudget = uint64(total);
        emit BudgetToppedUp(datasetId, amount, uint64(total));
    }

    /// @inheritdoc IDatasetRegistry
    function setDatasetPaused(uint256 datasetId, bool paused) external onlyProvider(datasetId) {
        DatasetStatus status = paused ? DatasetStatus.Paused : DatasetStatus.Active;
        _datasets[datasetId].status = status;
        emit DatasetStatusChanged(datasetId, status);
    }

    /// @inheritdoc IDatasetRegistry
    function delistDataset(uint256 datasetId) external onlyProvider(datasetId) {
        _datasets[datasetId].status = DatasetStatus.Delisted;
        emit DatasetStatusChanged(datasetId, DatasetStatus.Delisted);
    }

    /// @inheritdoc IDatasetRegistry
    function setAccessRestrictions(uint256 datasetId, bool consumers, bool models)
        external
        onlyProvider(datasetId)
    {
        DatasetRecord storage ds = _datasets[datasetId];
        ds.restricted = consumers;
        ds.modelsRestricted = models;
        emit AccessRestricted(datasetId, consumers, models);
    }

    /// @inheritdoc IDatasetRegistry
    function setDatasheet(uint256 datasetId, bytes32 datasheetHash) external onlyProvider(datasetId) {
        _datasheets[datasetId] = datasheetHash;
        emit DatasheetSet(datasetId, datasheetHash);
    }

    /// @inheritdoc IDatasetRegistry
    function setConsumersAllowed(uint256 datasetId, address[] calldata consumers, bool allowed)
        external
        onlyProvider(datasetId)
    {
        _checkEntryCount(consumers.length);
        _setConsumers(datasetId, consumers, allowed);
    }

    /// @inheritdoc IDatasetRegistry
    function setModelsAllowed(uint256 datasetId, bytes32[] calldata modelSpecHashes, bool allowed)
        external
        onlyProvider(datasetId)
    {
        _checkEntryCount(modelSpecHashes.length);
        _setModels(datasetId, modelSpecHashes, allowed);
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
            restricted: ds.restricted,
            modelsRestricted: ds.modelsRestricted,
            status: ds.status
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
    function isModelAllowed(uint256 datasetId, bytes32 modelSpecHash) external view returns (bool) {
        if (!_datasetExists(datasetId)) {
            return false;
        }
        return _isModelAllowed(_datasets[datasetId], datasetId, modelSpecHash);
    }

    /// @inheritdoc IDatasetRegistry
    function datasheetOf(uint256 datasetId) external view returns (bytes32) {
        _existingDataset(datasetId);
        return _datasheets[datasetId];
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

    /// @dev Whether jobs training `modelSpecHash` may use `ds` (which has id `datasetId`).
    function _isModelAllowed(DatasetRecord storage ds, uint256 datasetId, bytes32 modelSpecHash)
        internal
        view
        returns (bool)
    {
        return !ds.modelsRestricted || _allowedModels[datasetId][modelSpecHash];
    }

    /// @dev ε still available on `ds`.
    function _remainingEpsilon(DatasetRecord storage ds) internal view returns (uint64) {
        // unchecked: the ledger invariant spent + reserved <= total is kept by the functions below
        // and by updateTerms, which never lowers the total below spent + reserved.
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

    /// @dev The checks of {onlyProvider}.
    function _checkProvider(uint256 datasetId) private view {
        DatasetRecord storage ds = _existingDataset(datasetId);
        if (ds.provider != msg.sender) {
            revert DatasetRegistryNotProvider(datasetId, msg.sender);
        }
        if (ds.status == DatasetStatus.Delisted) {
            revert DatasetRegistryDelisted(datasetId);
        }
    }

    /// @dev Writes the terms into slots 0-2 of `ds` (the ledger's spent/reserved are untouched).
    function _storeTerms(DatasetRecord storage ds, Terms calldata terms) private {
        ds.expiry = terms.expiry;
        ds.pricePerJob = terms.pricePerJob;
        ds.maxEpsilonPerJob = terms.maxEpsilonPerJob;
        ds.maxDelta = terms.maxDelta;
        ds.totalEpsilonBudget = terms.totalEpsilonBudget;
    }

    function _setConsumers(uint256 datasetId, address[] calldata consumers, bool allowed) private {
        mapping(address consumer => bool) storage list = _allowedConsumers[datasetId];
        uint256 count = consumers.length;
        for (uint256 i = 0; i < count; ++i) {
            address consumer = consumers[i];
            list[consumer] = allowed;
            if (allowed) {
                emit ConsumerAllowed(datasetId, consumer);
            } else {
                emit ConsumerDisallowed(datasetId, consumer);
            }
        }
    }

    function _setModels(uint256 datasetId, bytes32[] calldata modelSpecHashes, bool allowed) private {
        mapping(bytes32 modelSpecHash => bool) storage list = _allowedModels[datasetId];
        uint256 count = modelSpecHashes.length;
        for (uint256 i = 0; i < count; ++i) {
            bytes32 modelSpecHash = modelSpecHashes[i];
            list[modelSpecHash] = allowed;
            if (allowed) {
                emit ModelAllowed(datasetId, modelSpecHash);
            } else {
                emit ModelDisallowed(datasetId, modelSpecHash);
            }
        }
    }

    /// @dev Reverts with {DatasetRegistryTooManyEntries} above MAX_LIST_ENTRIES.
    function _checkEntryCount(uint256 count) private pure {
        if (count > MAX_LIST_ENTRIES) {
            revert DatasetRegistryTooManyEntries(count, MAX_LIST_ENTRIES);
        }
    }

    /// @dev Reverts with {DatasetRegistryInvalidTerms} on the first problem found.
    function _checkTerms(Terms calldata terms) private view {
        if (terms.pricePerJob > type(uint96).max) {
            revert DatasetRegistryInvalidTerms(TermsProblem.PriceTooHigh);
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
