"""CompetitionMarket (issue 16): the registry's evaluator role, competition terms and their
validation, the prize escrow, submissions (window, cap, copied ciphertexts, key-manager
admissions), score receipts (evaluator checks, the public Ladder order, private scores and the
leader with its tie rule), the close (organizer, timeout, refund), purchases under each policy,
withdrawals, the ERC-20 path, the SDK client's event listing and the gas goals. Driven through
the SDK client (:mod:`marketplace.competitions`) on the session's embedded chain, so reverts
arrive as ``ContractReverted`` with the custom error's name and values."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_canonical_address
from web3.logs import DISCARD

from enclave_worker.trusted.competition import ADMISSION_TYPES, SCORE_TYPES, Admission, ScoreReceipt, sign, signer_of
from enclave_worker.trusted.onchain import (
    NO_SCORE_LOWER_IS_BETTER,
    Architecture,
    CompetitionStatus,
    Metric,
    PurchasePolicy,
    Role,
    Split,
)
from marketplace.abi import load_artifact
from marketplace.chain import Chain, TxResult, Wei
from marketplace.competitions import (
    CompetitionClosed,
    CompetitionCreated,
    CompetitionMarketClient,
    CompetitionTerms,
    ModelBought,
    ScorePosted,
    Submitted,
    deploy_competition_market,
)
from marketplace.contracts import CERTIFICATE_TYPES, Certificate, Deployment, RegistryClient, deploy
from marketplace.errors import ConfigError, ContractReverted

ETHER = 10**18
PRIZE = ETHER
ASK = 10**15
WINDOW = 3600
SCORING = 1800
CAP = 3
NO_LEADER = 2**32 - 1
ZERO = "0x" + "00" * 20
KEY_MANAGER_MEASUREMENT = keccak(b"sterling key manager v1")
EVALUATOR_MEASUREMENT = keccak(b"sterling evaluator v1")
TEST_SET = hashlib.sha256(b"encrypted test set").digest()
SCHEMA = hashlib.sha256(b"schema").digest()
RULES = hashlib.sha256(b"rules").digest()
WEIGHTS = hashlib.sha256(b"weights").digest()
BUYER_KEY = b"\x07" * 32


def _addr(account: LocalAccount | str) -> bytes:
    return to_canonical_address(account if isinstance(account, str) else account.address)


@dataclass
class World:
    """A deployment with an active key manager and an active evaluator (run by ``operator``),
    an organizer with one Open competition (accuracy, purchases by anyone) and three participants."""

    chain: Chain
    deployment: Deployment
    registry: RegistryClient
    cm: CompetitionMarketClient
    governance: LocalAccount
    verifier: LocalAccount
    organizer: LocalAccount
    alice: LocalAccount
    bob: LocalAccount
    carol: LocalAccount
    stranger: LocalAccount
    operator: LocalAccount
    key_manager: LocalAccount
    evaluator: LocalAccount
    competition_id: int = 0
    _models: int = 0

    # --- time --------------------------------------------------------------------------------

    def pending_time(self) -> int:
        """When the next transaction lands."""
        return int(self.chain.w3.eth.get_block("pending")["timestamp"])

    def set_time(self, timestamp: int) -> None:
        """Mine a block at ``timestamp`` (forward only): the next transaction is estimated and
        lands at ``timestamp + 1``. On the embedded chain the SDK decodes a revert by re-running
        the call on the latest block, so an error carrying the time reports ``timestamp``; a
        refusal is therefore tested where both seconds are refused."""
        self.chain.advance_time(timestamp - self.chain.now())
        assert self.chain.now() == timestamp

    def reach(self, timestamp: int) -> None:
        """:meth:`set_time` unless the chain is at or past ``timestamp`` already."""
        if self.chain.now() < timestamp:
            self.set_time(timestamp)

    # --- competitions ------------------------------------------------------------------------

    def terms(self, **overrides: Any) -> CompetitionTerms:
        now = self.chain.now()
        fields: dict[str, Any] = {
            "test_set_hash": TEST_SET, "schema_hash": SCHEMA, "rules_hash": RULES, "prize": Wei(PRIZE),
            "metric": Metric.ACCURACY, "public_split_bps": 3000, "ladder_step": 1000, "opens_at": now - 1,
            "closes_at": now + WINDOW, "scoring_period": SCORING, "submission_cap": CAP, "max_parameters": 100_000,
            "architectures": Architecture.MLP | Architecture.CNN, "purchase_policy": PurchasePolicy.ANYONE,
        }  # fmt: skip
        fields.update(overrides)
        return CompetitionTerms(**fields)

    def create(self, **overrides: Any) -> int:
        competition_id, _ = self.cm.create_competition(self.organizer, self.terms(**overrides))
        return competition_id

    # --- submissions -------------------------------------------------------------------------

    def new_content(self) -> bytes:
        self._models += 1
        return hashlib.sha256(b"sealed model %d" % self._models).digest()

    def admission(
        self, participant: LocalAccount, competition_id: int, content: bytes, weights: bytes = WEIGHTS, *,
        signer: LocalAccount | None = None,
    ) -> bytes:  # fmt: skip
        statement = Admission(competition_id, _addr(participant), content, weights)
        return sign(signer or self.key_manager, statement, chain_id=self.chain.chain_id, competitions=self.cm.address_bytes)

    def submit(self, participant: LocalAccount, *, competition_id: int | None = None, content: bytes | None = None, ask: int = 0) -> int:
        cid = self.competition_id if competition_id is None else competition_id
        content = content or self.new_content()
        index, _ = self.cm.submit(participant, cid, content, WEIGHTS, Wei(ask), self.admission(participant, cid, content))
        return index

    # --- scores ------------------------------------------------------------------------------

    def receipt(self, index: int, split: Split, score: int, /, *, competition_id: int | None = None, **overrides: Any) -> ScoreReceipt:
        """A receipt matching submission ``index`` (the leaderboard's best as previousBest for
        PUBLIC), with ``overrides`` of its fields."""
        cid = self.competition_id if competition_id is None else competition_id
        record = self.cm.competition(cid)
        receipt = ScoreReceipt(
            competition_id=cid, index=index, content_hash=self.cm.submission(cid, index).content_hash,
            test_set_hash=record.terms.test_set_hash, metric=int(record.terms.metric), split=split, score=score,
            previous_best=record.public_best if split is Split.PUBLIC else 0,
        )  # fmt: skip
        return dataclasses.replace(receipt, **overrides)

    def signed(self, receipt: ScoreReceipt, signer: LocalAccount | None = None) -> bytes:
        return sign(signer or self.evaluator, receipt, chain_id=self.chain.chain_id, competitions=self.cm.address_bytes)

    def post(self, receipt: ScoreReceipt, *, signer: LocalAccount | None = None, sender: LocalAccount | None = None) -> TxResult:
        return self.cm.post_score(sender or self.operator, receipt, self.signed(receipt, signer))

    def score(self, index: int, split: Split, score: int, *, competition_id: int | None = None) -> TxResult:
        return self.post(self.receipt(index, split, score, competition_id=competition_id))

    # --- accounts ----------------------------------------------------------------------------

    @property
    def accounts(self) -> list[LocalAccount]:
        return [self.organizer, self.alice, self.bob, self.carol, self.stranger, self.operator]

    def assert_conserved(self) -> None:
        """The market holds Σ prizes of Open competitions + Σ credits."""
        count = self.cm.competition_count()
        records = [self.cm.competition(i) for i in range(1, count + 1)]
        escrow = sum(r.terms.prize for r in records if r.status is CompetitionStatus.OPEN)
        credits = sum(self.cm.credits(a.address) for a in self.accounts)
        assert self._holdings(self.cm.address) == escrow + credits

    def _holdings(self, address: str) -> int:
        token = self.cm.payment_token()
        if token is None:
            return self.chain.balance(address)
        contract = self.chain.w3.eth.contract(address=token, abi=load_artifact("TestStablecoin", test=True)["abi"])  # type: ignore[call-overload]
        return int(contract.functions.balanceOf(address).call())


def register_enclave(chain: Chain, registry: RegistryClient, verifier: LocalAccount, enclave: LocalAccount, operator: LocalAccount,
                     role: Role, measurement: bytes) -> None:  # fmt: skip
    cert = Certificate(role, measurement, enclave.address, b"\x42" * 32, operator.address, chain.now() + 365 * 86400)
    signed = Account.sign_typed_data(verifier.key, registry.domain(), CERTIFICATE_TYPES, cert.message())
    registry.register(operator, cert, bytes(signed.signature))


def build_world(chain: Chain, *, token: str | None = None) -> World:
    """A fresh deployment on ``chain`` (paying in ``token`` if given) with one Open competition."""
    governance = chain.new_account()
    deployment = deploy(chain, governance, payment_token=token)
    assert deployment.competitions is not None
    registry = RegistryClient(chain, deployment.registry)
    w = World(
        chain=chain, deployment=deployment, registry=registry, cm=CompetitionMarketClient(chain, deployment.competitions),
        governance=governance, verifier=Account.create(), organizer=chain.new_account(), alice=chain.new_account(),
        bob=chain.new_account(), carol=chain.new_account(), stranger=chain.new_account(), operator=chain.new_account(),
        key_manager=Account.create(), evaluator=Account.create(),
    )  # fmt: skip
    registry.add_verifier(governance, w.verifier.address)
    registry.approve_measurement(governance, Role.KEY_MANAGER, KEY_MANAGER_MEASUREMENT)
    registry.approve_measurement(governance, Role.EVALUATOR, EVALUATOR_MEASUREMENT)
    register_enclave(chain, registry, w.verifier, w.key_manager, w.operator, Role.KEY_MANAGER, KEY_MANAGER_MEASUREMENT)
    register_enclave(chain, registry, w.verifier, w.evaluator, w.operator, Role.EVALUATOR, EVALUATOR_MEASUREMENT)
    if token is None:
        w.competition_id = w.create()
    return w


@pytest.fixture(scope="module")
def base(sdk_chain: Chain) -> World:
    return build_world(sdk_chain)


@pytest.fixture
def w(base: World) -> Iterator[World]:
    """The module's world, reverted to its initial state after the test."""
    tester = base.chain.w3.provider.ethereum_tester  # type: ignore[attr-defined]
    snapshot = tester.take_snapshot()
    models = base._models
    yield base
    tester.revert_to_snapshot(snapshot)
    base._models = models


