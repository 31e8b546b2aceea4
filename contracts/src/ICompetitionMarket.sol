// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {IPullPayments} from "./IPullPayments.sol";

/**
 * @title ICompetitionMarket
 * @notice Trustworthy ML competitions on private test sets. An organizer escrows a prize and
 * publishes the hashes of an encrypted test set, the schema submissions must take and the rules;
 * participants submit sealed models (weights encrypted, opened only inside attested enclaves)
 * during the submission window, each admitted by a key-manager enclave's EIP-712 `Admission`.
 * An evaluator enclave scores every submission on the test set's public split while the window is
 * open (the leaderboard, released through the Ladder mechanism so that it leaks little about the
 * test labels) and on the private split after it closes, and signs EIP-712 {ScoreReceipt}s that
 * anyone may post. The best private score wins the prize (pull payment, {withdraw}); after the
 * close, submitted models may be bought (per the competition's purchase policy) at the price
 * their participant asked, the key manager re-wrapping the model key to the buyer's key.
 * @dev Amounts are in the market's payment unit ({paymentToken}: native currency when zero, else
 * that ERC-20); times are unix seconds; scores are fixed-point integers in units of 1e-6 of the
 * metric (enclave_worker/trusted/onchain.py SCORE_SCALE). Payments, with their errors and events,
 * come from {IPullPayments} (in {PaymentCredited}, `id` is the competition id).
 */
interface ICompetitionMarket is IPullPayments {
    /// @notice Lifecycle of a competition (enclave_worker/trusted/onchain.py CompetitionStatus mirrors it).
    enum CompetitionStatus {
        None, // 0: no such competition
        Open, // 1: prize in escrow; submissions inside the window, scores until the close
        Closed // 2: final: the prize went to the winner (or back to the organizer); models may be bought
    }

    /// @notice What an organizer fixes at creation; nothing changes afterwards.
    struct CompetitionTerms {
        bytes32 testSetHash; // SHA-256 of the encrypted test set in the blob store (non-zero)
        bytes32 schemaHash; // SHA-256 of the canonical schema JSON submissions must take (non-zero)
        bytes32 rulesHash; // SHA-256 of the rules document (description, training data, dataset ids) (non-zero)
        uint128 prize; // escrowed at creation, > 0
        uint8 metric; // METRIC_ACCURACY .. METRIC_RMSE (1..5)
        uint16 publicSplitBps; // 1..9999: share of test rows in the public split
        uint32 ladderStep; // the Ladder's step η in 1e-6 metric units, >= 1
        uint64 opensAt; // first second of the submission window
        uint64 closesAt; // first second after it: submissions in [opensAt, closesAt); > opensAt and > now
        uint64 scoringPeriod; // > 0: seconds after closesAt for private scores; from closesAt + scoringPeriod anyone may close
        uint16 submissionCap; // submissions per participant, >= 1
        uint32 maxParameters; // 0 = no limit (checked off-chain by the key manager)
        uint8 architectures; // non-zero bit mask of ARCH_* bits, no other bits (checked off-chain)
        uint8 purchasePolicy; // PURCHASE_NONE, PURCHASE_ORGANIZER or PURCHASE_ANYONE
    }

    /// @notice A competition as returned by {competitionOf}.
    struct CompetitionInfo {
        address organizer;
        CompetitionStatus status;
        CompetitionTerms terms;
        uint32 submissionCount; // submissions so far (indexes 0 .. submissionCount - 1)
        uint32 nextPublic; // index of the next submission to score on the public split
        uint32 privateScored; // submissions scored on the private split
        uint64 publicBest; // the leaderboard's best: 0 (higher-is-better) or 2^64 - 1 (lower-is-better) before any
        uint32 leader; // index of the best private score so far; type(uint32).max when none
        uint64 leaderScore; // its private score; 0 when none
        bool hasLeader; // some submission has a private score
    }

    /// @notice A submission as returned by {submissionOf}.
    struct SubmissionInfo {
        address participant;
        bytes32 contentHash; // SHA-256 of the sealed model's ciphertext
        uint96 askPrice; // what a buyer pays after the close; 0 = not for sale
        uint64 submittedAt;
        uint64 publicScore; // the Ladder's leaderboard value released for it (valid if publicScored)
        uint64 privateScore; // valid if privateScored
        bool publicScored;
        bool privateScored;
    }

