"""A provider's controls over a listing, the market's emergency stop and enclave revocation, through MarketClient."""

from __future__ import annotations

import pytest

from enclave_worker.trusted.onchain import Role
from marketplace.chain import Wei
from marketplace.consumer import Consumer
from marketplace.contracts import EPSILON_SCALE, DatasetStatus, JobStatus, epsilon_units
from marketplace.errors import ContractReverted
from sterling.localnet import LocalNet
from marketplace.provider import list_dataset
from tests.conftest import toy_package, toy_spec, toy_terms


def _job(consumer: Consumer, dataset_id: int, **spec: object) -> int:
    return int(consumer.create_job([dataset_id], toy_spec(**spec), epsilon=1.0, delta=1e-5, worker_fee=Wei(0)).job_id)


def test_provider_updates_terms_tops_up_pauses_and_delists(localnet: LocalNet) -> None:
    net = localnet
    market = net.market
    provider = net.chain.new_account()
    listed = list_dataset(toy_package(60, 41), provider, terms=toy_terms(), market=market, registry=net.registry,
                          key_manager=net.key_manager, blobs=net.blobs)  # fmt: skip
    dataset_id = listed.dataset_id
    record = market.dataset(dataset_id)
    assert record.status is DatasetStatus.ACTIVE and not record.restricted and not record.models_restricted
    consumer = Consumer(net.chain.new_account(), market=market, blobs=net.blobs)
    first = _job(consumer, dataset_id)

    # New terms apply to new jobs; the open job keeps its price snapshot.
    market.update_terms(provider, dataset_id, toy_terms(price=3 * 10**17, total=12.0))
    assert market.dataset(dataset_id).terms.price_per_job == 3 * 10**17
    assert market.job(first).prices == (10**17,)
    second = _job(consumer, dataset_id)
    assert market.job(second).prices == (3 * 10**17,)
    assert market.remaining_epsilon(dataset_id) == 10 * EPSILON_SCALE  # 12 total, 2 reserved
    # The budget cannot go below what open jobs hold.
    with pytest.raises(ContractReverted) as err:
        market.update_terms(provider, dataset_id, toy_terms(max_epsilon=1.0, total=1.5))
    assert err.value.error == "DatasetRegistryInvalidTerms" and err.value.error_args == (5,)  # BudgetBelowCommitted
    market.top_up_budget(provider, dataset_id, epsilon_units(3.0))
    assert market.dataset(dataset_id).terms.total_epsilon_budget == epsilon_units(15.0)

    # Only the provider controls the listing.
    with pytest.raises(ContractReverted) as err:
        market.set_dataset_paused(consumer.account, dataset_id, True)
    assert err.value.error == "DatasetRegistryNotProvider"

    market.set_dataset_paused(provider, dataset_id, True)
    assert market.dataset(dataset_id).status is DatasetStatus.PAUSED
    with pytest.raises(ContractReverted) as err:
        _job(consumer, dataset_id)
    assert err.value.error == "JobMarketDatasetUnavailable"
    assert err.value.error_args == (dataset_id, int(DatasetStatus.PAUSED))
    market.set_dataset_paused(provider, dataset_id, False)
    assert market.dataset(dataset_id).status is DatasetStatus.ACTIVE

    market.delist_dataset(provider, dataset_id)
    assert market.dataset(dataset_id).status is DatasetStatus.DELISTED
    with pytest.raises(ContractReverted) as err:
        market.set_dataset_paused(provider, dataset_id, False)
    assert err.value.error == "DatasetRegistryDelisted"
    with pytest.raises(ContractReverted) as err:
        _job(consumer, dataset_id)
    assert err.value.error == "JobMarketDatasetUnavailable"
    # A job created before delisting still completes and pays its snapshot.
    net.worker.run_job(second)
    assert market.job(second).status is JobStatus.COMPLETED
    assert market.pending_withdrawal(provider.address) == 3 * 10**17
    consumer.cancel_job(first)  # cancelling needs no active dataset either
    assert market.dataset(dataset_id).epsilon_reserved == 0


