// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {IJobMarket} from "./IJobMarket.sol";
import {IPullPayments} from "./IPullPayments.sol";

/**
 * @title IModelMarket
 * @notice Private ML-as-a-service: model owners list sealed models (weights encrypted, served only
 * inside attested inference enclaves) and clients pay per query through payment channels.
 * A client deposits into its channel (modelId, client), which is bound to one inference enclave,
 * and signs EIP-712 {Voucher}s carrying the CUMULATIVE amount owed and rows asked on that channel;
 * the operator of that enclave redeems the latest one whenever it likes, one transaction for any
 * number of queries. Binding the channel to one enclave at a time stops a client from making out
 * vouchers with the same totals to several enclaves and being served by each while paying once. Redeeming pays the increase over the last redeemed voucher: an operator fee to the
 * redeeming operator, the rest to the model owner, both as pull payments ({withdraw}). A client
 * leaves with {requestClose}, then {reclaim} after {closeDelay} seconds, which gives the operator
 * that long to redeem what was served.
 * @dev Amounts are in the market's payment unit ({paymentToken}: native currency when zero, else
 * that ERC-20); times are unix seconds. Payments, with their errors and events, come from
 * {IPullPayments} (in {PaymentCredited}, `id` is the model id).
 */
interface IModelMarket is IPullPayments {
    /// @notice Lifecycle of a listing (enclave_worker/trusted/onchain.py ModelStatus mirrors it).
    enum ModelStatus {
        None, // 0: no such model
        Active, // 1: served, deposits accepted
        Paused, // 2: not served, no deposits; the owner may resume it
        Delisted // 3: final; vouchers already signed can still be redeemed
    }

    /// @notice What a model owner lists (all but price and allow-list are fixed at listing).
    struct ModelTerms {
        bytes32 weightsHash; // SHA-256 of the plaintext safetensors
        bytes32 specHash; // SHA-256 of the model-spec JSON
        bytes32 contentHash; // SHA-256 of the encrypted weights (STRL ciphertext) in the blob store
        uint128 pricePerQuery; // per row
        uint8 outputPolicy; // OUTPUT_LABEL, OUTPUT_TOP_K or OUTPUT_PROBABILITIES
        uint8 outputParam; // 0 for LABEL; k >= 1 for TOP_K; decimals 0..6 for PROBABILITIES
        uint64 queryCap; // rows per client over the channel's life (the extraction budget), >= 1
        uint64 expiry; // no deposits at or after this second; 0 = never
        bool restricted; // only allow-listed clients may deposit
        uint256 sourceJobId; // the JobMarket job that trained it; 0 = not trained here (set by listModelFromJob only)
        uint64 epsilon; // ε (micro-units) that job spent; 0 when not trained here (taken from the job)
        uint64 delta; // δ (scaled by 1e18) of that job; 0 when not trained here (taken from the job)
    }

    /// @notice A listing as returned by {modelOf}.
    struct ModelInfo {
        address owner;
        ModelStatus status;
        ModelTerms terms;
    }

    /// @notice A client's channel on one model, as returned by {channelOf}.
    struct ChannelInfo {
        uint256 deposited; // the ceiling a voucher's cumulative amount may reach (reclaim lowers it to `redeemed`)
        uint256 redeemed; // cumulative amount of the last redeemed voucher
        uint64 redeemedQueries; // cumulative rows of the last redeemed voucher
        uint64 closeRequestedAt; // second of the pending close request; 0 = none
        address enclave; // the inference enclave the channel is bound to; zero before the first deposit
    }

    /// @notice A client's cumulative promise to pay, signed with EIP-712 under this market's domain.
    struct Voucher {
        uint256 modelId;
        address client; // the signer, owner of the channel (modelId, client)
        address enclave; // signer address of the inference enclave served by: the channel's; only its operator redeems
        uint256 amount; // total owed on the channel (cumulative)
        uint64 queries; // total rows asked on the channel (cumulative)
    }