    /// @notice An evaluator enclave's score of one submission on one split, signed with EIP-712
    /// under this market's domain (enclave_worker/trusted/competition.py ScoreReceipt).
    struct ScoreReceipt {
        uint256 competitionId;
        uint32 index; // the submission's 0-based position in its competition
        bytes32 contentHash; // the submission's ciphertext hash
        bytes32 testSetHash; // the competition's test set
        uint8 metric; // the competition's metric
        uint8 split; // SPLIT_PUBLIC or SPLIT_PRIVATE
        uint64 score; // PUBLIC: the leaderboard's value after the Ladder step; PRIVATE: the score
        uint64 previousBest; // PUBLIC: the publicBest the Ladder compared against; PRIVATE: 0
    }

    /// @dev The test set, schema and rules hashes must all be non-zero.
    error CompetitionMarketInvalidHashes(bytes32 testSetHash, bytes32 schemaHash, bytes32 rulesHash);
    /// @dev The prize must be positive.
    error CompetitionMarketInvalidPrize(uint128 prize);
    /// @dev `metric` is not one of METRIC_ACCURACY .. METRIC_RMSE.
    error CompetitionMarketInvalidMetric(uint8 metric);
    /// @dev The public split must hold between 1 and 9,999 basis points of the test rows.
    error CompetitionMarketInvalidPublicSplit(uint16 publicSplitBps);
    /// @dev The Ladder step must be at least 1.
    error CompetitionMarketInvalidLadderStep(uint32 ladderStep);
    /// @dev The window [`opensAt`, `closesAt`) is empty or ends at or before `currentTime`.
    error CompetitionMarketInvalidWindow(uint64 opensAt, uint64 closesAt, uint256 currentTime);
    /// @dev The scoring period must be positive.
    error CompetitionMarketInvalidScoringPeriod(uint64 scoringPeriod);
    /// @dev The per-participant submission cap must be at least 1.
    error CompetitionMarketInvalidSubmissionCap(uint16 submissionCap);
    /// @dev The architecture mask must be non-zero and hold only ARCH_* bits.
    error CompetitionMarketInvalidArchitectures(uint8 architectures);
    /// @dev `purchasePolicy` is not PURCHASE_NONE, PURCHASE_ORGANIZER or PURCHASE_ANYONE.
    error CompetitionMarketInvalidPurchasePolicy(uint8 purchasePolicy);
    /// @dev No competition has id `competitionId`.
    error CompetitionMarketUnknownCompetition(uint256 competitionId);
    /// @dev The competition is in `status`, which does not allow the operation.
    error CompetitionMarketInvalidStatus(uint256 competitionId, CompetitionStatus status);
    /// @dev A submission at `currentTime` lies outside the window [`opensAt`, `closesAt`).
    error CompetitionMarketOutsideSubmissionWindow(
        uint256 competitionId, uint64 opensAt, uint64 closesAt, uint256 currentTime
    );
    /// @dev `participant` already made `cap` submissions to the competition, its cap.
    error CompetitionMarketSubmissionCapReached(uint256 competitionId, address participant, uint16 cap);
    /// @dev A submission's content hash must be non-zero.
    error CompetitionMarketInvalidContentHash(bytes32 contentHash);
    /// @dev `contentHash` was already submitted (to this or another competition): a copied ciphertext.
    error CompetitionMarketDuplicateSubmission(bytes32 contentHash);
    /// @dev The admission recovers to `recovered`, which is not an active key-manager enclave (or
    /// it was signed for another competition, participant, ciphertext or weights).
    error CompetitionMarketInvalidAdmission(address recovered);
    /// @dev The score receipt recovers to `recovered`, which is not an active evaluator enclave
    /// (never approved, revoked, or its measurement revoked; or the receipt was altered).
    error CompetitionMarketUnknownEvaluator(address recovered);
    /// @dev The competition has no submission `index`.
    error CompetitionMarketUnknownSubmission(uint256 competitionId, uint32 index);
    /// @dev The receipt names ciphertext `contentHash`; submission `index` is `expected`.
    error CompetitionMarketWrongContentHash(uint256 competitionId, uint32 index, bytes32 contentHash, bytes32 expected);
    /// @dev The receipt names test set `testSetHash`; the competition's is `expected`.
    error CompetitionMarketWrongTestSet(uint256 competitionId, bytes32 testSetHash, bytes32 expected);
    /// @dev The receipt names metric `metric`; the competition's is `expected`.
    error CompetitionMarketWrongMetric(uint256 competitionId, uint8 metric, uint8 expected);
    /// @dev `split` is neither SPLIT_PUBLIC nor SPLIT_PRIVATE.
    error CompetitionMarketInvalidSplit(uint8 split);
    /// @dev Submission `index` already has a score on `split`.
    error CompetitionMarketAlreadyScored(uint256 competitionId, uint32 index, uint8 split);
    /// @dev Public scores are posted in submission order: the next is `nextPublic`, not `index`.
    error CompetitionMarketPublicScoreOutOfOrder(uint256 competitionId, uint32 index, uint32 nextPublic);
    /// @dev The receipt's `previousBest` is not `expected` (the leaderboard's best for a public
    /// score, 0 for a private one): the Ladder ran against another leaderboard.
    error CompetitionMarketStalePreviousBest(uint256 competitionId, uint64 previousBest, uint64 expected);
    /// @dev A public score `score` is worse than the leaderboard's best `previousBest`.
    error CompetitionMarketScoreWorseThanBest(uint256 competitionId, uint64 score, uint64 previousBest);
    /// @dev Private scores are posted from `closesAt` on; it is `currentTime`.
    error CompetitionMarketPrivateScoringNotStarted(uint256 competitionId, uint64 closesAt, uint256 currentTime);
    /// @dev The competition cannot close before `closesAt`.
    error CompetitionMarketSubmissionsStillOpen(uint256 competitionId, uint64 closesAt);
    /// @dev Before `openToAllAt` only the organizer may close; `caller` is not it.
    error CompetitionMarketNotOrganizer(uint256 competitionId, address caller, uint256 openToAllAt);
    /// @dev The organizer may close early only once every submission is privately scored:
    /// `privateScored` of `submissionCount` are.
    error CompetitionMarketScoringIncomplete(uint256 competitionId, uint32 privateScored, uint32 submissionCount);
    /// @dev Submission `index` cannot be bought: the competition's purchase policy is
    /// PURCHASE_NONE or its participant asked no price.
    error CompetitionMarketNotForSale(uint256 competitionId, uint32 index);
    /// @dev The purchase policy PURCHASE_ORGANIZER lets only the organizer buy; `buyer` is not it.
    error CompetitionMarketBuyerNotAllowed(uint256 competitionId, address buyer);
    /// @dev The buyer's X25519 public key must be non-zero.
    error CompetitionMarketInvalidBuyerKey(bytes32 buyerKey);
    /// @dev `buyer` already bought submission `index`.
    error CompetitionMarketAlreadyBought(uint256 competitionId, uint32 index, address buyer);