def reverts(error: str, fn: Any, *args: Any, **kwargs: Any) -> ContractReverted:
    with pytest.raises(ContractReverted) as info:
        fn(*args, **kwargs)
    assert info.value.error == error, info.value
    return info.value


def expect(error: str, values: tuple[Any, ...], fn: Any, *args: Any, **kwargs: Any) -> None:
    """``fn(*args, **kwargs)`` reverts with custom error ``error`` carrying exactly ``values``."""
    assert reverts(error, fn, *args, **kwargs).error_args == values


def events(w: World, result: TxResult, name: str) -> list[dict[str, Any]]:
    return [dict(e["args"]) for e in w.cm.contract.events[name]().process_receipt(result.receipt, errors=DISCARD)]


# --------------------------------------------------------------------------- the evaluator role


def test_the_registry_takes_the_evaluator_role_and_no_fifth(w: World) -> None:
    reg = w.registry.contract.functions
    assert reg.ROLE_EVALUATOR().call() == int(Role.EVALUATOR) == 4
    assert w.registry.is_measurement_approved(Role.EVALUATOR, EVALUATOR_MEASUREMENT)
    assert w.registry.is_active(w.evaluator.address, Role.EVALUATOR)
    record = w.registry.enclave_of(w.evaluator.address)
    assert (record.role, record.measurement, record.operator) == (4, EVALUATOR_MEASUREMENT, w.operator.address)
    # An evaluator is active in its role only.
    assert not w.registry.is_active(w.evaluator.address, Role.KEY_MANAGER)
    for call in (reg.approveMeasurement(5, EVALUATOR_MEASUREMENT), reg.revokeMeasurement(5, EVALUATOR_MEASUREMENT)):
        expect("EnclaveRegistryInvalidRole", (5,), w.chain.transact, w.governance, call)
    cert = {"role": 5, "measurement": EVALUATOR_MEASUREMENT, "signer": w.stranger.address, "encryptionKey": b"\x42" * 32,
            "operator": w.operator.address, "validUntil": w.chain.now() + 3600}  # fmt: skip
    signature = bytes(Account.sign_typed_data(w.verifier.key, w.registry.domain(), CERTIFICATE_TYPES, cert).signature)
    fields = tuple(cert[f["name"]] for f in CERTIFICATE_TYPES["Certificate"])
    expect("EnclaveRegistryInvalidRole", (5,), w.chain.transact, w.operator, reg.register(fields, signature))
    # Revoking the evaluator measurement deactivates it.
    w.registry.revoke_measurement(w.governance, Role.EVALUATOR, EVALUATOR_MEASUREMENT)
    assert not w.registry.is_active(w.evaluator.address, Role.EVALUATOR)


# --------------------------------------------------------------------------- creation


def test_a_competition_is_stored_as_given_and_its_prize_escrowed(w: World) -> None:
    terms = w.terms(purchase_policy=PurchasePolicy.ORGANIZER)
    before = w.chain.balance(w.cm.address)
    competition_id, result = w.cm.create_competition(w.organizer, terms)
    assert competition_id == w.competition_id + 1 == w.cm.competition_count()
    record = w.cm.competition(competition_id)
    assert (record.organizer, record.status, record.terms) == (w.organizer.address, CompetitionStatus.OPEN, terms)
    assert (record.submission_count, record.next_public, record.private_scored, record.public_best) == (0, 0, 0, 0)
    assert (record.leader, record.leader_score, record.fully_scored) == (None, 0, True)
    assert w.chain.balance(w.cm.address) == before + PRIZE
    (created,) = events(w, result, "CompetitionCreated")
    assert (created["competitionId"], created["organizer"]) == (competition_id, w.organizer.address)
    assert CompetitionTerms.from_tuple(created["terms"]) == terms
    w.assert_conserved()


