"""ModelMarket: listings and their validation, listings of a completed job's model, owner-only
administration, allow-lists, deposits and the channel's binding to one inference enclave, voucher
redemption (every refusal), the operator fee split, close/reclaim timing, the ERC-20 path and the
gas of a redeem. Driven through the SDK client (:mod:`marketplace.model_market`) on the
embedded py-evm chain, so reverts arrive as ``ContractReverted`` with the custom error's name."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_tester.exceptions import TransactionFailed
from eth_utils import keccak
from web3.logs import DISCARD

from enclave_worker.trusted.onchain import DELTA_SCALE, EPSILON_SCALE, ModelStatus, OutputPolicy, Role
from enclave_worker.trusted.receipt import Receipt, datasets_hash, sign_receipt
from enclave_worker.trusted.vouchers import VOUCHER_TYPES, Voucher, check_voucher
from marketplace import chain as chain_mod
from marketplace.abi import load_artifact
from marketplace.chain import Chain, Wei
from marketplace.contracts import CERTIFICATE_TYPES, Certificate, Deployment, JobStatus, MarketClient, RegistryClient, Terms, deploy
from marketplace.errors import ConfigError, ContractReverted
from marketplace.model_market import ModelMarketClient, ModelTerms, deploy_model_market

ETHER = 10**18
PRICE = 10**12  # per row
CAP = 10_000
CLOSE_DELAY = 3600
INFERENCE_MEASUREMENT = keccak(b"sterling inference v1")
TRAINER_MEASUREMENT = keccak(b"sterling trainer v1")


def _addr(account: LocalAccount) -> bytes:
    return bytes.fromhex(account.address[2:])


@dataclass
class World:
    """A deployment with one verifier, an active inference enclave (run by ``operator``), a second
    one (``enclave2``, run by ``operator2``), an active trainer enclave (run by ``operator`` too), a
    listed model and a funded client."""

    chain: Chain
    deployment: Deployment
    registry: RegistryClient
    mm: ModelMarketClient
    governance: LocalAccount
    verifier: LocalAccount
    owner: LocalAccount
    client: LocalAccount
    operator: LocalAccount
    stranger: LocalAccount
    enclave: LocalAccount
    trainer: LocalAccount
    model_id: int
    operator2: LocalAccount
    enclave2: LocalAccount

    def voucher(self, amount: int, queries: int, *, model_id: int | None = None, enclave: LocalAccount | None = None,
                client: LocalAccount | None = None) -> Voucher:  # fmt: skip
        return Voucher(
            model_id=self.model_id if model_id is None else model_id,
            client=_addr(client or self.client),
            enclave=_addr(enclave or self.enclave),
            amount=amount,
            queries=queries,
        )

    def signed(self, voucher: Voucher, signer: LocalAccount | None = None) -> bytes:
        return self.mm.sign_voucher(signer or self.client, voucher)


def terms(**overrides: Any) -> ModelTerms:
    fields: dict[str, Any] = {
        "weights_hash": keccak(b"weights"),
        "spec_hash": keccak(b"spec"),
        "content_hash": keccak(b"ciphertext"),
        "price_per_query": Wei(PRICE),
        "output_policy": OutputPolicy.TOP_K,
        "output_param": 3,
        "query_cap": CAP,
    }
    fields.update(overrides)
    return ModelTerms(**fields)


def register_enclave(w: World, enclave: LocalAccount, operator: LocalAccount, role: Role, measurement: bytes) -> None:
    cert = Certificate(role, measurement, enclave.address, b"\x42" * 32, operator.address, w.chain.now() + 365 * 86400)
    signed = Account.sign_typed_data(w.verifier.key, w.registry.domain(), CERTIFICATE_TYPES, cert.message())
    w.registry.register(operator, cert, bytes(signed.signature))


def build_world(chain: Chain, *, token: str | None = None) -> World:
    governance = chain.new_account()
    deployment = deploy(chain, governance, payment_token=token, close_delay=CLOSE_DELAY)
    assert deployment.model_market is not None
    registry = RegistryClient(chain, deployment.registry)
    w = World(
        chain=chain, deployment=deployment, registry=registry, mm=ModelMarketClient(chain, deployment.model_market),
        governance=governance, verifier=Account.create(), owner=chain.new_account(), client=chain.new_account(),
        operator=chain.new_account(), stranger=chain.new_account(), enclave=Account.create(), trainer=Account.create(),
        model_id=0, operator2=chain.new_account(), enclave2=Account.create(),
    )  # fmt: skip
    registry.add_verifier(governance, w.verifier.address)
    registry.approve_measurement(governance, Role.INFERENCE, INFERENCE_MEASUREMENT)
    registry.approve_measurement(governance, Role.TRAINER, TRAINER_MEASUREMENT)
    register_enclave(w, w.enclave, w.operator, Role.INFERENCE, INFERENCE_MEASUREMENT)
    register_enclave(w, w.trainer, w.operator, Role.TRAINER, TRAINER_MEASUREMENT)
    register_enclave(w, w.enclave2, w.operator2, Role.INFERENCE, INFERENCE_MEASUREMENT)
    w.model_id, _ = w.mm.list_model(w.owner, terms())
    return w


@pytest.fixture(scope="module")
def base() -> World:
    return build_world(chain_mod.embedded())


@pytest.fixture
def w(base: World) -> Iterator[World]:
    """The module's world, reverted to its initial state after the test."""
    tester = base.chain.w3.provider.ethereum_tester  # type: ignore[attr-defined]
    snapshot = tester.take_snapshot()
    yield base
    tester.revert_to_snapshot(snapshot)


