// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {AccessControlDefaultAdminRules} from
    "@openzeppelin/contracts/access/extensions/AccessControlDefaultAdminRules.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {DatasetRegistry} from "./DatasetRegistry.sol";
import {IEnclaveRegistry, ROLE_KEY_MANAGER, ROLE_TRAINER} from "./IEnclaveRegistry.sol";
import {IJobMarket} from "./IJobMarket.sol";

/**
 * @title JobMarket
 * @notice Sterling's marketplace: consumers create training jobs over listed datasets with escrowed
 * payment, attested trainer enclaves claim them and submit EIP-712 signed receipts, and the
 * contract debits each dataset's ε budget and credits providers and worker for pull withdrawal.
 * Payments are in the native currency or in one ERC-20 token fixed at deployment.
 * A claim is a lease ({claimLease} seconds, renewed by the holder's operator): a job whose holder
 * stops renewing can be given back without ε cost on a key manager's statement that no data key
 * was released under the claim ({releaseClaim}), or re-claimed by another enclave, which charges
 * the lapsed claim its ε and slashes its operator's stake to the providers (docs/jobs.md).
 * @dev Invariants: the contract's balance (native or token) == Σ pendingWithdrawal +
 * lockedEscrow() + totalStake() (barring forced ether or tokens sent without a job), and per
 * dataset `epsilonSpent + epsilonReserved <= totalEpsilonBudget`.
 * Governance: DEFAULT_ADMIN_ROLE (two-step handover with a delay, see
 * {AccessControlDefaultAdminRules}) grants PAUSER_ROLE and unpauses; PAUSER_ROLE pauses.
 */
