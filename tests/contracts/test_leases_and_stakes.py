"""Crash-safe jobs (issue 13, docs/jobs.md): claim leases, renewal, re-claims that charge the
lapsed claim its ε and slash its operator, key-manager-certified releases, operator stakes with
unbonding, and the attacks on them."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data

from .conftest import (
    CLAIM_LEASE,
    EPSILON_SCALE,
    ETHER,
    KEY_MANAGER_RELEASE_TYPES,
    STAKE,
    STATUS_CLAIMED,
    STATUS_EXPIRED,
    STATUS_OPEN,
    UNBONDING_PERIOD,
    ZERO_ADDRESS,
    Deployment,
    assert_solvent,
    claim_job,
    create_job,
    dataset_info,
    deploy,
    deploy_token_market,
    deposit_stake,
    domain,
    everyone,
    expect_revert,
    job_info,
    job_request,
    list_dataset,
    logged,
    receipt_for,
    register,
    register_key_manager,
    sign_release,
    stake_of,
    submit_result,
    transact,
    withdraw_all,
)

PRICE = ETHER // 10
FEE = ETHER // 100


def _block_time(d: Deployment, tx: Any) -> int:
    return int(d.w3.eth.get_block(tx["blockNumber"])["timestamp"])


def _other_trainer(d: Deployment) -> None:
    """Register the second trainer enclave to ``other_operator`` (staked by the fixture)."""
    register(d, d.actors.other_trainer, d.actors.other_operator)


def _reclaim(d: Deployment, job_id: int) -> Any:
    """The other trainer re-claims ``job_id`` (its lease must have lapsed)."""
    return claim_job(d, job_id, enclave=d.actors.other_trainer, operator=d.actors.other_operator)


def _lapse(d: Deployment, job_id: int) -> int:
    """Travel one second past ``job_id``'s lease; returns the lease expiry."""
    lease = job_info(d, job_id)["leaseExpiry"]
    d.travel_to(lease + 1)
    return lease


def _release(d: Deployment, job_id: int, sender: str, *, key: Any = None, **overrides: Any) -> Any:
    """releaseClaim(job_id) from ``sender`` with a statement for the job's current holder and charges."""
    info = job_info(d, job_id)
    enclave = overrides.pop("enclave", info["enclave"])
    charges = overrides.pop("charges", info["charges"])
    signature = sign_release(d, key or d.actors.key_manager, job_id, enclave, charges, **overrides)
    return transact(d.w3, d.market.functions.releaseClaim(job_id, signature), sender)


def _release_call(d: Deployment, job_id: int, signature: bytes) -> Any:
    return d.market.functions.releaseClaim(job_id, signature)


@pytest.fixture(scope="function")
def two_datasets(chain: Deployment) -> list[int]:
    """Two datasets priced 0.1 and 0.2 ether (providers[0], providers[1])."""
    a = chain.actors
    return [list_dataset(chain, a.providers[i], content=bytes([i]), price=PRICE * (i + 1)) for i in range(2)]


# --------------------------------------------------------------------------- constructor and deadlines


def test_lease_and_unbonding_views(chain: Deployment) -> None:
    m = chain.market.functions
    assert (m.claimLease().call(), m.unbondingPeriod().call()) == (CLAIM_LEASE, UNBONDING_PERIOD)
    assert m.totalStake().call() == 2 * STAKE
    assert stake_of(chain, chain.actors.operator) == (STAKE, 0)
    assert m.CLAIM_RELEASE_TYPEHASH().call() == chain.w3.keccak(text="ClaimRelease(uint256 jobId,address enclave,uint16 charges)")


@pytest.mark.parametrize(("lease", "unbonding"), [(0, 100), (101, 100), (0, 0)])
def test_constructor_refuses_bad_timings(chain: Deployment, lease: int, unbonding: int) -> None:
    a = chain.actors
    expect_revert(
        lambda: deploy(chain.w3, "JobMarket", a.governance, chain.registry.address, ZERO_ADDRESS, 0, a.governance, lease, unbonding),
        "JobMarketInvalidTimings",
        lease,
        unbonding,
    )
    deploy(chain.w3, "JobMarket", a.governance, chain.registry.address, ZERO_ADDRESS, 0, a.governance, 100, 100)