    /// @dev The output policy `policy` with parameter `param` is not valid.
    error ModelMarketInvalidOutputPolicy(uint8 policy, uint8 param);
    /// @dev The per-client query cap must be at least 1.
    error ModelMarketInvalidQueryCap(uint64 queryCap);
    /// @dev A non-zero expiry must lie in the future.
    error ModelMarketInvalidExpiry(uint64 expiry);
    /// @dev The weights, spec and content hashes must all be non-zero.
    error ModelMarketInvalidHashes();
    /// @dev No model has id `modelId`.
    error ModelMarketUnknownModel(uint256 modelId);
    /// @dev Only the model's owner may do this; `caller` is not.
    error ModelMarketNotOwner(uint256 modelId, address caller);
    /// @dev The model is in `status`, which does not allow the operation.
    error ModelMarketInvalidStatus(uint256 modelId, ModelStatus status);
    /// @dev The model's listing expired at `expiry`.
    error ModelMarketModelExpired(uint256 modelId, uint64 expiry);
    /// @dev `client` is not on the restricted model's allow-list.
    error ModelMarketClientNotAllowed(uint256 modelId, address client);
    /// @dev `count` entries were given; at most `max` are allowed per call.
    error ModelMarketTooManyEntries(uint256 count, uint256 max);
    /// @dev A deposit must be positive.
    error ModelMarketInvalidDeposit(uint256 amount);
    /// @dev `enclave` is not an active inference enclave in the registry.
    error ModelMarketEnclaveNotActive(address enclave);
    /// @dev `sender` is not the enclave's registered `operator`.
    error ModelMarketNotEnclaveOperator(address sender, address operator);
    /// @dev The voucher's amount `amount` does not exceed what the channel already redeemed
    /// (`redeemed`): a replayed or stale voucher.
    error ModelMarketStaleVoucher(uint256 amount, uint256 redeemed);
    /// @dev The voucher's query total `queries` is below the channel's redeemed `redeemedQueries`.
    error ModelMarketQueriesDecreased(uint64 queries, uint64 redeemedQueries);
    /// @dev The voucher's query total `queries` exceeds the model's per-client `queryCap`.
    error ModelMarketQueryCapExceeded(uint64 queries, uint64 queryCap);
    /// @dev The voucher's amount `amount` exceeds the channel's `deposited`.
    error ModelMarketInsufficientDeposit(uint256 amount, uint256 deposited);
    /// @dev The voucher is not signed by its `client` (for this chain, market and fields).
    error ModelMarketInvalidVoucherSignature(address client);
    /// @dev The channel is bound to inference enclave `bound` and still holds credit: a deposit must
    /// name `bound` (a channel is rebound only when it has nothing left to spend, e.g. after a reclaim).
    error ModelMarketChannelBoundElsewhere(uint256 modelId, address client, address bound);
    /// @dev The voucher names enclave `enclave`, but the channel is bound to `bound`.
    error ModelMarketWrongEnclave(address enclave, address bound);
    /// @dev {listModel} takes no training provenance (`sourceJobId`, `epsilon`, `delta` must be
    /// zero): only {listModelFromJob} sets them, from the job market.
    error ModelMarketProvenanceNotAllowed(uint256 sourceJobId, uint64 epsilon, uint64 delta);
    /// @dev The job is in `status`, not Completed.
    error ModelMarketJobNotCompleted(uint256 jobId, IJobMarket.JobStatus status);
    /// @dev Only the job's consumer may list its model; `caller` is not.
    error ModelMarketNotJobConsumer(uint256 jobId, address caller);
    /// @dev The job's model is already listed as `modelId`.
    error ModelMarketJobAlreadyListed(uint256 jobId, uint256 modelId);
    /// @dev The channel has nothing left to reclaim.
    error ModelMarketNothingToReclaim(uint256 modelId, address client);
    /// @dev A close of the channel is already pending since `closeRequestedAt`.
    error ModelMarketClosePending(uint256 modelId, address client, uint64 closeRequestedAt);
    /// @dev No close of the channel was requested.
    error ModelMarketCloseNotRequested(uint256 modelId, address client);
    /// @dev The channel can be reclaimed from `readyAt` on, not before.
    error ModelMarketCloseDelayNotPassed(uint256 modelId, address client, uint256 readyAt);
    /// @dev The operator fee `bps` exceeds `max` basis points.
    error ModelMarketInvalidFee(uint16 bps, uint16 max);
    /// @dev The close delay must be positive.
    error ModelMarketInvalidCloseDelay(uint64 closeDelay);

