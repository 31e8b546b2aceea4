"""Competitions in the chain index (issue 16): the competition market's events folded into tables,
and the gateway's competition list and leaderboard served from them.

One private embedded chain plays three competitions through the SDK and a real evaluator enclave:
A (accuracy) with three submissions scored on both splits, closed by its organizer and a model
bought from it; B (accuracy) with no submission, closed by a stranger once the scoring period is
over (the prize goes back); C (log-loss, lower is better) still open with one public score. The
index built while the chain moves (two-block ranges, polled after every step) must equal the
contract views (``competitionOf``, ``submissionOf``) and the logs (``ScorePosted``, ``ModelBought``),
a replay must change nothing, a rebuild in one go must be row for row the same, and
``GET /api/competitions[/{id}]`` must answer what the routes answered when they read the contract.
The first tests fold hand-written logs (no chain): ties, lower-is-better metrics and the logs the
fold refuses.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any, Literal

import pytest
from eth_account.signers.local import LocalAccount
from sqlalchemy import Integer, select, update

from enclave_worker.trusted.evaluation import ARCHITECTURES
from enclave_worker.trusted.models import ModelSpec
from marketplace import chain as chain_mod
from marketplace.competing import BlobCompetitionStore, Rules, buy_model, open_competition, submit_model
from marketplace.competitions import (
    COMPETITION_EVENTS,
    NO_SCORE_LOWER_IS_BETTER,
    SCORE_SCALE,
    CompetitionMarketClient,
    CompetitionRecord,
    CompetitionStatus,
    Metric,
    ModelBought,
    PurchasePolicy,
    ScorePosted,
    Split,
    SubmissionRecord,
)
from oracle import fold
from oracle.fold import DecodedLog, InconsistentLogs, StateKeys, replay, touched
from oracle.index_db import (
    BOOKKEEPING_TABLES,
    Base,
    ChainEvent,
    Competition,
    CompetitionPurchase,
    CompetitionScore,
    CompetitionSubmission,
    Cursor,
    IndexDatabase,
    MarketTotals,
    Payment,
)
from oracle.indexer import Indexer, IndexerChainMismatch
from sterling.gateway.feed import event_of
from sterling.localnet import LocalCompetitions, LocalNet, bring_up, start_competitions
from tests.e2e.test_competition import TEST, _terms, _weights
from tests.gateway.conftest import make_gateway
from tests.postgres import index_url

ETHER = 10**18
LOGREG = ModelSpec(architecture="logistic_regression", epochs=1, batch_size=32, learning_rate=0.1, max_grad_norm=1.0)

# --------------------------------------------------------------------------- the fold alone

ORGANIZER = "0x" + "11" * 20
ALICE = "0x" + "22" * 20
BOB = "0x" + "33" * 20
EVALUATOR = "0x" + "44" * 20
_log_index = count()


def log(name: str, tx: str, *, block: int = 1, **args: Any) -> DecodedLog:
    return DecodedLog(
        name=name, args=args, contract="0xcompetitions", block=block, timestamp=1000 + block, tx_hash=tx, log_index=next(_log_index)
    )


def created(competition_id: int = 1, *, metric: Metric = Metric.ACCURACY, prize: int = 100) -> DecodedLog:
    terms = {
        "testSetHash": b"\x01" * 32, "schemaHash": b"\x02" * 32, "rulesHash": b"\x03" * 32, "prize": prize, "metric": int(metric),
        "publicSplitBps": 3000, "ladderStep": 10_000, "opensAt": 1000, "closesAt": 2000, "scoringPeriod": 500, "submissionCap": 2,
        "maxParameters": 0, "architectures": 3, "purchasePolicy": int(PurchasePolicy.ANYONE),
    }  # fmt: skip
    return log("CompetitionCreated", f"0xcreate{competition_id}", competitionId=competition_id, organizer=ORGANIZER, terms=terms)


def submitted(index: int, participant: str, *, competition_id: int = 1, ask: int = 7) -> DecodedLog:
    return log(
        "Submitted", f"0xsubmit{competition_id}-{index}", block=2, competitionId=competition_id, index=index, participant=participant,
        contentHash=bytes([index + 10]) * 32, weightsHash=bytes([index + 20]) * 32, askPrice=ask,
    )  # fmt: skip


def scored(index: int, split: Split, score: int, *, competition_id: int = 1, block: int = 3) -> DecodedLog:
    return log(
        "ScorePosted", f"0xscore{competition_id}-{index}-{int(split)}", block=block, competitionId=competition_id, index=index,
        split=int(split), score=score, evaluator=EVALUATOR,
    )  # fmt: skip


def closed(winner_index: int, winner: str, *, competition_id: int = 1, prize: int = 100) -> DecodedLog:
    return log(
        "CompetitionClosed", f"0xclose{competition_id}", block=5, competitionId=competition_id, winnerIndex=winner_index, winner=winner,
        prize=prize,
    )  # fmt: skip


def test_a_tie_goes_to_the_earlier_submission_and_the_close_pays_the_leader() -> None:
    state = replay(
        [
            created(), submitted(0, ALICE), submitted(1, BOB),
            scored(0, Split.PUBLIC, 800_000), scored(1, Split.PUBLIC, 800_000),  # the Ladder kept the best
            scored(1, Split.PRIVATE, 900_000, block=4), scored(0, Split.PRIVATE, 900_000, block=4),  # equal: submission 0 leads
            closed(0, ALICE),
            log("ModelBought", "0xbuy", block=6, competitionId=1, index=1, buyer=ORGANIZER, price=7, buyerKey=b"\x05" * 32),
        ]
    )  # fmt: skip
    competition = state.competitions[1]
    assert (competition.status, competition.submission_count, competition.next_public, competition.private_scored) == (
        CompetitionStatus.CLOSED, 2, 2, 2,
    )  # fmt: skip
    assert (competition.public_best, competition.leader, competition.leader_score) == (800_000, 0, 900_000)
    assert (competition.winner_index, competition.winner, competition.closed_block, competition.closed_at) == (0, ALICE, 5, 1005)
    assert [(s.index, s.public_score, s.private_score, s.submitted_at) for s in state.submissions.values()] == [
        (0, 800_000, 900_000, 1002), (1, 800_000, 900_000, 1002),
    ]  # fmt: skip
    assert [(r.index, r.split, r.score, r.timestamp) for r in state.scores] == [
        (0, Split.PUBLIC, 800_000, 1003), (1, Split.PUBLIC, 800_000, 1003),
        (1, Split.PRIVATE, 900_000, 1004), (0, Split.PRIVATE, 900_000, 1004),
    ]  # fmt: skip
    assert [(p.competition_id, p.index, p.buyer, p.price_wei) for p in state.purchases] == [(1, 1, ORGANIZER, 7)]


def test_a_lower_is_better_metric_starts_from_the_worst_score_and_a_close_without_scores_pays_back() -> None:
    state = replay([created(metric=Metric.LOG_LOSS), submitted(0, ALICE), submitted(1, BOB), scored(1, Split.PRIVATE, 300_000, block=4)])
    competition = state.competitions[1]
    assert (competition.public_best, competition.next_public, competition.leader) == (NO_SCORE_LOWER_IS_BETTER, 0, 1)
    replay([scored(0, Split.PRIVATE, 200_000, block=4)], state)  # lower is better: submission 0 takes the lead
    assert (competition.leader, competition.leader_score) == (0, 200_000)
    nobody = replay([created(2), closed(fold.NO_LEADER, "0x" + "00" * 20, competition_id=2)])
    assert (nobody.competitions[2].status, nobody.competitions[2].winner_index, nobody.competitions[2].winner) == (
        CompetitionStatus.CLOSED, None, None,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("logs", "message"),
    [
        ([submitted(0, ALICE)], "competition 1, which was never created"),
        ([created(), submitted(1, ALICE)], "submission 1 after 0 submissions"),
        ([created(), scored(0, Split.PUBLIC, 1)], "submission 0 of competition 1, which was never made"),
        ([created(), submitted(0, ALICE), submitted(1, BOB), scored(1, Split.PUBLIC, 1)], "public score of submission 1, next is 0"),
        ([created(), submitted(0, ALICE), scored(0, Split.PRIVATE, 1), scored(0, Split.PRIVATE, 2)], "scored twice"),
        ([created(), submitted(0, ALICE), scored(0, Split.PRIVATE, 1), closed(fold.NO_LEADER, ALICE)], "leave submission 0 leading"),
        ([created(), submitted(0, ALICE), scored(0, Split.PRIVATE, 1), closed(0, BOB)], "not submission 0's participant"),
        ([created(), closed(fold.NO_LEADER, ALICE, prize=99)], "leave no submission leading for 100"),
        ([created(), closed(fold.NO_LEADER, ALICE), submitted(0, ALICE)], "which is CLOSED"),
        ([created(), submitted(0, ALICE), log("ModelBought", "0xb", competitionId=1, index=0, buyer=BOB, price=7, buyerKey=b"")], "OPEN"),
        ([created(), created()], "created twice"),
    ],
)
def test_competition_logs_that_contradict_the_state_are_refused(logs: list[DecodedLog], message: str) -> None:
    with pytest.raises(InconsistentLogs, match=message):
        replay(logs)


def test_touched_names_the_competitions_and_submissions_a_batch_reads() -> None:
    logs = [submitted(3, ALICE, competition_id=2), scored(1, Split.PRIVATE, 5, competition_id=4), closed(6, BOB, competition_id=5)]
    assert touched(logs) == StateKeys(
        datasets=frozenset(), jobs=frozenset(), enclaves=frozenset(), measurements=frozenset(), market=False,
        competitions=frozenset({2, 4, 5}), submissions=frozenset({(2, 3), (4, 1), (5, 6)}),  # the close reads its winner
    )  # fmt: skip
    assert fold.COMPETITION_EVENTS == COMPETITION_EVENTS and fold.COMPETITION_EVENTS <= fold.EVENTS


# --------------------------------------------------------------------------- a real chain


@dataclass
class Scenario:
    net: LocalNet
    contest: LocalCompetitions
    market: CompetitionMarketClient
    live: IndexDatabase
    indexer: Indexer
    tmp: Path
    ids: dict[str, int] = field(default_factory=dict)
    accounts: dict[str, LocalAccount] = field(default_factory=dict)


def _indexer(net: LocalNet, db: IndexDatabase, *, batch_blocks: int, competitions: CompetitionMarketClient | None) -> Indexer:
    return Indexer(
        db, market=net.market, registry=net.registry, start_block=net.deployment.block, batch_blocks=batch_blocks, competitions=competitions
    )


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    tmp = tmp_path_factory.mktemp("competition-index")
    net = bring_up(chain_mod.embedded(), tmp / "net")
    contest = start_competitions(net)
    live = IndexDatabase(index_url(tmp / "live"))
    live.create_schema()
    market = contest.competitions
    s = Scenario(net, contest, market, live, _indexer(net, live, batch_blocks=2, competitions=market), tmp)
    try:
        _play(s)
        yield s
    finally:
        live.close()
        contest.close()
        net.close()


def _play(s: Scenario) -> None:
    chain, market, keys = s.net.chain, s.market, s.contest.keys
    store = BlobCompetitionStore(s.net.blobs)
    s.accounts = {name: chain.new_account() for name in ("organizer", "alice", "bob", "carol", "stranger")}
    a = s.accounts
    sdk: dict[str, Any] = {"competitions": market, "registry": s.net.registry, "key_manager": keys, "blobs": store}

    def step() -> None:
        s.indexer.poll_once()

    def open_(name: str, **terms: Any) -> None:
        opened = open_competition(a["organizer"], TEST, terms=_terms(chain.now(), **terms), rules=Rules(title=f"Competition {name}"), **sdk)
        s.ids[name] = opened.competition_id

    open_("A", purchase_policy=PurchasePolicy.ORGANIZER)
    open_("B")
    step()
    for who, steps, seed, ask in (("alice", 40, 3, ETHER // 2), ("bob", 15, 2, ETHER // 4), ("alice", 25, 4, ETHER // 8)):
        _, weights = _weights(LOGREG, steps, seed)
        submit_model(a[who], weights, competition_id=s.ids["A"], ask_price=ask, **sdk)
        step()
    assert [(p.index, p.split) for p in s.contest.evaluator.run_once()] == [(0, Split.PUBLIC), (1, Split.PUBLIC), (2, Split.PUBLIC)]
    step()
    chain.advance_time(3601)
    assert len(s.contest.evaluator.run_once()) == 3  # the private scores
    step()
    market.close(a["organizer"], s.ids["A"])
    step()
    winner = market.competition(s.ids["A"]).leader
    assert winner is not None
    buy_model(a["organizer"], s.ids["A"], winner, **{k: sdk[k] for k in ("competitions", "key_manager", "blobs")})
    paid = next(account for account in (a["alice"], a["bob"]) if account.address == market.submission(s.ids["A"], winner).participant)
    market.withdraw(paid)  # the competition market's Withdrawn: not the job market's
    step()
    chain.advance_time(3600)
    market.close(a["stranger"], s.ids["B"])  # nothing scored, the scoring period over: anyone closes, the prize goes back
    step()
    open_("C", metric=Metric.LOG_LOSS)
    _, weights = _weights(LOGREG, 30, 5)
    submit_model(a["carol"], weights, competition_id=s.ids["C"], ask_price=0, **sdk)
    assert [(p.competition_id, p.split) for p in s.contest.evaluator.run_once()] == [(s.ids["C"], Split.PUBLIC)]
    step()


def _rows(db: IndexDatabase) -> dict[str, list[dict[str, Any]]]:
    """Every table's rows (without surrogate ids and the cursor), in a stable order."""
    tables: dict[str, list[dict[str, Any]]] = {}
    with db.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            if table.name in BOOKKEEPING_TABLES:  # where each poll stopped, not what the chain says
                continue
            skip = {c.name for c in table.columns if c.name == "id" and isinstance(c.type, Integer) and c.autoincrement is True}
            rows = [{k: v for k, v in row._mapping.items() if k not in skip} for row in connection.execute(table.select())]
            tables[table.name] = sorted(rows, key=repr)
    return tables


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


