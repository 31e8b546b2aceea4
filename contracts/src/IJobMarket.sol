// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {IDatasetRegistry} from "./IDatasetRegistry.sol";

/**
 * @title IJobMarket
 * @notice Training jobs over listed datasets: escrow, privacy-budget ledger and pull payments.
 * @dev Units as in {IDatasetRegistry}: ε micro-units (1e6), δ scaled by 1e18, wei, unix seconds.
 */
interface IJobMarket is IDatasetRegistry {
    /// @notice Lifecycle of a job (a job only moves down this list).
    enum JobStatus {
        None, // 0: no such job
        Open, // 1: escrow locked, ε reserved on every dataset, waiting for a worker
        Claimed, // 2: a trainer enclave took it; the key manager may release the data keys
        Completed, // 3: receipt accepted, budgets debited, providers and worker credited
        Expired // 4: deadline passed; the consumer's escrow was credited back
    }

    /// @notice The result statement a trainer enclave signs with EIP-712.
    struct Receipt {
        uint256 jobId;
        bytes32 datasetsHash; // keccak256(abi.encodePacked(contentHash of each dataset, in job order))
        bytes32 modelHash; // hash of the encrypted model
        bytes32 resultHash; // hash of the full result bundle
        bytes32 metricsHash; // hash of the (differentially private) metrics
        uint64 epsilonSpent; // ε (micro-units) actually spent, <= the job's ε
    }

    /// @notice A job as returned by {job}.
    struct JobInfo {
        address consumer;
        JobStatus status;
        address enclave;
        address operator;
        bytes32 modelSpecHash;
        uint64 epsilon;
        uint64 delta;
        bytes32 consumerKey;
        uint256 escrow; // wei locked at creation: sum of prices + workerFee
        uint256 workerFee;
        uint64 claimDeadline;
        uint64 completionDeadline;
        uint64 epsilonSpent;
        bytes32 modelHash;
        bytes32 resultHash;
        uint256[] datasetIds;
    }

    /// @dev `count` datasets were given; 1..`max` are allowed.
    error JobMarketInvalidDatasetCount(uint256 count, uint256 max);
    /// @dev ε and δ must both be positive.
    error JobMarketInvalidPrivacyParameters(uint64 epsilon, uint64 delta);
    /// @dev Deadlines must satisfy now < claimDeadline <= completionDeadline.
    error JobMarketInvalidDeadlines(uint64 claimDeadline, uint64 completionDeadline);
    /// @dev No dataset has id `datasetId`.
    error JobMarketUnknownDataset(uint256 datasetId);
    /// @dev `datasetId` appears twice in the job's dataset list.
    error JobMarketDuplicateDataset(uint256 datasetId);
    /// @dev The dataset's listing expired at `expiry`.
    error JobMarketDatasetExpired(uint256 datasetId, uint64 expiry);
    /// @dev `consumer` is not on the dataset's allow-list.
    error JobMarketConsumerNotAllowed(uint256 datasetId, address consumer);
    /// @dev The job's ε (`requested`) exceeds the dataset's maxEpsilonPerJob (`allowed`).
    error JobMarketEpsilonPerJobExceeded(uint256 datasetId, uint64 requested, uint64 allowed);
    /// @dev The job's δ (`requested`) exceeds the dataset's maxDelta (`allowed`).
    error JobMarketDeltaExceeded(uint256 datasetId, uint64 requested, uint64 allowed);
    /// @dev The dataset has only `remaining` ε left, less than `requested`.
    error JobMarketBudgetExhausted(uint256 datasetId, uint64 requested, uint64 remaining);
    /// @dev `sent` wei were attached; exactly `required` (sum of prices + workerFee) are needed.
    error JobMarketIncorrectPayment(uint256 sent, uint256 required);
    /// @dev The job is in `status`, which does not allow the operation.
    error JobMarketInvalidJobStatus(uint256 jobId, JobStatus status);
    /// @dev The job could only be claimed until `claimDeadline`.
    error JobMarketClaimDeadlinePassed(uint256 jobId, uint64 claimDeadline);
    /// @dev `enclave` is not an active trainer in the enclave registry.
    error JobMarketEnclaveNotActive(address enclave);
    /// @dev `sender` is not the enclave's registered `operator`.
    error JobMarketNotEnclaveOperator(address sender, address operator);
    /// @dev The result had to be submitted by `completionDeadline`.
    error JobMarketCompletionDeadlinePassed(uint256 jobId, uint64 completionDeadline);
    /// @dev The receipt is for job `receiptJobId`, not `jobId`.
    error JobMarketReceiptJobMismatch(uint256 jobId, uint256 receiptJobId);
    /// @dev The receipt's datasets hash `got` differs from the job's `expected`.
    error JobMarketReceiptDatasetsMismatch(bytes32 expected, bytes32 got);
    /// @dev The receipt claims `spent` ε, more than the `reserved` ε of the job.
    error JobMarketEpsilonOverspent(uint64 spent, uint64 reserved);
    /// @dev The receipt was signed by `recovered`, not by the job's enclave `expected`.
    error JobMarketInvalidReceiptSigner(address recovered, address expected);
    /// @dev The job in `status` has not passed the deadline that would let it expire.
    error JobMarketNotExpirable(uint256 jobId, JobStatus status);
    /// @dev `account` has no pending withdrawal.
    error JobMarketNothingToWithdraw(address account);
    /// @dev Sending `amount` wei to `account` failed.
    error JobMarketWithdrawFailed(address account, uint256 amount);
    /// @dev No job has id `jobId`.
    error JobMarketUnknownJob(uint256 jobId);

