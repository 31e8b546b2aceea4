"""Stateful property test of ModelMarket's payment channels.

A Hypothesis rule-based state machine drives two models and two clients on the embedded chain
through deposits naming the channel's inference enclave, the other inference enclave or a trainer
(binding, refused moves, rebinding once a channel has nothing left to spend), vouchers signed with
growing, exhausting, stale, replayed, over-deposit, over-cap, other-model, other-enclave and
wrong-signer totals, redeems (also by a non-operator), close requests, time travel (often to just
before or after a close's end), reclaims, withdrawals and operator-fee changes. A Python model
predicts every call: the exact custom error or success with its exact payments; any disagreement
fails the test. (A call within two seconds of a close's end may go
either way, because the embedded chain's block times follow the wall clock; the model then
follows the chain.)

After every step:
- per channel, deposited - redeemed - reclaimed (summed from the model's own ledger) equals what
  the contract holds for the channel (``deposited - redeemed`` of ``channelOf``), and every
  ``channelOf`` field (the bound enclave too) equals the model's;
- every redeemed voucher was made out to the enclave its channel was bound to at the time;
- every account's ``credits`` equals the model's;
- no voucher is paid twice: every ``VoucherRedeemed`` raised its channel's total strictly;
- the market's balance == Σ channel balances + Σ credits.

``STERLING_MODEL_MARKET_EXAMPLES`` sets the number of examples (default 8, 30 steps each).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from web3.logs import DISCARD

from enclave_worker.trusted.vouchers import Voucher, sign_voucher
from marketplace import chain as chain_mod
from marketplace.chain import Wei
from marketplace.errors import ContractReverted

from .test_model_market import CAP, CLOSE_DELAY, PRICE, World, build_world, terms

EXAMPLES = int(os.environ.get("STERLING_MODEL_MARKET_EXAMPLES") or 8)
SLACK = 2  # seconds around a close's end where the outcome may go either way


@dataclass
class ChannelModel:
    deposited: int = 0  # the contract's ceiling (lowered to redeemed by a reclaim)
    redeemed: int = 0
    queries: int = 0
    close_at: int = 0
    enclave: int | None = None  # index into the machine's inference enclaves; None = never bound
    total_deposits: int = 0
    total_reclaimed: int = 0
    paid_totals: list[int] = field(default_factory=list)  # amounts of the vouchers redeemed, in order


_WORLD: World | None = None
_SNAPSHOT: Any = None


def _world() -> World:
    """One deployment for all examples (two models, a second client), reset by snapshot."""
    global _WORLD, _SNAPSHOT
    if _WORLD is None:
        w = build_world(chain_mod.embedded())
        w.mm.list_model(w.owner, terms(query_cap=CAP // 100))
        _WORLD = w
        _SNAPSHOT = w.chain.w3.provider.ethereum_tester.take_snapshot()  # type: ignore[attr-defined]
    else:
        _WORLD.chain.w3.provider.ethereum_tester.revert_to_snapshot(_SNAPSHOT)  # type: ignore[attr-defined]
    return _WORLD


class ChannelMachine(RuleBasedStateMachine):
    w: World
    clients: list[LocalAccount]
    models: list[int]

    @initialize()
    def setup(self) -> None:
        self.w = _world()
        w = self.w
        self.second_client = w.stranger
        self.clients = [w.client, w.stranger]
        self.models = [w.model_id, w.model_id + 1]
        self.caps = {w.model_id: CAP, w.model_id + 1: CAP // 100}
        self.channels = {(m, c.address): ChannelModel() for m in self.models for c in self.clients}
        self.enclaves = [w.enclave, w.enclave2]  # inference enclaves, run by operators[i]
        self.operators = [w.operator, w.operator2]
        self.accounts = [w.owner, w.operator, *self.clients, w.operator2]
        self.credits = {a.address: 0 for a in self.accounts}
        self.fee_bps = 1000
        self.signed: dict[tuple[int, str], list[tuple[Voucher, bytes]]] = {k: [] for k in self.channels}

    # ----------------------------------------------------------------- helpers

    def _expect(self, error: str | None, call: Callable[[], Any]) -> Any:
        """Run ``call``; assert it reverts with ``error`` (or succeeds when ``None``)."""
        if error is None:
            return call()
        with pytest.raises(ContractReverted) as info:
            call()
        assert info.value.error == error, info.value
        return None

    def _sign(self, voucher: Voucher, signer: LocalAccount) -> bytes:
        return sign_voucher(bytes(signer.key), voucher, chain_id=self.w.chain.chain_id, model_market=self.w.mm.address_bytes)

    # ----------------------------------------------------------------- rules

    def _bound(self, ch: ChannelModel) -> int:
        """The channel's enclave, or the first one for a channel never bound."""
        return 0 if ch.enclave is None else ch.enclave

    @rule(
        m=st.integers(0, 1), c=st.integers(0, 1), units=st.integers(0, 300),
        to=st.sampled_from(["bound"] * 5 + ["other"] * 2 + ["trainer"]),
    )  # fmt: skip
    def deposit(self, m: int, c: int, units: int, to: str) -> None:
        model, client = self.models[m], self.clients[c]
        ch = self.channels[(model, client.address)]
        amount = units * PRICE // 3  # not always a multiple of the price
        index: int | None = {"bound": self._bound(ch), "other": 1 - self._bound(ch), "trainer": None}[to]
        enclave = self.w.trainer if index is None else self.enclaves[index]
        # The contract's checks, in its order.
        error: str | None = None
        rebinding = ch.enclave is None or index != ch.enclave
        if amount == 0:
            error = "ModelMarketInvalidDeposit"
        elif rebinding and ch.deposited != ch.redeemed:
            error = "ModelMarketChannelBoundElsewhere"
        elif rebinding and index is None:
            error = "ModelMarketEnclaveNotActive"
        got = self._expect(error, lambda: self.w.mm.deposit(client, model, Wei(amount), enclave.address))
        if error is not None:
            return
        bound_events = self.w.mm.contract.events.ChannelBound().process_receipt(got.receipt, errors=DISCARD)
        assert len(bound_events) == int(rebinding)
        ch.enclave = index
        ch.deposited += amount
        ch.total_deposits += amount
        ch.close_at = 0

    @rule(
        m=st.integers(0, 1),
        c=st.integers(0, 1),
        kind=st.sampled_from(
            ["growing"] * 6
            + ["exhaust"] * 2
            + ["stale", "replayed", "over_deposit", "over_cap", "other_model", "other_enclave", "wrong_signer", "queries_back"]
            + ["not_operator"]
        ),  # fmt: skip
        rows=st.integers(1, 120),
    )
    def redeem(self, m: int, c: int, kind: str, rows: int) -> None:
        w = self.w
        model, client = self.models[m], self.clients[c]
        key = (model, client.address)
        ch = self.channels[key]
        cap = self.caps[model]
        amount, queries = ch.redeemed + rows * PRICE, ch.queries + rows
        index = self._bound(ch)
        signer, signed_model = client, model
        replay: tuple[Voucher, bytes] | None = None
        if kind == "exhaust":  # spends what is left, so a deposit may rebind the channel afterwards
            amount, queries = ch.deposited, ch.queries + 1
        elif kind == "other_enclave":  # made out to the other enclave, redeemed by its operator
            index = 1 - index
        elif kind == "stale":
            amount, queries = max(ch.redeemed - PRICE, 0), max(ch.queries - 1, 0)
        elif kind == "replayed":
            if not self.signed[key]:
                return
            replay = self.signed[key][-1]
        elif kind == "over_deposit":
            amount = ch.deposited + 1
            queries = ch.queries + 1
        elif kind == "over_cap":
            queries = cap + 1
        elif kind == "other_model":
            signed_model = self.models[1 - m]
        elif kind == "wrong_signer":
            signer = self.clients[1 - c]
        elif kind == "queries_back":
            if ch.queries == 0:
                return
            queries = ch.queries - 1
        sender = self.operators[index]
        if kind == "not_operator":
            sender = w.owner
        if replay is not None:
            voucher, signature = replay
            index = [e.address.lower() for e in self.enclaves].index("0x" + voucher.enclave.hex())
            sender = self.operators[index]
        else:
            voucher = Voucher(model, bytes.fromhex(client.address[2:]), bytes.fromhex(self.enclaves[index].address[2:]), amount, queries)
            signature = self._sign(Voucher(signed_model, voucher.client, voucher.enclave, amount, queries), signer)

        # The contract's checks, in its order.
        error: str | None = None
        if sender.address != self.operators[index].address:
            error = "ModelMarketNotEnclaveOperator"
        elif ch.enclave != index:
            error = "ModelMarketWrongEnclave"
        elif voucher.amount <= ch.redeemed:
            error = "ModelMarketStaleVoucher"
        elif voucher.queries < ch.queries:
            error = "ModelMarketQueriesDecreased"
        elif voucher.queries > cap:
            error = "ModelMarketQueryCapExceeded"
        elif voucher.amount > ch.deposited:
            error = "ModelMarketInsufficientDeposit"
        elif signer is not client or signed_model != model:
            error = "ModelMarketInvalidVoucherSignature"
        got = self._expect(error, lambda: w.mm.redeem(sender, voucher, signature))
        if error is not None:
            return
        redemption, _ = got
        paid = voucher.amount - ch.redeemed
        fee = paid * self.fee_bps // 10_000
        assert (redemption.paid, redemption.fee) == (paid, fee)
        # Paid only to the channel's enclave, whose operator gets the fee.
        assert (redemption.enclave, redemption.operator) == (self.enclaves[index].address, sender.address)
        ch.redeemed, ch.queries = voucher.amount, voucher.queries
        ch.paid_totals.append(voucher.amount)
        self.signed[key].append((voucher, signature))
        self.credits[sender.address] += fee
        self.credits[w.owner.address] += paid - fee

    @rule(m=st.integers(0, 1), c=st.integers(0, 1))
    def request_close(self, m: int, c: int) -> None:
        model, client = self.models[m], self.clients[c]
        ch = self.channels[(model, client.address)]
        error = "ModelMarketNothingToReclaim" if ch.deposited == ch.redeemed else "ModelMarketClosePending" if ch.close_at else None
        got = self._expect(error, lambda: self.w.mm.request_close(client, model))
        if error is None:
            ch.close_at = int(self.w.chain.w3.eth.get_block(got.receipt["blockNumber"])["timestamp"])

    @rule(seconds=st.sampled_from([1, 60, CLOSE_DELAY - 60, CLOSE_DELAY - 3, CLOSE_DELAY + 3, CLOSE_DELAY * 2]))
    def travel(self, seconds: int) -> None:
        # From the pending block's time: after a snapshot revert the tester's clock may be ahead
        # of the latest block (Chain.advance_time counts from the latest block).
        tester = self.w.chain.w3.provider.ethereum_tester  # type: ignore[attr-defined]
        tester.time_travel(self._pending_time() + seconds)
        tester.mine_blocks(1)

    def _pending_time(self) -> int:
        return int(self.w.chain.w3.eth.get_block("pending")["timestamp"])

    @rule(m=st.integers(0, 1), c=st.integers(0, 1))
    def reclaim(self, m: int, c: int) -> None:
        model, client = self.models[m], self.clients[c]
        ch = self.channels[(model, client.address)]
        if not ch.close_at:
            self._expect("ModelMarketCloseNotRequested", lambda: self.w.mm.reclaim(client, model))
            return
        ready = ch.close_at + CLOSE_DELAY
        now = self._pending_time()
        try:
            refund, result = self.w.mm.reclaim(client, model)
        except ContractReverted as e:
            assert e.error == "ModelMarketCloseDelayNotPassed", e
            assert e.error_args == (model, client.address, ready)
            assert now < ready + SLACK, (now, ready)
            return
        landed = int(self.w.chain.w3.eth.get_block(result.receipt["blockNumber"])["timestamp"])
        assert landed >= ready and now >= ready - SLACK, (landed, now, ready)
        assert refund == ch.deposited - ch.redeemed
        ch.total_reclaimed += refund
        ch.deposited = ch.redeemed
        ch.close_at = 0
        self.credits[client.address] += refund

    @rule(a=st.integers(0, 4))
    def withdraw(self, a: int) -> None:
        account = self.accounts[a]
        pending = self.credits[account.address]
        got = self._expect("PullPaymentsNothingToWithdraw" if pending == 0 else None, lambda: self.w.mm.withdraw(account))
        if pending:
            assert got[0] == pending
            self.credits[account.address] = 0

    @rule(bps=st.sampled_from([0, 1, 999, 1000, 3333, 5000, 5001]))
    def set_fee(self, bps: int) -> None:
        got = self._expect("ModelMarketInvalidFee" if bps > 5000 else None, lambda: self.w.mm.set_operator_fee(self.w.governance, bps))
        if got is not None:
            self.fee_bps = bps

    # ----------------------------------------------------------------- invariants

    @invariant()
    def channels_match(self) -> None:
        if not hasattr(self, "w"):
            return
        for (model, client), ch in self.channels.items():
            onchain = self.w.mm.channel(model, client)
            bound = "0x" + "00" * 20 if ch.enclave is None else self.enclaves[ch.enclave].address
            assert (onchain.deposited, onchain.redeemed, onchain.redeemed_queries, onchain.close_requested_at, onchain.enclave) == (
                ch.deposited, ch.redeemed, ch.queries, ch.close_at, bound,
            )  # fmt: skip
            # deposited - redeemed - reclaimed = what the market holds for the channel
            assert ch.total_deposits - ch.redeemed - ch.total_reclaimed == onchain.balance
            # no voucher paid twice: each redeem raised the channel's total strictly
            assert all(a < b for a, b in zip(ch.paid_totals, ch.paid_totals[1:], strict=False))

    @invariant()
    def solvent(self) -> None:
        if not hasattr(self, "w"):
            return
        for address, expected in self.credits.items():
            assert self.w.mm.credits(address) == expected
        held = sum(self.w.mm.channel(m, c).balance for m, c in self.channels)
        assert self.w.chain.balance(self.w.mm.address) == held + sum(self.credits.values())


def test_channel_state_machine() -> None:
    run_state_machine_as_test(
        ChannelMachine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
