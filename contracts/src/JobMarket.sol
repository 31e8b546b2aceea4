// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {DatasetRegistry} from "./DatasetRegistry.sol";
import {IEnclaveRegistry, ROLE_TRAINER} from "./IEnclaveRegistry.sol";
import {IJobMarket} from "./IJobMarket.sol";

/**
 * @title JobMarket
 * @notice Sterling's marketplace: consumers create training jobs over listed datasets with escrowed
 * payment, attested trainer enclaves claim them and submit EIP-712 signed receipts, and the
 * contract debits each dataset's ε budget and credits providers and worker for pull withdrawal.
 * @dev Invariants: `address(this).balance == Σ pendingWithdrawal + lockedEscrow()` (barring forced
 * ether), and per dataset `epsilonSpent + epsilonReserved <= totalEpsilonBudget`.
 */
contract JobMarket is IJobMarket, DatasetRegistry, EIP712, ReentrancyGuard {
    /// @notice ε fixed-point scale: ε = 1.0 is 1_000_000.
    uint64 public constant EPSILON_SCALE = 1e6;
    /// @notice δ fixed-point scale: δ = 1e-5 is 1e13.
    uint64 public constant DELTA_SCALE = 1e18;
    /// @notice Largest number of datasets per job. Job creation, settlement and expiry loop over a
    /// job's datasets (and duplicate detection is quadratic), so this bound keeps every one of
    /// them well below the block gas limit; it also sizes the job's fixed storage array.
    uint256 public constant MAX_DATASETS_PER_JOB = 16;
    /// @notice EIP-712 type hash of {IJobMarket-Receipt}.
    bytes32 public constant RECEIPT_TYPEHASH = keccak256(
        "Receipt(uint256 jobId,bytes32 datasetsHash,bytes32 modelHash,bytes32 resultHash,bytes32 metricsHash,uint64 epsilonSpent)"
    );

    /// @dev One dataset of a job with its price at job creation (one storage slot).
    struct JobDataset {
        uint64 datasetId;
        uint128 price;
    }

    /// @dev Storage form of a job, packed: creation writes 6 slots plus one per dataset, claiming
    /// rewrites 2, settlement rewrites 2 and writes the 2 result hashes. The worker fee is not
    /// stored: it is `escrow - Σ price`.
    struct Job {
        // slot 0: set at creation, read by settlement and expiry
        address consumer;
        uint64 epsilon;
        uint8 datasetCount;
        // slot 1: every transition reads and writes it (claimDeadline set at creation)
        JobStatus status;
        address enclave;
        uint64 claimDeadline;
        // slot 2: completionDeadline set at creation, operator at claim
        address operator;
        uint64 completionDeadline;
        // slot 3: epsilonSpent set at settlement
        uint128 escrow;
        uint64 delta;
        uint64 epsilonSpent;
        // slots 4-7
        bytes32 modelSpecHash;
        bytes32 consumerKey;
        bytes32 modelHash;
        bytes32 resultHash;
        // slots 8-23, only the first datasetCount are written
        JobDataset[MAX_DATASETS_PER_JOB] datasets;
    }

    /// @dev An account's payments, in one slot. Once an account has withdrawn, `withdrawn` keeps
    /// the slot non-zero, so later credits and withdrawals rewrite a non-zero slot (5k gas)
    /// instead of re-creating it (22k gas). Both fit uint128: they never exceed the ether supply.
    struct Balance {
        uint128 pending;
        uint128 withdrawn;
    }

    IEnclaveRegistry private immutable _registry;

    mapping(uint256 jobId => Job) private _jobs;
    mapping(address account => Balance) private _balances;
    // One slot, read and written by every job creation and settlement.
    uint64 private _jobCount;
    uint128 private _lockedEscrow;

    /// @param registry_ The enclave registry whose active trainers may claim and settle jobs.
    constructor(IEnclaveRegistry registry_) EIP712("SterlingJobMarket", "1") {
        _registry = registry_;
    }

    /// @inheritdoc IJobMarket
    function createJob(
        uint256[] calldata datasetIds,
        bytes32 modelSpecHash,
        uint64 epsilon,
        uint64 delta,
        bytes32 consumerKey,
        uint256 workerFee,
        uint64 claimDeadline,
        uint64 completionDeadline
    ) external payable returns (uint256 jobId) {
        if (datasetIds.length == 0 || datasetIds.length > MAX_DATASETS_PER_JOB) {
            revert JobMarketInvalidDatasetCount(datasetIds.length, MAX_DATASETS_PER_JOB);
        }
        if (epsilon == 0 || delta == 0) {
            revert JobMarketInvalidPrivacyParameters(epsilon, delta);
        }
        if (block.timestamp >= claimDeadline || claimDeadline > completionDeadline) {
            revert JobMarketInvalidDeadlines(claimDeadline, completionDeadline);
        }

        jobId = ++_jobCount; // checked: reverts rather than wrap after 2^64 - 1 jobs
        Job storage j = _jobs[jobId];
        j.consumer = msg.sender;
        j.status = JobStatus.Open;
        j.datasetCount = uint8(datasetIds.length); // length <= MAX_DATASETS_PER_JOB = 16
        j.epsilon = epsilon;
        j.claimDeadline = claimDeadline;
        j.completionDeadline = completionDeadline;
        j.delta = delta;
        j.modelSpecHash = modelSpecHash;
        j.consumerKey = consumerKey;
        // Per-dataset checks, each followed by its effects; any failure reverts the whole job.
        _reserveDatasets(j, jobId, datasetIds, workerFee);
        emit JobCreated(
            jobId,
            msg.sender,
            datasetIds,
            modelSpecHash,
            epsilon,
            delta,
            consumerKey,
            msg.value,
            workerFee,
            claimDeadline,
            completionDeadline
        );
    }

    /// @inheritdoc IJobMarket
    function claimJob(uint256 jobId, address enclave) external {
        Job storage j = _jobs[jobId];
        if (j.status != JobStatus.Open) {
            revert JobMarketInvalidJobStatus(jobId, j.status);
        }
        uint64 claimDeadline = j.claimDeadline;
        if (block.timestamp > claimDeadline) {
            revert JobMarketClaimDeadlinePassed(jobId, claimDeadline);
        }
        if (!_registry.isActive(enclave, ROLE_TRAINER)) {
            revert JobMarketEnclaveNotActive(enclave);
        }
        address operator = _registry.enclaveOf(enclave).operator;
        if (operator != msg.sender) {
            revert JobMarketNotEnclaveOperator(msg.sender, operator);
        }

        j.status = JobStatus.Claimed;
        j.enclave = enclave;
        j.operator = msg.sender;
        emit JobClaimed(jobId, enclave, msg.sender);
    }

    /// @inheritdoc IJobMarket
    function submitResult(uint256 jobId, Receipt calldata receipt, bytes calldata signature) external {
        Job storage j = _jobs[jobId];
        _checkReceipt(j, jobId, receipt, signature);

        j.status = JobStatus.Completed;
        j.epsilonSpent = receipt.epsilonSpent;
        j.modelHash = receipt.modelHash;
        j.resultHash = receipt.resultHash;
        uint128 escrow = j.escrow;
        // unchecked: escrow was added to _lockedEscrow at creation and is removed once.
        unchecked {
            _lockedEscrow -= escrow;
        }

        uint128 paid = _settleDatasets(j, jobId, receipt.epsilonSpent);
        // unchecked: escrow == Σ price + workerFee at creation and paid == Σ price.
        uint128 workerFee;
        unchecked {
            workerFee = escrow - paid;
        }
        _credit(j.operator, jobId, workerFee);
        emit ResultSubmitted(
            jobId, j.enclave, receipt.modelHash, receipt.resultHash, receipt.metricsHash, receipt.epsilonSpent
        );
    }

    /// @inheritdoc IJobMarket
    function expireJob(uint256 jobId) external {
        Job storage j = _jobs[jobId];
        JobStatus status = j.status;
        bool releaseBudget;
        if (status == JobStatus.Open && block.timestamp > j.claimDeadline) {
            releaseBudget = true;
        } else if (!(status == JobStatus.Claimed && block.timestamp > j.completionDeadline)) {
            revert JobMarketNotExpirable(jobId, status);
        }

        j.status = JobStatus.Expired;
        uint128 escrow = j.escrow;
        // unchecked: escrow was added to _lockedEscrow at creation and is removed once.
        unchecked {
            _lockedEscrow -= escrow;
        }
        uint64 epsilon = j.epsilon;
        uint256 count = j.datasetCount;
        for (uint256 i = 0; i < count; ++i) {
            uint256 datasetId = j.datasets[i].datasetId;
            DatasetRecord storage ds = _datasetRecord(datasetId);
            if (releaseBudget) {
                _releaseEpsilon(ds, epsilon);
                emit EpsilonReleased(datasetId, jobId, epsilon);
            } else {
                // Claimed: the enclave may have decrypted the data, so the reservation is spent.
                uint64 remaining = _debitEpsilon(ds, epsilon, epsilon);
                emit BudgetDebited(datasetId, jobId, epsilon, remaining);
            }
        }
        _credit(j.consumer, jobId, escrow);
        emit JobExpired(jobId, escrow);
    }

    /// @inheritdoc IJobMarket
    function withdraw() external nonReentrant {
        Balance memory balance = _balances[msg.sender];
        uint256 amount = balance.pending;
        if (amount == 0) {
            revert JobMarketNothingToWithdraw(msg.sender);
        }
        // One SSTORE; `withdrawn + pending` cannot overflow uint128 (checked anyway).
        _balances[msg.sender] = Balance({pending: 0, withdrawn: balance.withdrawn + balance.pending});
        emit Withdrawn(msg.sender, amount);
        (bool success,) = payable(msg.sender).call{value: amount}("");
        if (!success) {
            revert JobMarketWithdrawFailed(msg.sender, amount);
        }
    }

    /// @inheritdoc IJobMarket
    function pendingWithdrawal(address account) external view returns (uint256) {
        return _balances[account].pending;
    }

    /// @notice Wei `account` has withdrawn over its lifetime.
    /// @dev Not part of {IJobMarket}; kept because it also makes repeat credits cheaper.
    function totalWithdrawn(address account) external view returns (uint256) {
        return _balances[account].withdrawn;
    }

    /// @inheritdoc IJobMarket
    function job(uint256 jobId) external view returns (JobInfo memory info) {
        Job storage j = _existingJob(jobId);
        uint256 count = j.datasetCount;
        uint256[] memory datasetIds = new uint256[](count);
        uint256 prices;
        for (uint256 i = 0; i < count; ++i) {
            JobDataset storage entry = j.datasets[i];
            datasetIds[i] = entry.datasetId;
            prices += entry.price;
        }
        info.consumer = j.consumer;
        info.status = j.status;
        info.enclave = j.enclave;
        info.operator = j.operator;
        info.modelSpecHash = j.modelSpecHash;
        info.epsilon = j.epsilon;
        info.delta = j.delta;
        info.consumerKey = j.consumerKey;
        info.escrow = j.escrow;
        info.workerFee = j.escrow - prices;
        info.claimDeadline = j.claimDeadline;
        info.completionDeadline = j.completionDeadline;
        info.epsilonSpent = j.epsilonSpent;
        info.modelHash = j.modelHash;
        info.resultHash = j.resultHash;
        info.datasetIds = datasetIds;
    }

    /// @inheritdoc IJobMarket
    function jobCount() external view returns (uint256) {
        return _jobCount;
    }

    /// @inheritdoc IJobMarket
    function lockedEscrow() external view returns (uint256) {
        return _lockedEscrow;
    }

    /// @inheritdoc IJobMarket
    function datasetsHashOf(uint256 jobId) external view returns (bytes32) {
        return _datasetsHash(_existingJob(jobId));
    }

    /// @inheritdoc IJobMarket
    function hashReceipt(Receipt calldata receipt) external view returns (bytes32) {
        return _hashReceipt(receipt);
    }

    /// @inheritdoc IJobMarket
    function registry() external view returns (address) {
        return address(_registry);
    }

    /// @dev Checks every dataset of the new job `j` in the documented order, reserves the job's ε
    /// on each (emitting {EpsilonReserved}) and snapshots the prices into `j`; then checks that
    /// `msg.value` is their sum plus `workerFee` and locks it as the job's escrow.
    function _reserveDatasets(Job storage j, uint256 jobId, uint256[] calldata datasetIds, uint256 workerFee)
        private
    {
        uint64 epsilon = j.epsilon;
        uint64 delta = j.delta;
        uint256 required = workerFee;
        uint256 count = datasetIds.length;
        for (uint256 i = 0; i < count; ++i) {
            uint256 datasetId = datasetIds[i];
            if (!_datasetExists(datasetId)) {
                revert JobMarketUnknownDataset(datasetId);
            }
            for (uint256 k = 0; k < i; ++k) {
                if (datasetIds[k] == datasetId) {
                    revert JobMarketDuplicateDataset(datasetId);
                }
            }
            DatasetRecord storage ds = _datasetRecord(datasetId);
            uint64 expiry = ds.expiry;
            if (expiry != 0 && block.timestamp >= expiry) {
                revert JobMarketDatasetExpired(datasetId, expiry);
            }
            if (!_isConsumerAllowed(ds, datasetId, msg.sender)) {
                revert JobMarketConsumerNotAllowed(datasetId, msg.sender);
            }
            if (epsilon > ds.maxEpsilonPerJob) {
                revert JobMarketEpsilonPerJobExceeded(datasetId, epsilon, ds.maxEpsilonPerJob);
            }
            if (delta > ds.maxDelta) {
                revert JobMarketDeltaExceeded(datasetId, delta, ds.maxDelta);
            }
            uint64 remaining = _remainingEpsilon(ds);
            if (epsilon > remaining) {
                revert JobMarketBudgetExhausted(datasetId, epsilon, remaining);
            }

            _reserveEpsilon(ds, epsilon);
            uint128 price = ds.pricePerJob;
            // datasetId <= datasetCount, a uint64, so the narrowing cast is lossless.
            j.datasets[i] = JobDataset({datasetId: uint64(datasetId), price: price});
            required += price; // checked: reverts on overflow (absurd workerFee)
            emit EpsilonReserved(datasetId, jobId, epsilon);
        }
        if (msg.value != required) {
            revert JobMarketIncorrectPayment(msg.value, required);
        }
        // msg.value fits uint128 (ether supply is far below 2^128); SafeCast guards it anyway.
        uint128 escrow = SafeCast.toUint128(msg.value);
        j.escrow = escrow;
        _lockedEscrow += escrow;
    }

    /// @dev Settles a completed job's datasets: replaces each reservation by `epsilonSpent`
    /// (emitting {BudgetDebited}), credits each provider its price snapshot and returns the total.
    function _settleDatasets(Job storage j, uint256 jobId, uint64 epsilonSpent) private returns (uint128 paid) {
        uint64 reserved = j.epsilon;
        uint256 count = j.datasetCount;
        for (uint256 i = 0; i < count; ++i) {
            JobDataset storage entry = j.datasets[i];
            uint256 datasetId = entry.datasetId;
            uint128 price = entry.price;
            DatasetRecord storage ds = _datasetRecord(datasetId);
            uint64 remaining = _debitEpsilon(ds, reserved, epsilonSpent);
            emit BudgetDebited(datasetId, jobId, epsilonSpent, remaining);
            _credit(ds.provider, jobId, price);
            paid += price;
        }
    }

    /// @dev Adds `amount` to `account`'s pending withdrawal and emits {PaymentCredited}; a zero
    /// amount (free dataset, no worker fee) is skipped.
    function _credit(address account, uint256 jobId, uint128 amount) private {
        if (amount == 0) {
            return;
        }
        _balances[account].pending += amount;
        emit PaymentCredited(account, jobId, amount);
    }

    /// @dev The checks of {submitResult}, in the documented order.
    function _checkReceipt(Job storage j, uint256 jobId, Receipt calldata receipt, bytes calldata signature)
        private
        view
    {
        if (j.status != JobStatus.Claimed) {
            revert JobMarketInvalidJobStatus(jobId, j.status);
        }
        uint64 completionDeadline = j.completionDeadline;
        if (block.timestamp > completionDeadline) {
            revert JobMarketCompletionDeadlinePassed(jobId, completionDeadline);
        }
        if (receipt.jobId != jobId) {
            revert JobMarketReceiptJobMismatch(jobId, receipt.jobId);
        }
        bytes32 expected = _datasetsHash(j);
        if (receipt.datasetsHash != expected) {
            revert JobMarketReceiptDatasetsMismatch(expected, receipt.datasetsHash);
        }
        if (receipt.epsilonSpent > j.epsilon) {
            revert JobMarketEpsilonOverspent(receipt.epsilonSpent, j.epsilon);
        }
        address signer = ECDSA.recoverCalldata(_hashReceipt(receipt), signature);
        address enclave = j.enclave;
        if (signer != enclave) {
            revert JobMarketInvalidReceiptSigner(signer, enclave);
        }
        if (!_registry.isActive(signer, ROLE_TRAINER)) {
            revert JobMarketEnclaveNotActive(signer);
        }
    }

    /// @dev keccak256 of the content hashes of the job's datasets, in job order.
    function _datasetsHash(Job storage j) private view returns (bytes32) {
        uint256 count = j.datasetCount;
        bytes32[] memory hashes = new bytes32[](count);
        for (uint256 i = 0; i < count; ++i) {
            hashes[i] = _datasetRecord(j.datasets[i].datasetId).contentHash;
        }
        return keccak256(abi.encodePacked(hashes));
    }

    /// @dev EIP-712 digest of `receipt` under the "SterlingJobMarket" v1 domain.
    function _hashReceipt(Receipt calldata receipt) private view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(
                abi.encode(
                    RECEIPT_TYPEHASH,
                    receipt.jobId,
                    receipt.datasetsHash,
                    receipt.modelHash,
                    receipt.resultHash,
                    receipt.metricsHash,
                    receipt.epsilonSpent
                )
            )
        );
    }

    /// @dev The job `jobId`; reverts with {JobMarketUnknownJob} if it does not exist.
    function _existingJob(uint256 jobId) private view returns (Job storage) {
        if (jobId == 0 || jobId > _jobCount) {
            revert JobMarketUnknownJob(jobId);
        }
        return _jobs[jobId];
    }
}
