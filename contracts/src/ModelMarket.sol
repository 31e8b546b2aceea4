// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {AccessControlDefaultAdminRules} from
    "@openzeppelin/contracts/access/extensions/AccessControlDefaultAdminRules.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {IEnclaveRegistry, ROLE_INFERENCE} from "./IEnclaveRegistry.sol";
import {IJobMarket} from "./IJobMarket.sol";
import {IModelMarket} from "./IModelMarket.sol";
import {PullPayments} from "./PullPayments.sol";

/**
 * @title ModelMarket
 * @notice Sealed models served by attested inference enclaves, paid per query through payment
 * channels and client-signed cumulative vouchers (see {IModelMarket}).
 * @dev Invariant: the contract's balance (native or token) == Σ over channels of
 * (deposited - redeemed) + Σ credits (barring forced ether or tokens sent without a deposit).
 * A channel is bound to one inference enclave; it changes only when the channel has nothing left
 * to spend, so every voucher the chain pays was served by the one enclave holding its marks.
 * Governance (DEFAULT_ADMIN_ROLE, two-step handover with a delay) only sets the operator fee.
 * Payments go through {PullPayments}: deposits are taken by `_collect`; owners, operators and
 * reclaiming clients are credited by `_credit` and pull with `withdraw`.
 */
