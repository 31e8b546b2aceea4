"""Confirmations (issue 17): a key manager told to wait for N blocks releases a dataset's key only
for a claim N blocks deep, so that no reorganisation of that depth can take the claim (and the ε
debit and payment that come with it) back after the key went out; until then it refuses, says
why and logs the refusal, and the claim is left as it is."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from enclave_worker import worker as worker_module
from enclave_worker.audit import RELEASE
from enclave_worker.keymanager import KeyManagerService
from marketplace.contracts import JobStatus
from marketplace.errors import KeyReleaseRefused
from sterling.localnet import LocalNet
from tests.enclave_worker.test_claim_leases import _dataset_and_jobs


def test_a_dataset_key_is_released_only_for_a_claim_as_deep_as_the_confirmations(fresh_localnet: LocalNet, tmp_path: Path) -> None:
    net = fresh_localnet
    dataset_id, content_hash, (job_id,) = _dataset_and_jobs(net, 57, 1)
    state_dir = tmp_path / "careful"
    careful = KeyManagerService(net.key_manager.enclave, market=net.market, registry=net.registry, state_dir=state_dir, confirmations=3)
    shutil.copytree(net.key_manager.state_dir / "deposits" / content_hash.hex(), state_dir / "deposits" / content_hash.hex())

    net.market.claim_job(net.operator, job_id, net.worker.signer)
    job_key = net.worker.prepare_job(job_id)
    for _ in range(3):
        with pytest.raises(KeyReleaseRefused, match=f"job {job_id}'s claim is not yet 3 blocks deep"):
            careful.release(job_id=job_id, dataset_id=dataset_id, trainer=net.worker.signer, job_key=job_key)
        net.chain.advance_time(1)  # one more block on the claim
    released = careful.release(job_id=job_id, dataset_id=dataset_id, trainer=net.worker.signer, job_key=job_key)
    assert released
    decisions = [e for e in careful.audit.loaded() if e.kind == RELEASE]
    assert [e.released for e in decisions] == [False, False, False, True]
    assert "not yet 3 blocks deep" in decisions[0].reason
    with pytest.raises(ValueError, match="at least 0"):
        KeyManagerService(net.key_manager.enclave, market=net.market, registry=net.registry, state_dir=tmp_path / "x", confirmations=-1)


def test_a_worker_waits_for_its_claims_confirmations_before_it_asks_for_keys(
    fresh_localnet: LocalNet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = fresh_localnet
    monkeypatch.setattr(worker_module, "CONFIRMATION_POLL", 0.05)
    dataset_id, content_hash, (job_id,) = _dataset_and_jobs(net, 58, 1)
    state_dir = tmp_path / "careful"
    careful = KeyManagerService(net.key_manager.enclave, market=net.market, registry=net.registry, state_dir=state_dir, confirmations=2)
    shutil.copytree(net.key_manager.state_dir / "deposits" / content_hash.hex(), state_dir / "deposits" / content_hash.hex())
    net.key_manager = careful
    worker = net.add_worker(stake=1.0)
    assert worker.confirmations == 2
    outcome: list[object] = []
    running = threading.Thread(target=lambda: outcome.append(worker.run_job(job_id)), daemon=True)
    running.start()
    deadline = time.monotonic() + 30
    while net.market.job(job_id).status is not JobStatus.CLAIMED:
        assert time.monotonic() < deadline, "the worker never claimed the job"
        time.sleep(0.05)
    time.sleep(0.5)
    assert running.is_alive() and not [e for e in careful.audit.loaded() if e.kind == RELEASE]  # waiting, nothing asked
    net.chain.advance_time(1)
    net.chain.advance_time(1)
    running.join(timeout=120)
    assert outcome and net.market.job(job_id).status is JobStatus.COMPLETED
    assert [e.released for e in careful.audit.loaded() if e.kind == RELEASE] == [True]  # asked once, when the claim was deep enough