def test_the_indexed_competitions_equal_the_contract_views(scenario: Scenario) -> None:
    s, market = scenario, scenario.market
    assert s.indexer.last_block() == s.net.chain.w3.eth.block_number
    with s.live.session() as session:
        rows = {row.id: row for row in session.scalars(select(Competition))}
        assert sorted(rows) == list(range(1, market.competition_count() + 1)) == sorted(s.ids.values())
        for competition_id, row in rows.items():
            view = market.competition(competition_id)
            t = view.terms
            assert (row.organizer, CompetitionStatus(row.status), row.submission_count, row.next_public, row.private_scored) == (
                view.organizer, view.status, view.submission_count, view.next_public, view.private_scored,
            )  # fmt: skip
            assert (row.public_best, row.leader, row.leader_score) == (view.public_best, view.leader, view.leader_score)
            assert (row.test_set_hash, row.schema_hash, row.rules_hash) == (_hex(t.test_set_hash), _hex(t.schema_hash), _hex(t.rules_hash))
            terms = (row.prize_wei, row.metric, row.public_split_bps, row.ladder_step, row.opens_at, row.closes_at, row.scoring_period)
            assert terms == (t.prize, t.metric, t.public_split_bps, t.ladder_step, t.opens_at, t.closes_at, t.scoring_period)
            assert (row.submission_cap, row.max_parameters, row.architectures, row.purchase_policy) == (
                t.submission_cap, t.max_parameters, t.architectures, t.purchase_policy,
            )  # fmt: skip
            submissions = session.scalars(
                select(CompetitionSubmission)
                .where(CompetitionSubmission.competition_id == competition_id)
                .order_by(CompetitionSubmission.index)
            ).all()
            assert [sub.index for sub in submissions] == list(range(view.submission_count))
            for sub in submissions:
                on_chain = market.submission(competition_id, sub.index)
                assert (sub.participant, sub.content_hash, sub.ask_price_wei, sub.submitted_at) == (
                    on_chain.participant, _hex(on_chain.content_hash), on_chain.ask_price, on_chain.submitted_at,
                )  # fmt: skip
                assert (sub.public_score, sub.private_score) == (
                    on_chain.public_score if on_chain.public_scored else None, on_chain.private_score if on_chain.private_scored else None,
                )  # fmt: skip
                assert sub.weights_hash == _hex(market.weights_hash(competition_id, sub.index, from_block=s.net.deployment.block))
        a, b, c = (rows[s.ids[name]] for name in "ABC")
        assert (a.status, a.private_scored, a.winner_index, a.winner) == (CompetitionStatus.CLOSED, 3, a.leader, _participant(market, a))
        assert (b.status, b.submission_count, b.leader, b.winner_index, b.winner) == (CompetitionStatus.CLOSED, 0, None, None, None)
        assert (c.status, c.next_public, c.private_scored, c.metric) == (CompetitionStatus.OPEN, 1, 0, Metric.LOG_LOSS)
        assert c.public_best != NO_SCORE_LOWER_IS_BETTER


