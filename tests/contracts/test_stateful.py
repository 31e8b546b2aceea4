"""Stateful property test of JobMarket (with its DatasetRegistry) and the EnclaveRegistry.

A Hypothesis rule-based state machine drives the contracts on py-evm, in native-currency and in
ERC-20 (TestStablecoin) payment mode, through random sequences of every action by three providers,
two consumers, two operators running trainer enclaves, governance and a stranger who tries
everything: listing, term updates (prices included), budget top-ups, pause/resume/delist, access
restrictions and allow-lists, job creation (random dataset subsets, ε/δ, fees, price limits,
deadlines, model specs), cancellation, claims, signed receipts (valid, forged, stale, overspent),
expiry, withdrawals, time jumps (often to just before, at or after a deadline or a lease's end),
the market's emergency pause, measurement approval/revocation, enclave revocation and
(re-)registration, and issue 13's leases and stakes: lease renewals, re-claims of lapsed claims
(charged and slashed), releases on a key-manager statement (right, by the wrong key, for the wrong
charges), expiry of lapsed claims, stake deposits, unstake requests and stake withdrawals. Each
step draws one action with fixed weights; each example switches a few optional actions off
(swarm testing). Every action is usually well-formed and sometimes has one deliberate fault.

A Python model of the full state predicts every call before it is sent: either the exact custom
error it reverts with (checked with an ``eth_call``, which changes nothing) or success with the
exact events it emits (checked on the mined receipt). Any disagreement fails the test.

After every step that mined a transaction (a step that mined none cannot change state):
- the market's holdings (ether, or its token balance) == Σ pendingWithdrawal over all accounts
  + lockedEscrow() + totalStake(), all equal the model's (every stakeOf too);
- every dataset's epsilonSpent == Σ of its BudgetDebited events' ε;
- no fork at the ledger: per job and dataset, the claims that may have held keys (every claim not
  given back by releaseClaim) <= the chain's BudgetDebited events for them (+1 while Claimed);
- every dataset's epsilonSpent + epsilonReserved <= totalEpsilonBudget, ledger == the model's;
- no job settles twice (ResultSubmitted / JobExpired / JobCancelled at most once per job);
- Σ Withdrawn + Σ pending + lockedEscrow + totalStake == Σ deposited by createJob and depositStake,
  and Σ PaymentCredited == Σ escrow of terminal jobs + Σ change credited at creation + Σ slashed
  + Σ stakes withdrawn (exact integers).

At the end of every example the shipped indexer (:class:`oracle.indexer.Indexer`, which folds the
logs with :mod:`oracle.fold`) indexes the chain from ``eth_getLogs`` alone into a fresh database;
the state read back from it (:func:`log_state.read_index`) must equal both the model and every view
of both contracts, and its history (job timelines, credits by reason, ε ledger entries) must agree.

``STERLING_STATEFUL_STEPS`` (default 2000) is the total number of steps over both modes;
``STERLING_STATEFUL_SEED`` replays a run (the seed is attached to any failure).
"""

from __future__ import annotations

import ast
import copy
import logging
import math
import os
import secrets
import sys
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, NamedTuple, cast

import pytest
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_tester.exceptions import TransactionFailed
from eth_utils.abi import collapse_if_tuple, function_abi_to_4byte_selector
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from hypothesis import HealthCheck, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from web3 import Web3
from web3.providers.eth_tester import EthereumTesterProvider

from marketplace.chain import Chain
from marketplace.contracts import DatasetStatus, JobStatus, MarketClient, RegistryClient
from oracle.fold import PaymentReason
from oracle.index_db import IndexDatabase
from oracle.indexer import Indexer

from .conftest import (
    CLAIM_LEASE,
    EPSILON_SCALE,
    KEY_MANAGER_MEASUREMENT,
    KEY_MANAGER_RELEASE_TYPES,
    ONE_YEAR,
    ROLE_KEY_MANAGER,
    ROLE_TRAINER,
    STAKE,
    TOKEN_STAKE,
    TRAINER_MEASUREMENT,
    UNBONDING_PERIOD,
    Deployment,
    actors_of,
    cert_tuple,
    certificate,
    decode_revert,
    deploy,
    deploy_all,
    domain,
    receipt_tuple,
    register,
    sign_certificate,
    sign_receipt,
    sign_release,
    transact,
)
from .log_state import (
    TERMINAL,
    ZERO_ADDRESS,
    ChainState,
    DatasetState,
    EnclaveState,
    Event,
    EventDecoder,
    IndexHistory,
    JobState,
    ResultHashes,
    Terms,
    normalise,
    read_index,
    read_index_history,
)

logger = logging.getLogger(__name__)

STEPS_ENV = "STERLING_STATEFUL_STEPS"
SEED_ENV = "STERLING_STATEFUL_SEED"
DEFAULT_STEPS = 2000
STEPS_PER_EXAMPLE = 100
MAX_LISTED = 8  # datasets per example; bounds the per-step ledger reads

EPS = EPSILON_SCALE
UINT32 = 2**32 - 1
UINT64 = 2**64 - 1
UINT96 = 2**96 - 1
UINT128 = 2**128 - 1
UINT256 = 2**256 - 1
ZERO32 = b"\x00" * 32
MAX_LIST_ENTRIES = 64
MAX_DATASETS_PER_JOB = 16
PANIC_OVERFLOW = 0x11
GAS = 8_000_000
TEN_YEARS = 10 * ONE_YEAR
NATIVE_CAP = 10**21  # largest maxTotalPrice sent in native mode (accounts hold 10^24 wei)

PAUSER_ROLE = keccak(b"PAUSER_ROLE")
ADMIN_ROLE = ZERO32
TRAINER_V2_MEASUREMENT = keccak(b"sterling trainer v2")
UNAPPROVED_MEASUREMENT = keccak(b"never approved")
MEASUREMENTS = (TRAINER_MEASUREMENT, TRAINER_V2_MEASUREMENT, KEY_MANAGER_MEASUREMENT, UNAPPROVED_MEASUREMENT)
HOME_MEASUREMENTS = frozenset(
    {
        (ROLE_TRAINER, TRAINER_MEASUREMENT),
        (ROLE_TRAINER, TRAINER_V2_MEASUREMENT),
        (ROLE_KEY_MANAGER, KEY_MANAGER_MEASUREMENT),
    }
)
MODELS = (keccak(b"model spec 0"), keccak(b"model spec 1"), keccak(b"model spec 2"))
UNLISTED_MODEL = keccak(b"model spec never listed")

# The machine's actions and their weights (one is drawn per step), the ones that need a job, and
# the ones an example may switch off.
ACTIONS = {
    "advance time": 3,
    "list dataset": 2,
    "manage dataset": 4,
    "create job": 6,
    "cancel job": 1,
    "claim job": 5,
    "submit result": 5,
    "expire job": 2,
    "withdraw": 2,
    "govern": 2,
    "register enclave": 2,
    "renew lease": 3,
    "release claim": 2,
    "stake": 2,
}
JOB_ACTIONS = {  # the statuses one of which some job must be in
    "cancel job": {JobStatus.OPEN},
    "claim job": {JobStatus.OPEN, JobStatus.CLAIMED},  # Claimed: a re-claim after a lapsed lease
    "submit result": {JobStatus.CLAIMED},
    "expire job": {JobStatus.OPEN, JobStatus.CLAIMED},
    "renew lease": {JobStatus.CLAIMED},
    "release claim": {JobStatus.CLAIMED},
}
# Actions whose outcome depends on the block time, favoured right after a jump to a boundary.
TIMED_ACTIONS = (
    "create job",
    "claim job",
    "submit result",
    "expire job",
    "register enclave",
    "renew lease",
    "release claim",
    "stake",
)
OPTIONAL_ACTIONS = (
    "list dataset",
    "manage dataset",
    "cancel job",
    "expire job",
    "withdraw",
    "govern",
    "register enclave",
    "renew lease",
    "release claim",
    "stake",
)

ROGUE = Account.from_key(keccak(b"rogue enclave"))  # never registered at deployment
FORGED_VERIFIER = Account.from_key(keccak(b"forged verifier"))


class TermsProblem(IntEnum):
    """IDatasetRegistry.TermsProblem."""

    ZERO_CONTENT_HASH = 0
    ZERO_EPSILON_PER_JOB = 1
    EPSILON_PER_JOB_ABOVE_BUDGET = 2
    ZERO_DELTA = 3
    EXPIRY_PASSED = 4
    BUDGET_BELOW_COMMITTED = 5
    PRICE_TOO_HIGH = 6


class JobRequest(NamedTuple):
    """IJobMarket.JobRequest, in struct order."""

    dataset_ids: tuple[int, ...]
    model_spec_hash: bytes
    epsilon: int
    delta: int
    consumer_key: bytes
    worker_fee: int
    max_total_price: int
    claim_deadline: int
    completion_deadline: int


class RevertError(Exception):
    """The model's prediction that a call reverts with the custom error ``name(*args)``."""

    def __init__(self, name: str, *args: Any) -> None:
        super().__init__(name, *args)
        self.error = (name, args)


def _event(contract: str, name: str, **args: Any) -> Event:
    return Event(contract, name, args)


def datasets_hash(state: ChainState, job: JobState) -> bytes:
    """What ``datasetsHashOf`` returns: keccak of the datasets' content hashes in job order."""
    return keccak(b"".join(state.datasets[i].content_hash for i in job.dataset_ids))


# --------------------------------------------------------------------------- the model