    /// @dev A consumer created a job and locked `escrow` wei.
    event JobCreated(
        uint256 indexed jobId,
        address indexed consumer,
        uint256[] datasetIds,
        bytes32 modelSpecHash,
        uint64 epsilon,
        uint64 delta,
        bytes32 consumerKey,
        uint256 escrow,
        uint256 workerFee,
        uint64 claimDeadline,
        uint64 completionDeadline
    );
    /// @dev `epsilon` of the dataset's budget was reserved for the job.
    event EpsilonReserved(uint256 indexed datasetId, uint256 indexed jobId, uint64 epsilon);
    /// @dev A reservation was released unspent (job expired before being claimed).
    event EpsilonReleased(uint256 indexed datasetId, uint256 indexed jobId, uint64 epsilon);
    /// @dev The job's reservation was settled: `epsilonSpent` debited, `remaining` left.
    event BudgetDebited(uint256 indexed datasetId, uint256 indexed jobId, uint64 epsilonSpent, uint64 remaining);
    /// @dev A trainer enclave, through its operator, claimed the job.
    event JobClaimed(uint256 indexed jobId, address indexed enclave, address indexed operator);
    /// @dev The enclave's signed receipt was accepted.
    event ResultSubmitted(
        uint256 indexed jobId,
        address indexed enclave,
        bytes32 modelHash,
        bytes32 resultHash,
        bytes32 metricsHash,
        uint64 epsilonSpent
    );
    /// @dev `amount` wei were added to `account`'s pending withdrawal because of the job.
    event PaymentCredited(address indexed account, uint256 indexed jobId, uint256 amount);
    /// @dev The job expired and `refund` wei were credited to its consumer.
    event JobExpired(uint256 indexed jobId, uint256 refund);
    /// @dev `account` withdrew `amount` wei.
    event Withdrawn(address indexed account, uint256 amount);

