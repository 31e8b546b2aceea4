"""``sterling up`` on anvil: serves the API and UI, stops cleanly on Ctrl-C, and comes back with its state;
its indexer and trainer workers are child processes that stop with it, and die with it."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from eth_account import Account

from enclave_worker.trusted import keywrap
from marketplace.chain import ANVIL_CHAIN_ID
from marketplace.contracts import EPSILON_SCALE
from sterling.compose import die_with_parent
from sterling.up import UpFailed, spawned
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
    with sterling_up(state_dir, log) as (client, process):
        # Every service a child; the inference enclave lives in the gateway's process (no hop per query).
        services = services_of(process.pid)
        assert sorted(services.values()) == ["evaluator", "gateway", "indexer", "keymanager", "worker"], children(process.pid)
        (gateway,) = [pid for pid, command in services.items() if command == "gateway"]
        assert [c for c in children(gateway).values() if "enclave_worker.trusted.main" in c and "inference" in c], children(gateway)
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
    log = tmp_path / "up.log"
    with (
        spawned(tmp_path / "state", log=log, chain="embedded", start_timeout=START_TIMEOUT, stop_timeout=STOP_TIMEOUT) as (url, process),
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        assert services_of(process.pid) == {}  # on the in-process chain, workers and indexer are threads
        config = client.get("/api/config").json()
        assert config["chain_kind"] == "embedded" and config["dev_accounts"]
        assert config["key_manager"]["active"] is True
        health = client.get("/api/health").json()
        assert health["status"] == "ok" and health["lag_blocks"] >= 0
        wait_until(lambda: len(client.get("/api/workers").json()) == 4 or None)  # trainer, key manager, inference, evaluator
        page = client.get("/")
        assert page.status_code == 200 and "Sterling" in page.text
        assert client.get("/vendor/ethers/dist/ethers.min.js").status_code == 200


# --- the child processes ---------------------------------------------------------------------------

SMALL_UP = {
    "STERLING_UP_TRAINERS": "2", "STERLING_UP_TRAINER_THREADS": "1", "STERLING_UP_SERVING": "false",
    "STERLING_UP_COMPETITIONS": "false", "STERLING_UP_DISPATCHER_INTERVAL": "0.3", "STERLING_UP_INDEXER_INTERVAL": "0.2",
}  # fmt: skip
"""Two workers, no inference or evaluator enclave: the children under test and little else."""


def running(pid: int) -> bool:
    """The process exists and is not a zombie (the state after the command's closing parenthesis)."""
    with suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False


def children(pid: int) -> dict[int, list[str]]:
    """The running children of ``pid`` with their command lines."""
    found: dict[int, list[str]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            listed = (task / "children").read_text().split()
        except OSError:
            continue
        for child in map(int, listed):
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes().decode().split("\0")
            except OSError:
                continue
            if running(child):
                found[child] = command
    return found


def services_of(pid: int) -> dict[int, str]:
    """The ``sterling <command>`` children of ``pid``: pid → command."""
    return {c: argv[3] for c, argv in children(pid).items() if argv[1:3] == ["-m", "sterling.cli"]}


def wait_gone(pids: list[int], *, timeout: float) -> list[int]:
    """Wait until none of ``pids`` runs; those still running after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (alive := [p for p in pids if running(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive


@contextmanager
def event_stream(url: str) -> Iterator[queue.Queue[tuple[str, dict[str, Any]]]]:
    """``GET /api/events`` read in a thread, as the UI's live timeline does; yields a queue of (event, data)."""
    events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
    with httpx.Client(base_url=url, timeout=httpx.Timeout(30, read=None)) as client, client.stream("GET", "/api/events") as response:
        assert response.status_code == 200

        def read() -> None:
            name, data = "message", ""
            try:
                for line in response.iter_lines():
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: "):
                        data += line[6:]
                    elif line == "" and data:
                        events.put((name, json.loads(data)))
                        name, data = "message", ""
            except httpx.HTTPError:  # the stream was closed under the reader
                return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        yield events


@pytest.mark.anvil
def test_sterling_up_runs_its_key_manager_indexer_and_workers_as_child_processes_that_stop_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in SMALL_UP.items():
        monkeypatch.setenv(name, value)
    state_dir, log = tmp_path / "state", tmp_path / "up.log"
    with spawned(state_dir, log=log, start_timeout=START_TIMEOUT, stop_timeout=STOP_TIMEOUT) as (url, process):
        services = services_of(process.pid)
        assert sorted(services.values()) == ["gateway", "indexer", "keymanager", "worker", "worker"], children(process.pid)
        enclaves = [pid for service in services for pid in children(service)]  # the trainer and key-manager enclaves
        assert len(enclaves) == 3
        # Secrets reach the children in key files only readable by their owner, never on a command line.
        keys = json.loads((state_dir / "accounts.json").read_text())
        secrets = [keys["operator"], *keys["extra_operators"], keys["governance"], keys["verifier"]]
        for pid in services:
            command = " ".join(children(process.pid)[pid])
            assert not any(secret.removeprefix("0x") in command for secret in secrets)
        for key_file in ("worker-1/operator.key", "worker-2/operator.key", "keymanager/operator.key", "keymanager/verifier.key"):
            assert (state_dir / "services" / key_file).stat().st_mode & 0o777 == 0o600
        assert (state_dir / "services" / "gateway" / "dev-accounts.json").stat().st_mode & 0o777 == 0o600
        for name in ("worker-1", "worker-2", "keymanager", "gateway"):
            assert (state_dir / "services" / f"{name}.log").is_file()
        # The key manager's service serves all three sides: the workers' keys, models and competitions.
        (km_url,) = re.findall(r"key manager at (http://127\.0\.0\.1:\d+)", log.read_text().replace("\n", ""))
        km_info = httpx.get(f"{km_url}/info", timeout=10).json()

        with httpx.Client(base_url=url, timeout=60) as client, event_stream(url) as events:
            config = client.get("/api/config").json()
            assert km_info["signer"] == config["key_manager"]["signer"]
            assert km_info["model_market"] == config["contracts"]["model_market"]
            assert km_info["competitions"] == config["contracts"]["competitions"]
            trainers = wait_until(lambda: [w for w in client.get("/api/workers").json() if w["role"] == "trainer" and w["active"]])
            assert {w["operator"] for w in trainers} >= {Account.from_key(k).address for k in secrets[:2]}
            provider = Account.from_key(config["dev_accounts"][0]["private_key"])
            listing = list_dataset_over_http(client, provider, toy_package(120, 5), toy_terms(price=10**17))
            dataset = wait_until(lambda: client.get("/api/datasets", params={"provider": provider.address}).json()["items"])[0]
            assert dataset["content_hash"] == "0x" + listing.content_hash
            consumer = Account.from_key(config["dev_accounts"][1]["private_key"])
            create_job_over_http(
                client, consumer, dataset_ids=[dataset["id"]], spec=toy_spec(epochs=1),
                consumer_key=keywrap.public_key_bytes(X25519PrivateKey.generate()), max_total_price=10**17,
                epsilon_units=EPSILON_SCALE,
            )  # fmt: skip
            job = wait_until(lambda: client.get("/api/jobs", params={"consumer": consumer.address}).json()["items"])[0]
            assert wait_until(lambda: client.get(f"/api/jobs/{job['id']}").json()["status"] == "completed", timeout=180)
            detail = client.get(f"/api/jobs/{job['id']}").json()
            # The live timeline: the child worker's progress reached the gateway, pushed and in the job's detail.
            stages: list[str] = []
            deadline = time.monotonic() + 30
            while "settled" not in stages and time.monotonic() < deadline:
                with suppress(queue.Empty):
                    name, data = events.get(timeout=1)
                    if name == "progress" and data["job_id"] == job["id"]:
                        stages.append(data["stage"])
            assert "settled" in stages, stages
            assert detail["progress"] is not None and detail["progress"]["stage"] == "settled"
        claimed = next(t for t in detail["timeline"] if t["stage"] == "claimed")
        logs = {w: (state_dir / "services" / f"{w}.log").read_text() for w in ("worker-1", "worker-2")}
        assert any(claimed["enclave"] in text for text in logs.values()), "no child worker's enclave claimed the job"
        assert (state_dir / "status" / f"job-{job['id']}.json").is_file()
        assert (state_dir / "services" / "indexer.log").read_text().count("indexed blocks") >= 1
    assert wait_gone([*services, *enclaves], timeout=30) == []
    assert "Sterling stopped." in log.read_text()


@pytest.mark.anvil
def test_a_child_that_dies_stops_sterling_up_and_children_die_with_a_killed_sterling_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {**SMALL_UP, "STERLING_UP_TRAINERS": "1"}.items():
        monkeypatch.setenv(name, value)
    state_dir, log = tmp_path / "state", tmp_path / "up.log"
    with pytest.raises(UpFailed), spawned(state_dir, log=log, start_timeout=START_TIMEOUT, stop_timeout=STOP_TIMEOUT) as (_, process):
        services = services_of(process.pid)
        (indexer,) = [pid for pid, command in services.items() if command == "indexer"]
        os.kill(indexer, signal.SIGKILL)
        assert process.wait(60) == 1  # it said which child died, and stopped everything
    assert "indexer exited with -9" in log.read_text() and "Sterling stopped:" in log.read_text()
    assert wait_gone(list(services), timeout=30) == []

    # Killed, it cannot stop them: they notice (SIGTERM from the kernel) and stop on their own.
    with pytest.raises(UpFailed), spawned(state_dir, log=log, start_timeout=START_TIMEOUT, stop_timeout=STOP_TIMEOUT) as (_, process):
        everything = children(process.pid)
        services = services_of(process.pid)
        assert sorted(services.values()) == ["gateway", "indexer", "keymanager", "worker"]
        process.kill()
        process.wait()
    try:
        assert wait_gone(list(services), timeout=45) == [], "a child of the killed sterling up still runs"
    finally:
        for pid in everything:  # the chain and the key manager's enclave are not tied to it: clean up
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_tied_child_gets_sigterm_when_its_parent_is_killed(tmp_path: Path) -> None:
    """:func:`sterling.compose.die_with_parent`, without the rest of ``sterling up``."""
    assert die_with_parent() is not None  # Linux: prctl is there
    script = (
        "import subprocess, sys\n"
        "from sterling.compose import die_with_parent\n"
        "child = subprocess.Popen(['sleep', '120'], preexec_fn=die_with_parent())\n"
        "print(child.pid, flush=True)\n"
        "child.wait()\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert running(child)
    parent.kill()
    parent.wait()
    assert wait_gone([child], timeout=10) == []
