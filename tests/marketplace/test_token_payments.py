"""A market paying in an ERC-20 stablecoin, end to end; the price limit of ``createJob``; cancelling."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from eth_account.signers.local import LocalAccount
from web3.contract import Contract
from web3.logs import DISCARD

from marketplace import chain as chain_mod
from marketplace.chain import Chain, Wei
from marketplace.abi import load_artifact
from marketplace.consumer import Consumer
from marketplace.contracts import EPSILON_SCALE, JobStatus
from marketplace.errors import ContractReverted, JobNotReady
from sterling.localnet import LocalNet, bring_up
from marketplace.provider import ListedDataset, list_dataset
from tests.conftest import toy_package, toy_spec, toy_terms

USD = 10**6  # TestStablecoin has 6 decimals, like USDC
PRICE = 25 * USD
FEE = 5 * USD


@dataclass
class TokenNet:
    """A local deployment whose market pays in ``token``, and an account that may mint it."""

    net: LocalNet
    token: Contract
    minter: LocalAccount

    def mint(self, to: str, amount: int) -> None:
        self.net.chain.transact(self.minter, self.token.functions.mint(to, amount))

    def balance(self, account: str) -> int:
        return int(self.token.functions.balanceOf(account).call())


def _deploy_stablecoin(chain: Chain, deployer: LocalAccount) -> Contract:
    artifact = load_artifact("TestStablecoin", test=True)
    factory = chain.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    tx = chain.transact(deployer, factory.constructor(), name="deploy TestStablecoin")  # type: ignore[arg-type]
    address = tx.receipt["contractAddress"]
    assert address is not None
    token: Contract = chain.w3.eth.contract(address=address, abi=artifact["abi"])
    return token


@pytest.fixture(scope="module")
def token_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenNet]:
    """One embedded chain with a stablecoin-paying market, shared by this module (no test moves time)."""
    chain = chain_mod.embedded()
    minter = chain.new_account()
    token = _deploy_stablecoin(chain, minter)
    net = bring_up(chain, tmp_path_factory.mktemp("token-localnet"), payment_token=str(token.address))
    yield TokenNet(net, token, minter)
    net.close()


def _list(net: LocalNet, seed: int, *, price: int = PRICE) -> tuple[ListedDataset, LocalAccount]:
    provider = net.chain.new_account()
    listed = list_dataset(
        toy_package(150, seed), provider, terms=toy_terms(price=price),
        market=net.market, registry=net.registry, key_manager=net.key_manager, blobs=net.blobs,
    )  # fmt: skip
    return listed, provider


def _consumer(t: TokenNet, tokens: int) -> Consumer:
    consumer = Consumer(t.net.chain.new_account(), market=t.net.market, blobs=t.net.blobs)
    t.mint(consumer.account.address, tokens)
    return consumer


def test_a_job_paid_in_tokens_settles_and_providers_and_operator_withdraw_tokens(token_net: TokenNet) -> None:
    t, net = token_net, token_net.net
    market = net.market
    assert market.payment_token() == t.token.address
    assert net.deployment.payment_token == t.token.address
    listed, provider = _list(net, 31)
    consumer = _consumer(t, 100 * USD)
    assert market.payment_allowance(consumer.account.address) == 0

    created = consumer.create_job([listed.dataset_id], toy_spec(epochs=1), epsilon=1.0, delta=1e-5, worker_fee=Wei(FEE))
    # The approval happened inside create_job, for exactly the price, and all of it was pulled.
    assert created.escrow == PRICE + FEE
    assert t.balance(consumer.account.address) == 100 * USD - (PRICE + FEE)
    # The market holds the escrow and the operator's stake (a claim needs a stake of Σ prices).
    stake = market.total_stake()
    assert stake >= PRICE and market.stake_of(net.operator.address).amount == stake
    assert t.balance(market.address) - stake == PRICE + FEE == market.locked_escrow()
    assert market.payment_allowance(consumer.account.address) == 0
    assert market.pending_withdrawal(consumer.account.address) == 0
    assert net.chain.balance(market.address) == 0  # no native currency moved
    job = market.job(created.job_id)
    assert job.status is JobStatus.OPEN and job.prices == (PRICE,) and job.worker_fee == FEE

    net.worker.run_job(created.job_id)
    job = market.job(created.job_id)
    assert job.status is JobStatus.COMPLETED and 0 < job.epsilon_spent <= EPSILON_SCALE
    assert market.locked_escrow() == 0
    assert market.pending_withdrawal(provider.address) == PRICE
    assert market.pending_withdrawal(net.operator.address) == FEE

    operator_before = t.balance(net.operator.address)
    native_before = net.chain.balance(provider.address)
    amount, tx = market.withdraw(provider)
    assert amount == PRICE and t.balance(provider.address) == PRICE
    # The provider paid gas in the native currency and received nothing else in it.
    assert net.chain.balance(provider.address) == native_before - tx.gas_used * int(tx.receipt["effectiveGasPrice"])
    amount, _ = market.withdraw(net.operator)
    assert amount == FEE and t.balance(net.operator.address) == operator_before + FEE
    assert market.payment_balance(provider.address) == PRICE
    assert t.balance(market.address) == stake
    with pytest.raises(ContractReverted) as err:
        market.withdraw(provider)
    assert err.value.error == "JobMarketNothingToWithdraw"

    model = consumer.fetch_model(created.job_id)
    assert model is not None


def test_a_consumer_without_enough_tokens_is_refused_with_the_tokens_error(token_net: TokenNet) -> None:
    t, net = token_net, token_net.net
    listed, _ = _list(net, 32)
    consumer = _consumer(t, PRICE - 1)
    with pytest.raises(ContractReverted) as err:
        consumer.create_job([listed.dataset_id], toy_spec(), epsilon=1.0, delta=1e-5, worker_fee=Wei(0))
    assert err.value.error == "ERC20InsufficientBalance"
    assert err.value.error_args == (consumer.account.address, PRICE - 1, PRICE)
    assert t.balance(consumer.account.address) == PRICE - 1
    assert net.market.remaining_epsilon(listed.dataset_id) == 10 * EPSILON_SCALE


def test_a_price_above_the_limit_reverts_and_nothing_is_spent_in_tokens(token_net: TokenNet) -> None:
    t, net = token_net, token_net.net
    market = net.market
    listed, provider = _list(net, 33)
    consumer = _consumer(t, 100 * USD)
    jobs, escrow = market.job_count(), market.locked_escrow()
    # The consumer saw the price PRICE + FEE; the provider raises it before the job lands.
    seen = Wei(market.price_of([listed.dataset_id]) + FEE)
    market.update_terms(provider, listed.dataset_id, toy_terms(price=PRICE + USD))
    with pytest.raises(ContractReverted) as err:
        consumer.create_job([listed.dataset_id], toy_spec(), epsilon=1.0, delta=1e-5, worker_fee=Wei(FEE), max_total_price=seen)
    assert err.value.error == "JobMarketPriceAboveLimit"
    assert err.value.error_args == (PRICE + USD + FEE, seen)
    assert t.balance(consumer.account.address) == 100 * USD
    assert (market.job_count(), market.locked_escrow()) == (jobs, escrow)
    assert market.remaining_epsilon(listed.dataset_id) == 10 * EPSILON_SCALE

    # A higher limit pulls only the current price; the rest of the approval stays unused.
    created = consumer.create_job(
        [listed.dataset_id], toy_spec(), epsilon=1.0, delta=1e-5, worker_fee=Wei(FEE), max_total_price=Wei(40 * USD)
    )
    assert created.escrow == PRICE + USD + FEE
    assert t.balance(consumer.account.address) == 100 * USD - created.escrow
    assert market.payment_allowance(consumer.account.address) == 40 * USD - created.escrow
    assert market.job(created.job_id).prices == (PRICE + USD,)
    consumer.cancel_job(created.job_id)  # leave no open job behind for other tests


def test_a_price_above_the_limit_reverts_before_anything_is_sent_in_native_currency(localnet: LocalNet) -> None:
    net = localnet
    market = net.market
    assert market.payment_token() is None
    listed, _ = _list(net, 34, price=10**17)
    consumer = Consumer(net.chain.new_account(), market=market, blobs=net.blobs)
    before, jobs = net.chain.balance(consumer.account.address), market.job_count()
    with pytest.raises(ContractReverted) as err:
        consumer.create_job([listed.dataset_id], toy_spec(), epsilon=1.0, delta=1e-5, worker_fee=Wei(10**16),
                            max_total_price=Wei(10**17))  # fmt: skip
    assert err.value.error == "JobMarketPriceAboveLimit"
    assert err.value.error_args == (10**17 + 10**16, 10**17)
    assert net.chain.balance(consumer.account.address) == before  # refused in estimation: not even gas
    assert market.job_count() == jobs and market.remaining_epsilon(listed.dataset_id) == 10 * EPSILON_SCALE

    # A limit above the price sends the limit; the change is credited back at once.
    created = consumer.create_job([listed.dataset_id], toy_spec(), epsilon=1.0, delta=1e-5, worker_fee=Wei(10**16),
                                  max_total_price=Wei(2 * 10**17))  # fmt: skip
    assert created.escrow == 10**17 + 10**16
    assert market.pending_withdrawal(consumer.account.address) == 2 * 10**17 - created.escrow
    consumer.cancel_job(created.job_id)
    assert market.pending_withdrawal(consumer.account.address) == 2 * 10**17


def test_cancelling_an_open_job_refunds_the_tokens_and_releases_the_budget(token_net: TokenNet) -> None:
    t, net = token_net, token_net.net
    market = net.market
    listed, _ = _list(net, 35)
    consumer = _consumer(t, 50 * USD)
    created = consumer.create_job([listed.dataset_id], toy_spec(), epsilon=1.5, delta=1e-5, worker_fee=Wei(FEE))
    assert market.remaining_epsilon(listed.dataset_id) == 10 * EPSILON_SCALE - 1_500_000
    stranger = net.chain.new_account()
    with pytest.raises(ContractReverted) as err:
        market.cancel_job(stranger, created.job_id)
    assert err.value.error == "JobMarketNotConsumer"
    assert err.value.error_args == (created.job_id, stranger.address)

    tx = consumer.cancel_job(created.job_id)
    (event,) = market.contract.events.JobCancelled().process_receipt(tx.receipt, errors=DISCARD)
    assert event["args"]["refund"] == created.escrow == PRICE + FEE
    assert market.job(created.job_id).status is JobStatus.CANCELLED
    assert market.remaining_epsilon(listed.dataset_id) == 10 * EPSILON_SCALE
    assert market.dataset(listed.dataset_id).epsilon_reserved == 0
    assert market.pending_withdrawal(consumer.account.address) == PRICE + FEE
    with pytest.raises(ContractReverted) as err:
        consumer.cancel_job(created.job_id)
    assert err.value.error == "JobMarketInvalidJobStatus"
    assert err.value.error_args == (created.job_id, int(JobStatus.CANCELLED))
    with pytest.raises(JobNotReady):
        net.worker.run_job(created.job_id)
    with pytest.raises(ContractReverted) as err:
        market.claim_job(net.operator, created.job_id, net.worker.signer)
    assert err.value.error == "JobMarketInvalidJobStatus"

    amount, _ = consumer.withdraw()
    assert amount == PRICE + FEE
    assert t.balance(consumer.account.address) == 50 * USD
