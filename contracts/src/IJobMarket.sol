// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {IDatasetRegistry} from "./IDatasetRegistry.sol";

/**
 * @title IJobMarket
 * @notice Training jobs over listed datasets: escrow, privacy-budget ledger and pull payments.
 * @dev Units as in {IDatasetRegistry}: ε micro-units (1e6), δ scaled by 1e18, amounts in the
 * market's payment unit ({paymentToken}: native currency when zero, else that ERC-20), unix seconds.
 */
interface IJobMarket is IDatasetRegistry {
    /// @notice Lifecycle of a job (a job only moves down this list, skipping some).
    enum JobStatus {
        None, // 0: no such job
        Open, // 1: escrow locked, ε reserved on every dataset, waiting for a worker
        Claimed, // 2: a trainer enclave holds it under a lease; the key manager may release the data keys
        Completed, // 3: receipt accepted, budgets debited, providers and worker credited
        Expired, // 4: deadline passed; the consumer's escrow was credited back
        Cancelled // 5: the consumer cancelled it before any claim; escrow credited back
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

    /// @notice What a consumer asks for in {createJob}.
    struct JobRequest {
        uint256[] datasetIds; // the datasets to train on, in the order the receipt's datasetsHash uses
        bytes32 modelSpecHash; // hash of the JSON model specification
        uint64 epsilon; // ε (micro-units) to reserve on every dataset
        uint64 delta; // δ (scaled by 1e18)
        bytes32 consumerKey; // the consumer's X25519 public key the model is encrypted to
        uint256 workerFee; // paid to the operator of the enclave that completes the job
        uint256 maxTotalPrice; // the most the consumer agrees to pay (prices + worker fee)
        uint64 claimDeadline; // last second at which the job can be claimed
        uint64 completionDeadline; // last second at which the result can be submitted
    }

    /// @notice A job as returned by {job}. The result hashes are in {ResultSubmitted}.
    struct JobInfo {
        address consumer;
        JobStatus status;
        address enclave;
        address operator; // the enclave's current operator (zero before a claim)
        bytes32 modelSpecHash;
        uint64 epsilon;
        uint64 delta;
        bytes32 consumerKey;
        uint256 escrow; // locked at creation: sum of price snapshots + workerFee
        uint256 workerFee;
        uint64 claimDeadline; // while Open (zero otherwise; the creation deadline is in {JobCreated})
        uint64 completionDeadline;
        uint64 epsilonSpent;
        uint256[] datasetIds;
        uint256[] prices; // each dataset's price snapshot, in datasetIds order
        uint64 leaseExpiry; // while Claimed: the claim lapses after this second unless renewed
        uint16 charges; // lapsed claims whose ε was debited (each re-claim after a lapse adds one)
    }