@dataclass
class MarketModel:
    """The expected state of both contracts, and their semantics as check-then-effect methods.

    Each method mirrors one external function: it raises :class:`RevertError` with the exact custom
    error the contract must revert with (before changing anything), or applies the call's effects
    and returns the exact events the transaction must emit, in order.
    """

    state: ChainState
    market: str
    governance: str
    verifier: str
    token: str | None  # the payment token (token mode) or None (native mode)
    balances: dict[str, int] = field(default_factory=dict)  # token balances (token mode)
    allowances: dict[str, int] = field(default_factory=dict)  # allowances to the market
    deposits: int = 0  # Σ paid in by createJob and depositStake (msg.value, or tokens pulled)
    # Issue 13 (kept out of ChainState, which the index must equal): stakes, leases, charges.
    stakes: dict[str, tuple[int, int]] = field(default_factory=dict)  # operator -> (amount, unbondingEnd)
    leases: dict[int, int] = field(default_factory=dict)  # Claimed job -> lease expiry
    charges: dict[int, int] = field(default_factory=dict)  # job -> lapsed claims charged
    reopened: set[int] = field(default_factory=set)  # jobs given back: Open until completion
    key_claims: dict[int, int] = field(default_factory=dict)  # job -> claims that may have held keys

    @property
    def total_stake(self) -> int:
        return sum(amount for amount, _ in self.stakes.values())

    def open_until(self, job_id: int, job: JobState) -> int:
        """The last second an Open job can be claimed (its completion deadline once given back)."""
        return job.completion_deadline if job_id in self.reopened else job.claim_deadline

    # ---- DatasetRegistry

    @staticmethod
    def _check_terms(terms: Terms, now: int) -> None:
        if terms.price_per_job > UINT96:
            raise RevertError("DatasetRegistryInvalidTerms", TermsProblem.PRICE_TOO_HIGH)
        if terms.max_epsilon_per_job == 0:
            raise RevertError("DatasetRegistryInvalidTerms", TermsProblem.ZERO_EPSILON_PER_JOB)
        if terms.max_epsilon_per_job > terms.total_epsilon_budget:
            raise RevertError("DatasetRegistryInvalidTerms", TermsProblem.EPSILON_PER_JOB_ABOVE_BUDGET)
        if terms.max_delta == 0:
            raise RevertError("DatasetRegistryInvalidTerms", TermsProblem.ZERO_DELTA)
        if terms.expiry != 0 and terms.expiry <= now:
            raise RevertError("DatasetRegistryInvalidTerms", TermsProblem.EXPIRY_PASSED)

    @staticmethod
    def _check_entries(count: int) -> None:
        if count > MAX_LIST_ENTRIES:
            raise RevertError("DatasetRegistryTooManyEntries", count, MAX_LIST_ENTRIES)

    def _own_dataset(self, sender: str, dataset_id: int) -> DatasetState:
        ds = self.state.datasets.get(dataset_id)
        if ds is None:
            raise RevertError("DatasetRegistryUnknownDataset", dataset_id)
        if ds.provider != sender:
            raise RevertError("DatasetRegistryNotProvider", dataset_id, sender)
        if ds.status == DatasetStatus.DELISTED:
            raise RevertError("DatasetRegistryDelisted", dataset_id)
        return ds

    def list_dataset(
        self,
        sender: str,
        now: int,
        *,
        content_hash: bytes,
        schema_hash: bytes,
        uri: str,
        terms: Terms,
        consumers: Sequence[str],
        models: Sequence[bytes],
    ) -> list[Event]:
        if self.state.paused:
            raise RevertError("EnforcedPause")
        if content_hash == ZERO32:
            raise RevertError("DatasetRegistryInvalidTerms", TermsProblem.ZERO_CONTENT_HASH)
        self._check_terms(terms, now)
        self._check_entries(len(consumers))
        self._check_entries(len(models))
        dataset_id = len(self.state.datasets) + 1
        ds = DatasetState(provider=sender, content_hash=content_hash, schema_hash=schema_hash, uri=uri, terms=terms)
        self.state.datasets[dataset_id] = ds
        events = [
            _event(
                "market",
                "DatasetListed",
                datasetId=dataset_id,
                provider=sender,
                contentHash=content_hash,
                schemaHash=schema_hash,
                uri=uri,
                terms=terms,
            )
        ]
        if consumers or models:
            ds.restricted, ds.models_restricted = bool(consumers), bool(models)
            events.append(
                _event(
                    "market",
                    "AccessRestricted",
                    datasetId=dataset_id,
                    consumers=ds.restricted,
                    models=ds.models_restricted,
                )
            )
            events += self._allow_consumers(dataset_id, ds, consumers, allowed=True)
            events += self._allow_models(dataset_id, ds, models, allowed=True)
        return events

    def update_terms(self, sender: str, now: int, dataset_id: int, terms: Terms) -> list[Event]:
        ds = self._own_dataset(sender, dataset_id)
        self._check_terms(terms, now)
        if terms.total_epsilon_budget < ds.epsilon_spent + ds.epsilon_reserved:
            raise RevertError("DatasetRegistryInvalidTerms", TermsProblem.BUDGET_BELOW_COMMITTED)
        ds.terms = terms
        return [_event("market", "TermsUpdated", datasetId=dataset_id, terms=terms)]

    def top_up(self, sender: str, dataset_id: int, amount: int) -> list[Event]:
        ds = self._own_dataset(sender, dataset_id)
        total = ds.terms.total_epsilon_budget + amount
        if amount == 0 or total > UINT64:
            raise RevertError("DatasetRegistryInvalidTopUp", dataset_id, amount)
        ds.terms = ds.terms._replace(total_epsilon_budget=total)
        return [_event("market", "BudgetToppedUp", datasetId=dataset_id, amount=amount, totalEpsilonBudget=total)]

    def set_status(self, sender: str, dataset_id: int, status: DatasetStatus) -> list[Event]:
        """setDatasetPaused (ACTIVE / PAUSED) or delistDataset (DELISTED)."""
        ds = self._own_dataset(sender, dataset_id)
        ds.status = status
        return [_event("market", "DatasetStatusChanged", datasetId=dataset_id, status=status)]

    def set_access(self, sender: str, dataset_id: int, consumers: bool, models: bool) -> list[Event]:
        ds = self._own_dataset(sender, dataset_id)
        ds.restricted, ds.models_restricted = consumers, models
        return [_event("market", "AccessRestricted", datasetId=dataset_id, consumers=consumers, models=models)]

    def set_consumers(self, sender: str, dataset_id: int, consumers: Sequence[str], allowed: bool) -> list[Event]:
        ds = self._own_dataset(sender, dataset_id)
        self._check_entries(len(consumers))
        return self._allow_consumers(dataset_id, ds, consumers, allowed=allowed)

    def set_models(self, sender: str, dataset_id: int, models: Sequence[bytes], allowed: bool) -> list[Event]:
        ds = self._own_dataset(sender, dataset_id)
        self._check_entries(len(models))
        return self._allow_models(dataset_id, ds, models, allowed=allowed)

    @staticmethod
    def _allow_consumers(dataset_id: int, ds: DatasetState, consumers: Sequence[str], *, allowed: bool) -> list[Event]:
        name = "ConsumerAllowed" if allowed else "ConsumerDisallowed"
        for consumer in consumers:
            (ds.consumers.add if allowed else ds.consumers.discard)(consumer)
        return [_event("market", name, datasetId=dataset_id, consumer=c) for c in consumers]

    @staticmethod
    def _allow_models(dataset_id: int, ds: DatasetState, models: Sequence[bytes], *, allowed: bool) -> list[Event]:
        name = "ModelAllowed" if allowed else "ModelDisallowed"
        for model in models:
            (ds.models.add if allowed else ds.models.discard)(model)
        return [_event("market", name, datasetId=dataset_id, modelSpecHash=m) for m in models]

    # ---- JobMarket

    def create_job(self, sender: str, now: int, request: JobRequest, value: int) -> list[Event]:
        s = self.state
        if s.paused:
            raise RevertError("EnforcedPause")
        ids = request.dataset_ids
        if not 1 <= len(ids) <= MAX_DATASETS_PER_JOB:
            raise RevertError("JobMarketInvalidDatasetCount", len(ids), MAX_DATASETS_PER_JOB)
        eps, delta = request.epsilon, request.delta
        if eps == 0 or delta == 0:
            raise RevertError("JobMarketInvalidPrivacyParameters", eps, delta)
        claim, completion = request.claim_deadline, request.completion_deadline
        if now >= claim or claim > completion or completion > now + UNBONDING_PERIOD // 2:
            raise RevertError("JobMarketInvalidDeadlines", claim, completion)
        for i, dataset_id in enumerate(ids):
            ds = s.datasets.get(dataset_id)
            if ds is None:
                raise RevertError("JobMarketUnknownDataset", dataset_id)
            if dataset_id in ids[:i]:
                raise RevertError("JobMarketDuplicateDataset", dataset_id)
            if ds.status != DatasetStatus.ACTIVE:
                raise RevertError("JobMarketDatasetUnavailable", dataset_id, ds.status)
            if ds.terms.expiry != 0 and now >= ds.terms.expiry:
                raise RevertError("JobMarketDatasetExpired", dataset_id, ds.terms.expiry)
            if not ds.consumer_allowed(sender):
                raise RevertError("JobMarketConsumerNotAllowed", dataset_id, sender)
            if not ds.model_allowed(request.model_spec_hash):
                raise RevertError("JobMarketModelNotAllowed", dataset_id, request.model_spec_hash)
            if eps > ds.terms.max_epsilon_per_job:
                raise RevertError("JobMarketEpsilonPerJobExceeded", dataset_id, eps, ds.terms.max_epsilon_per_job)
            if delta > ds.terms.max_delta:
                raise RevertError("JobMarketDeltaExceeded", dataset_id, delta, ds.terms.max_delta)
            if eps > ds.remaining:
                raise RevertError("JobMarketBudgetExhausted", dataset_id, eps, ds.remaining)
        prices = tuple(s.datasets[i].terms.price_per_job for i in ids)
        required = sum(prices) + request.worker_fee
        if required > UINT256:
            raise RevertError("Panic", PANIC_OVERFLOW)
        if required > request.max_total_price:
            raise RevertError("JobMarketPriceAboveLimit", required, request.max_total_price)
        if required > UINT128:
            raise RevertError("SafeCastOverflowedUintDowncast", 128, required)
        if s.locked_escrow + required > UINT128:
            raise RevertError("Panic", PANIC_OVERFLOW)
        if self.token is None:
            if value != request.max_total_price:
                raise RevertError("JobMarketIncorrectPayment", value, request.max_total_price)
        else:
            if value != 0:
                raise RevertError("JobMarketIncorrectPayment", value, 0)
            if required:
                allowance = self.allowances.get(sender, 0)
                if allowance < required:
                    raise RevertError("ERC20InsufficientAllowance", self.market, allowance, required)
                if self.balances.get(sender, 0) < required:
                    raise RevertError("ERC20InsufficientBalance", sender, self.balances.get(sender, 0), required)

        job_id = len(s.jobs) + 1
        events = []
        for dataset_id, price in zip(ids, prices, strict=True):
            s.datasets[dataset_id].epsilon_reserved += eps
            events.append(
                _event("market", "EpsilonReserved", datasetId=dataset_id, jobId=job_id, epsilon=eps, price=price)
            )
        s.jobs[job_id] = JobState(
            consumer=sender,
            status=JobStatus.OPEN,
            model_spec_hash=request.model_spec_hash,
            epsilon=eps,
            delta=delta,
            consumer_key=request.consumer_key,
            escrow=required,
            worker_fee=request.worker_fee,
            claim_deadline=claim,
            completion_deadline=completion,
            dataset_ids=tuple(ids),
            prices=prices,
        )
        s.locked_escrow += required
        events.append(
            _event(
                "market",
                "JobCreated",
                jobId=job_id,
                consumer=sender,
                datasetIds=tuple(ids),
                modelSpecHash=request.model_spec_hash,
                epsilon=eps,
                delta=delta,
                consumerKey=request.consumer_key,
                escrow=required,
                workerFee=request.worker_fee,
                claimDeadline=claim,
                completionDeadline=completion,
            )
        )
        if self.token is None:
            self.deposits += value
            events += self._credit(sender, job_id, request.max_total_price - required)
        elif required:
            self.deposits += required
            events.append(self._transfer(sender, self.market, required))
        return events

    def _credit(self, account: str, job_id: int, amount: int) -> list[Event]:
        self.state.credit(account, amount)
        return [_event("market", "PaymentCredited", account=account, jobId=job_id, amount=amount)] if amount else []

    def _transfer(self, source: str, target: str, amount: int) -> Event:
        self.balances[source] = self.balances.get(source, 0) - amount
        self.balances[target] = self.balances.get(target, 0) + amount
        return _event("token", "Transfer", **{"from": source, "to": target, "value": amount})

    def _job(self, job_id: int) -> tuple[JobState | None, JobStatus]:
        job = self.state.jobs.get(job_id)
        return job, (job.status if job is not None else JobStatus.NONE)

    def _refund(self, job_id: int, job: JobState, *, release: bool) -> list[Event]:
        """Unlock the escrow, release (or debit in full) the reservations, credit the consumer."""
        self.state.locked_escrow -= job.escrow
        events = []
        for dataset_id in job.dataset_ids:
            ds = self.state.datasets[dataset_id]
            ds.epsilon_reserved -= job.epsilon
            if release:
                events.append(
                    _event("market", "EpsilonReleased", datasetId=dataset_id, jobId=job_id, epsilon=job.epsilon)
                )
            else:
                ds.epsilon_spent += job.epsilon
                events.append(
                    _event(
                        "market",
                        "BudgetDebited",
                        datasetId=dataset_id,
                        jobId=job_id,
                        epsilonSpent=job.epsilon,
                        remaining=ds.remaining,
                    )
                )
        return events + self._credit(job.consumer, job_id, job.escrow)

    def cancel_job(self, sender: str, job_id: int) -> list[Event]:
        job, status = self._job(job_id)
        if job is None or status != JobStatus.OPEN:
            raise RevertError("JobMarketInvalidJobStatus", job_id, status)
        if sender != job.consumer:
            raise RevertError("JobMarketNotConsumer", job_id, sender)
        job.status = JobStatus.CANCELLED
        job.claim_deadline = 0
        return [
            *self._refund(job_id, job, release=True),
            _event("market", "JobCancelled", jobId=job_id, refund=job.escrow),
        ]

    def claim_job(self, sender: str, now: int, job_id: int, enclave: str) -> list[Event]:
        if self.state.paused:
            raise RevertError("EnforcedPause")
        job, status = self._job(job_id)
        lapsed = None
        if job is not None and status == JobStatus.OPEN:
            deadline = self.open_until(job_id, job)
            if now > deadline:
                raise RevertError("JobMarketClaimDeadlinePassed", job_id, deadline)
        elif job is not None and status == JobStatus.CLAIMED:
            lease = self.leases[job_id]
            if now <= lease:
                raise RevertError("JobMarketLeaseActive", job_id, lease)
            if now > job.completion_deadline:
                raise RevertError("JobMarketCompletionDeadlinePassed", job_id, job.completion_deadline)
            lapsed = job.enclave
        else:
            raise RevertError("JobMarketInvalidJobStatus", job_id, status)
        operator = self.state.active_operator(enclave, ROLE_TRAINER, now)
        if operator == ZERO_ADDRESS:
            raise RevertError("JobMarketEnclaveNotActive", enclave)
        if operator != sender:
            raise RevertError("JobMarketNotEnclaveOperator", sender, operator)
        prices = sum(job.prices)
        amount, unbonding_end = self.stakes.get(operator, (0, 0))
        if lapsed is not None:
            for dataset_id in job.dataset_ids:  # debiting moves ε from reserved to spent: remaining stays
                remaining = self.state.datasets[dataset_id].remaining
                if job.epsilon > remaining:
                    raise RevertError("JobMarketBudgetExhausted", dataset_id, job.epsilon, remaining)
            if self.state.enclave(lapsed).operator == operator:  # the stake is checked after the slash
                amount -= min(amount, prices)
        if unbonding_end:
            raise RevertError("JobMarketOperatorUnbonding", operator, unbonding_end)
        if amount < prices:
            raise RevertError("JobMarketStakeTooLow", operator, amount, prices)
        events: list[Event] = []
        if lapsed is not None:
            charges = self.charges.get(job_id, 0) + 1
            self.charges[job_id] = charges
            for dataset_id, price in zip(job.dataset_ids, job.prices, strict=True):
                ds = self.state.datasets[dataset_id]
                ds.epsilon_spent += job.epsilon  # debited, then reserved again: reserved unchanged
                events += [
                    _event(
                        "market",
                        "BudgetDebited",
                        datasetId=dataset_id,
                        jobId=job_id,
                        epsilonSpent=job.epsilon,
                        remaining=ds.remaining + job.epsilon,
                    ),
                    _event("market", "EpsilonReserved", datasetId=dataset_id, jobId=job_id, epsilon=job.epsilon, price=price),
                ]
            events.append(_event("market", "ClaimCharged", jobId=job_id, enclave=lapsed, charges=charges))
            events += self._slash(job_id, job, lapsed)
        job.status = JobStatus.CLAIMED
        job.enclave = enclave
        job.claim_deadline = 0  # as job() reports it: the claim deadline only while Open
        self.leases[job_id] = min(now + CLAIM_LEASE, job.completion_deadline)
        self.key_claims[job_id] = self.key_claims.get(job_id, 0) + 1
        return [*events, _event("market", "JobClaimed", jobId=job_id, enclave=enclave, operator=sender)]

    def _slash(self, job_id: int, job: JobState, enclave: str) -> list[Event]:
        """Move up to Σ prices of ``enclave``'s operator's stake to the job's providers, pro rata."""
        operator = self.state.enclave(enclave).operator
        prices = sum(job.prices)
        stake, unbonding_end = self.stakes.get(operator, (0, 0))
        amount = min(stake, prices)
        if amount == 0:
            return []
        self.stakes[operator] = (stake - amount, unbonding_end)
        events = [_event("market", "StakeSlashed", operator=operator, jobId=job_id, amount=amount)]
        left = amount
        last = len(job.prices) - 1
        for i, (dataset_id, price) in enumerate(zip(job.dataset_ids, job.prices, strict=True)):
            share = left if i == last else amount * price // prices
            left -= share
            events += self._credit(self.state.datasets[dataset_id].provider, job_id, share)
        return events

    def renew_lease(self, sender: str, now: int, job_id: int) -> list[Event]:
        job, status = self._job(job_id)
        if job is None or status != JobStatus.CLAIMED:
            raise RevertError("JobMarketInvalidJobStatus", job_id, status)
        lease = self.leases[job_id]
        if now > lease:
            raise RevertError("JobMarketLeaseLapsed", job_id, lease)
        operator = self.state.enclave(job.enclave).operator
        if operator != sender:
            raise RevertError("JobMarketNotEnclaveOperator", sender, operator)
        renewed = min(now + CLAIM_LEASE, job.completion_deadline)
        self.leases[job_id] = renewed
        return [_event("market", "LeaseRenewed", jobId=job_id, enclave=job.enclave, leaseExpiry=renewed)]

    def release_claim(self, sender: str, now: int, job_id: int, signer: str | RevertError) -> list[Event]:
        """``signer``: the address the key manager's signature recovers to, or the ECDSA error."""
        job, status = self._job(job_id)
        if job is None or status != JobStatus.CLAIMED:
            raise RevertError("JobMarketInvalidJobStatus", job_id, status)
        lease = self.leases[job_id]
        if now <= lease and sender != self.state.enclave(job.enclave).operator:
            raise RevertError("JobMarketLeaseActive", job_id, lease)
        if isinstance(signer, RevertError):
            raise signer
        if self.state.active_operator(signer, ROLE_KEY_MANAGER, now) == ZERO_ADDRESS:
            raise RevertError("JobMarketInvalidKeyManagerSignature", signer)
        enclave = job.enclave
        job.status = JobStatus.OPEN
        job.enclave = ZERO_ADDRESS
        job.claim_deadline = job.completion_deadline  # claimable again until then
        del self.leases[job_id]
        self.reopened.add(job_id)
        self.key_claims[job_id] -= 1  # the key manager certified this claim never had a key
        charges = self.charges.get(job_id, 0)
        return [_event("market", "ClaimReleased", jobId=job_id, enclave=enclave, charges=charges)]

    def deposit_stake(self, sender: str, amount: int, value: int) -> list[Event]:
        if amount == 0:
            raise RevertError("JobMarketInvalidStake", 0)
        expected = amount if self.token is None else 0
        if value != expected:
            raise RevertError("JobMarketIncorrectPayment", value, expected)
        if self.token is not None:
            allowance, balance = self.allowances.get(sender, 0), self.balances.get(sender, 0)
            if allowance < amount:
                raise RevertError("ERC20InsufficientAllowance", self.market, allowance, amount)
            if balance < amount:
                raise RevertError("ERC20InsufficientBalance", sender, balance, amount)
        stake, unbonding_end = self.stakes.get(sender, (0, 0))
        self.stakes[sender] = (stake + amount, unbonding_end)
        self.deposits += amount
        events = [_event("market", "StakeDeposited", operator=sender, amount=amount, total=stake + amount)]
        if self.token is not None:
            if self.allowances[sender] != UINT256:
                self.allowances[sender] -= amount
            events.append(self._transfer(sender, self.market, amount))
        return events

    def request_unstake(self, sender: str, now: int) -> list[Event]:
        stake, unbonding_end = self.stakes.get(sender, (0, 0))
        if stake == 0 or unbonding_end != 0:
            raise RevertError("JobMarketInvalidStake", stake)
        end = now + UNBONDING_PERIOD
        self.stakes[sender] = (stake, end)
        return [_event("market", "UnstakeRequested", operator=sender, amount=stake, unbondingEnd=end)]

    def withdraw_stake(self, sender: str, now: int) -> list[Event]:
        stake, unbonding_end = self.stakes.get(sender, (0, 0))
        if unbonding_end == 0 or now < unbonding_end:
            raise RevertError("JobMarketStakeLocked", sender, unbonding_end)
        self.stakes.pop(sender, None)
        return [
            _event("market", "StakeWithdrawn", operator=sender, amount=stake),
            *self._credit(sender, 0, stake),
        ]

    def submit_result(
        self, now: int, job_id: int, receipt: dict[str, Any], recovered: str | RevertError
    ) -> list[Event]:
        """``recovered``: the address the signature recovers to, or the ECDSA error it raises."""
        if self.state.paused:
            raise RevertError("EnforcedPause")
        job, status = self._job(job_id)
        if job is None or status != JobStatus.CLAIMED:
            raise RevertError("JobMarketInvalidJobStatus", job_id, status)
        if now > job.completion_deadline:
            raise RevertError("JobMarketCompletionDeadlinePassed", job_id, job.completion_deadline)
        if receipt["jobId"] != job_id:
            raise RevertError("JobMarketReceiptJobMismatch", job_id, receipt["jobId"])
        expected = datasets_hash(self.state, job)
        if receipt["datasetsHash"] != expected:
            raise RevertError("JobMarketReceiptDatasetsMismatch", expected, receipt["datasetsHash"])
        spent = receipt["epsilonSpent"]
        if spent > job.epsilon:
            raise RevertError("JobMarketEpsilonOverspent", spent, job.epsilon)
        if isinstance(recovered, RevertError):
            raise recovered
        if recovered != job.enclave:
            raise RevertError("JobMarketInvalidReceiptSigner", recovered, job.enclave)
        operator = self.state.active_operator(recovered, ROLE_TRAINER, now)
        if operator == ZERO_ADDRESS:
            raise RevertError("JobMarketEnclaveNotActive", recovered)

        job.status = JobStatus.COMPLETED
        self.leases.pop(job_id, None)
        job.epsilon_spent = spent
        job.result = ResultHashes(receipt["modelHash"], receipt["resultHash"], receipt["metricsHash"])
        self.state.locked_escrow -= job.escrow
        events = []
        for dataset_id, price in zip(job.dataset_ids, job.prices, strict=True):
            ds = self.state.datasets[dataset_id]
            ds.epsilon_reserved -= job.epsilon
            ds.epsilon_spent += spent
            events.append(
                _event(
                    "market",
                    "BudgetDebited",
                    datasetId=dataset_id,
                    jobId=job_id,
                    epsilonSpent=spent,
                    remaining=ds.remaining,
                )
            )
            events += self._credit(ds.provider, job_id, price)
        events += self._credit(operator, job_id, job.escrow - sum(job.prices))
        events.append(
            _event(
                "market",
                "ResultSubmitted",
                jobId=job_id,
                enclave=job.enclave,
                modelHash=receipt["modelHash"],
                resultHash=receipt["resultHash"],
                metricsHash=receipt["metricsHash"],
                epsilonSpent=spent,
            )
        )
        return events

    def expire_job(self, now: int, job_id: int) -> list[Event]:
        job, status = self._job(job_id)
        if job is not None and status == JobStatus.OPEN and now > self.open_until(job_id, job):
            release = True
        elif (
            job is not None
            and status == JobStatus.CLAIMED
            and (now > job.completion_deadline or now > self.leases[job_id] + CLAIM_LEASE)
        ):
            release = False
        else:
            raise RevertError("JobMarketNotExpirable", job_id, status)
        job.status = JobStatus.EXPIRED
        job.claim_deadline = 0
        self.leases.pop(job_id, None)
        events = self._refund(job_id, job, release=release)
        if not release:
            events += self._slash(job_id, job, job.enclave)
        return [*events, _event("market", "JobExpired", jobId=job_id, refund=job.escrow)]

    def withdraw(self, sender: str) -> list[Event]:
        amount = self.state.pending.pop(sender, 0)
        if amount == 0:
            raise RevertError("JobMarketNothingToWithdraw", sender)
        self.state.withdrawn[sender] = self.state.withdrawn.get(sender, 0) + amount
        events = [_event("market", "Withdrawn", account=sender, amount=amount)]
        if self.token is not None:
            events.append(self._transfer(self.market, sender, amount))
        return events

    def pause(self, sender: str) -> list[Event]:
        if sender != self.governance:
            raise RevertError("AccessControlUnauthorizedAccount", sender, PAUSER_ROLE)
        if self.state.paused:
            raise RevertError("EnforcedPause")
        self.state.paused = True
        return [_event("market", "Paused", account=sender)]

    def unpause(self, sender: str) -> list[Event]:
        if sender != self.governance:
            raise RevertError("AccessControlUnauthorizedAccount", sender, ADMIN_ROLE)
        if not self.state.paused:
            raise RevertError("ExpectedPause")
        self.state.paused = False
        return [_event("market", "Unpaused", account=sender)]

    # ---- EnclaveRegistry

    def _governance(self, sender: str, role: int | None) -> None:
        if sender != self.governance:
            raise RevertError("AccessControlUnauthorizedAccount", sender, ADMIN_ROLE)
        if role is not None and role not in (ROLE_TRAINER, ROLE_KEY_MANAGER):
            raise RevertError("EnclaveRegistryInvalidRole", role)

    def set_measurement(self, sender: str, role: int, measurement: bytes, approved: bool) -> list[Event]:
        self._governance(sender, role)
        if approved:
            self.state.approved.add((role, measurement))
        else:
            self.state.approved.discard((role, measurement))
        name = "MeasurementApproved" if approved else "MeasurementRevoked"
        return [_event("registry", name, role=role, measurement=measurement)]

    def revoke_enclave(self, sender: str, signer: str) -> list[Event]:
        self._governance(sender, None)
        self.state.enclaves.setdefault(signer, EnclaveState()).revoked = True
        return [_event("registry", "EnclaveRevoked", signer=signer)]

    def register(self, sender: str, now: int, cert: dict[str, Any], cert_signer: str) -> list[Event]:
        if cert_signer != self.verifier:
            raise RevertError("EnclaveRegistryUnknownVerifier", cert_signer)
        role, measurement, valid_until = cert["role"], cert["measurement"], cert["validUntil"]
        if role not in (ROLE_TRAINER, ROLE_KEY_MANAGER):
            raise RevertError("EnclaveRegistryInvalidRole", role)
        if (role, measurement) not in self.state.approved:
            raise RevertError("EnclaveRegistryMeasurementNotApproved", role, measurement)
        if valid_until <= now:
            raise RevertError("EnclaveRegistryCertificateExpired", valid_until, now)
        if sender != cert["operator"]:
            raise RevertError("EnclaveRegistryNotOperator", sender, cert["operator"])
        if self.state.enclave(cert["signer"]).revoked:
            raise RevertError("EnclaveRegistryEnclaveRevoked", cert["signer"])
        self.state.enclaves[cert["signer"]] = EnclaveState(
            role=role,
            measurement=measurement,
            encryption_key=cert["encryptionKey"],
            operator=cert["operator"],
            valid_until=valid_until,
        )
        return [
            _event(
                "registry",
                "EnclaveRegistered",
                signer=cert["signer"],
                operator=cert["operator"],
                role=role,
                measurement=measurement,
                encryptionKey=cert["encryptionKey"],
                validUntil=valid_until,
            )
        ]


