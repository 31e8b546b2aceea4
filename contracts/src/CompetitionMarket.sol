// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {AccessControlDefaultAdminRules} from
    "@openzeppelin/contracts/access/extensions/AccessControlDefaultAdminRules.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ICompetitionMarket} from "./ICompetitionMarket.sol";
import {IEnclaveRegistry, ROLE_EVALUATOR, ROLE_KEY_MANAGER} from "./IEnclaveRegistry.sol";
import {PullPayments} from "./PullPayments.sol";

/**
 * @title CompetitionMarket
 * @notice ML competitions scored by attested evaluator enclaves on private test sets, with
 * escrowed prizes and sealed submissions that may be bought after the close (see
 * {ICompetitionMarket}).
 * @dev Invariant: the contract's balance (native or token) == Σ prizes of Open competitions +
 * Σ credits (barring forced ether or tokens sent without a call): createCompetition adds a prize
 * to the first sum, close moves it to the second, buy adds the price to the second, withdraw
 * takes from it. Nothing else moves value. Payments go through {PullPayments}: prizes and
 * purchases are taken by `_collect`, winners, organizers and sellers credited by `_credit`.
 * The leaderboard follows the Ladder (Blum & Hardt, 2015): the evaluator releases a public score
 * only when a submission beats the best so far by the competition's step η, else the old best,
 * so public scores are posted in submission order against the current best (the step itself and
 * the rounding are the evaluator enclave's, checked off-chain like the parameter and
 * architecture limits). The winner is the best private score; ties go to the earlier submission.
 * Governance (DEFAULT_ADMIN_ROLE, two-step handover with a delay) has no power over competitions;
 * the role is kept for parity with the other markets.
 */