def test_a_lower_is_better_leaderboard_starts_at_the_worst_score(w: World) -> None:
    for metric in Metric:
        record = w.cm.competition(w.create(metric=metric))
        assert record.public_best == (0 if metric.higher_is_better else NO_SCORE_LOWER_IS_BETTER), metric


_BAD_TERMS: list[tuple[dict[str, Any], str]] = [
    ({"test_set_hash": bytes(32)}, "CompetitionMarketInvalidHashes"),
    ({"schema_hash": bytes(32)}, "CompetitionMarketInvalidHashes"),
    ({"rules_hash": bytes(32)}, "CompetitionMarketInvalidHashes"),
    ({"prize": 0}, "CompetitionMarketInvalidPrize"),
    ({"metric": 0}, "CompetitionMarketInvalidMetric"),
    ({"metric": 6}, "CompetitionMarketInvalidMetric"),
    ({"public_split_bps": 0}, "CompetitionMarketInvalidPublicSplit"),
    ({"public_split_bps": 10_000}, "CompetitionMarketInvalidPublicSplit"),
    ({"ladder_step": 0}, "CompetitionMarketInvalidLadderStep"),
    ({"scoring_period": 0}, "CompetitionMarketInvalidScoringPeriod"),
    ({"submission_cap": 0}, "CompetitionMarketInvalidSubmissionCap"),
    ({"architectures": 0}, "CompetitionMarketInvalidArchitectures"),
    ({"architectures": 8}, "CompetitionMarketInvalidArchitectures"),
    ({"architectures": 9}, "CompetitionMarketInvalidArchitectures"),
    ({"purchase_policy": 3}, "CompetitionMarketInvalidPurchasePolicy"),
]


@pytest.mark.parametrize(("overrides", "error"), _BAD_TERMS)
def test_invalid_terms_are_refused(w: World, overrides: dict[str, Any], error: str) -> None:
    terms = dataclasses.replace(w.terms(), **overrides)
    with pytest.raises(ConfigError):
        terms.validate()
    # The contract refuses them too (sent around the client's check), naming the offending values.
    fn = w.cm.contract.functions.createCompetition(terms.as_tuple())
    got = reverts(error, w.chain.transact, w.organizer, fn, value=terms.prize)
    value = next(iter(overrides.values()))
    if error == "CompetitionMarketInvalidHashes":
        assert got.error_args == (terms.test_set_hash, terms.schema_hash, terms.rules_hash)
    else:
        assert got.error_args == (value,)


def test_the_window_must_be_non_empty_and_end_in_the_future(w: World) -> None:
    now = w.chain.now()
    for opens, closes in ((now + 10, now + 10), (now + 10, now + 9), (now - 100, now - 1), (now - 100, now)):
        terms = w.terms(opens_at=opens, closes_at=closes)
        with pytest.raises(ConfigError):
            terms.validate(now=now)
        fn = w.cm.contract.functions.createCompetition(terms.as_tuple())
        expect("CompetitionMarketInvalidWindow", (opens, closes, now), w.chain.transact, w.organizer, fn, value=PRIZE)
    # An opening in the past is fine (the window is open at once); so is one in the future.
    w.create(opens_at=0)
    w.create(opens_at=now + 100, closes_at=now + 200)


def test_the_prize_must_be_paid_exactly(w: World) -> None:
    fn = w.cm.contract.functions.createCompetition(w.terms().as_tuple())
    for sent in (0, PRIZE - 1, PRIZE + 1):
        expect("PullPaymentsIncorrectPayment", (sent, PRIZE), w.chain.transact, w.organizer, fn, value=sent)


# --------------------------------------------------------------------------- submissions


def test_submissions_are_indexed_in_order_and_recorded(w: World) -> None:
    cid = w.competition_id
    contents = [w.new_content() for _ in range(3)]
    for i, (who, ask) in enumerate(((w.alice, ASK), (w.bob, 0), (w.alice, 2 * ASK))):
        landing = w.pending_time()
        index, result = w.cm.submit(who, cid, contents[i], WEIGHTS, Wei(ask), w.admission(who, cid, contents[i]))
        assert index == i
        (event,) = events(w, result, "Submitted")
        assert event == {"competitionId": cid, "index": i, "participant": who.address, "contentHash": contents[i],
                         "weightsHash": WEIGHTS, "askPrice": ask}  # fmt: skip
        s = w.cm.submission(cid, i)
        assert (s.participant, s.content_hash, s.ask_price, s.submitted_at) == (who.address, contents[i], ask, landing)
        assert (s.public_scored, s.private_scored, s.public_score, s.private_score) == (False, False, 0, 0)
    assert w.cm.competition(cid).submission_count == 3
    assert (w.cm.submissions_by(cid, w.alice.address), w.cm.submissions_by(cid, w.bob.address)) == (2, 1)
    assert w.cm.submissions_by(cid, w.carol.address) == 0
    assert [s.content_hash for s in w.cm.submissions(cid)] == contents
    assert w.cm.weights_hash(cid, 1) == WEIGHTS
    expect("CompetitionMarketUnknownSubmission", (cid, 3), w.cm.submission, cid, 3)
    expect("CompetitionMarketUnknownSubmission", (cid, 3), w.cm.weights_hash, cid, 3)
    w.assert_conserved()


def test_submissions_are_taken_inside_the_window_only(w: World) -> None:
    now = w.chain.now()
    opens, closes = now + 100, now + 200
    cid = w.create(opens_at=opens, closes_at=closes)
    w.set_time(opens - 2)  # lands at opens - 1
    expect("CompetitionMarketOutsideSubmissionWindow", (cid, opens, closes, opens - 2), w.submit, w.alice, competition_id=cid)
    w.set_time(opens - 1)
    assert w.submit(w.alice, competition_id=cid) == 0
    assert w.cm.submission(cid, 0).submitted_at == opens  # the window's first second
    w.set_time(closes - 2)
    assert w.submit(w.alice, competition_id=cid) == 1
    assert w.cm.submission(cid, 1).submitted_at == closes - 1  # the window's last second
    w.set_time(closes)
    expect("CompetitionMarketOutsideSubmissionWindow", (cid, opens, closes, closes), w.submit, w.bob, competition_id=cid)
    expect("CompetitionMarketUnknownCompetition", (99,), w.submit, w.alice, competition_id=99)
    expect("CompetitionMarketUnknownCompetition", (99,), w.cm.competition, 99)


def test_a_participant_submits_at_most_its_cap(w: World) -> None:
    cid = w.create(submission_cap=2)
    w.submit(w.alice, competition_id=cid)
    w.submit(w.alice, competition_id=cid)
    expect("CompetitionMarketSubmissionCapReached", (cid, w.alice.address, 2), w.submit, w.alice, competition_id=cid)
    assert w.submit(w.bob, competition_id=cid) == 2  # the cap is per participant
    assert w.submit(w.alice) == 0  # and per competition


