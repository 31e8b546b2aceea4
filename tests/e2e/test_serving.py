"""Private ML-as-a-service end to end: an owner lists a sealed model, a client buys credit and asks it
through the gateway (SDK → gateway → inference host → enclave → back), the operator redeems the
latest voucher once for many queries and the owner withdraws (issue 15)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from sklearn.datasets import load_digits

from enclave_worker.trusted import errors as trusted_errors
from enclave_worker.trusted.dataset import Schema
from enclave_worker.trusted.models import ModelSpec, build_model
from enclave_worker.trusted.onchain import OutputPolicy
from enclave_worker.trusted.receipt import DepositExists, DepositSignatureInvalid
from marketplace.errors import ConfigError, ContractReverted, KeyReleaseRefused, KeyUnwrapFailed, ResponseRejected
from marketplace.gateway_client import GatewayModelKeys, GatewayModelStore
from marketplace.inference import seal_model, sign_model_deposit
from marketplace.serving import Answer, BlobModelStore, InferenceClient, ServingUnavailable, gateway_transport, list_model, model_weights
from sterling.gateway import create_app
from sterling.localnet import LocalNet, LocalServing, start_serving
from tests.gateway.conftest import TEST_HOSTS, make_gateway

PRICE = 10**12
DIGITS_SCHEMA = Schema(
    task="classification", feature_names=tuple(f"px{i}" for i in range(64)), feature_shape=(64,),
    class_names=tuple(str(d) for d in range(10)),
)  # fmt: skip


def _trained_digits_model(seed: int = 0) -> tuple[torch.nn.Module, ModelSpec, np.ndarray, np.ndarray]:
    """A small MLP trained plainly on the digits (the owner's own model, trained off-chain)."""
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    spec = ModelSpec(architecture="mlp", hidden_sizes=(32,), epochs=1, batch_size=64, learning_rate=0.01, max_grad_norm=1.0, seed=seed)
    torch.manual_seed(seed)
    model = build_model(spec, DIGITS_SCHEMA)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    for _ in range(60):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(xt), yt).backward()
        optimizer.step()
    model.eval()
    return model, spec, x, y


@pytest.fixture(scope="module")
def serving(localnet: LocalNet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServing]:
    served = start_serving(localnet, tmp_path_factory.mktemp("serving"), max_wait=0.001)
    yield served
    served.close()


def _client(localnet: LocalNet, serving: LocalServing, http: TestClient) -> InferenceClient:
    account = localnet.chain.new_account()
    return InferenceClient(account, model_market=serving.model_market, registry=localnet.registry, transport=gateway_transport(http))


def _gateway_client(localnet: LocalNet, serving: LocalServing, tmp_path: Path) -> TestClient:
    gateway = make_gateway(localnet, tmp_path)
    services = dataclasses.replace(
        gateway.services, model_market=serving.model_market, model_keys=serving.model_keys, inference=serving.inference
    )
    app = create_app(gateway.settings, services=services)
    assert gateway.settings.allowed_hosts == TEST_HOSTS
    return TestClient(app, base_url="http://127.0.0.1:8000", client=("127.0.0.1", 50000))