def reverts(error: str, fn: Any, *args: Any, **kwargs: Any) -> ContractReverted:
    with pytest.raises(ContractReverted) as info:
        fn(*args, **kwargs)
    assert info.value.error == error, info.value
    return info.value


# --------------------------------------------------------------------------- listing


def test_listing_is_stored_as_given(w: World) -> None:
    t = terms(expiry=w.chain.now() + 1000, restricted=True, output_policy=OutputPolicy.PROBABILITIES, output_param=6)
    model_id, result = w.mm.list_model(w.stranger, t)
    assert model_id == w.model_id + 1 == w.mm.model_count()
    record = w.mm.model(model_id)
    assert (record.owner, record.status, record.terms) == (w.stranger.address, ModelStatus.ACTIVE, t)
    (event,) = w.mm.contract.events.ModelListed().process_receipt(result.receipt)
    assert event["args"]["owner"] == w.stranger.address
    # Chain.call decodes reverts of JSON-RPC nodes; the embedded provider raises TransactionFailed.
    with pytest.raises((ContractReverted, TransactionFailed)):
        w.mm.model(99)


def test_list_model_takes_no_provenance(w: World) -> None:
    """Only listModelFromJob sets a source job and its (ε, δ): an owner's own word is refused."""
    for provenance in ({"source_job_id": 7}, {"epsilon": 2_000_000}, {"delta": 10**13}):
        bad = terms(**provenance)
        raw = w.mm.contract.functions.listModel(bad.as_tuple())
        error = reverts("ModelMarketProvenanceNotAllowed", w.chain.transact, w.owner, raw)
        assert error.error_args == (bad.source_job_id, bad.epsilon, bad.delta)
        with pytest.raises(ConfigError, match="list_model_from_job"):  # the SDK refuses before sending
            w.mm.list_model(w.owner, bad)
    assert w.mm.model_count() == w.model_id


@pytest.mark.parametrize(
    ("policy", "param", "ok"),
    [
        (1, 0, True), (1, 1, False),
        (2, 0, False), (2, 1, True), (2, 255, True),
        (3, 0, True), (3, 6, True), (3, 7, False),
        (0, 0, False), (4, 0, False),
    ],
)  # fmt: skip
def test_output_policy_validation(w: World, policy: int, param: int, ok: bool) -> None:
    # Raw contract call: the SDK's own validation would refuse bad terms before sending.
    raw = dataclasses.replace(terms(), output_param=param).as_tuple()
    raw = (*raw[:4], policy, *raw[5:])
    fn = w.mm.contract.functions.listModel(raw)
    if ok:
        w.chain.transact(w.owner, fn)
    else:
        error = reverts("ModelMarketInvalidOutputPolicy", w.chain.transact, w.owner, fn)
        assert error.error_args == (policy, param)


def test_query_cap_hashes_and_expiry_are_validated(w: World) -> None:
    bad_cap = dataclasses.replace(terms(), query_cap=0).as_tuple()
    reverts("ModelMarketInvalidQueryCap", w.chain.transact, w.owner, w.mm.contract.functions.listModel(bad_cap))
    for field in ("weights_hash", "spec_hash", "content_hash"):
        raw = terms(**{field: bytes(32)}).as_tuple()
        reverts("ModelMarketInvalidHashes", w.chain.transact, w.owner, w.mm.contract.functions.listModel(raw))
    reverts("ModelMarketInvalidExpiry", w.mm.list_model, w.owner, terms(expiry=w.chain.now()))
    # The SDK refuses the same terms before sending anything.
    for bad in (terms(query_cap=0), terms(output_policy=OutputPolicy.LABEL, output_param=2), terms(spec_hash=bytes(32)),
                terms(output_policy=OutputPolicy.PROBABILITIES, output_param=7)):  # fmt: skip
        with pytest.raises(ConfigError):
            w.mm.list_model(w.owner, bad)


# --------------------------------------------------------------------------- administration


def test_admin_is_owner_only(w: World) -> None:
    m = w.model_id
    for call in (
        lambda: w.mm.set_price(w.stranger, m, Wei(1)),
        lambda: w.mm.pause(w.stranger, m),
        lambda: w.mm.delist(w.stranger, m),
        lambda: w.mm.set_allowed(w.stranger, m, [w.client.address], True),
    ):
        error = reverts("ModelMarketNotOwner", call)
        assert error.error_args == (m, w.stranger.address)
    w.mm.pause(w.owner, m)
    reverts("ModelMarketNotOwner", w.mm.resume, w.stranger, m)
    reverts("ModelMarketUnknownModel", w.mm.pause, w.owner, 99)
    # Governance alone sets the fee, up to 50 %.
    reverts("AccessControlUnauthorizedAccount", w.mm.set_operator_fee, w.owner, 0)
    reverts("ModelMarketInvalidFee", w.mm.set_operator_fee, w.governance, 5001)
    w.mm.set_operator_fee(w.governance, 5000)
    assert w.mm.operator_fee_bps() == 5000