    /// @dev `organizer` created competition `competitionId` with `terms`, escrowing `terms.prize`.
    event CompetitionCreated(uint256 indexed competitionId, address indexed organizer, CompetitionTerms terms);
    /// @dev `participant` made submission `index` of the competition: ciphertext `contentHash` of
    /// the weights `weightsHash`, for sale at `askPrice` after the close (0 = not for sale).
    event Submitted(
        uint256 indexed competitionId,
        uint32 index,
        address indexed participant,
        bytes32 contentHash,
        bytes32 weightsHash,
        uint96 askPrice
    );
    /// @dev Evaluator enclave `evaluator` scored submission `index` on `split` (for SPLIT_PUBLIC
    /// `score` is also the leaderboard's new best).
    event ScorePosted(uint256 indexed competitionId, uint32 index, uint8 split, uint64 score, address indexed evaluator);
    /// @dev The competition closed: submission `winnerIndex` of `winner` won `prize`, or, with
    /// no private score at all, `winnerIndex` is type(uint32).max, `winner` zero and the prize
    /// went back to the organizer.
    event CompetitionClosed(uint256 indexed competitionId, uint32 winnerIndex, address winner, uint128 prize);
    /// @dev `buyer` bought submission `index` for `price`; the key manager wraps its model key to `buyerKey`.
    event ModelBought(uint256 indexed competitionId, uint32 index, address indexed buyer, uint96 price, bytes32 buyerKey);

    /**
     * @notice Creates a competition organized by the caller, Open, escrowing `terms.prize`; ids
     * start at 1.
     * @dev Requirements: non-zero test set, schema and rules hashes; prize > 0; a known metric;
     * 1 <= publicSplitBps <= 9999; ladderStep >= 1; closesAt > opensAt and closesAt > now;
     * scoringPeriod > 0; submissionCap >= 1; architectures a non-zero mask of ARCH_* bits; a
     * known purchase policy; msg.value == prize in native mode, else 0 and `prize` tokens
     * approved (the full amount must arrive). Emits {CompetitionCreated}.
     */
    function createCompetition(CompetitionTerms calldata terms) external payable returns (uint256 competitionId);