def test_a_listed_model_answers_as_torch_does_and_is_paid_per_query(
    localnet: LocalNet, serving: LocalServing, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    model, spec, x, _ = _trained_digits_model()
    weights = model_weights(model, spec, DIGITS_SCHEMA)
    owner = localnet.chain.new_account()
    listed = list_model(
        weights, spec, owner, price_per_query=PRICE, output_policy=OutputPolicy.LABEL, output_param=0, query_cap=5000,
        model_market=serving.model_market, registry=localnet.registry, key_manager=serving.model_keys, store=BlobModelStore(localnet.blobs),
    )  # fmt: skip
    http = _gateway_client(localnet, serving, tmp_path)
    catalogue = http.get("/api/models").json()
    assert any(m["model_id"] == listed.model_id and m["output_policy"] == "label" for m in catalogue)
    detail = http.get(f"/api/models/{listed.model_id}").json()
    assert listed.sealed is not None
    assert detail["serving_enclave"] == serving.inference.signer and detail["weights_hash"] == "0x" + listed.sealed.weights_hash.hex()

    client = _client(localnet, serving, http)
    enclave = detail["serving_enclave"]
    client.deposit(listed.model_id, 2000 * PRICE, enclave)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x[:1000])).argmax(dim=1).numpy()
    answered = client.query_many(listed.model_id, x[:1000], enclave=enclave, batch_rows=250)
    assert np.array_equal(answered, expected)  # the served predictions equal native torch's on 1,000 rows
    single = client.query(listed.model_id, x[1000:1001], enclave=enclave)
    assert single.values.tolist() == model(torch.from_numpy(x[1000:1001])).argmax(dim=1).tolist()

    # One redemption pays for all 1,001 queries; the owner gets the price less the operator's fee.
    fee_bps = serving.model_market.operator_fee_bps()
    owner_before = serving.model_market.credits(owner.address)
    (redemption,) = serving.inference.redeem()
    assert redemption.queries == 1001 and redemption.amount == 1001 * PRICE
    assert redemption.fee == 1001 * PRICE * fee_bps // 10_000
    assert serving.model_market.credits(owner.address) - owner_before == 1001 * PRICE - redemption.fee
    channel = http.get(f"/api/models/{listed.model_id}/channels/{client.account.address}").json()
    assert channel["redeemed_queries"] == 1001 and int(channel["balance_wei"]) == 999 * PRICE
    assert serving.inference.redeem() == []  # nothing new to redeem: a voucher is never paid twice
    withdrawn, _ = serving.model_market.withdraw(owner)
    assert withdrawn >= 1001 * PRICE - redemption.fee

    # Neither the weights nor a client's rows appear in plaintext anywhere the host or gateway keeps or logs.
    assert all(weights not in blob and weights[-4096:] not in blob for blob in _blobs(localnet))
    assert x[:4].tobytes() not in caplog.text.encode() and weights[-64:].hex() not in caplog.text


def _blobs(net: LocalNet) -> Iterator[bytes]:
    for path in Path(net.blobs.root).rglob("*"):
        if path.is_file():
            yield path.read_bytes()


def test_refused_requests_charge_nothing_and_get_their_status(localnet: LocalNet, serving: LocalServing, tmp_path: Path) -> None:
    model, spec, x, _ = _trained_digits_model(seed=1)
    owner = localnet.chain.new_account()
    listed = list_model(
        model_weights(model, spec, DIGITS_SCHEMA), spec, owner, price_per_query=PRICE, output_policy=OutputPolicy.PROBABILITIES,
        output_param=3, query_cap=10, model_market=serving.model_market, registry=localnet.registry,
        key_manager=serving.model_keys, store=BlobModelStore(localnet.blobs),
    )  # fmt: skip
    http = _gateway_client(localnet, serving, tmp_path)
    sent: list[bytes] = []
    transport = gateway_transport(http)

    def recording(envelope: bytes) -> Answer:
        sent.append(envelope)
        return transport(envelope)

    client = InferenceClient(
        localnet.chain.new_account(), model_market=serving.model_market, registry=localnet.registry, transport=recording
    )
    enclave = serving.inference.signer
    with pytest.raises(trusted_errors.VoucherOverDeposit):  # no credit yet
        client.query(listed.model_id, x[:2], enclave=enclave)
    client.deposit(listed.model_id, 5 * PRICE, enclave)
    probabilities = client.query(listed.model_id, x[:2], enclave=enclave).values
    assert probabilities.shape == (2, 10) and np.allclose(probabilities.sum(axis=1), 1.0, atol=0.01)
    assert np.allclose(probabilities, np.round(torch.softmax(model(torch.from_numpy(x[:2])), dim=1).detach().numpy(), 3), atol=1e-6)

    # A replayed envelope is stale: 402 and nothing served.
    replay = http.post("/api/inference", content=sent[-1], headers={"Content-Type": "application/octet-stream"})
    assert replay.status_code == 402 and replay.json()["error"] == "VoucherStale"
    # A tampered ciphertext: 400, nothing served or charged; the next request still goes through.
    pending_tamper = bytearray(sent[-1])
    pending_tamper[-1] ^= 1
    tampered = http.post("/api/inference", content=bytes(pending_tamper), headers={"Content-Type": "application/octet-stream"})
    assert tampered.status_code in (400, 402)
    assert client.query(listed.model_id, x[2:3], enclave=enclave).values.shape == (1, 10)
    # Over the deposit: 5 rows paid for, 3 asked so far.
    with pytest.raises(trusted_errors.VoucherOverDeposit):
        client.query(listed.model_id, x[3:6], enclave=enclave)
    client.deposit(listed.model_id, 20 * PRICE, enclave)
    serving.inference._channels.clear()  # the host re-reads the channel (it does so itself within a second)
    client.query(listed.model_id, x[3:10], enclave=enclave)  # 10 rows: the cap
    with pytest.raises(trusted_errors.QueryCapExceeded):
        client.query(listed.model_id, x[10:11], enclave=enclave)
    assert serving.model_market.channel(listed.model_id, client.account.address).redeemed == 0
    (redemption,) = [r for r in serving.inference.redeem() if r.model_id == listed.model_id]
    assert redemption.queries == 10 and redemption.amount == 10 * PRICE

    # Wrong content type and a garbage body are refused before anything reaches the enclave.
    assert http.post("/api/inference", content=b"x" * 10, headers={"Content-Type": "text/plain"}).status_code == 415
    assert http.post("/api/inference", content=b"x" * 10, headers={"Content-Type": "application/octet-stream"}).status_code == 400


