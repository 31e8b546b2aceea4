"""The dispatcher runs each open job once."""

from __future__ import annotations

import pytest

from marketplace.consumer import Consumer
from marketplace.contracts import JobStatus
from sterling.localnet import LocalNet
from marketplace.provider import list_dataset
from oracle.dispatcher import Dispatcher
from tests.conftest import toy_package, toy_spec, toy_terms


def test_dispatcher_runs_open_jobs_once(localnet: LocalNet) -> None:
    net = localnet
    listed = list_dataset(toy_package(100, 21), net.chain.new_account(), terms=toy_terms(), market=net.market,
                          registry=net.registry, key_manager=net.key_manager, blobs=net.blobs)
    consumer = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs)
    first_block = net.chain.w3.eth.block_number
    ids = [consumer.create_job([listed.dataset_id], toy_spec(epochs=1), epsilon=0.5, delta=1e-5, worker_fee=0).job_id for _ in range(2)]  # type: ignore[arg-type]
    dispatcher = Dispatcher(net.market, [net.worker], from_block=first_block)
    outcomes = dispatcher.poll_once()
    assert sorted(o.job_id for o in outcomes) == sorted(ids)
    assert all(net.market.job(i).status is JobStatus.COMPLETED for i in ids)
    assert dispatcher.poll_once() == []


def test_dispatcher_needs_a_worker(localnet: LocalNet) -> None:
    with pytest.raises(ValueError):
        Dispatcher(localnet.market, [])
