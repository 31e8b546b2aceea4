"""JobMarket and its DatasetRegistry: listing, job lifecycle, ledger, payments, every custom error."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account.messages import encode_typed_data
from eth_utils import keccak, to_checksum_address

from .conftest import (
    CLAIM_LEASE,
    DATASET_ACTIVE,
    DELTA_SCALE,
    EPSILON_SCALE,
    ETHER,
    MODEL_SPEC,
    RECEIPT_TYPES,
    ROLE_TRAINER,
    STATUS_CANCELLED,
    STATUS_CLAIMED,
    STATUS_COMPLETED,
    STATUS_EXPIRED,
    STATUS_NONE,
    STATUS_OPEN,
    TRAINER_MEASUREMENT,
    ZERO_ADDRESS,
    Deployment,
    assert_solvent,
    claim_job,
    complete_job,
    create_job,
    dataset_info,
    deploy,
    domain,
    everyone,
    expect_revert,
    holdings,
    job_info,
    job_request,
    keep_alive,
    list_dataset,
    logged,
    market_funds,
    receipt_for,
    receipt_tuple,
    register,
    submit_result,
    terms,
    transact,
    withdraw_all,
)

PRICE = ETHER // 10
FEE = ETHER // 100


def _request(
    d: Deployment, ids: list[int], *, claim: int | None = None, complete: int | None = None, **kwargs: Any
) -> tuple[Any, ...]:
    """A JobRequest whose maxTotalPrice defaults to ``len(ids) * PRICE + fee`` (works for unknown ids)."""
    kwargs.setdefault("max_total_price", len(ids) * PRICE + kwargs.get("worker_fee", FEE))
    request = list(job_request(d, ids, **kwargs))
    if claim is not None:
        request[7] = claim
    if complete is not None:
        request[8] = complete
    return tuple(request)


def _expect_create(d: Deployment, request: tuple[Any, ...], name: str, *args: Any, value: int | None = None) -> None:
    """Assert that the consumer's createJob(request), paying ``value`` (default maxTotalPrice), reverts."""
    sent = request[6] if value is None else value
    call = d.market.functions.createJob(request)
    expect_revert(lambda: transact(d.w3, call, d.actors.consumer, sent), name, *args)


# --------------------------------------------------------------------------- constants & listing


def test_constants(chain: Deployment) -> None:
    m = chain.market.functions
    assert m.EPSILON_SCALE().call() == EPSILON_SCALE
    assert m.DELTA_SCALE().call() == DELTA_SCALE
    assert m.MAX_DATASETS_PER_JOB().call() == 16
    assert m.MAX_LIST_ENTRIES().call() == 64
    assert m.registry().call() == chain.registry.address
    assert m.paymentToken().call() == ZERO_ADDRESS
    assert m.PAUSER_ROLE().call() == keccak(b"PAUSER_ROLE")
    assert m.RECEIPT_TYPEHASH().call() == keccak(
        b"Receipt(uint256 jobId,bytes32 datasetsHash,bytes32 modelHash,bytes32 resultHash,"
        b"bytes32 metricsHash,uint64 epsilonSpent)"
    )


def test_list_dataset(chain: Deployment) -> None:
    provider = chain.actors.providers[0]
    consumer = chain.actors.consumer
    call = chain.market.functions.listDataset(keccak(b"c"), keccak(b"s"), "blob://c", terms(), [consumer], [])
    receipt = transact(chain.w3, call, provider)
    (listed,) = logged(chain.market, receipt, "DatasetListed")
    assert listed["datasetId"] == 1 and listed["provider"] == provider
    assert listed["contentHash"] == keccak(b"c") and listed["schemaHash"] == keccak(b"s")
    assert listed["uri"] == "blob://c"
    assert tuple(listed["terms"].values()) == terms()
    assert logged(chain.market, receipt, "AccessRestricted") == [{"datasetId": 1, "consumers": True, "models": False}]
    (allowed,) = logged(chain.market, receipt, "ConsumerAllowed")
    assert allowed == {"datasetId": 1, "consumer": consumer}
    assert logged(chain.market, receipt, "ModelAllowed") == []
    info = chain.market.functions.dataset(1).call()
    assert info == (provider, keccak(b"c"), keccak(b"s"), "blob://c", terms(), 0, 0, True, False, DATASET_ACTIVE)
    assert chain.market.functions.datasetCount().call() == 1
    assert chain.market.functions.remainingEpsilon(1).call() == 10 * EPSILON_SCALE
    assert chain.market.functions.isConsumerAllowed(1, consumer).call()
    assert not chain.market.functions.isConsumerAllowed(1, chain.actors.stranger).call()
    assert not chain.market.functions.isConsumerAllowed(2, consumer).call()
    assert chain.market.functions.isModelAllowed(1, keccak(b"any model")).call()
    assert not chain.market.functions.isModelAllowed(2, keccak(b"any model")).call()
    assert list_dataset(chain, provider, content=b"second") == 2


