"""Provider semantics of the DatasetRegistry part of JobMarket: terms updates, budget top-ups,
pausing and delisting, consumer and model allow-lists, expiry, and the events of each."""

from __future__ import annotations

from typing import Any

import pytest
from eth_utils import keccak, to_checksum_address

from .conftest import (
    DATASET_ACTIVE,
    DATASET_DELISTED,
    DATASET_PAUSED,
    EPSILON_SCALE,
    ETHER,
    MODEL_SPEC,
    STATUS_COMPLETED,
    Deployment,
    assert_solvent,
    claim_job,
    complete_job,
    create_job,
    dataset_info,
    everyone,
    expect_revert,
    job_info,
    job_request,
    list_dataset,
    logged,
    receipt_for,
    submit_result,
    terms,
    transact,
    withdraw_all,
)

PRICE = ETHER // 10
FEE = ETHER // 100
UINT64_MAX = 2**64 - 1

# Terms problems (IDatasetRegistry.TermsProblem).
EPSILON_PER_JOB_ABOVE_BUDGET, EXPIRY_PASSED, BUDGET_BELOW_COMMITTED, PRICE_TOO_HIGH = 2, 4, 5, 6


@pytest.fixture(scope="function")
def dataset(chain: Deployment) -> int:
    """One dataset of providers[0] at the default terms (price 0.1 ether, ε budget 10, 2 per job)."""
    return list_dataset(chain, chain.actors.providers[0])


def _provider_tx(d: Deployment, call: Any) -> Any:
    return transact(d.w3, call, d.actors.providers[0])


def _expect_create(d: Deployment, dataset_ids: list[int], name: str, *args: Any, **kwargs: Any) -> None:
    """Assert that the consumer's createJob on ``dataset_ids`` reverts with ``name(*args)``."""
    consumer = kwargs.pop("consumer", d.actors.consumer)
    request = job_request(d, dataset_ids, **kwargs)
    call = d.market.functions.createJob(request)
    expect_revert(lambda: transact(d.w3, call, consumer, request[6]), name, *args)


# --------------------------------------------------------------------------- updateTerms


def test_update_terms_applies_to_new_jobs_only(chain: Deployment, dataset: int) -> None:
    a = chain.actors
    m = chain.market.functions
    old_job = create_job(chain, [dataset])
    new_terms = terms(price=3 * PRICE, max_epsilon=3 * EPSILON_SCALE, budget=20 * EPSILON_SCALE, max_delta=10**14)
    tx = _provider_tx(chain, m.updateTerms(dataset, new_terms))
    (updated,) = logged(chain.market, tx, "TermsUpdated")
    assert updated["datasetId"] == dataset and tuple(updated["terms"].values()) == new_terms
    info = dataset_info(chain, dataset)
    assert info["terms"] == new_terms
    # the ledger survives the update: the open job's reservation is still there
    assert (info["epsilonSpent"], info["epsilonReserved"]) == (0, EPSILON_SCALE)
    assert m.remainingEpsilon(dataset).call() == 19 * EPSILON_SCALE

    new_job = create_job(chain, [dataset], epsilon=3 * EPSILON_SCALE, delta=10**14)
    assert job_info(chain, old_job)["prices"] == [PRICE]
    assert job_info(chain, old_job)["escrow"] == PRICE + FEE
    assert job_info(chain, new_job)["prices"] == [3 * PRICE]
    assert job_info(chain, new_job)["escrow"] == 3 * PRICE + FEE

    tx = complete_job(chain, old_job)
    assert logged(chain.market, tx, "PaymentCredited")[0] == {
        "account": a.providers[0],
        "jobId": old_job,
        "amount": PRICE,
    }
    tx = complete_job(chain, new_job)
    assert logged(chain.market, tx, "PaymentCredited")[0] == {
        "account": a.providers[0],
        "jobId": new_job,
        "amount": 3 * PRICE,
    }
    assert_solvent(chain, everyone(chain))
    assert withdraw_all(chain, a.providers[0]) == 4 * PRICE


def test_update_terms_price_cut_does_not_refund_old_jobs(chain: Deployment, dataset: int) -> None:
    """A job pays its snapshot even if the provider lowers the price before settlement."""
    job_id = create_job(chain, [dataset])
    _provider_tx(chain, chain.market.functions.updateTerms(dataset, terms(price=0)))
    tx = complete_job(chain, job_id)
    assert [e["amount"] for e in logged(chain.market, tx, "PaymentCredited")] == [PRICE, FEE]