def test_reprice_pause_resume_delist(w: World) -> None:
    m = w.model_id
    result = w.mm.set_price(w.owner, m, Wei(5))
    assert w.mm.model(m).terms.price_per_query == 5
    assert w.mm.contract.events.ModelRepriced().process_receipt(result.receipt)[0]["args"]["pricePerQuery"] == 5

    w.mm.pause(w.owner, m)
    assert w.mm.model(m).status is ModelStatus.PAUSED
    reverts("ModelMarketInvalidStatus", w.mm.deposit, w.client, m, Wei(ETHER), w.enclave.address)
    reverts("ModelMarketInvalidStatus", w.mm.pause, w.owner, m)
    w.mm.resume(w.owner, m)
    reverts("ModelMarketInvalidStatus", w.mm.resume, w.owner, m)
    assert w.mm.model(m).status is ModelStatus.ACTIVE
    w.mm.deposit(w.client, m, Wei(ETHER), w.enclave.address)

    w.mm.delist(w.owner, m)
    assert w.mm.model(m).status is ModelStatus.DELISTED
    reverts("ModelMarketInvalidStatus", w.mm.deposit, w.client, m, Wei(ETHER), w.enclave.address)
    for call in (lambda: w.mm.set_price(w.owner, m, Wei(1)), lambda: w.mm.resume(w.owner, m),
                 lambda: w.mm.delist(w.owner, m), lambda: w.mm.set_allowed(w.owner, m, [w.client.address], True)):  # fmt: skip
        reverts("ModelMarketInvalidStatus", call)
    # Served queries are still owed after delisting.
    v = w.voucher(10 * PRICE, 10)
    w.mm.redeem(w.operator, v, w.signed(v))
    assert w.mm.channel(m, w.client.address).redeemed == 10 * PRICE


def test_allow_list(w: World) -> None:
    m, _ = w.mm.list_model(w.owner, terms(restricted=True))
    assert not w.mm.is_allowed(m, w.client.address)
    assert w.mm.is_allowed(w.model_id, w.client.address)  # unrestricted: anyone
    assert not w.mm.is_allowed(99, w.client.address)
    error = reverts("ModelMarketClientNotAllowed", w.mm.deposit, w.client, m, Wei(ETHER), w.enclave.address)
    assert error.error_args == (m, w.client.address)
    w.mm.set_allowed(w.owner, m, [w.client.address, w.stranger.address], True)
    assert w.mm.is_allowed(m, w.client.address) and w.mm.is_allowed(m, w.stranger.address)
    w.mm.deposit(w.client, m, Wei(ETHER), w.enclave.address)
    w.mm.set_allowed(w.owner, m, [w.client.address], False)
    assert not w.mm.is_allowed(m, w.client.address)
    reverts("ModelMarketClientNotAllowed", w.mm.deposit, w.client, m, Wei(ETHER), w.enclave.address)
    # Removal does not cancel what was deposited: vouchers within it stay redeemable.
    v = w.voucher(PRICE, 1, model_id=m)
    w.mm.redeem(w.operator, v, w.signed(v))
    reverts("ModelMarketTooManyEntries", w.mm.set_allowed, w.owner, m, [w.client.address] * 65, True)


# --------------------------------------------------------------------------- deposits


def test_deposit_rules(w: World) -> None:
    m = w.model_id
    before = w.chain.balance(w.mm.address)
    w.mm.deposit(w.client, m, Wei(ETHER), w.enclave.address)
    result = w.mm.deposit(w.client, m, Wei(2 * ETHER), w.enclave.address)
    (event,) = w.mm.contract.events.Deposited().process_receipt(result.receipt)
    assert (event["args"]["amount"], event["args"]["deposited"]) == (2 * ETHER, 3 * ETHER)
    assert w.mm.channel(m, w.client.address).deposited == 3 * ETHER
    assert w.chain.balance(w.mm.address) - before == 3 * ETHER
    reverts("ModelMarketInvalidDeposit", w.mm.deposit, w.client, m, Wei(0), w.enclave.address)
    reverts("ModelMarketUnknownModel", w.mm.deposit, w.client, 99, Wei(1), w.enclave.address)
    fn = w.mm.contract.functions.deposit(m, 100, w.enclave.address)
    error = reverts("PullPaymentsIncorrectPayment", w.chain.transact, w.client, fn, value=99)
    assert error.error_args == (99, 100)
    expiring, _ = w.mm.list_model(w.owner, terms(expiry=w.chain.now() + 100))
    w.mm.deposit(w.client, expiring, Wei(1), w.enclave.address)
    w.chain.advance_time(100)
    reverts("ModelMarketModelExpired", w.mm.deposit, w.client, expiring, Wei(1), w.enclave.address)


# --------------------------------------------------------------------------- binding to one enclave


