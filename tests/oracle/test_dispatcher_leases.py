"""The dispatcher across failures (docs/jobs.md, property 2): two workers of two operators, a
60-second claim lease, a real embedded chain and real enclave processes.

A job a worker failed before any key release is Open again and runs on the other worker; a
trainer enclave killed mid-run (keys released) leaves its claim to lapse, after which the other
worker re-claims it (one ε charge, the lapsed operator slashed) and completes it; lapsed claims
without released keys are given back for free; jobs nobody can finish are expired and refunded.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from enclave_worker.host import EnclaveRequestFailed
from enclave_worker.trusted.errors import ProtocolError
from enclave_worker.trusted.onchain import Role
from marketplace import chain as chain_mod
from marketplace.consumer import Consumer, CreatedJob
from marketplace.contracts import EPSILON_SCALE, JobStatus
from marketplace.provider import ListedDataset, list_dataset
from oracle.dispatcher import Dispatcher
from sterling.localnet import LocalNet, bring_up
from tests.conftest import toy_package, toy_spec, toy_terms

LEASE = 60


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNet]:
    """A deployment with a 60-second lease and a second worker of another operator; tests move time."""
    net = bring_up(chain_mod.embedded(), tmp_path_factory.mktemp("dispatch-net"), claim_lease=LEASE)
    net.worker.heartbeat_interval = 0.05
    net.add_worker(heartbeat_interval=0.05)
    yield net
    net.close()


def _listed(net: LocalNet, seed: int, **terms: float) -> ListedDataset:
    return list_dataset(toy_package(120, seed), net.chain.new_account(), terms=toy_terms(**terms), market=net.market,  # type: ignore[arg-type]
                        registry=net.registry, key_manager=net.key_manager, blobs=net.blobs)  # fmt: skip


def _job(net: LocalNet, listed: ListedDataset, *, epochs: int = 1, claim_window: int = 3600) -> tuple[CreatedJob, Consumer]:
    consumer = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs)
    created = consumer.create_job([listed.dataset_id], toy_spec(epochs=epochs), epsilon=1.0, delta=1e-5, worker_fee=0,  # type: ignore[arg-type]
                                  claim_window=claim_window)  # fmt: skip
    return created, consumer


def _dispatcher(net: LocalNet) -> Dispatcher:
    return Dispatcher(net.market, net.workers, from_block=net.chain.w3.eth.block_number + 1, retry_backoff=0)


def test_a_job_failed_before_any_release_runs_again_on_the_other_worker(net: LocalNet) -> None:
    a, b = net.workers
    dispatcher = _dispatcher(net)
    listed = _listed(net, 71)
    created, _ = _job(net, listed)
    a.prepare_job(created.job_id)  # worker a's enclave will refuse this job
    assert dispatcher.poll_once() == []
    assert isinstance(dispatcher.failures[created.job_id], EnclaveRequestFailed)
    job = net.market.job(created.job_id)
    assert job.status is JobStatus.OPEN and job.charges == 0
    (outcome,) = dispatcher.poll_once()
    job = net.market.job(created.job_id)
    assert outcome.job_id == created.job_id and job.status is JobStatus.COMPLETED and job.charges == 0
    assert job.enclave == b.signer and job.operator == b.operator.address
    assert created.job_id not in dispatcher.failures
    assert dispatcher.poll_once() == []


def test_a_trainer_killed_mid_run_is_replaced_and_its_job_reclaimed_and_completed_by_the_other_worker(net: LocalNet) -> None:
    a, b = net.workers
    market = net.market
    dispatcher = _dispatcher(net)
    listed = _listed(net, 72)
    created, _ = _job(net, listed, epochs=4)
    stake_a, stake_b = market.stake_of(a.operator.address).amount, market.stake_of(b.operator.address).amount
    killed: list[str] = []

    def kill_at_first_epoch(event: dict[str, object]) -> None:
        if event.get("stage") == "training" and not killed:
            killed.append(a.signer)
            os.kill(a.enclave.process.pid, signal.SIGKILL)

    assert dispatcher.poll_once(progress=kill_at_first_epoch) == []
    assert killed and isinstance(dispatcher.failures[created.job_id], ProtocolError)
    # Keys were released under the claim: no statement, no give-back; the claim is left to lapse.
    job = market.job(created.job_id)
    assert job.status is JobStatus.CLAIMED and job.enclave == killed[0] and job.charges == 0
    # Worker a runs a new, registered enclave.
    assert a.relaunches >= 1 and a.signer != killed[0]
    assert net.registry.active_operator(a.signer, Role.TRAINER) == a.operator.address
    # Nobody may take the job while the lease holds.
    assert dispatcher.poll_once() == []
    assert market.job(created.job_id).status is JobStatus.CLAIMED

    net.chain.advance_time(job.lease_expiry - net.chain.now() + 1)
    (outcome,) = dispatcher.poll_once()
    job = market.job(created.job_id)
    assert outcome.job_id == created.job_id
    assert job.status is JobStatus.COMPLETED and job.charges == 1 and job.enclave == b.signer
    # One charge: the lapsed claim's ε in full, plus what the completing run spent.
    assert market.remaining_epsilon(listed.dataset_id) == 10 * EPSILON_SCALE - EPSILON_SCALE - job.epsilon_spent
    assert market.stake_of(a.operator.address).amount < stake_a  # the lapsed operator answers for it
    assert market.stake_of(b.operator.address).amount == stake_b


def test_the_dispatcher_gives_back_keyless_lapsed_claims_and_expires_what_nobody_can_finish(net: LocalNet) -> None:
    a, b = net.workers
    market = net.market
    dispatcher = _dispatcher(net)
    plenty, scarce = _listed(net, 73), _listed(net, 74, max_epsilon=1.0, total=1.0)
    unclaimed, unclaimed_consumer = _job(net, plenty, claim_window=30)
    keyless, _ = _job(net, plenty)
    exhausted, exhausted_consumer = _job(net, scarce)
    # Worker b's enclave claimed `keyless` and its host died before asking for keys; it claimed
    # `exhausted`, got the key, and died. Nothing renews either lease.
    market.claim_job(b.operator, keyless.job_id, b.signer)
    market.claim_job(b.operator, exhausted.job_id, b.signer)
    job_key = b.prepare_job(exhausted.job_id)
    net.key_manager.release(job_id=exhausted.job_id, dataset_id=scarce.dataset_id, trainer=b.signer, job_key=job_key)
    stake_b = market.stake_of(b.operator.address).amount

    net.chain.advance_time(LEASE + 1)
    outcomes = dispatcher.poll_once()
    assert [o.job_id for o in outcomes] == [keyless.job_id]
    # Past its claim deadline: expired, the consumer refunded, the reservation released.
    assert market.job(unclaimed.job_id).status is JobStatus.EXPIRED
    assert market.pending_withdrawal(unclaimed_consumer.account.address) == unclaimed.escrow
    # Lapsed with no key released: given back for free, then run.
    job = market.job(keyless.job_id)
    assert job.status is JobStatus.COMPLETED and job.charges == 0 and job.enclave == a.signer
    assert not b.can_take(keyless.job_id)  # b's enclave held the retired claim: it gets no key for the job
    assert market.remaining_epsilon(plenty.dataset_id) == 10 * EPSILON_SCALE - job.epsilon_spent
    # Lapsed after a release, and a re-claim would find no ε left: left alone to expire.
    job = market.job(exhausted.job_id)
    assert job.status is JobStatus.CLAIMED and job.charges == 0 and market.remaining_epsilon(scarce.dataset_id) == 0

    net.chain.advance_time(LEASE)
    assert dispatcher.poll_once() == []
    assert market.job(exhausted.job_id).status is JobStatus.EXPIRED
    assert market.pending_withdrawal(exhausted_consumer.account.address) == exhausted.escrow
    assert market.stake_of(b.operator.address).amount < stake_b  # expired after a key release: slashed
    assert dispatcher.poll_once() == []