def test_list_dataset_unrestricted_emits_no_access_events(chain: Deployment) -> None:
    call = chain.market.functions.listDataset(keccak(b"c"), keccak(b"s"), "u", terms(), [], [])
    receipt = transact(chain.w3, call, chain.actors.providers[0])
    for event in ("AccessRestricted", "ConsumerAllowed", "ModelAllowed"):
        assert logged(chain.market, receipt, event) == [], event
    assert dataset_info(chain, 1)["restricted"] is False
    assert dataset_info(chain, 1)["modelsRestricted"] is False


@pytest.mark.parametrize(
    ("content", "kwargs", "reason"),
    [
        (None, {}, 0),
        (b"d", {"max_epsilon": 0}, 1),
        (b"d", {"max_epsilon": 11, "budget": 10}, 2),
        (b"d", {"max_delta": 0}, 3),
        (b"d", {"expiry": 1}, 4),
        (b"d", {"price": 2**96}, 6),
    ],
)
def test_list_dataset_invalid_terms(
    chain: Deployment, content: bytes | None, kwargs: dict[str, int], reason: int
) -> None:
    content_hash = keccak(content) if content else b"\x00" * 32
    call = chain.market.functions.listDataset(content_hash, keccak(b"s"), "u", terms(**kwargs), [], [])
    expect_revert(lambda: transact(chain.w3, call, chain.actors.providers[0]), "DatasetRegistryInvalidTerms", reason)


def test_list_dataset_largest_price(chain: Deployment) -> None:
    dataset_id = list_dataset(chain, chain.actors.providers[0], price=2**96 - 1)
    assert dataset_info(chain, dataset_id)["terms"][0] == 2**96 - 1


def test_list_dataset_too_many_entries(chain: Deployment) -> None:
    consumers = [to_checksum_address(f"0x{i + 1:040x}") for i in range(65)]
    models = [keccak(bytes([i])) for i in range(65)]
    provider = chain.actors.providers[0]
    for allowed, models_ in ((consumers, []), ([], models)):
        call = chain.market.functions.listDataset(keccak(b"d"), keccak(b"s"), "u", terms(), allowed, models_)
        expect_revert(lambda call=call: transact(chain.w3, call, provider), "DatasetRegistryTooManyEntries", 65, 64)
    # 64 of each is the documented maximum
    list_dataset(chain, provider, allowed=consumers[:64], models=models[:64])


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
    consumer_before = holdings(chain, a.consumer)

    job_id = create_job(chain, ids, epsilon=EPSILON_SCALE, worker_fee=FEE)
    assert job_id == 1 and m.jobCount().call() == 1
    assert market_funds(chain) == escrow
    assert m.lockedEscrow().call() == escrow
    assert consumer_before - holdings(chain, a.consumer) >= escrow
    for i in ids:
        assert dataset_info(chain, i)["epsilonReserved"] == EPSILON_SCALE
        assert m.remainingEpsilon(i).call() == 9 * EPSILON_SCALE
    job = m.job(job_id).call()
    assert job[0] == a.consumer and job[1] == STATUS_OPEN
    assert job[8] == escrow and job[9] == FEE and list(job[13]) == ids and list(job[14]) == [PRICE] * n_datasets

    assert job[10] > 0 and (job[15], job[16]) == (0, 0)  # claim deadline while Open; no lease, no charge

    receipt = claim_job(chain, job_id)
    (claimed,) = logged(chain.market, receipt, "JobClaimed")
    assert claimed == {"jobId": job_id, "enclave": a.trainer.address, "operator": a.operator}
    job = m.job(job_id).call()
    assert job[1] == STATUS_CLAIMED and job[2] == a.trainer.address and job[3] == a.operator
    # once Claimed, the claim deadline reads 0 and the lease runs claimLease seconds from the claim
    claimed_at = chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"]
    assert (job[10], job[15], job[16]) == (0, claimed_at + CLAIM_LEASE, 0)

    spent = EPSILON_SCALE * 3 // 4
    result = receipt_for(chain, job_id, spent)
    assert result["datasetsHash"] == keccak(b"".join(keccak(bytes([i])) for i in range(n_datasets)))
    tx = submit_result(chain, job_id, result, sender=a.stranger)  # anyone may submit
    debits = logged(chain.market, tx, "BudgetDebited")
    assert [(e["datasetId"], e["epsilonSpent"], e["remaining"]) for e in debits] == [
        (i, spent, 10 * EPSILON_SCALE - spent) for i in ids
    ]
    credits = logged(chain.market, tx, "PaymentCredited")
    assert [(e["account"], e["jobId"], e["amount"]) for e in credits] == [
        *((a.providers[i], job_id, PRICE) for i in range(n_datasets)),
        (a.operator, job_id, FEE),
    ]
    (submitted,) = logged(chain.market, tx, "ResultSubmitted")
    assert submitted == {
        "jobId": job_id,
        "enclave": a.trainer.address,
        "modelHash": keccak(b"model"),
        "resultHash": keccak(b"result"),
        "metricsHash": keccak(b"metrics"),
        "epsilonSpent": spent,
    }
    job = m.job(job_id).call()
    assert job[1] == STATUS_COMPLETED and job[12] == spent
    for i in ids:
        info = dataset_info(chain, i)
        assert (info["epsilonSpent"], info["epsilonReserved"]) == (spent, 0)
    assert m.lockedEscrow().call() == 0
    assert_solvent(chain, everyone(chain))

    for i in range(n_datasets):
        assert m.pendingWithdrawal(a.providers[i]).call() == PRICE
        assert withdraw_all(chain, a.providers[i]) == PRICE
        assert m.pendingWithdrawal(a.providers[i]).call() == 0
        assert m.totalWithdrawn(a.providers[i]).call() == PRICE
    assert withdraw_all(chain, a.operator) == FEE
    assert market_funds(chain) == 0