def test_the_first_deposit_binds_the_channel_and_later_ones_must_name_its_enclave(w: World) -> None:
    m, c = w.model_id, w.client
    assert w.mm.channel(m, c.address).enclave == "0x" + "00" * 20
    result = w.mm.deposit(c, m, Wei(100 * PRICE), w.enclave.address)
    (bound,) = w.mm.contract.events.ChannelBound().process_receipt(result.receipt, errors=DISCARD)
    assert (bound["args"]["modelId"], bound["args"]["client"], bound["args"]["enclave"]) == (m, c.address, w.enclave.address)
    assert w.mm.channel(m, c.address).enclave == w.enclave.address
    # A top-up naming the same enclave does not rebind.
    top_up = w.mm.deposit(c, m, Wei(PRICE), w.enclave.address)
    assert not w.mm.contract.events.ChannelBound().process_receipt(top_up.receipt, errors=DISCARD)
    # While the channel holds credit, it cannot move to another enclave (nor to none).
    for other in (w.enclave2.address, "0x" + "00" * 20):
        error = reverts("ModelMarketChannelBoundElsewhere", w.mm.deposit, c, m, Wei(PRICE), other)
        assert error.error_args == (m, c.address, w.enclave.address)
    # Only the bound enclave's vouchers are paid: the same totals made out to a second enclave are
    # refused, so a client cannot be served by two enclaves and pay one redemption.
    v1, v2 = w.voucher(10 * PRICE, 10), w.voucher(10 * PRICE, 10, enclave=w.enclave2)
    error = reverts("ModelMarketWrongEnclave", w.mm.redeem, w.operator2, v2, w.signed(v2))
    assert error.error_args == (w.enclave2.address, w.enclave.address)
    w.mm.redeem(w.operator, v1, w.signed(v1))
    # Another client's channel on the same model binds independently.
    w.mm.deposit(w.stranger, m, Wei(PRICE), w.enclave2.address)
    assert w.mm.channel(m, w.stranger.address).enclave == w.enclave2.address
    assert w.mm.channel(m, c.address).enclave == w.enclave.address


def test_a_channel_with_nothing_left_to_spend_is_rebound_by_a_deposit(w: World) -> None:
    m, c = w.model_id, w.client
    w.mm.deposit(c, m, Wei(10 * PRICE), w.enclave.address)
    v = w.voucher(10 * PRICE, 10)
    w.mm.redeem(w.operator, v, w.signed(v))  # fully redeemed: deposited == redeemed
    result = w.mm.deposit(c, m, Wei(5 * PRICE), w.enclave2.address)
    (bound,) = w.mm.contract.events.ChannelBound().process_receipt(result.receipt, errors=DISCARD)
    assert bound["args"]["enclave"] == w.enclave2.address
    ch = w.mm.channel(m, c.address)
    assert (ch.enclave, ch.deposited, ch.redeemed, ch.redeemed_queries) == (w.enclave2.address, 15 * PRICE, 10 * PRICE, 10)
    # The running totals continue with the new enclave; the old one's vouchers are refused.
    old = w.voucher(12 * PRICE, 12)
    reverts("ModelMarketWrongEnclave", w.mm.redeem, w.operator, old, w.signed(old))
    new = w.voucher(12 * PRICE, 12, enclave=w.enclave2)
    redemption, _ = w.mm.redeem(w.operator2, new, w.signed(new))
    assert (redemption.paid, redemption.enclave, redemption.operator) == (2 * PRICE, w.enclave2.address, w.operator2.address)
    # Credit left: no rebinding until a close and reclaim empty the channel.
    reverts("ModelMarketChannelBoundElsewhere", w.mm.deposit, c, m, Wei(PRICE), w.enclave.address)
    w.mm.request_close(c, m)
    w.chain.advance_time(CLOSE_DELAY)
    assert w.mm.reclaim(c, m)[0] == 3 * PRICE
    w.mm.deposit(c, m, Wei(PRICE), w.enclave.address)
    ch = w.mm.channel(m, c.address)
    assert (ch.enclave, ch.deposited, ch.redeemed, ch.close_requested_at) == (w.enclave.address, 13 * PRICE, 12 * PRICE, 0)


def test_binding_needs_an_active_inference_enclave(w: World) -> None:
    m, c = w.model_id, w.client
    stranger_key = Account.create().address
    for enclave in (w.trainer.address, stranger_key, "0x" + "00" * 20):  # a trainer, an unregistered key, none
        error = reverts("ModelMarketEnclaveNotActive", w.mm.deposit, c, m, Wei(PRICE), enclave)
        assert error.error_args == (enclave,)
    w.registry.revoke_enclave(w.governance, w.enclave2.address)
    reverts("ModelMarketEnclaveNotActive", w.mm.deposit, c, m, Wei(PRICE), w.enclave2.address)
    w.registry.revoke_measurement(w.governance, Role.INFERENCE, INFERENCE_MEASUREMENT)
    reverts("ModelMarketEnclaveNotActive", w.mm.deposit, c, m, Wei(PRICE), w.enclave.address)
    assert w.mm.channel(m, c.address).deposited == 0 and w.chain.balance(w.mm.address) == 0


# --------------------------------------------------------------------------- redeem


