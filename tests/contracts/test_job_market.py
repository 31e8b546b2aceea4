"""JobMarket and its DatasetRegistry: listing, job lifecycle, ledger, payments, every custom error."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account.messages import encode_typed_data
from eth_utils import keccak, to_checksum_address
from web3.logs import DISCARD

from .conftest import (
    DELTA_SCALE,
    EPSILON_SCALE,
    ETHER,
    RECEIPT_TYPES,
    ROLE_TRAINER,
    STATUS_CLAIMED,
    STATUS_COMPLETED,
    STATUS_EXPIRED,
    STATUS_NONE,
    STATUS_OPEN,
    TRAINER_MEASUREMENT,
    Deployment,
    create_job,
    deploy,
    domain,
    expect_revert,
    list_dataset,
    receipt_for,
    receipt_tuple,
    register,
    sign_receipt,
    terms,
    transact,
)

PRICE = ETHER // 10
FEE = ETHER // 100


def _claim(d: Deployment, job_id: int) -> Any:
    return transact(d.w3, d.market.functions.claimJob(job_id, d.actors.trainer.address), d.actors.operator)


def _submit(d: Deployment, job_id: int, receipt: dict[str, Any], *, key: Any = None, sender: str | None = None) -> Any:
    signature = sign_receipt(d, key or d.actors.trainer, receipt)
    call = d.market.functions.submitResult(job_id, receipt_tuple(receipt), signature)
    return transact(d.w3, call, sender or d.actors.operator)


def _balance(d: Deployment, account: str) -> int:
    return int(d.w3.eth.get_balance(account))  # type: ignore[arg-type]


def _withdraw(d: Deployment, account: str) -> int:
    """Withdraw for ``account``; return the net balance change (amount minus gas cost)."""
    before = _balance(d, account)
    receipt = transact(d.w3, d.market.functions.withdraw(), account)
    gas_cost = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    return _balance(d, account) - before + gas_cost


# --------------------------------------------------------------------------- constants & listing


def test_constants(chain: Deployment) -> None:
    m = chain.market.functions
    assert m.EPSILON_SCALE().call() == EPSILON_SCALE
    assert m.DELTA_SCALE().call() == DELTA_SCALE
    assert m.MAX_DATASETS_PER_JOB().call() == 16
    assert m.registry().call() == chain.registry.address
    assert m.RECEIPT_TYPEHASH().call() == keccak(
        b"Receipt(uint256 jobId,bytes32 datasetsHash,bytes32 modelHash,bytes32 resultHash,"
        b"bytes32 metricsHash,uint64 epsilonSpent)"
    )


def test_list_dataset(chain: Deployment) -> None:
    provider = chain.actors.providers[0]
    consumer = chain.actors.consumer
    call = chain.market.functions.listDataset(
        keccak(b"c"), keccak(b"s"), "blob://c", terms(), [consumer]
    )
    receipt = transact(chain.w3, call, provider)
    (listed,) = chain.market.events.DatasetListed().process_receipt(receipt, errors=DISCARD)
    assert listed["args"]["datasetId"] == 1 and listed["args"]["provider"] == provider
    assert listed["args"]["uri"] == "blob://c"
    assert tuple(listed["args"]["terms"].values()) == terms()
    (allowed,) = chain.market.events.ConsumerAllowed().process_receipt(receipt, errors=DISCARD)
    assert allowed["args"]["consumer"] == consumer
    info = chain.market.functions.dataset(1).call()
    assert info == (provider, keccak(b"c"), keccak(b"s"), "blob://c", terms(), 0, 0, True)
    assert chain.market.functions.datasetCount().call() == 1
    assert chain.market.functions.remainingEpsilon(1).call() == 10 * EPSILON_SCALE
    assert chain.market.functions.isConsumerAllowed(1, consumer).call()
    assert not chain.market.functions.isConsumerAllowed(1, chain.actors.stranger).call()
    assert not chain.market.functions.isConsumerAllowed(2, consumer).call()
    assert list_dataset(chain, provider, content=b"second") == 2


@pytest.mark.parametrize(
    ("content", "kwargs", "reason"),
    [
        (None, {}, 0),
        (b"d", {"max_epsilon": 0}, 1),
        (b"d", {"max_epsilon": 11, "budget": 10}, 2),
        (b"d", {"max_delta": 0}, 3),
        (b"d", {"expiry": 1}, 4),
    ],
)
def test_list_dataset_invalid_terms(chain: Deployment, content: bytes | None, kwargs: dict[str, int], reason: int) -> None:
    content_hash = keccak(content) if content else b"\x00" * 32
    call = chain.market.functions.listDataset(content_hash, keccak(b"s"), "u", terms(**kwargs), [])
    expect_revert(
        lambda: transact(chain.w3, call, chain.actors.providers[0]), "DatasetRegistryInvalidTerms", reason
    )


def test_list_dataset_too_many_consumers(chain: Deployment) -> None:
    consumers = [to_checksum_address(f"0x{i + 1:040x}") for i in range(65)]
    call = chain.market.functions.listDataset(keccak(b"d"), keccak(b"s"), "u", terms(), consumers)
    expect_revert(
        lambda: transact(chain.w3, call, chain.actors.providers[0]), "DatasetRegistryTooManyConsumers", 65, 64
    )


def test_unknown_dataset_views(chain: Deployment) -> None:
    for view in (chain.market.functions.dataset(7), chain.market.functions.remainingEpsilon(0)):
        expect_revert(view.call, "DatasetRegistryUnknownDataset", view.args[0])


# --------------------------------------------------------------------------- lifecycle


@pytest.mark.parametrize("n_datasets", [1, 3])
def test_full_lifecycle(chain: Deployment, n_datasets: int) -> None:
    a = chain.actors
    m = chain.market.functions
    ids = [list_dataset(chain, a.providers[i], content=bytes([i])) for i in range(n_datasets)]
    escrow = n_datasets * PRICE + FEE
    consumer_before = _balance(chain, a.consumer)

    job_id = create_job(chain, ids, epsilon=EPSILON_SCALE, worker_fee=FEE)
    assert job_id == 1 and m.jobCount().call() == 1
    assert _balance(chain, chain.market.address) == escrow
    assert m.lockedEscrow().call() == escrow
    assert consumer_before - _balance(chain, a.consumer) >= escrow
    for i in ids:
        info = m.dataset(i).call()
        assert info[6] == EPSILON_SCALE  # reserved
        assert m.remainingEpsilon(i).call() == 9 * EPSILON_SCALE
    job = m.job(job_id).call()
    assert job[0] == a.consumer and job[1] == STATUS_OPEN
    assert job[8] == escrow and job[9] == FEE and list(job[15]) == ids

    receipt = _claim(chain, job_id)
    (claimed,) = chain.market.events.JobClaimed().process_receipt(receipt, errors=DISCARD)
    assert claimed["args"]["enclave"] == a.trainer.address and claimed["args"]["operator"] == a.operator
    job = m.job(job_id).call()
    assert job[1] == STATUS_CLAIMED and job[2] == a.trainer.address and job[3] == a.operator

    spent = EPSILON_SCALE * 3 // 4
    result = receipt_for(chain, job_id, spent)
    assert result["datasetsHash"] == keccak(b"".join(keccak(bytes([i])) for i in range(n_datasets)))
    tx = _submit(chain, job_id, result, sender=a.stranger)  # anyone may submit
    debits = chain.market.events.BudgetDebited().process_receipt(tx, errors=DISCARD)
    assert [(e["args"]["datasetId"], e["args"]["epsilonSpent"], e["args"]["remaining"]) for e in debits] == [
        (i, spent, 10 * EPSILON_SCALE - spent) for i in ids
    ]
    credits = chain.market.events.PaymentCredited().process_receipt(tx, errors=DISCARD)
    assert [(e["args"]["account"], e["args"]["amount"]) for e in credits] == [
        *((a.providers[i], PRICE) for i in range(n_datasets)),
        (a.operator, FEE),
    ]
    (submitted,) = chain.market.events.ResultSubmitted().process_receipt(tx, errors=DISCARD)
    assert submitted["args"]["modelHash"] == keccak(b"model") and submitted["args"]["epsilonSpent"] == spent
    job = m.job(job_id).call()
    assert job[1] == STATUS_COMPLETED and job[12] == spent
    assert job[13] == keccak(b"model") and job[14] == keccak(b"result")
    for i in ids:
        info = m.dataset(i).call()
        assert (info[5], info[6]) == (spent, 0)
    assert m.lockedEscrow().call() == 0

    for i in range(n_datasets):
        assert m.pendingWithdrawal(a.providers[i]).call() == PRICE
        assert _withdraw(chain, a.providers[i]) == PRICE
        assert m.pendingWithdrawal(a.providers[i]).call() == 0
        assert m.totalWithdrawn(a.providers[i]).call() == PRICE
    assert _withdraw(chain, a.operator) == FEE
    assert _balance(chain, chain.market.address) == 0


def test_job_info_views(chain: Deployment) -> None:
    dataset_id = list_dataset(chain, chain.actors.providers[0])
    expect_revert(chain.market.functions.job(1).call, "JobMarketUnknownJob", 1)
    expect_revert(chain.market.functions.datasetsHashOf(0).call, "JobMarketUnknownJob", 0)
    job_id = create_job(chain, [dataset_id], epsilon=5, delta=7)
    job = chain.market.functions.job(job_id).call()
    assert job[4] == keccak(b"model spec") and job[5] == 5 and job[6] == 7
    assert job[7] == keccak(b"consumer key")
    assert job[11] - job[10] == 3600


def test_hash_receipt_matches_eip712(chain: Deployment) -> None:
    result = {
        "jobId": 9,
        "datasetsHash": keccak(b"d"),
        "modelHash": keccak(b"m"),
        "resultHash": keccak(b"r"),
        "metricsHash": keccak(b"x"),
        "epsilonSpent": 5,
    }
    message = encode_typed_data(domain(chain.w3, chain.market, "SterlingJobMarket"), RECEIPT_TYPES, result)
    expected = keccak(b"\x19" + message.version + message.header + message.body)
    assert chain.market.functions.hashReceipt(receipt_tuple(result)).call() == expected


def test_free_dataset_and_no_fee_credit_nothing(chain: Deployment) -> None:
    dataset_id = list_dataset(chain, chain.actors.providers[0], price=0)
    job_id = create_job(chain, [dataset_id], worker_fee=0)
    _claim(chain, job_id)
    tx = _submit(chain, job_id, receipt_for(chain, job_id, 1))
    assert chain.market.events.PaymentCredited().process_receipt(tx, errors=DISCARD) == ()
    expect_revert(
        lambda: transact(chain.w3, chain.market.functions.withdraw(), chain.actors.operator),
        "JobMarketNothingToWithdraw",
        chain.actors.operator,
    )


# --------------------------------------------------------------------------- createJob errors


def _create_call(d: Deployment, ids: list[int], *, epsilon: int = EPSILON_SCALE, delta: int = 10**13,
                 claim: int | None = None, complete: int | None = None, fee: int = FEE) -> Any:
    now = d.now()
    return d.market.functions.createJob(
        ids, keccak(b"spec"), epsilon, delta, keccak(b"key"), fee,
        now + 3600 if claim is None else claim, now + 7200 if complete is None else complete,
    )


def _expect_create(d: Deployment, call: Any, value: int, name: str, *args: Any) -> None:
    expect_revert(lambda: transact(d.w3, call, d.actors.consumer, value), name, *args)


def test_create_job_dataset_count(chain: Deployment) -> None:
    _expect_create(chain, _create_call(chain, []), 0, "JobMarketInvalidDatasetCount", 0, 16)
    _expect_create(chain, _create_call(chain, list(range(1, 18))), 0, "JobMarketInvalidDatasetCount", 17, 16)


def test_create_job_privacy_parameters(chain: Deployment) -> None:
    ds = list_dataset(chain, chain.actors.providers[0])
    _expect_create(chain, _create_call(chain, [ds], epsilon=0), PRICE + FEE, "JobMarketInvalidPrivacyParameters", 0, 10**13)
    _expect_create(chain, _create_call(chain, [ds], delta=0), PRICE + FEE, "JobMarketInvalidPrivacyParameters", EPSILON_SCALE, 0)


def test_create_job_deadlines(chain: Deployment) -> None:
    ds = list_dataset(chain, chain.actors.providers[0])
    now = chain.now()
    _expect_create(chain, _create_call(chain, [ds], claim=now, complete=now + 10), PRICE + FEE,
                   "JobMarketInvalidDeadlines", now, now + 10)
    _expect_create(chain, _create_call(chain, [ds], claim=now + 20, complete=now + 10), PRICE + FEE,
                   "JobMarketInvalidDeadlines", now + 20, now + 10)


def test_create_job_unknown_and_duplicate_dataset(chain: Deployment) -> None:
    ds = list_dataset(chain, chain.actors.providers[0])
    _expect_create(chain, _create_call(chain, [ds, 5]), 2 * PRICE + FEE, "JobMarketUnknownDataset", 5)
    _expect_create(chain, _create_call(chain, [0]), PRICE + FEE, "JobMarketUnknownDataset", 0)
    _expect_create(chain, _create_call(chain, [ds, ds]), 2 * PRICE + FEE, "JobMarketDuplicateDataset", ds)


def test_create_job_dataset_expired(chain: Deployment) -> None:
    expiry = chain.now() + 100
    ds = list_dataset(chain, chain.actors.providers[0], expiry=expiry)
    chain.travel_to(expiry)
    _expect_create(chain, _create_call(chain, [ds]), PRICE + FEE, "JobMarketDatasetExpired", ds, expiry)


def test_create_job_consumer_not_allowed(chain: Deployment) -> None:
    a = chain.actors
    ds = list_dataset(chain, a.providers[0], allowed=[a.stranger])
    _expect_create(chain, _create_call(chain, [ds]), PRICE + FEE, "JobMarketConsumerNotAllowed", ds, a.consumer)
    assert create_job(chain, [ds], consumer=a.stranger) == 1


def test_create_job_epsilon_per_job_exceeded(chain: Deployment) -> None:
    a = chain.actors
    loose = list_dataset(chain, a.providers[0], content=b"loose", max_epsilon=5 * EPSILON_SCALE)
    strict = list_dataset(chain, a.providers[1], content=b"strict", max_epsilon=EPSILON_SCALE // 2)
    _expect_create(chain, _create_call(chain, [loose, strict]), 2 * PRICE + FEE,
                   "JobMarketEpsilonPerJobExceeded", strict, EPSILON_SCALE, EPSILON_SCALE // 2)
    # all or nothing: nothing was reserved on the first dataset
    assert chain.market.functions.remainingEpsilon(loose).call() == 10 * EPSILON_SCALE


def test_create_job_delta_exceeded(chain: Deployment) -> None:
    ds = list_dataset(chain, chain.actors.providers[0], max_delta=10**12)
    _expect_create(chain, _create_call(chain, [ds], delta=10**13), PRICE + FEE, "JobMarketDeltaExceeded", ds, 10**13, 10**12)


def test_create_job_budget_exhausted(chain: Deployment) -> None:
    ds = list_dataset(chain, chain.actors.providers[0], max_epsilon=2 * EPSILON_SCALE, budget=3 * EPSILON_SCALE)
    create_job(chain, [ds], epsilon=2 * EPSILON_SCALE)
    _expect_create(chain, _create_call(chain, [ds], epsilon=2 * EPSILON_SCALE), PRICE + FEE,
                   "JobMarketBudgetExhausted", ds, 2 * EPSILON_SCALE, EPSILON_SCALE)


def test_create_job_incorrect_payment(chain: Deployment) -> None:
    a = chain.actors
    ids = [list_dataset(chain, a.providers[i], content=bytes([i])) for i in range(2)]
    required = 2 * PRICE + FEE
    for sent in (required - 1, required + 1, 0):
        _expect_create(chain, _create_call(chain, ids), sent, "JobMarketIncorrectPayment", sent, required)


# --------------------------------------------------------------------------- claim errors


def test_claim_errors(chain: Deployment) -> None:
    a = chain.actors
    ds = list_dataset(chain, a.providers[0])
    job_id = create_job(chain, [ds])
    claim = chain.market.functions.claimJob
    expect_revert(lambda: transact(chain.w3, claim(2, a.trainer.address), a.operator),
                  "JobMarketInvalidJobStatus", 2, STATUS_NONE)
    expect_revert(lambda: transact(chain.w3, claim(job_id, a.other_trainer.address), a.operator),
                  "JobMarketEnclaveNotActive", a.other_trainer.address)
    expect_revert(lambda: transact(chain.w3, claim(job_id, a.trainer.address), a.other_operator),
                  "JobMarketNotEnclaveOperator", a.other_operator, a.operator)
    _claim(chain, job_id)
    expect_revert(lambda: transact(chain.w3, claim(job_id, a.trainer.address), a.operator),
                  "JobMarketInvalidJobStatus", job_id, STATUS_CLAIMED)


def test_claim_deadline_passed(chain: Deployment) -> None:
    a = chain.actors
    job_id = create_job(chain, [list_dataset(chain, a.providers[0])])
    deadline = chain.market.functions.job(job_id).call()[10]
    chain.travel_to(deadline + 1)
    expect_revert(lambda: _claim(chain, job_id), "JobMarketClaimDeadlinePassed", job_id, deadline)


def test_revoked_measurement_cannot_claim_or_submit(chain: Deployment) -> None:
    a = chain.actors
    ds = list_dataset(chain, a.providers[0])
    first, second = create_job(chain, [ds]), create_job(chain, [ds])
    _claim(chain, first)
    transact(chain.w3, chain.registry.functions.revokeMeasurement(ROLE_TRAINER, TRAINER_MEASUREMENT), a.governance)
    expect_revert(lambda: _claim(chain, second), "JobMarketEnclaveNotActive", a.trainer.address)
    expect_revert(lambda: _submit(chain, first, receipt_for(chain, first, 1)),
                  "JobMarketEnclaveNotActive", a.trainer.address)
    # re-approval restores the enclave
    transact(chain.w3, chain.registry.functions.approveMeasurement(ROLE_TRAINER, TRAINER_MEASUREMENT), a.governance)
    _submit(chain, first, receipt_for(chain, first, 1))


# --------------------------------------------------------------------------- submit errors


@pytest.fixture(scope="function")
def claimed_job(chain: Deployment) -> int:
    """A claimed one-dataset job (id 1) plus an open second job (id 2) on the same dataset."""
    ds = list_dataset(chain, chain.actors.providers[0])
    job_id = create_job(chain, [ds])
    create_job(chain, [ds])
    _claim(chain, job_id)
    return job_id


def test_submit_signed_by_unregistered_key_reverts(chain: Deployment, claimed_job: int) -> None:
    a = chain.actors
    expect_revert(lambda: _submit(chain, claimed_job, receipt_for(chain, claimed_job, 1), key=a.other_trainer),
                  "JobMarketInvalidReceiptSigner", a.other_trainer.address, a.trainer.address)


def test_submit_by_other_registered_trainer_reverts(chain: Deployment, claimed_job: int) -> None:
    a = chain.actors
    register(chain, a.other_trainer, a.other_operator)
    expect_revert(lambda: _submit(chain, claimed_job, receipt_for(chain, claimed_job, 1), key=a.other_trainer),
                  "JobMarketInvalidReceiptSigner", a.other_trainer.address, a.trainer.address)


def test_receipt_replay_on_another_job_rejected(chain: Deployment, claimed_job: int) -> None:
    receipt = receipt_for(chain, claimed_job, 1)
    _submit(chain, claimed_job, receipt)
    other = 2
    _claim(chain, other)
    expect_revert(lambda: _submit(chain, other, receipt), "JobMarketReceiptJobMismatch", other, claimed_job)
    # and replay on the same job hits the status check
    expect_revert(lambda: _submit(chain, claimed_job, receipt), "JobMarketInvalidJobStatus",
                  claimed_job, STATUS_COMPLETED)


def test_submit_on_open_job(chain: Deployment, claimed_job: int) -> None:
    expect_revert(lambda: _submit(chain, 2, receipt_for(chain, 2, 1)), "JobMarketInvalidJobStatus", 2, STATUS_OPEN)


def test_submit_datasets_mismatch(chain: Deployment, claimed_job: int) -> None:
    expected = chain.market.functions.datasetsHashOf(claimed_job).call()
    wrong = keccak(b"other datasets")
    expect_revert(lambda: _submit(chain, claimed_job, receipt_for(chain, claimed_job, 1, datasets_hash=wrong)),
                  "JobMarketReceiptDatasetsMismatch", expected, wrong)


def test_submit_epsilon_overspent(chain: Deployment, claimed_job: int) -> None:
    expect_revert(lambda: _submit(chain, claimed_job, receipt_for(chain, claimed_job, EPSILON_SCALE + 1)),
                  "JobMarketEpsilonOverspent", EPSILON_SCALE + 1, EPSILON_SCALE)


def test_submit_completion_deadline_passed(chain: Deployment, claimed_job: int) -> None:
    deadline = chain.market.functions.job(claimed_job).call()[11]
    receipt = receipt_for(chain, claimed_job, 1)
    chain.travel_to(deadline + 1)
    expect_revert(lambda: _submit(chain, claimed_job, receipt), "JobMarketCompletionDeadlinePassed",
                  claimed_job, deadline)


# --------------------------------------------------------------------------- expiry


def test_expire_open_job_releases_epsilon(chain: Deployment) -> None:
    a = chain.actors
    ds = list_dataset(chain, a.providers[0])
    job_id = create_job(chain, [ds])
    deadline = chain.market.functions.job(job_id).call()[10]
    expect_revert(lambda: transact(chain.w3, chain.market.functions.expireJob(job_id), a.stranger),
                  "JobMarketNotExpirable", job_id, STATUS_OPEN)
    chain.travel_to(deadline + 1)
    tx = transact(chain.w3, chain.market.functions.expireJob(job_id), a.stranger)
    (released,) = chain.market.events.EpsilonReleased().process_receipt(tx, errors=DISCARD)
    assert released["args"]["epsilon"] == EPSILON_SCALE
    (expired,) = chain.market.events.JobExpired().process_receipt(tx, errors=DISCARD)
    assert expired["args"]["refund"] == PRICE + FEE
    assert chain.market.functions.remainingEpsilon(ds).call() == 10 * EPSILON_SCALE
    assert chain.market.functions.dataset(ds).call()[5:7] == (0, 0)
    assert chain.market.functions.job(job_id).call()[1] == STATUS_EXPIRED
    assert chain.market.functions.lockedEscrow().call() == 0
    assert _withdraw(chain, a.consumer) == PRICE + FEE
    expect_revert(lambda: transact(chain.w3, chain.market.functions.expireJob(job_id), a.stranger),
                  "JobMarketNotExpirable", job_id, STATUS_EXPIRED)


def test_expire_claimed_job_keeps_epsilon_consumed(chain: Deployment, claimed_job: int) -> None:
    a = chain.actors
    deadline = chain.market.functions.job(claimed_job).call()[11]
    chain.travel_to(deadline)
    expect_revert(lambda: transact(chain.w3, chain.market.functions.expireJob(claimed_job), a.stranger),
                  "JobMarketNotExpirable", claimed_job, STATUS_CLAIMED)
    chain.travel_to(deadline + 1)
    tx = transact(chain.w3, chain.market.functions.expireJob(claimed_job), a.stranger)
    (debited,) = chain.market.events.BudgetDebited().process_receipt(tx, errors=DISCARD)
    assert debited["args"]["epsilonSpent"] == EPSILON_SCALE
    # job 2 still reserves 1.0 on the same dataset
    assert debited["args"]["remaining"] == 8 * EPSILON_SCALE
    assert chain.market.functions.dataset(1).call()[5:7] == (EPSILON_SCALE, EPSILON_SCALE)
    assert chain.market.functions.pendingWithdrawal(a.consumer).call() == PRICE + FEE
    assert chain.market.functions.pendingWithdrawal(a.providers[0]).call() == 0
    assert chain.market.functions.lockedEscrow().call() == PRICE + FEE  # job 2
    assert _withdraw(chain, a.consumer) == PRICE + FEE


def test_expire_unknown_job(chain: Deployment) -> None:
    expect_revert(lambda: transact(chain.w3, chain.market.functions.expireJob(3), chain.actors.stranger),
                  "JobMarketNotExpirable", 3, STATUS_NONE)


# --------------------------------------------------------------------------- withdrawals


def test_provider_cannot_withdraw_twice(chain: Deployment, claimed_job: int) -> None:
    provider = chain.actors.providers[0]
    _submit(chain, claimed_job, receipt_for(chain, claimed_job, 1))
    assert _withdraw(chain, provider) == PRICE
    expect_revert(lambda: transact(chain.w3, chain.market.functions.withdraw(), provider),
                  "JobMarketNothingToWithdraw", provider)


@pytest.mark.parametrize("mode", [1, 2], ids=["rejecting", "reentrant"])
def test_withdraw_failure_keeps_balance(chain: Deployment, mode: int) -> None:
    a = chain.actors
    mock = deploy(chain.w3, "PaymentReceiverMock", a.governance, chain.market.address, test=True)
    transact(chain.w3, mock.functions.listDataset(keccak(b"mock"), terms()), a.governance)
    job_id = create_job(chain, [1])
    _claim(chain, job_id)
    _submit(chain, job_id, receipt_for(chain, job_id, 1))
    transact(chain.w3, mock.functions.setMode(mode), a.governance)
    expect_revert(lambda: transact(chain.w3, mock.functions.withdraw(), a.governance),
                  "JobMarketWithdrawFailed", mock.address, PRICE)
    assert chain.market.functions.pendingWithdrawal(mock.address).call() == PRICE
    transact(chain.w3, mock.functions.setMode(0), a.governance)
    transact(chain.w3, mock.functions.withdraw(), a.governance)
    assert chain.w3.eth.get_balance(mock.address) == PRICE