def test_job_info_views(chain: Deployment) -> None:
    dataset_id = list_dataset(chain, chain.actors.providers[0])
    expect_revert(chain.market.functions.job(1).call, "JobMarketUnknownJob", 1)
    expect_revert(chain.market.functions.datasetsHashOf(0).call, "JobMarketUnknownJob", 0)
    job_id = create_job(chain, [dataset_id], epsilon=5, delta=7)
    job = chain.market.functions.job(job_id).call()
    assert job[4] == keccak(b"model spec") and job[5] == 5 and job[6] == 7
    assert job[7] == keccak(b"consumer key")
    assert job[11] - job[10] == 3600
    info = job_info(chain, job_id)
    assert info["enclave"] == ZERO_ADDRESS and info["operator"] == ZERO_ADDRESS
    assert (info["escrow"], info["workerFee"], info["prices"]) == (PRICE + FEE, FEE, [PRICE])
    assert info["epsilonSpent"] == 0


def test_job_created_event(chain: Deployment) -> None:
    a = chain.actors
    ids = [list_dataset(chain, a.providers[i], content=bytes([i]), price=(i + 1) * PRICE) for i in range(2)]
    request = job_request(chain, ids, epsilon=3, delta=4)
    tx = transact(chain.w3, chain.market.functions.createJob(request), a.consumer, request[6])
    (created,) = logged(chain.market, tx, "JobCreated")
    assert created == {
        "jobId": 1,
        "consumer": a.consumer,
        "datasetIds": ids,
        "modelSpecHash": MODEL_SPEC,
        "epsilon": 3,
        "delta": 4,
        "consumerKey": keccak(b"consumer key"),
        "escrow": 3 * PRICE + FEE,
        "workerFee": FEE,
        "claimDeadline": request[7],
        "completionDeadline": request[8],
    }
    reserved = logged(chain.market, tx, "EpsilonReserved")
    assert reserved == [
        {"datasetId": ids[0], "jobId": 1, "epsilon": 3, "price": PRICE},
        {"datasetId": ids[1], "jobId": 1, "epsilon": 3, "price": 2 * PRICE},
    ]
    assert logged(chain.market, tx, "PaymentCredited") == []  # paid exactly: no change


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
    assert job_info(chain, job_id)["escrow"] == 0
    claim_job(chain, job_id)
    tx = submit_result(chain, job_id, receipt_for(chain, job_id, 1))
    assert logged(chain.market, tx, "PaymentCredited") == []
    expect_revert(
        lambda: transact(chain.w3, chain.market.functions.withdraw(), chain.actors.operator),
        "JobMarketNothingToWithdraw",
        chain.actors.operator,
    )


# --------------------------------------------------------------------------- createJob errors


def test_create_job_dataset_count(chain: Deployment) -> None:
    _expect_create(chain, _request(chain, []), "JobMarketInvalidDatasetCount", 0, 16)
    _expect_create(chain, _request(chain, list(range(1, 18))), "JobMarketInvalidDatasetCount", 17, 16)


def test_max_datasets_per_job_bound(chain: Deployment) -> None:
    a = chain.actors
    ids = [list_dataset(chain, a.providers[i % 3], content=bytes([i])) for i in range(17)]
    _expect_create(chain, _request(chain, ids), "JobMarketInvalidDatasetCount", 17, 16)
    request = job_request(chain, ids[:16])
    tx = transact(chain.w3, chain.market.functions.createJob(request), a.consumer, request[6])
    # Measured on py-evm (Prague), first job on fresh datasets: createJob over 16 datasets uses
    # 583,103 gas and submitResult 414,686; the contract documents < ~1.5M for each loop.
    assert tx["gasUsed"] < 1_500_000, tx["gasUsed"]
    assert job_info(chain, 1)["datasetIds"] == ids[:16]
    settle = complete_job(chain, 1)
    assert settle["gasUsed"] < 1_500_000, settle["gasUsed"]
    assert [dataset_info(chain, i)["epsilonSpent"] for i in ids] == [1] * 16 + [0]


def test_create_job_privacy_parameters(chain: Deployment) -> None:
    ds = list_dataset(chain, chain.actors.providers[0])
    _expect_create(chain, _request(chain, [ds], epsilon=0), "JobMarketInvalidPrivacyParameters", 0, 10**13)
    _expect_create(chain, _request(chain, [ds], delta=0), "JobMarketInvalidPrivacyParameters", EPSILON_SCALE, 0)


