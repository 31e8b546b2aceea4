"""Trustworthy ML competitions end to end (issue 16): an organizer opens a competition over a sealed
test set, participants submit sealed models (one tries another's ciphertext), a real evaluator
enclave scores them (public split through the Ladder, private split after the close), the chain
pays the prize to the winner and the organizer buys the winning model and opens it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from eth_utils import to_canonical_address
from fastapi.testclient import TestClient
from safetensors.torch import save as save_tensors
from sklearn.datasets import load_digits

from enclave_worker.competition_keys import CompetitionKeyService
from enclave_worker.keymanager import KeyManagerService
from enclave_worker.trusted import inference, ladder, metrics
from enclave_worker.trusted.competition import sign
from enclave_worker.trusted.dataset import DatasetPackage, Schema, canonical_json
from enclave_worker.trusted.errors import KeyUnwrapFailed
from enclave_worker.trusted.evaluation import class_probabilities
from enclave_worker.trusted.models import ModelSpec, build_model
from enclave_worker.trusted.onchain import Architecture, CompetitionStatus, Metric, PurchasePolicy, Split
from enclave_worker.trusted.receipt import Deposit
from marketplace import chain as chain_mod
from marketplace.competing import BlobCompetitionStore, Rules, buy_model, open_competition, seal_submission, submit_job_model, submit_model
from marketplace.competitions import CompetitionTerms
from marketplace.errors import ConfigError, ContractReverted, JobNotReady, KeyReleaseRefused
from sterling.localnet import LocalCompetitions, LocalNet, bring_up, start_competitions

ETHER = 10**18
SCHEMA = Schema(
    task="classification", feature_names=tuple(f"px{i}" for i in range(64)), feature_shape=(64,),
    class_names=tuple(str(d) for d in range(10)),
)  # fmt: skip
PUBLIC_BPS = 3000
STEP = 10_000  # η = 0.01 accuracy


def _data() -> tuple[tuple[np.ndarray, np.ndarray], DatasetPackage]:
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    y = y.astype(np.int64)
    return (x[:1000], y[:1000]), DatasetPackage(features=x[1000:], labels=y[1000:], schema=SCHEMA)


(TRAIN_X, TRAIN_Y), TEST = _data()


def _weights(spec: ModelSpec, steps: int, seed: int) -> tuple[torch.nn.Module, bytes]:
    torch.manual_seed(seed)
    module = build_model(spec, SCHEMA)
    optimizer = torch.optim.Adam(module.parameters(), lr=0.02)
    x, y = torch.from_numpy(TRAIN_X), torch.from_numpy(TRAIN_Y)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(module(x), y).backward()
        optimizer.step()
    module.eval()
    metadata = {
        inference.WEIGHTS_SPEC_KEY: spec.to_bytes().decode(),
        inference.WEIGHTS_SCHEMA_KEY: canonical_json(SCHEMA.to_json()).decode(),
    }
    return module, save_tensors({k: v.detach().contiguous() for k, v in module.state_dict().items()}, metadata=metadata)


def _exact(module: torch.nn.Module, test_set_hash: bytes, split: Split) -> int:
    public = ladder.public_rows(test_set_hash, TEST.rows, PUBLIC_BPS)
    rows = public if split is Split.PUBLIC else ~public
    probabilities = class_probabilities(module, TEST.features[rows])
    return metrics.to_units(Metric.ACCURACY, metrics.score(Metric.ACCURACY, probabilities, TEST.labels[rows]))


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNet]:
    """A private deployment: competitions move chain time past their windows."""
    local = bring_up(chain_mod.embedded(), tmp_path_factory.mktemp("competitions"))
    yield local
    local.close()


@pytest.fixture(scope="module")
def contest(net: LocalNet) -> Iterator[LocalCompetitions]:
    started = start_competitions(net)
    yield started
    started.close()


def _terms(now: int, **overrides: object) -> CompetitionTerms:
    terms = CompetitionTerms(
        test_set_hash=bytes(32), schema_hash=bytes(32), rules_hash=bytes(32), prize=ETHER, metric=Metric.ACCURACY,
        public_split_bps=PUBLIC_BPS, ladder_step=STEP, opens_at=now, closes_at=now + 3600, scoring_period=3600,
        submission_cap=2, max_parameters=5000, architectures=Architecture.LOGISTIC_REGRESSION | Architecture.MLP,
        purchase_policy=PurchasePolicy.ORGANIZER,
    )  # fmt: skip
    return dataclasses.replace(terms, **overrides)  # type: ignore[arg-type]


def test_a_competition_from_sealed_test_set_to_a_bought_model(
    net: LocalNet, contest: LocalCompetitions, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    localnet = net
    caplog.set_level(logging.DEBUG)
    chain, market, keys, blobs = localnet.chain, contest.competitions, contest.keys, localnet.blobs
    store = BlobCompetitionStore(blobs)
    organizer, alice, bob, mallory = (chain.new_account() for _ in range(4))
    terms = _terms(chain.now())
    rules = Rules(title="Handwritten digits", description="8x8 digits, 10 classes", training_data="sklearn.datasets.load_digits rows 0-999")
    opened = open_competition(
        organizer, TEST, terms=terms, rules=rules, competitions=market, registry=localnet.registry, key_manager=keys, blobs=store
    )
    cid = opened.competition_id
    record = market.competition(cid)
    assert record.status is CompetitionStatus.OPEN and record.terms.schema_hash == SCHEMA.hash()
    assert opened.test_set.rows == TEST.rows and blobs.get(opened.rules_hash.hex()) == rules.to_bytes()

    mlp = ModelSpec(architecture="mlp", hidden_sizes=(32,), epochs=1, batch_size=32, learning_rate=0.1, max_grad_norm=1.0)
    logreg = ModelSpec(architecture="logistic_regression", epochs=1, batch_size=32, learning_rate=0.1, max_grad_norm=1.0)
    alice_model, alice_weights = _weights(mlp, 200, seed=1)
    bob_model, bob_weights = _weights(logreg, 15, seed=2)
    sdk = {"competitions": market, "registry": localnet.registry, "key_manager": keys, "blobs": store}
    # Alice seals her model and has it admitted; Mallory tries to use her admission and her ciphertext
    km_key = localnet.registry.active_key_manager_key(keys.signer)
    sealed = seal_submission(
        alice_weights, key_manager_key=km_key, chain_id=chain.chain_id, competitions=market.address, competition_id=cid,
        participant=alice.address,
    )  # fmt: skip
    blobs.put(sealed.ciphertext)
    deposit = Deposit(sealed.content_hash, sealed.wrapped_key, to_canonical_address(keys.signer))
    admitted = keys.admit(
        cid, sealed.content_hash, sealed.wrapped_key, participant=alice.address,
        signature=sign(alice, deposit, chain_id=chain.chain_id, competitions=market.address_bytes),
    )  # fmt: skip
    again = keys.admit(
        cid, sealed.content_hash, sealed.wrapped_key, participant=alice.address,
        signature=sign(alice, deposit, chain_id=chain.chain_id, competitions=market.address_bytes),
    )  # fmt: skip
    assert again == admitted  # a repeat (say, after a lost reply) returns the same admission
    with pytest.raises(ContractReverted) as refused:  # an admission is Alice's only
        market.submit(mallory, cid, admitted.content_hash, admitted.weights_hash, 1, admitted.admission)
    assert refused.value.error == "CompetitionMarketInvalidAdmission"
    with pytest.raises(KeyUnwrapFailed):  # her ciphertext and wrapped key do not open under Mallory's name
        keys.admit(
            cid, sealed.content_hash, sealed.wrapped_key, participant=mallory.address,
            signature=sign(mallory, deposit, chain_id=chain.chain_id, competitions=market.address_bytes),
        )  # fmt: skip
    index_a, _ = market.submit(alice, cid, admitted.content_hash, admitted.weights_hash, ETHER // 2, admitted.admission)
    with pytest.raises(ContractReverted) as refused:  # and once on-chain, the same ciphertext is never taken again
        market.submit(alice, cid, admitted.content_hash, admitted.weights_hash, ETHER // 2, admitted.admission)
    assert refused.value.error == "CompetitionMarketDuplicateSubmission"
    entry_b = submit_model(bob, bob_weights, competition_id=cid, ask_price=ETHER // 4, **sdk)  # type: ignore[arg-type]
    assert (index_a, entry_b.index) == (0, 1)
    assert market.weights_hash(cid, 0) == hashlib.sha256(alice_weights).digest()

    # public split: the Ladder's values, in submission order
    posted = contest.evaluator.run_once()
    assert [(p.index, p.split) for p in posted] == [(0, Split.PUBLIC), (1, Split.PUBLIC)]
    exact_a = _exact(alice_model, opened.test_set.content_hash, Split.PUBLIC)
    exact_b = _exact(bob_model, opened.test_set.content_hash, Split.PUBLIC)
    first = ladder.ladder_step(Metric.ACCURACY, exact_a, 0, STEP)
    assert posted[0].score == first
    assert posted[1].score == ladder.ladder_step(Metric.ACCURACY, exact_b, first, STEP)
    assert market.competition(cid).public_best == max(posted[0].score, posted[1].score)
    assert contest.evaluator.run_once() == []  # nothing else is due while the window is open

    # the organizer cannot close or buy before the close, nor get a model key
    with pytest.raises(ContractReverted):
        market.close(organizer, cid)
    with pytest.raises(KeyReleaseRefused):
        keys.release_purchase(cid, 0, buyer=organizer.address)

    chain.advance_time(3601)
    posted = contest.evaluator.run_once()
    assert sorted((p.index, p.split) for p in posted) == [(0, Split.PRIVATE), (1, Split.PRIVATE)]
    private = {p.index: p.score for p in posted}
    assert private[0] == _exact(alice_model, opened.test_set.content_hash, Split.PRIVATE)
    assert private[1] == _exact(bob_model, opened.test_set.content_hash, Split.PRIVATE)
    winner = 0 if private[0] >= private[1] else 1
    assert private[0] > private[1]  # the trained MLP beats the barely trained logistic regression

    # while it waits for its close the evaluator's rounds read no submission; once closed, not even the competition
    reads: list[tuple[str, int]] = []
    evaluator_market = contest.evaluator.competitions
    for name in ("submission", "competition"):
        method = getattr(evaluator_market, name)
        monkeypatch.setattr(evaluator_market, name, lambda c, *a, _m=method, _n=name: reads.append((_n, c)) or _m(c, *a))
    assert contest.evaluator.run_once() == []
    assert ("submission", cid) not in reads and ("competition", cid) in reads

    winner_account = (alice, bob)[winner]
    before = market.credits(winner_account.address)
    market.close(organizer, cid)
    assert market.competition(cid).status is CompetitionStatus.CLOSED
    reads.clear()
    assert contest.evaluator.run_once() == [] and contest.evaluator.run_once() == []
    assert reads.count(("competition", cid)) == 1  # the first round saw it closed; the second skipped it
    assert market.credits(winner_account.address) == before + ETHER
    with pytest.raises(ContractReverted):
        market.close(organizer, cid)

    # a stranger may not buy (organizer-only), and gets no key; the organizer buys and opens the model
    with pytest.raises(ContractReverted):
        buy_model(mallory, cid, winner, competitions=market, key_manager=keys, blobs=store)
    with pytest.raises(KeyReleaseRefused):
        keys.release_purchase(cid, winner, buyer=mallory.address)
    bought = buy_model(organizer, cid, winner, competitions=market, key_manager=keys, blobs=store)
    assert bought.weights == (alice_weights, bob_weights)[winner]
    # a key manager that waits for 2 confirmations releases the key of a purchase only once 2 blocks lie on it
    careful = CompetitionKeyService(
        KeyManagerService(keys.key_manager.enclave, market=net.market, registry=net.registry, state_dir=keys.key_manager.state_dir,
                          confirmations=2),
        market, blobs=blobs,
    )  # fmt: skip
    with pytest.raises(KeyReleaseRefused, match="purchase of submission .* is not yet 2 blocks deep"):
        careful.release_purchase(cid, winner, buyer=organizer.address)
    chain.advance_time(1)
    chain.advance_time(1)
    assert len(careful.release_purchase(cid, winner, buyer=organizer.address)) > 32
    assert market.credits(winner_account.address) == before + ETHER + (ETHER // 2, ETHER // 4)[winner]
    paid, _ = market.withdraw(winner_account)
    assert paid == before + ETHER + (ETHER // 2, ETHER // 4)[winner]

    # the test set never appears in plaintext outside the evaluator: not in the blob store, the key
    # manager's files or the logs at DEBUG
    needle = TEST.features[:4].tobytes()
    for path in list(blobs.root.rglob("*")) + list(keys.key_manager.state_dir.rglob("*")):
        if path.is_file():
            assert needle not in path.read_bytes(), path
    assert needle.hex() not in caplog.text
    labels_text = ",".join(map(str, TEST.labels[:32].tolist()))
    assert labels_text not in caplog.text
    assert dataclasses.asdict(record.terms)["test_set_hash"] == opened.test_set.content_hash


def test_a_jobs_model_is_submitted_without_its_participant_seeing_it(net: LocalNet, contest: LocalCompetitions) -> None:
    """A participant trains through an ordinary Sterling job with its result sealed to the key
    manager, and submits that model: the key manager admits it from the sealed result, the
    participant cannot open it, and the evaluator scores it."""
    from marketplace.consumer import Consumer
    from marketplace.provider import list_dataset
    from tests.conftest import TOY_SCHEMA, toy_package, toy_spec, toy_terms

    chain, market, keys, blobs = net.chain, contest.competitions, contest.keys, net.blobs
    organizer = chain.new_account()
    opened = open_competition(
        organizer, toy_package(400, 99), terms=_terms(chain.now(), max_parameters=0), rules=Rules(title="toy"),
        competitions=market, registry=net.registry, key_manager=keys, blobs=BlobCompetitionStore(blobs),
    )  # fmt: skip
    assert market.competition(opened.competition_id).terms.schema_hash == TOY_SCHEMA.hash()
    provider = chain.new_account()
    listed = list_dataset(
        toy_package(300, 7), provider, terms=toy_terms(), market=net.market, registry=net.registry, key_manager=net.key_manager, blobs=blobs
    )
    consumer = Consumer(chain.new_account(), market=net.market, blobs=blobs)
    km_key = net.registry.active_key_manager_key(net.key_manager.signer)
    created = consumer.create_job([listed.dataset_id], toy_spec(epochs=3), epsilon=1.0, delta=1e-5, worker_fee=10**16, seal_to=km_key)  # type: ignore[arg-type]
    with pytest.raises(JobNotReady):
        keys.admit_job_model(opened.competition_id, created.job_id)
    net.worker.run_job(created.job_id)
    with pytest.raises(KeyUnwrapFailed):
        consumer.fetch_model(created.job_id)  # sealed to the key manager: the participant cannot open it
    stranger = chain.new_account()
    with pytest.raises(ConfigError, match="not .*'s"):  # only the job's consumer submits it
        submit_job_model(stranger, created.job_id, competition_id=opened.competition_id, ask_price=0, competitions=market, key_manager=keys)
    entry = submit_job_model(
        consumer.account, created.job_id, competition_id=opened.competition_id, ask_price=0, competitions=market, key_manager=keys
    )
    assert entry.weights_hash == net.market.result_submitted(created.job_id).model_hash
    posted = contest.evaluator.run_once()
    assert [(p.competition_id, p.index, p.split) for p in posted] == [(opened.competition_id, entry.index, Split.PUBLIC)]
    assert posted[0].score >= 700_000  # the DP job's model learned the toy task (its public accuracy, Ladder-rounded)


def test_the_gateway_serves_competitions_and_relays_the_key_manager(
    net: LocalNet, contest: LocalCompetitions, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Through the gateway only (what the CLI and the browser use): the organizer's test set, the
    rules, a participant's admission, the list, the leaderboard with its history, and a purchase key.
    The test set's plaintext is nowhere outside the evaluator: not in the gateway's index or files,
    the blob store, the key manager's files or the logs at DEBUG."""
    caplog.set_level(logging.DEBUG)
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from enclave_worker.trusted import keywrap
    from marketplace.competing import open_bought_model
    from marketplace.gateway_client import GatewayCompetitionKeys, GatewayCompetitionStore, GatewayRequestFailed
    from sterling.gateway import create_app
    from tests.gateway.conftest import make_gateway

    gateway = make_gateway(net, tmp_path)
    services = dataclasses.replace(gateway.services, competition_keys=contest.keys)
    with TestClient(create_app(gateway.settings, services=services), base_url="http://127.0.0.1:8000", client=("127.0.0.1", 50000)) as http:
        keys, store = GatewayCompetitionKeys(http), GatewayCompetitionStore(http)
        chain, market = net.chain, contest.competitions
        assert http.get("/api/config").json()["contracts"]["competitions"] == market.address
        organizer, carol, dave = (chain.new_account() for _ in range(3))
        rules = Rules(title="Digits over HTTP", training_datasets=(1, 2))
        opened = open_competition(
            organizer, TEST, terms=_terms(chain.now(), purchase_policy=PurchasePolicy.ANYONE), rules=rules, competitions=market,
            registry=net.registry, key_manager=keys, blobs=store,
        )  # fmt: skip
        cid = opened.competition_id
        _, weights = _weights(
            ModelSpec(architecture="logistic_regression", epochs=1, batch_size=32, learning_rate=0.1, max_grad_norm=1.0), 40, 3
        )
        sdk = {"competitions": market, "registry": net.registry, "key_manager": keys, "blobs": store}
        entry = submit_model(carol, weights, competition_id=cid, ask_price=10**15, **sdk)  # type: ignore[arg-type]
        contest.evaluator.run_once()
        gateway.sync()  # the list and the leaderboard are read from the chain index
        listed = http.get("/api/competitions").json()
        assert listed[0]["competition_id"] == cid and listed[0]["phase"] == "submissions" and listed[0]["metric"] == "accuracy"
        detail = http.get(f"/api/competitions/{cid}").json()
        assert detail["rules"]["title"] == "Digits over HTTP" and detail["rules"]["training_datasets"] == [1, 2]
        assert detail["submissions"][0]["participant"] == carol.address and detail["submissions"][0]["private_score"] is None
        assert [p["split"] for p in detail["history"]] == ["public"]
        assert detail["history"][0]["score"] == detail["submissions"][0]["public_score"] == detail["public_best"]
        assert http.get("/api/competitions/999").status_code == 404
        bad = http.post("/api/competition-rules", content=b'{"version": 1, "title": ""}', headers={"content-type": "application/json"})
        assert bad.status_code == 400 and "title" in bad.json()["detail"]
        # no purchase key before the close, nor for someone who did not pay
        refused = http.post("/api/key-manager/purchases", json={"competition_id": cid, "index": entry.index, "buyer": dave.address})
        assert refused.status_code == 403 and "not closed" in refused.json()["detail"]
        chain.advance_time(3601)
        contest.evaluator.run_once()
        market.close(organizer, cid)
        refused = http.post("/api/key-manager/purchases", json={"competition_id": cid, "index": entry.index, "buyer": dave.address})
        assert refused.status_code == 403 and "has not bought" in refused.json()["detail"]
        private_key = X25519PrivateKey.generate()
        market.buy(dave, cid, entry.index, keywrap.public_key_bytes(private_key))
        assert open_bought_model(dave.address, cid, entry.index, private_key, competitions=market, key_manager=keys, blobs=store) == weights
        gateway.sync()
        key = http.post("/api/key-manager/purchases", json={"competition_id": cid, "index": entry.index, "buyer": dave.address}).json()
        assert key["weights_hash"] == "0x" + hashlib.sha256(weights).hexdigest()  # from the index now that it holds the entry
        closed = http.get(f"/api/competitions/{cid}").json()
        assert closed["status"] == "closed" and closed["leader"] == entry.index and closed["submissions"][0]["private_score"] is not None
        with pytest.raises(GatewayRequestFailed):  # a second admission of a model into a closed competition is refused
            submit_model(carol, weights, competition_id=cid, ask_price=0, **sdk)  # type: ignore[arg-type]
    gateway.index.close()
    needle, labels = TEST.features[:4].tobytes(), ",".join(map(str, TEST.labels[:32].tolist()))
    for root in (tmp_path, net.blobs.root, contest.keys.key_manager.state_dir):
        for path in root.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert needle not in data and TEST.labels[:64].tobytes() not in data, path
    assert needle.hex() not in caplog.text and labels not in caplog.text


