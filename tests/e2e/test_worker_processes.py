"""Workers as processes of their own (issue 17), coordinated only by the chain.

On anvil: a ``sterling keymanager`` (with the verifier), a ``sterling indexer`` and a ``sterling
gateway`` on one index, and two ``sterling worker`` processes of two operators — one fetching ciphertext over the gateway's blob endpoint, the
other from the shared folder. The two race for the same queue: every job is claimed once and run
once, and both take part. Then one worker is killed while it trains: the other finishes the queue,
re-claiming the dead worker's job once its lease lapses.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from enclave_worker.remote import RemoteKeyManager
from marketplace.blobstore import BlobStore
from marketplace.chain import anvil
from marketplace.consumer import Consumer
from marketplace.contracts import JobStatus, MarketClient, RegistryClient
from marketplace.provider import list_dataset
from sterling.compose import Composition, Service, prepare_network, wait_until
from tests.conftest import toy_package, toy_spec, toy_terms

pytestmark = [pytest.mark.anvil, pytest.mark.slow]

LEASE = 20
"""Seconds a claim holds a job: a dead worker's job is re-claimable this long after its last renewal."""


def health(worker: Service) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{worker.url}/health", timeout=5).json()
    return body


def events(market: MarketClient, name: str, job_id: int) -> list[Any]:
    return list(getattr(market.contract.events, name)().get_logs(from_block=0, argument_filters={"jobId": job_id}))


def test_two_worker_processes_share_the_queue_and_one_stopping_leaves_the_other_serving(tmp_path: Path) -> None:
    with anvil() as chain:
        governance, verifier, km_operator = (chain.new_account() for _ in range(3))
        network = prepare_network(chain, governance, verifier, tmp_path, claim_lease=LEASE)
        market = MarketClient(chain, network.deployment.market)
        registry = RegistryClient(chain, network.deployment.registry)
        folder = tmp_path / "blobs"
        with Composition(network, tmp_path) as services:
            km = services.keymanager(km_operator, verifier)
            index = f"sqlite:///{tmp_path / 'index.db'}"
            services.indexer(index)
            gateway = services.gateway(index, folder, key_manager=km)
            blobs = BlobStore(folder)
            with RemoteKeyManager(str(km.url)) as key_manager:
                datasets = [
                    list_dataset(toy_package(160 if seed < 4 else 4000, seed), chain.new_account(), terms=toy_terms(), market=market, registry=registry,
                                 key_manager=key_manager, blobs=blobs).dataset_id
                    for seed in range(7)
                ]  # fmt: skip
            a = services.worker(chain.new_account(), km, str(gateway.url), name="worker-a")  # ciphertext over HTTP
            b = services.worker(chain.new_account(), km, str(folder), name="worker-b")  # the shared folder
            enclaves = {health(a)["enclave"]: "a", health(b)["enclave"]: "b"}
            consumer = Consumer(chain.new_account(), market=market, blobs=blobs)

            def create(dataset_id: int, epochs: int) -> int:
                spec = toy_spec(epochs=epochs)
                return consumer.create_job([dataset_id], spec, epsilon=1.0, delta=1e-5, worker_fee=0).job_id  # type: ignore[arg-type]

            def completed(jobs: list[int]) -> bool:
                return all(market.job(j).status is JobStatus.COMPLETED for j in jobs)

            # Both race for four jobs at once: each is claimed once and run once, and both take part.
            first = [create(d, epochs=3) for d in datasets[:4]]
            wait_until(lambda: completed(first), what="the first four jobs complete", timeout=300, service=b)
            for job_id in first:
                assert len(events(market, "JobClaimed", job_id)) == 1, f"job {job_id} was claimed more than once"
                assert len(events(market, "ResultSubmitted", job_id)) == 1
            ran = {enclaves[market.job(j).enclave] for j in first}
            assert ran == {"a", "b"}, f"one worker ran every job: {ran}"
            assert health(a)["completed"] + health(b)["completed"] == 4
            # worker a fetched what it trained on through the gateway, into its own cache, hash-checked
            cached = {p.name for p in (tmp_path / "worker-a" / "blob-cache").rglob("*") if p.is_file()}
            trained_by_a = [j for j in first if enclaves[market.job(j).enclave] == "a"]
            for job_id in trained_by_a:
                content = market.dataset(market.job(job_id).dataset_ids[0]).content_hash.hex()
                assert any(content in name for name in cached)

            # Worker a dies while it trains; worker b finishes every job, a's too once its lease lapses.
            second = [create(d, epochs=100) for d in datasets[4:]]  # 4,000 rows: seconds of training each
            held = wait_until(
                lambda: next((j for j in second if market.job(j).status is JobStatus.CLAIMED and enclaves.get(market.job(j).enclave) == "a"), None),
                what="worker a claims one of the new jobs", timeout=120, service=a,
            )  # fmt: skip
            wait_until(lambda: held in health(a)["running"], what="worker a runs its job", timeout=60, service=a)
            time.sleep(1)  # its keys are out and it trains
            a.kill()
            wait_until(lambda: completed(second), what="worker b finishes the queue", timeout=400, service=b)
            assert enclaves[market.job(held).enclave] == "b"
            claims = [e["args"]["enclave"] for e in events(market, "JobClaimed", held)]
            assert [enclaves[c] for c in claims] == ["a", "b"]  # a's lapsed claim, then b's re-claim
            # b re-claimed after the lease lapsed: charged once if keys went out under a's claim, else given back free
            assert market.job(held).charges <= 1
            for job_id in second:
                assert len(events(market, "ResultSubmitted", job_id)) == 1
            assert health(b)["status"] == "serving"
