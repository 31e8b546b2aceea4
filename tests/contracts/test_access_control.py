"""Who may call what: every state-changing function of EnclaveRegistry and JobMarket (with the
DatasetRegistry it inherits) is either refused to an unauthorised caller with its precise custom
error, or documented as callable by anyone; plus the emergency pause and the two-step governance
handover.

``test_every_state_changing_function_is_in_a_table`` walks the compiled ABIs, so a new external
function cannot be added without deciding here who may call it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from eth_utils import keccak

from marketplace.abi import load_artifact

from .conftest import (
    ADMIN_DELAY,
    DATASET_DELISTED,
    EPSILON_SCALE,
    KEY_MANAGER_MEASUREMENT,
    ONE_YEAR,
    ROLE_KEY_MANAGER,
    STATUS_CANCELLED,
    STATUS_COMPLETED,
    STATUS_EXPIRED,
    STATUS_OPEN,
    TRAINER_MEASUREMENT,
    Actors,
    Deployment,
    cert_tuple,
    certificate,
    claim_job,
    create_job,
    dataset_info,
    expect_revert,
    job_info,
    job_request,
    list_dataset,
    logged,
    receipt_for,
    register,
    register_key_manager,
    sign_certificate,
    sign_release,
    stake_of,
    submit_call,
    submit_result,
    terms,
    transact,
    withdraw_all,
)

ADMIN_ROLE = b"\x00" * 32
PAUSER_ROLE = keccak(b"PAUSER_ROLE")
VERIFIER_ROLE = keccak(b"VERIFIER_ROLE")
CONTRACTS = ("EnclaveRegistry", "JobMarket")


@dataclass(frozen=True)
class World:
    """A market with two datasets and two jobs to aim calls at."""

    d: Deployment
    dataset: int  # providers[0]'s, open to anyone
    restricted: int  # providers[1]'s, only the consumer may buy
    open_job: int  # the consumer's, Open
    claimed_job: int  # the consumer's, claimed by the trainer

    @property
    def a(self) -> Actors:
        return self.d.actors

    @property
    def m(self) -> Any:
        return self.d.market.functions

    @property
    def r(self) -> Any:
        return self.d.registry.functions


@pytest.fixture(scope="function")
def world(chain: Deployment) -> World:
    a = chain.actors
    dataset = list_dataset(chain, a.providers[0], content=b"open")
    restricted = list_dataset(chain, a.providers[1], content=b"restricted", allowed=[a.consumer])
    open_job = create_job(chain, [dataset])
    claimed_job = create_job(chain, [dataset])
    claim_job(chain, claimed_job)
    return World(chain, dataset, restricted, open_job, claimed_job)


@dataclass(frozen=True)
class Attempt:
    """``call`` sent by ``sender`` must revert with ``error(*args)``; if ``then`` is set, the very
    same call sent by ``then`` must succeed (so the refusal is about the caller, nothing else)."""

    call: Any
    sender: str
    error: str
    args: tuple[Any, ...] = ()
    value: int = 0
    then: str | None = None


@dataclass(frozen=True)
class Guarded:
    """A restricted function: ``who`` describes the refused caller; ``attempt`` builds the call."""

    contract: str
    function: str
    who: str
    attempt: Callable[[World], Attempt] = field(repr=False)


@dataclass(frozen=True)
class Open:
    """A function anyone may call (``why``); ``run`` calls it as a stranger and checks the effect."""

    contract: str
    function: str
    why: str
    run: Callable[[World], None] = field(repr=False)


# --------------------------------------------------------------------------- attempts needing setup


def _create_restricted(w: World) -> Attempt:
    request = job_request(w.d, [w.restricted])
    return Attempt(
        w.m.createJob(request),
        w.a.stranger,
        "JobMarketConsumerNotAllowed",
        (w.restricted, w.a.stranger),
        value=request[6],
        then=w.a.consumer,
    )


def _claim_as_key_manager(w: World) -> Attempt:
    """An active enclave, but in the key-manager role: not an active trainer."""
    km = w.a.key_manager
    register(w.d, km, w.a.operator, role=ROLE_KEY_MANAGER, measurement=KEY_MANAGER_MEASUREMENT)
    return Attempt(w.m.claimJob(w.open_job, km.address), w.a.operator, "JobMarketEnclaveNotActive", (km.address,))


def _claim_as_expired_enclave(w: World) -> Attempt:
    """A trainer whose certificate has expired."""
    valid_until = w.d.now() + 60
    register(w.d, w.a.other_trainer, w.a.other_operator, valid_until=valid_until)
    w.d.travel_to(valid_until + 1)
    return Attempt(
        w.m.claimJob(w.open_job, w.a.other_trainer.address),
        w.a.other_operator,
        "JobMarketEnclaveNotActive",
        (w.a.other_trainer.address,),
    )


def _submit_signed_by_other_key(w: World) -> Attempt:
    call = submit_call(w.d, w.claimed_job, receipt_for(w.d, w.claimed_job, 1), key=w.a.other_trainer)
    return Attempt(
        call, w.a.operator, "JobMarketInvalidReceiptSigner", (w.a.other_trainer.address, w.a.trainer.address)
    )


def _unpause_by_pauser(w: World) -> Attempt:
    """A pauser who is not the admin may stop the market but not restart it."""
    transact(w.d.w3, w.m.grantRole(PAUSER_ROLE, w.a.other_operator), w.a.governance)
    transact(w.d.w3, w.m.pause(), w.a.other_operator)
    return Attempt(
        w.m.unpause(),
        w.a.other_operator,
        "AccessControlUnauthorizedAccount",
        (w.a.other_operator, ADMIN_ROLE),
        then=w.a.governance,
    )


def _accept_by_stranger(contract: str) -> Callable[[World], Attempt]:
    def attempt(w: World) -> Attempt:
        functions = w.m if contract == "JobMarket" else w.r
        transact(w.d.w3, functions.beginDefaultAdminTransfer(w.a.other_operator), w.a.governance)
        return Attempt(
            functions.acceptDefaultAdminTransfer(), w.a.stranger, "AccessControlInvalidDefaultAdmin", (w.a.stranger,)
        )

    return attempt


def _register_by_non_operator(w: World) -> Attempt:
    cert = certificate(w.a.other_trainer.address, w.a.operator, w.d.now() + ONE_YEAR)
    signature = sign_certificate(w.d, w.a.verifier, cert)
    return Attempt(
        w.r.register(cert_tuple(cert), signature),
        w.a.stranger,
        "EnclaveRegistryNotOperator",
        (w.a.stranger, w.a.operator),
        then=w.a.operator,
    )


def _register_signed_by_non_verifier(w: World) -> Attempt:
    cert = certificate(w.a.other_trainer.address, w.a.operator, w.d.now() + ONE_YEAR)
    signature = sign_certificate(w.d, w.a.other_trainer, cert)  # self-signed: not a verifier
    return Attempt(
        w.r.register(cert_tuple(cert), signature),
        w.a.operator,
        "EnclaveRegistryUnknownVerifier",
        (w.a.other_trainer.address,),
    )


def _not_provider(function: str, *args: Callable[[World], Any]) -> Guarded:
    """``function(dataset, *args)`` by providers[1], the provider of another dataset."""

    def attempt(w: World) -> Attempt:
        call = getattr(w.m, function)(w.dataset, *(arg(w) for arg in args))
        return Attempt(
            call, w.a.providers[1], "DatasetRegistryNotProvider", (w.dataset, w.a.providers[1]), then=w.a.providers[0]
        )

    return Guarded("JobMarket", function, "another dataset's provider", attempt)


def _admin_only(contract: str, function: str, *args: Callable[[World], Any], who: str = "stranger") -> Guarded:
    """``function(*args)`` by a non-admin (``who``: an Actors field) → AccessControlUnauthorizedAccount."""

    def attempt(w: World) -> Attempt:
        functions = w.m if contract == "JobMarket" else w.r
        sender = getattr(w.a, who)
        call = getattr(functions, function)(*(arg(w) for arg in args))
        return Attempt(call, sender, "AccessControlUnauthorizedAccount", (sender, ADMIN_ROLE), then=w.a.governance)

    return Guarded(contract, function, f"{who} (not admin)", attempt)


def _renounce_for_another(contract: str, role: bytes) -> Guarded:
    def attempt(w: World) -> Attempt:
        functions = w.m if contract == "JobMarket" else w.r
        call = functions.renounceRole(role, w.a.governance)
        return Attempt(call, w.a.stranger, "AccessControlBadConfirmation", then=w.a.governance)

    return Guarded(contract, "renounceRole", "stranger renouncing the admin's role", attempt)


GUARDED: list[Guarded] = [
    # ---- JobMarket: provider functions (DatasetRegistry)
    _not_provider("updateTerms", lambda w: terms(price=1)),
    _not_provider("topUpBudget", lambda w: 1),
    _not_provider("setDatasetPaused", lambda w: True),
    _not_provider("delistDataset"),
    _not_provider("setAccessRestrictions", lambda w: True, lambda w: True),
    _not_provider("setConsumersAllowed", lambda w: [w.a.providers[1]], lambda w: True),
    _not_provider("setModelsAllowed", lambda w: [keccak(b"spec")], lambda w: True),
    _not_provider("setDatasheet", lambda w: keccak(b"datasheet")),
    # ---- JobMarket: jobs
    Guarded("JobMarket", "createJob", "consumer not on the allow-list", _create_restricted),
    Guarded(
        "JobMarket",
        "cancelJob",
        "stranger (not the consumer)",
        lambda w: Attempt(
            w.m.cancelJob(w.open_job),
            w.a.stranger,
            "JobMarketNotConsumer",
            (w.open_job, w.a.stranger),
            then=w.a.consumer,
        ),
    ),
    Guarded(
        "JobMarket",
        "cancelJob",
        "the job's provider",
        lambda w: Attempt(
            w.m.cancelJob(w.open_job), w.a.providers[0], "JobMarketNotConsumer", (w.open_job, w.a.providers[0])
        ),
    ),
    Guarded(
        "JobMarket",
        "claimJob",
        "operator of another enclave",
        lambda w: Attempt(
            w.m.claimJob(w.open_job, w.a.trainer.address),
            w.a.other_operator,
            "JobMarketNotEnclaveOperator",
            (w.a.other_operator, w.a.operator),
            then=w.a.operator,
        ),
    ),
    Guarded(
        "JobMarket",
        "claimJob",
        "unregistered enclave",
        lambda w: Attempt(
            w.m.claimJob(w.open_job, w.a.other_trainer.address),
            w.a.operator,
            "JobMarketEnclaveNotActive",
            (w.a.other_trainer.address,),
        ),
    ),
    Guarded("JobMarket", "claimJob", "enclave active as key manager only", _claim_as_key_manager),
    Guarded("JobMarket", "claimJob", "enclave with an expired certificate", _claim_as_expired_enclave),
    Guarded("JobMarket", "submitResult", "receipt signed by another key", _submit_signed_by_other_key),
    Guarded(
        "JobMarket",
        "expireJob",
        "anyone before the deadline",
        lambda w: Attempt(w.m.expireJob(w.open_job), w.a.consumer, "JobMarketNotExpirable", (w.open_job, STATUS_OPEN)),
    ),
    Guarded(
        "JobMarket",
        "withdraw",
        "account with nothing pending",
        lambda w: Attempt(w.m.withdraw(), w.a.stranger, "JobMarketNothingToWithdraw", (w.a.stranger,)),
    ),
    # ---- JobMarket: governance
    Guarded(
        "JobMarket",
        "pause",
        "stranger (not a pauser)",
        lambda w: Attempt(
            w.m.pause(),
            w.a.stranger,
            "AccessControlUnauthorizedAccount",
            (w.a.stranger, PAUSER_ROLE),
            then=w.a.governance,
        ),
    ),
    Guarded("JobMarket", "unpause", "pauser (not admin)", _unpause_by_pauser),
    _admin_only("JobMarket", "grantRole", lambda w: PAUSER_ROLE, lambda w: w.a.other_operator),
    _admin_only("JobMarket", "revokeRole", lambda w: PAUSER_ROLE, lambda w: w.a.governance, who="operator"),
    _renounce_for_another("JobMarket", PAUSER_ROLE),
    _admin_only("JobMarket", "beginDefaultAdminTransfer", lambda w: w.a.stranger),
    _admin_only("JobMarket", "cancelDefaultAdminTransfer"),
    _admin_only("JobMarket", "changeDefaultAdminDelay", lambda w: 0),
    _admin_only("JobMarket", "rollbackDefaultAdminDelay"),
    Guarded(
        "JobMarket", "acceptDefaultAdminTransfer", "stranger (not the pending admin)", _accept_by_stranger("JobMarket")
    ),
    # ---- EnclaveRegistry
    _admin_only("EnclaveRegistry", "approveMeasurement", lambda w: 1, lambda w: keccak(b"trainer v2")),
    _admin_only("EnclaveRegistry", "revokeMeasurement", lambda w: 1, lambda w: TRAINER_MEASUREMENT, who="operator"),
    _admin_only("EnclaveRegistry", "revokeEnclave", lambda w: w.a.trainer.address, who="operator"),
    _admin_only("EnclaveRegistry", "grantRole", lambda w: VERIFIER_ROLE, lambda w: w.a.stranger),
    _admin_only("EnclaveRegistry", "revokeRole", lambda w: VERIFIER_ROLE, lambda w: w.a.verifier.address),
    _renounce_for_another("EnclaveRegistry", VERIFIER_ROLE),
    _admin_only("EnclaveRegistry", "beginDefaultAdminTransfer", lambda w: w.a.stranger),
    _admin_only("EnclaveRegistry", "cancelDefaultAdminTransfer"),
    _admin_only("EnclaveRegistry", "changeDefaultAdminDelay", lambda w: 0),
    _admin_only("EnclaveRegistry", "rollbackDefaultAdminDelay"),
    Guarded(
        "EnclaveRegistry",
        "acceptDefaultAdminTransfer",
        "stranger (not the pending admin)",
        _accept_by_stranger("EnclaveRegistry"),
    ),
    Guarded("EnclaveRegistry", "register", "someone other than the certificate's operator", _register_by_non_operator),
    Guarded("EnclaveRegistry", "register", "certificate signed by a non-verifier", _register_signed_by_non_verifier),
]


def _release_live_claim_by_stranger(w: World) -> Attempt:
    """A valid key-manager statement, but the lease is live: only the holder's operator may use it."""
    register_key_manager(w.d)
    signature = sign_release(w.d, w.a.key_manager, w.claimed_job, w.a.trainer.address, 0)
    return Attempt(
        w.m.releaseClaim(w.claimed_job, signature),
        w.a.stranger,
        "JobMarketLeaseActive",
        (w.claimed_job, job_info(w.d, w.claimed_job)["leaseExpiry"]),
        then=w.a.operator,
    )