def test_update_terms_budget_below_committed(chain: Deployment, dataset: int) -> None:
    m = chain.market.functions
    spent_job = create_job(chain, [dataset], epsilon=2 * EPSILON_SCALE)
    complete_job(chain, spent_job, 3 * EPSILON_SCALE // 2)  # 1.5 spent
    create_job(chain, [dataset], epsilon=2 * EPSILON_SCALE)  # 2.0 reserved
    committed = 3 * EPSILON_SCALE + EPSILON_SCALE // 2
    provider = chain.actors.providers[0]
    too_low = terms(max_epsilon=EPSILON_SCALE, budget=committed - 1)
    expect_revert(
        lambda: transact(chain.w3, m.updateTerms(dataset, too_low), provider),
        "DatasetRegistryInvalidTerms",
        BUDGET_BELOW_COMMITTED,
    )
    # exactly the committed ε is accepted and leaves nothing for new jobs
    _provider_tx(chain, m.updateTerms(dataset, terms(max_epsilon=EPSILON_SCALE, budget=committed)))
    assert m.remainingEpsilon(dataset).call() == 0
    _expect_create(chain, [dataset], "JobMarketBudgetExhausted", dataset, EPSILON_SCALE, 0)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"price": 2**96}, PRICE_TOO_HIGH),
        ({"max_epsilon": 0}, 1),
        ({"max_epsilon": 11, "budget": 10}, EPSILON_PER_JOB_ABOVE_BUDGET),
        ({"max_delta": 0}, 3),
        ({"expiry": 1}, EXPIRY_PASSED),
    ],
)
def test_update_terms_runs_the_listing_checks(
    chain: Deployment, dataset: int, kwargs: dict[str, int], reason: int
) -> None:
    call = chain.market.functions.updateTerms(dataset, terms(**kwargs))
    expect_revert(lambda: _provider_tx(chain, call), "DatasetRegistryInvalidTerms", reason)
    assert dataset_info(chain, dataset)["terms"] == terms()


def test_update_terms_unknown_dataset(chain: Deployment) -> None:
    call = chain.market.functions.updateTerms(3, terms())
    expect_revert(lambda: _provider_tx(chain, call), "DatasetRegistryUnknownDataset", 3)


# --------------------------------------------------------------------------- topUpBudget


def test_top_up_budget(chain: Deployment, dataset: int) -> None:
    m = chain.market.functions
    create_job(chain, [dataset])
    tx = _provider_tx(chain, m.topUpBudget(dataset, 5 * EPSILON_SCALE))
    assert logged(chain.market, tx, "BudgetToppedUp") == [
        {"datasetId": dataset, "amount": 5 * EPSILON_SCALE, "totalEpsilonBudget": 15 * EPSILON_SCALE}
    ]
    assert dataset_info(chain, dataset)["terms"][2] == 15 * EPSILON_SCALE
    assert m.remainingEpsilon(dataset).call() == 14 * EPSILON_SCALE


def test_top_up_budget_refuses_zero_and_overflow(chain: Deployment, dataset: int) -> None:
    m = chain.market.functions
    provider = chain.actors.providers[0]
    budget = 10 * EPSILON_SCALE
    expect_revert(
        lambda: transact(chain.w3, m.topUpBudget(dataset, 0), provider), "DatasetRegistryInvalidTopUp", dataset, 0
    )
    over = UINT64_MAX - budget + 1
    expect_revert(
        lambda: transact(chain.w3, m.topUpBudget(dataset, over), provider), "DatasetRegistryInvalidTopUp", dataset, over
    )
    # up to exactly uint64 max is fine
    _provider_tx(chain, m.topUpBudget(dataset, over - 1))
    assert m.remainingEpsilon(dataset).call() == UINT64_MAX
    expect_revert(
        lambda: transact(chain.w3, m.topUpBudget(dataset, 1), provider), "DatasetRegistryInvalidTopUp", dataset, 1
    )


def test_top_up_unblocks_an_exhausted_dataset(chain: Deployment) -> None:
    ds = list_dataset(chain, chain.actors.providers[0], max_epsilon=EPSILON_SCALE, budget=EPSILON_SCALE)
    complete_job(chain, create_job(chain, [ds]), EPSILON_SCALE)
    _expect_create(chain, [ds], "JobMarketBudgetExhausted", ds, EPSILON_SCALE, 0)
    _provider_tx(chain, chain.market.functions.topUpBudget(ds, EPSILON_SCALE))
    assert create_job(chain, [ds]) == 2


# --------------------------------------------------------------------------- pause / delist