def test_a_copied_ciphertext_is_refused(w: World) -> None:
    cid = w.competition_id
    content = w.new_content()
    w.submit(w.alice, content=content)
    # Bob copies Alice's ciphertext (even with an admission naming him): refused here and in any other competition.
    expect("CompetitionMarketDuplicateSubmission", (content,), w.submit, w.bob, content=content)
    other = w.create()
    expect("CompetitionMarketDuplicateSubmission", (content,), w.submit, w.bob, competition_id=other, content=content)
    expect("CompetitionMarketDuplicateSubmission", (content,), w.submit, w.alice, content=content)  # nor twice by its author
    zero = bytes(32)
    fn = w.cm.contract.functions.submit(cid, zero, WEIGHTS, 0, w.admission(w.alice, cid, zero))
    expect("CompetitionMarketInvalidContentHash", (zero,), w.chain.transact, w.alice, fn)
    assert w.cm.competition(cid).submission_count == 1


def test_the_admission_must_be_an_active_key_managers_for_this_very_submission(w: World) -> None:
    cid, content = w.competition_id, w.new_content()
    chain_id, market = w.chain.chain_id, w.cm.address_bytes

    def attempt(admission: bytes, weights: bytes = WEIGHTS) -> None:
        w.cm.submit(w.alice, cid, content, weights, Wei(0), admission)

    def recovered(admission: bytes) -> str:
        """Whom the contract recovers from ``admission`` when Alice submits ``content`` with WEIGHTS."""
        return "0x" + signer_of(Admission(cid, _addr(w.alice), content, WEIGHTS), admission, chain_id=chain_id, competitions=market).hex()

    # Signed by an enclave that is not a key manager (the evaluator), or by an unregistered key.
    for signer in (w.evaluator, Account.create()):
        admission = w.admission(w.alice, cid, content, signer=signer)
        expect("CompetitionMarketInvalidAdmission", (signer.address,), attempt, admission)
    # Signed by the key manager, but for another participant, competition, ciphertext or weights:
    # the contract recovers somebody else.
    other = w.create()
    for admission in (
        w.admission(w.bob, cid, content),
        w.admission(w.alice, other, content),
        w.admission(w.alice, cid, w.new_content()),
        w.admission(w.alice, cid, content, hashlib.sha256(b"other weights").digest()),
    ):
        got = reverts("CompetitionMarketInvalidAdmission", attempt, admission)
        assert got.error_args[0].lower() == recovered(admission).lower() != w.key_manager.address.lower()
    # A malformed signature recovers nobody.
    expect("CompetitionMarketInvalidAdmission", (ZERO,), attempt, b"\x01" * 64)
    expect("CompetitionMarketInvalidAdmission", (ZERO,), attempt, b"\x00" * 65)
    # The contract's digest is the SDK's EIP-712 digest.
    statement = Admission(cid, _addr(w.alice), content, WEIGHTS)
    digest = encode_typed_data(w.cm.domain(), ADMISSION_TYPES, statement.message())
    assert w.cm.hash_admission(statement) == keccak(b"\x19\x01" + digest.header + digest.body)
    # The right admission goes through; once the key manager is revoked, none does.
    admission = w.admission(w.alice, cid, content)
    attempt(admission)
    w.registry.revoke_enclave(w.governance, w.key_manager.address)
    content = w.new_content()
    expect("CompetitionMarketInvalidAdmission", (w.key_manager.address,), attempt, w.admission(w.alice, cid, content))


# --------------------------------------------------------------------------- scores


def test_public_scores_follow_the_ladder_in_submission_order(w: World) -> None:
    cid = w.competition_id
    for who in (w.alice, w.bob, w.carol):
        w.submit(who)
    expect("CompetitionMarketPublicScoreOutOfOrder", (cid, 1, 0), w.score, 1, Split.PUBLIC, 500_000)
    result = w.score(0, Split.PUBLIC, 500_000)
    (event,) = events(w, result, "ScorePosted")
    assert event == {"competitionId": cid, "index": 0, "split": 1, "score": 500_000, "evaluator": w.evaluator.address}
    record = w.cm.competition(cid)
    assert (record.public_best, record.next_public) == (500_000, 1)
    assert (w.cm.submission(cid, 0).public_score, w.cm.submission(cid, 0).public_scored) == (500_000, True)
    # A receipt computed against an old leaderboard is stale; a worse score is refused.
    expect("CompetitionMarketStalePreviousBest", (cid, 0, 500_000), w.post, w.receipt(1, Split.PUBLIC, 600_000, previous_best=0))
    expect("CompetitionMarketScoreWorseThanBest", (cid, 499_999, 500_000), w.score, 1, Split.PUBLIC, 499_999)
    # The Ladder releases the old best for a submission that does not beat it by the step.
    w.score(1, Split.PUBLIC, 500_000)
    assert (w.cm.submission(cid, 1).public_score, w.cm.competition(cid).next_public) == (500_000, 2)
    # One public score per submission.
    expect("CompetitionMarketAlreadyScored", (cid, 0, 1), w.score, 0, Split.PUBLIC, 900_000)
    expect("CompetitionMarketAlreadyScored", (cid, 1, 1), w.post, w.receipt(1, Split.PUBLIC, 500_000))
    w.score(2, Split.PUBLIC, 700_000)
    assert w.cm.competition(cid).public_best == 700_000
    expect("CompetitionMarketUnknownSubmission", (cid, 3), w.post, w.receipt(2, Split.PUBLIC, 800_000, index=3))


def test_a_lower_is_better_leaderboard_goes_down(w: World) -> None:
    cid = w.create(metric=Metric.LOG_LOSS)
    w.submit(w.alice, competition_id=cid)
    w.submit(w.bob, competition_id=cid)
    expect("CompetitionMarketStalePreviousBest", (cid, 0, NO_SCORE_LOWER_IS_BETTER),
           w.post, w.receipt(0, Split.PUBLIC, 300_000, competition_id=cid, previous_best=0))  # fmt: skip
    w.score(0, Split.PUBLIC, 300_000, competition_id=cid)
    expect("CompetitionMarketScoreWorseThanBest", (cid, 300_001, 300_000), w.score, 1, Split.PUBLIC, 300_001, competition_id=cid)
    w.score(1, Split.PUBLIC, 250_000, competition_id=cid)
    assert w.cm.competition(cid).public_best == 250_000