    /**
     * @notice Creates a training job over `datasetIds`, locking `msg.value` in escrow and reserving
     * `epsilon` on every dataset, all or nothing.
     * @dev Requirements, checked in this order: 1..MAX_DATASETS_PER_JOB datasets; ε > 0 and δ > 0;
     * now < claimDeadline <= completionDeadline; then per dataset: it exists, is not a duplicate,
     * has not expired, allows the caller, ε <= maxEpsilonPerJob, δ <= maxDelta, ε <= remaining
     * budget; finally msg.value == sum(pricePerJob) + workerFee. Each dataset's price is
     * snapshotted with the job; providers are paid that snapshot. Ids start at 1.
     * Emits {JobCreated} and one {EpsilonReserved} per dataset.
     * @param datasetIds the datasets to train on, in the order the receipt's datasetsHash uses.
     * @param modelSpecHash hash of the JSON model specification.
     * @param epsilon ε (micro-units) to reserve on every dataset.
     * @param delta δ (scaled by 1e18).
     * @param consumerKey the consumer's X25519 public key the model is encrypted to.
     * @param workerFee wei paid to the operator of the enclave that completes the job.
     * @param claimDeadline last second at which the job can be claimed.
     * @param completionDeadline last second at which the result can be submitted.
     * @return jobId the new job's id.
     */
    function createJob(
        uint256[] calldata datasetIds,
        bytes32 modelSpecHash,
        uint64 epsilon,
        uint64 delta,
        bytes32 consumerKey,
        uint256 workerFee,
        uint64 claimDeadline,
        uint64 completionDeadline
    ) external payable returns (uint256 jobId);

    /**
     * @notice Claims an open job for the trainer enclave `enclave`, run by the caller.
     * @dev Requirements: the job is Open; now <= claimDeadline; `enclave` is an active trainer;
     * the caller is its registered operator. Records enclave and operator.
     * Emits {JobClaimed}.
     */
    function claimJob(uint256 jobId, address enclave) external;

    /**
     * @notice Settles a claimed job with the enclave's signed receipt. Callable by anyone.
     * @dev Requirements, in order: the job is Claimed; now <= completionDeadline;
     * receipt.jobId == jobId; receipt.datasetsHash == {datasetsHashOf}(jobId);
     * receipt.epsilonSpent <= the job's ε; `signature` (EIP-712, see {hashReceipt}) recovers to
     * the job's enclave; that enclave is still an active trainer. Each dataset's reservation is
     * replaced by the ε actually spent; each provider is credited its price snapshot and the
     * operator the worker fee (pull payments, see {withdraw}).
     * Emits {BudgetDebited} per dataset, {PaymentCredited} per provider and for the operator,
     * then {ResultSubmitted}.
     */
    function submitResult(uint256 jobId, Receipt calldata receipt, bytes calldata signature) external;

    /**
     * @notice Expires a job whose deadline passed and credits the escrow back to its consumer.
     * Callable by anyone.
     * @dev Requirements: the job is Open and now > claimDeadline (the reservation is released),
     * or Claimed and now > completionDeadline (the reservation is debited in full: the data may
     * have been decrypted).
     * Emits {EpsilonReleased} or {BudgetDebited} per dataset, {PaymentCredited} and {JobExpired}.
     */
    function expireJob(uint256 jobId) external;

    /**
     * @notice Sends the caller all its pending payments.
     * @dev Requirements: the pending amount is non-zero; the transfer succeeds. Non-reentrant;
     * the balance is zeroed before the transfer.
     * Emits {Withdrawn}.
     */
    function withdraw() external;

    /// @notice Wei that `account` can withdraw.
    function pendingWithdrawal(address account) external view returns (uint256);

    /// @notice The job `jobId`. Reverts with {JobMarketUnknownJob} if unknown.
    function job(uint256 jobId) external view returns (JobInfo memory);

    /// @notice Number of jobs created so far (also the latest id).
    function jobCount() external view returns (uint256);

    /// @notice Sum of the escrow of all Open and Claimed jobs.
    function lockedEscrow() external view returns (uint256);

    /// @notice The datasets hash a receipt for `jobId` must carry. Reverts with
    /// {JobMarketUnknownJob} if unknown.
    function datasetsHashOf(uint256 jobId) external view returns (bytes32);

    /// @notice The EIP-712 digest of `receipt` under this market's domain.
    function hashReceipt(Receipt calldata receipt) external view returns (bytes32);

    /// @notice Address of the {IEnclaveRegistry} consulted for enclaves.
    function registry() external view returns (address);
}