def test_redeem_valid_pays_owner_and_operator(w: World) -> None:
    m = w.model_id
    w.mm.deposit(w.client, m, Wei(ETHER), w.enclave.address)
    v = w.voucher(100 * PRICE, 100)
    assert w.mm.hash_voucher(v) == v.digest(chain_id=w.chain.chain_id, model_market=w.mm.address_bytes)
    signature = w.signed(v)
    check_voucher(v, signature, chain_id=w.chain.chain_id, model_market=w.mm.address_bytes)
    # The wallet path (eth-account's typed-data signing) gives the same signature.
    assert bytes(Account.sign_typed_data(w.client.key, w.mm.domain(), VOUCHER_TYPES, v.message()).signature) == signature
    redemption, _ = w.mm.redeem(w.operator, v, signature)
    fee = 100 * PRICE * 1000 // 10_000
    assert (redemption.paid, redemption.fee, redemption.operator) == (100 * PRICE, fee, w.operator.address)
    assert w.mm.credits(w.operator.address) == fee
    assert w.mm.credits(w.owner.address) == 100 * PRICE - fee
    ch = w.mm.channel(m, w.client.address)
    assert (ch.redeemed, ch.redeemed_queries, ch.balance) == (100 * PRICE, 100, ETHER - 100 * PRICE)
    # A later voucher pays only the increase.
    v2 = w.voucher(250 * PRICE, 250)
    redemption, _ = w.mm.redeem(w.operator, v2, w.signed(v2))
    assert redemption.paid == 150 * PRICE
    assert w.mm.credits(w.owner.address) + w.mm.credits(w.operator.address) == 250 * PRICE


def test_fee_split_and_withdraw(w: World) -> None:
    m = w.model_id
    w.mm.set_operator_fee(w.governance, 2500)
    w.mm.deposit(w.client, m, Wei(ETHER), w.enclave.address)
    v = w.voucher(1001, 3)  # odd amount: the fee rounds down, the owner gets the remainder
    w.mm.redeem(w.operator, v, w.signed(v))
    assert (w.mm.credits(w.operator.address), w.mm.credits(w.owner.address)) == (250, 751)
    before = w.chain.balance(w.owner.address)
    amount, result = w.mm.withdraw(w.owner)
    gas_cost = result.gas_used * int(result.receipt["effectiveGasPrice"])
    assert amount == 751 and w.chain.balance(w.owner.address) == before + 751 - gas_cost
    assert w.mm.credits(w.owner.address) == 0
    reverts("PullPaymentsNothingToWithdraw", w.mm.withdraw, w.owner)
    assert w.mm.withdraw(w.operator)[0] == 250
    w.mm.set_operator_fee(w.governance, 0)
    v = w.voucher(2001, 4)
    redemption, _ = w.mm.redeem(w.operator, v, w.signed(v))
    assert redemption.fee == 0 and w.mm.credits(w.owner.address) == 1000
    assert w.chain.balance(w.mm.address) == ETHER - 2001 + 1000


def test_redeem_refusals(w: World) -> None:
    m = w.model_id
    w.mm.deposit(w.client, m, Wei(100 * PRICE), w.enclave.address)
    v = w.voucher(10 * PRICE, 10)
    good = w.signed(v)

    # wrong signer: signed by the stranger, not the voucher's client
    error = reverts("ModelMarketInvalidVoucherSignature", w.mm.redeem, w.operator, v, w.signed(v, w.stranger))
    assert error.error_args == (w.client.address,)
    # malformed signature
    reverts("ModelMarketInvalidVoucherSignature", w.mm.redeem, w.operator, v, good[:64])
    # the malleable high-s twin of the good signature (same signer): refused, as the enclave refuses it
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    twin = good[:32] + (n - int.from_bytes(good[32:64], "big")).to_bytes(32, "big") + bytes([55 - good[64]])
    reverts("ModelMarketInvalidVoucherSignature", w.mm.redeem, w.operator, v, twin)
    # other model: the client's signature of model m, presented for another model of the same owner
    other, _ = w.mm.list_model(w.owner, terms())
    w.mm.deposit(w.client, other, Wei(100 * PRICE), w.enclave.address)
    reverts("ModelMarketInvalidVoucherSignature", w.mm.redeem, w.operator, dataclasses.replace(v, model_id=other), good)
    # other chain / other contract: signed under a foreign domain
    for chain_id, market in ((w.chain.chain_id + 1, w.mm.address_bytes), (w.chain.chain_id, bytes(range(20)))):
        from enclave_worker.trusted.vouchers import sign_voucher

        foreign = sign_voucher(bytes(w.client.key), v, chain_id=chain_id, model_market=market)
        reverts("ModelMarketInvalidVoucherSignature", w.mm.redeem, w.operator, v, foreign)
    # non-operator sender
    error = reverts("ModelMarketNotEnclaveOperator", w.mm.redeem, w.stranger, v, good)
    assert error.error_args == (w.stranger.address, w.operator.address)
    # the enclave must be active as INFERENCE: a trainer (same operator) is refused
    tv = w.voucher(10 * PRICE, 10, enclave=w.trainer)
    error = reverts("ModelMarketEnclaveNotActive", w.mm.redeem, w.operator, tv, w.signed(tv))
    assert error.error_args == (w.trainer.address,)
    # another active inference enclave, redeemed by its own operator: not the channel's enclave
    ov = w.voucher(10 * PRICE, 10, enclave=w.enclave2)
    error = reverts("ModelMarketWrongEnclave", w.mm.redeem, w.operator2, ov, w.signed(ov))
    assert error.error_args == (w.enclave2.address, w.enclave.address)
    # a channel that never deposited is bound to no enclave
    nv = w.voucher(PRICE, 1, client=w.stranger)
    error = reverts("ModelMarketWrongEnclave", w.mm.redeem, w.operator, nv, w.signed(nv, w.stranger))
    assert error.error_args == (w.enclave.address, "0x" + "00" * 20)
    # over-deposit
    big = w.voucher(100 * PRICE + 1, 101)
    error = reverts("ModelMarketInsufficientDeposit", w.mm.redeem, w.operator, big, w.signed(big))
    assert error.error_args == (100 * PRICE + 1, 100 * PRICE)
    # over-cap
    capped = w.voucher(20 * PRICE, CAP + 1)
    error = reverts("ModelMarketQueryCapExceeded", w.mm.redeem, w.operator, capped, w.signed(capped))
    assert error.error_args == (CAP + 1, CAP)
    # unknown model
    reverts("ModelMarketUnknownModel", w.mm.redeem, w.operator, dataclasses.replace(v, model_id=99), good)

    w.mm.redeem(w.operator, v, good)
    # replayed
    error = reverts("ModelMarketStaleVoucher", w.mm.redeem, w.operator, v, good)
    assert error.error_args == (10 * PRICE, 10 * PRICE)
    # stale: an older, smaller voucher
    old = w.voucher(5 * PRICE, 5)
    reverts("ModelMarketStaleVoucher", w.mm.redeem, w.operator, old, w.signed(old))
    # queries going back while the amount grows
    back = w.voucher(11 * PRICE, 9)
    error = reverts("ModelMarketQueriesDecreased", w.mm.redeem, w.operator, back, w.signed(back))
    assert error.error_args == (9, 10)
    assert w.mm.credits(w.owner.address) + w.mm.credits(w.operator.address) == 10 * PRICE