contract JobMarket is IJobMarket, DatasetRegistry, AccessControlDefaultAdminRules, EIP712, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @notice ε fixed-point scale: ε = 1.0 is 1_000_000.
    uint64 public constant EPSILON_SCALE = 1e6;
    /// @notice δ fixed-point scale: δ = 1e-5 is 1e13.
    uint64 public constant DELTA_SCALE = 1e18;
    /// @notice Largest number of datasets per job. Job creation, settlement, cancellation and
    /// expiry loop over a job's datasets (and duplicate detection is quadratic), so this bound
    /// keeps each of them below ~1.5M gas, far under the block gas limit; it also sizes the
    /// job's fixed storage array. A 16-dataset job is already a wide federation.
    uint256 public constant MAX_DATASETS_PER_JOB = 16;
    /// @notice AccessControl role that may trigger the emergency pause.
    bytes32 public constant PAUSER_ROLE = keccak256("PAUSER_ROLE");
    /// @notice EIP-712 type hash of the key manager's statement that no data key of job `jobId`
    /// was, or will ever be, released to `enclave` under the job's `charges`-th claim ({releaseClaim}).
    bytes32 public constant CLAIM_RELEASE_TYPEHASH =
        keccak256("ClaimRelease(uint256 jobId,address enclave,uint16 charges)");
    /// @notice EIP-712 type hash of {IJobMarket-Receipt}.
    bytes32 public constant RECEIPT_TYPEHASH = keccak256(
        "Receipt(uint256 jobId,bytes32 datasetsHash,bytes32 modelHash,bytes32 resultHash,bytes32 metricsHash,uint64 epsilonSpent)"
    );

    /// @dev Storage form of a job, packed by access pattern: creation writes 5 slots plus one per
    /// two datasets; claiming reads and rewrites slot 0 only; settlement reads slots 0-2 and rewrites
    /// 0 and 2. The operator is not stored (the registry knows it), nor are the result hashes
    /// (they are in {ResultSubmitted}), nor the worker fee (it is `escrow - Σ price`).
    struct Job {
        // slot 0: what claiming needs; every transition reads and writes it. `deadline` is the
        // claim deadline while Open and the lease expiry while Claimed; `charges` counts the
        // lapsed claims whose ε was debited ({claimJob} on a lapsed lease).
        address enclave;
        JobStatus status;
        uint8 datasetCount;
        uint32 deadline;
        uint32 completionDeadline;
        uint16 charges;
        // slot 1: set at creation
        address consumer;
        uint64 epsilon;
        // slot 2: escrow and delta set at creation, epsilonSpent at settlement
        uint128 escrow;
        uint64 delta;
        uint64 epsilonSpent;
        // slots 3-4
        bytes32 modelSpecHash;
        bytes32 consumerKey;
        // slots 5-12, two datasets per slot, only the first datasetCount are written; each entry
        // is `price << 32 | datasetId` (ids fit 32 bits, prices 96 bits: see DatasetRegistry)
        uint128[MAX_DATASETS_PER_JOB] datasets;
    }

    /// @dev An account's payments, in one slot. Once an account has withdrawn, `withdrawn` keeps
    /// the slot non-zero, so later credits cost a 2,900-gas update instead of a 20,000-gas write.
    struct Balance {
        uint128 pending;
        uint128 withdrawn;
    }

    /// @dev An operator's stake, in one slot; `unbondingEnd` is non-zero once it asked to leave.
    struct Stake {
        uint128 amount;
        uint64 unbondingEnd;
    }

    /// @inheritdoc IJobMarket
    uint32 public immutable claimLease;
    /// @inheritdoc IJobMarket
    uint32 public immutable unbondingPeriod;
    IEnclaveRegistry private immutable _registry;
    IERC20 private immutable _token;
    // Slither's uninitialized-state detector misreads writes through `Job storage` pointers
    // (createJob fills each job through one); acknowledged in docs/contracts.md.
    // slither-disable-next-line uninitialized-state
    mapping(uint256 jobId => Job) private _jobs;
    mapping(address account => Balance) private _balances;
    // One slot, read or written by createJob and submitResult anyway: the emergency-pause flag
    // lives here instead of in {Pausable}'s own slot (see {paused}), saving a cold read per call.
    uint64 private _jobCount;
    uint128 private _lockedEscrow;
    bool private _marketPaused;
    mapping(address operator => Stake) private _stakes;
    uint128 private _totalStake;

    /// @param registry_ The enclave registry whose active trainers may claim and settle jobs.
    /// @param token The ERC-20 token payments use, or the zero address for the native currency.
    /// @param adminDelay Seconds a governance handover must wait before the new admin accepts.
    /// @param governance Account receiving DEFAULT_ADMIN_ROLE and PAUSER_ROLE.
    /// @param claimLease_ Seconds a claim or a lease renewal holds a job (> 0).
    /// @param unbondingPeriod_ Seconds between an operator's unstake request and its withdrawal;
    /// also the longest a job may run from creation to completion deadline (>= claimLease_).
    constructor(
        IEnclaveRegistry registry_,
        IERC20 token,
        uint48 adminDelay,
        address governance,
        uint32 claimLease_,
        uint32 unbondingPeriod_
    ) AccessControlDefaultAdminRules(adminDelay, governance) EIP712("SterlingJobMarket", "1") {
        if (claimLease_ == 0 || unbondingPeriod_ < claimLease_) {
            revert JobMarketInvalidTimings(claimLease_, unbondingPeriod_);
        }
        claimLease = claimLease_;
        unbondingPeriod = unbondingPeriod_;
        _registry = registry_;
        _token = token;
        _grantRole(PAUSER_ROLE, governance);
    }

    /// @inheritdoc IJobMarket
    function createJob(JobRequest calldata request) external payable whenNotPaused returns (uint256 jobId) {
        uint256 count = request.datasetIds.length;
        if (count == 0 || count > MAX_DATASETS_PER_JOB) {
            revert JobMarketInvalidDatasetCount(count, MAX_DATASETS_PER_JOB);
        }
        uint64 epsilon = request.epsilon;
        uint64 delta = request.delta;
        if (epsilon == 0 || delta == 0) {
            revert JobMarketInvalidPrivacyParameters(epsilon, delta);
        }
        uint64 claimDeadline = request.claimDeadline;
        uint64 completionDeadline = request.completionDeadline;
        if (
            block.timestamp >= claimDeadline || claimDeadline > completionDeadline
                || completionDeadline > block.timestamp + unbondingPeriod / 2
        ) {
            revert JobMarketInvalidDeadlines(claimDeadline, completionDeadline);
        }

        jobId = ++_jobCount; // checked: reverts rather than wrap after 2^64 - 1 jobs
        Job storage j = _jobs[jobId];
        j.consumer = msg.sender;
        j.status = JobStatus.Open;
        j.datasetCount = uint8(count); // count <= MAX_DATASETS_PER_JOB = 16
        j.epsilon = epsilon;
        j.delta = delta;
        j.deadline = uint32(claimDeadline); // both <= now + unbondingPeriod / 2 < 2^32
        j.completionDeadline = uint32(completionDeadline);
        j.modelSpecHash = request.modelSpecHash;
        j.consumerKey = request.consumerKey;
        // Per-dataset checks, each followed by its effects; any failure reverts the whole job.
        uint256 required = _reserveDatasets(j, jobId, request.datasetIds) + request.workerFee; // checked
        uint256 maxTotalPrice = request.maxTotalPrice;
        if (required > maxTotalPrice) {
            revert JobMarketPriceAboveLimit(required, maxTotalPrice);
        }
        // required fits uint128 in practice; SafeCast guards it anyway.
        uint128 escrow = SafeCast.toUint128(required);
        j.escrow = escrow;
        _lockedEscrow += escrow;
        _emitJobCreated(jobId, request, required);
        _collect(jobId, required, maxTotalPrice, msg.value);
    }

    /// @inheritdoc IJobMarket
    function cancelJob(uint256 jobId) external {
        Job storage j = _jobs[jobId];
        if (j.status != JobStatus.Open) {
            revert JobMarketInvalidJobStatus(jobId, j.status);
        }
        address consumer = j.consumer;
        if (msg.sender != consumer) {
            revert JobMarketNotConsumer(jobId, msg.sender);
        }
        j.status = JobStatus.Cancelled;
        uint128 refund = _refund(j, jobId, true);
        emit JobCancelled(jobId, refund);
    }

    /// @inheritdoc IJobMarket
    function claimJob(uint256 jobId, address enclave) external whenNotPaused {
        Job storage j = _jobs[jobId];
        JobStatus status = j.status;
        uint64 deadline = j.deadline;
        address lapsed = address(0); // the enclave whose lapsed claim a re-claim charges
        if (status == JobStatus.Open) {
            if (block.timestamp > deadline) {
                revert JobMarketClaimDeadlinePassed(jobId, deadline);
            }
        } else if (status == JobStatus.Claimed) {
            if (block.timestamp <= deadline) {
                revert JobMarketLeaseActive(jobId, deadline);
            }
            uint64 completionDeadline = j.completionDeadline;
            if (block.timestamp > completionDeadline) {
                revert JobMarketCompletionDeadlinePassed(jobId, completionDeadline);
            }
            lapsed = j.enclave;
        } else {
            revert JobMarketInvalidJobStatus(jobId, status);
        }
        address operator = _registry.activeOperator(enclave, ROLE_TRAINER);
        if (operator == address(0)) {
            revert JobMarketEnclaveNotActive(enclave);
        }
        if (operator != msg.sender) {
            revert JobMarketNotEnclaveOperator(msg.sender, operator);
        }
        uint128 prices = _sumPrices(j);
        if (lapsed != address(0)) {
            _chargeLapsedClaim(j, jobId, lapsed, prices);
        }
        // After the charge: an operator re-claiming its own lapsed job must still be staked once slashed.
        Stake memory stake = _stakes[operator];
        if (stake.unbondingEnd != 0) {
            revert JobMarketOperatorUnbonding(operator, stake.unbondingEnd);
        }
        if (stake.amount < prices) {
            revert JobMarketStakeTooLow(operator, stake.amount, prices);
        }

        j.status = JobStatus.Claimed;
        j.enclave = enclave;
        j.deadline = _leaseEnd(j.completionDeadline);
        emit JobClaimed(jobId, enclave, msg.sender);
    }

    /// @inheritdoc IJobMarket
    function renewLease(uint256 jobId) external {
        Job storage j = _jobs[jobId];
        if (j.status != JobStatus.Claimed) {
            revert JobMarketInvalidJobStatus(jobId, j.status);
        }
        uint64 lease = j.deadline;
        if (block.timestamp > lease) {
            revert JobMarketLeaseLapsed(jobId, lease);
        }
        address operator = _registry.enclaveOf(j.enclave).operator;
        if (operator != msg.sender) {
            revert JobMarketNotEnclaveOperator(msg.sender, operator);
        }
        uint32 renewed = _leaseEnd(j.completionDeadline);
        j.deadline = renewed;
        emit LeaseRenewed(jobId, j.enclave, renewed);
    }

    /// @inheritdoc IJobMarket
    function releaseClaim(uint256 jobId, bytes calldata keyManagerSignature) external {
        Job storage j = _jobs[jobId];
        if (j.status != JobStatus.Claimed) {
            revert JobMarketInvalidJobStatus(jobId, j.status);
        }
        address enclave = j.enclave;
        uint64 lease = j.deadline;
        if (block.timestamp <= lease && msg.sender != _registry.enclaveOf(enclave).operator) {
            revert JobMarketLeaseActive(jobId, lease);
        }
        bytes32 digest = _hashTypedDataV4(keccak256(abi.encode(CLAIM_RELEASE_TYPEHASH, jobId, enclave, j.charges)));
        address signer = ECDSA.recoverCalldata(digest, keyManagerSignature);
        if (_registry.activeOperator(signer, ROLE_KEY_MANAGER) == address(0)) {
            revert JobMarketInvalidKeyManagerSignature(signer);
        }
        j.status = JobStatus.Open;
        j.enclave = address(0);
        j.deadline = j.completionDeadline;
        emit ClaimReleased(jobId, enclave, j.charges);
    }

    /// @inheritdoc IJobMarket
    function submitResult(uint256 jobId, Receipt calldata receipt, bytes calldata signature)
        external
        whenNotPaused
    {
        Job storage j = _jobs[jobId];
        address operator = _checkReceipt(j, jobId, receipt, signature);

        j.status = JobStatus.Completed;
        j.epsilonSpent = receipt.epsilonSpent;
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
        _credit(operator, jobId, workerFee);
        emit ResultSubmitted(
            jobId, j.enclave, receipt.modelHash, receipt.resultHash, receipt.metricsHash, receipt.epsilonSpent
        );
    }

    /// @inheritdoc IJobMarket
    function expireJob(uint256 jobId) external {
        Job storage j = _jobs[jobId];
        JobStatus status = j.status;
        bool releaseBudget = false;
        if (status == JobStatus.Open && block.timestamp > j.deadline) {
            releaseBudget = true;
        } else if (
            !(status == JobStatus.Claimed
                    && (block.timestamp > j.completionDeadline || block.timestamp > uint256(j.deadline) + claimLease))
        ) {
            revert JobMarketNotExpirable(jobId, status);
        }
        j.status = JobStatus.Expired;
        uint128 refund = _refund(j, jobId, releaseBudget);
        if (!releaseBudget) {
            // The claim lapsed or ran out of time holding the job; keys may have been released.
            _slash(j, jobId, j.enclave, _sumPrices(j));
        }
        emit JobExpired(jobId, refund);
    }

    /// @inheritdoc IJobMarket
    function depositStake(uint256 amount) external payable nonReentrant {
        if (amount == 0) {
            revert JobMarketInvalidStake(amount);
        }
        uint128 added = SafeCast.toUint128(amount);
        Stake storage stake = _stakes[msg.sender];
        uint128 total = stake.amount + added; // checked
        stake.amount = total;
        _totalStake += added;
        emit StakeDeposited(msg.sender, amount, total);
        _collectStake(amount, msg.value);
    }

    /// @inheritdoc IJobMarket
    function requestUnstake() external {
        Stake storage stake = _stakes[msg.sender];
        if (stake.amount == 0 || stake.unbondingEnd != 0) {
            revert JobMarketInvalidStake(stake.amount);
        }
        uint64 end = uint64(block.timestamp) + unbondingPeriod;
        stake.unbondingEnd = end;
        emit UnstakeRequested(msg.sender, stake.amount, end);
    }

    /// @inheritdoc IJobMarket
    function withdrawStake() external {
        Stake memory stake = _stakes[msg.sender];
        if (stake.unbondingEnd == 0 || block.timestamp < stake.unbondingEnd) {
            revert JobMarketStakeLocked(msg.sender, stake.unbondingEnd);
        }
        delete _stakes[msg.sender];
        _totalStake -= stake.amount;
        emit StakeWithdrawn(msg.sender, stake.amount);
        _credit(msg.sender, 0, stake.amount);
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
        if (address(_token) != address(0)) {
            _token.safeTransfer(msg.sender, amount);
        } else {
            (bool success,) = payable(msg.sender).call{value: amount}("");
            if (!success) {
                revert JobMarketWithdrawFailed(msg.sender, amount);
            }
        }
    }

    /// @inheritdoc IJobMarket
    function pause() external onlyRole(PAUSER_ROLE) {
        _pause();
    }

    /// @notice Whether the market is in an emergency stop.
    /// @dev Overrides {Pausable} to read the flag packed next to the job counter; {Pausable}'s
    /// modifiers, errors and events are used unchanged.
    function paused() public view override returns (bool) {
        return _marketPaused;
    }

    /// @inheritdoc IJobMarket
    function unpause() external onlyRole(DEFAULT_ADMIN_ROLE) {
        _unpause();
    }

    /// @dev {Pausable-_pause} on the packed flag.
    function _pause() internal override whenNotPaused {
        _marketPaused = true;
        emit Paused(_msgSender());
    }

    /// @dev {Pausable-_unpause} on the packed flag.
    function _unpause() internal override whenPaused {
        _marketPaused = false;
        emit Unpaused(_msgSender());
    }

    /// @inheritdoc IJobMarket
    function pendingWithdrawal(address account) external view returns (uint256) {
        return _balances[account].pending;
    }

    /// @notice Amount `account` has withdrawn over its lifetime.
    /// @dev Not part of {IJobMarket}; kept because it also makes repeat credits cheaper.
    function totalWithdrawn(address account) external view returns (uint256) {
        return _balances[account].withdrawn;
    }

    /// @inheritdoc IJobMarket
    function job(uint256 jobId) external view returns (JobInfo memory info) {
        Job storage j = _existingJob(jobId);
        uint256 count = j.datasetCount;
        uint256[] memory datasetIds = new uint256[](count);
        uint256[] memory prices = new uint256[](count);
        uint256 total = 0;
        for (uint256 i = 0; i < count; ++i) {
            (uint256 datasetId, uint128 price) = _unpack(j.datasets[i]);
            datasetIds[i] = datasetId;
            prices[i] = price;
            total += price;
        }
        info.consumer = j.consumer;
        info.status = j.status;
        info.enclave = j.enclave;
        if (info.enclave != address(0)) {
            info.operator = _registry.enclaveOf(info.enclave).operator;
        }
        info.modelSpecHash = j.modelSpecHash;
        info.epsilon = j.epsilon;
        info.delta = j.delta;
        info.consumerKey = j.consumerKey;
        info.escrow = j.escrow;
        info.workerFee = j.escrow - total;
        if (info.status == JobStatus.Open) {
            info.claimDeadline = j.deadline;
        } else if (info.status == JobStatus.Claimed) {
            info.leaseExpiry = j.deadline;
        }
        info.charges = j.charges;
        info.completionDeadline = j.completionDeadline;
        info.epsilonSpent = j.epsilonSpent;
        info.datasetIds = datasetIds;
        info.prices = prices;
    }

    /// @inheritdoc IJobMarket
    function stakeOf(address operator) external view returns (uint256 amount, uint64 unbondingEnd) {
        Stake memory stake = _stakes[operator];
        return (stake.amount, stake.unbondingEnd);
    }

    /// @inheritdoc IJobMarket
    function totalStake() external view returns (uint256) {
        return _totalStake;
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

    /// @inheritdoc IJobMarket
    function paymentToken() external view returns (address) {
        return address(_token);
    }

    /// @dev Checks every dataset of the new job `j` in the documented order, reserves the job's ε
    /// on each (emitting {EpsilonReserved}), snapshots the prices into `j` and returns their sum.
    function _reserveDatasets(Job storage j, uint256 jobId, uint256[] calldata datasetIds)
        private
        returns (uint256 prices)
    {
        uint64 epsilon = j.epsilon;
        uint64 delta = j.delta;
        bytes32 modelSpecHash = j.modelSpecHash;
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
            _checkDatasetAccess(ds, datasetId, modelSpecHash);
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
            // datasetId <= _datasetCount < 2^32 and price < 2^96 (checked with the terms).
            j.datasets[i] = (price << 32) | uint128(datasetId);
            prices += price;
            emit EpsilonReserved(datasetId, jobId, epsilon, price);
        }
    }

    /// @dev Emits {JobCreated} (a function of its own to keep createJob's stack shallow).
    function _emitJobCreated(uint256 jobId, JobRequest calldata request, uint256 escrow) private {
        emit JobCreated(
            jobId,
            msg.sender,
            request.datasetIds,
            request.modelSpecHash,
            request.epsilon,
            request.delta,
            request.consumerKey,
            escrow,
            request.workerFee,
            request.claimDeadline,
            request.completionDeadline
        );
    }

    /// @dev Status, expiry, consumer and model allow-list checks of one dataset for a new job.
    function _checkDatasetAccess(DatasetRecord storage ds, uint256 datasetId, bytes32 modelSpecHash) private view {
        DatasetStatus status = ds.status;
        if (status != DatasetStatus.Active) {
            revert JobMarketDatasetUnavailable(datasetId, status);
        }
        uint64 expiry = ds.expiry;
        if (expiry != 0 && block.timestamp >= expiry) {
            revert JobMarketDatasetExpired(datasetId, expiry);
        }
        if (!_isConsumerAllowed(ds, datasetId, msg.sender)) {
            revert JobMarketConsumerNotAllowed(datasetId, msg.sender);
        }
        if (!_isModelAllowed(ds, datasetId, modelSpecHash)) {
            revert JobMarketModelNotAllowed(datasetId, modelSpecHash);
        }
    }

    /// @dev Takes the consumer's payment for job `jobId` (`sent` is createJob's msg.value): in
    /// native mode `sent` must be `maxTotalPrice` and the change is credited back; in token mode
    /// `required` tokens are pulled (effects are already done; a token cannot re-enter usefully:
    /// withdraw is guarded and every other path re-checks state).
    function _collect(uint256 jobId, uint256 required, uint256 maxTotalPrice, uint256 sent) private {
        if (address(_token) == address(0)) {
            if (sent != maxTotalPrice) {
                revert JobMarketIncorrectPayment(sent, maxTotalPrice);
            }
            // unchecked: required <= maxTotalPrice was checked; the change fits uint128 because
            // msg.value does (ether supply is far below 2^128).
            unchecked {
                _credit(msg.sender, jobId, uint128(maxTotalPrice - required));
            }
        } else {
            if (sent != 0) {
                revert JobMarketIncorrectPayment(sent, 0);
            }
            if (required != 0) {
                _pullTokens(required);
            }
        }
    }

    /// @dev Unlocks a cancelled or expired job's escrow, credits it to the consumer and releases
    /// (`release`) or debits in full each dataset's reservation. Returns the refund.
    function _refund(Job storage j, uint256 jobId, bool release) private returns (uint128 escrow) {
        escrow = j.escrow;
        // unchecked: escrow was added to _lockedEscrow at creation and is removed once.
        unchecked {
            _lockedEscrow -= escrow;
        }
        uint64 epsilon = j.epsilon;
        uint256 count = j.datasetCount;
        for (uint256 i = 0; i < count; ++i) {
            (uint256 datasetId,) = _unpack(j.datasets[i]);
            DatasetRecord storage ds = _datasetRecord(datasetId);
            if (release) {
                _releaseEpsilon(ds, epsilon);
                emit EpsilonReleased(datasetId, jobId, epsilon);
            } else {
                // Claimed: the enclave may have decrypted the data, so the reservation is spent.
                uint64 remaining = _debitEpsilon(ds, epsilon, epsilon);
                emit BudgetDebited(datasetId, jobId, epsilon, remaining);
            }
        }
        _credit(j.consumer, jobId, escrow);
    }

    /// @dev Settles a completed job's datasets: replaces each reservation by `epsilonSpent`
    /// (emitting {BudgetDebited}), credits each provider its price snapshot and returns the total.
    function _settleDatasets(Job storage j, uint256 jobId, uint64 epsilonSpent) private returns (uint128 paid) {
        uint64 reserved = j.epsilon;
        uint256 count = j.datasetCount;
        for (uint256 i = 0; i < count; ++i) {
            (uint256 datasetId, uint128 price) = _unpack(j.datasets[i]);
            DatasetRecord storage ds = _datasetRecord(datasetId);
            uint64 remaining = _debitEpsilon(ds, reserved, epsilonSpent);
            emit BudgetDebited(datasetId, jobId, epsilonSpent, remaining);
            _credit(ds.provider, jobId, price);
            paid += price;
        }
    }

    /// @dev Takes an operator's stake deposit of `amount` (`sent` is depositStake's msg.value):
    /// `sent` in native mode, else `amount` tokens pulled with transferFrom (the state is already
    /// updated; see {_collect}).
    function _collectStake(uint256 amount, uint256 sent) private {
        if (address(_token) == address(0)) {
            if (sent != amount) {
                revert JobMarketIncorrectPayment(sent, amount);
            }
        } else {
            if (sent != 0) {
                revert JobMarketIncorrectPayment(sent, 0);
            }
            _pullTokens(amount);
        }
    }

    /// @dev Pulls exactly `amount` payment tokens from the caller with transferFrom; a token that
    /// delivers less (fee on transfer) reverts with {JobMarketTokenTransferShortfall}.
    function _pullTokens(uint256 amount) private {
        uint256 before = _token.balanceOf(address(this));
        _token.safeTransferFrom(msg.sender, address(this), amount);
        uint256 received = _token.balanceOf(address(this)) - before;
        if (received != amount) {
            revert JobMarketTokenTransferShortfall(amount, received);
        }
    }

    /// @dev A re-claim after `lapsed`'s lease ran out: its claim may have had the data keys, so
    /// each dataset's reservation is debited in full and reserved again for the new claim (or the
    /// re-claim reverts with {JobMarketBudgetExhausted}), and the lapsed operator is slashed.
    function _chargeLapsedClaim(Job storage j, uint256 jobId, address lapsed, uint128 prices) private {
        uint16 charges = j.charges + 1; // checked: at most 65,535 charges per job
        j.charges = charges;
        uint64 epsilon = j.epsilon;
        uint256 count = j.datasetCount;
        for (uint256 i = 0; i < count; ++i) {
            (uint256 datasetId, uint128 price) = _unpack(j.datasets[i]);
            DatasetRecord storage ds = _datasetRecord(datasetId);
            uint64 remaining = _debitEpsilon(ds, epsilon, epsilon);
            emit BudgetDebited(datasetId, jobId, epsilon, remaining);
            if (epsilon > remaining) {
                revert JobMarketBudgetExhausted(datasetId, epsilon, remaining);
            }
            _reserveEpsilon(ds, epsilon);
            emit EpsilonReserved(datasetId, jobId, epsilon, price);
        }
        emit ClaimCharged(jobId, lapsed, charges);
        _slash(j, jobId, lapsed, prices);
    }

    /// @dev Moves up to `prices` of the stake of `enclave`'s operator to the job's providers, in
    /// proportion to their prices (the last provider gets the rounding remainder); emits
    /// {StakeSlashed} and a {PaymentCredited} per provider. A slash finds at most the stake left.
    function _slash(Job storage j, uint256 jobId, address enclave, uint128 prices) private {
        address operator = _registry.enclaveOf(enclave).operator;
        Stake storage stake = _stakes[operator];
        uint128 amount = stake.amount < prices ? stake.amount : prices;
        if (amount == 0) {
            return;
        }
        // unchecked: amount <= stake.amount <= _totalStake.
        unchecked {
            stake.amount -= amount;
            _totalStake -= amount;
        }
        emit StakeSlashed(operator, jobId, amount);
        uint128 left = amount;
        uint256 last = j.datasetCount - 1;
        for (uint256 i = 0; i <= last; ++i) {
            (uint256 datasetId, uint128 price) = _unpack(j.datasets[i]);
            // amount * price fits 256 bits; share <= left because Σ price == prices.
            uint128 share = i == last ? left : uint128((uint256(amount) * price) / prices);
            left -= share;
            _credit(_datasetRecord(datasetId).provider, jobId, share);
        }
    }

    /// @dev Σ of the job's price snapshots (what its providers are owed for its ε).
    function _sumPrices(Job storage j) private view returns (uint128 prices) {
        uint256 count = j.datasetCount;
        for (uint256 i = 0; i < count; ++i) {
            (, uint128 price) = _unpack(j.datasets[i]);
            prices += price;
        }
    }

    /// @dev A lease starting now: `claimLease` seconds, but never past the completion deadline.
    function _leaseEnd(uint32 completionDeadline) private view returns (uint32) {
        uint256 end = block.timestamp + claimLease;
        return end < completionDeadline ? uint32(end) : completionDeadline;
    }

    /// @dev Adds `amount` to `account`'s pending withdrawal and emits {PaymentCredited}; a zero
    /// amount (free dataset, no worker fee, no change) is skipped.
    function _credit(address account, uint256 jobId, uint128 amount) private {
        if (amount == 0) {
            return;
        }
        _balances[account].pending += amount;
        emit PaymentCredited(account, jobId, amount);
    }

    /// @dev The checks of {submitResult}, in the documented order; returns the enclave's operator.
    function _checkReceipt(Job storage j, uint256 jobId, Receipt calldata receipt, bytes calldata signature)
        private
        view
        returns (address operator)
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
        operator = _registry.activeOperator(signer, ROLE_TRAINER);
        if (operator == address(0)) {
            revert JobMarketEnclaveNotActive(signer);
        }
    }

    /// @dev keccak256 of the content hashes of the job's datasets, in job order.
    function _datasetsHash(Job storage j) private view returns (bytes32) {
        uint256 count = j.datasetCount;
        bytes32[] memory hashes = new bytes32[](count);
        for (uint256 i = 0; i < count; ++i) {
            (uint256 datasetId,) = _unpack(j.datasets[i]);
            hashes[i] = _datasetRecord(datasetId).contentHash;
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

    /// @dev Splits a packed job entry into its dataset id and price snapshot.
    function _unpack(uint128 entry) private pure returns (uint256 datasetId, uint128 price) {
        datasetId = uint32(entry);
        price = entry >> 32;
    }

    /// @dev The job `jobId`; reverts with {JobMarketUnknownJob} if it does not exist.
    function _existingJob(uint256 jobId) private view returns (Job storage) {
        if (jobId == 0 || jobId > _jobCount) {
            revert JobMarketUnknownJob(jobId);
        }
        return _jobs[jobId];
    }
}
