"""``sterling evaluator`` as a process of its own, on anvil.

The key manager (with its verifier and its competition side) is the node ``sterling keymanager``
runs (:func:`~sterling.keymanager_service.started_node`), its routes served from this process over
a loopback port (:func:`~sterling.keymanager_service.served`); the evaluator is a child process
sharing only what another machine would: the node's URL, the deployment record, the key manager's
URL, the blob folder and the simulated platform's key. It scores a submission on the public split,
then, after the close, on the private one; the chain takes both scores. It refuses to start while
governance has not approved the evaluator measurement, and for a deployment without a competition
market; SIGTERM stops it with status 0.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from eth_account.signers.local import LocalAccount

from enclave_worker.competition_keys import CompetitionKeyService
from enclave_worker.evaluator import EvaluatorService
from enclave_worker.measurement import measure
from enclave_worker.sim_platform import SimPlatform
from enclave_worker.trusted import ladder, metrics
from enclave_worker.trusted.evaluation import class_probabilities
from enclave_worker.trusted.models import build_model
from enclave_worker.trusted.onchain import Architecture, Metric, PurchasePolicy, Role, Split
from marketplace.blobstore import BlobStore
from marketplace.chain import Chain, Wei, anvil, free_port
from marketplace.competing import BlobCompetitionStore, Rules, open_competition, submit_model
from marketplace.competitions import CompetitionMarketClient, CompetitionTerms
from marketplace.contracts import RegistryClient
from marketplace.serving import model_weights
from sterling.compose import Composition, Network, Service, prepare_network, wait_until, write_key
from sterling.evaluator_service import EvaluatorHealth
from sterling.keymanager_service import get_settings, served, started_node
from sterling.standalone import ChainView
from tests.conftest import TOY_SCHEMA, toy_package, toy_spec

pytestmark = [pytest.mark.anvil, pytest.mark.slow]

PUBLIC_BPS = 3000
STEP = 10_000  # η = 0.01 accuracy
EXIT_TIMEOUT = 60.0
"""Seconds a refusing evaluator has to exit (it imports the CLI and reads the chain; it launches no enclave)."""


@dataclasses.dataclass(frozen=True)
class Deployed:
    chain: Chain
    governance: LocalAccount
    network: Network
    registry: RegistryClient
    competitions: CompetitionMarketClient
    keys: CompetitionKeyService
    blobs: BlobStore
    key_manager_url: str


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    """A deployment on anvil and the node ``sterling keymanager`` runs (verifier and competition side
    included), its routes served from this process."""
    folder = tmp_path_factory.mktemp("evaluator-service")
    with anvil() as chain:
        governance, verifier = chain.new_account(), chain.new_account()
        network = prepare_network(chain, governance, verifier, folder)
        view = ChainView.connect(network.rpc_url, network.deployment_path)
        settings = get_settings(
            state_dir=folder / "km", blobs=folder / "blobs", platform_key=network.platform_key,
            operator_key=chain.new_account().key.hex(), verifier_key=verifier.key.hex(),
        )  # fmt: skip
        with started_node(view, settings) as node, served(node, port=free_port()) as url:
            assert node.competition_keys is not None and node.competition_keys.blobs is not None
            yield Deployed(
                chain=chain, governance=governance, network=network, registry=view.registry,
                competitions=node.competition_keys.competitions, keys=node.competition_keys, blobs=node.competition_keys.blobs,
                key_manager_url=url,
            )  # fmt: skip


def spawn_evaluator(services: Composition, d: Deployed, operator: LocalAccount, *, name: str, deployment: Path | None = None) -> Service:
    """``sterling evaluator`` for ``operator`` as a child process, its health on a free port."""
    state, port = services.folder / name, free_port()
    args = [
        "evaluator", "--rpc-url", d.network.rpc_url, "--deployment", str(deployment or d.network.deployment_path),
        "--key-manager", d.key_manager_url, "--blobs", str(d.blobs.root), "--state-dir", str(state),
        "--platform-key", str(d.network.platform_key), "--operator-key-file", str(write_key(state / "operator.key", operator)),
        "--threads", "1", "--interval", "0.2", "--health-port", str(port), "-v",
    ]  # fmt: skip
    return services.spawn(name, args, url=f"http://127.0.0.1:{port}")


def refusal(service: Service) -> str:
    """The exit status must be 1; the process's output, its whitespace (rich's line wraps) collapsed."""
    status = service.process.wait(timeout=EXIT_TIMEOUT)
    assert status == 1, service.tail()
    return " ".join(service.tail().split())


def health(service: Service) -> dict[str, Any]:
    answer = httpx.get(f"{service.url}/health", timeout=5)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_it_refuses_to_start_until_governance_approves_the_evaluator_measurement(deployed: Deployed, tmp_path: Path) -> None:
    registry, measurement = deployed.registry, measure()
    approved = registry.is_measurement_approved(Role.EVALUATOR, measurement)
    if approved:  # another test of this module ran first
        registry.revoke_measurement(deployed.governance, Role.EVALUATOR, measurement)
    try:
        with Composition(deployed.network, tmp_path) as services:
            output = refusal(spawn_evaluator(services, deployed, deployed.chain.new_account(), name="unapproved"))
    finally:
        if approved:
            registry.approve_measurement(deployed.governance, Role.EVALUATOR, measurement)
    refused = f"MeasurementNotApproved: governance has not approved the enclave measurement {measurement.hex()} for the evaluator role"
    assert refused in output
    assert "registered" not in output  # refused before an enclave was launched and registered


def test_it_refuses_to_start_for_a_deployment_without_a_competition_market(deployed: Deployed, tmp_path: Path) -> None:
    record = json.loads(deployed.network.deployment_path.read_text())
    record["competitions"] = None  # a record from before competitions existed
    older = tmp_path / "deployment.json"
    older.write_text(json.dumps(record))
    with Composition(deployed.network, tmp_path) as services:
        output = refusal(spawn_evaluator(services, deployed, deployed.chain.new_account(), name="no-competitions", deployment=older))
    assert "ConfigError: the deployment of registry" in output and "has no competition market" in output


def _terms(now: int) -> CompetitionTerms:
    return CompetitionTerms(
        test_set_hash=bytes(32), schema_hash=bytes(32), rules_hash=bytes(32), prize=Wei(10**15), metric=Metric.ACCURACY,
        public_split_bps=PUBLIC_BPS, ladder_step=STEP, opens_at=now, closes_at=now + 3600, scoring_period=3600, submission_cap=2,
        max_parameters=5000, architectures=Architecture.LOGISTIC_REGRESSION | Architecture.MLP, purchase_policy=PurchasePolicy.ORGANIZER,
    )  # fmt: skip


def test_a_child_evaluator_scores_both_splits_on_chain_reports_its_health_and_stops_on_sigterm(deployed: Deployed, tmp_path: Path) -> None:
    chain, registry, market = deployed.chain, deployed.registry, deployed.competitions
    if not registry.is_measurement_approved(Role.EVALUATOR, measure()):
        registry.approve_measurement(deployed.governance, Role.EVALUATOR, measure())

    organizer, participant, operator = (chain.new_account() for _ in range(3))
    store = BlobCompetitionStore(deployed.blobs)
    sdk: dict[str, Any] = {"competitions": market, "registry": registry, "key_manager": deployed.keys, "blobs": store}
    test_set = toy_package(300, 11)
    opened = open_competition(organizer, test_set, terms=_terms(chain.now()), rules=Rules(title="evaluator service"), **sdk)
    cid = opened.competition_id
    spec = toy_spec()
    torch.manual_seed(3)
    module = build_model(spec, TOY_SCHEMA).eval()
    entry = submit_model(participant, model_weights(module, spec, TOY_SCHEMA), competition_id=cid, ask_price=0, **sdk)

    def exact(split: Split) -> int:
        public = ladder.public_rows(opened.test_set.content_hash, test_set.rows, PUBLIC_BPS)
        rows = public if split is Split.PUBLIC else ~public
        probabilities = class_probabilities(module, test_set.features[rows])
        return metrics.to_units(Metric.ACCURACY, metrics.score(Metric.ACCURACY, probabilities, test_set.labels[rows]))

    with Composition(deployed.network, tmp_path) as services:
        evaluator = spawn_evaluator(services, deployed, operator, name="evaluator")
        started = evaluator.wait_healthy("/health", timeout=120)
        assert started["status"] == "serving" and started["operator"] == operator.address
        assert started["competitions"] == market.address
        assert registry.is_active(started["signer"], Role.EVALUATOR)  # registered through the key manager's verifier
        assert registry.active_operator(started["signer"], Role.EVALUATOR) == operator.address

        # The public split while the window is open: the Ladder's value, on chain.
        scored = market.submission
        wait_until(lambda: scored(cid, entry.index).public_scored, what="the public score is posted", timeout=60, service=evaluator)
        expected_public = ladder.ladder_step(Metric.ACCURACY, exact(Split.PUBLIC), 0, STEP)
        assert market.submission(cid, entry.index).public_score == expected_public
        assert market.competition(cid).public_best == expected_public
        wait_until(lambda: health(evaluator)["last_poll"] is not None, what="a round ends", timeout=30, service=evaluator)
        report = health(evaluator)
        assert report["scores_posted"] == 1 and report["scores_posted_by_split"] == {"public": 1, "private": 0}
        assert report["status"] == "serving" and report["last_poll_age_s"] < 30

        # After the close, the private split: the exact value.
        chain.advance_time(3601)
        wait_until(lambda: scored(cid, entry.index).private_scored, what="the private score is posted", timeout=60, service=evaluator)
        assert market.submission(cid, entry.index).private_score == exact(Split.PRIVATE)
        wait_until(lambda: health(evaluator)["scores_posted"] == 2, what="the health counts both scores", timeout=30, service=evaluator)
        assert health(evaluator)["scores_posted_by_split"] == {"public": 1, "private": 1}

        # SIGTERM: it finishes its round, stops its enclave and exits 0.
        assert evaluator.stop() == 0
        log = evaluator.tail(20_000)
        assert "stopped after posting 2 scores" in log and "Traceback" not in log


def test_the_health_answers_503_once_the_last_round_is_stale(deployed: Deployed) -> None:
    """The stale rule the worker's health uses: 200 within ten intervals (at least 30 s) of the last
    round (or of the start, before one), 503 after; ``/health`` only."""
    enclave = SimPlatform.load_or_create(deployed.network.platform_key).launch(Role.EVALUATOR, threads=1)
    try:
        operator = deployed.chain.new_account()
        evaluator = EvaluatorService(
            enclave, competitions=deployed.competitions, registry=deployed.registry, keys=deployed.keys, blobs=deployed.blobs,
            operator=operator,
        )  # fmt: skip
        health = EvaluatorHealth(evaluator, interval=0.5)
        server = health.serve("127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            starting = httpx.get(f"{url}/health", timeout=5)
            assert starting.status_code == 200 and starting.json()["last_poll"] is None and starting.json()["scores_posted"] == 0
            assert health.stale_after == 30.0
            health.started -= 31  # no round in 31 s since the start
            assert httpx.get(f"{url}/health", timeout=5).status_code == 503
            evaluator.last_poll = time.time() - 29  # a round 29 s ago
            assert httpx.get(f"{url}/health", timeout=5).json()["status"] == "serving"
            evaluator.last_poll = time.time() - 31
            stale = httpx.get(f"{url}/health", timeout=5)
            assert stale.status_code == 503 and stale.json()["status"] == "stalled" and stale.json()["last_poll_age_s"] >= 31
            assert httpx.get(f"{url}/metrics", timeout=5).status_code == 404
        finally:
            server.shutdown()
    finally:
        enclave.close()
