"""``sterling inference``: the inference host as a process of its own, used through
:class:`RemoteInference` as the in-process host is used (the same answers, the same refusals with
their messages, statuses and ``Retry-After``), directly and behind a gateway.

On anvil: the key manager and its verifier serve their routes from this process (``served``, as
``sterling up`` serves them to its children); ``sterling inference`` runs as a child process that
shares nothing with this one but the chain, the deployment record, the blob folder, the key
manager's URL and the simulated platform's key.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient

from enclave_worker.measurement import measure
from enclave_worker.model_keys import ModelKeyService
from enclave_worker.remote import ServiceUnreachable
from enclave_worker.remote_inference import INFERENCE_REFUSALS, InferenceHost, RemoteInference, inference_refusal_of
from enclave_worker.serving import ModelUnavailable, RateLimited, Served, ServiceBusy
from enclave_worker.trusted import errors as trusted_errors
from enclave_worker.trusted.models import build_model
from enclave_worker.trusted.onchain import OutputPolicy, Role
from enclave_worker.trusted.vouchers import VoucherInvalid
from marketplace.blobstore import BlobStore
from marketplace.chain import Chain, Wei, anvil, free_port
from marketplace.contracts import RegistryClient
from marketplace.inference import VoucherBook, build_request
from marketplace.model_market import ModelMarketClient
from marketplace.serving import (
    Answer,
    BlobModelStore,
    InferenceClient,
    ListedModel,
    Transport,
    gateway_transport,
    list_model,
    model_weights,
)
from oracle.index_db import IndexDatabase
from sterling.compose import DATABASE_URL_ENV, Composition, Network, Service, prepare_network, write_key
from sterling.gateway import GatewayServices, create_app, get_settings
from sterling.keymanager_service import KeyManagerNode, served, started_node
from sterling.keymanager_service import get_settings as get_keymanager_settings
from sterling.standalone import ChainView
from tests.conftest import TOY_SCHEMA, toy_spec
from tests.gateway.conftest import TEST_HOSTS

pytestmark = [pytest.mark.anvil, pytest.mark.slow]

PRICE = 10**12
CLIENT_BURST = 12
"""Requests a client may send at once (the host's ``STERLING_INFERENCE_CLIENT_BURST``): a test's clients send fewer."""
CLIENT_RATE = 0.5
"""Requests per second a client may send beyond its burst: a burst of requests is limited at once."""
OCTETS = {"Content-Type": "application/octet-stream"}


@dataclasses.dataclass(frozen=True)
class Deployment:
    chain: Chain
    network: Network
    governance: LocalAccount
    node: KeyManagerNode
    blobs: BlobStore
    model_market: ModelMarketClient
    key_manager_url: str
    folder: Path

    @property
    def registry(self) -> RegistryClient:
        return self.node.view.registry

    @property
    def model_keys(self) -> ModelKeyService:
        assert self.node.model_keys is not None
        return self.node.model_keys


@dataclasses.dataclass(frozen=True)
class Host:
    service: Service
    inference: RemoteInference
    operator: LocalAccount
    listed: ListedModel


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Anvil, the contracts (trainer and key-manager measurements approved, not the inference one) and
    the key manager's routes with its model side, served from this process."""
    folder = tmp_path_factory.mktemp("inference-service")
    with anvil() as chain:
        governance, verifier, operator = (chain.new_account() for _ in range(3))
        network = prepare_network(chain, governance, verifier, folder)
        assert network.deployment.model_market is not None
        view = ChainView.connect(network.rpc_url, network.deployment_path)
        settings = get_keymanager_settings(
            state_dir=folder / "keymanager", blobs=folder / "blobs", platform_key=network.platform_key,
            operator_key=operator.key.hex(), verifier_key=verifier.key.hex(),
        )  # fmt: skip
        with started_node(view, settings) as node, served(node, port=free_port()) as url:
            model_market = ModelMarketClient(chain, network.deployment.model_market)
            yield Deployment(chain, network, governance, node, BlobStore(folder / "blobs"), model_market, url, folder)


def spawn_inference(services: Composition, deployment: Deployment, operator: LocalAccount, *, name: str) -> Service:
    """``sterling inference`` for ``operator`` (redeeming only on stop, within the test), not yet healthy."""
    state, port = services.folder / name, free_port()
    args = [
        "inference", *deployment.network.chain_args(), "--key-manager", deployment.key_manager_url,
        "--blobs", str(deployment.blobs.root), "--state-dir", str(state), "--platform-key", str(deployment.network.platform_key),
        "--operator-key-file", str(write_key(state / "operator.key", operator)), "--threads", "1", "--port", str(port),
        "--redeem-interval", "600", "-v",
    ]  # fmt: skip
    limits = {"STERLING_INFERENCE_CLIENT_BURST": str(CLIENT_BURST), "STERLING_INFERENCE_CLIENT_RATE": str(CLIENT_RATE)}
    return services.spawn(name, args, url=f"http://127.0.0.1:{port}", env=limits)


@pytest.fixture(scope="module")
def host(deployment: Deployment) -> Iterator[Host]:
    """Governance approves the inference measurement; ``sterling inference`` serves a listed toy model."""
    measurement = measure()
    if not deployment.registry.is_measurement_approved(Role.INFERENCE, measurement):
        deployment.registry.approve_measurement(deployment.governance, Role.INFERENCE, measurement)
    spec = toy_spec()
    listed = list_model(
        model_weights(build_model(spec, TOY_SCHEMA), spec, TOY_SCHEMA), spec, deployment.chain.new_account(), price_per_query=PRICE,
        output_policy=OutputPolicy.PROBABILITIES, output_param=2, query_cap=1000, model_market=deployment.model_market,
        registry=deployment.registry, key_manager=deployment.model_keys, store=BlobModelStore(deployment.blobs),
    )  # fmt: skip
    operator = deployment.chain.new_account()
    with Composition(deployment.network, deployment.folder / "services") as services:
        service = spawn_inference(services, deployment, operator, name="inference")
        health = service.wait_healthy("/health")
        assert health["status"] == "ok" and health["registered"] is True and health["operator"] == operator.address
        with RemoteInference(str(service.url)) as inference:
            yield Host(service, inference, operator, listed)


def _transport(inference: InferenceHost, sent: list[bytes]) -> Transport:
    """An SDK transport straight to an inference host (what the gateway does, without the gateway); it records what it sends."""

    def send(envelope: bytes) -> Answer:
        sent.append(envelope)
        served = inference.submit(envelope).result(timeout=60)
        return Answer(response=served.response, receipt_signature=served.receipt_signature)

    return send


def _client(deployment: Deployment, transport: Transport) -> InferenceClient:
    return InferenceClient(
        deployment.chain.new_account(), model_market=deployment.model_market, registry=deployment.registry, transport=transport
    )


@contextmanager
def _gateway(deployment: Deployment, inference: InferenceHost, folder: Path) -> Iterator[TestClient]:
    index = IndexDatabase(f"sqlite:///{folder / 'index.db'}")
    index.create_schema()
    view = deployment.node.view
    services = GatewayServices(
        chain=deployment.chain, market=view.market, registry=view.registry, blobs=deployment.blobs, index=index,
        deployment_block=deployment.network.deployment.block, model_market=deployment.model_market, inference=inference,
    )  # fmt: skip
    app = create_app(get_settings(allowed_hosts=TEST_HOSTS, events_poll_seconds=0.05), services=services)
    client = TestClient(app, base_url="http://127.0.0.1:8000", client=("127.0.0.1", 50000))  # a browser on this machine
    try:
        yield client
    finally:
        client.close()
        app.state.feed.close()
        index.close()


def _rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 4)).astype(np.float32)