def test_a_forged_receipt_is_rejected_by_the_sdk(localnet: LocalNet, serving: LocalServing, tmp_path: Path) -> None:
    model, spec, x, _ = _trained_digits_model(seed=2)
    owner = localnet.chain.new_account()
    listed = list_model(
        model_weights(model, spec, DIGITS_SCHEMA), spec, owner, price_per_query=PRICE, output_policy=OutputPolicy.TOP_K,
        output_param=3, query_cap=100, model_market=serving.model_market, registry=localnet.registry,
        key_manager=serving.model_keys, store=BlobModelStore(localnet.blobs),
    )  # fmt: skip
    http = _gateway_client(localnet, serving, tmp_path)
    honest = gateway_transport(http)
    forger = localnet.chain.new_account()

    def forging(envelope: bytes) -> Answer:  # a host that answers but re-signs the receipt with its own key
        answer = honest(envelope)
        return Answer(response=answer.response, receipt_signature=bytes(forger.unsafe_sign_hash(b"\x01" * 32).signature))

    client = InferenceClient(localnet.chain.new_account(), model_market=serving.model_market, registry=localnet.registry, transport=forging)
    client.deposit(listed.model_id, 10 * PRICE, serving.inference.signer)
    with pytest.raises(ResponseRejected):
        client.query(listed.model_id, x[:1], enclave=serving.inference.signer)
    top3 = InferenceClient(client.account, model_market=serving.model_market, registry=localnet.registry, transport=honest)
    top3.sync(listed.model_id)
    top3.book = client.book  # the forged answer was still served and charged: continue from the same totals
    values = top3.query(listed.model_id, x[1:2], enclave=serving.inference.signer).values
    logits = model(torch.from_numpy(x[1:2])).detach()
    assert values.tolist() == torch.topk(logits, 3, dim=1).indices.tolist()


def test_a_full_queue_and_a_fast_client_get_retry_after(localnet: LocalNet, tmp_path: Path) -> None:
    """Backpressure: beyond the queue, 503 with Retry-After; beyond a client's rate, 429; nothing is served or charged."""
    served = start_serving(localnet, tmp_path / "busy", queue_limit=2, client_rate=0.01, client_burst=3)
    try:
        model, spec, x, _ = _trained_digits_model(seed=3)
        listed = list_model(
            model_weights(model, spec, DIGITS_SCHEMA), spec, localnet.chain.new_account(), price_per_query=PRICE,
            output_policy=OutputPolicy.LABEL, output_param=0, query_cap=100, model_market=served.model_market,
            registry=localnet.registry, key_manager=served.model_keys, store=BlobModelStore(localnet.blobs),
        )  # fmt: skip
        http = _gateway_client(localnet, served, tmp_path)
        envelopes: list[bytes] = []
        accounts = [localnet.chain.new_account() for _ in range(5)]

        def capture(envelope: bytes) -> Answer:
            envelopes.append(envelope)
            raise ServingUnavailable("captured, not sent")

        for account in accounts:
            client = InferenceClient(account, model_market=served.model_market, registry=localnet.registry, transport=capture)
            with pytest.raises(ServingUnavailable):
                client.query(listed.model_id, x[:1], enclave=served.inference.signer)
        headers = {"Content-Type": "application/octet-stream"}
        with served.inference.enclave.process._lock:  # the enclave is busy: the dispatcher holds one request, the queue fills
            first = served.inference.submit(envelopes[0])
            deadline = time.monotonic() + 5
            while served.inference._queue.qsize() and time.monotonic() < deadline:
                time.sleep(0.01)
            queued = [served.inference.submit(e) for e in envelopes[1:3]]
            busy = http.post("/api/inference", content=envelopes[3], headers=headers)
            assert busy.status_code == 503 and int(busy.headers["Retry-After"]) >= 1
        for future in (first, *queued):  # refused for lack of credit, but answered: the queue drains
            with pytest.raises(trusted_errors.VoucherOverDeposit):
                future.result(timeout=30)
        # Rate: a burst of 3, then one per 100 s; a fresh client's 4th request is refused before the queue.
        statuses = [http.post("/api/inference", content=envelopes[4], headers=headers).status_code for _ in range(4)]
        assert statuses[:3] == [402, 402, 402] and statuses[3] == 429
        assert all(served.model_market.channel(listed.model_id, a.address).redeemed == 0 for a in accounts)
    finally:
        served.close()