    /**
     * @notice Submits the caller's sealed model to competition `competitionId`; returns its index
     * (the competition's submission count before it, so 0-based).
     * @dev Requirements: the competition is Open and opensAt <= now < closesAt; the caller made
     * fewer than submissionCap submissions to it; `contentHash` is non-zero and was never
     * submitted to any competition; `admission` is an EIP-712 signature of
     * `Admission(uint256 competitionId,address participant,bytes32 contentHash,bytes32 weightsHash)`
     * with participant = caller, under this market's domain, by an active ROLE_KEY_MANAGER
     * enclave (the key manager opened the sealed model, found it valid under the competition's
     * rules and wrapped to the caller's name). Checked in this order.
     * `askPrice` is what a buyer pays after the close (0 = not for sale); `weightsHash` is
     * only logged (a buyer checks the decrypted weights against it). Emits {Submitted}.
     */
    function submit(uint256 competitionId, bytes32 contentHash, bytes32 weightsHash, uint96 askPrice, bytes calldata admission)
        external
        returns (uint32 index);

    /**
     * @notice Posts an evaluator enclave's signed score; anyone may send it.
     * @dev Requirements: `signature` recovers to an active ROLE_EVALUATOR enclave; the
     * competition is Open; the submission exists; the receipt's contentHash, testSetHash and
     * metric are the submission's and the competition's; the submission has no score on
     * `split` yet. SPLIT_PUBLIC: `index` is the competition's nextPublic (public scores are
     * posted in submission order, one each, so the Ladder's state is never ambiguous),
     * previousBest is the leaderboard's publicBest, and the score is not worse than it (the
     * Ladder releases the old best when a submission does not beat it by the step); the score
     * becomes the submission's public score and the new publicBest. SPLIT_PRIVATE: now >=
     * closesAt and previousBest == 0; the score becomes the submission's private score and the
     * leader changes if it is strictly better than the leader's, or equal with a lower index:
     * ties go to the earlier submission. Emits {ScorePosted}.
     */
    function postScore(ScoreReceipt calldata receipt, bytes calldata signature) external;

    /**
     * @notice Closes an Open competition and credits its prize: to the participant of the best
     * private score (ties: the earliest submission), or back to the organizer if no submission
     * has a private score.
     * @dev Requirements: Open; now >= closesAt; before closesAt + scoringPeriod only the
     * organizer, and only once every submission is privately scored; from then on anyone (an
     * organizer who never closes cannot keep the prize). Emits {CompetitionClosed} and
     * {PaymentCredited}.
     */
    function close(uint256 competitionId) external;

    /**
     * @notice Buys submission `index` of a closed competition at its ask price: the participant
     * is credited the price and the key manager wraps the model key to `buyerKey`.
     * @dev Requirements: the competition is Closed; its purchase policy is not PURCHASE_NONE,
     * and the caller is the organizer under PURCHASE_ORGANIZER; the submission exists and has a
     * non-zero ask price; `buyerKey` (the buyer's X25519 public key) is non-zero; the caller
     * has not bought it before; msg.value == askPrice in native mode, else 0 and askPrice
     * tokens approved. Emits {ModelBought} and {PaymentCredited}.
     */
    function buy(uint256 competitionId, uint32 index, bytes32 buyerKey) external payable;

    /// @notice The competition `competitionId`. Reverts with {CompetitionMarketUnknownCompetition} if unknown.
    function competitionOf(uint256 competitionId) external view returns (CompetitionInfo memory);

    /// @notice Submission `index` of competition `competitionId`. Reverts with
    /// {CompetitionMarketUnknownSubmission} if it does not exist.
    function submissionOf(uint256 competitionId, uint32 index) external view returns (SubmissionInfo memory);

    /// @notice How many submissions `participant` made to competition `competitionId`.
    function submissionsBy(uint256 competitionId, address participant) external view returns (uint16);

    /// @notice The X25519 key `buyer` bought submission `index` with; zero if it did not buy it.
    function purchaseOf(uint256 competitionId, uint32 index, address buyer) external view returns (bytes32);

    /// @notice The EIP-712 digest of `receipt` under this market's domain.
    function hashScore(ScoreReceipt calldata receipt) external view returns (bytes32);

    /// @notice The EIP-712 digest of `Admission(competitionId, participant, contentHash,
    /// weightsHash)` under this market's domain (what {submit} recovers the key manager from).
    function hashAdmission(uint256 competitionId, address participant, bytes32 contentHash, bytes32 weightsHash)
        external
        view
        returns (bytes32);

    /// @notice Number of competitions created (also the latest id).
    function competitionCount() external view returns (uint256);

    /// @notice Address of the {IEnclaveRegistry} consulted for key managers and evaluators.
    function registry() external view returns (address);
}
