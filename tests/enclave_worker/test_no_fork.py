"""One claim, one key, one run: a colluding host cannot fork a job's privacy (docs/jobs.md, property 1).

The host plays the attacker of issue 13: after a normal run it asks the trainer enclave to run the
job again with the same released keys, asks for a second per-job key, asks the key manager for a
second release (also after wiping its own audit log), and restarts the trainer to try once more.
Every attempt is refused with its exact error, and the audit log shows exactly one release.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from enclave_worker.host import EnclaveRequestFailed
from enclave_worker.keymanager import KeyManagerService
from enclave_worker.trusted.onchain import Role
from enclave_worker.worker import TrainerWorker
from marketplace.consumer import Consumer
from marketplace.contracts import JobStatus
from marketplace.errors import KeyReleaseRefused
from marketplace.provider import list_dataset
from sterling.localnet import LocalNet, attest_and_register
from tests.conftest import toy_package, toy_spec, toy_terms


def _claimed_job(net: LocalNet, seed: int) -> tuple[int, int, bytes]:
    provider = net.chain.new_account()
    listed = list_dataset(toy_package(120, seed), provider, terms=toy_terms(), market=net.market,
                          registry=net.registry, key_manager=net.key_manager, blobs=net.blobs)
    consumer = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs)
    created = consumer.create_job([listed.dataset_id], toy_spec(), epsilon=1.0, delta=1e-5, worker_fee=0)  # type: ignore[arg-type]
    net.market.ensure_stake(net.operator, net.market.price_of([listed.dataset_id]))
    net.market.claim_job(net.operator, created.job_id, net.worker.signer)
    return int(created.job_id), int(listed.dataset_id), listed.content_hash


def _run_fields(net: LocalNet, job_id: int, content_hash: bytes, released: bytes) -> dict[str, Any]:
    job = net.market.job(job_id)
    spec = net.blobs.get(job.model_spec_hash.hex())
    return {
        "chain_id": net.chain.chain_id, "market": net.market.address_bytes, "job_id": job_id, "model_spec": spec,
        "model_spec_hash": job.model_spec_hash, "epsilon": job.epsilon, "delta": job.delta, "consumer_key": job.consumer_key,
        "datasets": [{"content_hash": content_hash, "released_key": released, "ciphertext": net.blobs.get(content_hash.hex()),
                      "schema": net.blobs.get(net.market.dataset(job.dataset_ids[0]).schema_hash.hex())}],
    }


def test_a_colluding_host_gets_one_run_per_claim(fresh_localnet: LocalNet, tmp_path: Path) -> None:
    net = fresh_localnet
    job_id, dataset_id, content_hash = _claimed_job(net, 31)
    trainer = net.worker.enclave.process

    job_key = net.worker.prepare_job(job_id)
    released = net.key_manager.release(job_id=job_id, dataset_id=dataset_id, trainer=net.worker.signer, job_key=job_key)
    fields = _run_fields(net, job_id, content_hash, released)
    first = trainer.request("run", **fields)
    assert first["receipt"]["job_id"] == job_id

    # 1. The same run again, with the same released key: refused, nothing sealed.
    with pytest.raises(EnclaveRequestFailed) as again:
        trainer.request("run", **fields)
    assert (again.value.error, again.value.message) == (
        "RunRefused", f"job {job_id} already ran in this enclave: one claim, one key, one run")

    # 2. A second per-job key for the same job (to be wrapped a fresh copy of the data key): refused.
    with pytest.raises(EnclaveRequestFailed) as rekey:
        net.worker.prepare_job(job_id)
    assert (rekey.value.error, rekey.value.message) == (
        "RunRefused", f"job {job_id} was already prepared by this enclave: one claim, one key, one run")

    # 3. A second release from the key manager: its host refuses from the audit log ...
    with pytest.raises(KeyReleaseRefused) as second:
        net.key_manager.release(job_id=job_id, dataset_id=dataset_id, trainer=net.worker.signer, job_key=job_key)
    assert str(second.value) == (
        f"the key of dataset {dataset_id} was already released for job {job_id} to this enclave: one claim, one key")
    # ... and a host that wiped its audit log meets the trusted part's own refusal.
    amnesiac = KeyManagerService(net.key_manager.enclave, market=net.market, registry=net.registry, state_dir=tmp_path / "wiped")
    provider = net.market.dataset(dataset_id).provider
    amnesiac.deposit_path(content_hash, provider).parent.mkdir(parents=True)
    amnesiac.deposit_path(content_hash, provider).write_bytes(net.key_manager.deposit_path(content_hash, provider).read_bytes())
    with pytest.raises(KeyReleaseRefused) as wiped:
        amnesiac.release(job_id=job_id, dataset_id=dataset_id, trainer=net.worker.signer, job_key=job_key)
    assert str(wiped.value) == f"the key of this dataset was already released for job {job_id} to this enclave: one claim, one key"

    # 4. Restart the trainer (a new, registered enclave instance) and try again: the chain shows
    #    the job held by the old instance, so no key is released to the new one.
    restarted = net.platform.launch(Role.TRAINER)
    try:
        attest_and_register(restarted, net.verifier, net.registry, net.operator)
        worker = TrainerWorker(restarted, operator=net.operator, market=net.market, key_manager=net.key_manager, blobs=net.blobs)
        new_key = worker.prepare_job(job_id)
        with pytest.raises(KeyReleaseRefused) as other:
            net.key_manager.release(job_id=job_id, dataset_id=dataset_id, trainer=worker.signer, job_key=new_key)
        assert str(other.value) == f"job {job_id} is not claimed by this trainer enclave"
        # Nor can the new instance open the key released to the old instance's per-job key, and
        # the attempt used up its own one run.
        with pytest.raises(EnclaveRequestFailed) as stolen:
            restarted.process.request("run", **fields)
        assert stolen.value.error == "KeyUnwrapFailed"
        with pytest.raises(EnclaveRequestFailed, match=f"RunRefused: job {job_id} already ran in this enclave"):
            restarted.process.request("run", **fields)
    finally:
        restarted.close()

    # A per-job key certified by the claimed enclave cannot be swapped for another key.
    _, other_dataset, _ = _claimed_job(net, 32)
    forged = type(job_key)(public_key=bytes(32), signature=job_key.signature)
    with pytest.raises(KeyReleaseRefused, match="not certified by the enclave holding the job"):
        net.key_manager.release(job_id=job_id + 1, dataset_id=other_dataset, trainer=net.worker.signer, job_key=forged)

    # The ledger of what happened: one release for the job, every other attempt refused.
    entries = [e for e in net.key_manager.audit_log(content_hash=content_hash) if e.job_id == job_id]
    assert [e.released for e in entries] == [True, False, False]
    assert net.market.job(job_id).status is JobStatus.CLAIMED


def test_the_worker_prepares_each_job_once_and_settles_it(localnet: LocalNet) -> None:
    net = localnet
    provider = net.chain.new_account()
    listed = list_dataset(toy_package(120, 33), provider, terms=toy_terms(), market=net.market,
                          registry=net.registry, key_manager=net.key_manager, blobs=net.blobs)
    consumer = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs)
    created = consumer.create_job([listed.dataset_id], toy_spec(), epsilon=1.0, delta=1e-5, worker_fee=0)  # type: ignore[arg-type]
    net.market.ensure_stake(net.operator, net.market.price_of([listed.dataset_id]))
    net.worker.run_job(created.job_id)
    assert net.market.job(created.job_id).status is JobStatus.COMPLETED
    releases = [e for e in net.key_manager.audit_log(content_hash=listed.content_hash) if e.job_id == created.job_id]
    assert [(e.released, e.trainer) for e in releases] == [(True, net.worker.signer)]
    with pytest.raises(EnclaveRequestFailed, match="RunRefused: job .* was already prepared"):
        net.worker.prepare_job(created.job_id)
