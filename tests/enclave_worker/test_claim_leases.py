"""The key manager against claim leases and re-claims (docs/jobs.md, properties 1 and 2).

The host plays the colluding operator on the real embedded chain and contract:

* the counter rule: a dataset's key is released for a job at most ``charges + 1`` times, so no
  more runs hold it than the chain debits its ε for — also when the chain forgets a claim
  (a rollback), and after a host restart that replays the audit log;
* no key under a lapsed lease;
* a ``ClaimRelease`` statement only for a claim that had no key, which ``JobMarket.releaseClaim``
  accepts (the job is Open again, nothing charged), after which no key is released under that
  claim; and no statement once a key was released — both refusals survive a restart of the
  key-manager enclave (fresh trusted memory) and a wiped host log (the trusted part's own memory).
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount
from eth_utils import to_canonical_address

from enclave_worker.audit import CLAIM_RELEASE, RELEASE
from enclave_worker.keymanager import KeyManagerService
from enclave_worker.trusted.onchain import Role
from enclave_worker.trusted.receipt import ClaimRelease, claim_release_signer
from enclave_worker.worker import TrainerWorker
from marketplace.chain import Chain, embedded_lock
from marketplace.consumer import Consumer
from marketplace.contracts import JobStatus
from marketplace.errors import KeyReleaseRefused
from marketplace.provider import list_dataset
from sterling.localnet import LocalNet, attest_and_register
from tests.conftest import toy_package, toy_spec, toy_terms


def _dataset_and_jobs(net: LocalNet, seed: int, jobs: int) -> tuple[int, bytes, list[int]]:
    listed = list_dataset(toy_package(120, seed), net.chain.new_account(), terms=toy_terms(), market=net.market,
                          registry=net.registry, key_manager=net.key_manager, blobs=net.blobs)
    consumer = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs)
    ids = [
        int(consumer.create_job([listed.dataset_id], toy_spec(), epsilon=1.0, delta=1e-5, worker_fee=0).job_id)  # type: ignore[arg-type]
        for _ in range(jobs)
    ]
    net.market.ensure_stake(net.operator, net.market.price_of([listed.dataset_id]))
    return int(listed.dataset_id), listed.content_hash, ids


def _other_trainer(net: LocalNet, operator: LocalAccount) -> TrainerWorker:
    launched = net.platform.launch(Role.TRAINER)
    try:
        attest_and_register(launched, net.verifier, net.registry, operator)
        return TrainerWorker(launched, operator=operator, market=net.market, key_manager=net.key_manager, blobs=net.blobs)
    except BaseException:
        launched.close()
        raise


def _amnesiac(net: LocalNet, state_dir: Path, content_hash: bytes) -> KeyManagerService:
    """A host of the same trusted part that lost its audit log (it keeps the sealed deposit)."""
    host = KeyManagerService(net.key_manager.enclave, market=net.market, registry=net.registry, state_dir=state_dir)
    name = content_hash.hex()  # the dataset's deposits, one per depositing provider
    shutil.copytree(net.key_manager.state_dir / "deposits" / name, host.state_dir / "deposits" / name)
    return host


def _restart_key_manager(net: LocalNet) -> KeyManagerService:
    """A new key-manager enclave process (fresh trusted memory) under a host replaying the same state dir."""
    net.key_manager.enclave.close()
    restarted = net.platform.launch(Role.KEY_MANAGER)
    net.key_manager = KeyManagerService(restarted, market=net.market, registry=net.registry, state_dir=net.key_manager.state_dir)
    return net.key_manager


def _snapshot(chain: Chain) -> int:
    with embedded_lock(chain) or contextlib.nullcontext():
        return int(chain.w3.provider.ethereum_tester.take_snapshot())  # type: ignore[attr-defined]


def _revert(chain: Chain, snapshot: int) -> None:
    with embedded_lock(chain) or contextlib.nullcontext():
        chain.w3.provider.ethereum_tester.revert_to_snapshot(snapshot)  # type: ignore[attr-defined]


def test_releases_never_outnumber_the_chains_epsilon_debits(fresh_localnet: LocalNet, tmp_path: Path) -> None:
    net = fresh_localnet
    dataset_id, content_hash, (job_id, other_job) = _dataset_and_jobs(net, 41, 2)
    operator_b = net.chain.new_account()
    b = _other_trainer(net, operator_b)
    try:
        # Twice the price: B's operator re-claims its own lapsed job below, and the stake it needs
        # is checked after the slash of the lapsed claim.
        net.market.ensure_stake(operator_b, 2 * net.market.price_of([dataset_id]))
        snapshot = _snapshot(net.chain)

        # Trainer A claims the job and gets the key: one release while the chain shows charges 0.
        net.market.claim_job(net.operator, job_id, net.worker.signer)
        key_a = net.worker.prepare_job(job_id)
        net.key_manager.release(job_id=job_id, dataset_id=dataset_id, trainer=net.worker.signer, job_key=key_a)

        # The chain forgets A's claim (a rollback): the job is Open, nothing charged, and B claims it.
        _revert(net.chain, snapshot)
        assert (net.market.job(job_id).status, net.market.job(job_id).charges) == (JobStatus.OPEN, 0)
        net.market.claim_job(operator_b, job_id, b.signer)
        key_b = b.prepare_job(job_id)
        counted = (f"was released 1 time(s) for job {job_id} and the chain shows 0 charged lapsed claim(s): "
                   "at most charges + 1 releases per job and dataset, one per ε debit")
        with pytest.raises(KeyReleaseRefused) as host:
            net.key_manager.release(job_id=job_id, dataset_id=dataset_id, trainer=b.signer, job_key=key_b)
        assert str(host.value) == f"the key of dataset {dataset_id} {counted}"
        # ... also after a host restart that replays its log, and from the trusted part's own count.
        replayed = KeyManagerService(net.key_manager.enclave, market=net.market, registry=net.registry,
                                     state_dir=net.key_manager.state_dir)
        with pytest.raises(KeyReleaseRefused) as again:
            replayed.release(job_id=job_id, dataset_id=dataset_id, trainer=b.signer, job_key=key_b)
        assert str(again.value) == f"the key of dataset {dataset_id} {counted}"
        with pytest.raises(KeyReleaseRefused) as trusted:
            _amnesiac(net, tmp_path / "wiped", content_hash).release(
                job_id=job_id, dataset_id=dataset_id, trainer=b.signer, job_key=key_b)
        assert str(trusted.value) == f"the key of this dataset {counted}"
        net.key_manager = replayed  # one host per log from here on

        # A claim whose lease lapsed gets no key.
        net.market.claim_job(net.operator, other_job, net.worker.signer)
        key_other = net.worker.prepare_job(other_job)
        net.chain.advance_time(net.market.claim_lease() + 1)
        expiry = net.market.job(other_job).lease_expiry
        with pytest.raises(KeyReleaseRefused) as lapsed:
            net.key_manager.release(job_id=other_job, dataset_id=dataset_id, trainer=net.worker.signer, job_key=key_other)
        assert str(lapsed.value).startswith(f"the claim on job {other_job} lapsed at {expiry} (now ")
        assert str(lapsed.value).endswith("): no key is released under a lapsed claim")

        # B's lease lapsed too; its operator re-claims the job and the chain charges the dataset's ε
        # once more (charges 1): now a second release is within the chain's debits.
        net.market.claim_job(operator_b, job_id, b.signer)
        assert net.market.job(job_id).charges == 1
        released = net.key_manager.release(job_id=job_id, dataset_id=dataset_id, trainer=b.signer, job_key=key_b)
        assert len(released) == 80

        decisions = [(e.job_id, e.trainer, e.charges, e.released) for e in net.key_manager.audit_log(content_hash=content_hash)]
        assert decisions == [
            (job_id, net.worker.signer, 0, True),
            (job_id, b.signer, 0, False),
            (job_id, b.signer, 0, False),
            (other_job, net.worker.signer, 0, False),
            (job_id, b.signer, 1, True),
        ]
        assert net.key_manager.audit.verify() == len(decisions) + len(net.key_manager.deposit_log())
    finally:
        b.enclave.close()


def test_a_claim_is_given_back_only_without_keys_and_then_never_gets_one(fresh_localnet: LocalNet, tmp_path: Path) -> None:
    net = fresh_localnet
    dataset_id, content_hash, (free_job, used_job) = _dataset_and_jobs(net, 42, 2)
    for job_id in (free_job, used_job):
        net.market.claim_job(net.operator, job_id, net.worker.signer)
    trainer = net.worker.signer

    # 1. No key was released under the claim on free_job: the key manager signs, and retires the claim.
    signer = net.key_manager.enclave.process.signer
    statement = net.key_manager.claim_release_statement(free_job)
    assert claim_release_signer(ClaimRelease(free_job, to_canonical_address(trainer), 0), statement,
                                chain_id=net.chain.chain_id, market=net.market.address_bytes) == signer
    key_free = net.worker.prepare_job(free_job)
    retired = (f"the claim on job {free_job} by this enclave (charges 0) was given back with a ClaimRelease statement: "
               "no key is released under it")
    with pytest.raises(KeyReleaseRefused) as host:
        net.key_manager.release(job_id=free_job, dataset_id=dataset_id, trainer=trainer, job_key=key_free)
    assert str(host.value) == retired
    with pytest.raises(KeyReleaseRefused) as trusted:  # a host without its log meets the trusted part's refusal
        _amnesiac(net, tmp_path / "wiped-1", content_hash).release(
            job_id=free_job, dataset_id=dataset_id, trainer=trainer, job_key=key_free)
    assert str(trusted.value) == retired
    # A restarted key-manager enclave (fresh memory): its host refuses from the replayed log.
    _restart_key_manager(net)
    with pytest.raises(KeyReleaseRefused) as restarted:
        net.key_manager.release(job_id=free_job, dataset_id=dataset_id, trainer=trainer, job_key=key_free)
    assert str(restarted.value) == retired

    # 2. The contract takes the statement: the job is Open again, nothing charged, ε still reserved.
    remaining = net.market.remaining_epsilon(dataset_id)
    net.market.release_claim(net.operator, free_job, statement)
    job = net.market.job(free_job)
    assert (job.status, job.charges) == (JobStatus.OPEN, 0)
    assert net.market.remaining_epsilon(dataset_id) == remaining

    # 3. A key was released under the claim on used_job: no statement, also after a restart.
    key_used = net.worker.prepare_job(used_job)
    net.key_manager.release(job_id=used_job, dataset_id=dataset_id, trainer=trainer, job_key=key_used)
    had_keys = (f"data keys of job {used_job} were released to enclave {trainer} under its claim (charges 0) "
                "and it did not sign a RunAbandoned: no ClaimRelease; the job can only be re-claimed, with an ε charge, "
                "after its lease lapses")
    with pytest.raises(KeyReleaseRefused) as host:
        net.key_manager.claim_release_statement(used_job)
    assert str(host.value) == had_keys
    with pytest.raises(KeyReleaseRefused) as trusted:
        _amnesiac(net, tmp_path / "wiped-2", content_hash).claim_release_statement(used_job)
    assert str(trusted.value) == had_keys
    _restart_key_manager(net)
    with pytest.raises(KeyReleaseRefused) as restarted:
        net.key_manager.claim_release_statement(used_job)
    assert str(restarted.value) == had_keys
    assert net.market.job(used_job).status is JobStatus.CLAIMED

    # The audit log, a valid hash chain, lists every release and statement decision.
    entries = net.key_manager.audit_log(content_hash=content_hash)
    assert [(e.job_id, e.kind, e.charges, e.released, e.retired) for e in entries] == [
        (free_job, CLAIM_RELEASE, 0, False, True),
        (free_job, RELEASE, 0, False, False),
        (free_job, RELEASE, 0, False, False),
        (used_job, RELEASE, 0, True, False),
        (used_job, CLAIM_RELEASE, 0, False, False),
        (used_job, CLAIM_RELEASE, 0, False, False),
    ]
    assert net.key_manager.audit.verify() == len(entries) + len(net.key_manager.deposit_log())