# --------------------------------------------------------------------------- raw chain access


def _normalise_value(value: Any) -> Any:
    """Checksum address-looking strings (eth_abi returns them lower-case), recursively."""
    if isinstance(value, str) and len(value) == 42 and value.startswith("0x"):
        return to_checksum_address(value)
    if isinstance(value, list | tuple):
        return tuple(_normalise_value(v) for v in value)
    return value


class _Abi:
    """ABI encoding and decoding of one contract's functions, to talk to py-evm without web3's
    request pipeline (a raw eth_call costs ~1.5 ms, a web3 one ~6 ms)."""

    def __init__(self, address: str, abi: Sequence[Mapping[str, Any]]) -> None:
        self.address = address
        self.abi = abi
        self._functions = {
            item["name"]: (
                function_abi_to_4byte_selector(cast(Any, item)),
                [collapse_if_tuple(i) for i in item["inputs"]],
                [collapse_if_tuple(o) for o in item["outputs"]],
                item["outputs"],
            )
            for item in abi
            if item["type"] == "function"
        }

    def calldata(self, name: str, args: Sequence[Any]) -> str:
        selector, inputs, _, _ = self._functions[name]
        return "0x" + (selector + abi_encode(inputs, list(args))).hex()

    def decode(self, name: str, raw: bytes) -> Any:
        _, _, output_types, outputs = self._functions[name]
        values = abi_decode(output_types, raw)
        result = tuple(normalise(o, v) for o, v in zip(outputs, values, strict=True))
        return result[0] if len(result) == 1 else result