def test_paused_dataset_refuses_new_jobs_and_finishes_old_ones(chain: Deployment, dataset: int) -> None:
    a = chain.actors
    m = chain.market.functions
    before_claim = create_job(chain, [dataset])
    claimed = create_job(chain, [dataset])
    claim_job(chain, claimed)
    tx = _provider_tx(chain, m.setDatasetPaused(dataset, True))
    assert logged(chain.market, tx, "DatasetStatusChanged") == [{"datasetId": dataset, "status": DATASET_PAUSED}]
    assert dataset_info(chain, dataset)["status"] == DATASET_PAUSED
    _expect_create(chain, [dataset], "JobMarketDatasetUnavailable", dataset, DATASET_PAUSED)

    # jobs created before the pause still claim, settle and pay
    claim_job(chain, before_claim)
    submit_result(chain, before_claim, receipt_for(chain, before_claim, 1))
    submit_result(chain, claimed, receipt_for(chain, claimed, 1))
    assert job_info(chain, before_claim)["status"] == STATUS_COMPLETED
    assert withdraw_all(chain, a.providers[0]) == 2 * PRICE

    tx = _provider_tx(chain, m.setDatasetPaused(dataset, False))
    assert logged(chain.market, tx, "DatasetStatusChanged") == [{"datasetId": dataset, "status": DATASET_ACTIVE}]
    assert create_job(chain, [dataset]) == 3


def test_paused_dataset_blocks_a_multi_dataset_job(chain: Deployment) -> None:
    a = chain.actors
    ids = [list_dataset(chain, a.providers[i], content=bytes([i])) for i in range(2)]
    transact(chain.w3, chain.market.functions.setDatasetPaused(ids[1], True), a.providers[1])
    _expect_create(chain, ids, "JobMarketDatasetUnavailable", ids[1], DATASET_PAUSED)
    assert chain.market.functions.remainingEpsilon(ids[0]).call() == 10 * EPSILON_SCALE


def test_the_provider_publishes_replaces_and_withdraws_the_datasheet(chain: Deployment, dataset: int) -> None:
    m = chain.market.functions
    assert m.datasheetOf(dataset).call() == bytes(32)
    first, second = keccak(b"datasheet v1"), keccak(b"datasheet v2")
    tx = _provider_tx(chain, m.setDatasheet(dataset, first))
    assert logged(chain.market, tx, "DatasheetSet") == [{"datasetId": dataset, "datasheetHash": first}]
    assert m.datasheetOf(dataset).call() == first
    _provider_tx(chain, m.setDatasheet(dataset, second))
    assert m.datasheetOf(dataset).call() == second
    expect_revert(
        lambda: transact(chain.w3, m.setDatasheet(dataset, first), chain.actors.stranger),
        "DatasetRegistryNotProvider", dataset, chain.actors.stranger,
    )  # fmt: skip
    assert m.datasheetOf(dataset).call() == second
    _provider_tx(chain, m.setDatasheet(dataset, bytes(32)))
    assert m.datasheetOf(dataset).call() == bytes(32)
    expect_revert(lambda: m.datasheetOf(dataset + 1000).call(), "DatasetRegistryUnknownDataset", dataset + 1000)


def test_delist_is_terminal(chain: Deployment, dataset: int) -> None:
    a = chain.actors
    m = chain.market.functions
    running = create_job(chain, [dataset])
    to_cancel = create_job(chain, [dataset])
    tx = _provider_tx(chain, m.delistDataset(dataset))
    assert logged(chain.market, tx, "DatasetStatusChanged") == [{"datasetId": dataset, "status": DATASET_DELISTED}]
    assert dataset_info(chain, dataset)["status"] == DATASET_DELISTED
    _expect_create(chain, [dataset], "JobMarketDatasetUnavailable", dataset, DATASET_DELISTED)

    provider = a.providers[0]
    for call in (
        m.delistDataset(dataset),
        m.setDatasetPaused(dataset, False),
        m.setDatasetPaused(dataset, True),
        m.updateTerms(dataset, terms()),
        m.topUpBudget(dataset, 1),
        m.setAccessRestrictions(dataset, False, False),
        m.setConsumersAllowed(dataset, [a.consumer], True),
        m.setModelsAllowed(dataset, [MODEL_SPEC], True),
        m.setDatasheet(dataset, b"\x01" * 32),
    ):
        expect_revert(lambda call=call: transact(chain.w3, call, provider), "DatasetRegistryDelisted", dataset)

    # running jobs finish: one settles and pays, the other is cancelled and refunded
    complete_job(chain, running)
    assert withdraw_all(chain, provider) == PRICE
    transact(chain.w3, m.cancelJob(to_cancel), a.consumer)
    assert dataset_info(chain, dataset)["epsilonReserved"] == 0
    assert withdraw_all(chain, a.consumer) == PRICE + FEE