def test_a_receipt_must_match_the_submission_and_the_competition(w: World) -> None:
    cid = w.competition_id
    w.submit(w.alice)
    mine = w.cm.submission(cid, 0).content_hash
    other = w.create(metric=Metric.MACRO_F1, test_set_hash=hashlib.sha256(b"other test set").digest())
    # For another competition: it has no submission 0 yet, then one with another ciphertext.
    foreign = dataclasses.replace(w.receipt(0, Split.PUBLIC, 1), competition_id=other)
    expect("CompetitionMarketUnknownSubmission", (other, 0), w.post, foreign)
    w.submit(w.bob, competition_id=other)
    theirs = w.cm.submission(other, 0).content_hash
    expect("CompetitionMarketWrongContentHash", (other, 0, mine, theirs),
           w.post, dataclasses.replace(w.receipt(0, Split.PUBLIC, 1), competition_id=other))  # fmt: skip
    wrong = hashlib.sha256(b"wrong").digest()
    expect("CompetitionMarketWrongContentHash", (cid, 0, wrong, mine), w.post, w.receipt(0, Split.PUBLIC, 1, content_hash=wrong))
    expect("CompetitionMarketWrongTestSet", (cid, wrong, TEST_SET), w.post, w.receipt(0, Split.PUBLIC, 1, test_set_hash=wrong))
    expect("CompetitionMarketWrongMetric", (cid, 2, 1), w.post, w.receipt(0, Split.PUBLIC, 1, metric=2))
    for split in (0, 3):
        expect("CompetitionMarketInvalidSplit", (split,), w.post, w.receipt(0, Split.PUBLIC, 1, split=split))
    # The contract's digest is the SDK's EIP-712 digest.
    receipt = w.receipt(0, Split.PUBLIC, 1)
    digest = encode_typed_data(w.cm.domain(), SCORE_TYPES, receipt.message())
    assert w.cm.hash_score(receipt) == keccak(b"\x19\x01" + digest.header + digest.body)
    assert w.cm.competition(cid).next_public == 0


def test_scores_need_an_active_evaluator(w: World) -> None:
    w.submit(w.alice)
    receipt = w.receipt(0, Split.PUBLIC, 900_000)
    # Never approved (an unregistered key) or an enclave of another role.
    for signer in (Account.create(), w.key_manager):
        expect("CompetitionMarketUnknownEvaluator", (signer.address,), w.post, receipt, signer=signer)
    # A receipt altered after signing recovers somebody else.
    signature = w.signed(receipt)
    altered = dataclasses.replace(receipt, score=1_000_000)
    forged = signer_of(altered, signature, chain_id=w.chain.chain_id, competitions=w.cm.address_bytes)
    got = reverts("CompetitionMarketUnknownEvaluator", w.cm.post_score, w.operator, altered, signature)
    assert got.error_args[0].lower() == "0x" + forged.hex()
    expect("CompetitionMarketUnknownEvaluator", (ZERO,), w.cm.post_score, w.operator, receipt, b"\x00" * 65)
    # Anyone may post a valid receipt.
    w.post(receipt, sender=w.stranger)
    tester = w.chain.w3.provider.ethereum_tester  # type: ignore[attr-defined]
    snapshot = tester.take_snapshot()
    w.submit(w.bob)
    w.registry.revoke_enclave(w.governance, w.evaluator.address)  # its key leaked
    expect("CompetitionMarketUnknownEvaluator", (w.evaluator.address,), w.score, 1, Split.PUBLIC, 900_000)
    tester.revert_to_snapshot(snapshot)
    w.submit(w.bob)
    w.registry.revoke_measurement(w.governance, Role.EVALUATOR, EVALUATOR_MEASUREMENT)  # its code is broken
    expect("CompetitionMarketUnknownEvaluator", (w.evaluator.address,), w.score, 1, Split.PUBLIC, 900_000)


def test_private_scores_come_after_the_window_once_each(w: World) -> None:
    cid = w.competition_id
    closes = w.cm.competition(cid).terms.closes_at
    w.submit(w.alice)
    w.submit(w.bob)
    w.set_time(closes - 2)  # lands at closes - 1
    expect("CompetitionMarketPrivateScoringNotStarted", (cid, closes, closes - 2), w.score, 0, Split.PRIVATE, 800_000)
    w.set_time(closes - 1)
    result = w.score(1, Split.PRIVATE, 800_000)  # lands at closes
    assert int(w.chain.w3.eth.get_block(result.receipt["blockNumber"])["timestamp"]) == closes
    (event,) = events(w, result, "ScorePosted")
    assert (event["index"], event["split"], event["score"]) == (1, 2, 800_000)
    s = w.cm.submission(cid, 1)
    assert (s.private_score, s.private_scored, s.public_scored) == (800_000, True, False)
    record = w.cm.competition(cid)
    assert (record.private_scored, record.leader, record.leader_score, record.fully_scored) == (1, 1, 800_000, False)
    expect("CompetitionMarketAlreadyScored", (cid, 1, 2), w.score, 1, Split.PRIVATE, 900_000)
    expect("CompetitionMarketStalePreviousBest", (cid, 5, 0), w.post, w.receipt(0, Split.PRIVATE, 1, previous_best=5))
    # Public scores of submissions made in the window may still be posted while the competition is open.
    w.score(0, Split.PUBLIC, 100_000)
    w.score(0, Split.PRIVATE, 100_000)
    assert w.cm.competition(cid).fully_scored


# --------------------------------------------------------------------------- the close


def _scored_competition(w: World, scores: list[int], **overrides: Any) -> int:
    """A competition with one submission per score (participants alice, bob, carol, alice...),
    each privately scored in reverse order, at the window's end."""
    cid = w.create(**overrides)
    participants = [w.alice, w.bob, w.carol]
    for i in range(len(scores)):
        w.submit(participants[i % 3], competition_id=cid, ask=ASK)
    w.reach(w.cm.competition(cid).terms.closes_at)
    for i in reversed(range(len(scores))):
        w.score(i, Split.PRIVATE, scores[i], competition_id=cid)
    return cid


@pytest.mark.parametrize(
    ("metric", "scores", "winner"),
    [
        (Metric.ACCURACY, [700_000, 900_000, 800_000], 1),
        (Metric.ACCURACY, [700_000, 900_000, 900_000], 1),  # a tie goes to the earlier submission (posted later here)
        (Metric.ROC_AUC, [900_000, 900_000, 900_000], 0),
        (Metric.LOG_LOSS, [700_000, 900_000, 600_000], 2),
        (Metric.RMSE, [600_000, 900_000, 600_000], 0),
    ],
)
def test_the_best_private_score_wins_ties_going_to_the_earlier_submission(w: World, metric: Metric, scores: list[int], winner: int) -> None:
    cid = _scored_competition(w, scores, metric=metric)
    record = w.cm.competition(cid)
    assert (record.leader, record.leader_score, record.fully_scored) == (winner, scores[winner], True)
    winner_account = [w.alice, w.bob, w.carol][winner]
    before = w.cm.credits(winner_account.address)
    result = w.cm.close(w.organizer, cid)  # the organizer may close early: everything is scored
    (closed,) = events(w, result, "CompetitionClosed")
    assert closed == {"competitionId": cid, "winnerIndex": winner, "winner": winner_account.address, "prize": PRIZE}
    (credited,) = events(w, result, "PaymentCredited")
    assert credited == {"account": winner_account.address, "id": cid, "amount": PRIZE}
    assert w.cm.credits(winner_account.address) == before + PRIZE
    assert w.cm.competition(cid).status is CompetitionStatus.CLOSED
    w.assert_conserved()