def _participant(market: CompetitionMarketClient, row: Competition) -> str:
    assert row.leader is not None
    return market.submission(row.id, row.leader).participant


def test_the_history_and_the_purchases_equal_the_logs(scenario: Scenario) -> None:
    s = scenario
    events = s.market.changes(s.net.deployment.block, s.indexer.last_block())
    w3 = s.net.chain.w3
    posted = [
        (
            e.competition_id,
            e.index,
            int(e.split),
            e.score,
            e.evaluator,
            e.block_number,
            int(w3.eth.get_block(e.block_number)["timestamp"]),
            e.tx_hash,
        )
        for e in events
        if isinstance(e, ScorePosted)
    ]
    bought = [(e.competition_id, e.index, e.buyer, e.price, e.block_number, e.tx_hash) for e in events if isinstance(e, ModelBought)]
    assert len(posted) == 7 and len(bought) == 1
    with s.live.session() as session:
        history = session.scalars(select(CompetitionScore).order_by(CompetitionScore.block, CompetitionScore.log_index)).all()
        assert [(r.competition_id, r.index, r.split, r.score, r.evaluator, r.block, r.timestamp, r.tx_hash) for r in history] == posted
        purchases = session.scalars(select(CompetitionPurchase)).all()
        assert [(p.competition_id, p.index, p.buyer, p.price_wei, p.block, p.tx_hash) for p in purchases] == bought
        # Every competition event once in chain_events; the competition market's payments are not the job market's.
        contract = s.market.contract.address
        names = session.scalars(select(ChainEvent.name).where(ChainEvent.contract == contract)).all()
        expected = {name: len(s.market.contract.events[name]().get_logs(from_block=s.net.deployment.block)) for name in COMPETITION_EVENTS}
        assert {name: names.count(name) for name in COMPETITION_EVENTS} == expected and len(names) == sum(expected.values())
        assert all(row.competition_id is not None for row in session.scalars(select(ChainEvent).where(ChainEvent.contract == contract)))
        competition_txs = {e.tx_hash for e in events}
        assert not session.scalars(select(Payment).where(Payment.tx_hash.in_(competition_txs))).all()
        totals = session.get(MarketTotals, s.indexer.key)
        assert totals is not None and totals.received_wei - totals.paid_out_wei == s.net.market.payment_balance(s.net.market.address)
        first_score = session.scalars(select(ChainEvent).where(ChainEvent.name == "ScorePosted").order_by(ChainEvent.id)).first()
        assert first_score is not None
        pushed = event_of(first_score)
        assert (pushed.event, pushed.data["competition_id"], pushed.data["change"], pushed.data["index"]) == (
            "competition",
            s.ids["A"],
            "scored",
            0,
        )


