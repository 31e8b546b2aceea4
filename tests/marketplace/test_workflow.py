"""Provider → consumer → worker → settlement through the Python workflows on the embedded chain."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from enclave_worker.trusted.receipt import Receipt, datasets_hash, sign_receipt
from marketplace.chain import Wei
from marketplace.consumer import Consumer
from marketplace.contracts import EPSILON_SCALE, JobStatus
from marketplace.errors import (
    CiphertextTampered,
    ContractReverted,
    JobNotReady,
    KeyReleaseRefused,
)
from marketplace.local_training import predict
from marketplace.provider import ListedDataset, list_dataset
from sterling.localnet import LocalNet
from tests.conftest import toy_package, toy_spec, toy_terms


def _list(net: LocalNet, seed: int, **terms: object) -> tuple[ListedDataset, LocalAccount]:
    provider = net.chain.new_account()
    listed = list_dataset(
        toy_package(200, seed),
        provider,
        terms=toy_terms(**terms),  # type: ignore[arg-type]
        market=net.market,
        registry=net.registry,
        key_manager=net.key_manager,
        blobs=net.blobs,
    )
    return listed, provider


def test_two_provider_job_settles_pays_and_debits_budgets(localnet: LocalNet) -> None:
    net = localnet
    (a, provider_a), (b, provider_b) = _list(net, 1, price=10**17), _list(net, 2, price=2 * 10**17)
    consumer = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs)
    fee = 5 * 10**16
    created = consumer.create_job([a.dataset_id, b.dataset_id], toy_spec(), epsilon=1.0, delta=1e-5, worker_fee=fee)  # type: ignore[arg-type]
    assert created.escrow == 3 * 10**17 + fee
    assert net.market.remaining_epsilon(a.dataset_id) == 9 * EPSILON_SCALE  # 1.0 reserved

    events: list[dict[str, object]] = []
    outcome = net.worker.run_job(created.job_id, progress=events.append)
    job = net.market.job(created.job_id)
    assert job.status is JobStatus.COMPLETED
    assert 0 < job.epsilon_spent <= EPSILON_SCALE
    assert job.prices == (10**17, 2 * 10**17) and job.worker_fee == fee and job.escrow == created.escrow
    assert job.enclave == net.worker.signer and job.operator == net.operator.address
    result = net.market.result_submitted(created.job_id)
    assert (result.model_hash, result.result_hash) == (outcome.receipt.model_hash, outcome.receipt.result_hash)
    assert [e["epoch"] for e in events if e.get("stage") == "training"] == [0, 1, 2, 3]
    # The same progress is on the worker's status board for the UI: stage, epoch and ε only.
    status = net.worker.status.get(created.job_id) if net.worker.status else None
    assert status is not None and status["stage"] == "settled" and status["epoch"] == status["epochs"] == 3
    assert status["epsilon"] <= 1.0 and set(status) <= {"job_id", "stage", "epoch", "epochs", "epsilon", "datasets", "epsilon_spent", "updated_at"}
    # The unspent part of the reservation is released; only the ε spent is debited.
    assert net.market.remaining_epsilon(a.dataset_id) == 10 * EPSILON_SCALE - job.epsilon_spent
    assert net.market.dataset(b.dataset_id).epsilon_reserved == 0
    assert outcome.receipt.datasets_hash == datasets_hash([a.content_hash, b.content_hash])

    assert net.market.pending_withdrawal(provider_a.address) == 10**17
    assert net.market.pending_withdrawal(provider_b.address) == 2 * 10**17
    before = net.chain.balance(provider_b.address)
    amount, tx = net.market.withdraw(provider_b)
    gas_cost = tx.gas_used * int(tx.receipt["effectiveGasPrice"])
    assert net.chain.balance(provider_b.address) == before + amount - gas_cost

    model = consumer.fetch_model(created.job_id)
    test = toy_package(400, 99)
    assert (predict(model, test.features) == test.labels).mean() > 0.7

    # The key manager logged each release for the providers' audit.
    entries = net.key_manager.audit_log(content_hash=a.content_hash)
    assert [(e.job_id, e.released) for e in entries] == [(created.job_id, True)]


def test_a_provider_cannot_withdraw_twice(localnet: LocalNet) -> None:
    net = localnet
    listed, provider = _list(net, 3)
    consumer = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs)
    created = consumer.create_job([listed.dataset_id], toy_spec(epochs=1), epsilon=0.5, delta=1e-5, worker_fee=0)  # type: ignore[arg-type]
    net.worker.run_job(created.job_id)
    amount, _ = net.market.withdraw(provider)
    assert amount == 10**17
    with pytest.raises(ContractReverted) as err:
        net.market.withdraw(provider)
    assert err.value.error == "JobMarketNothingToWithdraw"
    assert err.value.error_args == (provider.address,)


def test_job_asking_more_epsilon_than_a_dataset_allows_reverts_with_its_custom_error(localnet: LocalNet) -> None:
    net = localnet
    listed, _ = _list(net, 4, max_epsilon=2.0)
    consumer = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs)
    with pytest.raises(ContractReverted) as err:
        consumer.create_job([listed.dataset_id], toy_spec(), epsilon=3.0, delta=1e-5, worker_fee=0)  # type: ignore[arg-type]
    assert err.value.error == "JobMarketEpsilonPerJobExceeded"
    assert err.value.error_args == (listed.dataset_id, 3 * EPSILON_SCALE, 2 * EPSILON_SCALE)
    assert net.market.remaining_epsilon(listed.dataset_id) == 10 * EPSILON_SCALE  # nothing reserved


def test_submit_result_signed_by_an_unregistered_key_reverts(localnet: LocalNet) -> None:
    net = localnet
    listed, _ = _list(net, 5)
    consumer = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs)
    created = consumer.create_job([listed.dataset_id], toy_spec(), epsilon=1.0, delta=1e-5, worker_fee=0)  # type: ignore[arg-type]
    net.market.claim_job(net.operator, created.job_id, net.worker.signer)
    forger = Account.create()
    receipt = Receipt(
        job_id=created.job_id,
        datasets_hash=datasets_hash([listed.content_hash]),
        model_hash=hashlib.sha256(b"model").digest(),
        result_hash=hashlib.sha256(b"result").digest(),
        metrics_hash=hashlib.sha256(b"{}").digest(),
        epsilon_spent=EPSILON_SCALE,
    )
    signature = sign_receipt(forger, receipt, chain_id=net.chain.chain_id, market=net.market.address_bytes)
    with pytest.raises(ContractReverted) as err:
        net.market.submit_result(net.operator, receipt, signature)
    assert err.value.error == "JobMarketInvalidReceiptSigner"
    assert err.value.error_args == (forger.address, net.worker.signer)
    assert net.market.job(created.job_id).status is JobStatus.CLAIMED


def test_key_manager_refuses_a_worker_that_has_not_claimed_the_job(localnet: LocalNet) -> None:
    net = localnet
    listed, _ = _list(net, 6)
    other, _ = _list(net, 7)
    consumer = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs)
    created = consumer.create_job([listed.dataset_id], toy_spec(), epsilon=1.0, delta=1e-5, worker_fee=0)  # type: ignore[arg-type]
    job_key = net.worker.prepare_job(created.job_id)
    # Open, not yet claimed by anyone.
    with pytest.raises(KeyReleaseRefused, match="not in the Claimed state"):
        net.key_manager.release(job_id=created.job_id, dataset_id=listed.dataset_id, trainer=net.worker.signer, job_key=job_key)
    net.market.claim_job(net.operator, created.job_id, net.worker.signer)
    # Claimed, but by another enclave than the one asking.
    intruder = Account.create().address
    with pytest.raises(KeyReleaseRefused, match="not claimed by this trainer|not active"):
        net.key_manager.release(job_id=created.job_id, dataset_id=listed.dataset_id, trainer=intruder, job_key=job_key)
    # Claimed by this trainer, but for a dataset outside the job.
    with pytest.raises(KeyReleaseRefused, match="not part of job"):
        net.key_manager.release(job_id=created.job_id, dataset_id=other.dataset_id, trainer=net.worker.signer, job_key=job_key)
    refusals = [e for e in net.key_manager.audit_log() if e.job_id == created.job_id]
    assert [e.released for e in refusals] == [False, False, False]
    # And the rightful trainer does get the key.
    assert net.key_manager.release(job_id=created.job_id, dataset_id=listed.dataset_id, trainer=net.worker.signer, job_key=job_key)


def test_consumer_cannot_fetch_before_settlement_and_detects_a_swapped_result(localnet: LocalNet) -> None:
    net = localnet
    listed, _ = _list(net, 8)
    consumer = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs)
    created = consumer.create_job([listed.dataset_id], toy_spec(epochs=1), epsilon=1.0, delta=1e-5, worker_fee=0)  # type: ignore[arg-type]
    with pytest.raises(JobNotReady):
        consumer.fetch_model(created.job_id)
    net.worker.run_job(created.job_id)
    stored = net.blobs.path(net.market.result_submitted(created.job_id).result_hash.hex())
    original = stored.read_bytes()
    stored.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(CiphertextTampered):
        consumer.fetch_model(created.job_id)
    stored.write_bytes(original)
    assert consumer.fetch_model(created.job_id) is not None
    # Another consumer's key does not open it.
    stranger = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs)
    with pytest.raises(Exception, match="does not open"):
        stranger.fetch_model(created.job_id)


def test_jobs_that_cannot_run_are_refused_before_any_claim_or_key_release(localnet: LocalNet) -> None:
    from enclave_worker.trusted.dataset import DatasetPackage, Schema
    from marketplace.errors import InvalidModelSpec, SchemaMismatch

    net = localnet
    listed, _ = _list(net, 9)
    other_schema = Schema("classification", ("a", "b", "c", "d"), (4,), ("neg", "pos"))
    package = DatasetPackage(np.zeros((10, 4), np.float32), np.zeros(10, np.int64), other_schema)
    provider = net.chain.new_account()
    other = list_dataset(package, provider, terms=toy_terms(), market=net.market, registry=net.registry, key_manager=net.key_manager, blobs=net.blobs)
    consumer = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs)
    # The SDK refuses to create such a job (tested below); a consumer who calls the contract directly can.
    now = net.chain.now()
    spec_hash = bytes.fromhex(net.blobs.put(toy_spec().to_bytes()))
    mixed, _ = net.market.create_job(
        consumer.account, dataset_ids=[listed.dataset_id, other.dataset_id], model_spec_hash=spec_hash, epsilon=EPSILON_SCALE,
        delta=10**13, consumer_key=consumer.public_key, worker_fee=Wei(0), claim_deadline=now + 3600,
        completion_deadline=now + 7200,
    )
    audit_before = len(net.key_manager.audit_log())
    with pytest.raises(SchemaMismatch, match="different schemas"):
        net.worker.run_job(mixed)
    # A job whose published spec is not a valid spec (an architecture outside the registry).
    bogus_hash = bytes.fromhex(net.blobs.put(b'{"architecture": "transformer", "code": "import os"}'))
    bogus, _ = net.market.create_job(
        consumer.account, dataset_ids=[listed.dataset_id], model_spec_hash=bogus_hash, epsilon=EPSILON_SCALE,
        delta=10**13, consumer_key=consumer.public_key, worker_fee=Wei(0), claim_deadline=now + 3600,
        completion_deadline=now + 7200,
    )
    with pytest.raises(InvalidModelSpec, match="architecture"):
        net.worker.run_job(bogus)
    # A spec altered in the blob store after the job was created.
    good = consumer.create_job([listed.dataset_id], toy_spec(), epsilon=1.0, delta=1e-5, worker_fee=0)  # type: ignore[arg-type]
    spec_blob = net.blobs.path(net.market.job(good.job_id).model_spec_hash.hex())
    original = spec_blob.read_bytes()
    spec_blob.write_bytes(original.replace(b'"epochs":3', b'"epochs":9'))
    try:
        with pytest.raises(InvalidModelSpec, match="does not match"):
            net.worker.run_job(good.job_id)
    finally:
        spec_blob.write_bytes(original)
    assert net.market.job(bogus).status is JobStatus.OPEN
    assert net.market.job(mixed).status is JobStatus.OPEN
    assert net.market.job(good.job_id).status is JobStatus.OPEN
    assert len(net.key_manager.audit_log()) == audit_before  # no key was asked for


def test_the_sdk_refuses_a_job_its_trainer_would_refuse_before_anything_is_paid(localnet: LocalNet) -> None:
    from enclave_worker.trusted.dataset import DatasetPackage, Schema
    from enclave_worker.trusted.models import ModelSpec
    from marketplace.errors import InvalidModelSpec, SchemaMismatch

    net = localnet
    listed, _ = _list(net, 21)
    other_schema = Schema("classification", ("e", "f", "g", "h"), (4,), ("neg", "pos"))
    package = DatasetPackage(np.zeros((10, 4), np.float32), np.zeros(10, np.int64), other_schema)
    other = list_dataset(package, net.chain.new_account(), terms=toy_terms(), market=net.market, registry=net.registry,
                         key_manager=net.key_manager, blobs=net.blobs)  # fmt: skip
    consumer = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs)
    balance = net.chain.balance(consumer.account.address)
    resnet = ModelSpec(architecture="resnet", depth=20, epochs=1, batch_size=8, learning_rate=0.01, max_grad_norm=1.0)
    with pytest.raises(InvalidModelSpec, match="needs image features"):
        consumer.create_job([listed.dataset_id], resnet, epsilon=1.0, delta=1e-5, worker_fee=0)  # type: ignore[arg-type]
    with pytest.raises(InvalidModelSpec, match="survival_prior and survival_head are for survival"):
        consumer.create_job([listed.dataset_id], toy_spec(survival_prior=0.8), epsilon=1.0, delta=1e-5, worker_fee=0)  # type: ignore[arg-type]
    with pytest.raises(SchemaMismatch, match=f"datasets {listed.dataset_id} and {other.dataset_id} have different schemas"):
        consumer.create_job([listed.dataset_id, other.dataset_id], toy_spec(), epsilon=1.0, delta=1e-5, worker_fee=0)  # type: ignore[arg-type]
    assert net.chain.balance(consumer.account.address) == balance  # no transaction was sent
    assert not net.blobs.has(resnet.hash().hex())  # nor the spec published
    assert net.market.remaining_epsilon(listed.dataset_id) == 10 * EPSILON_SCALE


def test_unclaimed_and_unfinished_jobs_expire_with_refunds(fresh_localnet: LocalNet) -> None:
    net = fresh_localnet
    listed, _ = _list(net, 11)
    consumer = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs)
    open_job = consumer.create_job([listed.dataset_id], toy_spec(), epsilon=1.0, delta=1e-5, worker_fee=10**16,  # type: ignore[arg-type]
                                   claim_window=600, completion_window=1200)
    claimed = consumer.create_job([listed.dataset_id], toy_spec(), epsilon=1.0, delta=1e-5, worker_fee=0,  # type: ignore[arg-type]
                                  claim_window=600, completion_window=1200)
    net.market.claim_job(net.operator, claimed.job_id, net.worker.signer)
    with pytest.raises(ContractReverted) as err:
        net.market.expire_job(consumer.account, open_job.job_id)
    assert err.value.error == "JobMarketNotExpirable"
    net.chain.advance_time(1300)
    net.market.expire_job(consumer.account, open_job.job_id)
    net.market.expire_job(consumer.account, claimed.job_id)
    assert net.market.job(open_job.job_id).status is JobStatus.EXPIRED
    assert net.market.pending_withdrawal(consumer.account.address) == open_job.escrow + claimed.escrow
    # The open job's reservation is released; the claimed one's stays consumed (data may have been decrypted).
    assert net.market.remaining_epsilon(listed.dataset_id) == 9 * EPSILON_SCALE
    # The key manager no longer releases keys for an expired job.
    with pytest.raises(KeyReleaseRefused):
        net.key_manager.release(
            job_id=claimed.job_id, dataset_id=listed.dataset_id, trainer=net.worker.signer, job_key=net.worker.prepare_job(claimed.job_id)
        )