def _release_signed_by_trainer(w: World) -> Attempt:
    """The holder's operator, but the statement is signed by the trainer, not a key manager."""
    signature = sign_release(w.d, w.a.trainer, w.claimed_job, w.a.trainer.address, 0)
    return Attempt(
        w.m.releaseClaim(w.claimed_job, signature),
        w.a.operator,
        "JobMarketInvalidKeyManagerSignature",
        (w.a.trainer.address,),
    )


GUARDED += [
    Guarded(
        "JobMarket",
        "renewLease",
        "operator of another enclave",
        lambda w: Attempt(
            w.m.renewLease(w.claimed_job),
            w.a.other_operator,
            "JobMarketNotEnclaveOperator",
            (w.a.other_operator, w.a.operator),
            then=w.a.operator,
        ),
    ),
    Guarded("JobMarket", "releaseClaim", "stranger while the lease is live", _release_live_claim_by_stranger),
    Guarded("JobMarket", "releaseClaim", "statement not signed by a key manager", _release_signed_by_trainer),
    Guarded(
        "JobMarket",
        "requestUnstake",
        "account with no stake",
        lambda w: Attempt(w.m.requestUnstake(), w.a.stranger, "JobMarketInvalidStake", (0,), then=w.a.other_operator),
    ),
    Guarded(
        "JobMarket",
        "withdrawStake",
        "operator that did not ask to unstake",
        lambda w: Attempt(w.m.withdrawStake(), w.a.operator, "JobMarketStakeLocked", (w.a.operator, 0)),
    ),
]


