"""The competition scenario, end to end, on a real chain (``sterling demo --scenario competition``).

Deploy; attest and register a key manager and an evaluator; an organizer seals a private test set
of handwritten digits (scikit-learn's, the rows participants never see), escrows a prize and opens
a competition (accuracy, a 30 % public split through the Ladder); three participants train on the
public training rows and submit sealed models — one of them first tries to enter another's
ciphertext, which the key manager and the chain both refuse; the evaluator enclave scores the public
split in submission order, then, after the window, the private split; the organizer closes, the
winner withdraws the prize, and the organizer buys the winning model, opens it and checks it
against the test set it holds.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from sklearn.datasets import load_digits

from enclave_worker.trusted import inference
from enclave_worker.trusted.competition import sign
from enclave_worker.trusted.dataset import DatasetPackage, Schema
from enclave_worker.trusted.errors import KeyUnwrapFailed
from enclave_worker.trusted.models import ModelSpec, build_model
from enclave_worker.trusted.onchain import SCORE_SCALE, Architecture, Metric, PurchasePolicy, Split
from enclave_worker.trusted.receipt import Deposit
from marketplace.chain import TxResult, open_chain
from marketplace.competing import BlobCompetitionStore, Rules, buy_model, open_competition, seal_submission, submit_model
from marketplace.competitions import CompetitionTerms
from marketplace.config import SterlingSettings
from marketplace.errors import ContractReverted
from marketplace.serving import model_weights
from sterling.demo import demo_network
from sterling.localnet import bring_up, start_competitions

ProgressFn = Callable[[dict[str, Any]], None]

ETHER = 10**18
PRIZE = ETHER
WINDOW_SECONDS = 3600
SCORING_SECONDS = 3600
PUBLIC_SPLIT_BPS = 3000
LADDER_STEP = 10_000  # η = 0.01 accuracy
SCHEMA = Schema(
    task="classification", feature_names=tuple(f"px{i}" for i in range(64)), feature_shape=(64,),
    class_names=tuple(str(d) for d in range(10)),
)  # fmt: skip


@dataclass(frozen=True)
class Entrant:
    name: str
    spec: ModelSpec
    steps: int
    ask: int


ENTRANTS = (
    Entrant(
        "Alice",
        ModelSpec(architecture="mlp", hidden_sizes=(64,), epochs=1, batch_size=32, learning_rate=0.01, max_grad_norm=1.0),
        300,
        ETHER // 2,
    ),
    Entrant(
        "Bob",
        ModelSpec(architecture="mlp", hidden_sizes=(16,), epochs=1, batch_size=32, learning_rate=0.01, max_grad_norm=1.0),
        60,
        ETHER // 4,
    ),
    Entrant("Carol", ModelSpec(architecture="logistic_regression", epochs=1, batch_size=32, learning_rate=0.01, max_grad_norm=1.0), 25, 0),
)


@dataclass(frozen=True)
class CompetitionDemoReport:
    """Everything the scenario measured; ``to_json`` gives the documented ``--json-out`` keys."""

    chain: str
    competition_id: int
    test_rows: int
    public_rows: int
    leaderboard: list[dict[str, Any]]
    public_history: list[int]
    copy_attempt: dict[str, str]
    winner: str
    prize_wei: int
    purchase: dict[str, Any]
    scoring: dict[str, float]
    evaluator_measurement: str
    attestation_format: str
    gas: dict[str, int]
    wall_seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def digits(seed: int) -> tuple[np.ndarray, np.ndarray, DatasetPackage]:
    """scikit-learn's digits: 1,000 public training rows, and the rest as the organizer's private test set."""
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(y))
    x, y = (x[order] / 16.0).astype(np.float32), y[order].astype(np.int64)
    return x[:1000], y[:1000], DatasetPackage(features=x[1000:], labels=y[1000:], schema=SCHEMA)


def train(entrant: Entrant, x: np.ndarray, y: np.ndarray, seed: int) -> bytes:
    """A participant's model, trained in the clear on the public training rows, as safetensors with its spec and schema."""
    torch.manual_seed(seed)
    module = build_model(entrant.spec, SCHEMA)
    optimizer = torch.optim.Adam(module.parameters(), lr=0.02)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(entrant.steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(module(xt), yt).backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    return model_weights(module, entrant.spec, SCHEMA)


def accuracy(weights: bytes, package: DatasetPackage) -> float:
    """The accuracy of safetensors ``weights`` (spec in their metadata) on ``package``."""
    spec = inference.weights_spec(weights)
    module = build_model(spec, SCHEMA)
    module.load_state_dict(load_tensors(weights))
    module.eval()
    with torch.inference_mode():
        predicted = module(torch.from_numpy(package.features)).argmax(dim=1).numpy()
    return float((predicted == package.labels).mean())


def run_competition_demo(settings: SterlingSettings, *, progress: ProgressFn | None = None) -> CompetitionDemoReport:
    """Run the competition scenario on the chain ``settings`` select and return what it measured.

    Raises:
        ConfigError: the selected network is not local.
    """
    network = demo_network(settings)
    seed = settings.demo.seed
    started = time.perf_counter()
    say: ProgressFn = progress or (lambda event: None)
    gas: dict[str, int] = {}

    def record(label: str, tx: TxResult) -> None:
        gas[label] = tx.gas_used

    with ExitStack() as stack:
        state = settings.demo.state_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sterling-competition-")))
        chain = stack.enter_context(open_chain(settings))
        say({"stage": "chain", "detail": f"{network.name} chain id {chain.chain_id}"})
        net = bring_up(chain, state, say=lambda stage, detail: say({"stage": stage, "detail": detail}))
        stack.callback(net.close)
        contest = start_competitions(net)
        stack.callback(contest.close)
        market, keys, store = contest.competitions, contest.keys, BlobCompetitionStore(net.blobs)
        evaluator_measurement = net.registry.enclave_of(contest.evaluator.signer).measurement
        say({"stage": "evaluator", "detail": f"evaluator enclave {contest.evaluator.signer} registered"})

        x_train, y_train, test_set = digits(seed)
        organizer = chain.new_account()
        now = chain.now()
        terms = CompetitionTerms(
            test_set_hash=bytes(32), schema_hash=bytes(32), rules_hash=bytes(32), prize=PRIZE, metric=Metric.ACCURACY,  # type: ignore[arg-type]
            public_split_bps=PUBLIC_SPLIT_BPS, ladder_step=LADDER_STEP, opens_at=now, closes_at=now + WINDOW_SECONDS,
            scoring_period=SCORING_SECONDS, submission_cap=2, max_parameters=20_000,
            architectures=Architecture.LOGISTIC_REGRESSION | Architecture.MLP | Architecture.CNN, purchase_policy=PurchasePolicy.ORGANIZER,
        )  # fmt: skip
        rules = Rules(
            title="Handwritten digits", description="Classify 8x8 handwritten digits (10 classes); accuracy on a private test set.",
            training_data="sklearn.datasets.load_digits, the 1,000 rows this demo hands out",
        )  # fmt: skip
        opened = open_competition(
            organizer, test_set, terms=terms, rules=rules, competitions=market, registry=net.registry, key_manager=keys, blobs=store
        )
        record("createCompetition", opened.tx)
        cid = opened.competition_id
        say({"stage": "competition", "detail": f"competition {cid}: {test_set.rows} private test rows sealed, prize {PRIZE / ETHER:g} ETH"})

        accounts = {e.name: chain.new_account() for e in ENTRANTS}
        weights = {e.name: train(e, x_train, y_train, seed + i) for i, e in enumerate(ENTRANTS)}
        sdk = {"competitions": market, "registry": net.registry, "key_manager": keys, "blobs": store}
        entries: dict[str, int] = {}
        for entrant in ENTRANTS[:2]:
            entry = submit_model(accounts[entrant.name], weights[entrant.name], competition_id=cid, ask_price=entrant.ask, **sdk)  # type: ignore[arg-type]
            record(f"submit ({entrant.name})", entry.tx)
            entries[entrant.name] = entry.index
            say({"stage": "submitted", "detail": f"{entrant.name}: entry {entry.index}"})

        # Carol tries Alice's sealed model: the key manager does not open it under her name, and the
        # chain takes neither Alice's admission from Carol's account nor Alice's ciphertext twice.
        carol = accounts["Carol"]
        alice_hash = market.submission(cid, entries["Alice"]).content_hash
        copied = seal_submission(
            weights["Alice"], key_manager_key=net.registry.active_key_manager_key(keys.signer), chain_id=chain.chain_id,
            competitions=market.address, competition_id=cid, participant=accounts["Alice"].address,
        )  # fmt: skip
        copy_attempt: dict[str, str] = {}
        try:
            deposit = Deposit(alice_hash, copied.wrapped_key, bytes.fromhex(keys.signer[2:]))
            keys.admit(cid, alice_hash, copied.wrapped_key, participant=carol.address,
                       signature=sign(carol, deposit, chain_id=chain.chain_id, competitions=market.address_bytes))  # fmt: skip
            copy_attempt["key_manager"] = "admitted (unexpected)"
        except KeyUnwrapFailed as e:
            copy_attempt["key_manager"] = f"refused: {e}"
        try:
            market.submit(carol, cid, alice_hash, hashlib.sha256(weights["Alice"]).digest(), 0, b"\x00" * 65)
            copy_attempt["chain"] = "accepted (unexpected)"
        except ContractReverted as e:
            copy_attempt["chain"] = f"refused: {e.error}"
        say({"stage": "copy refused", "detail": f"key manager {copy_attempt['key_manager'][:40]}…; chain {copy_attempt['chain']}"})
        entry = submit_model(carol, weights["Carol"], competition_id=cid, ask_price=ENTRANTS[2].ask, **sdk)  # type: ignore[arg-type]
        record("submit (Carol)", entry.tx)
        entries["Carol"] = entry.index

        scored = contest.evaluator.run_once()
        for posted in scored:
            record(f"postScore (public, entry {posted.index})", posted.tx)
        say({"stage": "public scores", "detail": ", ".join(f"entry {p.index}: {p.score / SCORE_SCALE:.2f}" for p in scored)})
        chain.advance_time(WINDOW_SECONDS + 1)
        private = contest.evaluator.run_once()
        for posted in private:
            record(f"postScore (private, entry {posted.index})", posted.tx)
        say({"stage": "private scores", "detail": ", ".join(f"entry {p.index}: {p.score / SCORE_SCALE:.4f}" for p in private)})
        record("close", market.close(organizer, cid))
        record_ = market.competition(cid)
        assert record_.leader is not None  # every entry was scored above
        names = {index: name for name, index in entries.items()}
        winner = names[record_.leader]
        prize, tx = market.withdraw(accounts[winner])
        record(f"withdraw ({winner})", tx)
        bought = buy_model(organizer, cid, record_.leader, competitions=market, key_manager=keys, blobs=store)
        record("buy", bought.tx)
        say({"stage": "bought", "detail": f"the organizer bought {winner}'s model and opened it"})

        scorings = scored + private
        score_seconds = sum(p.seconds for p in scorings)
        score_rows = sum(p.rows for p in scorings)
        leaderboard = []
        for name, index in sorted(entries.items(), key=lambda kv: kv[1]):
            s = market.submission(cid, index)
            leaderboard.append({
                "entry": index, "participant": name, "architecture": next(e.spec.architecture for e in ENTRANTS if e.name == name),
                "public_score": s.public_score / SCORE_SCALE, "private_score": s.private_score / SCORE_SCALE,
                "ask_wei": int(s.ask_price),
            })  # fmt: skip
        report = CompetitionDemoReport(
            chain=network.name,
            competition_id=int(cid),
            test_rows=test_set.rows,
            public_rows=next(p.rows for p in scored),
            leaderboard=leaderboard,
            public_history=[p.score for p in scored if p.split is Split.PUBLIC],
            copy_attempt=copy_attempt,
            winner=winner,
            prize_wei=int(prize),
            purchase={
                "entry": record_.leader,
                "price_wei": int(market.submission(cid, record_.leader).ask_price),
                "weights_match": hashlib.sha256(bought.weights).digest() == market.weights_hash(cid, record_.leader),
                "test_accuracy": accuracy(bought.weights, test_set),
            },  # fmt: skip
            scoring={"rows_per_second": round(score_rows / score_seconds, 1), "scorings": len(scorings)},
            evaluator_measurement=evaluator_measurement.hex(),
            attestation_format="sim",
            gas=gas,
            wall_seconds=round(time.perf_counter() - started, 2),
        )
    return report
