"""The dispatcher runs each open job once."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from enclave_worker.trusted.errors import MemoryBudgetExceeded
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


def test_a_restarted_dispatcher_resumes_from_its_cursor_without_reading_the_history(localnet: LocalNet, tmp_path: Path) -> None:
    """The watch list and the last block read survive a restart; the logs before it are not read again,
    finished jobs are not looked at, and a cursor of another market is ignored."""
    net = localnet
    listed = list_dataset(toy_package(100, 22), net.chain.new_account(), terms=toy_terms(), market=net.market,
                          registry=net.registry, key_manager=net.key_manager, blobs=net.blobs)
    consumer = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs)
    first_block = net.chain.w3.eth.block_number
    done = consumer.create_job([listed.dataset_id], toy_spec(epochs=1), epsilon=0.5, delta=1e-5, worker_fee=0).job_id  # type: ignore[arg-type]
    cursor = tmp_path / "dispatcher.json"
    first = Dispatcher(net.market, [net.worker], from_block=first_block, cursor_path=cursor)
    assert [o.job_id for o in first.poll_once()] == [done]
    assert first.poll_once() == []  # this poll sees the job finished and drops it from the watch list
    saved = json.loads(cursor.read_text())
    assert saved["scanned_to"] >= first_block and saved["known"] == [] and saved["market"] == net.market.address.lower()

    waiting = consumer.create_job([listed.dataset_id], toy_spec(epochs=1), epsilon=0.5, delta=1e-5, worker_fee=0).job_id  # type: ignore[arg-type]
    ranges: list[tuple[int, int]] = []
    looked_at: list[int] = []
    restarted = Dispatcher(net.market, [net.worker], from_block=first_block, cursor_path=cursor)
    created = net.market.contract.events.JobCreated()
    original_get_logs, original_job = created.get_logs, net.market.job
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(type(net.market.contract.events.JobCreated()), "get_logs",
                      lambda self, **kw: ranges.append((kw["from_block"], kw["to_block"])) or original_get_logs(**kw))
        patch.setattr(net.market, "job", lambda job_id, **kw: looked_at.append(job_id) or original_job(job_id, **kw))
        assert [o.job_id for o in restarted.poll_once()] == [waiting]
    assert ranges and ranges[0][0] == saved["scanned_to"] + 1  # only the blocks after the cursor
    assert done not in looked_at  # a finished job is not read again

    # a cursor of another market is ignored: everything from from_block is read again
    cursor.write_text(json.dumps({**json.loads(cursor.read_text()), "market": "0x" + "11" * 20}))
    other = Dispatcher(net.market, [net.worker], from_block=first_block, cursor_path=cursor)
    assert other._scanned_to == first_block - 1 and other.poll_once() == []


def test_a_job_refused_before_its_claim_waits_the_longest_back_off(localnet: LocalNet, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that refuses a job before claiming it (here: more memory than its enclave's budget)
    would refuse it again at once: the job waits ``max_backoff``, not the doubling back-off."""
    net = localnet
    listed = list_dataset(toy_package(100, 23), net.chain.new_account(), terms=toy_terms(), market=net.market,
                          registry=net.registry, key_manager=net.key_manager, blobs=net.blobs)
    consumer = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs)
    first_block = net.chain.w3.eth.block_number
    job_id = consumer.create_job([listed.dataset_id], toy_spec(epochs=1), epsilon=0.5, delta=1e-5, worker_fee=0).job_id  # type: ignore[arg-type]
    dispatcher = Dispatcher(net.market, [net.worker], from_block=first_block, retry_backoff=1.0, max_backoff=600.0)

    def too_big(job: int, **kwargs: object) -> None:
        raise MemoryBudgetExceeded(f"job {job} needs ~9000 MiB of enclave memory, budget 2048 MiB")

    monkeypatch.setattr(net.worker, "run_job", too_big)
    assert dispatcher.poll_once() == []
    assert isinstance(dispatcher.failures[job_id], MemoryBudgetExceeded)
    assert dispatcher._failed[job_id].not_before - time.monotonic() > 590  # not 1 s
    assert dispatcher.poll_once() == []  # backing off: not handed to the worker again
    monkeypatch.undo()
    dispatcher._failed[job_id].not_before = 0  # the wait is over
    assert [o.job_id for o in dispatcher.poll_once()] == [job_id]
