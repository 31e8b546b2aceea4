"""A trainer failure surfaces and frees the job at once (issue 14).

The worker puts the error and what became of the claim on the job's status board, which the
gateway serves as the job's live progress and the UI shows in the timeline. A run that failed after
the data keys were released is given back at once on the holding enclave's signed RunAbandoned
(Open again, nothing charged, the next enclave gets the keys); only when the holder cannot sign
(it died) does the claim lapse. An enclave that produced a result can never abandon it."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from enclave_worker.host import EnclaveRequestFailed
from enclave_worker.status import JobStatusBoard
from enclave_worker.trusted.errors import KeyReleaseRefused, ProtocolError, RunRefused
from enclave_worker.trusted.jobkeys import JobKeyRing
from enclave_worker.trusted.receipt import RunAbandoned, sign_claim_release
from enclave_worker.worker import FAILURE_REASON_CHARS, failure_reason
from marketplace import chain as chain_mod
from marketplace.consumer import Consumer
from marketplace.contracts import EPSILON_SCALE, JobStatus
from marketplace.errors import CiphertextTampered
from marketplace.provider import list_dataset
from sterling.localnet import LocalNet, bring_up
from tests.conftest import toy_package, toy_spec, toy_terms


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNet]:
    net = bring_up(chain_mod.embedded(), tmp_path_factory.mktemp("failure-net"), claim_lease=60)
    net.worker.heartbeat_interval = 0.05
    yield net
    net.close()


def _job(net: LocalNet, seed: int) -> tuple[int, bytes, int]:
    provider = net.chain.new_account()
    listed = list_dataset(toy_package(120, seed), provider, terms=toy_terms(), market=net.market,
                          registry=net.registry, key_manager=net.key_manager, blobs=net.blobs)  # fmt: skip
    consumer = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs)
    created = consumer.create_job([listed.dataset_id], toy_spec(), epsilon=1.0, delta=1e-5, worker_fee=0)  # type: ignore[arg-type]
    return created.job_id, listed.content_hash, listed.dataset_id


def _board(net: LocalNet) -> JobStatusBoard:
    board = net.worker.status
    assert board is not None
    return board


def test_a_failure_before_any_key_release_shows_on_the_timeline_as_given_back(net: LocalNet) -> None:
    job_id, _, _ = _job(net, 71)
    net.worker.prepare_job(job_id)  # this enclave refuses to prepare the job a second time
    events: list[dict[str, object]] = []
    with pytest.raises(EnclaveRequestFailed, match="RunRefused"):
        net.worker.run_job(job_id, progress=events.append)
    status = _board(net).get(job_id)
    assert status is not None and status["stage"] == "failed"
    assert str(status["error"]).startswith("EnclaveRequestFailed") and "RunRefused" in str(status["error"])
    assert status["given_back"] is True and "Open again" in str(status["outcome"])
    assert events[-1]["stage"] == "failed"  # the caller's progress callback hears it too
    assert net.market.job(job_id).status is JobStatus.OPEN


def test_a_failure_after_the_keys_were_released_is_given_back_on_the_holders_run_abandoned(net: LocalNet) -> None:
    job_id, content_hash, dataset_id = _job(net, 72)
    stored = net.blobs.path(content_hash.hex())
    original = stored.read_bytes()
    stored.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # the host's copy rots after the keys were released
    holder = net.worker.signer
    audit_before = len(net.key_manager.audit_log())
    with pytest.raises(CiphertextTampered):
        net.worker.run_job(job_id)
    job = net.market.job(job_id)
    status = _board(net).get(job_id)
    assert status is not None and status["stage"] == "failed" and str(status["error"]).startswith("CiphertextTampered")
    assert status["given_back"] is True and "Open again" in str(status["outcome"])
    assert (job.status, job.charges) == (JobStatus.OPEN, 0)
    assert net.market.remaining_epsilon(dataset_id) == 9 * EPSILON_SCALE  # still reserved, nothing debited
    decisions = net.key_manager.audit_log()[audit_before:]
    # Released; then one statement, signed on the holder's RunAbandoned.
    assert [(e.kind, e.released, e.retired, e.abandoned) for e in decisions] == [
        ("release", True, False, False), ("claim_release", False, True, True),
    ]
    assert decisions[1].trainer == holder
    # The same enclave never runs the job again; a fresh one gets the keys with no charge and completes.
    with pytest.raises(Exception, match="held job"):
        net.worker.run_job(job_id)
    stored.write_bytes(original)
    assert net.worker.rotate_enclave() and net.worker.signer != holder
    net.worker.run_job(job_id)
    job = net.market.job(job_id)
    assert (job.status, job.charges) == (JobStatus.COMPLETED, 0)
    assert 9 * EPSILON_SCALE <= net.market.remaining_epsilon(dataset_id) < 10 * EPSILON_SCALE  # debited once: what it spent
    cleared = _board(net).get(job_id)
    assert cleared is not None and cleared["stage"] == "settled" and "error" not in cleared


def test_a_holder_that_died_after_the_release_leaves_the_claim_to_lapse(net: LocalNet, monkeypatch: pytest.MonkeyPatch) -> None:
    job_id, _, _ = _job(net, 73)
    release = net.key_manager.release

    def release_then_die(**kwargs: Any) -> bytes:
        key = release(**kwargs)
        os.kill(net.worker.enclave.process.pid, signal.SIGKILL)
        return key

    monkeypatch.setattr(net.key_manager, "release", release_then_die)
    with pytest.raises(ProtocolError):
        net.worker.run_job(job_id)
    job = net.market.job(job_id)
    status = _board(net).get(job_id)
    assert status is not None and status["stage"] == "failed" and status["given_back"] is False
    assert job.status is JobStatus.CLAIMED and f"lapses at {job.lease_expiry}" in str(status["outcome"])
    assert net.worker.relaunches >= 1  # the worker itself carries on with a new enclave


def test_an_enclave_that_produced_a_result_cannot_abandon_it_and_strangers_cannot_abandon_for_it(net: LocalNet) -> None:
    job_id, _, dataset_id = _job(net, 74)
    net.worker.run_job(job_id)
    job = net.market.job(job_id)
    with pytest.raises(EnclaveRequestFailed, match="produced a result"):
        net.worker.enclave.process.request("abandon", chain_id=net.chain.chain_id, market=net.market.address_bytes,
                                           job_id=job_id, job_charges=job.charges)  # fmt: skip
    # A claimed job with a key released: a RunAbandoned by anyone but the holder gets no ClaimRelease.
    job_id, _, dataset_id = _job(net, 75)
    net.market.claim_job(net.operator, job_id, net.worker.signer)
    net.key_manager.release(job_id=job_id, dataset_id=dataset_id, trainer=net.worker.signer, job_key=net.worker.prepare_job(job_id))
    stranger = net.chain.new_account()
    forged = sign_claim_release(stranger, RunAbandoned(job_id=job_id, enclave=bytes.fromhex(net.worker.signer[2:]), charges=0),
                                chain_id=net.chain.chain_id, market=net.market.address_bytes)  # fmt: skip
    with pytest.raises(KeyReleaseRefused, match="did not sign a RunAbandoned"):
        net.key_manager.claim_release_statement(job_id, abandoned=forged)
    assert net.worker.give_back(job_id)  # the holder's own statement works


def test_failure_reasons_are_one_short_line() -> None:
    assert failure_reason(ValueError("first line\nsecond line")) == "ValueError: first line"
    assert failure_reason(KeyError()) == "KeyError"
    long = failure_reason(RuntimeError("x" * 1000))
    assert len(long) == FAILURE_REASON_CHARS and long.endswith("…")


def test_the_job_key_ring_never_runs_an_abandoned_job_and_never_abandons_a_produced_one() -> None:
    ring, job, other, never = JobKeyRing(), (1, b"\x01" * 20, 7), (1, b"\x01" * 20, 8), (1, b"\x01" * 20, 9)
    ring.prepare(job)
    ring.abandon(job)
    with pytest.raises(RunRefused, match="abandoned by this enclave"):
        ring.take(job)
    with pytest.raises(RunRefused, match="already prepared"):
        ring.prepare(job)
    ring.prepare(other)
    ring.take(other)
    ring.produced(other)
    with pytest.raises(RunRefused, match="produced a result"):
        ring.abandon(other)
    with pytest.raises(RunRefused, match="nothing to abandon"):
        ring.abandon(never)