def test_consumer_and_model_allow_lists(localnet: LocalNet) -> None:
    net = localnet
    market = net.market
    provider = net.chain.new_account()
    allowed_spec = toy_spec(epochs=1)
    allowed_hash = bytes.fromhex(net.blobs.put(allowed_spec.to_bytes()))
    other_hash = bytes.fromhex(net.blobs.put(toy_spec(epochs=2).to_bytes()))
    listed = list_dataset(toy_package(60, 42), provider, terms=toy_terms(), market=market, registry=net.registry,
                          key_manager=net.key_manager, blobs=net.blobs, allowed_models=(allowed_hash,))  # fmt: skip
    dataset_id = listed.dataset_id
    record = market.dataset(dataset_id)
    assert record.models_restricted and not record.restricted
    assert market.is_model_allowed(dataset_id, allowed_hash) and not market.is_model_allowed(dataset_id, other_hash)
    consumer = Consumer(net.chain.new_account(), market=market, blobs=net.blobs)
    with pytest.raises(ContractReverted) as err:
        _job(consumer, dataset_id, epochs=2)
    assert err.value.error == "JobMarketModelNotAllowed" and err.value.error_args == (dataset_id, other_hash)
    consumer.cancel_job(_job(consumer, dataset_id, epochs=1))

    market.set_models_allowed(provider, dataset_id, [other_hash], True)
    assert market.is_model_allowed(dataset_id, other_hash)
    market.set_models_allowed(provider, dataset_id, [allowed_hash], False)
    assert not market.is_model_allowed(dataset_id, allowed_hash)

    # Restrict consumers instead: only the listed one may buy, any model.
    market.set_access_restrictions(provider, dataset_id, consumers=True, models=False)
    record = market.dataset(dataset_id)
    assert record.restricted and not record.models_restricted
    assert market.is_model_allowed(dataset_id, allowed_hash)
    with pytest.raises(ContractReverted) as err:
        _job(consumer, dataset_id)
    assert err.value.error == "JobMarketConsumerNotAllowed"
    market.set_consumers_allowed(provider, dataset_id, [consumer.account.address], True)
    assert market.is_consumer_allowed(dataset_id, consumer.account.address)
    consumer.cancel_job(_job(consumer, dataset_id))
    market.set_consumers_allowed(provider, dataset_id, [consumer.account.address], False)
    assert not market.is_consumer_allowed(dataset_id, consumer.account.address)


def test_emergency_pause_stops_new_jobs_but_not_cancels_or_withdrawals(localnet: LocalNet) -> None:
    net = localnet
    market = net.market
    listed = list_dataset(toy_package(60, 43), net.chain.new_account(), terms=toy_terms(), market=market,
                          registry=net.registry, key_manager=net.key_manager, blobs=net.blobs)  # fmt: skip
    consumer = Consumer(net.chain.new_account(), market=market, blobs=net.blobs)
    job_id = _job(consumer, listed.dataset_id)
    with pytest.raises(ContractReverted) as err:
        market.pause(consumer.account)
    assert err.value.error == "AccessControlUnauthorizedAccount"
    market.pause(net.governance)
    try:
        assert market.paused()
        with pytest.raises(ContractReverted) as err:
            _job(consumer, listed.dataset_id)
        assert err.value.error == "EnforcedPause"
        with pytest.raises(ContractReverted) as err:
            market.claim_job(net.operator, job_id, net.worker.signer)
        assert err.value.error == "EnforcedPause"
        consumer.cancel_job(job_id)
        amount, _ = consumer.withdraw()
        assert amount == 10**17
    finally:
        market.unpause(net.governance)
    assert not market.paused()
    assert market.job(job_id).status is JobStatus.CANCELLED


def test_a_revoked_enclave_can_no_longer_claim(fresh_localnet: LocalNet) -> None:
    net = fresh_localnet
    listed = list_dataset(toy_package(60, 44), net.chain.new_account(), terms=toy_terms(), market=net.market,
                          registry=net.registry, key_manager=net.key_manager, blobs=net.blobs)  # fmt: skip
    consumer = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs)
    job_id = _job(consumer, listed.dataset_id)
    signer = net.worker.signer
    assert net.registry.active_operator(signer, Role.TRAINER) == net.operator.address
    with pytest.raises(ContractReverted) as err:
        net.registry.revoke_enclave(net.operator, signer)
    assert err.value.error == "AccessControlUnauthorizedAccount"
    net.registry.revoke_enclave(net.governance, signer)
    record = net.registry.enclave_of(signer)
    assert record.revoked and record.operator == net.operator.address
    assert not net.registry.is_active(signer, Role.TRAINER)
    assert net.registry.active_operator(signer, Role.TRAINER) is None
    with pytest.raises(ContractReverted) as err:
        net.market.claim_job(net.operator, job_id, signer)
    assert err.value.error == "JobMarketEnclaveNotActive" and err.value.error_args == (signer,)
    assert net.market.job(job_id).status is JobStatus.OPEN