def test_delisted_dataset_refuses_a_stranger_first_as_non_provider(chain: Deployment, dataset: int) -> None:
    """The provider check comes before the delisted check: a stranger learns nothing new."""
    _provider_tx(chain, chain.market.functions.delistDataset(dataset))
    stranger = chain.actors.stranger
    expect_revert(
        lambda: transact(chain.w3, chain.market.functions.topUpBudget(dataset, 1), stranger),
        "DatasetRegistryNotProvider",
        dataset,
        stranger,
    )


# --------------------------------------------------------------------------- consumer allow-list


def test_consumer_allow_list(chain: Deployment) -> None:
    a = chain.actors
    m = chain.market.functions
    ds = list_dataset(chain, a.providers[0], allowed=[a.stranger])
    assert dataset_info(chain, ds)["restricted"] is True
    _expect_create(chain, [ds], "JobMarketConsumerNotAllowed", ds, a.consumer)

    tx = _provider_tx(chain, m.setConsumersAllowed(ds, [a.consumer, a.other_operator], True))
    assert logged(chain.market, tx, "ConsumerAllowed") == [
        {"datasetId": ds, "consumer": a.consumer},
        {"datasetId": ds, "consumer": a.other_operator},
    ]
    assert m.isConsumerAllowed(ds, a.consumer).call()
    first = create_job(chain, [ds])

    tx = _provider_tx(chain, m.setConsumersAllowed(ds, [a.consumer], False))
    assert logged(chain.market, tx, "ConsumerDisallowed") == [{"datasetId": ds, "consumer": a.consumer}]
    assert logged(chain.market, tx, "ConsumerAllowed") == []
    assert not m.isConsumerAllowed(ds, a.consumer).call()
    _expect_create(chain, [ds], "JobMarketConsumerNotAllowed", ds, a.consumer)
    # removal does not touch the job already bought
    complete_job(chain, first)
    assert create_job(chain, [ds], consumer=a.stranger) == 2


def test_set_access_restrictions(chain: Deployment) -> None:
    a = chain.actors
    m = chain.market.functions
    ds = list_dataset(chain, a.providers[0], allowed=[a.stranger])
    tx = _provider_tx(chain, m.setAccessRestrictions(ds, False, False))
    assert logged(chain.market, tx, "AccessRestricted") == [{"datasetId": ds, "consumers": False, "models": False}]
    assert m.isConsumerAllowed(ds, a.consumer).call()
    assert create_job(chain, [ds]) == 1
    # restricting again brings the kept list back: stranger is still on it, consumer is not
    tx = _provider_tx(chain, m.setAccessRestrictions(ds, True, False))
    assert logged(chain.market, tx, "AccessRestricted") == [{"datasetId": ds, "consumers": True, "models": False}]
    assert dataset_info(chain, ds)["restricted"] is True
    assert m.isConsumerAllowed(ds, a.stranger).call()
    _expect_create(chain, [ds], "JobMarketConsumerNotAllowed", ds, a.consumer)


def test_restricting_an_open_dataset_with_an_empty_list_refuses_everyone(chain: Deployment, dataset: int) -> None:
    a = chain.actors
    _provider_tx(chain, chain.market.functions.setAccessRestrictions(dataset, True, False))
    for consumer in (a.consumer, a.stranger, a.providers[0]):
        _expect_create(chain, [dataset], "JobMarketConsumerNotAllowed", dataset, consumer, consumer=consumer)


def test_allow_list_changes_are_bounded(chain: Deployment, dataset: int) -> None:
    m = chain.market.functions
    many = [to_checksum_address(f"0x{i + 1:040x}") for i in range(65)]
    hashes = [keccak(bytes([i])) for i in range(65)]
    for call in (m.setConsumersAllowed(dataset, many, True), m.setModelsAllowed(dataset, hashes, False)):
        expect_revert(lambda call=call: _provider_tx(chain, call), "DatasetRegistryTooManyEntries", 65, 64)
    tx = _provider_tx(chain, m.setConsumersAllowed(dataset, many[:64], True))
    assert len(logged(chain.market, tx, "ConsumerAllowed")) == 64


# --------------------------------------------------------------------------- model allow-list


