"""Hypothesis rule-based test of the market's money and privacy-budget invariants.

Random sequences of listings, job creations, claims, settlements, expiries, withdrawals and
time jumps must keep:
- the market's ether balance == Σ pending withdrawals + lockedEscrow() (== escrow of Open and
  Claimed jobs, tracked by the model);
- for every dataset, epsilonSpent + epsilonReserved <= totalEpsilonBudget, and the contract's
  ledger equals the model's.
"""

from __future__ import annotations

from typing import Any

from eth_utils import keccak
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from .conftest import (
    EPSILON_SCALE,
    ETHER,
    STATUS_CLAIMED,
    STATUS_OPEN,
    Deployment,
    decode_revert,
    list_dataset,
    receipt_for,
    receipt_tuple,
    revert_data,
    sign_receipt,
    transact,
)

# Errors a randomly generated createJob may legitimately hit.
EXPECTED_CREATE_ERRORS = {"JobMarketBudgetExhausted", "JobMarketEpsilonPerJobExceeded", "JobMarketDatasetExpired"}


def test_market_invariants(deployment: Deployment) -> None:
    d = deployment
    tester = d.w3.provider.ethereum_tester  # type: ignore[attr-defined]
    accounts = [*d.actors.providers, d.actors.consumer, d.actors.operator]

    class MarketMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.snapshot = tester.take_snapshot()
            self.datasets: dict[int, dict[str, int]] = {}  # id -> budget, spent, reserved
            self.jobs: dict[int, dict[str, Any]] = {}  # id -> status, escrow, ids, epsilon

        def teardown(self) -> None:
            tester.revert_to_snapshot(self.snapshot)

        @initialize()
        def first_dataset(self) -> None:
            self._list(0, 2, 5, 1)

        def _list(self, provider: int, max_eps: int, budget: int, price: int) -> None:
            dataset_id = list_dataset(
                d, d.actors.providers[provider], content=bytes([len(self.datasets)]),
                price=price * ETHER // 100, max_epsilon=max_eps * EPSILON_SCALE,
                budget=max(budget, max_eps) * EPSILON_SCALE,
            )
            self.datasets[dataset_id] = {"budget": max(budget, max_eps) * EPSILON_SCALE, "spent": 0, "reserved": 0}

        @precondition(lambda self: len(self.datasets) < 6)
        @rule(provider=st.integers(0, 2), max_eps=st.integers(1, 3), budget=st.integers(1, 6), price=st.integers(0, 5))
        def list_more(self, provider: int, max_eps: int, budget: int, price: int) -> None:
            self._list(provider, max_eps, budget, price)

        @rule(data=st.data(), epsilon=st.integers(1, 3 * EPSILON_SCALE), fee=st.integers(0, 3))
        def create(self, data: st.DataObject, epsilon: int, fee: int) -> None:
            ids = data.draw(st.lists(st.sampled_from(sorted(self.datasets)), min_size=1, max_size=3, unique=True))
            fee_wei = fee * ETHER // 1000
            escrow = fee_wei + sum(d.market.functions.dataset(i).call()[4][0] for i in ids)
            now = d.now()
            call = d.market.functions.createJob(
                ids, keccak(b"spec"), epsilon, 1, keccak(b"key"), fee_wei, now + 100, now + 200
            )
            try:
                transact(d.w3, call, d.actors.consumer, escrow)
            except Exception as e:  # noqa: BLE001 - decoded and checked below
                name, _ = decode_revert(revert_data(e))
                assert name in EXPECTED_CREATE_ERRORS
                if name == "JobMarketBudgetExhausted":
                    assert any(epsilon > self._remaining(i) for i in ids)
                return
            assert all(epsilon <= self._remaining(i) for i in ids)
            job_id = d.market.functions.jobCount().call()
            self.jobs[job_id] = {"status": STATUS_OPEN, "escrow": escrow, "ids": ids, "epsilon": epsilon}
            for i in ids:
                self.datasets[i]["reserved"] += epsilon

        def _remaining(self, dataset_id: int) -> int:
            ds = self.datasets[dataset_id]
            return ds["budget"] - ds["spent"] - ds["reserved"]

        def _with_status(self, status: int) -> list[int]:
            return sorted(j for j, job in self.jobs.items() if job["status"] == status)

        @precondition(lambda self: self._with_status(STATUS_OPEN))
        @rule(data=st.data())
        def claim(self, data: st.DataObject) -> None:
            job_id = data.draw(st.sampled_from(self._with_status(STATUS_OPEN)))
            if d.now() > d.market.functions.job(job_id).call()[10]:
                return
            transact(d.w3, d.market.functions.claimJob(job_id, d.actors.trainer.address), d.actors.operator)
            self.jobs[job_id]["status"] = STATUS_CLAIMED

        @precondition(lambda self: self._with_status(STATUS_CLAIMED))
        @rule(data=st.data(), fraction=st.floats(0, 1))
        def submit(self, data: st.DataObject, fraction: float) -> None:
            job_id = data.draw(st.sampled_from(self._with_status(STATUS_CLAIMED)))
            if d.now() > d.market.functions.job(job_id).call()[11]:
                return
            job = self.jobs[job_id]
            spent = int(job["epsilon"] * fraction)
            receipt = receipt_for(d, job_id, spent)
            signature = sign_receipt(d, d.actors.trainer, receipt)
            transact(d.w3, d.market.functions.submitResult(job_id, receipt_tuple(receipt), signature), d.actors.operator)
            job["status"] = 3
            for i in job["ids"]:
                self.datasets[i]["reserved"] -= job["epsilon"]
                self.datasets[i]["spent"] += spent

        @rule(seconds=st.integers(1, 150))
        def advance(self, seconds: int) -> None:
            d.travel_to(d.now() + seconds)

        @precondition(lambda self: self._with_status(STATUS_OPEN) or self._with_status(STATUS_CLAIMED))
        @rule(data=st.data())
        def expire(self, data: st.DataObject) -> None:
            job_id = data.draw(st.sampled_from(self._with_status(STATUS_OPEN) + self._with_status(STATUS_CLAIMED)))
            job = self.jobs[job_id]
            info = d.market.functions.job(job_id).call()
            deadline = info[10] if job["status"] == STATUS_OPEN else info[11]
            if d.now() <= deadline:
                return
            transact(d.w3, d.market.functions.expireJob(job_id), d.actors.stranger)
            for i in job["ids"]:
                self.datasets[i]["reserved"] -= job["epsilon"]
                if job["status"] == STATUS_CLAIMED:
                    self.datasets[i]["spent"] += job["epsilon"]
            job["status"] = 4

        @rule(who=st.integers(0, len(accounts) - 1))
        def withdraw(self, who: int) -> None:
            account = accounts[who]
            if d.market.functions.pendingWithdrawal(account).call() == 0:
                return
            transact(d.w3, d.market.functions.withdraw(), account)
            assert d.market.functions.pendingWithdrawal(account).call() == 0

        @invariant()
        def money_is_conserved(self) -> None:
            locked = sum(j["escrow"] for j in self.jobs.values() if j["status"] in (STATUS_OPEN, STATUS_CLAIMED))
            assert d.market.functions.lockedEscrow().call() == locked
            pending = sum(d.market.functions.pendingWithdrawal(a).call() for a in accounts)
            assert d.w3.eth.get_balance(d.market.address) == pending + locked

        @invariant()
        def budgets_hold(self) -> None:
            for dataset_id, model in self.datasets.items():
                info = d.market.functions.dataset(dataset_id).call()
                total, spent, reserved = info[4][2], info[5], info[6]
                assert spent + reserved <= total
                assert (spent, reserved) == (model["spent"], model["reserved"])
                assert d.market.functions.remainingEpsilon(dataset_id).call() == total - spent - reserved

    run_state_machine_as_test(
        MarketMachine,
        settings=settings(
            max_examples=10,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