    /// @dev `count` datasets were given; 1..`max` are allowed.
    error JobMarketInvalidDatasetCount(uint256 count, uint256 max);
    /// @dev ε and δ must both be positive.
    error JobMarketInvalidPrivacyParameters(uint64 epsilon, uint64 delta);
    /// @dev Deadlines must satisfy now < claimDeadline <= completionDeadline < 2^32.
    error JobMarketInvalidDeadlines(uint64 claimDeadline, uint64 completionDeadline);
    /// @dev No dataset has id `datasetId`.
    error JobMarketUnknownDataset(uint256 datasetId);
    /// @dev `datasetId` appears twice in the job's dataset list.
    error JobMarketDuplicateDataset(uint256 datasetId);
    /// @dev The dataset is paused or delisted (`status`) and accepts no new jobs.
    error JobMarketDatasetUnavailable(uint256 datasetId, DatasetStatus status);
    /// @dev The dataset's listing expired at `expiry`.
    error JobMarketDatasetExpired(uint256 datasetId, uint64 expiry);
    /// @dev `consumer` is not on the dataset's allow-list.
    error JobMarketConsumerNotAllowed(uint256 datasetId, address consumer);
    /// @dev The model spec `modelSpecHash` is not on the dataset's model allow-list.
    error JobMarketModelNotAllowed(uint256 datasetId, bytes32 modelSpecHash);
    /// @dev The job's ε (`requested`) exceeds the dataset's maxEpsilonPerJob (`allowed`).
    error JobMarketEpsilonPerJobExceeded(uint256 datasetId, uint64 requested, uint64 allowed);
    /// @dev The job's δ (`requested`) exceeds the dataset's maxDelta (`allowed`).
    error JobMarketDeltaExceeded(uint256 datasetId, uint64 requested, uint64 allowed);
    /// @dev The dataset has only `remaining` ε left, less than `requested`.
    error JobMarketBudgetExhausted(uint256 datasetId, uint64 requested, uint64 remaining);
    /// @dev The job costs `required` (prices + worker fee), more than the consumer's `maxTotalPrice`.
    error JobMarketPriceAboveLimit(uint256 required, uint256 maxTotalPrice);
    /// @dev `sent` native currency was attached; `expected` was needed (maxTotalPrice in native
    /// mode, zero in token mode).
    error JobMarketIncorrectPayment(uint256 sent, uint256 expected);
    /// @dev The token transfer in delivered `received`, not `expected` (fee-on-transfer tokens
    /// are not supported).
    error JobMarketTokenTransferShortfall(uint256 expected, uint256 received);
    /// @dev The job is in `status`, which does not allow the operation.
    error JobMarketInvalidJobStatus(uint256 jobId, JobStatus status);
    /// @dev Only the job's consumer may do this; `caller` is not.
    error JobMarketNotConsumer(uint256 jobId, address caller);
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
    /// @dev Sending `amount` to `account` failed.
    error JobMarketWithdrawFailed(address account, uint256 amount);
    /// @dev No job has id `jobId`.
    error JobMarketUnknownJob(uint256 jobId);
    /// @dev Constructor: the claim lease must be positive and at most the unbonding period.
    error JobMarketInvalidTimings(uint32 claimLease, uint32 unbondingPeriod);
    /// @dev The job's claim holds until `leaseExpiry`; only its operator may give it back before.
    error JobMarketLeaseActive(uint256 jobId, uint64 leaseExpiry);
    /// @dev The job's lease lapsed at `leaseExpiry`; it can no longer be renewed.
    error JobMarketLeaseLapsed(uint256 jobId, uint64 leaseExpiry);
    /// @dev The statement that no key was released is not signed by an active key manager (`signer`).
    error JobMarketInvalidKeyManagerSignature(address signer);
    /// @dev The operator's stake `stake` is below the job's Σ prices `required`.
    error JobMarketStakeTooLow(address operator, uint256 stake, uint256 required);
    /// @dev The operator asked to unstake (unbonding until `unbondingEnd`) and may not claim.
    error JobMarketOperatorUnbonding(address operator, uint64 unbondingEnd);
    /// @dev A zero stake deposit, or an unstake request with no stake or one already pending (`amount`).
    error JobMarketInvalidStake(uint256 amount);
    /// @dev The stake can be withdrawn only after an unstake request's unbonding ends (`unbondingEnd`, 0: none).
    error JobMarketStakeLocked(address operator, uint64 unbondingEnd);

    /// @dev A consumer created a job and locked `escrow` (= Σ prices + workerFee).
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
    /// @dev `epsilon` of the dataset's budget was reserved for the job, which will pay `price`.
    event EpsilonReserved(uint256 indexed datasetId, uint256 indexed jobId, uint64 epsilon, uint256 price);
    /// @dev A reservation was released unspent (job cancelled, or expired before being claimed).
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
    /// @dev `amount` was added to `account`'s pending withdrawal because of the job.
    event PaymentCredited(address indexed account, uint256 indexed jobId, uint256 amount);
    /// @dev The job expired and `refund` was credited to its consumer.
    event JobExpired(uint256 indexed jobId, uint256 refund);
    /// @dev The consumer cancelled the open job and `refund` was credited back.
    event JobCancelled(uint256 indexed jobId, uint256 refund);
    /// @dev `account` withdrew `amount`.
    event Withdrawn(address indexed account, uint256 amount);
    /// @dev The holder's operator renewed the claim on the job until `leaseExpiry`.
    event LeaseRenewed(uint256 indexed jobId, address indexed enclave, uint64 leaseExpiry);
    /// @dev The claim of `enclave` was given back (the key manager stated no key was released
    /// under it); the job is Open again until its completion deadline, its ε still reserved.
    event ClaimReleased(uint256 indexed jobId, address indexed enclave, uint16 charges);
    /// @dev A re-claim charged the lapsed claim of `enclave`: each dataset's ε was debited (see
    /// the {BudgetDebited} and {EpsilonReserved} before this event); `charges` is the new count.
    event ClaimCharged(uint256 indexed jobId, address indexed enclave, uint16 charges);
    /// @dev `operator` added `amount` to its stake, now `total`.
    event StakeDeposited(address indexed operator, uint256 amount, uint256 total);
    /// @dev `operator` asked to withdraw its stake `amount`, possible from `unbondingEnd`.
    event UnstakeRequested(address indexed operator, uint256 amount, uint64 unbondingEnd);
    /// @dev `operator`'s stake `amount` was credited to its pending withdrawal.
    event StakeWithdrawn(address indexed operator, uint256 amount);
    /// @dev `amount` of `operator`'s stake went to the job's providers (a {PaymentCredited} each).
    event StakeSlashed(address indexed operator, uint256 indexed jobId, uint256 amount);

