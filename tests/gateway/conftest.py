"""A gateway over the session's embedded local deployment, with its own chain index."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI
from fastapi.testclient import TestClient

from enclave_worker.trusted.dataset import DatasetPackage, Schema
from marketplace.competitions import CompetitionMarketClient
from marketplace.consumer import Consumer, CreatedJob
from marketplace.provider import ListedDataset, list_dataset
from oracle.index_db import IndexDatabase
from oracle.indexer import Indexer
from sterling.gateway import (
    GatewayServices,
    GatewaySettings,
    create_app,
    get_settings,
)
from sterling.localnet import LocalNet
from tests.conftest import toy_package, toy_spec, toy_terms
from tests.postgres import index_url


@dataclass
class Gateway:
    """A running gateway (in-process) and what it is wired to."""

    net: LocalNet
    index: IndexDatabase
    indexer: Indexer
    services: GatewayServices
    settings: GatewaySettings
    app: FastAPI
    client: TestClient
    state_dir: Path

    def sync(self) -> None:
        """Index everything up to the chain head (what the indexer thread does in `sterling up`)."""
        self.indexer.poll_once()

    def app_with(self, **overrides: object) -> FastAPI:
        """Another app over the same services with different settings."""
        return create_app(self.settings.model_copy(update=overrides), services=self.services)


TEST_HOSTS = ("localhost", "127.0.0.1", "testserver")
"""Hosts the test gateways answer: loopback, and ``testserver`` (a bare ``TestClient``'s Host)."""


def make_gateway(net: LocalNet, state_dir: Path, *, dev_accounts: tuple[LocalAccount, ...] = (), database_url: str | None = None) -> Gateway:
    """A gateway over ``net`` with its own index (at ``database_url``; default :func:`tests.postgres.index_url`)."""
    index = IndexDatabase(database_url or index_url(state_dir))
    index.create_schema()
    competitions = CompetitionMarketClient(net.chain, net.deployment.competitions) if net.deployment.competitions else None
    indexer = Indexer(
        index, market=net.market, registry=net.registry, start_block=net.deployment.block, batch_blocks=50, competitions=competitions
    )
    services = GatewayServices.from_localnet(net, index, dev_accounts=dev_accounts)
    settings = get_settings(
        events_poll_seconds=0.05, allowed_hosts=TEST_HOSTS, health_max_age_seconds=0
    )  # health as of now: tests check it right after a change
    app = create_app(settings, services=services)
    client = TestClient(app, base_url="http://127.0.0.1:8000", client=("127.0.0.1", 50000))  # a browser on this machine
    return Gateway(net, index, indexer, services, settings, app, client, state_dir)


@pytest.fixture(scope="session")
def gateway(localnet: LocalNet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The gateway over the shared `localnet`; tests create their own datasets and jobs."""
    gw = make_gateway(localnet, tmp_path_factory.mktemp("gateway"), dev_accounts=(localnet.chain.new_account(),))
    gw.sync()
    yield gw
    gw.client.close()
    gw.index.close()


def unique_schema(tag: str) -> Schema:
    """A toy-shaped schema with its own feature names, so a test can filter on its schema hash."""
    return Schema(
        task="classification", feature_names=tuple(f"{tag}_{i}" for i in range(4)), feature_shape=(4,), class_names=("neg", "pos")
    )


def toy_with_schema(rows: int, seed: int, schema: Schema) -> DatasetPackage:
    package = toy_package(rows, seed)
    return DatasetPackage(features=package.features, labels=package.labels, schema=schema)


def list_toy(net: LocalNet, seed: int, *, schema: Schema | None = None, **terms: object) -> tuple[ListedDataset, LocalAccount]:
    provider = net.chain.new_account()
    package = toy_package(120, seed) if schema is None else toy_with_schema(120, seed, schema)
    listed = list_dataset(
        package, provider, terms=toy_terms(**terms), market=net.market, registry=net.registry,  # type: ignore[arg-type]
        key_manager=net.key_manager, blobs=net.blobs,
    )  # fmt: skip
    return listed, provider


def run_toy_job(net: LocalNet, dataset_ids: list[int], *, fee: int = 10**16, epsilon: float = 1.0) -> tuple[Consumer, CreatedJob]:
    consumer = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs)
    created = consumer.create_job(dataset_ids, toy_spec(epochs=1), epsilon=epsilon, delta=1e-5, worker_fee=fee)  # type: ignore[arg-type]
    net.worker.run_job(created.job_id)
    return consumer, created