# --------------------------------------------------------------------------- functions anyone may call


def _anyone_lists(w: World) -> None:
    dataset_id = list_dataset(w.d, w.a.stranger, content=b"stranger's data")
    assert dataset_info(w.d, dataset_id)["provider"] == w.a.stranger


def _anyone_buys(w: World) -> None:
    job_id = create_job(w.d, [w.dataset], consumer=w.a.stranger)
    assert job_info(w.d, job_id)["consumer"] == w.a.stranger


def _anyone_submits(w: World) -> None:
    submit_result(w.d, w.claimed_job, receipt_for(w.d, w.claimed_job, 1), sender=w.a.stranger)
    assert job_info(w.d, w.claimed_job)["status"] == STATUS_COMPLETED
    # the submitter gains nothing: the fee goes to the enclave's operator
    assert w.m.pendingWithdrawal(w.a.stranger).call() == 0
    assert w.m.pendingWithdrawal(w.a.operator).call() > 0


def _anyone_expires(w: World) -> None:
    w.d.travel_to(job_info(w.d, w.open_job)["claimDeadline"] + 1)
    transact(w.d.w3, w.m.expireJob(w.open_job), w.a.stranger)
    assert job_info(w.d, w.open_job)["status"] == STATUS_EXPIRED
    # the refund goes to the consumer, not to whoever expired the job
    assert w.m.pendingWithdrawal(w.a.stranger).call() == 0
    assert w.m.pendingWithdrawal(w.a.consumer).call() == job_info(w.d, w.open_job)["escrow"]


