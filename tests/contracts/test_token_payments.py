"""The market in token mode (an ERC-20 fixed at deployment, here a 6-decimal stablecoin): the same
lifecycle as in native mode, exact pulls, token refunds and withdrawals, and the market's token
balance equal to Σ pending + lockedEscrow after every step; fee-on-transfer tokens and missing
allowances are refused."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import (
    EPSILON_SCALE,
    STATUS_CANCELLED,
    STATUS_EXPIRED,
    Deployment,
    assert_solvent,
    claim_job,
    complete_job,
    create_job,
    deploy_token_market,
    everyone,
    expect_revert,
    holdings,
    job_info,
    job_request,
    list_dataset,
    logged,
    market_funds,
    receipt_for,
    submit_result,
    transact,
    withdraw_all,
)

USD = 10**6  # one token in its smallest unit (6 decimals)
PRICE = 25 * USD
FEE = 3 * USD
MINTED = 10**12  # what deploy_token_market mints to the consumer


@pytest.fixture(scope="function")
def usd(chain: Deployment) -> Deployment:
    """A registry and market paying in TestStablecoin; the consumer holds MINTED units."""
    return deploy_token_market(chain, "TestStablecoin")


def _token(d: Deployment) -> Any:
    assert d.token is not None
    return d.token.functions


def _approve(d: Deployment, amount: int, owner: str | None = None) -> None:
    transact(d.w3, _token(d).approve(d.market.address, amount), owner or d.actors.consumer)


def _buy(d: Deployment, ids: list[int], **kwargs: Any) -> int:
    """Approve exactly the job's maxTotalPrice and create it (msg.value 0)."""
    request = job_request(d, ids, worker_fee=kwargs.pop("worker_fee", FEE), **kwargs)
    _approve(d, request[6])
    return create_job(d, ids, worker_fee=request[5], **kwargs)


def test_payment_token_view(usd: Deployment) -> None:
    assert usd.market.functions.paymentToken().call() == usd.token.address  # type: ignore[union-attr]
    assert _token(usd).decimals().call() == 6