def test_ties_keep_the_earlier_submission_whatever_the_posting_order(w: World) -> None:
    cid = w.create()
    for who in (w.alice, w.bob, w.carol):
        w.submit(who, competition_id=cid)
    w.reach(w.cm.competition(cid).terms.closes_at)
    w.score(1, Split.PRIVATE, 500_000, competition_id=cid)
    w.score(2, Split.PRIVATE, 500_000, competition_id=cid)  # equal, later: stays with 1
    assert w.cm.competition(cid).leader == 1
    w.score(0, Split.PRIVATE, 500_000, competition_id=cid)  # equal, earlier: takes the lead
    assert w.cm.competition(cid).leader == 0


def test_who_may_close_and_when(w: World) -> None:
    cid = w.competition_id
    terms = w.cm.competition(cid).terms
    w.submit(w.alice)
    w.submit(w.bob)
    expect("CompetitionMarketSubmissionsStillOpen", (cid, terms.closes_at), w.cm.close, w.organizer, cid)
    w.set_time(terms.closes_at)
    w.score(1, Split.PRIVATE, 600_000)
    expect("CompetitionMarketNotOrganizer", (cid, w.stranger.address, terms.open_to_all_at), w.cm.close, w.stranger, cid)
    expect("CompetitionMarketScoringIncomplete", (cid, 1, 2), w.cm.close, w.organizer, cid)
    w.set_time(terms.open_to_all_at - 2)  # lands at open_to_all_at - 1
    expect("CompetitionMarketNotOrganizer", (cid, w.alice.address, terms.open_to_all_at), w.cm.close, w.alice, cid)
    # From the end of the scoring period anyone closes, scored or not: an organizer cannot keep the prize.
    w.set_time(terms.open_to_all_at - 1)
    result = w.cm.close(w.stranger, cid)
    (closed,) = events(w, result, "CompetitionClosed")
    assert (closed["winnerIndex"], closed["winner"]) == (1, w.bob.address)
    assert w.cm.credits(w.bob.address) == PRIZE
    expect("CompetitionMarketInvalidStatus", (cid, CompetitionStatus.CLOSED), w.cm.close, w.organizer, cid)
    expect("CompetitionMarketInvalidStatus", (cid, CompetitionStatus.CLOSED), w.score, 0, Split.PRIVATE, 1)
    expect("CompetitionMarketInvalidStatus", (cid, CompetitionStatus.CLOSED), w.submit, w.carol)
    expect("CompetitionMarketUnknownCompetition", (99,), w.cm.close, w.organizer, 99)
    w.assert_conserved()


def test_the_prize_goes_back_when_nothing_was_scored(w: World) -> None:
    # No submission at all: the organizer closes as soon as the window ends (0 of 0 scored).
    cid = w.competition_id
    w.reach(w.cm.competition(cid).terms.closes_at)
    result = w.cm.close(w.organizer, cid)
    (closed,) = events(w, result, "CompetitionClosed")
    assert closed == {"competitionId": cid, "winnerIndex": NO_LEADER, "winner": ZERO, "prize": PRIZE}
    assert w.cm.credits(w.organizer.address) == PRIZE
    # Submissions nobody scored: after the scoring period anyone closes and the prize goes back.
    cid = w.create()
    w.submit(w.alice, competition_id=cid)
    w.set_time(w.cm.competition(cid).terms.closes_at)
    expect("CompetitionMarketScoringIncomplete", (cid, 0, 1), w.cm.close, w.organizer, cid)
    _close_after_scoring(w, cid, w.alice)
    assert w.cm.credits(w.organizer.address) == 2 * PRIZE and w.cm.credits(w.alice.address) == 0
    amount, _ = w.cm.withdraw(w.organizer)
    assert amount == 2 * PRIZE
    w.assert_conserved()


def _close_at_end(w: World, cid: int) -> None:
    """The organizer closes ``cid`` once its window is over (every submission must be scored)."""
    w.reach(w.cm.competition(cid).terms.closes_at)
    w.cm.close(w.organizer, cid)


def _close_after_scoring(w: World, cid: int, sender: LocalAccount) -> None:
    """``sender`` closes ``cid`` once its scoring period is over."""
    w.reach(w.cm.competition(cid).terms.open_to_all_at)
    w.cm.close(sender, cid)


# --------------------------------------------------------------------------- purchases


def _closed(w: World, policy: PurchasePolicy) -> int:
    cid = _scored_competition(w, [500_000, 600_000], purchase_policy=policy)
    w.cm.close(w.organizer, cid)
    return cid


def test_a_model_is_bought_after_the_close_at_its_price(w: World) -> None:
    cid = w.competition_id
    w.submit(w.alice, ask=ASK)
    w.submit(w.bob, ask=0)
    expect("CompetitionMarketInvalidStatus", (cid, CompetitionStatus.OPEN), w.cm.buy, w.stranger, cid, 0, BUYER_KEY)
    _close_after_scoring(w, cid, w.stranger)
    result = w.cm.buy(w.stranger, cid, 0, BUYER_KEY)
    (bought,) = events(w, result, "ModelBought")
    assert bought == {"competitionId": cid, "index": 0, "buyer": w.stranger.address, "price": ASK, "buyerKey": BUYER_KEY}
    (credited,) = events(w, result, "PaymentCredited")
    assert credited == {"account": w.alice.address, "id": cid, "amount": ASK}
    assert w.cm.purchase_key(cid, 0, w.stranger.address) == BUYER_KEY
    assert w.cm.purchase_key(cid, 0, w.organizer.address) == bytes(32)
    assert w.cm.credits(w.alice.address) == ASK
    expect("CompetitionMarketAlreadyBought", (cid, 0, w.stranger.address), w.cm.buy, w.stranger, cid, 0, BUYER_KEY)
    w.cm.buy(w.organizer, cid, 0, b"\x08" * 32)  # another buyer
    assert w.cm.credits(w.alice.address) == 2 * ASK
    expect("CompetitionMarketNotForSale", (cid, 1), w.cm.buy, w.stranger, cid, 1, BUYER_KEY)  # no ask price
    expect("CompetitionMarketUnknownSubmission", (cid, 2), w.cm.buy, w.stranger, cid, 2, BUYER_KEY)
    w.assert_conserved()


def test_a_purchase_pays_exactly_and_names_a_key(w: World) -> None:
    cid = _closed(w, PurchasePolicy.ANYONE)
    fn = w.cm.contract.functions.buy(cid, 0, BUYER_KEY)
    for sent in (0, ASK - 1, ASK + 1):
        expect("PullPaymentsIncorrectPayment", (sent, ASK), w.chain.transact, w.stranger, fn, value=sent)
    zero = w.cm.contract.functions.buy(cid, 0, bytes(32))
    expect("CompetitionMarketInvalidBuyerKey", (bytes(32),), w.chain.transact, w.stranger, zero, value=ASK)
    with pytest.raises(ContractReverted) as info:  # the client reads the price first
        w.cm.buy(w.stranger, 99, 0, BUYER_KEY)
    assert info.value.error == "CompetitionMarketUnknownSubmission"
    expect("CompetitionMarketUnknownCompetition", (99,), w.chain.transact, w.stranger, w.cm.contract.functions.buy(99, 0, BUYER_KEY))