    /// @dev `owner` listed model `modelId` with `terms`.
    event ModelListed(uint256 indexed modelId, address indexed owner, ModelTerms terms);
    /// @dev The owner set the model's price per query to `pricePerQuery`.
    event ModelRepriced(uint256 indexed modelId, uint128 pricePerQuery);
    /// @dev The model moved to `status` (paused, resumed, delisted).
    event ModelStatusChanged(uint256 indexed modelId, ModelStatus status);
    /// @dev The owner added (`allowed`) or removed `clients` on the model's allow-list.
    event ClientsAllowed(uint256 indexed modelId, address[] clients, bool allowed);
    /// @dev `client`'s channel on the model is now bound to inference enclave `enclave` (first
    /// deposit, or a deposit naming another enclave on a channel with nothing left to spend).
    event ChannelBound(uint256 indexed modelId, address indexed client, address enclave);
    /// @dev `client` deposited `amount` into its channel; `deposited` is the channel's new ceiling.
    event Deposited(uint256 indexed modelId, address indexed client, uint256 amount, uint256 deposited);
    /// @dev `client` asked to close its channel; it can reclaim at `readyAt`.
    event CloseRequested(uint256 indexed modelId, address indexed client, uint256 readyAt);
    /// @dev `client` reclaimed `amount` (credited to it) and closed its channel.
    event Reclaimed(uint256 indexed modelId, address indexed client, uint256 amount);
    /// @dev `operator` redeemed a voucher served by `enclave`: the channel's totals are now
    /// (`amount`, `queries`); `paid` moved out of the channel, `fee` of it to the operator and the
    /// rest to the model's owner.
    event VoucherRedeemed(
        uint256 indexed modelId,
        address indexed client,
        address enclave,
        address indexed operator,
        uint256 amount,
        uint64 queries,
        uint256 paid,
        uint256 fee
    );
    /// @dev Governance set the operator fee to `bps` basis points.
    event OperatorFeeChanged(uint16 bps);

    /**
     * @notice Lists a model owned by the caller, Active; ids start at 1.
     * @dev Requirements: non-zero hashes; a valid output policy and parameter; queryCap >= 1;
     * expiry zero or in the future; sourceJobId, epsilon and delta zero (a model trained by a
     * Sterling job is listed with {listModelFromJob}). Emits {ModelListed}.
     */
    function listModel(ModelTerms calldata terms) external returns (uint256 modelId);

    /**
     * @notice Lists the model trained by job `jobId` of {jobMarket}, owned by the caller, Active:
     * the listing records `sourceJobId = jobId` and the job's ε spent and δ (whatever `terms`
     * says), so its privacy guarantee comes from the chain, not from the owner's word.
     * @dev Requirements: the job is Completed; the caller is its consumer; the job's model is not
     * listed yet (one listing per job); then as {listModel} for the hashes, output policy, cap
     * and expiry. Reverts with the job market's {IJobMarket-JobMarketUnknownJob} for an unknown job.
     * The weights hash is NOT checked here: the job market does not store the result's modelHash
     * (it is only in its {IJobMarket-ResultSubmitted} event). It is checked off-chain, inside
     * enclaves: the key manager takes a job's model for serving only after checking the decrypted
     * weights against the receipt's modelHash, and releases that key only for a listing whose
     * sourceJobId is that job; the inference enclave refuses to load weights whose SHA-256 differs
     * from the listing's weightsHash. A listing with another weightsHash is therefore never served.
     * Emits {ModelListed} with the terms as stored.
     */
    function listModelFromJob(uint256 jobId, ModelTerms calldata terms) external returns (uint256 modelId);

    /// @notice Sets the price per query (vouchers already signed keep their amounts).
    /// @dev Requirements: caller is the owner; not delisted. Emits {ModelRepriced}.
    function setPrice(uint256 modelId, uint128 pricePerQuery) external;

    /// @notice Stops serving and deposits. @dev Requirements: owner; Active. Emits {ModelStatusChanged}.
    function pause(uint256 modelId) external;