def test_a_replay_changes_nothing_and_a_rebuild_is_the_same_index(scenario: Scenario) -> None:
    s = scenario
    before = _rows(s.live)
    assert before["competitions"] and before["competition_scores"]
    with s.live.transaction() as session:
        session.execute(update(Cursor).values(last_block=s.net.deployment.block - 1))
    replayed = _indexer(s.net, s.live, batch_blocks=3, competitions=s.market)
    assert sum(r.events for r in replayed.poll_once()) == 0  # every log was applied before: none again
    assert _rows(s.live) == before
    rebuilt = IndexDatabase(index_url(s.tmp / "rebuilt"))
    rebuilt.create_schema()
    _indexer(s.net, rebuilt, batch_blocks=10_000, competitions=s.market).poll_once()
    assert _rows(rebuilt) == before
    rebuilt.close()


def test_an_index_keeps_the_competition_market_it_began_with(scenario: Scenario) -> None:
    s = scenario
    with pytest.raises(IndexerChainMismatch, match="competition market"):
        _indexer(s.net, s.live, batch_blocks=10, competitions=None).poll_once()
    without = IndexDatabase(index_url(s.tmp / "without"))
    without.create_schema()
    _indexer(s.net, without, batch_blocks=10_000, competitions=None).poll_once()  # as before competitions: nothing of theirs
    rows = _rows(without)
    assert not rows["competitions"] and not rows["competition_scores"] and not rows["competition_purchases"]
    with pytest.raises(IndexerChainMismatch, match="competition market"):
        _indexer(s.net, without, batch_blocks=10, competitions=s.market).poll_once()
    without.close()