class _Chain:
    """Raw py-evm access through eth-tester: views, calls that must revert, transactions."""

    def __init__(self, w3: Web3) -> None:
        self.w3 = w3
        self.tester = w3.provider.ethereum_tester  # type: ignore[attr-defined]
        self.reader = w3.eth.accounts[-1]  # views are sent from a funded account that never acts

    def now(self) -> int:
        """The pending block's timestamp: the block.timestamp of the next call or transaction."""
        return int(self.tester.get_block_by_number("pending")["timestamp"])

    def view(self, contract: _Abi, name: str, *args: Any, block: str = "latest") -> Any:
        tx = {"from": self.reader, "to": contract.address, "data": contract.calldata(name, args), "gas": GAS}
        return contract.decode(name, bytes(HexBytes(self.tester.call(tx, block))))

    def revert_of(self, sender: str, contract: _Abi, name: str, args: Sequence[Any], value: int) -> Any:
        """The (error name, args) an eth_call of the transaction reverts with, or None on success.

        The call runs on the pending block, with the same block.timestamp as a transaction sent now.
        """
        tx = {"from": sender, "to": contract.address, "data": contract.calldata(name, args), "gas": GAS, "value": value}
        try:
            self.tester.call(tx, "pending")
        except TransactionFailed as e:
            message = str(e.args[0])
            data = ast.literal_eval(message) if message[:2] in ("b'", 'b"') else message
            if not isinstance(data, bytes):
                return ("Error", (data,))
            name_, error_args = decode_revert(data)
            return (name_, _normalise_value(error_args))
        return None

    def send(self, sender: str, contract: _Abi, name: str, args: Sequence[Any], value: int) -> dict[str, Any]:
        tx = {"from": sender, "to": contract.address, "data": contract.calldata(name, args), "gas": GAS, "value": value}
        receipt: dict[str, Any] = self.tester.get_transaction_receipt(self.tester.send_transaction(tx))
        return receipt


# --------------------------------------------------------------------------- deployment


@dataclass(frozen=True)
class Roster:
    """Who acts in the machine."""

    governance: str
    operators: tuple[str, str]
    providers: tuple[str, str, str]
    consumers: tuple[str, str]
    stranger: str

    @property
    def everyone(self) -> tuple[str, ...]:
        return (self.governance, *self.operators, *self.providers, *self.consumers, self.stranger)

    @property
    def buyers(self) -> tuple[str, ...]:
        """Accounts probed with isConsumerAllowed and drawn as job creators."""
        return (*self.consumers, self.stranger, self.providers[0])


class _TappedIndexer(Indexer):
    """The shipped indexer, keeping the raw logs it reads (checked against the receipts: one
    ``eth_getLogs`` per example serves both)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.raw_logs: list[Any] = []

    def _get_logs(self, start: int, end: int) -> list[Any]:
        logs = super()._get_logs(start, end)
        self.raw_logs.extend(logs)
        return logs


class Environment:
    """One deployment (native or token mode) on a private py-evm chain, snapshotted after set-up,
    plus the model of that initial state and the running step count."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        w3 = Web3(EthereumTesterProvider())
        self.chain = _Chain(w3)
        self.actors = actors_of(w3)
        a = list(w3.eth.accounts)
        self.roster = Roster(
            governance=a[0],
            operators=(a[1], a[6]),
            providers=(a[2], a[3], a[4]),
            consumers=(a[5], a[8]),
            stranger=a[7],
        )
        # Far ahead of the wall clock, every block is exactly one second after its parent.
        self.chain.tester.time_travel(self.chain.now() + TEN_YEARS)
        gov = self.roster.governance
        token = deploy(w3, "TestStablecoin", gov, test=True) if mode == "token" else None
        self.d: Deployment = deploy_all(w3, self.actors, token=token)
        self.unit = 10**15 if token is None else 10**4  # a "price unit": 0.001 ether or 0.01 tUSD
        self.market = _Abi(self.d.market.address, self.d.market.abi)
        self.registry = _Abi(self.d.registry.address, self.d.registry.abi)
        self.token = _Abi(token.address, token.abi) if token is not None else None

        # Enclaves: trainer 1 (measurement v1) on operator 1, trainer 2 (v2) on operator 2, a key
        # manager on operator 1, and a rogue key nobody registered.
        self.trainers = (self.actors.trainer, self.actors.other_trainer)
        self.key_manager = self.actors.key_manager
        self.keys: dict[str, LocalAccount] = {k.address: k for k in (*self.trainers, self.key_manager, ROGUE)}
        self.home = {  # each key's usual (operator, role, measurement)
            self.trainers[0].address: (self.roster.operators[0], ROLE_TRAINER, TRAINER_MEASUREMENT),
            self.trainers[1].address: (self.roster.operators[1], ROLE_TRAINER, TRAINER_V2_MEASUREMENT),
            self.key_manager.address: (self.roster.operators[0], ROLE_KEY_MANAGER, KEY_MANAGER_MEASUREMENT),
            ROGUE.address: (self.roster.stranger, ROLE_TRAINER, TRAINER_MEASUREMENT),
        }
        transact(w3, self.d.registry.functions.approveMeasurement(ROLE_TRAINER, TRAINER_V2_MEASUREMENT), gov)
        register(self.d, self.trainers[1], self.roster.operators[1], measurement=TRAINER_V2_MEASUREMENT)
        register(
            self.d,
            self.key_manager,
            self.roster.operators[0],
            role=ROLE_KEY_MANAGER,
            measurement=KEY_MANAGER_MEASUREMENT,
        )

        balances: dict[str, int] = {}
        allowances: dict[str, int] = {}
        if token is not None:
            # The second consumer can afford only a few jobs; the stranger never approved the market.
            for account, amount in (
                (self.roster.consumers[0], 10**15),
                (self.roster.consumers[1], 300 * self.unit),
                (self.roster.stranger, 10**15),
            ):
                transact(w3, token.functions.mint(account, amount), gov)
                balances[account] = amount
            for account in self.roster.consumers:
                transact(w3, token.functions.approve(self.market.address, UINT256), account)
                allowances[account] = UINT256
            for account in self.roster.operators:  # their deployment stake used what they were minted
                transact(w3, token.functions.mint(account, 10**15), gov)
                transact(w3, token.functions.approve(self.market.address, UINT256), account)
                balances[account], allowances[account] = 10**15, UINT256

        contracts = {
            self.market.address: ("market", self.market.abi),
            self.registry.address: ("registry", self.registry.abi),
        }
        if self.token is not None:
            contracts[self.token.address] = ("token", self.token.abi)
        self.decoder = EventDecoder(contracts)
        self.base_block = int(self.chain.tester.get_block_by_number("latest")["number"])
        sdk_chain = Chain(w3=w3, kind="embedded")
        self.clients = (MarketClient(sdk_chain, self.market.address), RegistryClient(sdk_chain, self.registry.address))
        self.base_model = MarketModel(
            state=self._initial_state(),
            market=self.market.address,
            governance=gov,
            verifier=self.actors.verifier.address,
            token=self.token.address if self.token is not None else None,
            balances=balances,
            allowances=allowances,
        )
        stake = STAKE if token is None else TOKEN_STAKE  # deploy_all staked both operators
        self.base_model.stakes = {operator: (stake, 0) for operator in self.roster.operators}
        self.base_model.deposits = 2 * stake
        if token is not None:
            self.base_model.balances[self.market.address] = 2 * stake
        self.snapshot = self.chain.tester.take_snapshot()
        self.steps = 0
        self.examples = 0
        self.outcomes: Counter[str] = Counter()  # "function: ok" or "function: ErrorName"

    def _initial_state(self) -> ChainState:
        """The model after set-up: approvals and registrations as deployed (certificate expiry read back)."""
        state = ChainState(
            approved={
                (ROLE_TRAINER, TRAINER_MEASUREMENT),
                (ROLE_TRAINER, TRAINER_V2_MEASUREMENT),
                (ROLE_KEY_MANAGER, KEY_MANAGER_MEASUREMENT),
            },
        )
        for key in (*self.trainers, self.key_manager):
            operator, role, measurement = self.home[key.address]
            valid_until = self.chain.view(self.registry, "enclaveOf", key.address)[4]
            state.enclaves[key.address] = EnclaveState(
                role=role,
                measurement=measurement,
                encryption_key=b"\x42" * 32,
                operator=operator,
                valid_until=valid_until,
            )
        return state

    def index(self) -> tuple[ChainState, IndexHistory, list[Any]]:
        """Run the shipped indexer over the whole chain into a fresh database; returns the state and
        history read back from it, and the raw logs the indexer got from ``eth_getLogs``."""
        db = IndexDatabase("sqlite://")  # in memory: one connection per thread, gone when closed
        try:
            db.create_schema()
            market, registry = self.clients
            indexer = _TappedIndexer(db, market=market, registry=registry, start_block=0)
            indexer.poll_once()
            assert indexer.last_block() == self.d.w3.eth.block_number
            return read_index(db, indexer.key), read_index_history(db), indexer.raw_logs
        finally:
            db.close()

    def holdings(self, account: str) -> int:
        """``account``'s balance in the payment currency."""
        if self.token is None:
            return int(self.chain.tester.get_balance(account))
        return int(self.chain.view(self.token, "balanceOf", account))

    def run(self, budget: int) -> int:
        """Run the machine until at least ``budget`` steps ran; returns the steps run."""
        base_seed = int(os.environ.get(SEED_ENV) or secrets.randbelow(2**32))
        attempt = 0
        health = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
        while self.steps < budget:
            run_seed = base_seed + attempt
            machine = type(f"{self.mode.capitalize()}MarketMachine", (MarketMachine,), {"env": self})
            steps_before = self.steps
            examples = math.ceil((budget - steps_before) / STEPS_PER_EXAMPLE)
            logger.info("%s mode: %d examples with seed %d", self.mode, examples, run_seed)
            try:
                run_state_machine_as_test(
                    seed(run_seed)(machine),
                    settings=settings(
                        max_examples=examples,
                        stateful_step_count=STEPS_PER_EXAMPLE,
                        deadline=None,
                        database=None,
                        derandomize=False,
                        print_blob=True,
                        suppress_health_check=health,
                    ),
                )
            except BaseException as e:
                e.add_note(
                    f"{self.mode} mode, Hypothesis seed {run_seed}; reproduce with {SEED_ENV}={run_seed} "
                    f"{STEPS_ENV}={2 * (budget - steps_before)} pytest -k {self.mode} {__file__}"
                )
                raise
            attempt += 1
        return self.steps