def test_the_cli_runs_a_competition_end_to_end(net: LocalNet, contest: LocalCompetitions, tmp_path: Path) -> None:
    """``sterling competition create | submit | list | leaderboard | close | buy | withdraw`` against a real HTTP gateway."""
    import threading
    import time

    import uvicorn
    from typer.testing import CliRunner

    from marketplace.chain import free_port
    from sterling.cli import app as cli
    from sterling.gateway import create_app
    from tests.gateway.conftest import TEST_HOSTS, make_gateway

    gateway = make_gateway(net, tmp_path / "gw")
    services = dataclasses.replace(gateway.services, competition_keys=contest.keys)
    port = free_port()
    settings = gateway.settings.model_copy(update={"allowed_hosts": (*TEST_HOSTS, f"127.0.0.1:{port}")})
    server = uvicorn.Server(uvicorn.Config(create_app(settings, services=services), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        organizer, erin = net.chain.new_account(), net.chain.new_account()
        test_file, weights_file = tmp_path / "test.safetensors", tmp_path / "erin.safetensors"
        test_file.write_bytes(TEST.to_bytes())
        _, weights = _weights(
            ModelSpec(architecture="mlp", hidden_sizes=(16,), epochs=1, batch_size=32, learning_rate=0.1, max_grad_norm=1.0), 60, 5
        )
        weights_file.write_bytes(weights)
        runner = CliRunner()
        org_env, erin_env = {"STERLING_PRIVATE_KEY": organizer.key.hex()}, {"STERLING_PRIVATE_KEY": erin.key.hex()}
        created = runner.invoke(
            cli, ["competition", "create", str(test_file), "--title", "CLI digits", "--prize", str(ETHER // 10), "--hours", "1",
                  "--architectures", "mlp", "--max-parameters", "5000", "--gateway", url], env=org_env,
        )  # fmt: skip
        assert created.exit_code == 0, created.output
        cid = int(created.output.split("competition ")[1].split(" ")[0])
        refused = runner.invoke(cli, ["competition", "submit", str(cid), str(test_file), "--gateway", url], env=erin_env)
        assert refused.exit_code == 1 and "safetensors metadata" in " ".join(refused.output.split()), refused.output  # not a model
        submitted = runner.invoke(
            cli, ["competition", "submit", str(cid), str(weights_file), "--ask", "1000", "--gateway", url], env=erin_env
        )
        assert submitted.exit_code == 0 and "entry 0" in submitted.output, submitted.output
        contest.evaluator.run_once()
        gateway.sync()  # `list` and `leaderboard` read the chain index
        listed = runner.invoke(cli, ["competition", "list", "--gateway", url])
        assert listed.exit_code == 0 and "┃ id" in listed.output and f"│ {cid} " in listed.output, listed.output
        board = runner.invoke(cli, ["competition", "leaderboard", str(cid), "--gateway", url])
        assert board.exit_code == 0 and "CLI digits" in board.output and erin.address[:10] in board.output, board.output
        as_json = runner.invoke(cli, ["competition", "list", "--gateway", url, "--json"])
        assert as_json.exit_code == 0 and cid in [c["competition_id"] for c in json.loads(as_json.output)]
        board_json = runner.invoke(cli, ["competition", "leaderboard", str(cid), "--gateway", url, "--json"])
        assert board_json.exit_code == 0 and [s["index"] for s in json.loads(board_json.output)["submissions"]] == [0]
        early = runner.invoke(cli, ["competition", "close", str(cid), "--gateway", url], env=org_env)
        assert early.exit_code == 1 and "CompetitionMarket" in early.output
        net.chain.advance_time(3601)
        contest.evaluator.run_once()
        closed = runner.invoke(cli, ["competition", "close", str(cid), "--gateway", url], env=org_env)
        assert closed.exit_code == 0 and "entry 0 wins" in closed.output, closed.output
        out = tmp_path / "bought.safetensors"
        bought = runner.invoke(cli, ["competition", "buy", str(cid), "0", "--out", str(out), "--gateway", url], env=org_env)
        assert bought.exit_code == 0, bought.output
        assert out.read_bytes() == weights
        again = runner.invoke(cli, ["competition", "buy", str(cid), "0", "--out", str(out), "--gateway", url], env=org_env)
        assert again.exit_code == 0  # opened again with the saved purchase key, without paying twice
        assert contest.competitions.credits(erin.address) == ETHER // 10 + 1000
        paid = runner.invoke(cli, ["competition", "withdraw", "--gateway", url], env=erin_env)
        assert paid.exit_code == 0 and str(ETHER // 10 + 1000) in paid.output
    finally:
        server.should_exit = True
        gateway.index.close()