def test_the_host_reads_a_known_channel_once_and_follows_the_chain_by_its_events(localnet: LocalNet, tmp_path: Path) -> None:
    """Chain state off the hot path: requests on a known channel make no chain reads; a top-up, a
    redemption and a pause reach the host through the market's logs within a few watcher periods,
    although the time-based re-reads are set to a minute."""
    served = start_serving(localnet, tmp_path / "watched", channel_seconds=0.2, terms_seconds=60)
    try:
        model, spec, x, _ = _trained_digits_model(seed=5)
        owner = localnet.chain.new_account()
        listed = list_model(
            model_weights(model, spec, DIGITS_SCHEMA), spec, owner, price_per_query=PRICE, output_policy=OutputPolicy.LABEL,
            output_param=0, query_cap=1000, model_market=served.model_market, registry=localnet.registry,
            key_manager=served.model_keys, store=BlobModelStore(localnet.blobs),
        )  # fmt: skip
        client = InferenceClient(
            localnet.chain.new_account(), model_market=served.model_market, registry=localnet.registry,
            transport=gateway_transport(_gateway_client(localnet, served, tmp_path)),
        )  # fmt: skip
        enclave = served.inference.signer
        client.deposit(listed.model_id, 4 * PRICE, enclave)
        reads: list[int] = []  # the deposit each chain read of the channel saw
        market_channel = served.model_market.channel

        def counted(model_id: int, address: str) -> object:
            channel = market_channel(model_id, address)
            reads.append(int(channel.deposited))
            return channel

        served.model_market.channel = counted  # type: ignore[method-assign]
        client.query(listed.model_id, x[:1], enclave=enclave)
        assert reads and set(reads) == {4 * PRICE}  # the first request reads its channel (the watcher may too, for the deposit)
        time.sleep(0.6)  # the watcher catches up with the blocks before (it may re-read once for the deposit's event)
        settled = len(reads)
        for i in range(1, 3):  # over several watcher periods with no event: no read
            time.sleep(0.3)
            client.query(listed.model_id, x[i : i + 1], enclave=enclave)
        assert len(reads) == settled

        def eventually(condition: object, what: str) -> None:
            deadline = time.monotonic() + 10
            while not condition():  # type: ignore[operator]
                assert time.monotonic() < deadline, what
                time.sleep(0.05)

        client.deposit(listed.model_id, 10 * PRICE, enclave)  # a top-up: the Deposited event re-reads the channel
        eventually(lambda: reads[-1] == 14 * PRICE, "the host did not re-read the channel after a deposit")
        settled = len(reads)
        client.query(listed.model_id, x[3:10], enclave=enclave)  # 10 rows in all, above the first deposit
        assert len(reads) == settled  # served from the refreshed state, no refusal and no read on the way
        served.model_market.pause(owner, listed.model_id)  # ModelStatusChanged: the listing is read again on its next request
        eventually(lambda: listed.model_id not in served.inference._loaded, "the host did not drop the paused model")
        with pytest.raises(ServingUnavailable, match="paused"):
            client.query(listed.model_id, x[10:11], enclave=enclave)
    finally:
        served.close()


