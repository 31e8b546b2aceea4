"""Stateful property test of CompetitionMarket.

A Hypothesis rule-based state machine drives up to four competitions (any metric, cap and
purchase policy; organized by the organizer or by a participant) on the embedded chain through
creations (also with no prize or a wrong payment), submissions (fresh, copied, admitted for
someone else, admitted by a non-key-manager, to unknown competitions, early, late, over the cap),
public scores (the next in order, out of order, stale, worse than the leaderboard, Ladder-kept
bests, signed by a non-evaluator), private scores (early, twice, with a non-zero previousBest,
ties), closes (by the organizer, by others, before and after the scoring period), time travel,
purchases (every policy, no price, a zero key, a wrong payment, twice) and withdrawals. A Python
model predicts every call: the exact custom error with its values, or success with its exact
event and payments; any disagreement fails the test.

The chain is moved well ahead of the wall clock first, so every transaction lands exactly one
second after the latest block; a transaction is never sent at a second where a competition's
window opens or closes or its scoring period ends (an empty block is mined instead), because the
SDK decodes an embedded revert by re-running the call one second earlier.

After every step:
- value conservation: the market's balance == Σ prizes of Open competitions + Σ credits, and
  every account's ``credits`` equals the model's;
- every competition's and submission's chain state equals the model's; the leaderboard's best
  only ever moved in the metric's better direction;
- at most one public and one private ``ScorePosted`` per submission (counted in the chain's logs);
- a closed competition's ``CompetitionClosed`` names the winner the model predicts (the best
  private score, ties to the earlier submission, none when nothing was scored) and its prize went
  to it (or back to the organizer).

``STERLING_COMPETITION_EXAMPLES`` sets the number of examples (default 8) and
``STERLING_COMPETITION_STEPS`` the steps per example (default 30); a longer run, e.g.
``STERLING_COMPETITION_EXAMPLES=200 STERLING_COMPETITION_STEPS=100``, for fuzzing.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from web3.logs import DISCARD

from enclave_worker.trusted.competition import Admission, ScoreReceipt, sign, signer_of
from enclave_worker.trusted.onchain import NO_SCORE_LOWER_IS_BETTER, CompetitionStatus, Metric, PurchasePolicy, Split
from marketplace.chain import Chain, Wei
from marketplace.competitions import CompetitionClosed, CompetitionTerms, ScorePosted
from marketplace.errors import ContractReverted

from .test_competition_market import RULES, SCHEMA, TEST_SET, WEIGHTS, World, build_world

EXAMPLES = int(os.environ.get("STERLING_COMPETITION_EXAMPLES") or 8)
STEPS = int(os.environ.get("STERLING_COMPETITION_STEPS") or 30)
MAX_COMPETITIONS = 4
UNIT = 10**15
NO_LEADER = 2**32 - 1
BUYER_KEY = b"\x09" * 32


@dataclass
class SubmissionModel:
    participant: LocalAccount
    content: bytes
    ask: int
    public: int | None = None
    private: int | None = None
    buyers: set[str] = field(default_factory=set)


@dataclass
class CompetitionModel:
    competition_id: int
    organizer: LocalAccount
    terms: CompetitionTerms
    public_best: int
    status: CompetitionStatus = CompetitionStatus.OPEN
    submissions: list[SubmissionModel] = field(default_factory=list)
    next_public: int = 0
    best_history: list[int] = field(default_factory=list)
    winner: int | None = None  # the predicted winner, fixed at the close

    @property
    def higher_is_better(self) -> bool:
        return Metric(self.terms.metric).higher_is_better

    def made_by(self, account: LocalAccount) -> int:
        return sum(1 for s in self.submissions if s.participant is account)

    def predicted_winner(self) -> int | None:
        """The best private score (ties: the lowest index), computed afresh from the scores."""
        scored = [(s.private, i) for i, s in enumerate(self.submissions) if s.private is not None]
        if not scored:
            return None
        sign_ = -1 if self.higher_is_better else 1
        return min(scored, key=lambda p: (sign_ * p[0], p[1]))[1]


_STATE: dict[str, Any] = {}


def _world(chain: Chain) -> World:
    """One deployment for all examples, moved a day ahead of the wall clock, reset by snapshot."""
    tester = chain.w3.provider.ethereum_tester  # type: ignore[attr-defined]
    if "world" not in _STATE:
        # Calls name a sender, so that web3 does not list the node's accounts to pick one for each.
        chain.w3.eth.default_account = chain.w3.eth.accounts[0]
        w = build_world(chain)
        chain.advance_time(86_400)
        _STATE["world"], _STATE["snapshot"] = w, tester.take_snapshot()
    else:
        tester.revert_to_snapshot(_STATE["snapshot"])
    world: World = _STATE["world"]
    world._models = 0
    return world


class CompetitionMachine(RuleBasedStateMachine):
    w: World

    def setup(self) -> None:
        self.w = _world(_STATE["chain"])
        w = self.w
        self.start_block = int(w.chain.w3.eth.block_number) + 1
        self.base_id = w.cm.competition_count()  # the world's own competition stays untouched
        self.base_prize = w.cm.competition(w.competition_id).terms.prize
        self.competitions: list[CompetitionModel] = []
        self.organizers = [w.organizer, w.carol]
        self.participants = [w.alice, w.bob, w.carol]
        self.buyers = [w.organizer, w.stranger, w.bob, w.carol]
        self.accounts = [w.organizer, w.alice, w.bob, w.carol, w.stranger, w.operator]
        self.credits = {a.address: w.cm.credits(a.address) for a in self.accounts}
        assert not any(self.credits.values())
        self.contents: set[bytes] = set()
        self.models = 0
        self.logged: list[Any] = []  # the market's competition events so far (read incrementally)
        self.logged_to = self.start_block - 1

    # ----------------------------------------------------------------- helpers

    def _now(self) -> int:
        """The second the next transaction lands at (the chain is ahead of the wall clock)."""
        return self.w.chain.now() + 1

    def _boundaries(self) -> set[int]:
        return {b for c in self.competitions for b in (c.terms.opens_at, c.terms.closes_at, c.terms.open_to_all_at)}

    def _clear_of_boundaries(self) -> int:
        """Mine empty blocks until the next transaction lands off every boundary; its second."""
        boundaries = self._boundaries()
        while self._now() in boundaries:
            self.w.chain.advance_time(1)
        return self._now()

    def _expect(self, error: str | None, args: tuple[Any, ...] | None, call: Callable[[], Any]) -> Any:
        """Run ``call``; assert it reverts with ``error`` carrying ``args`` (or succeeds when ``None``)."""
        if error is None:
            return call()
        with pytest.raises(ContractReverted) as info:
            call()
        assert info.value.error == error, info.value
        if args is not None:
            assert info.value.error_args == args, info.value
        return None

    def _competition(self, c: int) -> tuple[int, CompetitionModel | None]:
        """A modelled competition for ``c`` < 6 (round robin), else an unknown id."""
        if c < 6 and self.competitions:
            model = self.competitions[c % len(self.competitions)]
            return model.competition_id, model
        return self.base_id + len(self.competitions) + 1, None

    def _content(self) -> bytes:
        self.models += 1
        return hashlib.sha256(b"stateful model %d" % self.models).digest()

    def _receipt(self, model: CompetitionModel | None, cid: int, index: int, split: Split, score: int, previous: int) -> ScoreReceipt:
        content = model.submissions[index].content if model and index < len(model.submissions) else self._content()
        metric = int(model.terms.metric) if model else 1
        return ScoreReceipt(cid, index, content, TEST_SET, metric, split, score, previous)

    # ----------------------------------------------------------------- rules

    _CREATE = {
        "metric": st.sampled_from(list(Metric)),
        "cap": st.integers(1, 3),
        "policy": st.sampled_from(list(PurchasePolicy)),
        "window": st.sampled_from([60, 300, 900]),
        "scoring": st.sampled_from([1, 120, 600]),
        "o": st.integers(0, 1),
        "units": st.integers(1, 5),
    }

    @initialize(entries=st.lists(st.tuples(st.integers(0, 2), st.sampled_from([0, UNIT])), max_size=5), **_CREATE)
    def first_competition(
        self, entries: list[tuple[int, int]], metric: Metric, cap: int, policy: PurchasePolicy, window: int, scoring: int, o: int,
        units: int,
    ) -> None:  # fmt: skip
        """Deploy-time state: one competition with a few entries (more get in through the rules)."""
        self.setup()
        self.create("ok", metric, cap, policy, window, scoring, o, units)
        for p, ask in entries:
            self.submit(0, p, "fresh", ask)

    @rule(kind=st.sampled_from(["ok"] * 3 + ["future"] * 2 + ["no_prize", "underpaid"]), **_CREATE)
    def create(self, kind: str, metric: Metric, cap: int, policy: PurchasePolicy, window: int, scoring: int, o: int, units: int) -> None:
        if len(self.competitions) >= MAX_COMPETITIONS:
            return
        w, organizer = self.w, self.organizers[o]
        now = self._clear_of_boundaries()
        opens = now + 150 if kind == "future" else now - 10
        prize = 0 if kind == "no_prize" else units * UNIT
        terms = CompetitionTerms(
            test_set_hash=TEST_SET, schema_hash=SCHEMA, rules_hash=RULES, prize=Wei(prize), metric=metric, public_split_bps=2500,
            ladder_step=1000, opens_at=opens, closes_at=opens + window, scoring_period=scoring, submission_cap=cap,
            purchase_policy=policy,
        )  # fmt: skip
        fn = w.cm.contract.functions.createCompetition(terms.as_tuple())
        if kind == "no_prize":
            self._expect("CompetitionMarketInvalidPrize", (0,), lambda: w.chain.transact(organizer, fn))
            return
        if kind == "underpaid":
            self._expect("PullPaymentsIncorrectPayment", (prize - 1, prize), lambda: w.chain.transact(organizer, fn, value=prize - 1))
            return
        competition_id, result = w.cm.create_competition(organizer, terms)
        assert competition_id == self.base_id + len(self.competitions) + 1
        best = 0 if metric.higher_is_better else NO_SCORE_LOWER_IS_BETTER
        self.competitions.append(CompetitionModel(competition_id, organizer, terms, best, best_history=[best]))

    @rule(
        c=st.integers(0, 6),
        p=st.integers(0, 2),
        kind=st.sampled_from(["fresh"] * 6 + ["copy", "foreign_admission", "evaluator_admission"]),
        ask=st.sampled_from([0, UNIT, 3 * UNIT]),
    )
    def submit(self, c: int, p: int, kind: str, ask: int) -> None:
        w, participant = self.w, self.participants[p]
        cid, model = self._competition(c)
        now = self._clear_of_boundaries()
        copied = [s.content for m in self.competitions for s in m.submissions]
        content = copied[self.models % len(copied)] if kind == "copy" and copied else self._content()
        signer, named = w.key_manager, participant
        if kind == "foreign_admission":
            named = self.participants[(p + 1) % 3]
        elif kind == "evaluator_admission":
            signer = w.evaluator
        admission = sign(signer, Admission(cid, bytes.fromhex(named.address[2:]), content, WEIGHTS), chain_id=w.chain.chain_id,
                         competitions=w.cm.address_bytes)  # fmt: skip
        # The contract's checks, in its order.
        error: str | None = None
        args: tuple[Any, ...] = ()
        if model is None:
            error, args = "CompetitionMarketUnknownCompetition", (cid,)
        elif model.status is not CompetitionStatus.OPEN:
            error, args = "CompetitionMarketInvalidStatus", (cid, model.status)
        elif not model.terms.opens_at <= now < model.terms.closes_at:
            error, args = "CompetitionMarketOutsideSubmissionWindow", (cid, model.terms.opens_at, model.terms.closes_at, now - 1)
        elif model.made_by(participant) >= model.terms.submission_cap:
            error, args = "CompetitionMarketSubmissionCapReached", (cid, participant.address, model.terms.submission_cap)
        elif content in self.contents:
            error, args = "CompetitionMarketDuplicateSubmission", (content,)
        elif kind == "evaluator_admission":
            error, args = "CompetitionMarketInvalidAdmission", (w.evaluator.address,)
        elif kind == "foreign_admission":
            statement = Admission(cid, bytes.fromhex(participant.address[2:]), content, WEIGHTS)
            recovered = signer_of(statement, admission, chain_id=w.chain.chain_id, competitions=w.cm.address_bytes)
            error, args = "CompetitionMarketInvalidAdmission", (to_checksum_address(recovered),)
        got = self._expect(error, args, lambda: w.cm.submit(participant, cid, content, WEIGHTS, Wei(ask), admission))
        if error is not None:
            return
        assert model is not None
        index, _ = got
        assert index == len(model.submissions)
        model.submissions.append(SubmissionModel(participant, content, ask))
        self.contents.add(content)

    @rule(c=st.integers(0, 6), p=st.integers(0, 2), ask=st.sampled_from([0, UNIT]))
    def submit_fresh(self, c: int, p: int, ask: int) -> None:
        """A second rule for admitted submissions of fresh models, the common case (by a
        participant below its cap, if there is one)."""
        _cid, model = self._competition(c)
        if model is not None:
            below = [q for q in range(3) if model.made_by(self.participants[(p + q) % 3]) < model.terms.submission_cap]
            p = (p + below[0]) % 3 if below else p
        self.submit(c, p, "fresh", ask)

    @rule(
        c=st.integers(0, 6),
        kind=st.sampled_from(["next"] * 6 + ["keep_best"] * 2 + ["other_index", "stale", "worse", "not_evaluator", "private_early"]),
        gain=st.integers(1, 50_000),
    )
    def score_public(self, c: int, kind: str, gain: int) -> None:
        w = self.w
        cid, model = self._competition(c)
        self._clear_of_boundaries()
        if kind == "private_early":  # a private score is posted as a public one would be, whatever the time
            self._score_private(cid, model, 0, "ok", 500_000)
            return
        best = model.public_best if model else 0
        index = model.next_public if model else 0
        higher = model.higher_is_better if model else True
        better = (best + gain if best + gain < 2**64 else best) if higher else (best - gain if best >= gain else 0)
        if best == NO_SCORE_LOWER_IS_BETTER and not higher:
            better = 500_000 + gain
        score, previous = better, best
        if kind == "keep_best":
            score = best
        elif kind == "other_index":
            index = index + 1 + gain % 2
        elif kind == "stale":
            previous = best + 1 if best < 2**64 - 1 else best - 1
        elif kind == "worse":
            if (higher and best == 0) or (not higher and best == NO_SCORE_LOWER_IS_BETTER):
                return  # nothing is worse than the starting best
            score = best - 1 if higher else best + 1
        receipt = self._receipt(model, cid, index, Split.PUBLIC, score, previous)
        signer = w.key_manager if kind == "not_evaluator" else w.evaluator
        # The contract's checks, in its order.
        error: str | None = None
        args: tuple[Any, ...] = ()
        if kind == "not_evaluator":
            error, args = "CompetitionMarketUnknownEvaluator", (w.key_manager.address,)
        elif model is None:
            error, args = "CompetitionMarketUnknownCompetition", (cid,)
        elif model.status is not CompetitionStatus.OPEN:
            error, args = "CompetitionMarketInvalidStatus", (cid, model.status)
        elif index >= len(model.submissions):
            error, args = "CompetitionMarketUnknownSubmission", (cid, index)
        elif model.submissions[index].public is not None:
            error, args = "CompetitionMarketAlreadyScored", (cid, index, int(Split.PUBLIC))
        elif index != model.next_public:
            error, args = "CompetitionMarketPublicScoreOutOfOrder", (cid, index, model.next_public)
        elif previous != best:
            error, args = "CompetitionMarketStalePreviousBest", (cid, previous, best)
        elif (score < best) if higher else (score > best):
            error, args = "CompetitionMarketScoreWorseThanBest", (cid, score, best)
        signature = sign(signer, receipt, chain_id=w.chain.chain_id, competitions=w.cm.address_bytes)
        got = self._expect(error, args, lambda: w.cm.post_score(w.stranger, receipt, signature))
        if error is not None:
            return
        assert model is not None
        (event,) = w.cm.contract.events.ScorePosted().process_receipt(got.receipt, errors=DISCARD)
        assert (event["args"]["index"], event["args"]["split"], event["args"]["score"]) == (index, 1, score)
        model.submissions[index].public = score
        model.public_best = score
        model.best_history.append(score)
        model.next_public += 1

    @rule(
        c=st.integers(0, 6),
        i=st.integers(0, 6),
        kind=st.sampled_from(["ok"] * 6 + ["stale", "not_evaluator"]),
        score=st.sampled_from([100_000, 500_000, 500_000, 900_000, 0]),
    )
    def score_private(self, c: int, i: int, kind: str, score: int) -> None:
        cid, model = self._competition(c)
        self._clear_of_boundaries()
        if model is not None:
            unscored = [j for j, s in enumerate(model.submissions) if s.private is None]
            # mostly a submission still to score; else any, or the next index (unknown)
            i = unscored[i % len(unscored)] if unscored and i < 5 else i % (len(model.submissions) + 1)
        self._score_private(cid, model, i, kind, score)

    def _score_private(self, cid: int, model: CompetitionModel | None, index: int, kind: str, score: int) -> None:
        w = self.w
        now = self._now()
        previous = 7 if kind == "stale" else 0
        receipt = self._receipt(model, cid, index, Split.PRIVATE, score, previous)
        signer = w.key_manager if kind == "not_evaluator" else w.evaluator
        error: str | None = None
        args: tuple[Any, ...] = ()
        if kind == "not_evaluator":
            error, args = "CompetitionMarketUnknownEvaluator", (w.key_manager.address,)
        elif model is None:
            error, args = "CompetitionMarketUnknownCompetition", (cid,)
        elif model.status is not CompetitionStatus.OPEN:
            error, args = "CompetitionMarketInvalidStatus", (cid, model.status)
        elif index >= len(model.submissions):
            error, args = "CompetitionMarketUnknownSubmission", (cid, index)
        elif model.submissions[index].private is not None:
            error, args = "CompetitionMarketAlreadyScored", (cid, index, int(Split.PRIVATE))
        elif now < model.terms.closes_at:
            error, args = "CompetitionMarketPrivateScoringNotStarted", (cid, model.terms.closes_at, now - 1)
        elif previous != 0:
            error, args = "CompetitionMarketStalePreviousBest", (cid, previous, 0)
        signature = sign(signer, receipt, chain_id=w.chain.chain_id, competitions=w.cm.address_bytes)
        self._expect(error, args, lambda: w.cm.post_score(w.operator, receipt, signature))
        if error is None:
            assert model is not None
            model.submissions[index].private = score

    @rule(c=st.integers(0, 6), who=st.sampled_from(["organizer"] * 3 + ["stranger", "participant"]))
    def close(self, c: int, who: str) -> None:
        w = self.w
        cid, model = self._competition(c)
        now = self._clear_of_boundaries()
        sender = {"organizer": model.organizer if model else w.organizer, "stranger": w.stranger, "participant": w.alice}[who]
        error: str | None = None
        args: tuple[Any, ...] = ()
        if model is None:
            error, args = "CompetitionMarketUnknownCompetition", (cid,)
        elif model.status is not CompetitionStatus.OPEN:
            error, args = "CompetitionMarketInvalidStatus", (cid, model.status)
        elif now < model.terms.closes_at:
            error, args = "CompetitionMarketSubmissionsStillOpen", (cid, model.terms.closes_at)
        elif now < model.terms.open_to_all_at:
            scored = sum(1 for s in model.submissions if s.private is not None)
            if sender is not model.organizer:
                error, args = "CompetitionMarketNotOrganizer", (cid, sender.address, model.terms.open_to_all_at)
            elif scored < len(model.submissions):
                error, args = "CompetitionMarketScoringIncomplete", (cid, scored, len(model.submissions))
        got = self._expect(error, args, lambda: w.cm.close(sender, cid))
        if error is not None:
            return
        assert model is not None
        winner = model.predicted_winner()
        recipient = model.organizer if winner is None else model.submissions[winner].participant
        (event,) = w.cm.contract.events.CompetitionClosed().process_receipt(got.receipt, errors=DISCARD)
        expected_winner = "0x" + "00" * 20 if winner is None else recipient.address
        assert dict(event["args"]) == {
            "competitionId": cid, "winnerIndex": NO_LEADER if winner is None else winner, "winner": expected_winner,
            "prize": model.terms.prize,
        }  # fmt: skip
        model.status, model.winner = CompetitionStatus.CLOSED, winner
        self.credits[recipient.address] += model.terms.prize

    _PROGRESS = {
        "c": st.integers(0, 5),
        "p": st.integers(0, 2),
        "gains": st.lists(st.integers(0, 30_000), min_size=1, max_size=4),
        "score": st.sampled_from([400_000, 500_000]),  # few values: ties are frequent
    }

    @rule(**_PROGRESS)
    def progress(self, c: int, p: int, gains: list[int], score: int) -> None:
        """The next steps of a competition's life (fresh entries, the next public scores, the
        end of the window, private scores, the organizer's close, purchases, the winner's
        withdrawal), so that lives get completed between the other rules' detours."""
        for n, gain in enumerate(gains):
            self._progress(c, (p + n) % 3, gain, score)

    @rule(**_PROGRESS)
    def progress_more(self, c: int, p: int, gains: list[int], score: int) -> None:
        """:meth:`progress` again (rules are drawn uniformly; lives need many steps)."""
        self.progress(c, p, gains, score)

    def _progress(self, c: int, p: int, gain: int, score: int) -> None:
        cid, model = self._competition(c)
        if model is None:
            return
        now = self._now()
        terms = model.terms
        if model.status is CompetitionStatus.OPEN:
            room = any(model.made_by(x) < terms.submission_cap for x in self.participants)
            unscored = [j for j, s in enumerate(model.submissions) if s.private is None]
            if now < terms.opens_at:
                self.w.chain.advance_time(terms.opens_at + 1 - now)
            elif now + 5 < terms.closes_at and room and gain % 3:
                self.submit_fresh(c, p, 0 if p == 2 else UNIT)
            elif model.next_public < len(model.submissions):
                self.score_public(c, "keep_best" if gain < 5000 else "next", gain)
            elif now <= terms.closes_at:
                self.w.chain.advance_time(terms.closes_at + 1 - now)
            elif unscored:
                self._clear_of_boundaries()
                self._score_private(cid, model, unscored[gain % len(unscored)], "ok", score)
            else:
                self.close(c, "organizer")
        elif gain % 3 and any(s.ask for s in model.submissions) and terms.purchase_policy is not PurchasePolicy.NONE:
            buyer = self.buyers.index(model.organizer) if terms.purchase_policy is PurchasePolicy.ORGANIZER else p + gain % 2
            self.buy(c, gain % 5, buyer, "ok")
        elif any(self.credits.values()):
            self.withdraw(0)

    @rule(seconds=st.sampled_from([1, 30, 150, 300, 900, 1500, 3000]))
    def travel(self, seconds: int) -> None:
        self.w.chain.advance_time(seconds)

    @rule(c=st.integers(0, 5), to=st.sampled_from(["closes_at", "open_to_all_at"]), offset=st.sampled_from([-3, -1, 1, 2, 30]))
    def travel_near(self, c: int, to: str, offset: int) -> None:
        """Travel to just before or after a competition's window end or scoring period end."""
        _cid, model = self._competition(c)
        if model is None:
            return
        target = getattr(model.terms, to) + offset
        if target > self._now():
            self.w.chain.advance_time(target - self._now())

    @rule(
        c=st.integers(0, 6),
        i=st.integers(0, 6),
        b=st.integers(0, 3),
        kind=st.sampled_from(["ok"] * 5 + ["zero_key", "wrong_payment"]),
    )
    def buy(self, c: int, i: int, b: int, kind: str) -> None:
        w, buyer = self.w, self.buyers[b]
        cid, model = self._competition(c)
        self._clear_of_boundaries()
        if model is not None:
            priced = [j for j, s in enumerate(model.submissions) if s.ask]
            # mostly a submission for sale; else any, or the next index (unknown)
            i = priced[i % len(priced)] if priced and i < 5 else i % (len(model.submissions) + 1)
        sub = model.submissions[i] if model is not None and i < len(model.submissions) else None
        price = sub.ask if sub else 0
        key = bytes(32) if kind == "zero_key" else BUYER_KEY
        value = price + 1 if kind == "wrong_payment" else price
        error: str | None = None
        args: tuple[Any, ...] = ()
        if model is None:
            error, args = "CompetitionMarketUnknownCompetition", (cid,)
        elif model.status is not CompetitionStatus.CLOSED:
            error, args = "CompetitionMarketInvalidStatus", (cid, model.status)
        elif model.terms.purchase_policy is PurchasePolicy.NONE:
            error, args = "CompetitionMarketNotForSale", (cid, i)
        elif model.terms.purchase_policy is PurchasePolicy.ORGANIZER and buyer is not model.organizer:
            error, args = "CompetitionMarketBuyerNotAllowed", (cid, buyer.address)
        elif sub is None:
            error, args = "CompetitionMarketUnknownSubmission", (cid, i)
        elif sub.ask == 0:
            error, args = "CompetitionMarketNotForSale", (cid, i)
        elif kind == "zero_key":
            error, args = "CompetitionMarketInvalidBuyerKey", (key,)
        elif buyer.address in sub.buyers:
            error, args = "CompetitionMarketAlreadyBought", (cid, i, buyer.address)
        elif kind == "wrong_payment":
            error, args = "PullPaymentsIncorrectPayment", (value, price)
        fn = w.cm.contract.functions.buy(cid, i, key)
        self._expect(error, args, lambda: w.chain.transact(buyer, fn, value=value))
        if error is None:
            assert sub is not None
            sub.buyers.add(buyer.address)
            self.credits[sub.participant.address] += price
            assert w.cm.purchase_key(cid, i, buyer.address) == BUYER_KEY

    @rule(a=st.integers(0, 7))
    def withdraw(self, a: int) -> None:
        paid = [x for x in self.accounts if self.credits[x.address]]
        account = paid[a % len(paid)] if paid and a < 4 else self.accounts[a % len(self.accounts)]
        pending = self.credits[account.address]
        self._clear_of_boundaries()
        error = "PullPaymentsNothingToWithdraw" if pending == 0 else None
        got = self._expect(error, (account.address,), lambda: self.w.cm.withdraw(account))
        if got is not None:
            assert got[0] == pending
            self.credits[account.address] = 0

    # ----------------------------------------------------------------- invariants

    @invariant()
    def value_is_conserved(self) -> None:
        if not hasattr(self, "w"):
            return
        w = self.w
        for address, expected in self.credits.items():
            assert w.cm.credits(address) == expected
        open_prizes = self.base_prize + sum(m.terms.prize for m in self.competitions if m.status is CompetitionStatus.OPEN)
        assert w.chain.balance(w.cm.address) == open_prizes + sum(self.credits.values())

    @invariant()
    def the_chain_matches_the_model(self) -> None:
        if not hasattr(self, "w"):
            return
        w = self.w
        assert w.cm.competition_count() == self.base_id + len(self.competitions)
        for m in self.competitions:
            record = w.cm.competition(m.competition_id)
            scored = [s for s in m.submissions if s.private is not None]
            leader = m.predicted_winner()
            assert (record.status, record.terms, record.submission_count, record.next_public, record.public_best) == (
                m.status, m.terms, len(m.submissions), m.next_public, m.public_best,
            )  # fmt: skip
            assert (record.private_scored, record.leader) == (len(scored), leader)
            # the leaderboard's best only moves in the metric's better direction
            steps = list(zip(m.best_history, m.best_history[1:], strict=False))
            assert all((b >= a) if m.higher_is_better else (b <= a) for a, b in steps), m.best_history
            for index, s in enumerate(m.submissions):
                got = w.cm.submission(m.competition_id, index)
                assert (got.participant, got.content_hash, got.ask_price) == (s.participant.address, s.content, s.ask)
                assert (got.public_scored, got.private_scored) == (s.public is not None, s.private is not None)
                assert (got.public_score, got.private_score) == (s.public or 0, s.private or 0)

    @invariant()
    def scores_and_prizes_in_the_logs(self) -> None:
        if not hasattr(self, "w"):
            return
        w = self.w
        latest = int(w.chain.w3.eth.block_number)
        if latest > self.logged_to:
            self.logged += w.cm.changes(self.logged_to + 1, latest)
            self.logged_to = latest
        changes = self.logged
        posted = Counter((e.competition_id, e.index, e.split) for e in changes if isinstance(e, ScorePosted))
        assert all(n == 1 for n in posted.values()), posted  # at most one public and one private per submission
        closes = {e.competition_id: e for e in changes if isinstance(e, CompetitionClosed)}
        for m in self.competitions:
            if m.status is CompetitionStatus.OPEN:
                assert m.competition_id not in closes
                continue
            event = closes[m.competition_id]
            winner = None if m.winner is None else m.submissions[m.winner].participant.address
            assert (event.winner_index, event.winner, event.prize) == (m.winner, winner, m.terms.prize)


def test_competition_state_machine(sdk_chain: Chain) -> None:
    _STATE["chain"] = sdk_chain
    run_state_machine_as_test(
        CompetitionMachine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