def _refused(refusing: Future[Served] | Callable[[], object]) -> BaseException:
    """What a future (or a call) raises: the class and the message are what the tests compare."""
    with pytest.raises(Exception) as raised:  # noqa: PT011 - the class is what the test compares
        if isinstance(refusing, Future):
            refusing.result(timeout=60)
        else:
            refusing()
    return raised.value


def test_the_refusal_table_gives_the_gateways_statuses() -> None:
    """The one table the gateway and the service answer from: 402 pay with a valid voucher, 403
    over the cap or not allowed, 400 a bad envelope, 404 a model not served, busy hosts 429/503
    (the subclass first); nothing else is a refusal."""
    assert dict(INFERENCE_REFUSALS) == {
        RateLimited: 429, ServiceBusy: 503, ModelUnavailable: 404, VoucherInvalid: 402, trusted_errors.VoucherStale: 402,
        trusted_errors.VoucherUnderpaid: 402, trusted_errors.VoucherOverDeposit: 402, trusted_errors.QueryCapExceeded: 403,
        trusted_errors.ClientNotAllowed: 403, trusted_errors.WrongModel: 400, trusted_errors.WrongEnclave: 400,
        trusted_errors.RequestTampered: 400, trusted_errors.EnvelopeMalformed: 400,
    }  # fmt: skip
    assert inference_refusal_of(RateLimited("over", retry_after=1.0)) == (RateLimited, 429)
    assert inference_refusal_of(ServiceBusy("full", retry_after=1.0)) == (ServiceBusy, 503)
    assert inference_refusal_of(trusted_errors.ModelNotLoaded("evicted")) is None