# --------------------------------------------------------------------------- the machine


def _often(data: st.DataObject, label: str) -> bool:
    """A draw that is True about three times in four (the "usual" branch)."""
    return bool(data.draw(st.sampled_from((True, True, True, False)), label=label))


def _rarely(data: st.DataObject, label: str) -> bool:
    """A draw that is True about once in sixteen times (an edge case)."""
    return bool(data.draw(st.sampled_from((False,) * 15 + (True,)), label=label))


class MarketMachine(RuleBasedStateMachine):
    """Random actions by every actor; each is predicted by :class:`MarketModel` and checked."""

    env: Environment  # set on the per-mode subclass

    def __init__(self) -> None:
        super().__init__()
        env = self.env
        env.chain.tester.revert_to_snapshot(env.snapshot)
        env.examples += 1
        self.model = copy.deepcopy(env.base_model)
        self.roster = env.roster
        self.recorded: list[Event] = []  # market and registry events of every mined transaction
        self.settlements: Counter[int] = Counter()  # terminal events per job
        self.credited = 0  # Σ PaymentCredited
        self.change = 0  # Σ PaymentCredited by createJob (native-mode change)
        self.withdrawn = 0  # Σ Withdrawn
        self.slashed = 0  # Σ StakeSlashed (credited to providers from stakes)
        self.unstaked = 0  # Σ StakeWithdrawn (credited to operators from their stakes)
        self.debits: Counter[tuple[int, int]] = Counter()  # (job, dataset) -> BudgetDebited events
        self.debited: Counter[int] = Counter()  # dataset -> Σ BudgetDebited ε
        self.dirty = True  # a transaction was mined since the last invariant check
        self.counter = 0  # makes content hashes and result hashes unique
        self.disabled: set[str] = set()  # optional actions this example skips
        self.at_boundary = False  # the last step jumped to within a second of a deadline or expiry

    # ---- plumbing

    def _step(self) -> int:
        """Count one step and return the pending block's timestamp."""
        self.env.steps += 1
        return self.env.chain.now()

    def _act(
        self,
        sender: str,
        contract: _Abi,
        function: str,
        args: Sequence[Any],
        predict: Callable[[], list[Event]],
        *,
        value: int = 0,
    ) -> bool:
        """Predict the call with the model, then check the chain agrees; returns whether it succeeded."""
        chain = self.env.chain
        try:
            expected = predict()
        except RevertError as r:
            got = chain.revert_of(sender, contract, function, args, value)
            assert got == r.error, f"{function}{tuple(args)} from {sender}: predicted revert {r.error}, got {got}"
            self.env.outcomes[f"{function}: {r.error[0]}"] += 1
            return False
        receipt = chain.send(sender, contract, function, args, value)
        self.dirty = True
        if receipt["status"] != 1:
            got = chain.revert_of(sender, contract, function, args, value)  # one block later: for the message
            raise AssertionError(f"{function}{tuple(args)} from {sender}: predicted success, reverted ({got})")
        events = self.env.decoder.decode_all(receipt["logs"])
        assert events == expected, f"{function}: events\n  got      {events}\n  expected {expected}"
        for event in events:
            self._account(function, event)
        self.env.outcomes[f"{function}: ok"] += 1
        return True

    def _account(self, function: str, event: Event) -> None:
        """Keep the running totals the money invariants use, from the events the chain emitted."""
        if event.contract == "token":
            return
        self.recorded.append(event)
        if event.name == "PaymentCredited":
            self.credited += event.args["amount"]
            if function == "createJob":
                self.change += event.args["amount"]
        elif event.name == "Withdrawn":
            self.withdrawn += event.args["amount"]
        elif event.name == "StakeSlashed":
            self.slashed += event.args["amount"]
        elif event.name == "StakeWithdrawn":
            self.unstaked += event.args["amount"]
        elif event.name == "BudgetDebited":
            self.debits[event.args["jobId"], event.args["datasetId"]] += 1
            self.debited[event.args["datasetId"]] += event.args["epsilonSpent"]
        elif event.name in ("ResultSubmitted", "JobExpired", "JobCancelled"):
            job_id = event.args["jobId"]
            self.settlements[job_id] += 1
            assert self.settlements[job_id] == 1, f"job {job_id} settled twice"

    @property
    def state(self) -> ChainState:
        return self.model.state

    def _fault(self, data: st.DataObject, faults: tuple[str, ...], *, weight: int = 8) -> str | None:
        """None (a call meant to succeed) ``weight`` times as often as each named fault."""
        fault: str | None = data.draw(st.sampled_from((None,) * weight + faults), label="fault")
        return fault

    def _dataset_id(self, data: st.DataObject, *, wrong: bool) -> int:
        """A listed, not delisted dataset, or (``wrong``) 0, the next unknown id or a delisted one."""
        datasets = self.state.datasets
        live = [i for i, ds in datasets.items() if ds.status != DatasetStatus.DELISTED]
        if live and not wrong:
            return data.draw(st.sampled_from(live), label="dataset")
        return data.draw(
            st.sampled_from([0, len(datasets) + 1, *(i for i in datasets if i not in live)]), label="wrong dataset"
        )

    def _job_id(self, data: st.DataObject, fitting: list[int], *, wrong: bool) -> int:
        """One of the ``fitting`` jobs, or (``wrong``, or none fits) any id, known or not."""
        if fitting and not wrong:
            return data.draw(st.sampled_from(fitting), label="job")
        return data.draw(st.integers(0, len(self.state.jobs) + 1), label="job")

    def _jobs(
        self,
        data: st.DataObject,
        now: int,
        *statuses: JobStatus,
        deadline: Callable[[JobState], int] | None = None,
        fits: Callable[[JobState], bool] | None = None,
    ) -> list[int]:
        """Jobs in ``statuses``: usually those whose ``deadline`` is within a second of ``now``
        (after a jump to a boundary), else those that ``fits``, else all."""
        found = [i for i, job in self.state.jobs.items() if job.status in statuses]
        if deadline is not None:
            near = [i for i in found if abs(deadline(self.state.jobs[i]) - now) <= 1]
            if near and _often(data, "job at its deadline"):
                return near
        fitting = [i for i in found if fits is None or fits(self.state.jobs[i])]
        return fitting or found

    def _terms(self, data: st.DataObject, now: int, *, committed: int = 0, broken: bool = False) -> Terms:
        """Valid terms (budget at least ``committed``), or (``broken``) terms with one bad field."""
        unit = self.env.unit
        price = data.draw(st.one_of(st.integers(0, 10).map(lambda k: k * unit), st.integers(0, 10**6)), label="price")
        max_eps = data.draw(
            st.one_of(st.sampled_from((EPS // 2, EPS, 2 * EPS)), st.integers(1, 3 * EPS)), label="maxEpsilonPerJob"
        )
        budget = min(
            max(max_eps, committed) + data.draw(st.integers(0, 8).map(lambda k: k * EPS // 2), label="budget+"), UINT64
        )
        max_delta = data.draw(st.sampled_from((1, 10**13, 10**15, UINT64)), label="maxDelta")
        expiry = 0 if _often(data, "no expiry") else now + data.draw(st.integers(1, 3000), label="expires in")
        problem = (
            data.draw(st.sampled_from(("price", "epsilon", "budget", "delta", "expiry")), label="bad")
            if broken
            else None
        )
        if problem == "price":
            price = data.draw(st.sampled_from((UINT96 + 1, UINT128)), label="bad price")
        elif problem == "epsilon":
            max_eps = 0
        elif problem == "budget":
            budget = data.draw(st.integers(0, max(max_eps, committed) - 1), label="bad budget")
        elif problem == "delta":
            max_delta = 0
        elif problem == "expiry":
            expiry = now - data.draw(st.integers(0, 5), label="expired since")
        return Terms(price, max_eps, budget, max_delta, expiry)

    # ---- DatasetRegistry actions

    def _list(self, data: st.DataObject, *, faulty: bool) -> None:
        now = self.env.chain.now()
        roster = self.roster
        sender = data.draw(st.sampled_from(roster.providers * 3 + (roster.stranger,)), label="provider")
        fault = self._fault(data, ("content hash", "terms", "entries")) if faulty else None
        self.counter += 1
        content = ZERO32 if fault == "content hash" else keccak(b"content %d" % self.counter)
        terms = self._terms(data, now, broken=fault == "terms")
        consumers: list[str] = []
        models: list[bytes] = []
        if not _often(data, "anyone may buy"):
            consumers = data.draw(st.lists(st.sampled_from(roster.buyers), min_size=1, max_size=3), label="consumers")
        if not _often(data, "any model"):
            models = data.draw(st.lists(st.sampled_from(MODELS), min_size=1, max_size=2), label="models")
        if fault == "entries":
            if data.draw(st.booleans(), label="65 consumers"):
                consumers = [roster.consumers[0]] * (MAX_LIST_ENTRIES + 1)
            else:
                models = [MODELS[0]] * (MAX_LIST_ENTRIES + 1)
        schema, uri = keccak(b"schema %d" % (self.counter % 3)), f"blob://{self.counter}"
        self._act(
            sender,
            self.env.market,
            "listDataset",
            (content, schema, uri, terms, consumers, models),
            lambda: self.model.list_dataset(
                sender,
                now,
                content_hash=content,
                schema_hash=schema,
                uri=uri,
                terms=terms,
                consumers=consumers,
                models=models,
            ),
        )

    @initialize(data=st.data())
    def start(self, data: st.DataObject) -> None:
        """List two datasets with valid terms, and pick the optional actions this example skips
        (swarm testing: without, say, pauses and revocations, more jobs run to completion)."""
        self._step()
        self.disabled = data.draw(st.sets(st.sampled_from(OPTIONAL_ACTIONS), max_size=3), label="disabled actions")
        self._list(data, faulty=False)
        self._list(data, faulty=False)

    @rule(data=st.data())
    def act(self, data: st.DataObject) -> None:
        """One action, drawn with fixed weights among those enabled and possible."""
        now = self._step()
        possible = [a for a in ACTIONS if self._possible(a)]
        timed = [a for a in possible if a in TIMED_ACTIONS]
        if self.at_boundary and timed and _often(data, "act at the boundary"):
            action = data.draw(st.sampled_from(timed), label="action")
        else:
            action = data.draw(st.sampled_from([a for a in possible for _ in range(ACTIONS[a])]), label="action")
        self.at_boundary = False
        getattr(self, "_" + action.replace(" ", "_"))(data, now)

    def _possible(self, action: str) -> bool:
        """Whether ``action`` is enabled in this example and has something to act on."""
        if action in self.disabled:
            return False
        if action == "list dataset":
            return len(self.state.datasets) < MAX_LISTED
        needed = JOB_ACTIONS.get(action)
        return needed is None or any(job.status in needed for job in self.state.jobs.values())

    def _list_dataset(self, data: st.DataObject, now: int) -> None:
        self._list(data, faulty=True)

    def _manage_dataset(self, data: st.DataObject, now: int) -> None:
        """A provider updates terms (prices included), tops up, pauses, resumes, delists or edits access."""
        roster, market, model = self.roster, self.env.market, self.model
        fault = self._fault(data, ("dataset", "sender"))
        dataset_id = self._dataset_id(data, wrong=fault == "dataset")
        ds = self.state.datasets.get(dataset_id)
        if ds is not None and fault != "sender":
            sender = ds.provider
        else:
            sender = data.draw(st.sampled_from((*roster.providers, roster.stranger)), label="sender")
        action = data.draw(
            st.sampled_from(
                ("terms",) * 3
                + ("top up",) * 2
                + ("pause", "resume", "resume", "delist", "restrict", "consumers", "consumers", "models", "models")
            ),
            label="action",
        )
        if action == "terms":
            committed = ds.epsilon_spent + ds.epsilon_reserved if ds is not None else 0
            terms = self._terms(data, now, committed=committed, broken=_rarely(data, "broken terms"))
            self._act(
                sender,
                market,
                "updateTerms",
                (dataset_id, terms),
                lambda: model.update_terms(sender, now, dataset_id, terms),
            )
        elif action == "top up":
            total = ds.terms.total_epsilon_budget if ds is not None else 0
            amount = (
                data.draw(st.integers(1, 4 * EPS), label="amount")
                if _often(data, "plain top-up")
                else data.draw(
                    st.sampled_from((0, UINT64, UINT64 - total, min(UINT64 - total + 1, UINT64))), label="edge"
                )
            )
            self._act(
                sender, market, "topUpBudget", (dataset_id, amount), lambda: model.top_up(sender, dataset_id, amount)
            )
        elif action in ("pause", "resume"):
            self._act(
                sender,
                market,
                "setDatasetPaused",
                (dataset_id, action == "pause"),
                lambda: model.set_status(
                    sender, dataset_id, DatasetStatus.PAUSED if action == "pause" else DatasetStatus.ACTIVE
                ),
            )
        elif action == "delist":
            self._act(
                sender,
                market,
                "delistDataset",
                (dataset_id,),
                lambda: model.set_status(sender, dataset_id, DatasetStatus.DELISTED),
            )
        elif action == "restrict":
            consumers, models = data.draw(st.booleans(), label="consumers"), data.draw(st.booleans(), label="models")
            self._act(
                sender,
                market,
                "setAccessRestrictions",
                (dataset_id, consumers, models),
                lambda: model.set_access(sender, dataset_id, consumers, models),
            )
        elif action == "consumers":
            allowed = data.draw(st.booleans(), label="allowed")
            accounts = data.draw(st.lists(st.sampled_from(roster.buyers), max_size=3), label="consumers")
            if _rarely(data, "65 entries"):
                accounts = [roster.stranger] * (MAX_LIST_ENTRIES + 1)
            self._act(
                sender,
                market,
                "setConsumersAllowed",
                (dataset_id, accounts, allowed),
                lambda: model.set_consumers(sender, dataset_id, accounts, allowed),
            )
        else:
            allowed = data.draw(st.booleans(), label="allowed")
            hashes = data.draw(st.lists(st.sampled_from((*MODELS, UNLISTED_MODEL)), max_size=3), label="models")
            if _rarely(data, "65 entries"):
                hashes = [UNLISTED_MODEL] * (MAX_LIST_ENTRIES + 1)
            self._act(
                sender,
                market,
                "setModelsAllowed",
                (dataset_id, hashes, allowed),
                lambda: model.set_models(sender, dataset_id, hashes, allowed),
            )

    # ---- JobMarket actions

    def _open_to(self, sender: str, model_spec: bytes, now: int) -> list[int]:
        """Datasets ``sender`` may use for ``model_spec`` now, budget aside."""
        return [
            i
            for i, ds in self.state.datasets.items()
            if ds.status == DatasetStatus.ACTIVE
            and (ds.terms.expiry == 0 or now < ds.terms.expiry)
            and ds.consumer_allowed(sender)
            and ds.model_allowed(model_spec)
        ]

    def _create_job(self, data: st.DataObject, now: int) -> None:
        roster, unit = self.roster, self.env.unit
        fault = self._fault(
            data,
            (
                "datasets",
                "seventeen",
                "epsilon",
                "budget",
                "budget",
                "delta",
                "fee",
                "price limit",
                "payment",
                "deadlines",
            ),
        )
        sender = data.draw(
            st.sampled_from(roster.consumers * 3 + (roster.stranger, roster.providers[0])), label="consumer"
        )
        model_spec = data.draw(st.sampled_from(MODELS), label="model spec")
        open_to = self._open_to(sender, model_spec, now)
        usable = [i for i in open_to if self.state.datasets[i].remaining > 0]
        # Datasets with less ε left than a job may take, to ask for one micro-ε more than is left.
        short = [
            i for i in open_to if self.state.datasets[i].remaining < self.state.datasets[i].terms.max_epsilon_per_job
        ]
        if fault == "budget" and short:
            ids = [data.draw(st.sampled_from(short), label="short of ε")]
        elif fault == "seventeen":
            ids = list(range(1, MAX_DATASETS_PER_JOB + 2))
        elif fault == "datasets" or not usable:
            ids = data.draw(st.lists(st.integers(0, len(self.state.datasets) + 1), max_size=4), label="any ids")
        else:
            ids = data.draw(st.lists(st.sampled_from(usable), min_size=1, max_size=3, unique=True), label="ids")
        known = [self.state.datasets[i] for i in ids if i in self.state.datasets]
        per_job = min((d.terms.max_epsilon_per_job for d in known), default=EPS)
        left = min((d.remaining for d in known), default=EPS)
        fits = max(min(per_job, left), 1)
        if fault == "budget" and short:
            epsilon = left + 1
        elif fault == "epsilon":
            epsilon = data.draw(st.sampled_from((0, per_job + 1, left + 1, UINT64)), label="bad ε")
        else:  # half the time all that fits, which exhausts budgets
            epsilon = data.draw(st.one_of(st.just(fits), st.integers(1, fits)), label="ε")
        max_delta = min((d.terms.max_delta for d in known), default=10**13)
        if fault == "delta":
            delta = data.draw(st.sampled_from((0, min(max_delta + 1, UINT64), UINT64)), label="bad δ")
        else:
            delta = data.draw(st.integers(1, max_delta), label="δ")
        prices = sum(d.terms.price_per_job for d in known)
        if fault == "fee":
            # Past uint256 with the prices, past uint128 (SafeCast), or escrow exactly 2^128 - 1
            # (which overflows lockedEscrow when other escrow is locked).
            fee = data.draw(st.sampled_from((UINT256, 2**128, max(UINT128 - prices, 0))), label="huge worker fee")
        else:
            fee = data.draw(st.one_of(st.integers(0, 20).map(lambda k: k * unit), st.integers(0, 10**6)), label="fee")
        required = prices + fee
        if fault == "price limit":
            max_total = data.draw(st.integers(0, max(required - 1, 0)), label="maxTotalPrice too low")
        elif _often(data, "maxTotalPrice exact"):
            max_total = required
        else:
            max_total = required + data.draw(st.integers(1, 5 * unit), label="slack")
        max_total = min(max_total, UINT256)
        if self.env.token is None:
            if max_total > NATIVE_CAP:
                max_total = data.draw(st.integers(0, NATIVE_CAP), label="affordable maxTotalPrice")
            value = max_total
            if fault == "payment":
                value = data.draw(st.sampled_from((0, max_total + 1, max(max_total - 1, 0))), label="value")
        else:
            value = 1 if fault == "payment" else 0
        claim = now + data.draw(st.integers(1, 1800), label="claim window")
        completion = claim + data.draw(st.integers(0, 3600), label="completion after claim")
        if fault == "deadlines":
            claim, completion = data.draw(
                st.sampled_from(
                    ((now, completion), (now - 1, completion), (claim, claim - 1), (claim, UINT32 + 1), (claim, UINT32))
                ),
                label="deadlines",
            )
        request = JobRequest(
            dataset_ids=tuple(ids),
            model_spec_hash=model_spec,
            epsilon=epsilon,
            delta=delta,
            consumer_key=keccak(b"consumer key " + bytes.fromhex(sender[2:])),
            worker_fee=fee,
            max_total_price=max_total,
            claim_deadline=claim,
            completion_deadline=completion,
        )
        self._act(
            sender,
            self.env.market,
            "createJob",
            (request,),
            lambda: self.model.create_job(sender, now, request, value),
            value=value,
        )

    def _cancel_job(self, data: st.DataObject, now: int) -> None:
        fault = self._fault(data, ("job", "sender"))
        job_id = self._job_id(data, self._jobs(data, now, JobStatus.OPEN), wrong=fault == "job")
        job = self.state.jobs.get(job_id)
        if job is not None and fault != "sender":
            sender = job.consumer
        else:
            sender = data.draw(st.sampled_from(self.roster.everyone), label="sender")
        self._act(sender, self.env.market, "cancelJob", (job_id,), lambda: self.model.cancel_job(sender, job_id))

    def _claim_job(self, data: st.DataObject, now: int) -> None:
        fault = self._fault(data, ("job", "enclave", "sender"))
        model = self.model

        def ids(status: JobStatus) -> dict[int, JobState]:
            return {i: j for i, j in self.state.jobs.items() if j.status == status}

        open_jobs = [i for i, j in ids(JobStatus.OPEN).items() if now <= model.open_until(i, j)]
        lapsed = [i for i, j in ids(JobStatus.CLAIMED).items() if model.leases[i] < now <= j.completion_deadline]
        if lapsed and (not open_jobs or _often(data, "re-claim a lapsed job")):
            claimable = lapsed
        else:
            claimable = open_jobs or list(ids(JobStatus.OPEN)) or list(ids(JobStatus.CLAIMED))
        job_id = self._job_id(data, claimable, wrong=fault == "job")
        active = [k for k in self.env.keys if self.state.active_operator(k, ROLE_TRAINER, now) != ZERO_ADDRESS]
        ending = [k for k in self.env.keys if abs(self.state.enclave(k).valid_until - now) <= 1]
        if ending and fault != "enclave" and _often(data, "enclave at the end of its certificate"):
            enclave = data.draw(st.sampled_from(ending), label="enclave")
        elif active and fault != "enclave":
            enclave = data.draw(st.sampled_from(active), label="enclave")
        else:
            enclave = data.draw(st.sampled_from(list(self.env.keys)), label="any enclave")
        operator = self.state.enclave(enclave).operator
        if operator != ZERO_ADDRESS and fault != "sender":
            sender = operator
        else:
            sender = data.draw(st.sampled_from((*self.roster.operators, self.roster.stranger)), label="sender")
        self._act(
            sender,
            self.env.market,
            "claimJob",
            (job_id, enclave),
            lambda: self.model.claim_job(sender, now, job_id, enclave),
        )

    def _submit_result(self, data: st.DataObject, now: int) -> None:
        fault = self._fault(data, ("job", "receipt job", "datasets", "overspent", "signer", "garbage"))
        claimed = self._jobs(
            data,
            now,
            JobStatus.CLAIMED,
            deadline=lambda j: j.completion_deadline,
            fits=lambda j: now <= j.completion_deadline,
        )
        job_id = self._job_id(data, claimed, wrong=fault == "job")
        job = self.state.jobs.get(job_id)
        epsilon = job.epsilon if job is not None else EPS
        if fault == "overspent":
            spent = epsilon + data.draw(st.integers(1, EPS), label="overspent by")
        else:
            spent = data.draw(st.integers(0, epsilon), label="ε spent")
        self.counter += 1
        right_hash = job is not None and fault != "datasets"
        receipt = {
            "jobId": job_id + 1 if fault == "receipt job" else job_id,
            "datasetsHash": datasets_hash(self.state, job) if right_hash else keccak(b"other datasets"),  # type: ignore[arg-type]
            "modelHash": keccak(b"model %d" % self.counter),
            "resultHash": keccak(b"result %d" % self.counter),
            "metricsHash": keccak(b"metrics %d" % self.counter),
            "epsilonSpent": spent,
        }
        signer = job.enclave if job is not None and job.enclave in self.env.keys else None
        if signer is None or fault == "signer":
            signer = data.draw(st.sampled_from(list(self.env.keys)), label="signer")
        recovered: str | RevertError = signer
        if fault == "garbage":
            signature = data.draw(st.sampled_from((b"\x01" * 64, b"\x00" * 65)), label="signature")
            recovered = (
                RevertError("ECDSAInvalidSignatureLength", 64)
                if len(signature) == 64
                else RevertError("ECDSAInvalidSignature")
            )
        else:
            signature = sign_receipt(self.env.d, self.env.keys[signer], receipt)
        sender = data.draw(st.sampled_from(self.roster.everyone), label="sender")
        self._act(
            sender,
            self.env.market,
            "submitResult",
            (job_id, receipt_tuple(receipt), signature),
            lambda: self.model.submit_result(now, job_id, receipt, recovered),
        )

    def _expire_job(self, data: st.DataObject, now: int) -> None:
        fault = self._fault(data, ("job",), weight=4)

        ids = {id(j): i for i, j in self.state.jobs.items()}

        def deadline(job: JobState) -> int:
            job_id = ids[id(job)]
            if job.status == JobStatus.OPEN:
                return self.model.open_until(job_id, job)
            return min(job.completion_deadline, self.model.leases[job_id] + CLAIM_LEASE)

        expirable = self._jobs(
            data, now, JobStatus.OPEN, JobStatus.CLAIMED, deadline=deadline, fits=lambda j: now > deadline(j)
        )
        job_id = self._job_id(data, expirable, wrong=fault == "job")
        sender = data.draw(st.sampled_from(self.roster.everyone), label="sender")
        self._act(sender, self.env.market, "expireJob", (job_id,), lambda: self.model.expire_job(now, job_id))

    def _withdraw(self, data: st.DataObject, now: int) -> None:
        owed = sorted(self.state.pending)
        if owed and _often(data, "someone who is owed"):
            sender = data.draw(st.sampled_from(owed), label="sender")
        else:
            sender = data.draw(st.sampled_from(self.roster.everyone), label="sender")
        self._act(sender, self.env.market, "withdraw", (), lambda: self.model.withdraw(sender))

    def _advance_time(self, data: st.DataObject, now: int) -> None:
        """Jump ahead, often to just before, at or after a deadline, an expiry or a certificate's end."""
        s = self.state
        boundaries = sorted(
            {j.claim_deadline for j in s.jobs.values() if j.status == JobStatus.OPEN}
            | {j.completion_deadline for j in s.jobs.values() if j.status == JobStatus.CLAIMED}
            | set(self.model.leases.values())
            | {lease + CLAIM_LEASE for lease in self.model.leases.values()}
            | {d.terms.expiry for d in s.datasets.values() if d.terms.expiry}
            | {e.valid_until for e in s.enclaves.values() if e.valid_until}
        )
        # The three nearest within four hours: a jump to a one-year certificate's end would expire
        # every enclave at once.
        upcoming = [t for t in boundaries if now < t + 1 <= now + 4 * 3600][:3]
        to_boundary: bool = data.draw(st.booleans(), label="to a boundary") if upcoming else False
        if to_boundary:
            target = data.draw(st.sampled_from(upcoming), label="boundary") + data.draw(
                st.sampled_from((-1, 0, 1)), label="offset"
            )
            self.at_boundary = True
        elif _often(data, "short jump"):
            target = now + data.draw(st.integers(1, 60), label="seconds")
        else:
            target = now + data.draw(st.integers(61, 3600), label="seconds")
        if target > now:
            self.env.chain.tester.time_travel(target)

    # ---- leases, releases and stakes (issue 13)

    def _renew_lease(self, data: st.DataObject, now: int) -> None:
        fault = self._fault(data, ("job", "sender"), weight=6)
        live = [i for i, lease in self.model.leases.items() if now <= lease]
        job_id = self._job_id(data, live or list(self.model.leases), wrong=fault == "job")
        job = self.state.jobs.get(job_id)
        operator = self.state.enclave(job.enclave).operator if job is not None else ZERO_ADDRESS
        if operator != ZERO_ADDRESS and fault != "sender":
            sender = operator
        else:
            sender = data.draw(st.sampled_from(self.roster.everyone), label="sender")
        self._act(sender, self.env.market, "renewLease", (job_id,), lambda: self.model.renew_lease(sender, now, job_id))

    def _release_claim(self, data: st.DataObject, now: int) -> None:
        """Give a claim back on a key-manager statement (usually right, sometimes by the wrong key,
        for the wrong charges or from a stranger while the lease is live)."""
        fault = self._fault(data, ("job", "signer", "statement", "sender"), weight=6)
        job_id = self._job_id(data, list(self.model.leases), wrong=fault == "job")
        job = self.state.jobs.get(job_id)
        enclave = job.enclave if job is not None else ZERO_ADDRESS
        charges = self.model.charges.get(job_id, 0)
        key = self.env.key_manager
        if fault == "signer":
            key = data.draw(st.sampled_from([*self.env.trainers, ROGUE]), label="signer")
        signed_charges = charges + 1 if fault == "statement" else charges
        signature = sign_release(self.env.d, key, job_id, enclave, signed_charges)
        message = encode_typed_data(
            domain(self.env.d.w3, self.env.d.market, "SterlingJobMarket"),
            KEY_MANAGER_RELEASE_TYPES,
            {"jobId": job_id, "enclave": enclave, "charges": charges},
        )
        recovered = str(Account.recover_message(message, signature=signature))
        operator = self.state.enclave(enclave).operator if job is not None else ZERO_ADDRESS
        if operator != ZERO_ADDRESS and fault != "sender" and _often(data, "the holder's operator"):
            sender = operator
        else:
            sender = data.draw(st.sampled_from(self.roster.everyone), label="sender")
        self._act(
            sender,
            self.env.market,
            "releaseClaim",
            (job_id, signature),
            lambda: self.model.release_claim(sender, now, job_id, recovered),
        )

    def _stake(self, data: st.DataObject, now: int) -> None:
        """An operator (or the stranger) deposits, asks to unstake, or withdraws its stake."""
        who = data.draw(st.sampled_from((*self.roster.operators, self.roster.stranger)), label="staker")
        what = data.draw(st.sampled_from(("deposit", "deposit", "unstake", "withdraw")), label="stake action")
        market, model = self.env.market, self.model
        if what == "deposit":
            amount = data.draw(st.sampled_from((0, 1, 50 * self.env.unit, 500 * self.env.unit)), label="amount")
            value = amount if model.token is None else 0
            if _rarely(data, "wrong value"):
                value += 1
            self._act(
                who, market, "depositStake", (amount,), lambda: model.deposit_stake(who, amount, value), value=value
            )
        elif what == "unstake":
            self._act(who, market, "requestUnstake", (), lambda: model.request_unstake(who, now))
        else:
            end = model.stakes.get(who, (0, 0))[1]
            if end > now and _often(data, "wait for the unbonding to end"):
                self.env.chain.tester.time_travel(end)
                now = self.env.chain.now()
            self._act(who, market, "withdrawStake", (), lambda: model.withdraw_stake(who, now))

    # ---- governance actions

    def _govern(self, data: st.DataObject, now: int) -> None:
        """Governance (or a stranger trying): emergency pause, measurements, enclave revocation."""
        roster, market, registry, model = self.roster, self.env.market, self.env.registry, self.model
        fault = self._fault(data, ("sender",), weight=6)
        sender = (
            roster.governance
            if fault is None
            else data.draw(st.sampled_from((roster.stranger, roster.operators[0])), label="sender")
        )
        if self.state.paused and _often(data, "unpause promptly"):
            action = "unpause"
        else:
            action = data.draw(
                st.sampled_from(("approve",) * 4 + ("revoke",) * 3 + ("pause", "unpause")), label="action"
            )
            if _rarely(data, "revoke an enclave for good"):
                action = "revoke enclave"
        if action == "pause":
            self._act(sender, market, "pause", (), lambda: model.pause(sender))
        elif action == "unpause":
            self._act(sender, market, "unpause", (), lambda: model.unpause(sender))
        elif action == "revoke enclave":
            signer = data.draw(st.sampled_from(list(self.env.keys)), label="enclave")
            self._act(sender, registry, "revokeEnclave", (signer,), lambda: model.revoke_enclave(sender, signer))
        else:
            approve = action == "approve"
            revoked = sorted(HOME_MEASUREMENTS - self.state.approved)
            if approve and revoked and _often(data, "re-approve"):
                role, measurement = data.draw(st.sampled_from(revoked), label="measurement")
            else:
                role = data.draw(st.sampled_from((ROLE_TRAINER,) * 4 + (ROLE_KEY_MANAGER, 0, 5)), label="role")
                measurement = data.draw(st.sampled_from(MEASUREMENTS), label="measurement")
            self._act(
                sender,
                registry,
                "approveMeasurement" if approve else "revokeMeasurement",
                (role, measurement),
                lambda: model.set_measurement(sender, role, measurement, approve),
            )

    def _register_enclave(self, data: st.DataObject, now: int) -> None:
        """An operator (re-)registers an enclave, sometimes moving it to another operator."""
        fault = self._fault(data, ("verifier", "role", "measurement", "expired", "sender"))
        signer = data.draw(st.sampled_from(list(self.env.keys)), label="enclave")
        operator, role, measurement = self.env.home[signer]
        if not _often(data, "home operator"):
            operator = data.draw(st.sampled_from((*self.roster.operators, self.roster.stranger)), label="operator")
        if fault == "role":
            role = data.draw(st.sampled_from((ROLE_TRAINER, ROLE_KEY_MANAGER, 0, 5)), label="role")
        if fault == "measurement":
            measurement = data.draw(st.sampled_from(MEASUREMENTS), label="measurement")
        if fault == "expired":
            valid_until = now - data.draw(st.integers(0, 2), label="expired since")
        else:
            # Short certificates (that expire during the example) mostly for the rogue enclave.
            short = _often(data, "short certificate") if signer == ROGUE.address else _rarely(data, "short")
            valid_for = data.draw(st.integers(1, 3000), label="valid for") if short else ONE_YEAR
            valid_until = now + valid_for
        sender = operator if fault != "sender" else data.draw(st.sampled_from(self.roster.everyone), label="sender")
        verifier = self.env.actors.verifier if fault != "verifier" else FORGED_VERIFIER
        cert = certificate(
            signer,
            operator,
            valid_until,
            role=role,
            measurement=measurement,
            encryption_key=keccak(b"key %d" % data.draw(st.integers(0, 3), label="key")),
        )
        signature = sign_certificate(self.env.d, verifier, cert)
        self._act(
            sender,
            self.env.registry,
            "register",
            (cert_tuple(cert), signature),
            lambda: self.model.register(sender, now, cert, verifier.address),
        )

    # ---- invariants

    @invariant()
    def money_and_budgets(self) -> None:
        """The per-step invariants (skipped after a step that mined nothing: state is unchanged)."""
        if not self.dirty:
            return
        self.dirty = False
        env, chain, market, model = self.env, self.env.chain, self.env.market, self.model
        locked = chain.view(market, "lockedEscrow")
        pending = {a: chain.view(market, "pendingWithdrawal", a) for a in self.roster.everyone}
        held = env.holdings(market.address)
        staked = chain.view(market, "totalStake")
        owed = sum(pending.values())
        assert held == owed + locked + staked, f"holds {held}, owes {owed} + {locked} + stakes {staked}"
        assert locked == self.state.locked_escrow
        assert staked == model.total_stake
        for account in self.roster.everyone:
            assert tuple(chain.view(market, "stakeOf", account)) == model.stakes.get(account, (0, 0)), account
        assert {a: p for a, p in pending.items() if p} == self.state.pending
        for dataset_id, ds in self.state.datasets.items():
            info = chain.view(market, "dataset", dataset_id)
            (_, _, total, _, _), spent, reserved = info[4], info[5], info[6]
            assert spent + reserved <= total, f"dataset {dataset_id}: {spent} + {reserved} > {total}"
            assert (total, spent, reserved) == (ds.terms.total_epsilon_budget, ds.epsilon_spent, ds.epsilon_reserved)
            # the ledger is exactly the sum of the debits the chain announced
            assert spent == self.debited[dataset_id], f"dataset {dataset_id}: spent {spent}, debited {self.debited[dataset_id]}"
        # No fork, at the ledger: every claim that may have held a dataset's key (each claim not
        # given back by releaseClaim) is matched by a debit of that dataset's ε for the job, the
        # current claim's debit still to come while the job is Claimed.
        for job_id, job in self.state.jobs.items():
            key_claims = model.key_claims.get(job_id, 0)
            pending_debit = 1 if job.status == JobStatus.CLAIMED else 0
            for dataset_id in job.dataset_ids:
                debits = self.debits[job_id, dataset_id]
                assert key_claims <= debits + pending_debit, f"job {job_id}, dataset {dataset_id}: {key_claims} claims, {debits} debits"
        # Everything paid in (jobs and stakes) is withdrawn, owed, locked or staked; everything
        # credited came from settled jobs' escrow, from change, or from stakes (slashed or withdrawn).
        assert self.withdrawn + owed + locked + staked == model.deposits
        terminal_escrow = sum(j.escrow for j in self.state.jobs.values() if j.status in TERMINAL)
        assert self.credited == terminal_escrow + self.change + self.slashed + self.unstaked
        assert max(self.settlements.values(), default=0) <= 1

    def teardown(self) -> None:
        if sys.exc_info()[0] is None:  # after a failure, keep the original error
            self.check_everything()

    def check_everything(self) -> None:
        """Index the chain from eth_getLogs alone with the shipped indexer; the state read back from
        the index must equal the model and every view."""
        env = self.env
        indexed, history, logs = env.index()
        events = env.decoder.decode_all(log for log in logs if log["blockNumber"] > env.base_block)
        assert events == self.recorded, "eth_getLogs differs from the transactions' receipts"
        settled = Counter(
            e.args["jobId"] for e in events if e.name in ("ResultSubmitted", "JobExpired", "JobCancelled")
        )
        assert max(settled.values(), default=0) <= 1
        _assert_same(indexed, self.state)
        _assert_history(
            history, indexed, change=self.change, slashed=self.slashed, unstaked=self.unstaked, events=self.recorded
        )
        _assert_views(env, indexed, self.model)


def _assert_same(indexed: ChainState, model: ChainState) -> None:
    """Field-by-field comparison, so a failure names what differs."""
    for name in ("locked_escrow", "paused", "pending", "withdrawn", "approved", "enclaves"):
        assert getattr(indexed, name) == getattr(model, name), (
            f"{name}: index {getattr(indexed, name)}, model {getattr(model, name)}"
        )
    assert indexed.datasets.keys() == model.datasets.keys()
    for i, ds in indexed.datasets.items():
        assert ds == model.datasets[i], f"dataset {i}: index {ds}, model {model.datasets[i]}"
    assert indexed.jobs.keys() == model.jobs.keys()
    for i, job in indexed.jobs.items():
        assert job == model.jobs[i], f"job {i}: index {job}, model {model.jobs[i]}"
    assert indexed == model


def _stages(job: JobState) -> list[str]:
    """The timeline the index must hold for ``job``."""
    claimed = ["claimed"] if job.enclave != ZERO_ADDRESS else []
    ending = {
        JobStatus.COMPLETED: ["settled"],
        JobStatus.EXPIRED: ["expired"],
        JobStatus.CANCELLED: ["cancelled"],
    }.get(job.status, [])
    return ["created", *claimed, *ending]


STAGE_OF_EVENT = {
    "JobCreated": "created",
    "JobClaimed": "claimed",
    "LeaseRenewed": "renewed",
    "ClaimReleased": "released",
    "ClaimCharged": "charged",
    "StakeSlashed": "slashed",
    "ResultSubmitted": "settled",
    "JobExpired": "expired",
    "JobCancelled": "cancelled",
}


def _timelines(events: Sequence[Event]) -> dict[int, list[str]]:
    """Each job's stages, in the order the chain emitted their events."""
    timelines: dict[int, list[str]] = {}
    for event in events:
        stage = STAGE_OF_EVENT.get(event.name) if event.contract == "market" else None
        if stage is not None:
            timelines.setdefault(int(event.args["jobId"]), []).append(stage)
    return timelines


def _assert_history(
    history: IndexHistory, state: ChainState, *, change: int, slashed: int, unstaked: int, events: Sequence[Event]
) -> None:
    """The index's history agrees with its state and the chain's events: timelines, credits by
    reason, last ledger entries."""
    timelines = _timelines(events)
    for i, job in state.jobs.items():
        assert history.stages.get(i) == timelines.get(i), f"job {i}: timeline {history.stages.get(i)}"
        # the timeline starts and ends as the job's state says (claims may come and go in between)
        bounds = [stage for stage in timelines.get(i, []) if stage in ("created", "settled", "expired", "cancelled")]
        assert bounds == [stage for stage in _stages(job) if stage != "claimed"], f"job {i}: {bounds}"
    assert history.stages.keys() <= state.jobs.keys()
    jobs = state.jobs.values()
    expected = {
        PaymentReason.CHANGE: change,
        PaymentReason.REFUND: sum(j.escrow for j in jobs if j.status in (JobStatus.EXPIRED, JobStatus.CANCELLED)),
        PaymentReason.PAYOUT: sum(j.escrow for j in jobs if j.status == JobStatus.COMPLETED),
        PaymentReason.SLASH: slashed,
        PaymentReason.STAKE: unstaked,
    }
    assert history.credits == {r: v for r, v in expected.items() if v}, f"credits by reason {history.credits}"
    for i, ds in state.datasets.items():
        assert history.ledger.get(i) == (ds.remaining, ds.terms.total_epsilon_budget), f"dataset {i}: last ledger entry"


def _assert_views(env: Environment, state: ChainState, model: MarketModel) -> None:
    """Every view of both contracts (and the token balances) agrees with ``state``."""
    chain, market, registry = env.chain, env.market, env.registry
    now = chain.now()

    def view(contract: _Abi, name: str, *args: Any) -> Any:
        return chain.view(contract, name, *args, block="pending")

    assert view(market, "datasetCount") == len(state.datasets)
    assert view(market, "jobCount") == len(state.jobs)
    assert view(market, "lockedEscrow") == state.locked_escrow
    assert view(market, "paused") is state.paused
    for account in env.roster.everyone:
        assert view(market, "pendingWithdrawal", account) == state.pending.get(account, 0)
        assert view(market, "totalWithdrawn", account) == state.withdrawn.get(account, 0)
    for i, ds in state.datasets.items():
        expected = (
            ds.provider,
            ds.content_hash,
            ds.schema_hash,
            ds.uri,
            ds.terms,
            ds.epsilon_spent,
            ds.epsilon_reserved,
            ds.restricted,
            ds.models_restricted,
            ds.status,
        )
        assert view(market, "dataset", i) == expected, f"dataset {i}"
        assert view(market, "remainingEpsilon", i) == ds.remaining
        for consumer in env.roster.buyers:
            assert view(market, "isConsumerAllowed", i, consumer) is ds.consumer_allowed(consumer)
        for model_spec in (*MODELS, UNLISTED_MODEL):
            assert view(market, "isModelAllowed", i, model_spec) is ds.model_allowed(model_spec)
    unknown = len(state.datasets) + 1
    assert chain.revert_of(chain.reader, market, "dataset", (unknown,), 0) == (
        "DatasetRegistryUnknownDataset",
        (unknown,),
    )
    assert view(market, "isConsumerAllowed", unknown, env.roster.consumers[0]) is False
    for i, job in state.jobs.items():
        expected_job = (
            job.consumer,
            job.status,
            job.enclave,
            state.job_operator(job),
            job.model_spec_hash,
            job.epsilon,
            job.delta,
            job.consumer_key,
            job.escrow,
            job.worker_fee,
            job.claim_deadline,  # 0 unless Open (the completion deadline once given back)
            job.completion_deadline,
            job.epsilon_spent,
            job.dataset_ids,
            job.prices,
            model.leases.get(i, 0),
            model.charges.get(i, 0),
        )
        assert view(market, "job", i) == expected_job, f"job {i}"
        assert view(market, "datasetsHashOf", i) == datasets_hash(state, job)
    unknown = len(state.jobs) + 1
    assert chain.revert_of(chain.reader, market, "job", (unknown,), 0) == ("JobMarketUnknownJob", (unknown,))
    for signer in env.keys:
        e = state.enclave(signer)
        expected_enclave = (e.role, e.measurement, e.encryption_key, e.operator, e.valid_until, e.revoked)
        assert view(registry, "enclaveOf", signer) == expected_enclave, f"enclave {signer}"
        for role in (ROLE_TRAINER, ROLE_KEY_MANAGER):
            assert view(registry, "activeOperator", signer, role) == state.active_operator(signer, role, now)
    for role in (ROLE_TRAINER, ROLE_KEY_MANAGER):
        for measurement in MEASUREMENTS:
            assert view(registry, "isMeasurementApproved", role, measurement) is ((role, measurement) in state.approved)
    if env.token is not None:
        for account in (*env.roster.everyone, market.address):
            assert env.holdings(account) == model.balances.get(account, 0), f"token balance of {account}"


# --------------------------------------------------------------------------- the test


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["native", "token"])
def test_market_state_machine(mode: str, record_property: Callable[[str, object], None]) -> None:
    """Random histories in ``mode``; half of STERLING_STATEFUL_STEPS steps each."""
    total = int(os.environ.get(STEPS_ENV) or DEFAULT_STEPS)
    budget = math.ceil(total / 2)
    env = Environment(mode)
    # The deployment itself must index from its logs.
    indexed, history, _ = env.index()
    _assert_same(indexed, env.base_model.state)
    _assert_history(history, indexed, change=0, slashed=0, unstaked=0, events=[])
    steps = env.run(budget)
    record_property("stateful_steps", steps)
    logger.info("%s mode: %d steps in %d examples (budget %d)", mode, steps, env.examples, budget)
    logger.info("%s mode outcomes: %s", mode, ", ".join(f"{k} x{n}" for k, n in sorted(env.outcomes.items())))
    assert steps >= budget