def _anyone_stakes(w: World) -> None:
    transact(w.d.w3, w.m.depositStake(5), w.a.stranger, 5)
    assert stake_of(w.d, w.a.stranger) == (5, 0)
    # a stake only lets the staker's own enclaves claim: the stranger runs none
    expect_revert(
        lambda: transact(w.d.w3, w.m.claimJob(w.open_job, w.a.trainer.address), w.a.stranger),
        "JobMarketNotEnclaveOperator",
        w.a.stranger,
        w.a.operator,
    )


OPEN: list[Open] = [
    Open("JobMarket", "depositStake", "anyone may stake; it backs only the staker's own claims", _anyone_stakes),
    Open("JobMarket", "listDataset", "permissionless listing; the caller becomes the provider", _anyone_lists),
    Open("JobMarket", "createJob", "any consumer may buy an unrestricted dataset", _anyone_buys),
    Open("JobMarket", "submitResult", "the enclave's signature is the authority, not the sender", _anyone_submits),
    Open("JobMarket", "expireJob", "after the deadline anyone may unlock the consumer's refund", _anyone_expires),
]


def _state_changing(contract: str) -> set[str]:
    return {
        item["name"]
        for item in load_artifact(contract)["abi"]
        if item["type"] == "function" and item["stateMutability"] not in ("view", "pure")
    }