    /**
     * @notice Creates a training job over `datasetIds`, locking its price in escrow and reserving
     * `epsilon` on every dataset, all or nothing.
     * @dev Requirements, checked in this order: the market is not paused; 1..MAX_DATASETS_PER_JOB
     * datasets; ε > 0 and δ > 0; now < claimDeadline <= completionDeadline <= now +
     * {unbondingPeriod} / 2 (so every job an operator holds ends at least half an unbonding
     * period before its stake can leave: time to expire it and slash); then per
     * dataset: it exists, is not a duplicate, is Active, has not expired, allows the caller and
     * `modelSpecHash`, ε <= maxEpsilonPerJob, δ <= maxDelta, ε <= remaining budget; then
     * required = Σ pricePerJob + workerFee <= `maxTotalPrice` (the slippage guard against a price
     * raised in the same block); finally payment: in native mode msg.value == maxTotalPrice and
     * `maxTotalPrice - required` is credited back to the caller at once; in token mode msg.value
     * == 0 and `required` tokens are pulled with transferFrom (approve them first). Each
     * dataset's price is snapshotted with the job; providers are paid that snapshot. Ids start at 1.
     * Emits one {EpsilonReserved} per dataset, then {JobCreated}, then {PaymentCredited} for any
     * change (in that order).
     * @param request the job's datasets, model spec, privacy parameters, key, fee, price limit
     * and deadlines (see {JobRequest}).
     * @return jobId the new job's id.
     */
    function createJob(JobRequest calldata request) external payable returns (uint256 jobId);

    /**
     * @notice Cancels an open (unclaimed) job: every reservation is released and the full escrow
     * is credited back to the consumer.
     * @dev Requirements: the caller is the job's consumer; the job is Open. Allowed while the
     * market is paused. Emits {EpsilonReleased} per dataset, {PaymentCredited}, then {JobCancelled}.
     */
    function cancelJob(uint256 jobId) external;

    /**
     * @notice Claims a job for the trainer enclave `enclave`, run by the caller, under a lease of
     * {claimLease} seconds (capped at the completion deadline) that the caller renews with
     * {renewLease}. Also re-claims a Claimed job whose lease lapsed: the lapsed claim may have
     * had the data keys, so it is charged: each dataset's ε is debited in full and reserved
     * again for this claim, and the lapsed operator's stake is slashed to the providers.
     * @dev Requirements, in order: the market is not paused; the job is Open and now <=
     * claimDeadline, or Claimed with now > leaseExpiry and now <= completionDeadline; `enclave`
     * is an active trainer (approved, unrevoked measurement; unexpired certificate; enclave not
     * revoked); the caller is its registered operator; on a re-claim, every dataset has ε left
     * for the new reservation (the charge and slash happen here); then the operator is not
     * unbonding and its stake (after any slash) >= Σ of the job's prices. Emits, on a re-claim, {BudgetDebited} and {EpsilonReserved} per dataset,
     * {ClaimCharged}, {StakeSlashed} and {PaymentCredited} per provider if a stake was slashed;
     * then {JobClaimed}.
     */
    function claimJob(uint256 jobId, address enclave) external;

    /**
     * @notice Extends the claim on a job by {claimLease} seconds from now (capped at the
     * completion deadline). Allowed while the market is paused, so a pause never lapses a lease.
     * @dev Requirements: the job is Claimed; now <= leaseExpiry; the caller is the holding
     * enclave's operator. Emits {LeaseRenewed}.
     */
    function renewLease(uint256 jobId) external;

    /**
     * @notice Gives a claimed job back, Open again until its completion deadline with its ε still
     * reserved and nothing charged, on an active key manager's EIP-712 statement
     * `ClaimRelease(jobId, enclave, charges)` that it released no data key of the job to the
     * holding enclave under this claim and never will. Allowed while paused.
     * @dev Requirements: the job is Claimed; the caller is the holder's operator, or the lease
     * lapsed; `keyManagerSignature` recovers to an active key manager. Emits {ClaimReleased}.
     */
    function releaseClaim(uint256 jobId, bytes calldata keyManagerSignature) external;

    /**
     * @notice Settles a claimed job with the enclave's signed receipt. Callable by anyone.
     * @dev Requirements, in order: the market is not paused; the job is Claimed;
     * now <= completionDeadline; receipt.jobId == jobId; receipt.datasetsHash ==
     * {datasetsHashOf}(jobId); receipt.epsilonSpent <= the job's ε; `signature` (EIP-712 under
     * this contract's domain, which binds chain id and address; see {hashReceipt}) recovers to
     * the job's enclave; that enclave is still an active trainer. Each dataset's reservation is
     * replaced by the ε actually spent (the rest is released); each provider is credited its
     * price snapshot and the enclave's operator the worker fee (pull payments, see {withdraw}).
     * Emits {BudgetDebited} per dataset, {PaymentCredited} per non-zero payment, then
     * {ResultSubmitted}.
     */
    function submitResult(uint256 jobId, Receipt calldata receipt, bytes calldata signature) external;

