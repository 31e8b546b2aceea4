"""No stranded job (docs/jobs.md, property 2), from the worker's side.

On a real embedded chain with real enclave processes and a short claim lease: the heartbeat keeps
a run longer than several leases claimed; a run that fails before any key is released gives the
job back at once (Open, nothing charged, ε still reserved, no slash), also when the trainer
enclave died, which the worker relaunches and registers; and a restarted worker gives back what
its previous enclave held unless keys were released under the claim.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount

from enclave_worker.host import EnclaveRequestFailed
from enclave_worker.trusted.errors import ProtocolError
from enclave_worker.trusted.onchain import Role
from enclave_worker.worker import TrainerWorker
from marketplace import chain as chain_mod
from marketplace.consumer import Consumer, CreatedJob
from marketplace.contracts import EPSILON_SCALE, ZERO_ADDRESS, JobStatus
from marketplace.provider import ListedDataset, list_dataset
from sterling.localnet import LocalNet, bring_up, trainer_launcher
from tests.conftest import toy_package, toy_spec, toy_terms

LEASE = 30


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNet]:
    """A deployment with a 30-second claim lease; tests move chain time forward."""
    net = bring_up(chain_mod.embedded(), tmp_path_factory.mktemp("lease-net"), claim_lease=LEASE)
    net.worker.heartbeat_interval = 0.05
    yield net
    net.close()


def _listed(net: LocalNet, seed: int) -> tuple[ListedDataset, LocalAccount]:
    provider = net.chain.new_account()
    listed = list_dataset(toy_package(120, seed), provider, terms=toy_terms(), market=net.market,
                          registry=net.registry, key_manager=net.key_manager, blobs=net.blobs)  # fmt: skip
    return listed, provider


def _job(net: LocalNet, listed: ListedDataset, *, epochs: int = 1) -> tuple[CreatedJob, Consumer]:
    consumer = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs)
    created = consumer.create_job([listed.dataset_id], toy_spec(epochs=epochs), epsilon=1.0, delta=1e-5, worker_fee=0)  # type: ignore[arg-type]
    return created, consumer


def _released_events(net: LocalNet, job_id: int) -> list[object]:
    return list(net.market.contract.events.ClaimReleased().get_logs(from_block=0, argument_filters={"jobId": job_id}))


def test_the_heartbeat_keeps_a_run_longer_than_several_leases_claimed(net: LocalNet) -> None:
    listed, provider = _listed(net, 61)
    created, _ = _job(net, listed, epochs=8)
    market, job_id = net.market, created.job_id
    epochs: list[int] = []

    def on_progress(event: dict[str, object]) -> None:
        # Each epoch takes 12 s of chain time: 96 s in all, more than three leases.
        if event.get("stage") != "training":
            return
        epochs.append(int(event["epoch"]))  # type: ignore[call-overload]
        net.chain.advance_time(12)
        job = market.job(job_id)
        if job.lease_expiry - net.chain.now() <= LEASE // 3:
            deadline = time.monotonic() + 20
            while market.job(job_id).lease_expiry == job.lease_expiry:  # the heartbeat renews now
                assert time.monotonic() < deadline, "the lease was not renewed"
                time.sleep(0.02)

    before = market.stake_of(net.operator.address).amount
    outcome = net.worker.run_job(job_id, progress=on_progress)
    renewals = market.contract.events.LeaseRenewed().get_logs(from_block=0, argument_filters={"jobId": job_id})
    job = market.job(job_id)
    claimed_at, settled_at = (
        int(net.chain.w3.eth.get_block(tx.receipt["blockNumber"])["timestamp"]) for tx in (outcome.claim, outcome.submit)
    )
    assert len(epochs) >= 8 and settled_at - claimed_at > 3 * LEASE
    assert len(renewals) >= 3
    assert all(r["args"]["enclave"] == net.worker.signer for r in renewals)
    assert job.status is JobStatus.COMPLETED and job.charges == 0
    assert market.stake_of(net.operator.address).amount == before
    assert market.pending_withdrawal(provider.address) == 10**17  # its price, nothing slashed to it
    # The heartbeat stopped with the run: time moving on renews nothing more.
    net.chain.advance_time(LEASE)
    time.sleep(0.3)
    assert len(market.contract.events.LeaseRenewed().get_logs(from_block=0, argument_filters={"jobId": job_id})) == len(renewals)


def test_a_run_refused_before_any_key_release_gives_the_job_back_at_once(net: LocalNet) -> None:
    listed, provider = _listed(net, 62)
    created, consumer = _job(net, listed)
    market, job_id = net.market, created.job_id
    stake = market.stake_of(net.operator.address).amount
    audit_before = len(net.key_manager.audit_log())
    net.worker.prepare_job(job_id)  # this enclave will refuse to prepare the job a second time
    with pytest.raises(EnclaveRequestFailed, match="RunRefused"):
        net.worker.run_job(job_id)
    job = market.job(job_id)
    assert job.status is JobStatus.OPEN and job.charges == 0 and job.enclave == ZERO_ADDRESS
    assert job.claim_deadline == job.completion_deadline  # Open again until its completion deadline
    assert len(_released_events(net, job_id)) == 1
    assert market.remaining_epsilon(listed.dataset_id) == 9 * EPSILON_SCALE  # still reserved, nothing debited
    assert market.stake_of(net.operator.address).amount == stake
    assert market.pending_withdrawal(provider.address) == 0
    assert not any(e.released for e in net.key_manager.audit_log()[audit_before:])
    consumer.cancel_job(job_id)  # nothing consumed: the consumer gets everything back
    assert market.remaining_epsilon(listed.dataset_id) == 10 * EPSILON_SCALE


def test_a_trainer_enclave_that_died_before_the_release_is_relaunched_and_the_job_given_back(net: LocalNet) -> None:
    listed, _ = _listed(net, 63)
    created, _ = _job(net, listed)
    market, job_id, worker = net.market, created.job_id, net.worker
    old_signer = worker.signer
    os.kill(worker.enclave.process.pid, signal.SIGKILL)
    with pytest.raises(ProtocolError):
        worker.run_job(job_id)
    job = market.job(job_id)
    assert job.status is JobStatus.OPEN and job.charges == 0
    assert [e["args"]["enclave"] for e in _released_events(net, job_id)] == [old_signer]  # type: ignore[index]
    assert worker.relaunches == 1 and worker.signer != old_signer
    assert net.registry.active_operator(worker.signer, Role.TRAINER) == net.operator.address
    # The new enclave takes new jobs, this one included, with nothing charged for the first claim.
    worker.run_job(job_id)
    job = market.job(job_id)
    assert job.status is JobStatus.COMPLETED and job.charges == 0 and job.enclave == worker.signer
    assert market.remaining_epsilon(listed.dataset_id) == 10 * EPSILON_SCALE - job.epsilon_spent


def _left_behind(net: LocalNet, *, seeds: tuple[int, int]) -> tuple[CreatedJob, CreatedJob, TrainerWorker]:
    """Two jobs the worker's current enclave claimed, the second with its key released; then a
    restarted worker of the same operator (a new enclave), which the caller closes."""
    (a, _), (b, _) = _listed(net, seeds[0]), _listed(net, seeds[1])
    (claimed_only, _), (keys_out, _) = _job(net, a), _job(net, b)
    previous = net.worker
    net.market.claim_job(net.operator, claimed_only.job_id, previous.signer)
    net.market.claim_job(net.operator, keys_out.job_id, previous.signer)
    job_key = previous.prepare_job(keys_out.job_id)
    net.key_manager.release(job_id=keys_out.job_id, dataset_id=b.dataset_id, trainer=previous.signer, job_key=job_key)
    launch = trainer_launcher(net.platform, net.verifier, net.registry, net.operator)
    restarted = TrainerWorker(launch(), operator=net.operator, market=net.market, key_manager=net.key_manager, blobs=net.blobs,
                              relaunch=launch)  # fmt: skip
    return claimed_only, keys_out, restarted


def test_a_restarted_worker_gives_back_what_its_previous_enclave_held(net: LocalNet, tmp_path: Path) -> None:
    market, previous = net.market, net.worker
    first_block = net.chain.w3.eth.block_number
    claimed_only, keys_out, restarted = _left_behind(net, seeds=(64, 65))
    try:
        recovered = restarted.recover(from_block=first_block)
        assert [(r.job_id, r.enclave, r.released) for r in recovered] == [
            (claimed_only.job_id, previous.signer, True),
            (keys_out.job_id, previous.signer, False),
        ]
        freed, held = market.job(claimed_only.job_id), market.job(keys_out.job_id)
        assert freed.status is JobStatus.OPEN and freed.charges == 0
        assert market.remaining_epsilon(freed.dataset_ids[0]) == 9 * EPSILON_SCALE
        # Keys went out under the second claim: it stays Claimed and will lapse (nothing renews it).
        assert held.status is JobStatus.CLAIMED and held.enclave == previous.signer and held.charges == 0
        assert held.lease_expiry <= net.chain.now() + LEASE
        # Only claims of other enclaves of this operator are touched; running again changes nothing.
        assert [r.job_id for r in restarted.recover(from_block=first_block)] == [keys_out.job_id]
        restarted.run_job(claimed_only.job_id)
        assert market.job(claimed_only.job_id).status is JobStatus.COMPLETED
        assert restarted.recover(from_block=first_block, keep=[previous.signer]) == []
    finally:
        restarted.enclave.close()


def test_a_restarted_worker_with_a_cursor_reads_only_the_claims_after_it(net: LocalNet, tmp_path: Path) -> None:
    """With a cursor, recovery reads the ``JobClaimed`` logs after the last block it read and looks
    again only at the jobs still Claimed then: its work follows new and live claims, not history."""
    market, previous = net.market, net.worker
    first_block = net.chain.w3.eth.block_number
    freed_job, held_job, restarted = _left_behind(net, seeds=(66, 67))
    later_job, _ = _job(net, _listed(net, 68)[0])
    cursor = tmp_path / "recover.json"
    read_from: list[int] = []
    events = market.contract.events.JobClaimed
    original = events.get_logs

    def spy(*args: object, **kwargs: object) -> object:
        read_from.append(int(kwargs["from_block"]))  # type: ignore[call-overload]
        return original(*args, **kwargs)  # type: ignore[misc]

    try:
        assert [(r.job_id, r.released) for r in restarted.recover(from_block=first_block, cursor_path=cursor)] == [
            (freed_job.job_id, True),
            (held_job.job_id, False),
        ]
        saved = json.loads(cursor.read_text())
        head = saved["scanned_to"]
        assert head == net.chain.w3.eth.block_number - 1  # the give-back is one block after the read
        assert saved["claimed"] == [held_job.job_id]  # the freed job is done with; the held one is watched
        # A claim made after the cursor is found; the held job is looked at again without reading its log.
        market.claim_job(net.operator, later_job.job_id, previous.signer)
        events.get_logs = spy  # type: ignore[method-assign]
        try:
            recovered = restarted.recover(from_block=first_block, cursor_path=cursor)
        finally:
            events.get_logs = original  # type: ignore[method-assign]
        assert [(r.job_id, r.released) for r in recovered] == [(held_job.job_id, False), (later_job.job_id, True)]
        assert read_from == [head + 1]
        assert json.loads(cursor.read_text())["claimed"] == [held_job.job_id]
        # A cursor of another operator is ignored: the whole history from from_block is read again.
        cursor.write_text(json.dumps({**json.loads(cursor.read_text()), "operator": "0x" + "22" * 20, "claimed": []}))
        read_from.clear()
        events.get_logs = spy  # type: ignore[method-assign]
        try:
            assert [r.job_id for r in restarted.recover(from_block=first_block, cursor_path=cursor)] == [held_job.job_id]
        finally:
            events.get_logs = original  # type: ignore[method-assign]
        assert read_from == [first_block]
    finally:
        restarted.enclave.close()
