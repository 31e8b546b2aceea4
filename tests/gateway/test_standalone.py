"""The read side as separate processes (issue 17): one ``sterling indexer`` and two ``sterling
gateway`` processes share one PostgreSQL index, on an anvil node, with nothing in common but the
RPC URL, the deployment record and the database URL. Both gateways show what the chain did; a
stopped indexer leaves the gateways serving what was indexed, and a restarted one catches up from
its persisted cursor.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_utils import keccak

from marketplace.chain import Chain, anvil, free_port
from marketplace.contracts import Deployment, MarketClient, Terms, deploy
from sterling.up import checkout_root
from tests.postgres import Cluster, throwaway_cluster

pytestmark = [pytest.mark.anvil, pytest.mark.slow]

EPS = 10**6


@contextlib.contextmanager
def service(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``sterling <args>`` as a child process, stopped with SIGTERM (killed if it does not stop)."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "sterling.cli", *args], cwd=checkout_root(), stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "200"},
        )  # fmt: skip
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_for(check: Any, what: str, *, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except httpx.HTTPError as e:
            last = e
        time.sleep(0.2)
    raise AssertionError(f"{what}: not reached in {timeout} s (last: {last!r})")


def _list(chain: Chain, market: MarketClient, name: str, price: int) -> int:
    dataset_id, _ = market.list_dataset(
        chain.new_account(), content_hash=keccak(name.encode()), schema_hash=b"\x03" * 32, uri=f"blob://{name}",
        terms=Terms(price_per_job=price, max_epsilon_per_job=2 * EPS, total_epsilon_budget=10 * EPS, max_delta=10**13),
    )  # fmt: skip
    return int(dataset_id)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with throwaway_cluster() as running:
        yield running


def test_one_indexer_and_two_gateway_processes_share_one_postgresql_index(cluster: Cluster, tmp_path: Path) -> None:
    with anvil() as chain:
        deployment = deploy(chain, chain.new_account())
        record = tmp_path / "deployment.json"
        deployment.save(record)
        market = MarketClient(chain, deployment.market)
        rpc = str(chain.w3.provider.endpoint_uri)  # type: ignore[attr-defined]
        database = cluster.create_database()
        common = ["--rpc-url", rpc, "--deployment", str(record), "--database-url", database]
        first = [_list(chain, market, f"before-{i}", 100 + i) for i in range(2)]

        # a deployment record whose contracts are not on this chain is refused before anything is written
        other = tmp_path / "other.json"
        Deployment(**{**json.loads(record.read_text()), "market": chain.new_account().address}).save(other)
        refused = subprocess.run(
            [sys.executable, "-m", "sterling.cli", "indexer", "--once", *common[:2], "--deployment", str(other), *common[4:]],
            cwd=checkout_root(), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert refused.returncode == 1 and "no contract at the recorded market address" in refused.stdout + refused.stderr

        ports = [free_port(), free_port()]
        with contextlib.ExitStack() as stack:
            indexer = stack.enter_context(service(["indexer", *common, "--interval", "0.2", "-v"], tmp_path / "indexer.log"))
            for i, port in enumerate(ports):
                blobs = tmp_path / f"blobs-{i}"
                blobs.mkdir()
                stack.enter_context(
                    service(["gateway", *common, "--blobs", str(blobs), "--port", str(port)], tmp_path / f"gateway-{i}.log")
                )
            clients = [stack.enter_context(httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)) for port in ports]

            def ids(client: httpx.Client) -> set[int]:
                return {d["id"] for d in client.get("/api/datasets", params={"limit": 500}).json()["items"]}

            for client in clients:
                wait_for(lambda c=client: set(first) <= ids(c), "both gateways show the datasets listed before they started")
            second = _list(chain, market, "while-running", 300)
            for client in clients:
                wait_for(lambda c=client: second in ids(c), "both gateways show a dataset listed while they run")
            answers = [c.get("/api/datasets", params={"limit": 500}).json() for c in clients]
            assert answers[0] == answers[1] and answers[0]["total"] == 3
            assert all(c.get("/api/health").status_code == 200 for c in clients)

            # the indexer stops: the gateways go on serving what was indexed; restarted, it catches up
            indexer.terminate()
            assert indexer.wait(timeout=20) == 0
            third = _list(chain, market, "while-stopped", 400)
            time.sleep(1)
            assert third not in ids(clients[0]) and ids(clients[1]) == set(first) | {second}
            stack.enter_context(service(["indexer", *common, "--interval", "0.2"], tmp_path / "indexer-2.log"))
            for client in clients:
                wait_for(lambda c=client: third in ids(c), "the restarted indexer catches up")
        log = [json.loads(line) for line in (tmp_path / "indexer.log").read_text().splitlines() if line.startswith("{")]
        assert log and {"time", "level", "logger", "message"} <= set(log[0])
        assert any("indexed blocks" in entry["message"] for entry in log)