def test_create_job_refuses_completion_beyond_unbonding(chain: Deployment) -> None:
    ds = list_dataset(chain, chain.actors.providers[0])
    request = list(job_request(chain, [ds], completion_window=UNBONDING_PERIOD // 2))
    call = chain.market.functions.createJob
    # the pending block's time is now: completion at now + unbondingPeriod / 2 is the last allowed
    request[8] += 1
    expect_revert(
        lambda: transact(chain.w3, call(tuple(request)), chain.actors.consumer, request[6]),
        "JobMarketInvalidDeadlines",
        request[7],
        request[8],
    )
    request[8] -= 1
    transact(chain.w3, call(tuple(request)), chain.actors.consumer, request[6])


# --------------------------------------------------------------------------- leases


def test_claim_sets_lease(chain: Deployment) -> None:
    job_id = create_job(chain, [list_dataset(chain, chain.actors.providers[0])])
    tx = claim_job(chain, job_id)
    info = job_info(chain, job_id)
    assert info["status"] == STATUS_CLAIMED
    assert (info["claimDeadline"], info["leaseExpiry"], info["charges"]) == (0, _block_time(chain, tx) + CLAIM_LEASE, 0)


def test_lease_capped_at_completion_deadline(chain: Deployment) -> None:
    ds = list_dataset(chain, chain.actors.providers[0])
    job_id = create_job(chain, [ds], claim_window=100, completion_window=CLAIM_LEASE // 2)
    claim_job(chain, job_id)
    info = job_info(chain, job_id)
    assert info["leaseExpiry"] == info["completionDeadline"]
    tx = transact(chain.w3, chain.market.functions.renewLease(job_id), chain.actors.operator)
    assert logged(chain.market, tx, "LeaseRenewed")[0]["leaseExpiry"] == info["completionDeadline"]


def test_renew_lease(chain: Deployment) -> None:
    a = chain.actors
    job_id = create_job(chain, [list_dataset(chain, a.providers[0])])
    claim_job(chain, job_id)
    lease = job_info(chain, job_id)["leaseExpiry"]
    chain.travel_to(lease)  # inclusive: renewable at its last second
    tx = transact(chain.w3, chain.market.functions.renewLease(job_id), a.operator)
    renewed = _block_time(chain, tx) + CLAIM_LEASE
    assert logged(chain.market, tx, "LeaseRenewed") == [
        {"jobId": job_id, "enclave": a.trainer.address, "leaseExpiry": renewed}
    ]
    assert job_info(chain, job_id)["leaseExpiry"] == renewed
    for sender in (a.other_operator, a.consumer, a.stranger):
        expect_revert(
            lambda sender=sender: transact(chain.w3, chain.market.functions.renewLease(job_id), sender),
            "JobMarketNotEnclaveOperator",
            sender,
            a.operator,
        )


def test_renew_lease_refused_after_lapse(chain: Deployment) -> None:
    job_id = create_job(chain, [list_dataset(chain, chain.actors.providers[0])])
    claim_job(chain, job_id)
    lease = _lapse(chain, job_id)
    expect_revert(
        lambda: transact(chain.w3, chain.market.functions.renewLease(job_id), chain.actors.operator),
        "JobMarketLeaseLapsed",
        job_id,
        lease,
    )


def test_renew_lease_only_claimed(chain: Deployment) -> None:
    job_id = create_job(chain, [list_dataset(chain, chain.actors.providers[0])])
    expect_revert(
        lambda: transact(chain.w3, chain.market.functions.renewLease(job_id), chain.actors.operator),
        "JobMarketInvalidJobStatus",
        job_id,
        STATUS_OPEN,
    )


def test_renew_lease_and_release_work_while_paused(chain: Deployment) -> None:
    """A pause never lapses a lease, nor keeps a certified-unused claim from being given back."""
    a = chain.actors
    register_key_manager(chain)
    ds = list_dataset(chain, a.providers[0])
    first, second = create_job(chain, [ds]), create_job(chain, [ds])
    claim_job(chain, first)
    claim_job(chain, second)
    transact(chain.w3, chain.market.functions.pause(), a.governance)
    tx = transact(chain.w3, chain.market.functions.renewLease(first), a.operator)
    assert len(logged(chain.market, tx, "LeaseRenewed")) == 1
    _release(chain, second, a.operator)
    assert job_info(chain, second)["status"] == STATUS_OPEN


# --------------------------------------------------------------------------- re-claims


def test_reclaim_refused_while_lease_active(chain: Deployment) -> None:
    _other_trainer(chain)
    job_id = create_job(chain, [list_dataset(chain, chain.actors.providers[0])])
    claim_job(chain, job_id)
    lease = job_info(chain, job_id)["leaseExpiry"]
    chain.travel_to(lease)  # the lease's last second
    expect_revert(lambda: _reclaim(chain, job_id), "JobMarketLeaseActive", job_id, lease)


def test_reclaim_after_lapse_charges_and_slashes(chain: Deployment, two_datasets: list[int]) -> None:
    """The lapsed claim may have had the keys: each dataset's ε is debited and reserved again,
    charges becomes 1, and the lapsed operator's stake pays the providers pro rata."""
    a = chain.actors
    _other_trainer(chain)
    job_id = create_job(chain, two_datasets)
    claim_job(chain, job_id)
    _lapse(chain, job_id)
    tx = _reclaim(chain, job_id)

    assert [(e["datasetId"], e["jobId"], e["epsilonSpent"], e["remaining"]) for e in logged(chain.market, tx, "BudgetDebited")] == [
        (ds, job_id, EPSILON_SCALE, 9 * EPSILON_SCALE) for ds in two_datasets
    ]
    assert [(e["datasetId"], e["epsilon"], e["price"]) for e in logged(chain.market, tx, "EpsilonReserved")] == [
        (two_datasets[0], EPSILON_SCALE, PRICE),
        (two_datasets[1], EPSILON_SCALE, 2 * PRICE),
    ]
    assert logged(chain.market, tx, "ClaimCharged") == [{"jobId": job_id, "enclave": a.trainer.address, "charges": 1}]
    assert logged(chain.market, tx, "StakeSlashed") == [{"operator": a.operator, "jobId": job_id, "amount": 3 * PRICE}]
    assert [(e["account"], e["amount"]) for e in logged(chain.market, tx, "PaymentCredited")] == [
        (a.providers[0], PRICE),
        (a.providers[1], 2 * PRICE),
    ]
    assert logged(chain.market, tx, "JobClaimed") == [
        {"jobId": job_id, "enclave": a.other_trainer.address, "operator": a.other_operator}
    ]
    for ds in two_datasets:
        info = dataset_info(chain, ds)
        assert (info["epsilonSpent"], info["epsilonReserved"]) == (EPSILON_SCALE, EPSILON_SCALE)
        assert chain.market.functions.remainingEpsilon(ds).call() == 8 * EPSILON_SCALE
    info = job_info(chain, job_id)
    assert (info["status"], info["enclave"], info["operator"], info["charges"]) == (
        STATUS_CLAIMED,
        a.other_trainer.address,
        a.other_operator,
        1,
    )
    assert info["leaseExpiry"] == _block_time(chain, tx) + CLAIM_LEASE
    assert stake_of(chain, a.operator) == (STAKE - 3 * PRICE, 0)
    assert chain.market.functions.totalStake().call() == 2 * STAKE - 3 * PRICE
    assert chain.market.functions.lockedEscrow().call() == 3 * PRICE + FEE  # the consumer's escrow is untouched
    assert_solvent(chain, everyone(chain))

    # the new holder settles normally: ledger = the charge + what the receipt spent
    spent = EPSILON_SCALE // 4
    submit_result(chain, job_id, receipt_for(chain, job_id, spent), key=a.other_trainer)
    for ds in two_datasets:
        assert dataset_info(chain, ds)["epsilonSpent"] == EPSILON_SCALE + spent
    assert chain.market.functions.pendingWithdrawal(a.providers[1]).call() == 4 * PRICE  # slash + price
    assert chain.market.functions.pendingWithdrawal(a.other_operator).call() == FEE
    assert_solvent(chain, everyone(chain))


def test_reclaim_by_same_operator_still_charges(chain: Deployment) -> None:
    """No free re-run: the lapsed holder's own operator re-claiming (even with the same enclave)
    is charged like anyone else."""
    a = chain.actors
    ds = list_dataset(chain, a.providers[0])
    job_id = create_job(chain, [ds])
    claim_job(chain, job_id)
    _lapse(chain, job_id)
    tx = claim_job(chain, job_id)
    assert logged(chain.market, tx, "ClaimCharged") == [{"jobId": job_id, "enclave": a.trainer.address, "charges": 1}]
    assert logged(chain.market, tx, "StakeSlashed") == [{"operator": a.operator, "jobId": job_id, "amount": PRICE}]
    assert dataset_info(chain, ds)["epsilonSpent"] == EPSILON_SCALE
    assert stake_of(chain, a.operator)[0] == STAKE - PRICE
    assert job_info(chain, job_id)["charges"] == 1


def test_reclaim_of_own_lapsed_job_needs_stake_left_after_the_slash(chain: Deployment) -> None:
    """The stake check follows the charge: an operator whose stake covers the job only once cannot
    re-claim its own lapsed job and hold it unbacked; the whole re-claim reverts."""
    a = chain.actors
    price = 6 * ETHER  # the operator's stake (10 ether) covers it once
    ds = list_dataset(chain, a.providers[0], price=price)
    job_id = create_job(chain, [ds])
    claim_job(chain, job_id)
    _lapse(chain, job_id)
    before = (dataset_info(chain, ds), job_info(chain, job_id), stake_of(chain, a.operator))
    expect_revert(lambda: claim_job(chain, job_id), "JobMarketStakeTooLow", a.operator, STAKE - price, price)
    assert (dataset_info(chain, ds), job_info(chain, job_id), stake_of(chain, a.operator)) == before


def test_reclaim_refused_after_completion_deadline(chain: Deployment) -> None:
    _other_trainer(chain)
    job_id = create_job(chain, [list_dataset(chain, chain.actors.providers[0])])
    claim_job(chain, job_id)
    deadline = job_info(chain, job_id)["completionDeadline"]
    chain.travel_to(deadline + 1)
    expect_revert(lambda: _reclaim(chain, job_id), "JobMarketCompletionDeadlinePassed", job_id, deadline)


def test_reclaim_refused_when_budget_exhausted(chain: Deployment) -> None:
    """Charging the lapsed claim leaves no ε for a new reservation: the re-claim reverts whole."""
    a = chain.actors
    _other_trainer(chain)
    ds = list_dataset(chain, a.providers[0], budget=EPSILON_SCALE, max_epsilon=EPSILON_SCALE)  # room for one job
    job_id = create_job(chain, [ds])
    claim_job(chain, job_id)
    _lapse(chain, job_id)
    before = (dataset_info(chain, ds), job_info(chain, job_id), stake_of(chain, a.operator))
    expect_revert(lambda: _reclaim(chain, job_id), "JobMarketBudgetExhausted", ds, EPSILON_SCALE, 0)
    assert (dataset_info(chain, ds), job_info(chain, job_id), stake_of(chain, a.operator)) == before
    assert chain.market.functions.pendingWithdrawal(a.providers[0]).call() == 0


def test_reclaim_refused_while_unbonding(chain: Deployment) -> None:
    a = chain.actors
    _other_trainer(chain)
    job_id = create_job(chain, [list_dataset(chain, a.providers[0])])
    claim_job(chain, job_id)
    _lapse(chain, job_id)
    tx = transact(chain.w3, chain.market.functions.requestUnstake(), a.other_operator)
    end = logged(chain.market, tx, "UnstakeRequested")[0]["unbondingEnd"]
    expect_revert(lambda: _reclaim(chain, job_id), "JobMarketOperatorUnbonding", a.other_operator, end)


# --------------------------------------------------------------------------- releaseClaim


def test_release_by_holder_operator(chain: Deployment) -> None:
    a = chain.actors
    register_key_manager(chain)
    ds = list_dataset(chain, a.providers[0])
    job_id = create_job(chain, [ds])
    claim_job(chain, job_id)
    stake_before = stake_of(chain, a.operator)
    tx = _release(chain, job_id, a.operator)
    assert logged(chain.market, tx, "ClaimReleased") == [{"jobId": job_id, "enclave": a.trainer.address, "charges": 0}]
    for event in ("BudgetDebited", "EpsilonReleased", "StakeSlashed", "PaymentCredited"):
        assert logged(chain.market, tx, event) == [], event
    info = job_info(chain, job_id)
    assert (info["status"], info["enclave"], info["operator"]) == (STATUS_OPEN, ZERO_ADDRESS, ZERO_ADDRESS)
    assert (info["claimDeadline"], info["leaseExpiry"], info["charges"]) == (info["completionDeadline"], 0, 0)
    ledger = dataset_info(chain, ds)
    assert (ledger["epsilonSpent"], ledger["epsilonReserved"]) == (0, EPSILON_SCALE)  # still reserved
    assert stake_of(chain, a.operator) == stake_before
    assert_solvent(chain, everyone(chain))
    # claimable again (until the completion deadline), and settles as a fresh claim
    _other_trainer(chain)
    _reclaim(chain, job_id)
    assert job_info(chain, job_id)["charges"] == 0
    submit_result(chain, job_id, receipt_for(chain, job_id, 1), key=a.other_trainer)
    assert dataset_info(chain, ds)["epsilonSpent"] == 1


def test_release_by_anyone_after_lapse(chain: Deployment) -> None:
    a = chain.actors
    register_key_manager(chain)
    job_id = create_job(chain, [list_dataset(chain, a.providers[0])])
    claim_job(chain, job_id)
    lease = job_info(chain, job_id)["leaseExpiry"]
    expect_revert(lambda: _release(chain, job_id, a.stranger), "JobMarketLeaseActive", job_id, lease)
    _lapse(chain, job_id)
    _release(chain, job_id, a.stranger)
    assert job_info(chain, job_id)["status"] == STATUS_OPEN
    assert stake_of(chain, a.operator) == (STAKE, 0)


def test_release_refused_for_wrong_statements(chain: Deployment) -> None:
    a = chain.actors
    register_key_manager(chain)
    job_id = create_job(chain, [list_dataset(chain, a.providers[0])])
    claim_job(chain, job_id)
    release = chain.market.functions.releaseClaim
    enclave = a.trainer.address
    stranger_key = Account.from_key(b"\x11" * 32)
    wrong = [
        sign_release(chain, stranger_key, job_id, enclave, 0),  # not a key manager at all
        sign_release(chain, a.trainer, job_id, enclave, 0),  # an active trainer, not a key manager
        sign_release(chain, a.key_manager, job_id, enclave, 1),  # wrong charges
        sign_release(chain, a.key_manager, job_id, a.other_trainer.address, 0),  # wrong enclave
        sign_release(chain, a.key_manager, job_id + 1, enclave, 0),  # wrong job
    ]
    for signature in wrong:
        expect_revert(
            lambda signature=signature: transact(chain.w3, release(job_id, signature), a.operator),
            "JobMarketInvalidKeyManagerSignature",
            _recover(chain, signature, job_id, enclave, 0),
        )
    assert job_info(chain, job_id)["status"] == STATUS_CLAIMED


def _recover(d: Deployment, signature: bytes, job_id: int, enclave: str, charges: int) -> str:
    """The signer the market recovers from ``signature`` read as ClaimRelease(job_id, enclave, charges)."""
    message = encode_typed_data(
        domain(d.w3, d.market, "SterlingJobMarket"),
        KEY_MANAGER_RELEASE_TYPES,
        {"jobId": job_id, "enclave": enclave, "charges": charges},
    )
    return str(Account.recover_message(message, signature=signature))


def test_release_refused_for_revoked_key_manager(chain: Deployment) -> None:
    a = chain.actors
    register_key_manager(chain)
    job_id = create_job(chain, [list_dataset(chain, a.providers[0])])
    claim_job(chain, job_id)
    signature = sign_release(chain, a.key_manager, job_id, a.trainer.address, 0)
    transact(chain.w3, chain.registry.functions.revokeEnclave(a.key_manager.address), a.governance)
    expect_revert(
        lambda: transact(chain.w3, _release_call(chain, job_id, signature), a.operator),
        "JobMarketInvalidKeyManagerSignature",
        a.key_manager.address,
    )


def test_release_only_claimed(chain: Deployment) -> None:
    a = chain.actors
    register_key_manager(chain)
    job_id = create_job(chain, [list_dataset(chain, a.providers[0])])
    signature = sign_release(chain, a.key_manager, job_id, ZERO_ADDRESS, 0)
    expect_revert(
        lambda: transact(chain.w3, _release_call(chain, job_id, signature), a.operator),
        "JobMarketInvalidJobStatus",
        job_id,
        STATUS_OPEN,
    )


def test_release_after_charge_binds_the_charge_count(chain: Deployment) -> None:
    """A statement for the first claim (charges 0) cannot give back the claim made after a charge."""
    a = chain.actors
    register_key_manager(chain)
    job_id = create_job(chain, [list_dataset(chain, a.providers[0])])
    claim_job(chain, job_id)
    old = sign_release(chain, a.key_manager, job_id, a.trainer.address, 0)
    _lapse(chain, job_id)
    claim_job(chain, job_id)  # same enclave re-claims: charges 1
    expect_revert(
        lambda: transact(chain.w3, _release_call(chain, job_id, old), a.operator),
        "JobMarketInvalidKeyManagerSignature",
        _recover(chain, old, job_id, a.trainer.address, 1),
    )
    tx = _release(chain, job_id, a.operator)  # a statement for charges 1 works
    assert logged(chain.market, tx, "ClaimReleased")[0]["charges"] == 1


# --------------------------------------------------------------------------- expiry of lapsed claims


def test_expire_lapsed_claim_after_one_more_lease(chain: Deployment, two_datasets: list[int]) -> None:
    a = chain.actors
    job_id = create_job(chain, two_datasets)
    claim_job(chain, job_id)
    lease = job_info(chain, job_id)["leaseExpiry"]
    expire = chain.market.functions.expireJob(job_id)
    chain.travel_to(lease + CLAIM_LEASE)
    expect_revert(lambda: transact(chain.w3, expire, a.stranger), "JobMarketNotExpirable", job_id, STATUS_CLAIMED)
    chain.travel_to(lease + CLAIM_LEASE + 1)
    tx = transact(chain.w3, expire, a.stranger)
    assert [e["epsilonSpent"] for e in logged(chain.market, tx, "BudgetDebited")] == [EPSILON_SCALE] * 2
    assert logged(chain.market, tx, "StakeSlashed") == [{"operator": a.operator, "jobId": job_id, "amount": 3 * PRICE}]
    assert [(e["account"], e["amount"]) for e in logged(chain.market, tx, "PaymentCredited")] == [
        (a.consumer, 3 * PRICE + FEE),
        (a.providers[0], PRICE),
        (a.providers[1], 2 * PRICE),
    ]
    assert logged(chain.market, tx, "JobExpired") == [{"jobId": job_id, "refund": 3 * PRICE + FEE}]
    assert job_info(chain, job_id)["status"] == STATUS_EXPIRED
    assert_solvent(chain, everyone(chain))


# --------------------------------------------------------------------------- stakes


def test_deposit_stake_native(chain: Deployment) -> None:
    a = chain.actors
    tx = deposit_stake(chain, a.stranger, 5)
    assert logged(chain.market, tx, "StakeDeposited") == [{"operator": a.stranger, "amount": 5, "total": 5}]
    tx = deposit_stake(chain, a.stranger, 7)
    assert logged(chain.market, tx, "StakeDeposited") == [{"operator": a.stranger, "amount": 7, "total": 12}]
    assert stake_of(chain, a.stranger) == (12, 0)
    assert chain.market.functions.totalStake().call() == 2 * STAKE + 12
    assert_solvent(chain, everyone(chain))
    deposit = chain.market.functions.depositStake
    expect_revert(lambda: transact(chain.w3, deposit(0), a.stranger), "JobMarketInvalidStake", 0)
    expect_revert(lambda: transact(chain.w3, deposit(5), a.stranger, 4), "JobMarketIncorrectPayment", 4, 5)
    expect_revert(lambda: transact(chain.w3, deposit(5), a.stranger, 6), "JobMarketIncorrectPayment", 6, 5)


def test_deposit_stake_token(chain: Deployment) -> None:
    usd = deploy_token_market(chain, "TestStablecoin")
    a = usd.actors
    assert stake_of(usd, a.operator)[0] > 0  # the fixture minted, approved and deposited
    tx = deposit_stake(usd, a.stranger, 1_000)
    assert logged(usd.market, tx, "StakeDeposited") == [{"operator": a.stranger, "amount": 1_000, "total": 1_000}]
    assert usd.token.functions.balanceOf(a.stranger).call() == 0  # type: ignore[union-attr]
    assert_solvent(usd, everyone(usd))
    expect_revert(
        lambda: transact(usd.w3, usd.market.functions.depositStake(1), a.stranger, 1), "JobMarketIncorrectPayment", 1, 0
    )
    expect_revert(
        lambda: transact(usd.w3, usd.market.functions.depositStake(1), a.stranger),
        "ERC20InsufficientAllowance",
        usd.market.address,
        0,
        1,
    )


def test_deposit_stake_fee_on_transfer_token_refused(chain: Deployment) -> None:
    d = deploy_token_market(chain, "FeeOnTransferToken", stake=False)
    a = d.actors
    transact(d.w3, d.token.functions.mint(a.operator, 1_000), a.governance)  # type: ignore[union-attr]
    transact(d.w3, d.token.functions.approve(d.market.address, 1_000), a.operator)  # type: ignore[union-attr]
    expect_revert(
        lambda: transact(d.w3, d.market.functions.depositStake(1_000), a.operator),
        "JobMarketTokenTransferShortfall",
        1_000,
        990,
    )
    assert d.market.functions.totalStake().call() == 0


def test_claim_needs_stake(chain: Deployment, two_datasets: list[int]) -> None:
    a = chain.actors
    register(chain, a.other_trainer, a.stranger)
    job_id = create_job(chain, two_datasets)
    claim = chain.market.functions.claimJob(job_id, a.other_trainer.address)
    expect_revert(lambda: transact(chain.w3, claim, a.stranger), "JobMarketStakeTooLow", a.stranger, 0, 3 * PRICE)
    deposit_stake(chain, a.stranger, 3 * PRICE - 1)
    expect_revert(
        lambda: transact(chain.w3, claim, a.stranger), "JobMarketStakeTooLow", a.stranger, 3 * PRICE - 1, 3 * PRICE
    )
    deposit_stake(chain, a.stranger, 1)
    transact(chain.w3, claim, a.stranger)  # exactly Σ prices is enough


def test_unstake_blocks_claims_and_unbonds(chain: Deployment) -> None:
    a = chain.actors
    job_id = create_job(chain, [list_dataset(chain, a.providers[0])])
    m = chain.market.functions
    tx = transact(chain.w3, m.requestUnstake(), a.operator)
    end = _block_time(chain, tx) + UNBONDING_PERIOD
    assert logged(chain.market, tx, "UnstakeRequested") == [{"operator": a.operator, "amount": STAKE, "unbondingEnd": end}]
    assert stake_of(chain, a.operator) == (STAKE, end)
    expect_revert(lambda: claim_job(chain, job_id), "JobMarketOperatorUnbonding", a.operator, end)
    expect_revert(lambda: transact(chain.w3, m.requestUnstake(), a.operator), "JobMarketInvalidStake", STAKE)
    chain.travel_to(end - 1)
    expect_revert(lambda: transact(chain.w3, m.withdrawStake(), a.operator), "JobMarketStakeLocked", a.operator, end)
    chain.travel_to(end)
    tx = transact(chain.w3, m.withdrawStake(), a.operator)
    assert logged(chain.market, tx, "StakeWithdrawn") == [{"operator": a.operator, "amount": STAKE}]
    assert logged(chain.market, tx, "PaymentCredited") == [{"account": a.operator, "jobId": 0, "amount": STAKE}]
    assert stake_of(chain, a.operator) == (0, 0)
    assert m.totalStake().call() == STAKE
    assert_solvent(chain, everyone(chain))
    assert withdraw_all(chain, a.operator) == STAKE
    expect_revert(lambda: transact(chain.w3, m.withdrawStake(), a.operator), "JobMarketStakeLocked", a.operator, 0)


def test_slash_proportional_with_remainder(chain: Deployment) -> None:
    """Prices 3, 3 and 4 wei (Σ 10) and a stake of 5 left at expiry: the shares are floor(5·p/10)
    = 1 and 1, and the last provider gets the remainder 3 (not floor(5·4/10) = 2)."""
    a = chain.actors
    ids = [list_dataset(chain, a.providers[i], content=bytes([i]), price=price) for i, price in enumerate((3, 3, 4))]
    register(chain, a.other_trainer, a.stranger)
    deposit_stake(chain, a.stranger, 10)
    first, second = create_job(chain, ids), create_job(chain, ids)
    for job_id in (first, second):  # one stake of Σ prices backs both claims
        transact(chain.w3, chain.market.functions.claimJob(job_id, a.other_trainer.address), a.stranger)
    chain.travel_to(job_info(chain, second)["leaseExpiry"] + CLAIM_LEASE + 1)
    expire = chain.market.functions.expireJob
    tx = transact(chain.w3, expire(first), a.stranger)  # exact shares: 3, 3, 4
    credited = [(e["account"], e["amount"]) for e in logged(chain.market, tx, "PaymentCredited")][1:]
    assert credited == [(a.providers[0], 3), (a.providers[1], 3), (a.providers[2], 4)]
    assert stake_of(chain, a.stranger)[0] == 0
    deposit_stake(chain, a.stranger, 5)
    tx = transact(chain.w3, expire(second), a.stranger)
    assert logged(chain.market, tx, "StakeSlashed") == [{"operator": a.stranger, "jobId": second, "amount": 5}]
    credited = [(e["account"], e["amount"]) for e in logged(chain.market, tx, "PaymentCredited")][1:]
    assert credited == [(a.providers[0], 1), (a.providers[1], 1), (a.providers[2], 3)]
    assert stake_of(chain, a.stranger)[0] == 0
    assert_solvent(chain, everyone(chain))


def test_slash_capped_by_remaining_stake(chain: Deployment) -> None:
    """One stake backs every claim of its operator; once slashed to zero, a later slash finds nothing."""
    a = chain.actors
    ds = list_dataset(chain, a.providers[0], price=PRICE)
    register(chain, a.other_trainer, a.stranger)
    deposit_stake(chain, a.stranger, PRICE + PRICE // 2)
    first, second = create_job(chain, [ds]), create_job(chain, [ds])
    for job_id in (first, second):
        transact(chain.w3, chain.market.functions.claimJob(job_id, a.other_trainer.address), a.stranger)
    chain.travel_to(job_info(chain, second)["leaseExpiry"] + CLAIM_LEASE + 1)
    expire = chain.market.functions.expireJob
    tx = transact(chain.w3, expire(first), a.stranger)
    assert logged(chain.market, tx, "StakeSlashed")[0]["amount"] == PRICE
    tx = transact(chain.w3, expire(second), a.stranger)
    assert logged(chain.market, tx, "StakeSlashed")[0]["amount"] == PRICE // 2  # what was left
    third = create_job(chain, [ds])
    deposit_stake(chain, a.stranger, PRICE)
    transact(chain.w3, chain.market.functions.claimJob(third, a.other_trainer.address), a.stranger)
    transact(chain.w3, chain.market.functions.requestUnstake(), a.stranger)
    chain.travel_to(job_info(chain, third)["leaseExpiry"] + CLAIM_LEASE + 1)
    tx = transact(chain.w3, expire(third), a.stranger)  # slashes still apply while unbonding
    assert logged(chain.market, tx, "StakeSlashed")[0]["amount"] == PRICE
    assert stake_of(chain, a.stranger)[0] == 0
    assert_solvent(chain, everyone(chain))


def test_expire_with_zero_stake_slashes_nothing(chain: Deployment) -> None:
    a = chain.actors
    ds = list_dataset(chain, a.providers[0], price=0)
    register(chain, a.other_trainer, a.stranger)
    job_id = create_job(chain, [ds], worker_fee=0)
    transact(chain.w3, chain.market.functions.claimJob(job_id, a.other_trainer.address), a.stranger)  # free: no stake
    chain.travel_to(job_info(chain, job_id)["completionDeadline"] + 1)
    tx = transact(chain.w3, chain.market.functions.expireJob(job_id), a.stranger)
    assert logged(chain.market, tx, "StakeSlashed") == []
    assert job_info(chain, job_id)["status"] == STATUS_EXPIRED


# --------------------------------------------------------------------------- attacks


def test_operator_cannot_renew_someone_elses_lease(chain: Deployment) -> None:
    """other_operator, staked and running its own enclave, tries to keep the trainer's claim alive
    (e.g. to block a re-claim until it can take the job itself)."""
    a = chain.actors
    _other_trainer(chain)
    job_id = create_job(chain, [list_dataset(chain, a.providers[0])])
    claim_job(chain, job_id)
    expect_revert(
        lambda: transact(chain.w3, chain.market.functions.renewLease(job_id), a.other_operator),
        "JobMarketNotEnclaveOperator",
        a.other_operator,
        a.operator,
    )


def test_stranger_cannot_release_live_claim(chain: Deployment) -> None:
    """A valid key-manager statement in a stranger's hands cannot take a live claim away."""
    a = chain.actors
    register_key_manager(chain)
    job_id = create_job(chain, [list_dataset(chain, a.providers[0])])
    claim_job(chain, job_id)
    lease = job_info(chain, job_id)["leaseExpiry"]
    for sender in (a.stranger, a.other_operator, a.consumer, a.governance):
        expect_revert(lambda sender=sender: _release(chain, job_id, sender), "JobMarketLeaseActive", job_id, lease)
    assert job_info(chain, job_id)["status"] == STATUS_CLAIMED


def test_release_statement_not_replayable_across_jobs_markets_chains(chain: Deployment) -> None:
    """The EIP-712 domain (chain id, market) and jobId bind the key manager's statement."""
    a = chain.actors
    register_key_manager(chain)
    ds = list_dataset(chain, a.providers[0])
    first, second = create_job(chain, [ds]), create_job(chain, [ds])
    claim_job(chain, first)
    claim_job(chain, second)
    other_market = deploy(
        chain.w3, "JobMarket", a.governance, chain.registry.address, ZERO_ADDRESS, 0, a.governance, CLAIM_LEASE, UNBONDING_PERIOD
    )
    trainer = a.trainer.address
    statements = [
        sign_release(chain, a.key_manager, first, trainer, 0),  # another job
        sign_release(chain, a.key_manager, second, trainer, 0, market=other_market),  # another market
        sign_release(chain, a.key_manager, second, trainer, 0, chain_id=chain.w3.eth.chain_id + 1),  # another chain
    ]
    for signature in statements:
        expect_revert(
            lambda signature=signature: transact(chain.w3, _release_call(chain, second, signature), a.operator),
            "JobMarketInvalidKeyManagerSignature",
            _recover(chain, signature, second, trainer, 0),
        )
    assert job_info(chain, second)["status"] == STATUS_CLAIMED
    _release(chain, second, a.operator)  # its own statement works
    assert job_info(chain, first)["status"] == STATUS_CLAIMED


def test_released_claim_cannot_be_charged(chain: Deployment) -> None:
    """After a release nobody can 're-claim' as if the lease lapsed: the job is Open, a plain claim."""
    a = chain.actors
    register_key_manager(chain)
    _other_trainer(chain)
    ds = list_dataset(chain, a.providers[0])
    job_id = create_job(chain, [ds])
    claim_job(chain, job_id)
    _lapse(chain, job_id)
    _release(chain, job_id, a.stranger)
    tx = _reclaim(chain, job_id)
    assert logged(chain.market, tx, "ClaimCharged") == [] and logged(chain.market, tx, "StakeSlashed") == []
    assert dataset_info(chain, ds)["epsilonSpent"] == 0
    assert stake_of(chain, a.operator) == (STAKE, 0)