# --------------------------------------------------------------------------- the gateway


_POLICY = {PurchasePolicy.NONE: "none", PurchasePolicy.ORGANIZER: "organizer", PurchasePolicy.ANYONE: "anyone"}


def _phase(record: CompetitionRecord, now: int) -> str:
    if record.status is CompetitionStatus.CLOSED:
        return "closed"
    if now < record.terms.opens_at:
        return "upcoming"
    if now < record.terms.closes_at:
        return "submissions"
    return "scoring" if now < record.terms.open_to_all_at else "closable"


def _public_from_contract(record: CompetitionRecord, now: int) -> dict[str, Any]:
    """``CompetitionPublic`` as the routes built it from ``competitionOf`` before the index served them."""
    t = record.terms
    metric = Metric(t.metric)
    has_best = record.next_public > 0 and record.public_best != NO_SCORE_LOWER_IS_BETTER
    status: Literal["open", "closed"] = "closed" if record.status is CompetitionStatus.CLOSED else "open"
    return {
        "competition_id": record.competition_id, "organizer": record.organizer, "status": status, "phase": _phase(record, now),
        "test_set_hash": _hex(t.test_set_hash), "schema_hash": _hex(t.schema_hash), "rules_hash": _hex(t.rules_hash),
        "prize_wei": str(int(t.prize)), "metric": metric.name.lower(), "higher_is_better": metric.higher_is_better,
        "public_split_bps": t.public_split_bps, "ladder_step": t.ladder_step / SCORE_SCALE, "opens_at": t.opens_at,
        "closes_at": t.closes_at, "open_to_all_at": t.open_to_all_at, "submission_cap": t.submission_cap,
        "max_parameters": t.max_parameters, "architectures": [name for name, bit in ARCHITECTURES.items() if bit & t.architectures],
        "purchase_policy": _POLICY[PurchasePolicy(t.purchase_policy)], "submission_count": record.submission_count,
        "next_public": record.next_public, "private_scored": record.private_scored,
        "public_best": record.public_best / SCORE_SCALE if has_best else None, "leader": record.leader,
    }  # fmt: skip