def test_the_cli_publishes_a_model_and_answers_a_csv(localnet: LocalNet, serving: LocalServing, tmp_path: Path) -> None:
    """``sterling models publish``, ``sterling models list`` and ``sterling infer`` against a real HTTP gateway."""
    import threading

    import uvicorn
    from typer.testing import CliRunner

    from marketplace.chain import free_port
    from sterling.cli import app as cli

    gateway = make_gateway(localnet, tmp_path / "gw")
    services = dataclasses.replace(
        gateway.services, model_market=serving.model_market, model_keys=serving.model_keys, inference=serving.inference
    )
    port = free_port()
    settings = gateway.settings.model_copy(update={"allowed_hosts": (*TEST_HOSTS, f"127.0.0.1:{port}")})
    server = uvicorn.Server(uvicorn.Config(create_app(settings, services=services), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        model, spec, x, _ = _trained_digits_model(seed=4)
        weights_file = tmp_path / "model.safetensors"
        weights_file.write_bytes(model_weights(model, spec, DIGITS_SCHEMA))
        owner, client = localnet.chain.new_account(), localnet.chain.new_account()
        runner = CliRunner()
        # The owner signs with a keystore account (`sterling account import`), the client with STERLING_PRIVATE_KEY.
        key_file, password_file = tmp_path / "owner.key", tmp_path / "password"
        key_file.write_text(owner.key.hex())
        password_file.write_text("owner's password")
        keys_env = {"STERLING_KEYSTORE_DIR": str(tmp_path / "keystores")}
        imported = runner.invoke(
            cli, ["account", "import", "owner", "--private-key-file", str(key_file), "--password-file", str(password_file), "--light-kdf"],
            env=keys_env,
        )  # fmt: skip
        assert imported.exit_code == 0, imported.output
        published = runner.invoke(
            cli, ["models", "publish", str(weights_file), "--price", str(PRICE), "--cap", "500", "--policy", "top_k", "--param", "2",
                  "--gateway", url, "--account", "owner", "--password-file", str(password_file)], env=keys_env,
        )  # fmt: skip
        assert published.exit_code == 0, published.output
        model_id = int(published.output.split("listed model ")[1].split(":")[0])
        listed = runner.invoke(cli, ["models", "list", "--gateway", url])
        assert listed.exit_code == 0 and "top_k 2" in listed.output
        listed_json = runner.invoke(cli, ["models", "list", "--gateway", url, "--json"])
        assert listed_json.exit_code == 0 and model_id in [m["model_id"] for m in json.loads(listed_json.output)]

        rows_csv = tmp_path / "rows.csv"
        rows_csv.write_text(",".join(f"px{i}" for i in range(64)) + "\n" + "\n".join(",".join(f"{v:.6g}" for v in row) for row in x[:300]))
        out = tmp_path / "predictions.csv"
        env = {"STERLING_PRIVATE_KEY": client.key.hex()}
        poor = runner.invoke(cli, ["infer", str(model_id), str(rows_csv), "--out", str(out), "--gateway", url], env=env)
        assert poor.exit_code == 1 and "not enough credit" in poor.output and not out.exists()
        answered = runner.invoke(
            cli, ["infer", str(model_id), str(rows_csv), "--out", str(out), "--gateway", url, "--deposit", str(400 * PRICE),
                  "--batch-rows", "128"], env=env,
        )  # fmt: skip
        assert answered.exit_code == 0, answered.output
        lines = out.read_text().splitlines()
        assert lines[0] == "top_1,top_2" and len(lines) == 301
        expected = torch.topk(model(torch.from_numpy(x[:300])).detach(), 2, dim=1).indices.tolist()
        assert [[int(v) for v in line.split(",")] for line in lines[1:]] == expected
        # The operator redeems what the CLI's client owes: one transaction, then nothing is left.
        state_dir = serving.inference.vouchers.path.parent.parent
        operator_env = {"STERLING_PRIVATE_KEY": serving.operator.key.hex()}
        assert serving.model_market.channel(model_id, client.address).redeemed == 0
        redeemed = runner.invoke(cli, ["models", "redeem", "--state-dir", str(state_dir), "--gateway", url], env=operator_env)
        assert redeemed.exit_code == 0, redeemed.output
        channel = serving.model_market.channel(model_id, client.address)
        assert channel.redeemed == 300 * PRICE and channel.redeemed_queries == 300
        again = runner.invoke(cli, ["models", "redeem", "--state-dir", str(state_dir), "--gateway", url], env=operator_env)
        assert again.exit_code == 0 and "redeemed 0 of" in again.output, again.output
        nowhere = runner.invoke(cli, ["models", "redeem", "--state-dir", str(tmp_path / "none"), "--gateway", url], env=operator_env)
        assert nowhere.exit_code == 2 and "no voucher ledger" in " ".join(nowhere.output.replace("│", " ").split())
        bad = tmp_path / "bad.csv"
        bad.write_text("1,2,3\n4,five,6\n")
        refused = runner.invoke(cli, ["infer", str(model_id), str(bad), "--gateway", url], env=env)
        assert refused.exit_code == 2 and "row 2 is not 3 numbers" in " ".join(refused.output.replace("│", " ").split())
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        gateway.index.close()


def test_a_debug_serving_session_leaks_no_weights_or_rows_and_revocation_stops_the_keys(
    localnet: LocalNet, tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A whole session — list, deposit, query, redeem — with every log at DEBUG (the gateway's, the hosts',
    the enclaves' stderr): neither the weights nor a client's rows appear in plaintext in any log, the
    blob store, the index database or the hosts' state; then governance revokes the inference enclave
    and the key manager refuses it the model key, as it refuses a trainer."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("STERLING_ENCLAVE_LOG", "DEBUG")
    served = start_serving(localnet, tmp_path / "debug")
    try:
        model, spec, x, _ = _trained_digits_model(seed=5)
        weights = model_weights(model, spec, DIGITS_SCHEMA)
        listed = list_model(
            weights, spec, localnet.chain.new_account(), price_per_query=PRICE, output_policy=OutputPolicy.PROBABILITIES,
            output_param=6, query_cap=1000, model_market=served.model_market, registry=localnet.registry,
            key_manager=served.model_keys, store=BlobModelStore(localnet.blobs),
        )  # fmt: skip
        gateway = make_gateway(localnet, tmp_path / "gw")
        app = create_app(gateway.settings, services=dataclasses.replace(
            gateway.services, model_market=served.model_market, model_keys=served.model_keys, inference=served.inference,
        ))  # fmt: skip
        http = TestClient(app, base_url="http://127.0.0.1:8000", client=("127.0.0.1", 50000))
        client = InferenceClient(
            localnet.chain.new_account(), model_market=served.model_market, registry=localnet.registry, transport=gateway_transport(http)
        )
        client.deposit(listed.model_id, 100 * PRICE, served.inference.signer)
        rows = x[:50]
        client.query(listed.model_id, rows, enclave=served.inference.signer)
        served.inference.redeem()
        gateway.sync()

        secrets = [weights[-256:], weights[len(weights) // 2 : len(weights) // 2 + 256], rows.tobytes()[:256], rows[7].tobytes()]
        texts = caplog.text + capfd.readouterr().err
        assert "DEBUG" in texts or caplog.records, "nothing was logged at DEBUG: the scan would prove nothing"
        for secret in secrets:
            assert secret.hex() not in texts and secret not in texts.encode(errors="ignore")
        stores = [localnet.blobs.root, tmp_path / "debug", tmp_path / "gw", localnet.key_manager.state_dir]
        for root in stores:
            for path in Path(root).rglob("*"):
                if path.is_file():
                    data = path.read_bytes()
                    assert not any(secret in data for secret in secrets), path

        # Revocation: the key manager refuses the revoked enclave a model key, as it refuses a trainer.
        with pytest.raises(KeyReleaseRefused, match="not an active inference enclave"):
            served.model_keys.release(model_id=listed.model_id, enclave=localnet.worker.signer)
        localnet.registry.revoke_enclave(localnet.governance, served.inference.signer)
        with pytest.raises(KeyReleaseRefused, match="not an active inference enclave"):
            served.model_keys.release(model_id=listed.model_id, enclave=served.inference.signer)
        with pytest.raises(ConfigError, match="not an active inference enclave"):
            stranger = InferenceClient(
                localnet.chain.new_account(), model_market=served.model_market, registry=localnet.registry,
                transport=gateway_transport(http),
            )  # fmt: skip
            stranger.enclave(served.inference.signer)
        audit = [e for e in localnet.key_manager.audit.entries() if e.kind == "model_release" and e.dataset_id == listed.model_id]
        assert [e.released for e in audit][-2:] == [False, False] and any(e.released for e in audit)
    finally:
        served.close()


def test_a_model_trained_here_is_sold_as_a_service_without_anyone_holding_its_weights(
    localnet: LocalNet, serving: LocalServing, tmp_path: Path
) -> None:
    """A consumer has its job's model sealed to the key manager; the key manager takes it from the
    sealed result, the consumer lists it from its job (the listing shows the job's ε and δ), and a
    client's queries are answered by the inference enclave. The consumer never had the weights."""
    from marketplace.consumer import Consumer
    from marketplace.errors import JobNotReady
    from marketplace.provider import list_dataset
    from marketplace.serving import list_job_model
    from tests.conftest import toy_package, toy_spec, toy_terms

    provider = localnet.chain.new_account()
    listed_data = list_dataset(
        toy_package(200, 11), provider, terms=toy_terms(), market=localnet.market, registry=localnet.registry,
        key_manager=localnet.key_manager, blobs=localnet.blobs,
    )  # fmt: skip
    consumer = Consumer(localnet.chain.new_account(), market=localnet.market, blobs=localnet.blobs)
    km_key = localnet.registry.active_key_manager_key(localnet.key_manager.signer)
    created = consumer.create_job(
        [listed_data.dataset_id], toy_spec(epochs=2), epsilon=1.0, delta=1e-5, worker_fee=10**16, seal_to=km_key  # type: ignore[arg-type]
    )
    with pytest.raises(JobNotReady):
        serving.model_keys.deposit_from_job(created.job_id)
    localnet.worker.run_job(created.job_id)
    with pytest.raises(KeyUnwrapFailed):
        consumer.fetch_model(created.job_id)  # sealed to the key manager: the consumer cannot open it

    listing = list_job_model(
        consumer.account, created.job_id, price_per_query=PRICE, output_policy=OutputPolicy.PROBABILITIES, output_param=4,
        query_cap=100, market=localnet.market, model_market=serving.model_market, key_manager=serving.model_keys,
    )  # fmt: skip
    job = localnet.market.job(created.job_id)
    record = serving.model_market.model(listing.model_id)
    assert record.terms.source_job_id == created.job_id and record.owner == consumer.account.address
    assert record.terms.epsilon == job.epsilon_spent and record.terms.delta == job.delta
    http = _gateway_client(localnet, serving, tmp_path)
    detail = http.get(f"/api/models/{listing.model_id}").json()
    assert detail["source_job_id"] == created.job_id and detail["epsilon"] == pytest.approx(job.epsilon_spent / 10**6)
    with pytest.raises(DepositExists):
        serving.model_keys.deposit_from_job(created.job_id)  # taken once

    client = _client(localnet, serving, http)
    client.deposit(listing.model_id, 10 * PRICE, serving.inference.signer)
    rows = toy_package(5, 12).features
    probabilities = client.query(listing.model_id, rows, enclave=serving.inference.signer).values
    assert probabilities.shape == (5, 2) and np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-3)

    # A job whose model went to its consumer cannot be taken for serving.
    own = Consumer(localnet.chain.new_account(), market=localnet.market, blobs=localnet.blobs)
    mine = own.create_job([listed_data.dataset_id], toy_spec(epochs=1), epsilon=1.0, delta=1e-5, worker_fee=10**16)  # type: ignore[arg-type]
    localnet.worker.run_job(mine.job_id)
    with pytest.raises(KeyReleaseRefused, match="sealed to its consumer"):
        serving.model_keys.deposit_from_job(mine.job_id)
    assert own.fetch_model(mine.job_id) is not None


def test_a_consumer_keeps_its_model_and_sells_it_as_a_service_too(localnet: LocalNet, serving: LocalServing, tmp_path: Path) -> None:
    """'As well as to itself': the job's model is sealed to its consumer, who decrypts it and lists it
    from the job with a copy sealed to the key manager; the key manager takes the copy only if the
    job's consumer signed it and it is the receipt's model. The listing shows the job's ε and δ."""
    from marketplace.consumer import Consumer
    from marketplace.provider import list_dataset
    from marketplace.serving import list_job_model
    from tests.conftest import toy_package, toy_spec, toy_terms

    provider = localnet.chain.new_account()
    listed_data = list_dataset(
        toy_package(200, 13), provider, terms=toy_terms(), market=localnet.market, registry=localnet.registry,
        key_manager=localnet.key_manager, blobs=localnet.blobs,
    )  # fmt: skip
    consumer = Consumer(localnet.chain.new_account(), market=localnet.market, blobs=localnet.blobs)
    created = consumer.create_job([listed_data.dataset_id], toy_spec(epochs=2), epsilon=1.0, delta=1e-5, worker_fee=10**16)  # type: ignore[arg-type]
    localnet.worker.run_job(created.job_id)
    weights = consumer.fetch_weights(created.job_id)  # the consumer has its model
    store = BlobModelStore(localnet.blobs)
    common = {
        "price_per_query": PRICE, "output_policy": OutputPolicy.LABEL, "output_param": 0, "query_cap": 100, "market": localnet.market,
        "model_market": serving.model_market, "key_manager": serving.model_keys, "registry": localnet.registry, "store": store,
    }  # fmt: skip

    # Other weights than the receipt's: refused before anything is stored or signed.
    tampered = bytearray(weights)
    tampered[-1] ^= 1
    with pytest.raises(ValueError, match="not job"):
        list_job_model(consumer.account, created.job_id, weights=bytes(tampered), **common)  # type: ignore[arg-type]
    # A copy signed by someone else than the job's consumer, or of other weights, is refused by the key manager.
    km_key = localnet.registry.active_key_manager_key(serving.model_keys.signer)
    stranger = localnet.chain.new_account()
    refusals: tuple[tuple[object, bytes, type[Exception], str], ...] = (
        (stranger, weights, DepositSignatureInvalid, "not signed by the job's consumer"),
        (consumer.account, bytes(tampered), KeyReleaseRefused, "cannot be taken for serving"),
    )
    for signer, payload, refused, message in refusals:
        sealed = seal_model(payload, km_key)
        store.put_ciphertext(sealed.ciphertext)
        signature = sign_model_deposit(
            signer, sealed.content_hash, sealed.wrapped_key, key_manager=serving.model_keys.signer,  # type: ignore[arg-type]
            chain_id=localnet.chain.chain_id, model_market=serving.model_market.address,
        )  # fmt: skip
        with pytest.raises(refused, match=message):
            serving.model_keys.deposit_job_model_copy(created.job_id, sealed.content_hash, sealed.wrapped_key, signature=signature)

    # Through the gateway: a stranger's copy is refused (400); the consumer's is taken and listed.
    http = _gateway_client(localnet, serving, tmp_path)
    stranger_copy = {"content_hash": sealed.content_hash.hex(), "wrapped_key": sealed.wrapped_key.hex(), "signature": "00" * 65}
    refused_copy = http.post("/api/key-manager/job-models", json={"job_id": created.job_id, "copy": stranger_copy})
    assert refused_copy.status_code == 400, refused_copy.text
    over_http = {**common, "key_manager": GatewayModelKeys(http), "store": GatewayModelStore(http)}
    listing = list_job_model(consumer.account, created.job_id, weights=weights, **over_http)  # type: ignore[arg-type]
    job = localnet.market.job(created.job_id)
    record = serving.model_market.model(listing.model_id)
    assert record.terms.source_job_id == created.job_id and record.owner == consumer.account.address
    assert record.terms.epsilon == job.epsilon_spent and record.terms.delta == job.delta
    assert record.terms.weights_hash == hashlib.sha256(weights).digest()
    client = _client(localnet, serving, http)
    client.deposit(listing.model_id, 10 * PRICE, serving.inference.signer)
    rows = toy_package(6, 14).features
    labels = client.query(listing.model_id, rows, enclave=serving.inference.signer).values
    expected = consumer.fetch_model(created.job_id)(torch.from_numpy(rows)).argmax(dim=1).numpy()
    assert np.array_equal(labels.reshape(-1), expected)
    with pytest.raises(ContractReverted, match="ModelMarketJobAlreadyListed"):  # once per job, whichever way
        list_job_model(consumer.account, created.job_id, weights=weights, **common)  # type: ignore[arg-type]