contract CompetitionMarket is ICompetitionMarket, AccessControlDefaultAdminRules, EIP712, PullPayments {
    /// @notice Metric: share of rows whose arg-max class is the label (higher is better).
    uint8 public constant METRIC_ACCURACY = 1;
    /// @notice Metric: unweighted mean of the per-class F1 scores (higher is better).
    uint8 public constant METRIC_MACRO_F1 = 2;
    /// @notice Metric: area under the ROC curve (higher is better).
    uint8 public constant METRIC_ROC_AUC = 3;
    /// @notice Metric: mean negative log-likelihood of the label (lower is better).
    uint8 public constant METRIC_LOG_LOSS = 4;
    /// @notice Metric: root mean squared error of the class probabilities (lower is better).
    uint8 public constant METRIC_RMSE = 5;
    /// @notice Score split: the public leaderboard's rows, scored while the window is open.
    uint8 public constant SPLIT_PUBLIC = 1;
    /// @notice Score split: the deciding rows, scored once per submission after the window closes.
    uint8 public constant SPLIT_PRIVATE = 2;
    /// @notice Purchase policy: nobody may buy a submitted model.
    uint8 public constant PURCHASE_NONE = 0;
    /// @notice Purchase policy: only the organizer may buy submitted models.
    uint8 public constant PURCHASE_ORGANIZER = 1;
    /// @notice Purchase policy: any account may buy submitted models.
    uint8 public constant PURCHASE_ANYONE = 2;
    /// @notice Architecture bit: logistic regression.
    uint8 public constant ARCH_LOGISTIC_REGRESSION = 1;
    /// @notice Architecture bit: multi-layer perceptron.
    uint8 public constant ARCH_MLP = 2;
    /// @notice Architecture bit: convolutional network.
    uint8 public constant ARCH_CNN = 4;
    /// @notice Largest public split, in basis points of the test rows (the private split keeps at least one).
    uint16 public constant MAX_PUBLIC_SPLIT_BPS = 9999;
    /// @notice `leader` / `winnerIndex` when no submission has a private score.
    uint32 public constant NO_LEADER = type(uint32).max;
    /// @notice EIP-712 type hash of a key manager's admission of a submission.
    bytes32 public constant ADMISSION_TYPEHASH =
        keccak256("Admission(uint256 competitionId,address participant,bytes32 contentHash,bytes32 weightsHash)");
    /// @notice EIP-712 type hash of {ICompetitionMarket-ScoreReceipt}.
    bytes32 public constant SCORE_TYPEHASH = keccak256(
        "ScoreReceipt(uint256 competitionId,uint32 index,bytes32 contentHash,bytes32 testSetHash,uint8 metric,uint8 split,uint64 score,uint64 previousBest)"
    );

    uint8 private constant _ARCH_MASK = ARCH_LOGISTIC_REGRESSION | ARCH_MLP | ARCH_CNN;

    /// @dev Storage form of a competition. Slot 0 is all {submit} reads and writes; {postScore}
    /// reads slots 0, 1 and 4 and writes slot 1; {close} reads slots 0-3; {buy} slots 0 and 2.
    struct CompetitionRecord {
        // slot 0: the window and the submission counter (submit), status (every call)
        uint64 opensAt;
        uint64 closesAt;
        uint32 submissionCount;
        uint16 submissionCap;
        CompetitionStatus status;
        uint8 metric;
        uint8 purchasePolicy;
        uint8 architectures;
        uint16 publicSplitBps;
        uint32 ladderStep;
        // slot 1: the leaderboard and the private ranking (postScore, close); `leader` is
        // meaningful only when privateScored > 0
        uint32 nextPublic;
        uint32 privateScored;
        uint32 leader;
        uint64 publicBest;
        uint64 leaderScore;
        // slot 2: who may close early and buy under PURCHASE_ORGANIZER, and until when (close, buy)
        address organizer;
        uint64 scoringPeriod;
        uint32 maxParameters;
        // slot 3: the escrow (close)
        uint128 prize;
        // slots 4-6: fixed at creation; postScore reads testSetHash
        bytes32 testSetHash;
        bytes32 schemaHash;
        bytes32 rulesHash;
    }

    /// @dev Storage form of a submission, keyed by its content hash (which is unique across
    /// competitions, so the copy check is the same read as the record). {submit} writes both
    /// slots; {postScore} rewrites slot 1; {buy} and {close} read slot 0.
    struct SubmissionRecord {
        // slot 0: who submitted it and what a buyer pays
        address participant;
        uint96 askPrice;
        // slot 1: when, and its scores
        uint64 submittedAt;
        uint64 publicScore;
        uint64 privateScore;
        bool publicScored;
        bool privateScored;
    }

    IEnclaveRegistry private immutable _registry;
    // Slither's uninitialized-state detector misreads writes through storage pointers
    // (createCompetition, submit and postScore write these through `storage` references), as in
    // JobMarket and ModelMarket; acknowledged in docs/contracts.md.
    // slither-disable-next-line uninitialized-state
    mapping(uint256 competitionId => CompetitionRecord) private _competitions;
    // slither-disable-next-line uninitialized-state
    mapping(bytes32 contentHash => SubmissionRecord) private _submissions;
    mapping(uint256 competitionId => mapping(uint32 index => bytes32 contentHash)) private _contentOf;
    mapping(uint256 competitionId => mapping(address participant => uint16 count)) private _submissionsBy;
    // slither-disable-next-line uninitialized-state
    mapping(uint256 competitionId => mapping(uint32 index => mapping(address buyer => bytes32 buyerKey))) private
        _purchases;
    uint256 private _competitionCount;

    /// @param registry_ The enclave registry whose active key managers admit submissions and
    /// whose active evaluators sign scores.
    /// @param token The ERC-20 token payments use, or the zero address for the native currency.
    /// @param adminDelay Seconds a governance handover must wait before the new admin accepts.
    /// @param governance Account receiving DEFAULT_ADMIN_ROLE.
    constructor(IEnclaveRegistry registry_, IERC20 token, uint48 adminDelay, address governance)
        AccessControlDefaultAdminRules(adminDelay, governance)
        EIP712("SterlingCompetitions", "1")
        PullPayments(token)
    {
        _registry = registry_;
    }

    // --- competitions ------------------------------------------------------------------------

    /// @inheritdoc ICompetitionMarket
    function createCompetition(CompetitionTerms calldata terms)
        external
        payable
        nonReentrant
        returns (uint256 competitionId)
    {
        _checkTerms(terms);
        competitionId = ++_competitionCount; // checked: reverts rather than wrap
        CompetitionRecord storage c = _competitions[competitionId];
        c.opensAt = terms.opensAt;
        c.closesAt = terms.closesAt;
        c.submissionCap = terms.submissionCap;
        c.status = CompetitionStatus.Open;
        c.metric = terms.metric;
        c.purchasePolicy = terms.purchasePolicy;
        c.architectures = terms.architectures;
        c.publicSplitBps = terms.publicSplitBps;
        c.ladderStep = terms.ladderStep;
        if (!_higherIsBetter(terms.metric)) {
            c.publicBest = type(uint64).max; // the worst score of a lower-is-better metric
        }
        c.organizer = msg.sender;
        c.scoringPeriod = terms.scoringPeriod;
        c.maxParameters = terms.maxParameters;
        c.prize = terms.prize;
        c.testSetHash = terms.testSetHash;
        c.schemaHash = terms.schemaHash;
        c.rulesHash = terms.rulesHash;
        emit CompetitionCreated(competitionId, msg.sender, terms);
        _collect(terms.prize, msg.value);
    }

    /// @inheritdoc ICompetitionMarket
    function submit(
        uint256 competitionId,
        bytes32 contentHash,
        bytes32 weightsHash,
        uint96 askPrice,
        bytes calldata admission
    ) external returns (uint32 index) {
        CompetitionRecord storage c = _openCompetition(competitionId);
        uint64 opensAt = c.opensAt;
        uint64 closesAt = c.closesAt;
        if (block.timestamp < opensAt || block.timestamp >= closesAt) {
            revert CompetitionMarketOutsideSubmissionWindow(competitionId, opensAt, closesAt, block.timestamp);
        }
        uint16 made = _submissionsBy[competitionId][msg.sender];
        uint16 cap = c.submissionCap;
        if (made >= cap) {
            revert CompetitionMarketSubmissionCapReached(competitionId, msg.sender, cap);
        }
        if (contentHash == 0) {
            revert CompetitionMarketInvalidContentHash(contentHash);
        }
        SubmissionRecord storage s = _submissions[contentHash];
        if (s.participant != address(0)) {
            revert CompetitionMarketDuplicateSubmission(contentHash);
        }
        address keyManager = _recover(_hashAdmission(competitionId, msg.sender, contentHash, weightsHash), admission);
        if (!_registry.isActive(keyManager, ROLE_KEY_MANAGER)) {
            revert CompetitionMarketInvalidAdmission(keyManager);
        }
        index = c.submissionCount;
        c.submissionCount = index + 1; // checked: at most 2^32 - 1 submissions, so no index is NO_LEADER
        // unchecked: made < cap <= type(uint16).max.
        unchecked {
            _submissionsBy[competitionId][msg.sender] = made + 1;
        }
        _contentOf[competitionId][index] = contentHash;
        s.participant = msg.sender;
        s.askPrice = askPrice;
        s.submittedAt = uint64(block.timestamp);
        emit Submitted(competitionId, index, msg.sender, contentHash, weightsHash, askPrice);
    }

    /// @inheritdoc ICompetitionMarket
    function postScore(ScoreReceipt calldata receipt, bytes calldata signature) external {
        address evaluator = _recover(_hashScore(receipt), signature);
        if (!_registry.isActive(evaluator, ROLE_EVALUATOR)) {
            revert CompetitionMarketUnknownEvaluator(evaluator);
        }
        uint256 competitionId = receipt.competitionId;
        CompetitionRecord storage c = _openCompetition(competitionId);
        uint32 index = receipt.index;
        bytes32 contentHash = _contentOf[competitionId][index];
        if (contentHash == 0) {
            revert CompetitionMarketUnknownSubmission(competitionId, index);
        }
        if (receipt.contentHash != contentHash) {
            revert CompetitionMarketWrongContentHash(competitionId, index, receipt.contentHash, contentHash);
        }
        bytes32 testSetHash = c.testSetHash;
        if (receipt.testSetHash != testSetHash) {
            revert CompetitionMarketWrongTestSet(competitionId, receipt.testSetHash, testSetHash);
        }
        uint8 metric = c.metric;
        if (receipt.metric != metric) {
            revert CompetitionMarketWrongMetric(competitionId, receipt.metric, metric);
        }
        SubmissionRecord storage s = _submissions[contentHash];
        uint8 split = receipt.split;
        uint64 score = receipt.score;
        if (split == SPLIT_PUBLIC) {
            if (s.publicScored) {
                revert CompetitionMarketAlreadyScored(competitionId, index, split);
            }
            uint32 next = c.nextPublic;
            if (index != next) {
                revert CompetitionMarketPublicScoreOutOfOrder(competitionId, index, next);
            }
            uint64 best = c.publicBest;
            if (receipt.previousBest != best) {
                revert CompetitionMarketStalePreviousBest(competitionId, receipt.previousBest, best);
            }
            if (_higherIsBetter(metric) ? score < best : score > best) {
                revert CompetitionMarketScoreWorseThanBest(competitionId, score, best);
            }
            s.publicScore = score;
            s.publicScored = true;
            c.publicBest = score;
            // unchecked: next == index < submissionCount <= type(uint32).max.
            unchecked {
                c.nextPublic = next + 1;
            }
        } else if (split == SPLIT_PRIVATE) {
            if (s.privateScored) {
                revert CompetitionMarketAlreadyScored(competitionId, index, split);
            }
            uint64 closesAt = c.closesAt;
            if (block.timestamp < closesAt) {
                revert CompetitionMarketPrivateScoringNotStarted(competitionId, closesAt, block.timestamp);
            }
            if (receipt.previousBest != 0) {
                revert CompetitionMarketStalePreviousBest(competitionId, receipt.previousBest, 0);
            }
            s.privateScore = score;
            s.privateScored = true;
            uint32 scored = c.privateScored;
            if (scored == 0 || _beats(metric, score, index, c.leaderScore, c.leader)) {
                c.leader = index;
                c.leaderScore = score;
            }
            // unchecked: each submission is scored privately once, so scored < submissionCount
            // <= type(uint32).max.
            unchecked {
                c.privateScored = scored + 1;
            }
        } else {
            revert CompetitionMarketInvalidSplit(split);
        }
        emit ScorePosted(competitionId, index, split, score, evaluator);
    }

    /// @inheritdoc ICompetitionMarket
    function close(uint256 competitionId) external {
        CompetitionRecord storage c = _openCompetition(competitionId);
        uint64 closesAt = c.closesAt;
        if (block.timestamp < closesAt) {
            revert CompetitionMarketSubmissionsStillOpen(competitionId, closesAt);
        }
        address organizer = c.organizer;
        uint32 scored = c.privateScored;
        uint256 openToAllAt = uint256(closesAt) + c.scoringPeriod; // in 256 bits: no overflow
        if (block.timestamp < openToAllAt) {
            if (msg.sender != organizer) {
                revert CompetitionMarketNotOrganizer(competitionId, msg.sender, openToAllAt);
            }
            uint32 count = c.submissionCount;
            if (scored < count) {
                revert CompetitionMarketScoringIncomplete(competitionId, scored, count);
            }
        }
        c.status = CompetitionStatus.Closed;
        uint128 prize = c.prize;
        if (scored == 0) {
            emit CompetitionClosed(competitionId, NO_LEADER, address(0), prize);
            _credit(organizer, competitionId, prize);
        } else {
            uint32 leader = c.leader;
            address winner = _submissions[_contentOf[competitionId][leader]].participant;
            emit CompetitionClosed(competitionId, leader, winner, prize);
            _credit(winner, competitionId, prize);
        }
    }

    /// @inheritdoc ICompetitionMarket
    function buy(uint256 competitionId, uint32 index, bytes32 buyerKey) external payable nonReentrant {
        CompetitionRecord storage c = _existingCompetition(competitionId);
        CompetitionStatus status = c.status;
        if (status != CompetitionStatus.Closed) {
            revert CompetitionMarketInvalidStatus(competitionId, status);
        }
        uint8 policy = c.purchasePolicy;
        if (policy == PURCHASE_NONE) {
            revert CompetitionMarketNotForSale(competitionId, index);
        }
        if (policy == PURCHASE_ORGANIZER && msg.sender != c.organizer) {
            revert CompetitionMarketBuyerNotAllowed(competitionId, msg.sender);
        }
        bytes32 contentHash = _contentOf[competitionId][index];
        if (contentHash == 0) {
            revert CompetitionMarketUnknownSubmission(competitionId, index);
        }
        SubmissionRecord storage s = _submissions[contentHash];
        uint96 price = s.askPrice;
        if (price == 0) {
            revert CompetitionMarketNotForSale(competitionId, index);
        }
        if (buyerKey == 0) {
            revert CompetitionMarketInvalidBuyerKey(buyerKey);
        }
        mapping(address buyer => bytes32 buyerKey) storage bought = _purchases[competitionId][index];
        if (bought[msg.sender] != 0) {
            revert CompetitionMarketAlreadyBought(competitionId, index, msg.sender);
        }
        bought[msg.sender] = buyerKey;
        emit ModelBought(competitionId, index, msg.sender, price, buyerKey);
        _credit(s.participant, competitionId, price);
        _collect(price, msg.value);
    }

    // --- views -------------------------------------------------------------------------------

    /// @inheritdoc ICompetitionMarket
    function competitionOf(uint256 competitionId) external view returns (CompetitionInfo memory) {
        CompetitionRecord storage c = _existingCompetition(competitionId);
        bool hasLeader = c.privateScored != 0;
        return CompetitionInfo({
            organizer: c.organizer,
            status: c.status,
            terms: CompetitionTerms({
                testSetHash: c.testSetHash,
                schemaHash: c.schemaHash,
                rulesHash: c.rulesHash,
                prize: c.prize,
                metric: c.metric,
                publicSplitBps: c.publicSplitBps,
                ladderStep: c.ladderStep,
                opensAt: c.opensAt,
                closesAt: c.closesAt,
                scoringPeriod: c.scoringPeriod,
                submissionCap: c.submissionCap,
                maxParameters: c.maxParameters,
                architectures: c.architectures,
                purchasePolicy: c.purchasePolicy
            }),
            submissionCount: c.submissionCount,
            nextPublic: c.nextPublic,
            privateScored: c.privateScored,
            publicBest: c.publicBest,
            leader: hasLeader ? c.leader : NO_LEADER,
            leaderScore: c.leaderScore,
            hasLeader: hasLeader
        });
    }

    /// @inheritdoc ICompetitionMarket
    function submissionOf(uint256 competitionId, uint32 index) external view returns (SubmissionInfo memory) {
        bytes32 contentHash = _contentOf[competitionId][index];
        if (contentHash == 0) {
            revert CompetitionMarketUnknownSubmission(competitionId, index);
        }
        SubmissionRecord storage s = _submissions[contentHash];
        return SubmissionInfo({
            participant: s.participant,
            contentHash: contentHash,
            askPrice: s.askPrice,
            submittedAt: s.submittedAt,
            publicScore: s.publicScore,
            privateScore: s.privateScore,
            publicScored: s.publicScored,
            privateScored: s.privateScored
        });
    }

    /// @inheritdoc ICompetitionMarket
    function submissionsBy(uint256 competitionId, address participant) external view returns (uint16) {
        return _submissionsBy[competitionId][participant];
    }

    /// @inheritdoc ICompetitionMarket
    function purchaseOf(uint256 competitionId, uint32 index, address buyer) external view returns (bytes32) {
        return _purchases[competitionId][index][buyer];
    }

    /// @inheritdoc ICompetitionMarket
    function hashScore(ScoreReceipt calldata receipt) external view returns (bytes32) {
        return _hashScore(receipt);
    }

    /// @inheritdoc ICompetitionMarket
    function hashAdmission(uint256 competitionId, address participant, bytes32 contentHash, bytes32 weightsHash)
        external
        view
        returns (bytes32)
    {
        return _hashAdmission(competitionId, participant, contentHash, weightsHash);
    }

    /// @inheritdoc ICompetitionMarket
    function competitionCount() external view returns (uint256) {
        return _competitionCount;
    }

    /// @inheritdoc ICompetitionMarket
    function registry() external view returns (address) {
        return address(_registry);
    }

    // --- internals ---------------------------------------------------------------------------

    /// @dev Reverts with the first rule of {ICompetitionMarket-createCompetition} `terms` break
    /// (the payment is checked by {_collect}).
    function _checkTerms(CompetitionTerms calldata terms) private view {
        if (terms.testSetHash == 0 || terms.schemaHash == 0 || terms.rulesHash == 0) {
            revert CompetitionMarketInvalidHashes(terms.testSetHash, terms.schemaHash, terms.rulesHash);
        }
        if (terms.prize == 0) {
            revert CompetitionMarketInvalidPrize(terms.prize);
        }
        if (terms.metric < METRIC_ACCURACY || terms.metric > METRIC_RMSE) {
            revert CompetitionMarketInvalidMetric(terms.metric);
        }
        if (terms.publicSplitBps == 0 || terms.publicSplitBps > MAX_PUBLIC_SPLIT_BPS) {
            revert CompetitionMarketInvalidPublicSplit(terms.publicSplitBps);
        }
        if (terms.ladderStep == 0) {
            revert CompetitionMarketInvalidLadderStep(terms.ladderStep);
        }
        if (terms.closesAt <= terms.opensAt || terms.closesAt <= block.timestamp) {
            revert CompetitionMarketInvalidWindow(terms.opensAt, terms.closesAt, block.timestamp);
        }
        if (terms.scoringPeriod == 0) {
            revert CompetitionMarketInvalidScoringPeriod(terms.scoringPeriod);
        }
        if (terms.submissionCap == 0) {
            revert CompetitionMarketInvalidSubmissionCap(terms.submissionCap);
        }
        if (terms.architectures == 0 || terms.architectures & ~_ARCH_MASK != 0) {
            revert CompetitionMarketInvalidArchitectures(terms.architectures);
        }
        if (terms.purchasePolicy > PURCHASE_ANYONE) {
            revert CompetitionMarketInvalidPurchasePolicy(terms.purchasePolicy);
        }
    }

    /// @dev Whether a higher score of `metric` is better (accuracy, macro F1, ROC AUC).
    function _higherIsBetter(uint8 metric) private pure returns (bool) {
        return metric <= METRIC_ROC_AUC;
    }

    /// @dev Whether private score `score` of submission `index` takes the lead from `leaderScore`
    /// of submission `leader`: strictly better, or equal and submitted earlier (lower index).
    function _beats(uint8 metric, uint64 score, uint32 index, uint64 leaderScore, uint32 leader)
        private
        pure
        returns (bool)
    {
        if (score == leaderScore) {
            return index < leader;
        }
        return _higherIsBetter(metric) ? score > leaderScore : score < leaderScore;
    }

    /// @dev The competition `competitionId`; reverts with {CompetitionMarketUnknownCompetition}
    /// if it does not exist.
    function _existingCompetition(uint256 competitionId) private view returns (CompetitionRecord storage c) {
        c = _competitions[competitionId];
        if (c.status == CompetitionStatus.None) {
            revert CompetitionMarketUnknownCompetition(competitionId);
        }
    }

    /// @dev The competition `competitionId` if it is Open; reverts otherwise.
    function _openCompetition(uint256 competitionId) private view returns (CompetitionRecord storage c) {
        c = _existingCompetition(competitionId);
        CompetitionStatus status = c.status;
        if (status != CompetitionStatus.Open) {
            revert CompetitionMarketInvalidStatus(competitionId, status);
        }
    }

    /// @dev The signer of `digest`, or the zero address for a malformed signature (which no
    /// registry role matches, so the caller reports it with its own error rather than
    /// OpenZeppelin's ECDSA errors).
    function _recover(bytes32 digest, bytes calldata signature) private pure returns (address) {
        (address signer, ECDSA.RecoverError failure, bytes32 detail) = ECDSA.tryRecoverCalldata(digest, signature);
        // `detail` is zero exactly when there is no failure (else the bad length or s value).
        return failure == ECDSA.RecoverError.NoError && detail == 0 ? signer : address(0);
    }

    /// @dev EIP-712 digest of an admission under the "SterlingCompetitions" v1 domain.
    function _hashAdmission(uint256 competitionId, address participant, bytes32 contentHash, bytes32 weightsHash)
        private
        view
        returns (bytes32)
    {
        return _hashTypedDataV4(
            keccak256(abi.encode(ADMISSION_TYPEHASH, competitionId, participant, contentHash, weightsHash))
        );
    }

    /// @dev EIP-712 digest of `receipt` under the "SterlingCompetitions" v1 domain.
    function _hashScore(ScoreReceipt calldata receipt) private view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(
                abi.encode(
                    SCORE_TYPEHASH,
                    receipt.competitionId,
                    receipt.index,
                    receipt.contentHash,
                    receipt.testSetHash,
                    receipt.metric,
                    receipt.split,
                    receipt.score,
                    receipt.previousBest
                )
            )
        );
    }
}