contract ModelMarket is IModelMarket, AccessControlDefaultAdminRules, EIP712, PullPayments {
    /// @notice Output policy: the arg-max class only.
    uint8 public constant OUTPUT_LABEL = 1;
    /// @notice Output policy: the k most likely classes (outputParam = k >= 1), no probabilities.
    uint8 public constant OUTPUT_TOP_K = 2;
    /// @notice Output policy: every class's probability rounded to outputParam decimals.
    uint8 public constant OUTPUT_PROBABILITIES = 3;
    /// @notice Most decimals an OUTPUT_PROBABILITIES listing may release.
    uint8 public constant MAX_PROBABILITY_DECIMALS = 6;
    /// @notice Largest operator fee governance may set (50 %).
    uint16 public constant MAX_OPERATOR_FEE_BPS = 5000;
    /// @notice Operator fee at deployment (10 %).
    uint16 public constant DEFAULT_OPERATOR_FEE_BPS = 1000;
    /// @notice Largest allow-list change accepted in one call (bounds the loop).
    uint256 public constant MAX_LIST_ENTRIES = 64;
    /// @notice EIP-712 type hash of {IModelMarket-Voucher}.
    bytes32 public constant VOUCHER_TYPEHASH =
        keccak256("Voucher(uint256 modelId,address client,address enclave,uint256 amount,uint64 queries)");

    /// @dev Storage form of a listing; slot 0 is what deposits read, slots 0-1 what redeem reads.
    struct ModelRecord {
        // slot 0
        address owner;
        uint64 expiry;
        ModelStatus status;
        uint8 outputPolicy;
        uint8 outputParam;
        bool restricted;
        // slot 1
        uint128 pricePerQuery;
        uint64 queryCap;
        uint64 epsilon;
        // slot 2
        uint64 delta;
        // slots 3-6: never change after listing
        bytes32 weightsHash;
        bytes32 specHash;
        bytes32 contentHash;
        uint256 sourceJobId;
    }

    /// @dev Storage form of a channel, two slots: redeem reads slot 0 (the binding and the
    /// ceiling) and rewrites slot 1. Amounts are 96-bit (as JobMarket's prices) so that the
    /// enclave fits beside the ceiling: a channel's deposits stay below 2^96.
    struct Channel {
        // slot 0: written by deposit and reclaim
        address enclave;
        uint96 deposited;
        // slot 1: written by redeem, requestClose, reclaim (and deposit when it cancels a close)
        uint96 redeemed;
        uint64 redeemedQueries;
        uint64 closeRequestedAt;
    }

    /// @inheritdoc IModelMarket
    uint64 public immutable closeDelay;
    IEnclaveRegistry private immutable _registry;
    IJobMarket private immutable _jobMarket;
    // Slither's uninitialized-state detector misreads writes through storage pointers (_list,
    // deposit, redeem, reclaim and setAllowed write these through `storage` references), as in
    // JobMarket; acknowledged in docs/contracts.md.
    // slither-disable-next-line uninitialized-state
    mapping(uint256 modelId => ModelRecord) private _models;
    // slither-disable-next-line uninitialized-state
    mapping(uint256 modelId => mapping(address client => Channel)) private _channels;
    // slither-disable-next-line uninitialized-state
    mapping(uint256 modelId => mapping(address client => bool)) private _allowed;
    mapping(uint256 jobId => uint256 modelId) private _modelOfJob;
    uint64 private _modelCount;
    /// @inheritdoc IModelMarket
    uint16 public operatorFeeBps;

    /// @param registry_ The enclave registry whose active inference enclaves' operators redeem.
    /// @param jobMarket_ The job market whose completed jobs' models {listModelFromJob} lists.
    /// @param token The ERC-20 token payments use, or the zero address for the native currency.
    /// @param adminDelay Seconds a governance handover must wait before the new admin accepts.
    /// @param governance Account receiving DEFAULT_ADMIN_ROLE (sets the operator fee).
    /// @param closeDelay_ Seconds from a client's close request to its reclaim (> 0): the time
    /// operators have to redeem what they served.
    constructor(
        IEnclaveRegistry registry_,
        IJobMarket jobMarket_,
        IERC20 token,
        uint48 adminDelay,
        address governance,
        uint64 closeDelay_
    )
        AccessControlDefaultAdminRules(adminDelay, governance)
        EIP712("SterlingModelMarket", "1")
        PullPayments(token)
    {
        if (closeDelay_ == 0) {
            revert ModelMarketInvalidCloseDelay(closeDelay_);
        }
        closeDelay = closeDelay_;
        _registry = registry_;
        _jobMarket = jobMarket_;
        operatorFeeBps = DEFAULT_OPERATOR_FEE_BPS;
        emit OperatorFeeChanged(DEFAULT_OPERATOR_FEE_BPS);
    }

    // --- listings ----------------------------------------------------------------------------

    /// @inheritdoc IModelMarket
    function listModel(ModelTerms calldata terms) external returns (uint256 modelId) {
        if (terms.sourceJobId != 0 || terms.epsilon != 0 || terms.delta != 0) {
            revert ModelMarketProvenanceNotAllowed(terms.sourceJobId, terms.epsilon, terms.delta);
        }
        modelId = _list(terms);
    }

    /// @inheritdoc IModelMarket
    function listModelFromJob(uint256 jobId, ModelTerms calldata terms) external returns (uint256 modelId) {
        IJobMarket.JobInfo memory job = _jobMarket.job(jobId); // reverts JobMarketUnknownJob
        if (job.status != IJobMarket.JobStatus.Completed) {
            revert ModelMarketJobNotCompleted(jobId, job.status);
        }
        if (job.consumer != msg.sender) {
            revert ModelMarketNotJobConsumer(jobId, msg.sender);
        }
        uint256 listed = _modelOfJob[jobId];
        if (listed != 0) {
            revert ModelMarketJobAlreadyListed(jobId, listed);
        }
        // The provenance comes from the job, whatever `terms` says; the weights hash cannot be
        // checked here (see {IModelMarket-listModelFromJob}).
        ModelTerms memory t = terms;
        t.sourceJobId = jobId;
        t.epsilon = job.epsilonSpent;
        t.delta = job.delta;
        modelId = _list(t);
        _modelOfJob[jobId] = modelId;
    }

    /// @dev Validates `terms` and stores them as a new Active listing of the caller.
    function _list(ModelTerms memory terms) private returns (uint256 modelId) {
        if (terms.weightsHash == 0 || terms.specHash == 0 || terms.contentHash == 0) {
            revert ModelMarketInvalidHashes();
        }
        _checkOutputPolicy(terms.outputPolicy, terms.outputParam);
        if (terms.queryCap == 0) {
            revert ModelMarketInvalidQueryCap(terms.queryCap);
        }
        if (terms.expiry != 0 && terms.expiry <= block.timestamp) {
            revert ModelMarketInvalidExpiry(terms.expiry);
        }
        modelId = ++_modelCount; // checked: reverts rather than wrap
        ModelRecord storage m = _models[modelId];
        m.owner = msg.sender;
        m.expiry = terms.expiry;
        m.status = ModelStatus.Active;
        m.outputPolicy = terms.outputPolicy;
        m.outputParam = terms.outputParam;
        m.restricted = terms.restricted;
        m.pricePerQuery = terms.pricePerQuery;
        m.queryCap = terms.queryCap;
        m.epsilon = terms.epsilon;
        m.delta = terms.delta;
        m.weightsHash = terms.weightsHash;
        m.specHash = terms.specHash;
        m.contentHash = terms.contentHash;
        m.sourceJobId = terms.sourceJobId;
        emit ModelListed(modelId, msg.sender, terms);
    }

    /// @inheritdoc IModelMarket
    function setPrice(uint256 modelId, uint128 pricePerQuery) external {
        ModelRecord storage m = _ownedModel(modelId);
        _requireNotDelisted(modelId, m);
        m.pricePerQuery = pricePerQuery;
        emit ModelRepriced(modelId, pricePerQuery);
    }

    /// @inheritdoc IModelMarket
    function pause(uint256 modelId) external {
        _moveStatus(modelId, ModelStatus.Active, ModelStatus.Paused);
    }

    /// @inheritdoc IModelMarket
    function resume(uint256 modelId) external {
        _moveStatus(modelId, ModelStatus.Paused, ModelStatus.Active);
    }

    /// @inheritdoc IModelMarket
    function delist(uint256 modelId) external {
        ModelRecord storage m = _ownedModel(modelId);
        _requireNotDelisted(modelId, m);
        m.status = ModelStatus.Delisted;
        emit ModelStatusChanged(modelId, ModelStatus.Delisted);
    }

    /// @inheritdoc IModelMarket
    function setAllowed(uint256 modelId, address[] calldata clients, bool allowed) external {
        ModelRecord storage m = _ownedModel(modelId);
        _requireNotDelisted(modelId, m);
        uint256 count = clients.length;
        if (count > MAX_LIST_ENTRIES) {
            revert ModelMarketTooManyEntries(count, MAX_LIST_ENTRIES);
        }
        mapping(address client => bool) storage list = _allowed[modelId];
        for (uint256 i = 0; i < count; ++i) {
            list[clients[i]] = allowed;
        }
        emit ClientsAllowed(modelId, clients, allowed);
    }

    // --- channels ----------------------------------------------------------------------------

    /// @inheritdoc IModelMarket
    function deposit(uint256 modelId, uint256 amount, address enclave) external payable nonReentrant {
        ModelRecord storage m = _existingModel(modelId);
        if (m.status != ModelStatus.Active) {
            revert ModelMarketInvalidStatus(modelId, m.status);
        }
        uint64 expiry = m.expiry;
        if (expiry != 0 && block.timestamp >= expiry) {
            revert ModelMarketModelExpired(modelId, expiry);
        }
        if (m.restricted && !_allowed[modelId][msg.sender]) {
            revert ModelMarketClientNotAllowed(modelId, msg.sender);
        }
        if (amount == 0) {
            revert ModelMarketInvalidDeposit(amount);
        }
        Channel storage c = _channels[modelId][msg.sender];
        uint96 deposited = c.deposited;
        address bound = c.enclave;
        if (enclave != bound || enclave == address(0)) {
            // (Re)binding: only a channel with nothing left to spend (a fresh one has 0 == 0), and
            // only to an active inference enclave.
            if (deposited != c.redeemed) {
                revert ModelMarketChannelBoundElsewhere(modelId, msg.sender, bound);
            }
            if (!_registry.isActive(enclave, ROLE_INFERENCE)) {
                revert ModelMarketEnclaveNotActive(enclave);
            }
            c.enclave = enclave;
            emit ChannelBound(modelId, msg.sender, enclave);
        }
        deposited += SafeCast.toUint96(amount); // checked
        c.deposited = deposited;
        if (c.closeRequestedAt != 0) {
            c.closeRequestedAt = 0;
        }
        emit Deposited(modelId, msg.sender, amount, deposited);
        _collect(amount, msg.value);
    }

    /// @inheritdoc IModelMarket
    function requestClose(uint256 modelId) external {
        Channel storage c = _channels[modelId][msg.sender];
        if (c.deposited == c.redeemed) {
            revert ModelMarketNothingToReclaim(modelId, msg.sender);
        }
        uint64 pending = c.closeRequestedAt;
        if (pending != 0) {
            revert ModelMarketClosePending(modelId, msg.sender, pending);
        }
        uint64 now_ = uint64(block.timestamp);
        c.closeRequestedAt = now_;
        emit CloseRequested(modelId, msg.sender, uint256(now_) + closeDelay);
    }

    /// @inheritdoc IModelMarket
    function reclaim(uint256 modelId) external {
        Channel storage c = _channels[modelId][msg.sender];
        uint64 requested = c.closeRequestedAt;
        if (requested == 0) {
            revert ModelMarketCloseNotRequested(modelId, msg.sender);
        }
        uint256 readyAt = uint256(requested) + closeDelay;
        if (block.timestamp < readyAt) {
            revert ModelMarketCloseDelayNotPassed(modelId, msg.sender, readyAt);
        }
        uint96 redeemed = c.redeemed;
        // unchecked: redeem keeps redeemed <= deposited, and reclaim lowers deposited to redeemed.
        uint96 refund;
        unchecked {
            refund = c.deposited - redeemed;
        }
        c.deposited = redeemed;
        c.closeRequestedAt = 0;
        emit Reclaimed(modelId, msg.sender, refund);
        _credit(msg.sender, modelId, refund);
    }

    /// @inheritdoc IModelMarket
    function redeem(Voucher calldata voucher, bytes calldata signature) external {
        uint256 modelId = voucher.modelId;
        ModelRecord storage m = _existingModel(modelId);
        address operator = _registry.activeOperator(voucher.enclave, ROLE_INFERENCE);
        if (operator == address(0)) {
            revert ModelMarketEnclaveNotActive(voucher.enclave);
        }
        if (msg.sender != operator) {
            revert ModelMarketNotEnclaveOperator(msg.sender, operator);
        }
        address client = voucher.client;
        Channel storage c = _channels[modelId][client];
        address bound = c.enclave;
        if (voucher.enclave != bound) {
            revert ModelMarketWrongEnclave(voucher.enclave, bound);
        }
        uint96 redeemed = c.redeemed;
        uint256 amount = voucher.amount;
        if (amount <= redeemed) {
            revert ModelMarketStaleVoucher(amount, redeemed);
        }
        uint64 queries = voucher.queries;
        if (queries < c.redeemedQueries) {
            revert ModelMarketQueriesDecreased(queries, c.redeemedQueries);
        }
        uint64 queryCap = m.queryCap;
        if (queries > queryCap) {
            revert ModelMarketQueryCapExceeded(queries, queryCap);
        }
        uint96 deposited = c.deposited;
        if (amount > deposited) {
            revert ModelMarketInsufficientDeposit(amount, deposited);
        }
        if (!SignatureChecker.isValidSignatureNowCalldata(client, _hashVoucher(voucher), signature)) {
            revert ModelMarketInvalidVoucherSignature(client);
        }
        // amount <= deposited < 2^96, so the casts and the subtraction are exact.
        uint96 paid;
        unchecked {
            paid = uint96(amount) - redeemed;
        }
        c.redeemed = uint96(amount);
        c.redeemedQueries = queries;
        // paid * fee < 2^96 * 2^14 fits 256 bits; fee <= paid / 2.
        uint96 fee = uint96((uint256(paid) * operatorFeeBps) / 10_000);
        emit VoucherRedeemed(modelId, client, voucher.enclave, operator, amount, queries, paid, fee);
        _credit(operator, modelId, fee);
        unchecked {
            _credit(m.owner, modelId, paid - fee);
        }
    }

    /// @inheritdoc IModelMarket
    function setOperatorFee(uint16 bps) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (bps > MAX_OPERATOR_FEE_BPS) {
            revert ModelMarketInvalidFee(bps, MAX_OPERATOR_FEE_BPS);
        }
        operatorFeeBps = bps;
        emit OperatorFeeChanged(bps);
    }

    // --- views -------------------------------------------------------------------------------

    /// @inheritdoc IModelMarket
    function modelOf(uint256 modelId) external view returns (ModelInfo memory) {
        ModelRecord storage m = _existingModel(modelId);
        return ModelInfo({
            owner: m.owner,
            status: m.status,
            terms: ModelTerms({
                weightsHash: m.weightsHash,
                specHash: m.specHash,
                contentHash: m.contentHash,
                pricePerQuery: m.pricePerQuery,
                outputPolicy: m.outputPolicy,
                outputParam: m.outputParam,
                queryCap: m.queryCap,
                expiry: m.expiry,
                restricted: m.restricted,
                sourceJobId: m.sourceJobId,
                epsilon: m.epsilon,
                delta: m.delta
            })
        });
    }

    /// @inheritdoc IModelMarket
    function channelOf(uint256 modelId, address client) external view returns (ChannelInfo memory) {
        Channel storage c = _channels[modelId][client];
        return ChannelInfo({
            deposited: c.deposited,
            redeemed: c.redeemed,
            redeemedQueries: c.redeemedQueries,
            closeRequestedAt: c.closeRequestedAt,
            enclave: c.enclave
        });
    }

    /// @inheritdoc IModelMarket
    function isAllowed(uint256 modelId, address client) external view returns (bool) {
        ModelRecord storage m = _models[modelId];
        if (m.status == ModelStatus.None) {
            return false;
        }
        return !m.restricted || _allowed[modelId][client];
    }

    /// @inheritdoc IModelMarket
    function hashVoucher(Voucher calldata voucher) external view returns (bytes32) {
        return _hashVoucher(voucher);
    }

    /// @inheritdoc IModelMarket
    function modelCount() external view returns (uint256) {
        return _modelCount;
    }

    /// @inheritdoc IModelMarket
    function registry() external view returns (address) {
        return address(_registry);
    }

    /// @inheritdoc IModelMarket
    function jobMarket() external view returns (address) {
        return address(_jobMarket);
    }

    // --- internals ---------------------------------------------------------------------------

    /// @dev Reverts with {ModelMarketInvalidOutputPolicy} unless (`policy`, `param`) is valid.
    function _checkOutputPolicy(uint8 policy, uint8 param) private pure {
        bool valid = (policy == OUTPUT_LABEL && param == 0) || (policy == OUTPUT_TOP_K && param >= 1)
            || (policy == OUTPUT_PROBABILITIES && param <= MAX_PROBABILITY_DECIMALS);
        if (!valid) {
            revert ModelMarketInvalidOutputPolicy(policy, param);
        }
    }

    /// @dev The owner's status change `from` -> `to`, reverting unless the model is in `from`.
    function _moveStatus(uint256 modelId, ModelStatus from, ModelStatus to) private {
        ModelRecord storage m = _ownedModel(modelId);
        if (m.status != from) {
            revert ModelMarketInvalidStatus(modelId, m.status);
        }
        m.status = to;
        emit ModelStatusChanged(modelId, to);
    }

    /// @dev Reverts with {ModelMarketInvalidStatus} if the model is delisted.
    function _requireNotDelisted(uint256 modelId, ModelRecord storage m) private view {
        if (m.status == ModelStatus.Delisted) {
            revert ModelMarketInvalidStatus(modelId, ModelStatus.Delisted);
        }
    }

    /// @dev The model `modelId`; reverts with {ModelMarketUnknownModel} if it does not exist.
    function _existingModel(uint256 modelId) private view returns (ModelRecord storage m) {
        m = _models[modelId];
        if (m.status == ModelStatus.None) {
            revert ModelMarketUnknownModel(modelId);
        }
    }

    /// @dev The model `modelId` if the caller owns it; reverts otherwise.
    function _ownedModel(uint256 modelId) private view returns (ModelRecord storage m) {
        m = _existingModel(modelId);
        if (m.owner != msg.sender) {
            revert ModelMarketNotOwner(modelId, msg.sender);
        }
    }

    /// @dev EIP-712 digest of `voucher` under the "SterlingModelMarket" v1 domain.
    function _hashVoucher(Voucher calldata voucher) private view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(
                abi.encode(
                    VOUCHER_TYPEHASH, voucher.modelId, voucher.client, voucher.enclave, voucher.amount, voucher.queries
                )
            )
        );
    }
}