def test_model_allow_list(chain: Deployment) -> None:
    a = chain.actors
    m = chain.market.functions
    approved = keccak(b"approved model spec")
    ds = list_dataset(chain, a.providers[0], models=[approved])
    info = dataset_info(chain, ds)
    assert (info["restricted"], info["modelsRestricted"]) == (False, True)
    assert m.isModelAllowed(ds, approved).call()
    assert not m.isModelAllowed(ds, MODEL_SPEC).call()
    _expect_create(chain, [ds], "JobMarketModelNotAllowed", ds, MODEL_SPEC)
    assert create_job(chain, [ds], model_spec=approved) == 1

    tx = _provider_tx(chain, m.setModelsAllowed(ds, [MODEL_SPEC], True))
    assert logged(chain.market, tx, "ModelAllowed") == [{"datasetId": ds, "modelSpecHash": MODEL_SPEC}]
    assert create_job(chain, [ds]) == 2
    assert job_info(chain, 2)["modelSpecHash"] == MODEL_SPEC

    tx = _provider_tx(chain, m.setModelsAllowed(ds, [MODEL_SPEC], False))
    assert logged(chain.market, tx, "ModelDisallowed") == [{"datasetId": ds, "modelSpecHash": MODEL_SPEC}]
    assert not m.isModelAllowed(ds, MODEL_SPEC).call()
    _expect_create(chain, [ds], "JobMarketModelNotAllowed", ds, MODEL_SPEC)
    # lifting the model restriction allows any spec again
    tx = _provider_tx(chain, m.setAccessRestrictions(ds, False, False))
    assert logged(chain.market, tx, "AccessRestricted") == [{"datasetId": ds, "consumers": False, "models": False}]
    assert create_job(chain, [ds], model_spec=keccak(b"anything")) == 3


def test_listing_with_models_emits_their_events(chain: Deployment) -> None:
    a = chain.actors
    specs = [keccak(b"spec a"), keccak(b"spec b")]
    call = chain.market.functions.listDataset(keccak(b"c"), keccak(b"s"), "u", terms(), [a.consumer], specs)
    tx = transact(chain.w3, call, a.providers[0])
    assert logged(chain.market, tx, "AccessRestricted") == [{"datasetId": 1, "consumers": True, "models": True}]
    assert logged(chain.market, tx, "ConsumerAllowed") == [{"datasetId": 1, "consumer": a.consumer}]
    assert logged(chain.market, tx, "ModelAllowed") == [{"datasetId": 1, "modelSpecHash": s} for s in specs]


def test_consumer_and_model_checks_combine(chain: Deployment) -> None:
    a = chain.actors
    spec = keccak(b"spec")
    ds = list_dataset(chain, a.providers[0], allowed=[a.consumer], models=[spec])
    _expect_create(chain, [ds], "JobMarketConsumerNotAllowed", ds, a.stranger, consumer=a.stranger, model_spec=spec)
    _expect_create(chain, [ds], "JobMarketModelNotAllowed", ds, MODEL_SPEC)
    assert create_job(chain, [ds], model_spec=spec) == 1


# --------------------------------------------------------------------------- expiry


def test_dataset_expiry(chain: Deployment) -> None:
    a = chain.actors
    expiry = chain.now() + 1000
    ds = list_dataset(chain, a.providers[0], expiry=expiry)
    before = create_job(chain, [ds], claim_window=5000, completion_window=6000)
    chain.travel_to(expiry - 1)
    assert create_job(chain, [ds]) == 2  # the last second before expiry still works
    chain.travel_to(expiry)
    _expect_create(chain, [ds], "JobMarketDatasetExpired", ds, expiry)
    # a job bought before expiry still claims, settles and pays after it
    complete_job(chain, before)
    assert chain.market.functions.pendingWithdrawal(a.providers[0]).call() == PRICE
    # the provider can extend the listing
    new_expiry = chain.now() + 1000
    tx = _provider_tx(chain, chain.market.functions.updateTerms(ds, terms(expiry=new_expiry)))
    assert tuple(logged(chain.market, tx, "TermsUpdated")[0]["terms"].values()) == terms(expiry=new_expiry)
    assert create_job(chain, [ds]) == 3
    # ...or make it never expire
    _provider_tx(chain, chain.market.functions.updateTerms(ds, terms(expiry=0)))
    chain.travel_to(new_expiry + 10**6)
    assert create_job(chain, [ds]) == 4


def test_expired_dataset_cannot_be_updated_to_a_past_expiry(chain: Deployment) -> None:
    expiry = chain.now() + 100
    ds = list_dataset(chain, chain.actors.providers[0], expiry=expiry)
    chain.travel_to(expiry + 1)
    call = chain.market.functions.updateTerms(ds, terms(expiry=expiry))
    expect_revert(lambda: _provider_tx(chain, call), "DatasetRegistryInvalidTerms", EXPIRY_PASSED)