def _submission_from_contract(market: CompetitionMarketClient, competition_id: int, sub: SubmissionRecord) -> dict[str, Any]:
    return {
        "index": sub.index, "participant": sub.participant, "content_hash": _hex(sub.content_hash),
        "weights_hash": _hex(market.weights_hash(competition_id, sub.index)), "ask_price_wei": str(int(sub.ask_price)),
        "submitted_at": sub.submitted_at, "public_score": sub.public_score / SCORE_SCALE if sub.public_scored else None,
        "private_score": sub.private_score / SCORE_SCALE if sub.private_scored else None,
    }  # fmt: skip


def _detail_from_contract(s: Scenario, competition_id: int, now: int) -> dict[str, Any]:
    """``GET /api/competitions/{id}`` as the route answered it from the contract and a scan of every log."""
    market, w3 = s.market, s.net.chain.w3
    record = market.competition(competition_id)
    history = [
        {
            "index": e.index, "split": "public" if e.split is Split.PUBLIC else "private", "score": e.score / SCORE_SCALE,
            "block": e.block_number, "time": int(w3.eth.get_block(e.block_number)["timestamp"]),
        }
        for e in market.changes(s.net.deployment.block, w3.eth.block_number)
        if isinstance(e, ScorePosted) and e.competition_id == competition_id
    ]  # fmt: skip
    return {
        **_public_from_contract(record, now),
        "rules": json.loads(s.net.blobs.get(record.terms.rules_hash.hex())),
        "submissions": [_submission_from_contract(market, competition_id, sub) for sub in market.submissions(competition_id)],
        "history": history,
    }