def test_it_refuses_to_start_when_governance_has_not_approved_the_inference_measurement(deployment: Deployment) -> None:
    registry, measurement = deployment.registry, measure()
    approved = registry.is_measurement_approved(Role.INFERENCE, measurement)
    if approved:  # the host of another test approved it: take it back for this test
        registry.revoke_measurement(deployment.governance, Role.INFERENCE, measurement)
    try:
        with Composition(deployment.network, deployment.folder / "unapproved") as services:
            service = spawn_inference(services, deployment, deployment.chain.new_account(), name="unapproved")
            assert service.process.wait(timeout=120) == 1
            log = service.tail()
            assert "MeasurementNotApproved" in log
            assert f"governance has not approved the enclave measurement {measurement.hex()} for the inference role" in log
            assert not (deployment.folder / "unapproved" / "unapproved" / "vouchers.jsonl").exists()
    finally:
        if approved:
            registry.approve_measurement(deployment.governance, Role.INFERENCE, measurement)


def test_a_paid_query_through_the_service_and_through_a_gateway_is_answered_and_receipted(
    deployment: Deployment, host: Host, tmp_path: Path
) -> None:
    inference, model_id = host.inference, host.listed.model_id
    info = httpx.get(f"{host.service.url}/info", timeout=5).json()
    assert inference.signer == info["signer"] == host.service.wait_healthy("/health")["signer"]
    assert info["model_market"] == deployment.model_market.address and info["chain_id"] == deployment.chain.chain_id
    assert deployment.registry.is_active(inference.signer, Role.INFERENCE) and isinstance(inference, InferenceHost)

    # Through the client: the answer opens (InferenceClient checks the enclave's receipt signature and decrypts).
    sent: list[bytes] = []
    client = _client(deployment, _transport(inference, sent))
    client.deposit(model_id, 20 * PRICE, inference.signer)
    outputs = client.query(model_id, _rows(3), enclave=inference.signer)
    assert outputs.values.shape == (3, 2) and np.allclose(outputs.values.sum(axis=1), 1.0, atol=0.01)
    served = inference.submit(sent[-1])  # the same envelope again: refused, not served twice
    assert isinstance(_refused(served), trusted_errors.VoucherStale)

    # Many in flight at once over one client: each gets its own answer.
    others = [_client(deployment, _transport(inference, [])) for _ in range(4)]
    for other in others:
        other.deposit(model_id, 5 * PRICE, inference.signer)
    answers: list[object] = [None] * len(others)

    def ask(i: int) -> None:
        answers[i] = others[i].query(model_id, _rows(2, seed=i), enclave=inference.signer).values.shape

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(others))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert answers == [(2, 2)] * len(others)

    # Through a gateway relaying to the service: the same answer format, the channel's totals advance.
    with _gateway(deployment, inference, tmp_path) as http:
        assert http.get(f"/api/models/{model_id}").json()["serving_enclave"] == inference.signer
        via_gateway = InferenceClient(
            client.account, model_market=deployment.model_market, registry=deployment.registry, transport=gateway_transport(http)
        )
        via_gateway.book = client.book  # the same client, its totals where the first transport left them
        assert via_gateway.query(model_id, _rows(2, seed=9), enclave=inference.signer).values.shape == (2, 2)
        raw = http.post("/api/inference", content=build_request(
            client.account, _rows(1), model_id=model_id, enclave=inference.signer,
            enclave_key=deployment.registry.enclave_of(inference.signer).encryption_key, price_per_query=PRICE, book=client.book,
        ).envelope, headers=OCTETS)  # fmt: skip
        assert raw.status_code == 200
        body = raw.json()
        assert set(body) == {"request_id", "response", "receipt_signature", "enclave", "amount_wei", "queries"}
        assert body["enclave"] == inference.signer and body["amount_wei"] == str(6 * PRICE) and body["queries"] == 6