def test_revoked_or_expired_enclave_cannot_redeem(w: World) -> None:
    w.mm.deposit(w.client, w.model_id, Wei(ETHER), w.enclave.address)
    v = w.voucher(PRICE, 1)
    w.registry.revoke_measurement(w.governance, Role.INFERENCE, INFERENCE_MEASUREMENT)
    reverts("ModelMarketEnclaveNotActive", w.mm.redeem, w.operator, v, w.signed(v))
    w.registry.approve_measurement(w.governance, Role.INFERENCE, INFERENCE_MEASUREMENT)
    w.mm.redeem(w.operator, v, w.signed(v))
    w.registry.revoke_enclave(w.governance, w.enclave.address)
    v2 = w.voucher(2 * PRICE, 2)
    reverts("ModelMarketEnclaveNotActive", w.mm.redeem, w.operator, v2, w.signed(v2))


# --------------------------------------------------------------------------- close / reclaim


def test_close_and_reclaim_timing(w: World) -> None:
    m = w.model_id
    c = w.client
    reverts("ModelMarketNothingToReclaim", w.mm.request_close, c, m)
    reverts("ModelMarketCloseNotRequested", w.mm.reclaim, c, m)
    w.mm.deposit(c, m, Wei(ETHER), w.enclave.address)
    w.mm.request_close(c, m)
    requested = w.mm.channel(m, c.address).close_requested_at
    assert requested > 0
    reverts("ModelMarketClosePending", w.mm.request_close, c, m)
    error = reverts("ModelMarketCloseDelayNotPassed", w.mm.reclaim, c, m)
    assert error.error_args == (m, c.address, requested + CLOSE_DELAY)
    # A deposit cancels the pending close.
    w.mm.deposit(c, m, Wei(1), w.enclave.address)
    assert w.mm.channel(m, c.address).close_requested_at == 0
    reverts("ModelMarketCloseNotRequested", w.mm.reclaim, c, m)
    w.mm.request_close(c, m)
    # The operator may still redeem during the pending close.
    v = w.voucher(40 * PRICE, 40)
    w.mm.redeem(w.operator, v, w.signed(v))
    w.chain.advance_time(CLOSE_DELAY - 5)
    reverts("ModelMarketCloseDelayNotPassed", w.mm.reclaim, c, m)
    w.chain.advance_time(5)
    refund, _ = w.mm.reclaim(c, m)
    assert refund == ETHER + 1 - 40 * PRICE
    assert w.mm.credits(c.address) == refund
    ch = w.mm.channel(m, c.address)
    assert (ch.deposited, ch.redeemed, ch.balance, ch.close_requested_at) == (40 * PRICE, 40 * PRICE, 0, 0)
    # Nothing left to spend: a later voucher is over the deposit; nothing to reclaim twice.
    v2 = w.voucher(41 * PRICE, 41)
    reverts("ModelMarketInsufficientDeposit", w.mm.redeem, w.operator, v2, w.signed(v2))
    reverts("ModelMarketNothingToReclaim", w.mm.request_close, c, m)
    # A new deposit reopens the channel; the running totals continue.
    w.mm.deposit(c, m, Wei(PRICE), w.enclave.address)
    w.mm.redeem(w.operator, v2, w.signed(v2))
    assert w.chain.balance(w.mm.address) == refund + 41 * PRICE  # all credited, nothing in channels


# --------------------------------------------------------------------------- listing a job's model

JOB_EPSILON = EPSILON_SCALE  # reserved: 1.0
JOB_EPSILON_SPENT = 700_000  # the receipt's: 0.7
JOB_DELTA = 10**13  # 1e-5