def test_the_gateway_answers_what_it_answered_from_the_contract(scenario: Scenario, tmp_path: Path) -> None:
    s = scenario
    gateway = make_gateway(s.net, tmp_path)
    try:
        assert gateway.services.competitions is not None and gateway.services.competitions.address == s.market.address
        gateway.sync()
        now = s.net.chain.now()
        listed = gateway.client.get("/api/competitions")
        assert listed.status_code == 200
        expected = [_public_from_contract(s.market.competition(i), now) for i in range(s.market.competition_count(), 0, -1)]
        assert listed.json() == expected
        assert [c["phase"] for c in listed.json()] == ["submissions", "closed", "closed"]
        for competition_id in s.ids.values():
            detail = gateway.client.get(f"/api/competitions/{competition_id}")
            assert detail.status_code == 200
            assert detail.json() == _detail_from_contract(s, competition_id, now), competition_id
            assert list(detail.json()) == [*expected[0], "rules", "submissions", "history"]  # the same keys, in the same order
        a = gateway.client.get(f"/api/competitions/{s.ids['A']}").json()
        assert (a["rules"]["title"], len(a["submissions"]), [p["split"] for p in a["history"]]) == (
            "Competition A",
            3,
            ["public"] * 3 + ["private"] * 3,
        )
        for missing_id in (s.market.competition_count() + 1, 0, -1, 2**63, 2**256):  # as when the route asked the contract: 404
            missing = gateway.client.get(f"/api/competitions/{missing_id}")
            assert missing.status_code == 404 and "does not exist" in missing.json()["detail"], missing_id
    finally:
        gateway.client.close()
        gateway.index.close()