    /// @notice Serves again. @dev Requirements: owner; Paused. Emits {ModelStatusChanged}.
    function resume(uint256 modelId) external;

    /// @notice Delists for good; signed vouchers stay redeemable and clients reclaim the rest.
    /// @dev Requirements: owner; not delisted. Emits {ModelStatusChanged}.
    function delist(uint256 modelId) external;

    /// @notice Adds (`allowed`) or removes `clients` on the allow-list of a restricted model.
    /// @dev Requirements: owner; not delisted; at most MAX_LIST_ENTRIES clients. Emits {ClientsAllowed}.
    function setAllowed(uint256 modelId, address[] calldata clients, bool allowed) external;

    /**
     * @notice Adds `amount` to the caller's channel on `modelId`, served by inference enclave
     * `enclave`, and cancels a pending close. The first deposit binds the channel to `enclave`;
     * later deposits must name the same enclave, unless the channel has nothing left to spend
     * (deposited == redeemed: after a reclaim, or fully redeemed), in which case the deposit
     * rebinds it. Only the bound enclave's vouchers are redeemable ({redeem}).
     * @dev Requirements: amount > 0; model Active and not expired; the caller allowed if the model
     * is restricted; `enclave` the channel's enclave, or, when (re)binding, an active
     * ROLE_INFERENCE enclave in the registry; the channel's deposit stays below 2^96;
     * msg.value == amount in native mode, else 0 and `amount` tokens approved. Emits
     * {ChannelBound} when it (re)binds, then {Deposited}.
     */
    function deposit(uint256 modelId, uint256 amount, address enclave) external payable;

    /// @notice Starts closing the caller's channel: after {closeDelay} seconds it may {reclaim}.
    /// @dev Requirements: something left to reclaim; no close pending. Emits {CloseRequested}.
    function requestClose(uint256 modelId) external;

    /// @notice Credits the caller `deposited - redeemed` of its channel and closes it.
    /// @dev Requirements: a close requested at least {closeDelay} seconds ago. Emits {Reclaimed}.
    function reclaim(uint256 modelId) external;

    /**
     * @notice Redeems a client's voucher: pays the increase over the channel's last redeemed amount.
     * @dev Requirements: the caller operates `voucher.enclave`, active as ROLE_INFERENCE;
     * `voucher.enclave` is the enclave the channel is bound to; amount > redeemed; queries >= redeemedQueries and <= the model's queryCap; amount <=
     * deposited; `signature` by `voucher.client` (ECDSA or ERC-1271). Any model status; allowed
     * while a close is pending. Emits {VoucherRedeemed} and {PaymentCredited}.
     */
    function redeem(Voucher calldata voucher, bytes calldata signature) external;

    /// @notice Sets the operator's share of each redeemed payment. @dev Requirements:
    /// DEFAULT_ADMIN_ROLE; bps <= MAX_OPERATOR_FEE_BPS. Emits {OperatorFeeChanged}.
    function setOperatorFee(uint16 bps) external;

    /// @notice The listing `modelId`. Reverts with {ModelMarketUnknownModel} if unknown.
    function modelOf(uint256 modelId) external view returns (ModelInfo memory);

    /// @notice The channel of `client` on `modelId`, with the enclave it is bound to (zeros if it
    /// never deposited).
    function channelOf(uint256 modelId, address client) external view returns (ChannelInfo memory);

    /// @notice Whether `client` may deposit on `modelId` as far as the allow-list goes (false if unknown).
    function isAllowed(uint256 modelId, address client) external view returns (bool);

    /// @notice The EIP-712 digest of `voucher` under this market's domain.
    function hashVoucher(Voucher calldata voucher) external view returns (bytes32);

    /// @notice Number of models listed (also the latest id).
    function modelCount() external view returns (uint256);

    /// @notice Seconds from a close request to the reclaim.
    function closeDelay() external view returns (uint64);

    /// @notice The operator's share of redeemed payments, in basis points.
    function operatorFeeBps() external view returns (uint16);

    /// @notice Address of the {IEnclaveRegistry} consulted for inference enclaves.
    function registry() external view returns (address);

    /// @notice Address of the {IJobMarket} whose completed jobs {listModelFromJob} lists.
    function jobMarket() external view returns (address);
}