def test_refusals_keep_their_class_message_and_status(deployment: Deployment, host: Host, tmp_path: Path) -> None:
    inference, model_id, url = host.inference, host.listed.model_id, str(host.service.url)
    enclave_key = deployment.registry.enclave_of(inference.signer).encryption_key
    sent: list[bytes] = []
    client = _client(deployment, _transport(inference, sent))
    with pytest.raises(trusted_errors.VoucherOverDeposit):  # no credit yet: 402 at the service
        client.query(model_id, _rows(1), enclave=inference.signer)
    client.deposit(model_id, 5 * PRICE, inference.signer)
    client.query(model_id, _rows(1), enclave=inference.signer)
    replay = sent[-1]

    remote = _refused(inference.submit(replay))
    direct = httpx.post(f"{url}/infer", content=replay, headers=OCTETS, timeout=30)
    assert type(remote) is trusted_errors.VoucherStale and str(remote)
    assert direct.status_code == 402 and direct.json() == {"error": "VoucherStale", "detail": str(remote)}

    # A model that is not listed: 404 ModelUnavailable, the host's message.
    book = VoucherBook(chain_id=deployment.chain.chain_id, model_market=deployment.model_market.address)
    missing = build_request(
        client.account, _rows(1), model_id=model_id + 1000, enclave=inference.signer, enclave_key=enclave_key, price_per_query=PRICE,
        book=book,
    ).envelope  # fmt: skip
    unlisted = _refused(inference.submit(missing))
    assert type(unlisted) is ModelUnavailable and str(unlisted).startswith(f"there is no model {model_id + 1000} on model market")
    direct = httpx.post(f"{url}/infer", content=missing, headers=OCTETS, timeout=30)
    assert direct.status_code == 404 and direct.json() == {"error": "ModelUnavailable", "detail": str(unlisted)}

    # A garbage envelope: refused by the client before anything is sent, and by the service with 400.
    garbage = b"x" * 64
    malformed = _refused(lambda: inference.submit(garbage))
    direct = httpx.post(f"{url}/infer", content=garbage, headers=OCTETS, timeout=30)
    assert type(malformed) is trusted_errors.EnvelopeMalformed
    assert direct.status_code == 400 and direct.json() == {"error": "EnvelopeMalformed", "detail": str(malformed)}

    # Behind a gateway, the statuses and messages of the in-process host.
    with _gateway(deployment, inference, tmp_path) as http:
        stale = http.post("/api/inference", content=replay, headers=OCTETS)
        assert stale.status_code == 402 and stale.json() == {"error": "VoucherStale", "detail": str(remote)}
        gone = http.post("/api/inference", content=missing, headers=OCTETS)
        assert gone.status_code == 404 and str(unlisted) in gone.text


def test_a_client_over_its_rate_is_told_when_to_come_back(deployment: Deployment, host: Host, tmp_path: Path) -> None:
    inference, url = host.inference, str(host.service.url)
    account = deployment.chain.new_account()  # a client with no credit: each request is refused 402 while its burst lasts
    envelope = build_request(
        account, _rows(1), model_id=host.listed.model_id, enclave=inference.signer,
        enclave_key=deployment.registry.enclave_of(inference.signer).encryption_key, price_per_query=PRICE,
        book=VoucherBook(chain_id=deployment.chain.chain_id, model_market=deployment.model_market.address),
    ).envelope  # fmt: skip
    with httpx.Client(base_url=url, timeout=30) as http:
        statuses = [http.post("/infer", content=envelope, headers=OCTETS) for _ in range(CLIENT_BURST + 2)]
    assert [s.status_code for s in statuses[:CLIENT_BURST]] == [402] * CLIENT_BURST
    limited = statuses[-1]
    assert limited.status_code == 429 and limited.json()["error"] == "RateLimited"
    assert 0 < limited.json()["retry_after"] <= 1 / CLIENT_RATE and int(limited.headers["Retry-After"]) >= 1
    assert limited.json()["detail"] == f"client {account.address} is over {CLIENT_RATE:g} requests per second"

    remote = _refused(inference.submit(envelope))
    assert type(remote) is RateLimited and str(remote) == limited.json()["detail"]
    assert isinstance(remote, RateLimited) and 0 < remote.retry_after <= 1 / CLIENT_RATE
    with _gateway(deployment, inference, tmp_path) as gateway:
        relayed = gateway.post("/api/inference", content=envelope, headers=OCTETS)
        assert relayed.status_code == 429 and int(relayed.headers["Retry-After"]) >= 1