# --------------------------------------------------------------------------- tests


def test_every_state_changing_function_is_in_a_table() -> None:
    covered = {(g.contract, g.function) for g in GUARDED} | {(o.contract, o.function) for o in OPEN}
    expected = {(c, f) for c in CONTRACTS for f in _state_changing(c)}
    assert expected - covered == set(), "state-changing functions without an access-control test"
    assert covered - expected == set(), "table entries for functions that no longer exist"


@pytest.mark.parametrize("guard", GUARDED, ids=lambda g: f"{g.contract}.{g.function}[{g.who}]")
def test_unauthorised_caller_is_refused(world: World, guard: Guarded) -> None:
    attempt = guard.attempt(world)
    w3 = world.d.w3
    expect_revert(lambda: transact(w3, attempt.call, attempt.sender, attempt.value), attempt.error, *attempt.args)
    if attempt.then is not None:
        transact(w3, attempt.call, attempt.then, attempt.value)


@pytest.mark.parametrize("entry", OPEN, ids=lambda o: f"{o.contract}.{o.function}")
def test_anyone_may_call(world: World, entry: Open) -> None:
    entry.run(world)


# --------------------------------------------------------------------------- emergency pause


def _pause(w: World) -> None:
    tx = transact(w.d.w3, w.m.pause(), w.a.governance)
    assert logged(w.d.market, tx, "Paused") == [{"account": w.a.governance}]
    assert w.m.paused().call() is True