@pytest.mark.parametrize("policy", list(PurchasePolicy))
def test_the_purchase_policy_decides_who_may_buy(w: World, policy: PurchasePolicy) -> None:
    cid = _closed(w, policy)
    if policy is PurchasePolicy.NONE:
        for buyer in (w.organizer, w.stranger):
            expect("CompetitionMarketNotForSale", (cid, 0), w.cm.buy, buyer, cid, 0, BUYER_KEY)
        return
    if policy is PurchasePolicy.ORGANIZER:
        expect("CompetitionMarketBuyerNotAllowed", (cid, w.stranger.address), w.cm.buy, w.stranger, cid, 0, BUYER_KEY)
        expect("CompetitionMarketBuyerNotAllowed", (cid, w.bob.address), w.cm.buy, w.bob, cid, 0, BUYER_KEY)
    else:
        w.cm.buy(w.stranger, cid, 0, BUYER_KEY)
    w.cm.buy(w.organizer, cid, 1, BUYER_KEY)
    assert w.cm.purchase_key(cid, 1, w.organizer.address) == BUYER_KEY


# --------------------------------------------------------------------------- payments


def test_withdraw_sends_the_pending_payments(w: World) -> None:
    cid = _closed(w, PurchasePolicy.ANYONE)  # bob's submission 1 won
    w.cm.buy(w.stranger, cid, 0, BUYER_KEY)
    expect("PullPaymentsNothingToWithdraw", (w.carol.address,), w.cm.withdraw, w.carol)
    before = w.chain.balance(w.bob.address)
    amount, result = w.cm.withdraw(w.bob)
    assert amount == PRIZE
    gas = int(result.receipt["gasUsed"]) * int(result.receipt["effectiveGasPrice"])
    assert w.chain.balance(w.bob.address) == before + PRIZE - gas
    assert w.cm.withdraw(w.alice)[0] == ASK
    assert w.cm.credits(w.bob.address) == w.cm.credits(w.alice.address) == 0
    expect("PullPaymentsNothingToWithdraw", (w.bob.address,), w.cm.withdraw, w.bob)
    assert w.chain.balance(w.cm.address) == sum(r.terms.prize for r in (w.cm.competition(w.competition_id),))
    w.assert_conserved()


def test_a_refused_or_reentrant_withdrawal_fails_and_loses_nothing(w: World) -> None:
    """The shared PullPayments withdraw: an organizer contract whose receive() refuses the refunded
    prize, or calls withdraw again (the reentrancy guard refuses it), gets
    PullPaymentsWithdrawFailed and keeps its credit; accepting, it is paid once."""
    artifact = load_artifact("PaymentReceiverMock", test=True)
    factory = w.chain.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    deployed = w.chain.transact(w.stranger, factory.constructor(w.cm.address), name="deploy PaymentReceiverMock")  # type: ignore[arg-type]
    mock = w.chain.w3.eth.contract(address=deployed.receipt["contractAddress"], abi=artifact["abi"])
    terms = w.terms()
    create = w.cm.contract.encode_abi("createCompetition", args=[terms.as_tuple()])
    w.chain.transact(w.stranger, mock.functions.forward(create), value=PRIZE)
    cid = w.cm.competition_count()
    assert w.cm.competition(cid).organizer == mock.address
    w.reach(terms.open_to_all_at)
    w.cm.close(w.stranger, cid)  # nothing was submitted: the prize goes back to the organizer
    assert w.cm.credits(mock.address) == PRIZE
    held = w.chain.balance(w.cm.address)
    for mode in (1, 2):  # PaymentReceiverMock.Mode.Reject, Reenter
        w.chain.transact(w.stranger, mock.functions.setMode(mode, 0))
        expect("PullPaymentsWithdrawFailed", (mock.address, PRIZE), w.chain.transact, w.stranger, mock.functions.withdraw())
        assert (w.cm.credits(mock.address), w.chain.balance(w.cm.address), w.chain.balance(mock.address)) == (PRIZE, held, 0)
    w.chain.transact(w.stranger, mock.functions.setMode(0, 0))  # Accept
    w.chain.transact(w.stranger, mock.functions.withdraw())
    assert (w.cm.credits(mock.address), w.chain.balance(w.cm.address), w.chain.balance(mock.address)) == (0, held - PRIZE, PRIZE)
    expect("PullPaymentsNothingToWithdraw", (mock.address,), w.chain.transact, w.stranger, mock.functions.withdraw())


def _deploy_test_token(chain: Chain, account: LocalAccount, name: str = "TestStablecoin") -> tuple[str, Any]:
    artifact = load_artifact(name, test=True)
    factory = chain.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    chain.register_errors(artifact["abi"])
    result = chain.transact(account, factory.constructor(), name=f"deploy {name}")  # type: ignore[arg-type]
    address = str(result.receipt["contractAddress"])
    return address, chain.w3.eth.contract(address=address, abi=artifact["abi"])  # type: ignore[call-overload]