def test_create_job_deadlines(chain: Deployment) -> None:
    ds = list_dataset(chain, chain.actors.providers[0])
    now = chain.now()
    _expect_create(
        chain, _request(chain, [ds], claim=now, complete=now + 10), "JobMarketInvalidDeadlines", now, now + 10
    )
    _expect_create(
        chain, _request(chain, [ds], claim=now + 20, complete=now + 10), "JobMarketInvalidDeadlines", now + 20, now + 10
    )
    _expect_create(
        chain, _request(chain, [ds], claim=now + 20, complete=2**32), "JobMarketInvalidDeadlines", now + 20, 2**32
    )


def test_create_job_unknown_and_duplicate_dataset(chain: Deployment) -> None:
    ds = list_dataset(chain, chain.actors.providers[0])
    _expect_create(chain, _request(chain, [ds, 5]), "JobMarketUnknownDataset", 5)
    _expect_create(chain, _request(chain, [0]), "JobMarketUnknownDataset", 0)
    _expect_create(chain, _request(chain, [ds, ds]), "JobMarketDuplicateDataset", ds)


def test_create_job_dataset_expired(chain: Deployment) -> None:
    expiry = chain.now() + 100
    ds = list_dataset(chain, chain.actors.providers[0], expiry=expiry)
    chain.travel_to(expiry)
    _expect_create(chain, _request(chain, [ds]), "JobMarketDatasetExpired", ds, expiry)


def test_create_job_consumer_not_allowed(chain: Deployment) -> None:
    a = chain.actors
    ds = list_dataset(chain, a.providers[0], allowed=[a.stranger])
    _expect_create(chain, _request(chain, [ds]), "JobMarketConsumerNotAllowed", ds, a.consumer)
    assert create_job(chain, [ds], consumer=a.stranger) == 1