    /**
     * @notice Expires a job whose deadline passed and credits the escrow back to its consumer.
     * Callable by anyone, also while the market is paused.
     * @dev Requirements: the job is Open and now > claimDeadline (the reservation is released),
     * or Claimed and now > completionDeadline or now > leaseExpiry + {claimLease} (the lease
     * lapsed and nobody re-claimed it for a whole lease: the reservation is debited in full, the
     * data may have been decrypted, and the holder's operator is slashed up to Σ prices to the
     * providers, in proportion to their prices).
     * Emits {EpsilonReleased} or {BudgetDebited} per dataset, {PaymentCredited}, for a Claimed
     * job {StakeSlashed} and {PaymentCredited} per provider if a stake was slashed, then {JobExpired}.
     */
    function expireJob(uint256 jobId) external;

    /**
     * @notice Adds `amount` to the caller's operator stake (native: send exactly `amount`;
     * token: approve it first). A claim needs a stake of at least the job's Σ prices.
     * @dev Requirements: amount > 0; payment as described. Non-reentrant. Emits {StakeDeposited}.
     */
    function depositStake(uint256 amount) external payable;

    /**
     * @notice Starts the unbonding of the caller's whole stake: it can claim no more jobs and may
     * withdraw the stake {unbondingPeriod} seconds from now (every job it holds ends at least
     * half that period earlier, because no job runs longer than {unbondingPeriod} / 2). Slashes still apply until the withdrawal.
     * @dev Requirements: a non-zero stake, not already unbonding. Emits {UnstakeRequested}.
     */
    function requestUnstake() external;

    /**
     * @notice Moves the caller's unbonded stake to its pending withdrawal (then {withdraw}).
     * @dev Requirements: an unstake request whose unbonding ended. Emits {StakeWithdrawn} and
     * {PaymentCredited} (with job id 0).
     */
    function withdrawStake() external;

    /**
     * @notice Sends the caller all its pending payments (native currency or the payment token).
     * @dev Requirements: the pending amount is non-zero; the transfer succeeds. Non-reentrant;
     * the balance is zeroed before the transfer. Allowed while the market is paused.
     * Emits {Withdrawn}.
     */
    function withdraw() external;

    /**
     * @notice Emergency stop: no new listings, jobs, claims or settlements. Cancels, expiries,
     * withdrawals and providers' own changes stay possible, so nobody's money is stuck.
     * @dev Requirements: caller holds PAUSER_ROLE. Emits {Pausable-Paused}.
     */
    function pause() external;

    /// @notice Ends an emergency stop. @dev Requirements: caller holds DEFAULT_ADMIN_ROLE.
    function unpause() external;

    /// @notice Amount `account` can withdraw.
    function pendingWithdrawal(address account) external view returns (uint256);

    /// @notice The job `jobId`. Reverts with {JobMarketUnknownJob} if unknown.
    function job(uint256 jobId) external view returns (JobInfo memory);

    /// @notice Number of jobs created so far (also the latest id).
    function jobCount() external view returns (uint256);

    /// @notice Sum of the escrow of all Open and Claimed jobs.
    function lockedEscrow() external view returns (uint256);

    /// @notice `operator`'s stake and the end of its unbonding (0 if it has not asked to leave).
    function stakeOf(address operator) external view returns (uint256 amount, uint64 unbondingEnd);

    /// @notice Sum of all operators' stakes.
    function totalStake() external view returns (uint256);

    /// @notice Seconds a claim, or a lease renewal, holds a job.
    function claimLease() external view returns (uint32);

    /// @notice Seconds from an unstake request to the withdrawal; no job runs longer than half of it.
    function unbondingPeriod() external view returns (uint32);

    /// @notice The datasets hash a receipt for `jobId` must carry. Reverts with
    /// {JobMarketUnknownJob} if unknown.
    function datasetsHashOf(uint256 jobId) external view returns (bytes32);

    /// @notice The EIP-712 digest of `receipt` under this market's domain.
    function hashReceipt(Receipt calldata receipt) external view returns (bytes32);

    /// @notice Address of the {IEnclaveRegistry} consulted for enclaves.
    function registry() external view returns (address);

    /// @notice The ERC-20 token all payments use, or the zero address for the native currency.
    function paymentToken() external view returns (address);
}