def test_erc20_path(base: World, w: World) -> None:
    chain = w.chain
    minter = chain.new_account()
    token_address, token = _deploy_test_token(chain, minter)
    t = build_world(chain, token=token_address)
    for who in (t.organizer, t.stranger):
        chain.transact(minter, token.functions.mint(who.address, 10 * PRIZE))
    assert t.cm.payment_token() == token_address
    fn = t.cm.contract.functions.createCompetition(t.terms().as_tuple())
    reverts("ERC20InsufficientAllowance", chain.transact, t.organizer, fn)
    t.cm.approve_payment(t.organizer, Wei(PRIZE))
    expect("PullPaymentsIncorrectPayment", (1, 0), chain.transact, t.organizer, fn, value=1)
    t.competition_id = t.create()  # the allowance is there already: pulled
    assert int(token.functions.balanceOf(t.cm.address).call()) == PRIZE
    assert t.cm.payment_allowance(t.organizer.address) == 0
    cid = t.competition_id
    t.submit(t.alice, ask=ASK)
    t.reach(t.cm.competition(cid).terms.closes_at)
    t.score(0, Split.PRIVATE, 900_000)
    t.cm.close(t.organizer, cid)
    buy = t.cm.contract.functions.buy(cid, 0, BUYER_KEY)
    reverts("ERC20InsufficientAllowance", chain.transact, t.stranger, buy)
    t.cm.buy(t.stranger, cid, 0, BUYER_KEY)  # approves, then pulls
    assert t.cm.credits(t.alice.address) == PRIZE + ASK
    t.assert_conserved()
    assert t.cm.withdraw(t.alice)[0] == PRIZE + ASK
    assert int(token.functions.balanceOf(t.alice.address).call()) == PRIZE + ASK
    assert int(token.functions.balanceOf(t.stranger.address).call()) == 10 * PRIZE - ASK
    assert int(token.functions.balanceOf(t.cm.address).call()) == 0
    # A token that delivers less than asked (fee on transfer) is refused.
    fee_address, fee_token = _deploy_test_token(chain, minter, "FeeOnTransferToken")
    market, _ = deploy_competition_market(chain, t.governance, t.deployment.registry, fee_address)
    fee_cm = CompetitionMarketClient(chain, market)
    chain.transact(minter, fee_token.functions.mint(t.organizer.address, 10 * PRIZE))
    expect("PullPaymentsTokenTransferShortfall", (PRIZE, PRIZE - PRIZE // 100), fee_cm.create_competition, t.organizer, t.terms())
    # A token calling back into the market while paying it meets the reentrancy guard.
    hook_address, hook = _deploy_test_token(chain, minter, "HookToken")
    market, _ = deploy_competition_market(chain, t.governance, t.deployment.registry, hook_address)
    hook_cm = CompetitionMarketClient(chain, market)
    chain.transact(minter, hook.functions.mint(t.organizer.address, 10 * PRIZE))
    chain.transact(minter, hook.functions.setReceiver(market))
    reverts("ReentrancyGuardReentrantCall", hook_cm.create_competition, t.organizer, t.terms())


# --------------------------------------------------------------------------- the SDK client


def test_changes_list_a_competitions_life_in_order(w: World) -> None:
    start = int(w.chain.w3.eth.block_number) + 1
    cid = w.create(purchase_policy=PurchasePolicy.ANYONE)
    w.submit(w.alice, competition_id=cid, ask=ASK)
    w.score(0, Split.PUBLIC, 400_000, competition_id=cid)
    w.reach(w.cm.competition(cid).terms.closes_at)
    w.score(0, Split.PRIVATE, 410_000, competition_id=cid)
    w.cm.close(w.organizer, cid)
    w.cm.buy(w.bob, cid, 0, BUYER_KEY)
    w.cm.withdraw(w.alice)  # payments are not listed
    changes = w.cm.changes(start, int(w.chain.w3.eth.block_number))
    assert [type(c) for c in changes] == [CompetitionCreated, Submitted, ScorePosted, ScorePosted, CompetitionClosed, ModelBought]
    created, submitted, public, private, closed, bought = changes
    assert isinstance(created, CompetitionCreated) and isinstance(submitted, Submitted) and isinstance(public, ScorePosted)
    assert isinstance(private, ScorePosted) and isinstance(closed, CompetitionClosed) and isinstance(bought, ModelBought)
    assert (created.organizer, created.terms) == (w.organizer.address, w.cm.competition(cid).terms)
    assert (submitted.index, submitted.participant, submitted.weights_hash, submitted.ask_price) == (0, w.alice.address, WEIGHTS, ASK)
    assert (public.split, public.score, public.evaluator) == (Split.PUBLIC, 400_000, w.evaluator.address)
    assert (private.split, private.score) == (Split.PRIVATE, 410_000)
    assert (closed.winner_index, closed.winner, closed.prize) == (0, w.alice.address, PRIZE)
    assert (bought.index, bought.buyer, bought.price, bought.buyer_key) == (0, w.bob.address, ASK, BUYER_KEY)
    assert all(c.competition_id == cid for c in changes)
    assert [(c.block_number, c.log_index) for c in changes] == sorted((c.block_number, c.log_index) for c in changes)
    # A close without a winner reports none.
    _close_at_end(w, w.competition_id)
    (refund,) = w.cm.changes(int(w.chain.w3.eth.block_number), int(w.chain.w3.eth.block_number))
    assert isinstance(refund, CompetitionClosed) and (refund.winner_index, refund.winner) == (None, None)


def test_the_client_checks_what_it_sends(w: World) -> None:
    content = w.new_content()
    admission = w.admission(w.alice, w.competition_id, content)
    with pytest.raises(ConfigError, match="96 bits"):
        w.cm.submit(w.alice, w.competition_id, content, WEIGHTS, Wei(2**96), admission)
    with pytest.raises(ConfigError, match="32 bytes"):
        w.cm.submit(w.alice, w.competition_id, content[:31], WEIGHTS, Wei(0), admission)
    past = w.terms(opens_at=0, closes_at=w.chain.now() - 1)
    with pytest.raises(ConfigError, match="over"):
        w.cm.create_competition(w.organizer, past)
    with pytest.raises(ConfigError, match="native currency"):
        w.cm.approve_payment(w.organizer, Wei(1))
    assert w.cm.payment_token() is None and w.cm.payment_allowance(w.organizer.address) == 0
    assert w.cm.registry() == w.deployment.registry
    assert w.cm.domain()["verifyingContract"] == w.cm.address and w.cm.domain()["name"] == "SterlingCompetitions"


def test_deploy_competition_market_validates_arguments(w: World) -> None:
    with pytest.raises(ConfigError):
        deploy_competition_market(w.chain, w.governance, w.deployment.registry, admin_delay=2**48)
    with pytest.raises(ConfigError):
        deploy_competition_market(w.chain, w.governance, w.deployment.registry, w.stranger.address)  # no code
    with pytest.raises(ConfigError):
        deploy_competition_market(w.chain, w.governance, w.deployment.registry, "not an address")
    address, _ = deploy_competition_market(w.chain, w.governance, w.deployment.registry, admin_delay=5)
    client = CompetitionMarketClient(w.chain, address)
    assert (client.payment_token(), client.registry(), client.competition_count()) == (None, w.deployment.registry, 0)
    contract = client.contract.functions
    assert (contract.defaultAdmin().call(), contract.defaultAdminDelay().call()) == (w.governance.address, 5)


def test_old_deployment_records_still_load(tmp_path: Any, w: World) -> None:
    record = dataclasses.asdict(w.deployment)
    del record["competitions"]
    path = tmp_path / "deployment.json"
    path.write_text(json.dumps(record))
    assert Deployment.load(path).competitions is None
    w.deployment.save(path)
    assert Deployment.load(path) == w.deployment


# --------------------------------------------------------------------------- gas


GAS_GOAL = 150_000


def test_gas_goals() -> None:
    """Every competition call but the creation within 150,000 gas (``make gas`` measures them)."""
    from benchmarks.gas_report import GasReport, measure_competitions

    report = GasReport()
    measure_competitions(report)
    rows = {(f, c): g for f, c, g in report.rows}
    for (function, case), gas in rows.items():
        if function in ("deploy", "createCompetition"):
            continue
        assert gas <= GAS_GOAL, (function, case, gas)
    assert rows[("submit", "")] <= rows[("submit", "first")]
    for function in ("createCompetition", "submit", "postScore", "close", "buy", "withdraw"):
        assert any(f == function for f, _c in rows), function
