"""Adversarial scenarios: re-entrancy on withdrawals and refunds, receipt replay across jobs,
chains and deployments, revoked or expired enclaves, double settlement, unregistered workers, and
a price raised in the same block as a purchase (front-running the consumer)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from .conftest import (
    ADMIN_DELAY,
    CERTIFICATE_TYPES,
    CLAIM_LEASE,
    EPSILON_SCALE,
    ETHER,
    RECEIPT_TYPES,
    ROLE_TRAINER,
    STAKE,
    STATUS_COMPLETED,
    STATUS_OPEN,
    TRAINER_MEASUREMENT,
    UNBONDING_PERIOD,
    ZERO_ADDRESS,
    Deployment,
    assert_solvent,
    cert_tuple,
    certificate,
    claim_job,
    complete_job,
    create_job,
    dataset_info,
    decode_revert,
    deploy,
    deploy_token_market,
    deposit_stake,
    domain,
    enclave_info,
    everyone,
    expect_revert,
    holdings,
    job_info,
    job_request,
    list_dataset,
    market_funds,
    receipt_for,
    receipt_tuple,
    register,
    replay_revert,
    revert_data,
    send_unchecked,
    sign_certificate,
    submit_result,
    terms,
    transact,
    withdraw_all,
)

PRICE = ETHER // 10
FEE = ETHER // 100
ACCEPT, REJECT, REENTER, REENTER_CANCEL = range(4)  # PaymentReceiverMock.Mode


def _mock(d: Deployment) -> Any:
    return deploy(d.w3, "PaymentReceiverMock", d.actors.governance, d.market.address, test=True)


def _sign(key: LocalAccount, domain_: dict[str, Any], receipt: dict[str, Any]) -> bytes:
    return bytes(Account.sign_typed_data(key.key, domain_, RECEIPT_TYPES, receipt).signature)


def _recovered(d: Deployment, receipt: dict[str, Any], signature: bytes) -> str:
    """The address ``d.market`` recovers from ``signature`` over ``receipt`` (under its own domain)."""
    message = encode_typed_data(domain(d.w3, d.market, "SterlingJobMarket"), RECEIPT_TYPES, receipt)
    return str(Account.recover_message(message, signature=signature))


def _submit_signed(d: Deployment, job_id: int, receipt: dict[str, Any], signature: bytes) -> Any:
    call = d.market.functions.submitResult(job_id, receipt_tuple(receipt), signature)
    return transact(d.w3, call, d.actors.operator)


# --------------------------------------------------------------------------- re-entrancy


def test_reentrant_withdraw_fails_and_loses_nothing(chain: Deployment) -> None:
    a = chain.actors
    m = chain.market.functions
    mock = _mock(chain)
    transact(chain.w3, mock.functions.listDataset(keccak(b"mock"), terms()), a.governance)
    complete_job(chain, create_job(chain, [1]))
    market_before = holdings(chain, chain.market.address)
    transact(chain.w3, mock.functions.setMode(REENTER, 0), a.governance)
    # the inner withdraw hits the guard, receive() reverts, and the outer transfer fails
    expect_revert(
        lambda: transact(chain.w3, mock.functions.withdraw(), a.governance),
        "JobMarketWithdrawFailed",
        mock.address,
        PRICE,
    )
    assert m.pendingWithdrawal(mock.address).call() == PRICE
    assert m.totalWithdrawn(mock.address).call() == 0
    assert holdings(chain, chain.market.address) == market_before
    assert holdings(chain, mock.address) == 0
    assert_solvent(chain, [*everyone(chain), mock.address])

    transact(chain.w3, mock.functions.setMode(ACCEPT, 0), a.governance)
    transact(chain.w3, mock.functions.withdraw(), a.governance)
    assert holdings(chain, mock.address) == PRICE
    expect_revert(lambda: transact(chain.w3, mock.functions.withdraw(), a.governance), "JobMarketNothingToWithdraw", mock.address)


def test_refund_cannot_be_reentered_to_cancel_and_withdraw(chain: Deployment) -> None:
    """A consumer contract whose receive() cancels another job and withdraws again: the nested
    withdraw hits the guard, so the whole withdrawal (and the nested cancel) is undone."""
    a = chain.actors
    m = chain.market.functions
    mock = _mock(chain)
    ds = list_dataset(chain, a.providers[0])
    escrow = PRICE + FEE
    for _ in range(2):
        request = job_request(chain, [ds])
        transact(chain.w3, mock.functions.createJob(request), a.governance, request[6])
    refunded, target = 1, 2
    assert job_info(chain, target)["consumer"] == mock.address
    transact(chain.w3, mock.functions.cancelJob(refunded), a.governance)
    assert m.pendingWithdrawal(mock.address).call() == escrow
    market_before = holdings(chain, chain.market.address)

    transact(chain.w3, mock.functions.setMode(REENTER_CANCEL, target), a.governance)
    expect_revert(
        lambda: transact(chain.w3, mock.functions.withdraw(), a.governance),
        "JobMarketWithdrawFailed",
        mock.address,
        escrow,
    )
    assert job_info(chain, target)["status"] == STATUS_OPEN
    assert dataset_info(chain, ds)["epsilonReserved"] == EPSILON_SCALE
    assert m.pendingWithdrawal(mock.address).call() == escrow
    assert m.lockedEscrow().call() == escrow
    assert holdings(chain, chain.market.address) == market_before
    assert holdings(chain, mock.address) == 0
    assert_solvent(chain, [*everyone(chain), mock.address])

    # done one step at a time, the same calls are legitimate
    transact(chain.w3, mock.functions.setMode(ACCEPT, 0), a.governance)
    transact(chain.w3, mock.functions.cancelJob(target), a.governance)
    transact(chain.w3, mock.functions.withdraw(), a.governance)
    assert holdings(chain, mock.address) == 2 * escrow
    assert market_funds(chain) == 0


def test_token_hook_cannot_reenter_withdraw(chain: Deployment) -> None:
    """An ERC-777-style token that calls the recipient back during the transfer: the recipient's
    nested withdraw hits the guard, ReentrancyGuardReentrantCall surfaces through SafeERC20 and
    nothing moves."""
    d = deploy_token_market(chain, "HookToken")
    assert d.token is not None
    a = d.actors
    mock = _mock(d)
    price = 5 * 10**6
    transact(d.w3, mock.functions.listDataset(keccak(b"mock"), terms(price=price)), a.governance)
    request = job_request(d, [1], worker_fee=10**6)
    transact(d.w3, d.token.functions.approve(d.market.address, request[6]), a.consumer)
    transact(d.w3, d.market.functions.createJob(request), a.consumer)
    complete_job(d, 1)
    transact(d.w3, d.token.functions.setReceiver(mock.address), a.governance)
    market_before = holdings(d, d.market.address)

    expect_revert(lambda: transact(d.w3, mock.functions.withdraw(), a.governance), "ReentrancyGuardReentrantCall")
    assert d.market.functions.pendingWithdrawal(mock.address).call() == price
    assert holdings(d, mock.address) == 0
    assert holdings(d, d.market.address) == market_before
    assert_solvent(d, [*everyone(d), mock.address])

    transact(d.w3, d.token.functions.setReceiver(ZERO_ADDRESS), a.governance)
    transact(d.w3, mock.functions.withdraw(), a.governance)
    assert holdings(d, mock.address) == price


# --------------------------------------------------------------------------- receipt replay


def _two_claimed_jobs(d: Deployment) -> tuple[int, int]:
    """Two claimed jobs on the same dataset (so their datasetsHash is the same)."""
    ds = list_dataset(d, d.actors.providers[0])
    first, second = create_job(d, [ds]), create_job(d, [ds])
    claim_job(d, first)
    claim_job(d, second)
    return first, second


def test_receipt_replayed_on_another_job(chain: Deployment) -> None:
    first, second = _two_claimed_jobs(chain)
    receipt = receipt_for(chain, first, 1)
    assert receipt["datasetsHash"] == chain.market.functions.datasetsHashOf(second).call()
    signature = _sign(chain.actors.trainer, domain(chain.w3, chain.market, "SterlingJobMarket"), receipt)
    expect_revert(lambda: _submit_signed(chain, second, receipt, signature), "JobMarketReceiptJobMismatch", second, first)
    # rewriting the job id breaks the signature
    forged = {**receipt, "jobId": second}
    expect_revert(
        lambda: _submit_signed(chain, second, forged, signature),
        "JobMarketInvalidReceiptSigner",
        _recovered(chain, forged, signature),
        chain.actors.trainer.address,
    )
    _submit_signed(chain, first, receipt, signature)
    assert job_info(chain, second)["status"] != STATUS_COMPLETED


def test_receipt_signed_for_another_chain(chain: Deployment) -> None:
    (job_id, _) = _two_claimed_jobs(chain)
    receipt = receipt_for(chain, job_id, 1)
    foreign = {**domain(chain.w3, chain.market, "SterlingJobMarket"), "chainId": chain.w3.eth.chain_id + 1}
    signature = _sign(chain.actors.trainer, foreign, receipt)
    recovered = _recovered(chain, receipt, signature)
    assert recovered != chain.actors.trainer.address
    expect_revert(
        lambda: _submit_signed(chain, job_id, receipt, signature),
        "JobMarketInvalidReceiptSigner",
        recovered,
        chain.actors.trainer.address,
    )


def test_receipt_signed_for_another_deployment(chain: Deployment) -> None:
    """A second market on the same chain and registry, with an identical job 1: a receipt signed
    for it is worthless on the first market (the domain binds verifyingContract)."""
    a = chain.actors
    (job_id, _) = _two_claimed_jobs(chain)
    other_market = deploy(
        chain.w3,
        "JobMarket",
        a.governance,
        chain.registry.address,
        ZERO_ADDRESS,
        ADMIN_DELAY,
        a.governance,
        CLAIM_LEASE,
        UNBONDING_PERIOD,
    )
    other = Deployment(w3=chain.w3, registry=chain.registry, market=other_market, actors=a)
    deposit_stake(other, a.operator, STAKE)
    other_job = create_job(other, [list_dataset(other, a.providers[0])])
    claim_job(other, other_job)
    receipt = receipt_for(other, other_job, 1)
    assert receipt == receipt_for(chain, job_id, 1)  # same job id and datasets: only the domain differs
    signature = _sign(a.trainer, domain(chain.w3, other_market, "SterlingJobMarket"), receipt)
    expect_revert(
        lambda: _submit_signed(chain, job_id, receipt, signature),
        "JobMarketInvalidReceiptSigner",
        _recovered(chain, receipt, signature),
        a.trainer.address,
    )
    _submit_signed(other, other_job, receipt, signature)  # where it belongs, it is accepted
    assert job_info(other, other_job)["status"] == STATUS_COMPLETED
    assert job_info(chain, job_id)["status"] != STATUS_COMPLETED


def test_double_submit_is_refused(chain: Deployment) -> None:
    (job_id, _) = _two_claimed_jobs(chain)
    receipt = receipt_for(chain, job_id, 1)
    submit_result(chain, job_id, receipt)
    pending = chain.market.functions.pendingWithdrawal(chain.actors.providers[0]).call()
    spent = dataset_info(chain, 1)["epsilonSpent"]
    expect_revert(lambda: submit_result(chain, job_id, receipt), "JobMarketInvalidJobStatus", job_id, STATUS_COMPLETED)
    expect_revert(
        lambda: submit_result(chain, job_id, receipt_for(chain, job_id, 2)),
        "JobMarketInvalidJobStatus",
        job_id,
        STATUS_COMPLETED,
    )
    assert chain.market.functions.pendingWithdrawal(chain.actors.providers[0]).call() == pending
    assert dataset_info(chain, 1)["epsilonSpent"] == spent


def test_malformed_receipt_signatures(chain: Deployment) -> None:
    """Truncated and malleable (high-s) signatures are refused by ECDSA before any recovery."""
    (job_id, _) = _two_claimed_jobs(chain)
    receipt = receipt_for(chain, job_id, 1)
    signature = _sign(chain.actors.trainer, domain(chain.w3, chain.market, "SterlingJobMarket"), receipt)
    expect_revert(lambda: _submit_signed(chain, job_id, receipt, signature[:64]), "ECDSAInvalidSignatureLength", 64)
    # (r, n - s, v ^ 1) recovers to the same key; OpenZeppelin refuses the upper-half s
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    high_s = (n - int.from_bytes(signature[32:64], "big")).to_bytes(32, "big")
    malleated = signature[:32] + high_s + bytes([signature[64] ^ 1])
    expect_revert(lambda: _submit_signed(chain, job_id, receipt, malleated), "ECDSAInvalidSignatureS", high_s)
    _submit_signed(chain, job_id, receipt, signature)


def test_certificate_for_another_registry_is_refused(chain: Deployment) -> None:
    """A verifier's certificate is bound to one registry: replayed on another, it recovers to a
    different address, which is not a verifier there."""
    a = chain.actors
    other_registry = deploy(chain.w3, "EnclaveRegistry", a.governance, ADMIN_DELAY, a.governance)
    cert = certificate(a.other_trainer.address, a.operator, chain.now() + 3600)
    foreign = Deployment(w3=chain.w3, registry=other_registry, market=chain.market, actors=a)
    signature = sign_certificate(foreign, a.verifier, cert)
    message = encode_typed_data(domain(chain.w3, chain.registry, "SterlingEnclaveRegistry"), CERTIFICATE_TYPES, cert)
    recovered = Account.recover_message(message, signature=signature)
    assert recovered != a.verifier.address
    expect_revert(
        lambda: transact(chain.w3, chain.registry.functions.register(cert_tuple(cert), signature), a.operator),
        "EnclaveRegistryUnknownVerifier",
        recovered,
    )


# --------------------------------------------------------------------------- untrusted enclaves


def test_revoked_measurement_blocks_claim_and_submit(chain: Deployment) -> None:
    a = chain.actors
    ds = list_dataset(chain, a.providers[0])
    claimed, unclaimed = create_job(chain, [ds]), create_job(chain, [ds])
    claim_job(chain, claimed)
    receipt = receipt_for(chain, claimed, 1)  # signed by the enclave before the revocation lands
    transact(chain.w3, chain.registry.functions.revokeMeasurement(ROLE_TRAINER, TRAINER_MEASUREMENT), a.governance)
    expect_revert(lambda: submit_result(chain, claimed, receipt), "JobMarketEnclaveNotActive", a.trainer.address)
    expect_revert(lambda: claim_job(chain, unclaimed), "JobMarketEnclaveNotActive", a.trainer.address)
    assert chain.market.functions.pendingWithdrawal(a.providers[0]).call() == 0
    # the consumer gets the escrow back once the job expires; the ε stays consumed
    chain.travel_to(job_info(chain, claimed)["completionDeadline"] + 1)
    transact(chain.w3, chain.market.functions.expireJob(claimed), a.stranger)
    assert chain.market.functions.pendingWithdrawal(a.consumer).call() == PRICE + FEE
    assert dataset_info(chain, ds)["epsilonSpent"] == EPSILON_SCALE


def test_revoked_enclave_cannot_claim_submit_or_reregister(chain: Deployment) -> None:
    a = chain.actors
    ds = list_dataset(chain, a.providers[0])
    claimed, unclaimed = create_job(chain, [ds]), create_job(chain, [ds])
    claim_job(chain, claimed)
    transact(chain.w3, chain.registry.functions.revokeEnclave(a.trainer.address), a.governance)
    assert enclave_info(chain, a.trainer.address)["revoked"] is True
    expect_revert(lambda: claim_job(chain, unclaimed), "JobMarketEnclaveNotActive", a.trainer.address)
    expect_revert(
        lambda: submit_result(chain, claimed, receipt_for(chain, claimed, 1)),
        "JobMarketEnclaveNotActive",
        a.trainer.address,
    )
    # a fresh certificate with a new validity does not bring it back, nor does re-approving
    transact(chain.w3, chain.registry.functions.approveMeasurement(ROLE_TRAINER, TRAINER_MEASUREMENT), a.governance)
    expect_revert(
        lambda: register(chain, a.trainer, a.operator, valid_until=chain.now() + 2 * 365 * 24 * 3600),
        "EnclaveRegistryEnclaveRevoked",
        a.trainer.address,
    )
    expect_revert(
        lambda: submit_result(chain, claimed, receipt_for(chain, claimed, 1)),
        "JobMarketEnclaveNotActive",
        a.trainer.address,
    )
    # another enclave of the same operator can take the unclaimed job
    register(chain, a.other_trainer, a.operator)
    claim_job(chain, unclaimed, enclave=a.other_trainer)
    submit_result(chain, unclaimed, receipt_for(chain, unclaimed, 1), key=a.other_trainer)
    assert job_info(chain, unclaimed)["status"] == STATUS_COMPLETED


def test_expired_certificate_cannot_register(chain: Deployment) -> None:
    a = chain.actors
    valid_until = chain.now() - 1
    cert = certificate(a.other_trainer.address, a.operator, valid_until)
    call = chain.registry.functions.register(cert_tuple(cert), sign_certificate(chain, a.verifier, cert))
    before = chain.now()
    with pytest.raises(Exception) as info:  # noqa: PT011 - the type varies by provider
        transact(chain.w3, call, a.operator)
    name, (until, at) = decode_revert(revert_data(info.value))
    # ``at`` is the block's time, which the wall clock may move on by a second after ``before`` was read
    assert (name, until) == ("EnclaveRegistryCertificateExpired", valid_until) and before <= at <= before + 2
    assert enclave_info(chain, a.other_trainer.address)["operator"] == ZERO_ADDRESS


def test_certificate_expiring_between_claim_and_submit(chain: Deployment) -> None:
    a = chain.actors
    valid_until = chain.now() + 100
    register(chain, a.other_trainer, a.other_operator, valid_until=valid_until)
    job_id = create_job(chain, [list_dataset(chain, a.providers[0])])
    claim_job(chain, job_id, enclave=a.other_trainer, operator=a.other_operator)
    receipt = receipt_for(chain, job_id, 1)
    chain.travel_to(valid_until + 1)
    expect_revert(
        lambda: submit_result(chain, job_id, receipt, key=a.other_trainer, sender=a.other_operator),
        "JobMarketEnclaveNotActive",
        a.other_trainer.address,
    )
    # a renewed certificate (fresh attestation) restores it before the completion deadline
    register(chain, a.other_trainer, a.other_operator, valid_until=chain.now() + 3600)
    submit_result(chain, job_id, receipt, key=a.other_trainer, sender=a.other_operator)
    assert chain.market.functions.pendingWithdrawal(a.other_operator).call() == FEE


def test_unregistered_worker_cannot_claim(chain: Deployment) -> None:
    a = chain.actors
    job_id = create_job(chain, [list_dataset(chain, a.providers[0])])
    claim = chain.market.functions.claimJob
    expect_revert(lambda: transact(chain.w3, claim(job_id, a.stranger), a.stranger), "JobMarketEnclaveNotActive", a.stranger)
    # naming a real enclave does not help: the caller must be its operator
    expect_revert(
        lambda: transact(chain.w3, claim(job_id, a.trainer.address), a.stranger),
        "JobMarketNotEnclaveOperator",
        a.stranger,
        a.operator,
    )
    # nor does knowing an enclave key without a certificate
    expect_revert(
        lambda: transact(chain.w3, claim(job_id, a.other_trainer.address), a.stranger),
        "JobMarketEnclaveNotActive",
        a.other_trainer.address,
    )
    assert job_info(chain, job_id)["status"] == STATUS_OPEN


# --------------------------------------------------------------------------- same-block price change


@contextmanager
def _one_block(d: Deployment) -> Iterator[None]:
    """Queue the transactions sent inside the block into one block, mined on exit, in send order."""
    tester = d.w3.provider.ethereum_tester  # type: ignore[attr-defined]
    tester.disable_auto_mine_transactions()
    try:
        yield
        tester.mine_blocks(1)
    finally:
        tester.enable_auto_mine_transactions()


def test_price_raised_in_the_same_block_refuses_the_stale_purchase(chain: Deployment) -> None:
    a = chain.actors
    m = chain.market.functions
    ds = list_dataset(chain, a.providers[0])
    request = job_request(chain, [ds])  # maxTotalPrice = the old price + fee
    consumer_before = holdings(chain, a.consumer)
    market_before = holdings(chain, chain.market.address)
    with _one_block(chain):
        raise_price = send_unchecked(chain.w3, m.updateTerms(ds, terms(price=2 * PRICE)), a.providers[0])
        purchase = send_unchecked(chain.w3, m.createJob(request), a.consumer, request[6])
    first = chain.w3.eth.get_transaction_receipt(raise_price)  # type: ignore[arg-type]
    second = chain.w3.eth.get_transaction_receipt(purchase)  # type: ignore[arg-type]
    assert first["blockNumber"] == second["blockNumber"]
    assert first["transactionIndex"] < second["transactionIndex"]
    assert (first["status"], second["status"]) == (1, 0)
    assert replay_revert(chain.w3, purchase) == ("JobMarketPriceAboveLimit", (2 * PRICE + FEE, PRICE + FEE))
    # nothing spent but gas
    assert consumer_before - holdings(chain, a.consumer) == second["gasUsed"] * second["effectiveGasPrice"]
    assert holdings(chain, chain.market.address) == market_before
    assert m.jobCount().call() == 0
    assert m.pendingWithdrawal(a.consumer).call() == 0
    assert dataset_info(chain, ds)["epsilonReserved"] == 0


def test_purchase_before_the_price_change_in_the_same_block_pays_the_old_price(chain: Deployment) -> None:
    a = chain.actors
    m = chain.market.functions
    ds = list_dataset(chain, a.providers[0])
    request = job_request(chain, [ds])
    with _one_block(chain):
        purchase = send_unchecked(chain.w3, m.createJob(request), a.consumer, request[6])
        raise_price = send_unchecked(chain.w3, m.updateTerms(ds, terms(price=2 * PRICE)), a.providers[0])
    first = chain.w3.eth.get_transaction_receipt(purchase)  # type: ignore[arg-type]
    second = chain.w3.eth.get_transaction_receipt(raise_price)  # type: ignore[arg-type]
    assert first["blockNumber"] == second["blockNumber"]
    assert first["transactionIndex"] < second["transactionIndex"]
    assert (first["status"], second["status"]) == (1, 1)
    assert dataset_info(chain, ds)["terms"][0] == 2 * PRICE
    assert job_info(chain, 1)["prices"] == [PRICE]
    assert job_info(chain, 1)["escrow"] == PRICE + FEE
    complete_job(chain, 1)
    assert withdraw_all(chain, a.providers[0]) == PRICE
    assert job_info(chain, 1)["status"] == STATUS_COMPLETED
