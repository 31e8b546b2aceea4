"""``sterling up`` on anvil: serves the API and UI, stops cleanly on Ctrl-C, and comes back with its state."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from eth_account import Account

from enclave_worker.trusted import keywrap
from marketplace.chain import ANVIL_CHAIN_ID
from marketplace.contracts import EPSILON_SCALE
from sterling.up import spawned
from tests.conftest import toy_package, toy_spec, toy_terms
from tests.gateway.http_flow import create_job_over_http, list_dataset_over_http, rpc

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]

START_TIMEOUT = 240
STOP_TIMEOUT = 90


@contextmanager
def sterling_up(state_dir: Path, log: Path) -> Iterator[tuple[httpx.Client, subprocess.Popen[bytes]]]:
    """Run ``sterling up --chain anvil`` until the block ends (then Ctrl-C it, as a user would)."""
    with (
        spawned(state_dir, log=log, chain="anvil", start_timeout=START_TIMEOUT, stop_timeout=STOP_TIMEOUT) as (url, process),
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        yield client, process


def wait_until(fetch: Any, *, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fetch()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError("condition not reached in time")


@pytest.mark.anvil
def test_sterling_up_serves_stops_and_resumes_with_its_state(tmp_path: Path) -> None:
    state_dir, log = tmp_path / "state", tmp_path / "up.log"
    with sterling_up(state_dir, log) as (client, _):
        config = client.get("/api/config").json()
        assert config["chain_id"] == ANVIL_CHAIN_ID and config["chain_kind"] == "anvil" and config["rpc_path"] == "/api/rpc"
        assert config["key_manager"]["active"] and len(config["dev_accounts"]) >= 2
        assert client.get("/docs").status_code == 200 and "/api/datasets" in client.get("/openapi.json").json()["paths"]
        if (REPO / "web" / "index.html").exists():
            index = client.get("/")
            assert index.status_code == 200 and "<html" in index.text.lower()
        # The inference and evaluator enclaves register after the gateway answers; wait for the index to show them.
        roles = {"trainer", "key_manager", "inference", "evaluator"}
        wait_until(lambda: {w["role"] for w in client.get("/api/workers").json() if w["active"]} == roles or None)
        provider = Account.from_key(config["dev_accounts"][0]["private_key"])
        listing = list_dataset_over_http(client, provider, toy_package(150, 5), toy_terms(price=10**17))
        dataset = wait_until(lambda: client.get("/api/datasets", params={"provider": provider.address}).json()["items"])[0]
        assert dataset["content_hash"] == "0x" + listing.content_hash
        head = client.get("/api/health").json()["head_block"]
    assert "Sterling is up: http://127.0.0.1:" in log.read_text()
    for name in ("anvil-state.json", "accounts.json", "deployment.json", "index.db"):
        assert (state_dir / name).is_file(), name

    with sterling_up(state_dir, log) as (client, _):
        again = client.get("/api/config").json()
        assert again["contracts"] == config["contracts"] and again["chain_id"] == ANVIL_CHAIN_ID
        health = client.get("/api/health").json()
        assert health["head_block"] > head  # same chain, plus the new enclaves' registrations
        assert int(rpc(client, "eth_blockNumber"), 16) >= head
        assert client.get(f"/api/datasets/{dataset['id']}").json()["content_hash"] == dataset["content_hash"]
        assert again["key_manager"]["signer"] != config["key_manager"]["signer"]  # a fresh enclave, registered anew
        # The data key deposited before the restart still serves a job: the worker trains on the dataset.
        consumer = Account.from_key(config["dev_accounts"][1]["private_key"])
        create_job_over_http(
            client, consumer, dataset_ids=[dataset["id"]], spec=toy_spec(epochs=1),
            consumer_key=keywrap.public_key_bytes(X25519PrivateKey.generate()), max_total_price=10**17, epsilon_units=EPSILON_SCALE,
        )  # fmt: skip
        job = wait_until(lambda: client.get("/api/jobs", params={"consumer": consumer.address}).json()["items"])[0]
        done = wait_until(lambda: client.get(f"/api/jobs/{job['id']}").json()["status"] == "completed", timeout=180)
        assert done
        detail = client.get(f"/api/jobs/{job['id']}").json()
        assert [t["stage"] for t in detail["timeline"]] == ["created", "claimed", "settled"]
    assert log.read_text().count("Sterling stopped.") == 2


def test_sterling_up_on_the_embedded_chain_serves_the_api_and_the_ui(tmp_path: Path) -> None:
    with (
        spawned(tmp_path / "state", log=tmp_path / "up.log", chain="embedded", start_timeout=START_TIMEOUT, stop_timeout=STOP_TIMEOUT) as (url, _),
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        config = client.get("/api/config").json()
        assert config["chain_kind"] == "embedded" and config["dev_accounts"]
        assert config["key_manager"]["active"] is True
        health = client.get("/api/health").json()
        assert health["status"] == "ok" and health["lag_blocks"] >= 0
        wait_until(lambda: len(client.get("/api/workers").json()) == 4 or None)  # trainer, key manager, inference, evaluator
        page = client.get("/")
        assert page.status_code == 200 and "Sterling" in page.text
        assert client.get("/vendor/ethers/dist/ethers.min.js").status_code == 200