def run_job(w: World, consumer: LocalAccount, *, until: JobStatus = JobStatus.COMPLETED) -> int:
    """A one-dataset job of ``consumer`` on the deployment's job market, taken to ``until`` (Open,
    Claimed or Completed) by the world's trainer enclave with a receipt it signs (no enclave runs)."""
    market = MarketClient(w.chain, w.deployment.market)
    provider = w.chain.new_account()
    content = keccak(provider.address.encode())
    dataset_id, _ = market.list_dataset(
        provider, content_hash=content, schema_hash=keccak(b"schema"), uri="blob://data",
        terms=Terms(Wei(10**15), 2 * EPSILON_SCALE, 10 * EPSILON_SCALE, DELTA_SCALE // 1000),
    )  # fmt: skip
    now = w.chain.now()
    job_id, _ = market.create_job(
        consumer, dataset_ids=[dataset_id], model_spec_hash=keccak(b"spec"), epsilon=JOB_EPSILON, delta=JOB_DELTA,
        consumer_key=b"\x01" * 32, worker_fee=Wei(0), claim_deadline=now + 600, completion_deadline=now + 3600,
    )  # fmt: skip
    if until is JobStatus.OPEN:
        return job_id
    market.ensure_stake(w.operator, Wei(10**15))
    market.claim_job(w.operator, job_id, w.trainer.address)
    if until is JobStatus.CLAIMED:
        return job_id
    receipt = Receipt(job_id, datasets_hash([content]), keccak(b"model"), keccak(b"result"), keccak(b"metrics"), JOB_EPSILON_SPENT)
    market.submit_result(w.operator, receipt, sign_receipt(w.trainer, receipt, chain_id=w.chain.chain_id, market=market.address_bytes))
    assert market.job(job_id).status is until
    return job_id


def test_a_completed_jobs_model_is_listed_with_the_jobs_privacy_parameters(w: World) -> None:
    consumer = w.chain.new_account()
    job_id = run_job(w, consumer)
    # Whatever the terms say about provenance, the listing takes it from the job.
    claimed = terms(source_job_id=job_id + 5, epsilon=1, delta=2, restricted=True)
    model_id, result = w.mm.list_model_from_job(consumer, job_id, claimed)
    record = w.mm.model(model_id)
    stored = dataclasses.replace(claimed, source_job_id=job_id, epsilon=JOB_EPSILON_SPENT, delta=JOB_DELTA)
    assert (record.owner, record.status, record.terms) == (consumer.address, ModelStatus.ACTIVE, stored)
    (event,) = w.mm.contract.events.ModelListed().process_receipt(result.receipt)
    assert ModelTerms.from_tuple(tuple(event["args"]["terms"].values())) == stored  # the event shows what is stored
    # It is a listing like any other: clients deposit, the owner administers it.
    w.mm.set_allowed(consumer, model_id, [w.client.address], True)
    w.mm.deposit(w.client, model_id, Wei(PRICE), w.enclave.address)
    # One listing per job, also with other terms or after a delisting.
    w.mm.delist(consumer, model_id)
    error = reverts("ModelMarketJobAlreadyListed", w.mm.list_model_from_job, consumer, job_id, terms(spec_hash=keccak(b"other")))
    assert error.error_args == (job_id, model_id)


def test_only_a_completed_job_is_listed(w: World) -> None:
    consumer = w.chain.new_account()
    for status in (JobStatus.OPEN, JobStatus.CLAIMED):
        job_id = run_job(w, consumer, until=status)
        error = reverts("ModelMarketJobNotCompleted", w.mm.list_model_from_job, consumer, job_id, terms())
        assert error.error_args == (job_id, int(status))
    cancelled = run_job(w, consumer, until=JobStatus.OPEN)
    MarketClient(w.chain, w.deployment.market).cancel_job(consumer, cancelled)
    error = reverts("ModelMarketJobNotCompleted", w.mm.list_model_from_job, consumer, cancelled, terms())
    assert error.error_args == (cancelled, int(JobStatus.CANCELLED))
    # An unknown job: the job market's own error comes through.
    error = reverts("JobMarketUnknownJob", w.mm.list_model_from_job, consumer, 999, terms())
    assert error.error_args == (999,)
    assert w.mm.model_count() == w.model_id


def test_only_the_jobs_consumer_lists_its_model(w: World) -> None:
    consumer = w.chain.new_account()
    job_id = run_job(w, consumer)
    for other in (w.stranger, w.owner, w.operator):
        error = reverts("ModelMarketNotJobConsumer", w.mm.list_model_from_job, other, job_id, terms())
        assert error.error_args == (job_id, other.address)
    # The listing's terms are validated as listModel's are.
    raw = terms(query_cap=0).as_tuple()
    fn = w.mm.contract.functions.listModelFromJob(job_id, raw)
    reverts("ModelMarketInvalidQueryCap", w.chain.transact, consumer, fn)
    model_id, _ = w.mm.list_model_from_job(consumer, job_id, terms())
    assert w.mm.model(model_id).terms.source_job_id == job_id


# --------------------------------------------------------------------------- ERC-20


def test_erc20_path() -> None:
    chain = chain_mod.embedded()
    minter = chain.new_account()
    token_address, _ = _deploy_test_token(chain, minter)
    w = build_world(chain, token=token_address)
    token = chain.w3.eth.contract(address=token_address, abi=load_artifact("TestStablecoin", test=True)["abi"])  # type: ignore[call-overload]
    chain.transact(minter, token.functions.mint(w.client.address, 10**9))
    assert w.mm.payment_token() == token_address
    fn = w.mm.contract.functions.deposit(w.model_id, 10**6, w.enclave.address)
    reverts("ERC20InsufficientAllowance", chain.transact, w.client, fn)
    reverts("PullPaymentsIncorrectPayment", chain.transact, w.client, fn, value=1)
    w.mm.deposit(w.client, w.model_id, Wei(10**6), w.enclave.address)  # approves, then pulls
    assert int(token.functions.balanceOf(w.mm.address).call()) == 10**6
    v = w.voucher(1000, 1)
    w.mm.redeem(w.operator, v, w.signed(v))
    assert w.mm.withdraw(w.owner)[0] == 900
    assert int(token.functions.balanceOf(w.owner.address).call()) == 900
    w.mm.request_close(w.client, w.model_id)
    chain.advance_time(CLOSE_DELAY)
    assert w.mm.reclaim(w.client, w.model_id)[0] == 10**6 - 1000
    w.mm.withdraw(w.client)
    assert int(token.functions.balanceOf(w.client.address).call()) == 10**9 - 1000
    assert int(token.functions.balanceOf(w.mm.address).call()) == 100 == w.mm.credits(w.operator.address)
    reverts("PullPaymentsNothingToWithdraw", w.mm.withdraw, w.client)
    # A token that delivers less than asked (fee on transfer) is refused.
    fee_token, _ = _deploy_test_token(chain, minter, "FeeOnTransferToken")
    market, _ = deploy_model_market(chain, w.governance, w.deployment.registry, fee_token, job_market=w.deployment.market,
                                    close_delay=CLOSE_DELAY)  # fmt: skip
    fee_mm = ModelMarketClient(chain, market)
    model, _ = fee_mm.list_model(w.owner, terms())
    ft = chain.w3.eth.contract(address=fee_token, abi=load_artifact("FeeOnTransferToken", test=True)["abi"])  # type: ignore[call-overload]
    chain.transact(minter, ft.functions.mint(w.client.address, 10**9))
    error = reverts("PullPaymentsTokenTransferShortfall", fee_mm.deposit, w.client, model, Wei(10**6), w.enclave.address)
    assert error.error_args == (10**6, 10**6 - 10**4)


def _deploy_test_token(chain: Chain, account: LocalAccount, name: str = "TestStablecoin") -> tuple[str, Any]:
    artifact = load_artifact(name, test=True)
    factory = chain.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    chain.register_errors(artifact["abi"])
    result = chain.transact(account, factory.constructor(), name=f"deploy {name}")  # type: ignore[arg-type]
    return str(result.receipt["contractAddress"]), result


def test_deploy_model_market_validates_arguments(w: World) -> None:
    jobs = w.deployment.market
    with pytest.raises(ConfigError):
        deploy_model_market(w.chain, w.governance, w.deployment.registry, job_market=jobs, close_delay=0)
    with pytest.raises(ConfigError):
        deploy_model_market(w.chain, w.governance, w.deployment.registry, w.stranger.address, job_market=jobs)  # no code
    for bad in (w.stranger.address, "not an address"):
        with pytest.raises(ConfigError, match="job market"):
            deploy_model_market(w.chain, w.governance, w.deployment.registry, job_market=bad)
    address, _ = deploy_model_market(w.chain, w.governance, w.deployment.registry, job_market=jobs, close_delay=5)
    client = ModelMarketClient(w.chain, address)
    assert (client.close_delay(), client.payment_token(), client.operator_fee_bps()) == (5, None, 1000)
    assert client.registry() == w.deployment.registry and client.job_market() == jobs
    assert w.mm.job_market() == jobs  # deploy() wires the model market to its job market


def test_old_deployment_records_still_load(tmp_path: Any, w: World) -> None:
    import json

    record = dataclasses.asdict(w.deployment)
    del record["model_market"]
    path = tmp_path / "deployment.json"
    path.write_text(json.dumps(record))
    assert Deployment.load(path).model_market is None
    w.deployment.save(path)
    assert Deployment.load(path) == w.deployment


# --------------------------------------------------------------------------- gas


def test_redeem_gas(w: World) -> None:
    """First redeem on a channel (fresh slots and first credits) and a later one on the same channel."""
    m = w.model_id
    binding = w.mm.deposit(w.client, m, Wei(ETHER), w.enclave.address)
    v1 = w.voucher(PRICE, 1)
    _, first = w.mm.redeem(w.operator, v1, w.signed(v1))
    v2 = w.voucher(101 * PRICE, 101)
    _, later = w.mm.redeem(w.operator, v2, w.signed(v2))
    deposit = w.mm.deposit(w.client, m, Wei(ETHER), w.enclave.address)
    print(
        f"\nredeem gas: first {first.gas_used}, later {later.gas_used}; deposit: first (binds) {binding.gas_used}, "
        f"top-up {deposit.gas_used}"
    )
    for queries in (1, 100, 10_000):
        print(f"  later redeem per query for a voucher covering {queries}: {later.gas_used / queries:.1f} gas")
    # Ceilings: measured + ~1 % (the first redeem writes the channel's redeemed slot and the owner's
    # and operator's credit slots fresh; a later one updates them). The binding costs redeem one
    # comparison (the enclave shares the slot redeem reads for the ceiling); a top-up reads the
    # second slot (for a pending close and, on a rebinding, the redeemed total); the first deposit
    # asks the registry and writes the enclave.
    assert later.gas_used < first.gas_used <= 126_500
    assert later.gas_used <= 74_700
    assert deposit.gas_used <= 35_900
    assert binding.gas_used <= 65_800