def test_pause_stops_new_business(world: World) -> None:
    w = world
    _pause(w)
    listing = w.m.listDataset(keccak(b"new"), keccak(b"s"), "u", terms(), [], [])
    request = job_request(w.d, [w.dataset])
    for call, sender, value in (
        (listing, w.a.providers[2], 0),
        (w.m.createJob(request), w.a.consumer, request[6]),
        (w.m.claimJob(w.open_job, w.a.trainer.address), w.a.operator, 0),
        (submit_call(w.d, w.claimed_job, receipt_for(w.d, w.claimed_job, 1)), w.a.operator, 0),
    ):
        expect_revert(
            lambda call=call, sender=sender, value=value: transact(w.d.w3, call, sender, value), "EnforcedPause"
        )
    expect_revert(lambda: transact(w.d.w3, w.m.pause(), w.a.governance), "EnforcedPause")


def test_pause_keeps_exits_open(world: World) -> None:
    """Cancels, expiries, withdrawals and providers' own changes work while paused."""
    w = world
    escrow = job_info(w.d, w.open_job)["escrow"]
    _pause(w)
    provider = w.a.providers[0]
    for call in (
        w.m.updateTerms(w.dataset, terms(price=1)),
        w.m.topUpBudget(w.dataset, EPSILON_SCALE),
        w.m.setAccessRestrictions(w.dataset, True, True),
        w.m.setConsumersAllowed(w.dataset, [w.a.consumer], True),
        w.m.setModelsAllowed(w.dataset, [keccak(b"spec")], True),
        w.m.setDatasheet(w.dataset, keccak(b"corrected datasheet")),
        w.m.setDatasetPaused(w.dataset, True),
        w.m.delistDataset(w.dataset),
    ):
        transact(w.d.w3, call, provider)
    assert dataset_info(w.d, w.dataset)["status"] == DATASET_DELISTED

    transact(w.d.w3, w.m.cancelJob(w.open_job), w.a.consumer)
    assert job_info(w.d, w.open_job)["status"] == STATUS_CANCELLED
    w.d.travel_to(job_info(w.d, w.claimed_job)["completionDeadline"] + 1)
    transact(w.d.w3, w.m.expireJob(w.claimed_job), w.a.stranger)
    assert job_info(w.d, w.claimed_job)["status"] == STATUS_EXPIRED
    assert withdraw_all(w.d, w.a.consumer) == 2 * escrow
    assert w.m.lockedEscrow().call() == 0


def test_unpause_restores(world: World) -> None:
    w = world
    _pause(w)
    expect_revert(
        lambda: transact(w.d.w3, w.m.unpause(), w.a.stranger),
        "AccessControlUnauthorizedAccount",
        w.a.stranger,
        ADMIN_ROLE,
    )
    tx = transact(w.d.w3, w.m.unpause(), w.a.governance)
    assert logged(w.d.market, tx, "Unpaused") == [{"account": w.a.governance}]
    assert w.m.paused().call() is False
    expect_revert(lambda: transact(w.d.w3, w.m.unpause(), w.a.governance), "ExpectedPause")
    list_dataset(w.d, w.a.providers[2], content=b"after")
    job_id = create_job(w.d, [w.dataset])
    claim_job(w.d, job_id)
    submit_result(w.d, job_id, receipt_for(w.d, job_id, 1))
    submit_result(w.d, w.claimed_job, receipt_for(w.d, w.claimed_job, 1))
    assert job_info(w.d, w.claimed_job)["status"] == STATUS_COMPLETED


def test_revoked_pauser_cannot_pause(world: World) -> None:
    w = world
    transact(w.d.w3, w.m.grantRole(PAUSER_ROLE, w.a.other_operator), w.a.governance)
    transact(w.d.w3, w.m.revokeRole(PAUSER_ROLE, w.a.other_operator), w.a.governance)
    expect_revert(
        lambda: transact(w.d.w3, w.m.pause(), w.a.other_operator),
        "AccessControlUnauthorizedAccount",
        w.a.other_operator,
        PAUSER_ROLE,
    )


# --------------------------------------------------------------------------- governance handover


def _admin_call(d: Deployment, contract: str) -> Any:
    """An admin-only call on ``contract`` that succeeds from the admin in the ``chain`` state."""
    if contract == "JobMarket":
        return d.market.functions.grantRole(PAUSER_ROLE, d.actors.stranger)
    return d.registry.functions.approveMeasurement(1, keccak(b"trainer v2"))


def _contract(d: Deployment, contract: str) -> Any:
    return d.market if contract == "JobMarket" else d.registry