def test_token_lifecycle(usd: Deployment) -> None:
    a = usd.actors
    m = usd.market.functions
    accounts = everyone(usd)
    ids = [list_dataset(usd, a.providers[i], content=bytes([i]), price=PRICE * (i + 1)) for i in range(2)]
    required = 3 * PRICE + FEE
    assert_solvent(usd, accounts)

    _approve(usd, required)
    request = job_request(usd, ids, worker_fee=FEE)
    assert request[6] == required
    tx = transact(usd.w3, m.createJob(request), a.consumer)  # msg.value 0
    assert holdings(usd, a.consumer) == MINTED - required
    assert market_funds(usd) == required
    assert _token(usd).allowance(a.consumer, usd.market.address).call() == 0
    assert logged(usd.market, tx, "JobCreated")[0]["escrow"] == required
    assert logged(usd.market, tx, "PaymentCredited") == []
    assert usd.w3.eth.get_balance(usd.market.address) == 0  # no ether involved
    assert_solvent(usd, accounts)

    claim_job(usd, 1)
    assert_solvent(usd, accounts)
    tx = submit_result(usd, 1, receipt_for(usd, 1, EPSILON_SCALE // 2))
    assert [(e["account"], e["amount"]) for e in logged(usd.market, tx, "PaymentCredited")] == [
        (a.providers[0], PRICE),
        (a.providers[1], 2 * PRICE),
        (a.operator, FEE),
    ]
    assert m.lockedEscrow().call() == 0
    assert_solvent(usd, accounts)

    for account, amount in ((a.providers[0], PRICE), (a.providers[1], 2 * PRICE), (a.operator, FEE)):
        tx = transact(usd.w3, m.withdraw(), account)
        assert logged(usd.market, tx, "Withdrawn") == [{"account": account, "amount": amount}]
        assert holdings(usd, account) == amount
        assert m.totalWithdrawn(account).call() == amount
        assert_solvent(usd, accounts)
    assert market_funds(usd) == 0


def test_token_mode_pulls_required_not_the_limit(usd: Deployment) -> None:
    """maxTotalPrice is only a limit in token mode: exactly the required amount is pulled and no
    change is credited."""
    a = usd.actors
    ds = list_dataset(usd, a.providers[0], price=PRICE)
    request = job_request(usd, [ds], worker_fee=FEE, max_total_price=10 * PRICE)
    _approve(usd, 10 * PRICE)
    tx = transact(usd.w3, usd.market.functions.createJob(request), a.consumer)
    assert holdings(usd, a.consumer) == MINTED - PRICE - FEE
    assert _token(usd).allowance(a.consumer, usd.market.address).call() == 10 * PRICE - PRICE - FEE
    assert logged(usd.market, tx, "PaymentCredited") == []
    assert usd.market.functions.pendingWithdrawal(a.consumer).call() == 0
    assert_solvent(usd, everyone(usd))


def test_token_mode_refuses_ether(usd: Deployment) -> None:
    a = usd.actors
    ds = list_dataset(usd, a.providers[0], price=PRICE)
    request = job_request(usd, [ds], worker_fee=FEE)
    _approve(usd, request[6])
    call = usd.market.functions.createJob(request)
    for sent in (1, request[6]):
        expect_revert(lambda sent=sent: transact(usd.w3, call, a.consumer, sent), "JobMarketIncorrectPayment", sent, 0)
    assert holdings(usd, a.consumer) == MINTED


def test_token_cancel_refunds_tokens(usd: Deployment) -> None:
    a = usd.actors
    ds = list_dataset(usd, a.providers[0], price=PRICE)
    job_id = _buy(usd, [ds])
    tx = transact(usd.w3, usd.market.functions.cancelJob(job_id), a.consumer)
    assert logged(usd.market, tx, "JobCancelled") == [{"jobId": job_id, "refund": PRICE + FEE}]
    assert job_info(usd, job_id)["status"] == STATUS_CANCELLED
    assert_solvent(usd, everyone(usd))
    assert withdraw_all(usd, a.consumer) == PRICE + FEE
    assert holdings(usd, a.consumer) == MINTED
    assert market_funds(usd) == 0


@pytest.mark.parametrize("claimed", [False, True], ids=["open", "claimed"])
def test_token_expiry_refunds_tokens(usd: Deployment, claimed: bool) -> None:
    a = usd.actors
    ds = list_dataset(usd, a.providers[0], price=PRICE)
    job_id = _buy(usd, [ds])
    deadline = job_info(usd, job_id)["claimDeadline"]
    if claimed:
        claim_job(usd, job_id)
        deadline = job_info(usd, job_id)["completionDeadline"]
    usd.travel_to(deadline + 1)
    tx = transact(usd.w3, usd.market.functions.expireJob(job_id), a.stranger)
    assert logged(usd.market, tx, "JobExpired") == [{"jobId": job_id, "refund": PRICE + FEE}]
    assert job_info(usd, job_id)["status"] == STATUS_EXPIRED
    assert_solvent(usd, everyone(usd))
    assert withdraw_all(usd, a.consumer) == PRICE + FEE
    assert holdings(usd, a.consumer) == MINTED
    if claimed:  # the holder's operator answers for the consumed ε: its stake pays the provider
        assert logged(usd.market, tx, "StakeSlashed") == [{"operator": a.operator, "jobId": job_id, "amount": PRICE}]
        assert withdraw_all(usd, a.providers[0]) == PRICE
    assert market_funds(usd) == 0
    assert usd.market.functions.remainingEpsilon(ds).call() == (9 if claimed else 10) * EPSILON_SCALE


def test_token_free_job_needs_no_allowance(usd: Deployment) -> None:
    a = usd.actors
    ds = list_dataset(usd, a.providers[0], price=0)
    job_id = create_job(usd, [ds], worker_fee=0)  # no approve: nothing to pull
    complete_job(usd, job_id)
    assert holdings(usd, a.consumer) == MINTED
    assert market_funds(usd) == 0


def test_insufficient_allowance_and_balance(usd: Deployment) -> None:
    a = usd.actors
    ds = list_dataset(usd, a.providers[0], price=PRICE)
    request = job_request(usd, [ds], worker_fee=FEE)
    required = PRICE + FEE
    call = usd.market.functions.createJob(request)
    expect_revert(
        lambda: transact(usd.w3, call, a.consumer), "ERC20InsufficientAllowance", usd.market.address, 0, required
    )
    _approve(usd, required - 1)
    expect_revert(
        lambda: transact(usd.w3, call, a.consumer),
        "ERC20InsufficientAllowance",
        usd.market.address,
        required - 1,
        required,
    )
    # a consumer with allowance but no tokens
    _approve(usd, required, owner=a.stranger)
    stranger_request = job_request(usd, [ds], worker_fee=FEE)
    expect_revert(
        lambda: transact(usd.w3, usd.market.functions.createJob(stranger_request), a.stranger),
        "ERC20InsufficientBalance",
        a.stranger,
        0,
        required,
    )
    assert usd.market.functions.jobCount().call() == 0
    assert usd.market.functions.remainingEpsilon(ds).call() == 10 * EPSILON_SCALE


def test_fee_on_transfer_token_is_refused(chain: Deployment) -> None:
    d = deploy_token_market(chain, "FeeOnTransferToken", stake=False)
    a = d.actors
    ds = list_dataset(d, a.providers[0], price=PRICE)
    request = job_request(d, [ds], worker_fee=FEE)
    required = PRICE + FEE
    _approve(d, required)
    expect_revert(
        lambda: transact(d.w3, d.market.functions.createJob(request), a.consumer),
        "JobMarketTokenTransferShortfall",
        required,
        required - required // 100,
    )
    assert holdings(d, a.consumer) == MINTED
    assert d.market.functions.jobCount().call() == 0
    assert d.market.functions.lockedEscrow().call() == 0
