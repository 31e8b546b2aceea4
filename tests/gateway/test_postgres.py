"""PostgreSQL for real: a throw-away cluster (``tests.postgres``), the same chain indexed into it
and into SQLite, and the same API answers from both; one indexer writing while two gateways (each
with its own engine and connection pool, as two processes would have) read the one database.

``make test`` also runs the whole index and gateway suites on PostgreSQL
(``STERLING_TEST_DATABASE=postgresql``); this module runs on both in every run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sterling.localnet import LocalNet
from tests.gateway.conftest import Gateway, list_toy, make_gateway, run_toy_job
from tests.postgres import Cluster, throwaway_cluster

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with throwaway_cluster() as running:
        yield running


def _paths(g: Gateway) -> list[str]:
    """Every read route of the index, with filters, sorts and pages, and each row's detail."""
    datasets = g.client.get("/api/datasets", params={"limit": 500}).json()["items"]
    jobs = g.client.get("/api/jobs", params={"limit": 500}).json()["items"]
    accounts = {d["provider"] for d in datasets} | {j["consumer"] for j in jobs}
    paths = [
        "/api/datasets?limit=500", "/api/datasets?sort=price&limit=7", "/api/datasets?sort=-price&limit=7&offset=3",
        "/api/datasets?sort=remaining_epsilon&limit=500", "/api/datasets?sort=-remaining_epsilon&limit=500",
        "/api/datasets?min_price=1&max_price=100000000000000000000&limit=500", "/api/datasets?min_remaining_epsilon=0.5&limit=500",
        "/api/datasets?status=active&status=paused&status=delisted&limit=500",
        "/api/jobs?limit=500", "/api/jobs?limit=5&offset=2", "/api/workers", "/api/payments?limit=500", "/api/operators",
        "/api/competitions",
    ]  # fmt: skip
    paths += [f"/api/datasets/{d['id']}" for d in datasets]
    paths += [f"/api/jobs/{j['id']}" for j in jobs]
    paths += [f"/api/payments?account={a}&limit=500" for a in sorted(accounts)]
    paths += [f"/api/operators/{w['operator']}/stake" for w in g.client.get("/api/workers").json()]
    return paths


def _answers(g: Gateway, paths: list[str]) -> dict[str, Any]:
    answers = {}
    for path in paths:
        response = g.client.get(path)
        assert response.status_code == 200, (path, response.text)
        answers[path] = response.json()
    return answers


def test_sqlite_and_postgresql_give_the_same_answers_on_the_same_chain(localnet: LocalNet, cluster: Cluster, tmp_path: Path) -> None:
    net = localnet
    listed = [list_toy(net, 9100 + i, price=10**15 * (i + 1))[0] for i in range(3)]
    run_toy_job(net, [listed[0].dataset_id, listed[1].dataset_id])
    run_toy_job(net, [listed[2].dataset_id], epsilon=0.5)
    lite = make_gateway(net, tmp_path / "sqlite", database_url=f"sqlite:///{tmp_path / 'index.db'}")
    pg = make_gateway(net, tmp_path / "postgres", database_url=cluster.create_database())
    try:
        assert (lite.index.engine.dialect.name, pg.index.engine.dialect.name) == ("sqlite", "postgresql")
        lite.sync()
        pg.sync()
        paths = _paths(lite)
        assert len(paths) > 20
        assert _answers(pg, paths) == _answers(lite, paths)
        # the uint256 columns order as numbers on both (zero-padded decimal strings)
        by_price = pg.client.get("/api/datasets", params={"sort": "price", "limit": 500}).json()["items"]
        prices = [int(d["price_wei"]) for d in by_price]
        assert prices == sorted(prices) and len(prices) >= 3
    finally:
        for g in (lite, pg):
            g.client.close()
            g.index.close()


def test_one_indexer_and_two_gateways_share_one_postgresql_index(localnet: LocalNet, cluster: Cluster, tmp_path: Path) -> None:
    """The indexer writes while two gateways with their own engines read; both see every new dataset."""
    net = localnet
    url = cluster.create_database()
    writer = make_gateway(net, tmp_path / "indexer", database_url=url)
    readers = [make_gateway(net, tmp_path / f"gateway-{i}", database_url=url) for i in range(2)]
    stop = threading.Event()
    indexer = threading.Thread(target=writer.indexer.run, args=(stop,), kwargs={"interval": 0.05}, daemon=True)
    indexer.start()
    try:
        errors: list[BaseException] = []
        reads = [0, 0]

        def read(i: int) -> None:
            try:
                while not stop.is_set():
                    response = readers[i].client.get("/api/datasets", params={"limit": 500})
                    assert response.status_code == 200, response.text
                    reads[i] += 1
            except BaseException as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(2)]
        for t in threads:
            t.start()
        new = [list_toy(net, 9200 + i)[0].dataset_id for i in range(3)]
        deadline = time.monotonic() + 60
        for reader in readers:
            while True:
                ids = {d["id"] for d in reader.client.get("/api/datasets", params={"limit": 500}).json()["items"]}
                if set(new) <= ids:
                    break
                assert time.monotonic() < deadline, f"gateway never showed datasets {new}"
                time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join(timeout=10)
        assert not errors, errors
        assert min(reads) > 0
        detail = [r.client.get(f"/api/datasets/{new[-1]}").json() for r in readers]
        assert detail[0] == detail[1] and detail[0]["id"] == new[-1]
    finally:
        stop.set()
        indexer.join(timeout=10)
        for g in (writer, *readers):
            g.client.close()
            g.index.close()