@pytest.mark.parametrize("contract", CONTRACTS)
def test_default_admin_handover_waits_for_the_delay(chain: Deployment, contract: str) -> None:
    a = chain.actors
    c = _contract(chain, contract)
    old, new = a.governance, a.other_operator
    assert c.functions.defaultAdmin().call() == old
    assert c.functions.defaultAdminDelay().call() == ADMIN_DELAY
    tx = transact(chain.w3, c.functions.beginDefaultAdminTransfer(new), old)
    (scheduled,) = logged(c, tx, "DefaultAdminTransferScheduled")
    schedule = scheduled["acceptSchedule"]
    assert scheduled["newAdmin"] == new
    assert schedule == chain.w3.eth.get_block(tx["blockNumber"])["timestamp"] + ADMIN_DELAY
    assert tuple(c.functions.pendingDefaultAdmin().call()) == (new, schedule)

    accept = c.functions.acceptDefaultAdminTransfer()
    expect_revert(lambda: transact(chain.w3, accept, new), "AccessControlEnforcedDefaultAdminDelay", schedule)
    chain.travel_to(schedule)  # the schedule must have *passed*
    expect_revert(lambda: transact(chain.w3, accept, new), "AccessControlEnforcedDefaultAdminDelay", schedule)
    expect_revert(lambda: transact(chain.w3, accept, old), "AccessControlInvalidDefaultAdmin", old)
    chain.travel_to(schedule + 1)
    transact(chain.w3, accept, new)

    assert c.functions.defaultAdmin().call() == new
    assert not c.functions.hasRole(ADMIN_ROLE, old).call()
    expect_revert(
        lambda: transact(chain.w3, _admin_call(chain, contract), old),
        "AccessControlUnauthorizedAccount",
        old,
        ADMIN_ROLE,
    )
    transact(chain.w3, _admin_call(chain, contract), new)


def test_old_admin_keeps_the_pauser_role_until_revoked(chain: Deployment) -> None:
    """PAUSER_ROLE is separate from DEFAULT_ADMIN_ROLE: a handover does not move it; the new admin
    must revoke it from the old governance explicitly."""
    a = chain.actors
    m = chain.market.functions
    old, new = a.governance, a.other_operator
    tx = transact(chain.w3, m.beginDefaultAdminTransfer(new), old)
    chain.travel_to(logged(chain.market, tx, "DefaultAdminTransferScheduled")[0]["acceptSchedule"] + 1)
    transact(chain.w3, m.acceptDefaultAdminTransfer(), new)
    assert m.hasRole(PAUSER_ROLE, old).call()
    transact(chain.w3, m.revokeRole(PAUSER_ROLE, old), new)
    expect_revert(lambda: transact(chain.w3, m.pause(), old), "AccessControlUnauthorizedAccount", old, PAUSER_ROLE)


@pytest.mark.parametrize("contract", CONTRACTS)
def test_default_admin_cannot_be_granted_or_revoked_directly(chain: Deployment, contract: str) -> None:
    a = chain.actors
    c = _contract(chain, contract)
    for call in (c.functions.grantRole(ADMIN_ROLE, a.other_operator), c.functions.revokeRole(ADMIN_ROLE, a.governance)):
        expect_revert(
            lambda call=call: transact(chain.w3, call, a.governance), "AccessControlEnforcedDefaultAdminRules"
        )
    assert c.functions.defaultAdmin().call() == a.governance


@pytest.mark.parametrize("contract", CONTRACTS)
def test_cancelled_handover_cannot_be_accepted(chain: Deployment, contract: str) -> None:
    a = chain.actors
    c = _contract(chain, contract)
    tx = transact(chain.w3, c.functions.beginDefaultAdminTransfer(a.other_operator), a.governance)
    schedule = logged(c, tx, "DefaultAdminTransferScheduled")[0]["acceptSchedule"]
    transact(chain.w3, c.functions.cancelDefaultAdminTransfer(), a.governance)
    chain.travel_to(schedule + 1)
    expect_revert(
        lambda: transact(chain.w3, c.functions.acceptDefaultAdminTransfer(), a.other_operator),
        "AccessControlInvalidDefaultAdmin",
        a.other_operator,
    )
    assert c.functions.defaultAdmin().call() == a.governance
