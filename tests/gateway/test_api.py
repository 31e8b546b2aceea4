"""The REST API over the index: filters (status too), sorts, details, timelines, cancellations, workers, payments, health, token markets, 404s."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import get_args

import httpx
from eth_account.signers.local import LocalAccount
from web3.contract import Contract

from enclave_worker.trusted import dataformat, keywrap
from enclave_worker.trusted.dataset import Schema
from enclave_worker.trusted.models import ModelSpec
from enclave_worker.trusted.onchain import DatasetStatus, JobStatus, Role
from marketplace import chain as chain_mod
from marketplace.abi import ERC20_ABI, load_artifact
from marketplace.chain import Chain
from marketplace.consumer import Consumer
from marketplace.contracts import EPSILON_SCALE
from marketplace.provider import signed_deposit
from sterling.gateway.schemas import DatasetStatusName, JobStatusName, RoleName
from sterling.localnet import bring_up
from tests.conftest import toy_spec, toy_terms
from tests.gateway.conftest import (
    Gateway,
    list_toy,
    make_gateway,
    run_toy_job,
    unique_schema,
)


def test_datasets_filter_and_sort_by_price_and_remaining_epsilon(gateway: Gateway) -> None:
    net, client = gateway.net, gateway.client
    schema = unique_schema("sortable")
    cheap, _ = list_toy(net, 41, schema=schema, price=10**16, total=4.0)
    pricey, _ = list_toy(net, 42, schema=schema, price=3 * 10**17, total=9.0)
    middle, provider = list_toy(net, 43, schema=schema, price=10**17, total=6.0)
    gateway.sync()
    base = {"schema_hash": "0x" + schema.hash().hex()}

    def ids(**params: object) -> list[int]:
        response = client.get("/api/datasets", params={**base, **params})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["total"] >= len(body["items"])
        return [d["id"] for d in body["items"]]

    assert ids(sort="price") == [cheap.dataset_id, middle.dataset_id, pricey.dataset_id]
    assert ids(sort="-price") == [pricey.dataset_id, middle.dataset_id, cheap.dataset_id]
    assert ids(sort="remaining_epsilon") == [cheap.dataset_id, middle.dataset_id, pricey.dataset_id]
    assert ids(sort="-remaining_epsilon") == [pricey.dataset_id, middle.dataset_id, cheap.dataset_id]
    assert ids(sort="listed") == [cheap.dataset_id, pricey.dataset_id, middle.dataset_id]
    assert ids(sort="price", min_price=5 * 10**16, max_price=2 * 10**17) == [middle.dataset_id]
    assert ids(sort="price", min_remaining_epsilon=5.5) == [middle.dataset_id, pricey.dataset_id]
    assert ids(provider=provider.address) == [middle.dataset_id]
    assert ids(sort="price", limit=1, offset=1) == [middle.dataset_id]
    assert client.get("/api/datasets", params={**base, "limit": 1}).json()["total"] == 3
    item = client.get("/api/datasets", params={**base, "sort": "price"}).json()["items"][0]
    assert item["price_wei"] == str(10**16) and item["total_epsilon"] == 4.0 and item["remaining_epsilon"] == 4.0
    assert item["schema_hash"] == base["schema_hash"] and item["content_hash"] == "0x" + cheap.content_hash.hex()

    # Bad parameters are refused with a message, never a 5xx.
    for params in ({"sort": "cheapest"}, {"min_price": -1}, {"schema_hash": "xyz"}, {"provider": "0x12"}, {"limit": 0}, {"min_remaining_epsilon": "nan"}):
        response = client.get("/api/datasets", params=params)
        assert response.status_code == 422 and response.json()["detail"], params


def test_dataset_and_job_details_show_budget_history_timeline_and_payments(gateway: Gateway) -> None:
    net, client = gateway.net, gateway.client
    schema = unique_schema("detail")
    listed, provider = list_toy(net, 44, schema=schema, price=2 * 10**17)
    consumer, created = run_toy_job(net, [listed.dataset_id], fee=10**16)
    job, result = net.market.job(created.job_id), net.market.result_submitted(created.job_id)
    gateway.sync()

    detail = client.get(f"/api/datasets/{listed.dataset_id}").json()
    assert detail["schema"] == schema.to_json()
    assert [(e["kind"], e["job_id"]) for e in detail["budget_history"]] == [
        ("listed", None), ("reserved", created.job_id), ("debited", created.job_id),
    ]  # fmt: skip
    assert detail["budget_history"][1]["epsilon"] == 1.0 and detail["budget_history"][1]["price_wei"] == str(2 * 10**17)
    assert {e["total_epsilon"] for e in detail["budget_history"]} == {detail["total_epsilon"]}
    assert detail["remaining_epsilon"] == detail["budget_history"][-1]["remaining_epsilon"] == net.market.remaining_epsilon(listed.dataset_id) / EPSILON_SCALE
    assert detail["job_ids"] == [created.job_id]

    body = client.get(f"/api/jobs/{created.job_id}").json()
    assert body["status"] == "completed" and body["dataset_ids"] == [listed.dataset_id] and body["prices_wei"] == [str(2 * 10**17)]
    assert body["refund_wei"] is None
    assert (body["claim_deadline"], body["lease_expiry"], body["charges"]) == (0, 0, 0)  # as job(): deadlines only while open / claimed
    assert body["enclave"] == net.worker.signer
    assert [t["stage"] for t in body["timeline"]] == ["created", "claimed", "settled"]
    assert body["timeline"][0]["amount_wei"] == str(created.escrow)
    assert body["timeline"][1]["enclave"] == net.worker.signer and body["timeline"][1]["operator"] == net.operator.address
    assert body["epsilon_spent"] == body["timeline"][2]["epsilon_spent"] == job.epsilon_spent / EPSILON_SCALE
    assert 0 < body["epsilon_spent"] <= body["epsilon"] == 1.0
    assert sorted((p["account"], p["amount_wei"], p["reason"]) for p in body["payments"]) == sorted(
        [(provider.address, str(2 * 10**17), "payout"), (net.operator.address, str(10**16), "payout")]
    )
    assert body["model_spec"]["architecture"] == "logistic_regression"
    assert body["metrics"] is not None and body["metrics_hash"] is not None
    assert body["progress"]["stage"] == "settled" and body["progress"]["epsilon_spent"] == body["epsilon_spent"]
    assert body["result_hash"] == "0x" + result.result_hash.hex() and body["model_hash"] == "0x" + result.model_hash.hex()

    sealed = client.get(f"/api/jobs/{created.job_id}/result")
    assert sealed.status_code == 200 and sealed.headers["content-type"] == "application/octet-stream"
    assert sealed.content[:4] == b"STRS" and hashlib.sha256(sealed.content).digest() == result.result_hash

    listing = client.get("/api/jobs", params={"consumer": consumer.account.address}).json()
    assert [j["id"] for j in listing["items"]] == [created.job_id] and listing["total"] == 1
    assert created.job_id in [j["id"] for j in client.get("/api/jobs", params={"dataset_id": listed.dataset_id, "status": "completed"}).json()["items"]]
    assert client.get("/api/jobs", params={"dataset_id": listed.dataset_id, "status": "open"}).json()["items"] == []


def test_payments_show_pending_balance_until_withdrawn(gateway: Gateway) -> None:
    net, client = gateway.net, gateway.client
    listed, provider = list_toy(net, 45, price=5 * 10**16)
    _, created = run_toy_job(net, [listed.dataset_id], fee=0)
    gateway.sync()
    body = client.get("/api/payments", params={"account": provider.address}).json()
    assert body["pending_wei"] == str(5 * 10**16)
    assert [(p["kind"], p["reason"], p["job_id"], p["amount_wei"]) for p in body["items"]] == [("credited", "payout", created.job_id, str(5 * 10**16))]
    net.market.withdraw(provider)
    gateway.sync()
    body = client.get("/api/payments", params={"account": provider.address}).json()
    assert body["pending_wei"] == "0" and body["total"] == 2
    assert [(p["kind"], p["reason"], p["job_id"]) for p in body["items"]] == [("withdrawn", None, None), ("credited", "payout", created.job_id)]
    assert client.get("/api/payments").json()["pending_wei"] is None


def test_a_claimed_job_shows_its_holder_and_lease_and_operators_their_stake(gateway: Gateway) -> None:
    net, client = gateway.net, gateway.client
    listed, _ = list_toy(net, 46, price=3 * 10**16)
    consumer = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs)
    created = consumer.create_job([listed.dataset_id], toy_spec(epochs=1), epsilon=1.0, delta=1e-5, worker_fee=0)  # type: ignore[arg-type]
    gateway.sync()
    body = client.get(f"/api/jobs/{created.job_id}").json()
    assert body["status"] == "open" and body["claim_deadline"] == net.market.job(created.job_id).claim_deadline > 0
    assert (body["enclave"], body["lease_expiry"], body["charges"]) == (None, 0, 0)
    net.market.claim_job(net.operator, created.job_id, net.worker.signer)
    net.market.renew_lease(net.operator, created.job_id)
    gateway.sync()
    body, view = client.get(f"/api/jobs/{created.job_id}").json(), net.market.job(created.job_id)
    assert (body["status"], body["enclave"], body["operator"]) == ("claimed", net.worker.signer, net.operator.address)
    assert (body["claim_deadline"], body["lease_expiry"], body["charges"]) == (0, view.lease_expiry, 0) and view.lease_expiry > 0
    assert [t["stage"] for t in body["timeline"]] == ["created", "claimed", "renewed"]

    stake, on_chain = client.get(f"/api/operators/{net.operator.address}/stake").json(), net.market.stake_of(net.operator.address)
    assert (stake["amount_wei"], stake["unbonding_end"], stake["slashed_wei"]) == (str(on_chain.amount), on_chain.unbonding_end, "0")
    nobody = net.chain.new_account(fund=0).address
    assert client.get(f"/api/operators/{nobody}/stake").json() == {
        "operator": nobody, "amount_wei": "0", "unbonding_end": 0, "slashed_wei": "0", "updated_block": None,
    }  # fmt: skip
    listing = client.get("/api/operators").json()
    assert net.operator.address in [s["operator"] for s in listing["items"]] and listing["total"] == len(listing["items"])
    money = listing["money"]
    assert money["conserved"] and money["total_stake_wei"] == str(net.market.total_stake())
    assert money["locked_escrow_wei"] == str(net.market.locked_escrow()) and money["balance_wei"] == str(net.chain.balance(net.market.address))
    assert client.get("/api/operators/0x1234/stake").status_code == 422


def test_workers_show_measurement_and_attestation(gateway: Gateway) -> None:
    net, client = gateway.net, gateway.client
    gateway.sync()
    workers = {w["signer"]: w for w in client.get("/api/workers").json()}
    trainer, key_manager = workers[net.worker.signer], workers[net.key_manager.signer]
    assert trainer["role"] == "trainer" and key_manager["role"] == "key_manager"
    for worker in (trainer, key_manager):
        assert worker["measurement"] == "0x" + net.measurement.hex()
        assert worker["measurement_approved"] and worker["active"] and not worker["revoked"] and worker["revoked_block"] is None
        assert worker["operator"] == net.operator.address
        assert worker["attestation"]["format"] == "sim"
        assert worker["attestation"]["verifier"] == net.verifier.signer.address
        assert worker["attestation"]["valid_until"] == worker["valid_until"] > worker["attestation"]["verified_at"]
    assert key_manager["encryption_key"] == "0x" + net.registry.enclave_of(net.key_manager.signer).encryption_key.hex()


def test_health_config_and_not_found(gateway: Gateway) -> None:
    net, client = gateway.net, gateway.client
    gateway.sync()
    health = client.get("/api/health").json()
    assert 0 <= health.pop("age_ms") < 1000
    assert health == {
        "status": "ok", "chain_id": net.chain.chain_id, "head_block": net.chain.w3.eth.block_number,
        "indexed_block": net.chain.w3.eth.block_number, "lag_blocks": 0, "market_paused": False,
    }  # fmt: skip
    config = client.get("/api/config").json()
    assert config["contracts"] == {
        "job_market": net.market.address, "enclave_registry": net.registry.address, "model_market": net.deployment.model_market,
        "competitions": net.deployment.competitions,
    }  # fmt: skip
    assert config["rpc_path"] == "/api/rpc" and config["epsilon_scale"] == 10**6 and config["delta_scale"] == 10**18
    assert config["score_scale"] == 10**6
    assert config["payment_token"] is None  # the market is paid in the native currency
    record = net.registry.enclave_of(net.key_manager.signer)
    assert config["key_manager"]["encryption_key"] == "0x" + record.encryption_key.hex()
    assert config["key_manager"]["measurement"] == "0x" + net.measurement.hex() and config["key_manager"]["active"]
    assert net.registry.is_active(config["key_manager"]["signer"], Role.KEY_MANAGER)
    (dev,) = config["dev_accounts"]
    assert dev["address"] == gateway.services.dev_accounts[0].address and net.chain.balance(dev["address"]) > 0

    for path, fragment in (
        ("/api/datasets/999999", "dataset 999999"),
        ("/api/jobs/999999", "job 999999"),
        ("/api/jobs/999999/result", "job 999999"),
        ("/api/blobs/" + "00" * 32, "no blob"),
        ("/api/nothing-here", "Not Found"),
    ):
        response = client.get(path)
        assert response.status_code == 404 and fragment in response.json()["detail"], path
    listed, _ = list_toy(net, 46)
    open_job = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs).create_job(
        [listed.dataset_id], toy_spec(), epsilon=0.5, delta=1e-5, worker_fee=0  # type: ignore[arg-type]
    )
    gateway.sync()
    response = client.get(f"/api/jobs/{open_job.job_id}/result")
    assert response.status_code == 404 and "no result yet" in response.json()["detail"]
    assert client.get(f"/api/jobs/{open_job.job_id}").json()["status"] == "open"


def test_config_serves_the_chain_statuses_roles_and_erc20_abi_from_their_one_definition(gateway: Gateway) -> None:
    net, client = gateway.net, gateway.client
    listed, _ = list_toy(net, 47)
    open_job = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs).create_job(
        [listed.dataset_id], toy_spec(), epsilon=0.5, delta=1e-5, worker_fee=0  # type: ignore[arg-type]
    )
    gateway.sync()
    config = client.get("/api/config").json()
    for served, enum_type in ((config["job_statuses"], JobStatus), (config["dataset_statuses"], DatasetStatus), (config["roles"], Role)):
        assert {enum_type[name.upper()]: number for name, number in served.items()} == {member: member.value for member in enum_type}
    assert config["job_statuses"] == {"none": 0, "open": 1, "claimed": 2, "completed": 3, "expired": 4, "cancelled": 5}
    assert config["dataset_statuses"] == {"active": 0, "paused": 1, "delisted": 2} and config["roles"] == {"trainer": 1, "key_manager": 2, "inference": 3, "evaluator": 4}
    # The names the API answers with are the served ones: what the UI reads from /api/config
    # maps a status in a REST answer to the chain's number, and back.
    assert set(get_args(JobStatusName)) == set(config["job_statuses"]) - {"none"}
    assert set(get_args(DatasetStatusName)) == set(config["dataset_statuses"]) and set(get_args(RoleName)) == set(config["roles"])
    job = client.get(f"/api/jobs/{open_job.job_id}").json()
    assert config["job_statuses"][job["status"]] == net.market.job(open_job.job_id).status == JobStatus.OPEN
    dataset = client.get(f"/api/datasets/{listed.dataset_id}").json()
    assert config["dataset_statuses"][dataset["status"]] == net.market.dataset(listed.dataset_id).status == DatasetStatus.ACTIVE
    key_manager = next(w for w in client.get("/api/workers").json() if w["signer"] == config["key_manager"]["signer"])
    assert net.registry.is_active(key_manager["signer"], Role(config["roles"][key_manager["role"]]))
    assert config["erc20_abi"] == ERC20_ABI and {f["name"] for f in config["erc20_abi"]} >= {"approve", "allowance", "balanceOf"}


def test_deposits_reach_the_key_manager_only_as_wrapped_keys(gateway: Gateway) -> None:
    net, client = gateway.net, gateway.client
    stored = net.blobs.put(dataformat.encrypt_bytes(b"rows", dataformat.new_data_key(), kind=dataformat.Kind.DATASET, context=bytes(32)))
    km_key = bytes.fromhex(client.get("/api/config").json()["key_manager"]["encryption_key"][2:])
    wrapped = keywrap.wrap(dataformat.new_data_key(), km_key, info=keywrap.datakey_info(bytes.fromhex(stored)))
    provider = net.chain.new_account()

    def signed(content_hash: str, key: bytes) -> dict[str, str]:
        signature = signed_deposit(provider, bytes.fromhex(content_hash), key, key_manager=net.key_manager.signer,
                                   chain_id=net.chain.chain_id, market=net.market.address)  # fmt: skip
        return {"content_hash": content_hash, "wrapped_key": key.hex(), "provider": provider.address, "signature": signature.hex()}

    ok = client.post("/api/key-manager/deposits", json=signed(stored, wrapped))
    assert ok.status_code == 201 and ok.json() == {
        "content_hash": "0x" + stored, "key_manager": net.key_manager.signer, "provider": provider.address}  # fmt: skip
    assert net.key_manager.deposit_path(bytes.fromhex(stored), provider.address).is_file()

    other = net.blobs.put(dataformat.encrypt_bytes(b"rows", dataformat.new_data_key(), kind=dataformat.Kind.DATASET, context=bytes(32)))
    wrong_binding = keywrap.wrap(dataformat.new_data_key(), km_key, info=keywrap.datakey_info(bytes(32)))
    refused = client.post("/api/key-manager/deposits", json=signed(other, wrong_binding))
    assert refused.status_code == 400 and "refused" in refused.json()["detail"]
    unknown = client.post("/api/key-manager/deposits", json=signed("11" * 32, wrapped))
    assert unknown.status_code == 404 and "upload it before" in unknown.json()["detail"]
    malformed = client.post("/api/key-manager/deposits", json={**signed(stored, wrapped), "wrapped_key": "xyz"})
    assert malformed.status_code == 422 and "wrapped_key" in malformed.json()["detail"]


def test_specs_and_schemas_are_validated_and_stored_canonically(gateway: Gateway) -> None:
    client = gateway.client
    spec = toy_spec()
    published = client.post("/api/specs", content=b'{"architecture": "logistic_regression", "epochs": 3, "batch_size": 32, '
                             b'"learning_rate": 0.1, "max_grad_norm": 1.0, "seed": 0}', headers={"content-type": "application/json"})  # fmt: skip
    assert published.status_code == 201 and published.json()["sha256"] == spec.hash().hex()
    assert client.get(f"/api/blobs/{spec.hash().hex()}").content == spec.to_bytes()
    invalid = client.post("/api/specs", json={"architecture": "transformer", "epochs": 1})
    assert invalid.status_code == 422 and "architecture" in invalid.json()["detail"]
    # py-evm raises the recursion limit to 100 000: without the depth guard this body would crash the process.
    for path in ("/api/specs", "/api/schemas", "/api/key-manager/deposits", "/api/rpc"):
        deep = client.post(path, content=b"[" * 200_000, headers={"content-type": "application/json"})
        assert deep.status_code == 400 and "nests deeper than" in deep.json()["detail"], path
    assert client.post("/api/specs", content=b'{"a": "' + b"[" * 1000 + b'"}', headers={"content-type": "application/json"}).status_code == 422
    schema = unique_schema("published")
    stored = client.post("/api/schemas", json=schema.to_json())
    assert stored.status_code == 201 and stored.json()["sha256"] == schema.hash().hex()
    bad = client.post("/api/schemas", json={**schema.to_json(), "class_names": ["only"]})
    assert bad.status_code == 422 and "two classes" in bad.json()["detail"]


def test_a_spec_is_checked_against_a_schema_before_anything_is_paid(gateway: Gateway) -> None:
    client = gateway.client
    flat = unique_schema("fitted")
    flat_hash = client.post("/api/schemas", json=flat.to_json()).json()["sha256"]
    images = Schema(task="classification", feature_names=tuple(f"p{i}" for i in range(3 * 8 * 8)), feature_shape=(3, 8, 8),
                    class_names=("a", "b"))  # fmt: skip
    images_hash = client.post("/api/schemas", json=images.to_json()).json()["sha256"]
    survival = Schema(task="survival", feature_names=("age", "dose"), feature_shape=(2,), time_bins=(1.0, 2.0, 3.0))
    survival_hash = client.post("/api/schemas", json=survival.to_json()).json()["sha256"]

    def post(spec: ModelSpec, schema_hash: str) -> httpx.Response:
        return client.post(f"/api/specs?schema={schema_hash}", content=spec.to_bytes(), headers={"content-type": "application/json"})

    resnet = ModelSpec(architecture="resnet", depth=20, width=8, epochs=1, batch_size=8, learning_rate=0.01, max_grad_norm=1.0)
    fits = post(resnet, images_hash)
    assert fits.status_code == 201 and fits.json()["sha256"] == resnet.hash().hex()
    refused = post(resnet, flat_hash)
    assert refused.status_code == 422 and "needs image features" in refused.json()["detail"]
    huber = toy_spec().model_copy(update={"regression_loss": "huber"})
    assert post(huber, survival_hash).status_code == 422
    assert "regression_loss is for regression" in post(huber, survival_hash).json()["detail"]
    assert post(toy_spec(), survival_hash).status_code == 201
    standardised = toy_spec().model_copy(update={"input_mean": (0.0,) * 3, "input_scale": (1.0,) * 3})
    assert "the schema has 4 features" in post(standardised, flat_hash).json()["detail"]
    # An unknown schema, or a hash that is not one, is a clear error; nothing is stored for the refused specs.
    missing = post(toy_spec(), "ab" * 32)
    assert missing.status_code == 404
    assert post(toy_spec(), "xyz").status_code == 422
    not_a_schema = post(toy_spec(), toy_spec().hash().hex())  # a stored document, but a spec
    assert not_a_schema.status_code == 422 and "is not a dataset schema" in not_a_schema.json()["detail"]
    ciphertext = dataformat.encrypt_bytes(b"\0" * (2 << 20), dataformat.new_data_key(), kind=dataformat.Kind.DATASET, context=b"u" * 32)
    stored = client.post("/api/blobs", content=ciphertext, headers={"content-type": "application/octet-stream",
                                                                     "x-content-sha256": hashlib.sha256(ciphertext).hexdigest()})  # fmt: skip
    assert stored.status_code == 201, stored.text
    too_large = post(toy_spec(), stored.json()["sha256"])
    assert too_large.status_code == 422 and "larger than" in too_large.json()["detail"]
    assert client.get(f"/api/blobs/{huber.hash().hex()}").status_code == 404


def test_dataset_status_and_access_lists_are_shown_and_delisted_datasets_hidden_by_default(gateway: Gateway) -> None:
    net, client = gateway.net, gateway.client
    schema = unique_schema("statuses")
    active, _ = list_toy(net, 47, schema=schema)
    paused, paused_by = list_toy(net, 48, schema=schema)
    delisted, delisted_by = list_toy(net, 49, schema=schema)
    spec_hash = toy_spec().hash()
    net.market.set_dataset_paused(paused_by, paused.dataset_id, True)
    net.market.set_models_allowed(paused_by, paused.dataset_id, [spec_hash], True)
    net.market.set_access_restrictions(paused_by, paused.dataset_id, consumers=True, models=True)
    net.market.delist_dataset(delisted_by, delisted.dataset_id)
    gateway.sync()
    schema_hash = "0x" + schema.hash().hex()

    def ids(*statuses: str) -> list[int]:
        response = client.get("/api/datasets", params=[("schema_hash", schema_hash), *(("status", s) for s in statuses)])
        assert response.status_code == 200, response.text
        return [d["id"] for d in response.json()["items"]]

    assert ids() == [paused.dataset_id, active.dataset_id]  # delisted datasets are hidden unless asked for
    assert ids("paused") == [paused.dataset_id]
    assert ids("active") == [active.dataset_id]
    assert ids("delisted") == [delisted.dataset_id]
    assert ids("active", "paused", "delisted") == [delisted.dataset_id, paused.dataset_id, active.dataset_id]
    items = {d["id"]: d for d in client.get("/api/datasets", params=[("schema_hash", schema_hash), ("status", "paused"), ("status", "active")]).json()["items"]}
    assert (items[active.dataset_id]["status"], items[active.dataset_id]["restricted"], items[active.dataset_id]["models_restricted"]) == ("active", False, False)
    restricted = items[paused.dataset_id]
    assert restricted["status"] == "paused" and restricted["restricted"] and restricted["allowed_consumers"] == []
    assert restricted["models_restricted"] and restricted["allowed_models"] == ["0x" + spec_hash.hex()]
    assert restricted["updated_block"] > restricted["listed_block"]
    detail = client.get(f"/api/datasets/{delisted.dataset_id}").json()  # a delisted dataset's page still answers
    assert detail["status"] == "delisted" and detail["remaining_epsilon"] == 10.0
    response = client.get("/api/datasets", params={"status": "sold"})
    assert response.status_code == 422 and "status" in response.json()["detail"]


def test_a_cancelled_job_shows_its_refund_and_the_change_it_got(gateway: Gateway) -> None:
    net, client = gateway.net, gateway.client
    listed, provider = list_toy(net, 50, price=10**17)
    consumer = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs)
    change = 3 * 10**15
    created = consumer.create_job(
        [listed.dataset_id], toy_spec(), epsilon=1.0, delta=1e-5, worker_fee=10**16, max_total_price=10**17 + 10**16 + change  # type: ignore[arg-type]
    )
    net.market.update_terms(provider, listed.dataset_id, toy_terms(price=4 * 10**17))  # later jobs pay more; this one keeps its price
    consumer.cancel_job(created.job_id)
    gateway.sync()
    body = client.get(f"/api/jobs/{created.job_id}").json()
    assert body["status"] == "cancelled" and body["refund_wei"] == str(created.escrow) == str(10**17 + 10**16)
    assert body["prices_wei"] == [str(10**17)]
    assert [(t["stage"], t["amount_wei"]) for t in body["timeline"]] == [("created", str(created.escrow)), ("cancelled", str(created.escrow))]
    assert [(p["account"], p["reason"], p["amount_wei"]) for p in body["payments"]] == [
        (consumer.account.address, "change", str(change)), (consumer.account.address, "refund", str(created.escrow)),
    ]  # fmt: skip
    assert created.job_id in [j["id"] for j in client.get("/api/jobs", params={"status": "cancelled", "dataset_id": listed.dataset_id}).json()["items"]]
    payments = client.get("/api/payments", params={"account": consumer.account.address}).json()
    assert payments["pending_wei"] == str(change + created.escrow) == str(net.market.pending_withdrawal(consumer.account.address))
    detail = client.get(f"/api/datasets/{listed.dataset_id}").json()
    assert [e["kind"] for e in detail["budget_history"]] == ["listed", "reserved", "terms_updated", "released"]
    assert detail["price_wei"] == str(4 * 10**17) and detail["remaining_epsilon"] == detail["total_epsilon"] == 10.0


def _deploy_stablecoin(chain: Chain, deployer: LocalAccount) -> Contract:
    artifact = load_artifact("TestStablecoin", test=True)
    factory = chain.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    address = chain.transact(deployer, factory.constructor(), name="deploy TestStablecoin").receipt["contractAddress"]  # type: ignore[arg-type]
    assert address is not None
    token: Contract = chain.w3.eth.contract(address=address, abi=artifact["abi"])
    return token


def test_a_token_market_in_an_emergency_stop_with_a_revoked_worker(tmp_path: Path) -> None:
    chain = chain_mod.embedded()
    minter = chain.new_account()
    token = _deploy_stablecoin(chain, minter)
    net = bring_up(chain, tmp_path / "net", payment_token=str(token.address))
    gateway = make_gateway(net, tmp_path / "gateway")
    try:
        client = gateway.client
        gateway.sync()
        config = client.get("/api/config").json()
        assert config["payment_token"] == {"address": token.address, "symbol": "tUSD", "decimals": 6}
        assert client.get("/api/health").json()["market_paused"] is False

        listed, _ = list_toy(net, 51, price=25 * 10**6)
        consumer = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs)
        chain.transact(minter, token.functions.mint(consumer.account.address, 100 * 10**6))
        created = consumer.create_job([listed.dataset_id], toy_spec(), epsilon=1.0, delta=1e-5, worker_fee=5 * 10**6)  # type: ignore[arg-type]
        net.market.pause(net.governance)
        net.registry.revoke_enclave(net.governance, net.worker.signer)
        consumer.cancel_job(created.job_id)  # still possible in an emergency stop
        gateway.sync()

        assert client.get("/api/health").json()["market_paused"] is True
        workers = {w["signer"]: w for w in client.get("/api/workers").json()}
        trainer, key_manager = workers[net.worker.signer], workers[net.key_manager.signer]
        assert trainer["revoked"] and not trainer["active"] and trainer["measurement_approved"] and trainer["revoked_block"] > trainer["registered_block"]
        assert key_manager["active"] and not key_manager["revoked"]
        job = client.get(f"/api/jobs/{created.job_id}").json()
        assert job["status"] == "cancelled" and job["escrow_wei"] == job["refund_wei"] == str(30 * 10**6)
        assert client.get("/api/payments", params={"account": consumer.account.address}).json()["pending_wei"] == str(30 * 10**6)

        net.market.unpause(net.governance)
        gateway.sync()
        assert client.get("/api/health").json()["market_paused"] is False
    finally:
        gateway.client.close()
        gateway.index.close()
        net.close()