def test_sterling_gateway_relays_to_it_given_its_url(deployment: Deployment, host: Host, tmp_path: Path) -> None:
    """``sterling gateway --inference URL``: a gateway process relays ``/api/inference`` to the service and names its enclave."""
    inference, model_id = host.inference, host.listed.model_id
    database = f"sqlite:///{tmp_path / 'index.db'}"
    IndexDatabase(database).create_schema()  # another process indexes; here nothing needs to be
    port = free_port()
    args = [
        "gateway", *deployment.network.chain_args(), "--blobs", str(deployment.blobs.root), "--port", str(port),
        "--inference", str(host.service.url),
    ]  # fmt: skip
    with Composition(deployment.network, tmp_path) as services:
        gateway = services.spawn("gateway", args, url=f"http://127.0.0.1:{port}", env={DATABASE_URL_ENV: database})
        gateway.wait_healthy("/api/health")
        with httpx.Client(base_url=str(gateway.url), timeout=30) as http:
            assert http.get(f"/api/models/{model_id}").json()["serving_enclave"] == inference.signer
            client = _client(deployment, gateway_transport(http))
            client.deposit(model_id, 5 * PRICE, inference.signer)
            assert client.query(model_id, _rows(2, seed=3), enclave=inference.signer).values.shape == (2, 2)
            sent: list[bytes] = []
            replaying = InferenceClient(
                client.account, model_market=deployment.model_market, registry=deployment.registry, transport=_transport(inference, sent)
            )
            replaying.book = client.book
            replaying.query(model_id, _rows(1), enclave=inference.signer)  # straight to the service
            stale = http.post("/api/inference", content=sent[-1], headers=OCTETS)  # the same envelope through the gateway process
            assert stale.status_code == 402 and stale.json()["error"] == "VoucherStale"


def test_sigterm_stops_it_and_it_redeems_what_it_served(deployment: Deployment, host: Host) -> None:
    """Last: it stops the module's host. The operator redeems on stop (its interval is longer than the test)."""
    inference, model_id = host.inference, host.listed.model_id
    client = _client(deployment, _transport(inference, []))
    client.deposit(model_id, 10 * PRICE, inference.signer)
    client.query(model_id, _rows(3), enclave=inference.signer)
    client.query(model_id, _rows(1), enclave=inference.signer)
    market = deployment.model_market
    assert market.channel(model_id, client.account.address).redeemed == 0
    operator_credits = market.credits(host.operator.address)

    assert host.service.stop() == 0
    channel = market.channel(model_id, client.account.address)
    assert channel.redeemed == 4 * PRICE and channel.redeemed_queries == 4
    assert market.credits(host.operator.address) > operator_credits  # the operator's fee
    assert f"redeemed 4 queries of model {model_id}" in host.service.tail(20_000)
    with pytest.raises(ServiceUnreachable):
        inference.submit(_unpaid_envelope(deployment, host)).result(timeout=30)
    with pytest.raises(ServiceUnreachable):
        RemoteInference(str(host.service.url))


def _unpaid_envelope(deployment: Deployment, host: Host) -> bytes:
    book = VoucherBook(chain_id=deployment.chain.chain_id, model_market=deployment.model_market.address)
    return build_request(
        deployment.chain.new_account(fund=Wei(0)), _rows(1), model_id=host.listed.model_id, enclave=host.inference.signer,
        enclave_key=deployment.registry.enclave_of(host.inference.signer).encryption_key, price_per_query=PRICE, book=book,
    ).envelope  # fmt: skip