def test_create_job_epsilon_per_job_exceeded(chain: Deployment) -> None:
    a = chain.actors
    loose = list_dataset(chain, a.providers[0], content=b"loose", max_epsilon=5 * EPSILON_SCALE)
    strict = list_dataset(chain, a.providers[1], content=b"strict", max_epsilon=EPSILON_SCALE // 2)
    _expect_create(
        chain,
        _request(chain, [loose, strict]),
        "JobMarketEpsilonPerJobExceeded",
        strict,
        EPSILON_SCALE,
        EPSILON_SCALE // 2,
    )
    # all or nothing: nothing was reserved on the first dataset
    assert chain.market.functions.remainingEpsilon(loose).call() == 10 * EPSILON_SCALE


def test_create_job_delta_exceeded(chain: Deployment) -> None:
    ds = list_dataset(chain, chain.actors.providers[0], max_delta=10**12)
    _expect_create(chain, _request(chain, [ds], delta=10**13), "JobMarketDeltaExceeded", ds, 10**13, 10**12)


def test_create_job_budget_exhausted(chain: Deployment) -> None:
    ds = list_dataset(chain, chain.actors.providers[0], max_epsilon=2 * EPSILON_SCALE, budget=3 * EPSILON_SCALE)
    create_job(chain, [ds], epsilon=2 * EPSILON_SCALE)
    _expect_create(
        chain,
        _request(chain, [ds], epsilon=2 * EPSILON_SCALE),
        "JobMarketBudgetExhausted",
        ds,
        2 * EPSILON_SCALE,
        EPSILON_SCALE,
    )


# --------------------------------------------------------------------------- maxTotalPrice and payment


def test_create_job_incorrect_payment(chain: Deployment) -> None:
    a = chain.actors
    ids = [list_dataset(chain, a.providers[i], content=bytes([i])) for i in range(2)]
    required = 2 * PRICE + FEE
    for limit in (required, required + ETHER):
        request = _request(chain, ids, max_total_price=limit)
        # msg.value must be maxTotalPrice exactly, not the (lower) required amount
        for sent in {limit - 1, limit + 1, 0, required} - {limit}:
            _expect_create(chain, request, "JobMarketIncorrectPayment", sent, limit, value=sent)
    assert chain.market.functions.jobCount().call() == 0


def test_price_above_limit(chain: Deployment) -> None:
    ds = list_dataset(chain, chain.actors.providers[0])
    required = PRICE + FEE
    _expect_create(
        chain, _request(chain, [ds], max_total_price=required - 1), "JobMarketPriceAboveLimit", required, required - 1
    )
    # the limit is checked before the payment: an underpaying consumer learns the real price
    _expect_create(chain, _request(chain, [ds], max_total_price=0), "JobMarketPriceAboveLimit", required, 0)


def test_change_above_required_is_credited_back(chain: Deployment) -> None:
    a = chain.actors
    ds = list_dataset(chain, a.providers[0])
    required, change = PRICE + FEE, ETHER // 3
    request = job_request(chain, [ds], max_total_price=required + change)
    tx = transact(chain.w3, chain.market.functions.createJob(request), a.consumer, required + change)
    assert logged(chain.market, tx, "PaymentCredited") == [{"account": a.consumer, "jobId": 1, "amount": change}]
    assert job_info(chain, 1)["escrow"] == required
    assert chain.market.functions.lockedEscrow().call() == required
    assert chain.market.functions.pendingWithdrawal(a.consumer).call() == change
    assert market_funds(chain) == required + change
    assert_solvent(chain, everyone(chain))
    assert withdraw_all(chain, a.consumer) == change
    assert_solvent(chain, everyone(chain))
    # settlement pays the snapshot, not the limit
    tx = complete_job(chain, 1)
    assert [e["amount"] for e in logged(chain.market, tx, "PaymentCredited")] == [PRICE, FEE]


# --------------------------------------------------------------------------- cancelJob


def test_cancel_job_refunds_and_releases(chain: Deployment) -> None:
    a = chain.actors
    ids = [list_dataset(chain, a.providers[i], content=bytes([i])) for i in range(2)]
    other = create_job(chain, ids, epsilon=EPSILON_SCALE // 2)  # stays open: its reservation stays
    job_id = create_job(chain, ids, epsilon=2 * EPSILON_SCALE)
    escrow = 2 * PRICE + FEE
    tx = transact(chain.w3, chain.market.functions.cancelJob(job_id), a.consumer)
    assert logged(chain.market, tx, "EpsilonReleased") == [
        {"datasetId": i, "jobId": job_id, "epsilon": 2 * EPSILON_SCALE} for i in ids
    ]
    assert logged(chain.market, tx, "PaymentCredited") == [{"account": a.consumer, "jobId": job_id, "amount": escrow}]
    assert logged(chain.market, tx, "JobCancelled") == [{"jobId": job_id, "refund": escrow}]
    assert job_info(chain, job_id)["status"] == STATUS_CANCELLED
    for i in ids:
        info = dataset_info(chain, i)
        assert (info["epsilonSpent"], info["epsilonReserved"]) == (0, EPSILON_SCALE // 2)
        assert chain.market.functions.remainingEpsilon(i).call() == 10 * EPSILON_SCALE - EPSILON_SCALE // 2
    assert chain.market.functions.lockedEscrow().call() == job_info(chain, other)["escrow"]
    assert chain.market.functions.pendingWithdrawal(a.consumer).call() == escrow
    assert_solvent(chain, everyone(chain))
    assert withdraw_all(chain, a.consumer) == escrow
    assert_solvent(chain, everyone(chain))


def test_cancel_job_only_consumer_only_open(chain: Deployment) -> None:
    a = chain.actors
    ds = list_dataset(chain, a.providers[0])
    cancel = chain.market.functions.cancelJob
    job_id = create_job(chain, [ds])
    expect_revert(lambda: transact(chain.w3, cancel(job_id), a.stranger), "JobMarketNotConsumer", job_id, a.stranger)
    expect_revert(lambda: transact(chain.w3, cancel(99), a.consumer), "JobMarketInvalidJobStatus", 99, STATUS_NONE)
    claim_job(chain, job_id)
    expect_revert(
        lambda: transact(chain.w3, cancel(job_id), a.consumer), "JobMarketInvalidJobStatus", job_id, STATUS_CLAIMED
    )
    submit_result(chain, job_id, receipt_for(chain, job_id, 1))
    expect_revert(
        lambda: transact(chain.w3, cancel(job_id), a.consumer), "JobMarketInvalidJobStatus", job_id, STATUS_COMPLETED
    )
    cancelled = create_job(chain, [ds])
    transact(chain.w3, cancel(cancelled), a.consumer)
    expect_revert(
        lambda: transact(chain.w3, cancel(cancelled), a.consumer),
        "JobMarketInvalidJobStatus",
        cancelled,
        STATUS_CANCELLED,
    )
    # a cancelled job can be neither claimed nor expired
    expect_revert(lambda: claim_job(chain, cancelled), "JobMarketInvalidJobStatus", cancelled, STATUS_CANCELLED)
    chain.travel_to(job_info(chain, cancelled)["completionDeadline"] + 1)
    expect_revert(
        lambda: transact(chain.w3, chain.market.functions.expireJob(cancelled), a.stranger),
        "JobMarketNotExpirable",
        cancelled,
        STATUS_CANCELLED,
    )
    assert chain.market.functions.pendingWithdrawal(a.consumer).call() == PRICE + FEE


def test_cancel_open_job_after_claim_deadline(chain: Deployment) -> None:
    """Past its claim deadline an unclaimed job is still Open: its consumer may cancel it instead of
    waiting for someone to expire it; either way the same refund is credited once."""
    a = chain.actors
    ds = list_dataset(chain, a.providers[0])
    job_id = create_job(chain, [ds])
    chain.travel_to(job_info(chain, job_id)["claimDeadline"] + 1)
    tx = transact(chain.w3, chain.market.functions.cancelJob(job_id), a.consumer)
    assert logged(chain.market, tx, "JobCancelled") == [{"jobId": job_id, "refund": PRICE + FEE}]
    expect_revert(
        lambda: transact(chain.w3, chain.market.functions.expireJob(job_id), a.stranger),
        "JobMarketNotExpirable",
        job_id,
        STATUS_CANCELLED,
    )
    assert chain.market.functions.remainingEpsilon(ds).call() == 10 * EPSILON_SCALE


# --------------------------------------------------------------------------- claim errors


def test_claim_errors(chain: Deployment) -> None:
    a = chain.actors
    ds = list_dataset(chain, a.providers[0])
    job_id = create_job(chain, [ds])
    claim = chain.market.functions.claimJob
    expect_revert(
        lambda: transact(chain.w3, claim(2, a.trainer.address), a.operator), "JobMarketInvalidJobStatus", 2, STATUS_NONE
    )
    expect_revert(
        lambda: transact(chain.w3, claim(job_id, a.other_trainer.address), a.operator),
        "JobMarketEnclaveNotActive",
        a.other_trainer.address,
    )
    expect_revert(
        lambda: transact(chain.w3, claim(job_id, a.trainer.address), a.other_operator),
        "JobMarketNotEnclaveOperator",
        a.other_operator,
        a.operator,
    )
    claim_job(chain, job_id)
    # a Claimed job is only re-claimable once its lease lapsed (tests/contracts/test_leases_and_stakes.py)
    expect_revert(
        lambda: transact(chain.w3, claim(job_id, a.trainer.address), a.operator),
        "JobMarketLeaseActive",
        job_id,
        job_info(chain, job_id)["leaseExpiry"],
    )
    submit_result(chain, job_id, receipt_for(chain, job_id, 1))
    expect_revert(
        lambda: transact(chain.w3, claim(job_id, a.trainer.address), a.operator),
        "JobMarketInvalidJobStatus",
        job_id,
        STATUS_COMPLETED,
    )


def test_claim_deadline_passed(chain: Deployment) -> None:
    a = chain.actors
    job_id = create_job(chain, [list_dataset(chain, a.providers[0])])
    deadline = chain.market.functions.job(job_id).call()[10]
    chain.travel_to(deadline + 1)
    expect_revert(lambda: claim_job(chain, job_id), "JobMarketClaimDeadlinePassed", job_id, deadline)


def test_revoked_measurement_cannot_claim_or_submit(chain: Deployment) -> None:
    a = chain.actors
    ds = list_dataset(chain, a.providers[0])
    first, second = create_job(chain, [ds]), create_job(chain, [ds])
    claim_job(chain, first)
    transact(chain.w3, chain.registry.functions.revokeMeasurement(ROLE_TRAINER, TRAINER_MEASUREMENT), a.governance)
    expect_revert(lambda: claim_job(chain, second), "JobMarketEnclaveNotActive", a.trainer.address)
    expect_revert(
        lambda: submit_result(chain, first, receipt_for(chain, first, 1)),
        "JobMarketEnclaveNotActive",
        a.trainer.address,
    )
    # re-approval restores the enclave
    transact(chain.w3, chain.registry.functions.approveMeasurement(ROLE_TRAINER, TRAINER_MEASUREMENT), a.governance)
    submit_result(chain, first, receipt_for(chain, first, 1))


def test_deadlines_are_inclusive(chain: Deployment) -> None:
    """A job can be claimed at its claimDeadline and settled at its completionDeadline."""
    job_id = create_job(chain, [list_dataset(chain, chain.actors.providers[0])])
    info = job_info(chain, job_id)
    chain.travel_to(info["claimDeadline"])
    claim_job(chain, job_id)
    receipt = receipt_for(chain, job_id, 1)
    chain.travel_to(info["completionDeadline"])
    tx = submit_result(chain, job_id, receipt)
    assert chain.w3.eth.get_block(tx["blockNumber"])["timestamp"] == info["completionDeadline"]
    assert job_info(chain, job_id)["status"] == STATUS_COMPLETED


# --------------------------------------------------------------------------- submit errors


@pytest.fixture(scope="function")
def claimed_job(chain: Deployment) -> int:
    """A claimed one-dataset job (id 1) plus an open second job (id 2) on the same dataset."""
    ds = list_dataset(chain, chain.actors.providers[0])
    job_id = create_job(chain, [ds])
    create_job(chain, [ds])
    claim_job(chain, job_id)
    return job_id


def test_submit_signed_by_unregistered_key_reverts(chain: Deployment, claimed_job: int) -> None:
    a = chain.actors
    expect_revert(
        lambda: submit_result(chain, claimed_job, receipt_for(chain, claimed_job, 1), key=a.other_trainer),
        "JobMarketInvalidReceiptSigner",
        a.other_trainer.address,
        a.trainer.address,
    )


def test_submit_by_other_registered_trainer_reverts(chain: Deployment, claimed_job: int) -> None:
    a = chain.actors
    register(chain, a.other_trainer, a.other_operator)
    expect_revert(
        lambda: submit_result(chain, claimed_job, receipt_for(chain, claimed_job, 1), key=a.other_trainer),
        "JobMarketInvalidReceiptSigner",
        a.other_trainer.address,
        a.trainer.address,
    )


def test_receipt_replay_on_another_job_rejected(chain: Deployment, claimed_job: int) -> None:
    receipt = receipt_for(chain, claimed_job, 1)
    submit_result(chain, claimed_job, receipt)
    other = 2
    claim_job(chain, other)
    expect_revert(lambda: submit_result(chain, other, receipt), "JobMarketReceiptJobMismatch", other, claimed_job)
    # and replay on the same job hits the status check
    expect_revert(
        lambda: submit_result(chain, claimed_job, receipt), "JobMarketInvalidJobStatus", claimed_job, STATUS_COMPLETED
    )


def test_submit_on_open_job(chain: Deployment, claimed_job: int) -> None:
    expect_revert(
        lambda: submit_result(chain, 2, receipt_for(chain, 2, 1)), "JobMarketInvalidJobStatus", 2, STATUS_OPEN
    )


def test_submit_datasets_mismatch(chain: Deployment, claimed_job: int) -> None:
    expected = chain.market.functions.datasetsHashOf(claimed_job).call()
    wrong = keccak(b"other datasets")
    expect_revert(
        lambda: submit_result(chain, claimed_job, receipt_for(chain, claimed_job, 1, datasets_hash=wrong)),
        "JobMarketReceiptDatasetsMismatch",
        expected,
        wrong,
    )


def test_submit_epsilon_overspent(chain: Deployment, claimed_job: int) -> None:
    expect_revert(
        lambda: submit_result(chain, claimed_job, receipt_for(chain, claimed_job, EPSILON_SCALE + 1)),
        "JobMarketEpsilonOverspent",
        EPSILON_SCALE + 1,
        EPSILON_SCALE,
    )


def test_submit_completion_deadline_passed(chain: Deployment, claimed_job: int) -> None:
    deadline = chain.market.functions.job(claimed_job).call()[11]
    receipt = receipt_for(chain, claimed_job, 1)
    chain.travel_to(deadline + 1)
    expect_revert(
        lambda: submit_result(chain, claimed_job, receipt), "JobMarketCompletionDeadlinePassed", claimed_job, deadline
    )


def test_receipt_spending_less_releases_the_rest(chain: Deployment) -> None:
    a = chain.actors
    ds = list_dataset(chain, a.providers[0])
    first = create_job(chain, [ds], epsilon=2 * EPSILON_SCALE)
    second = create_job(chain, [ds], epsilon=2 * EPSILON_SCALE)
    assert chain.market.functions.remainingEpsilon(ds).call() == 6 * EPSILON_SCALE
    tx = complete_job(chain, first, EPSILON_SCALE // 2)
    # first's 2.0 reservation became 0.5 spent; second still reserves 2.0
    assert logged(chain.market, tx, "BudgetDebited") == [
        {"datasetId": ds, "jobId": first, "epsilonSpent": EPSILON_SCALE // 2, "remaining": 7_500_000}
    ]
    info = dataset_info(chain, ds)
    assert (info["epsilonSpent"], info["epsilonReserved"]) == (EPSILON_SCALE // 2, 2 * EPSILON_SCALE)
    assert job_info(chain, first)["epsilonSpent"] == EPSILON_SCALE // 2
    complete_job(chain, second, 0)  # a receipt may spend nothing
    info = dataset_info(chain, ds)
    assert (info["epsilonSpent"], info["epsilonReserved"]) == (EPSILON_SCALE // 2, 0)
    assert chain.market.functions.remainingEpsilon(ds).call() == 9_500_000
    # the provider is paid in full whatever ε was spent
    assert chain.market.functions.pendingWithdrawal(a.providers[0]).call() == 2 * PRICE


# --------------------------------------------------------------------------- expiry


def test_expire_open_job_releases_epsilon(chain: Deployment) -> None:
    a = chain.actors
    ds = list_dataset(chain, a.providers[0])
    job_id = create_job(chain, [ds])
    deadline = chain.market.functions.job(job_id).call()[10]
    chain.travel_to(deadline)
    expect_revert(
        lambda: transact(chain.w3, chain.market.functions.expireJob(job_id), a.stranger),
        "JobMarketNotExpirable",
        job_id,
        STATUS_OPEN,
    )
    chain.travel_to(deadline + 1)
    tx = transact(chain.w3, chain.market.functions.expireJob(job_id), a.stranger)
    (released,) = logged(chain.market, tx, "EpsilonReleased")
    assert released == {"datasetId": ds, "jobId": job_id, "epsilon": EPSILON_SCALE}
    assert logged(chain.market, tx, "JobExpired") == [{"jobId": job_id, "refund": PRICE + FEE}]
    assert logged(chain.market, tx, "PaymentCredited") == [
        {"account": a.consumer, "jobId": job_id, "amount": PRICE + FEE}
    ]
    assert logged(chain.market, tx, "BudgetDebited") == []
    assert chain.market.functions.remainingEpsilon(ds).call() == 10 * EPSILON_SCALE
    assert chain.market.functions.dataset(ds).call()[5:7] == (0, 0)
    assert chain.market.functions.job(job_id).call()[1] == STATUS_EXPIRED
    assert chain.market.functions.lockedEscrow().call() == 0
    assert_solvent(chain, everyone(chain))
    assert withdraw_all(chain, a.consumer) == PRICE + FEE
    expect_revert(
        lambda: transact(chain.w3, chain.market.functions.expireJob(job_id), a.stranger),
        "JobMarketNotExpirable",
        job_id,
        STATUS_EXPIRED,
    )
    expect_revert(
        lambda: transact(chain.w3, chain.market.functions.cancelJob(job_id), a.consumer),
        "JobMarketInvalidJobStatus",
        job_id,
        STATUS_EXPIRED,
    )


def test_expire_claimed_job_keeps_epsilon_consumed(chain: Deployment, claimed_job: int) -> None:
    """A claim kept alive to its completion deadline but never settled: ε consumed, consumer
    refunded, the holder's operator slashed its job's prices to the provider."""
    a = chain.actors
    deadline = chain.market.functions.job(claimed_job).call()[11]
    keep_alive(chain, claimed_job, deadline)  # renewed: not expirable as a lapsed claim either
    expect_revert(
        lambda: transact(chain.w3, chain.market.functions.expireJob(claimed_job), a.stranger),
        "JobMarketNotExpirable",
        claimed_job,
        STATUS_CLAIMED,
    )
    chain.travel_to(deadline + 1)
    tx = transact(chain.w3, chain.market.functions.expireJob(claimed_job), a.stranger)
    (debited,) = logged(chain.market, tx, "BudgetDebited")
    assert debited["epsilonSpent"] == EPSILON_SCALE
    # job 2 still reserves 1.0 on the same dataset
    assert debited["remaining"] == 8 * EPSILON_SCALE
    assert logged(chain.market, tx, "EpsilonReleased") == []
    assert chain.market.functions.dataset(1).call()[5:7] == (EPSILON_SCALE, EPSILON_SCALE)
    assert logged(chain.market, tx, "StakeSlashed") == [{"operator": a.operator, "jobId": claimed_job, "amount": PRICE}]
    assert chain.market.functions.pendingWithdrawal(a.consumer).call() == PRICE + FEE
    assert chain.market.functions.pendingWithdrawal(a.providers[0]).call() == PRICE  # the slash
    assert chain.market.functions.pendingWithdrawal(a.operator).call() == 0
    assert chain.market.functions.lockedEscrow().call() == PRICE + FEE  # job 2
    assert_solvent(chain, everyone(chain))
    assert withdraw_all(chain, a.consumer) == PRICE + FEE
    # the consumed ε is never given back, even once job 2 expires unclaimed
    transact(chain.w3, chain.market.functions.expireJob(2), a.stranger)
    assert chain.market.functions.dataset(1).call()[5:7] == (EPSILON_SCALE, 0)


def test_expire_unknown_job(chain: Deployment) -> None:
    expect_revert(
        lambda: transact(chain.w3, chain.market.functions.expireJob(3), chain.actors.stranger),
        "JobMarketNotExpirable",
        3,
        STATUS_NONE,
    )


# --------------------------------------------------------------------------- withdrawals


def test_provider_cannot_withdraw_twice(chain: Deployment, claimed_job: int) -> None:
    provider = chain.actors.providers[0]
    tx = submit_result(chain, claimed_job, receipt_for(chain, claimed_job, 1))
    assert logged(chain.market, tx, "PaymentCredited")[0] == {
        "account": provider,
        "jobId": claimed_job,
        "amount": PRICE,
    }
    withdrawal = transact(chain.w3, chain.market.functions.withdraw(), provider)
    assert logged(chain.market, withdrawal, "Withdrawn") == [{"account": provider, "amount": PRICE}]
    expect_revert(
        lambda: transact(chain.w3, chain.market.functions.withdraw(), provider), "JobMarketNothingToWithdraw", provider
    )


@pytest.mark.parametrize("mode", [1, 2], ids=["rejecting", "reentrant"])
def test_withdraw_failure_keeps_balance(chain: Deployment, mode: int) -> None:
    a = chain.actors
    mock = deploy(chain.w3, "PaymentReceiverMock", a.governance, chain.market.address, test=True)
    transact(chain.w3, mock.functions.listDataset(keccak(b"mock"), terms()), a.governance)
    job_id = create_job(chain, [1])
    complete_job(chain, job_id)
    transact(chain.w3, mock.functions.setMode(mode, 0), a.governance)
    expect_revert(
        lambda: transact(chain.w3, mock.functions.withdraw(), a.governance),
        "JobMarketWithdrawFailed",
        mock.address,
        PRICE,
    )
    assert chain.market.functions.pendingWithdrawal(mock.address).call() == PRICE
    transact(chain.w3, mock.functions.setMode(0, 0), a.governance)
    transact(chain.w3, mock.functions.withdraw(), a.governance)
    assert chain.w3.eth.get_balance(mock.address) == PRICE
