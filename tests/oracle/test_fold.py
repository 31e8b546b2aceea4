"""The event fold on its own: hand-written logs in, state and history out (no chain, no database).

The stateful contract test checks the fold against the contracts through the indexer; these
tests pin the rules that are easy to get subtly wrong: the ledger's arithmetic, allow-list
positions, credit reasons, and the logs the fold refuses.
"""

from __future__ import annotations

from itertools import count
from typing import Any

import pytest

from marketplace.contracts import DatasetStatus, JobStatus
from oracle.fold import (
    EVENTS,
    DecodedLog,
    InconsistentLogs,
    IndexState,
    LogPosition,
    PaymentReason,
    StateKeys,
    apply,
    replay,
    touched,
)

EPS = 10**6
PROVIDER = "0x" + "11" * 20
CONSUMER = "0x" + "22" * 20
OPERATOR = "0x" + "33" * 20
ENCLAVE = "0x" + "44" * 20
GOVERNANCE = "0x" + "55" * 20
SPEC = bytes([7]) * 32
_log_index = count()


def log(name: str, tx: str, *, block: int = 1, **args: Any) -> DecodedLog:
    """A decoded log of ``name`` in transaction ``tx`` (log indices increase across calls)."""
    return DecodedLog(name=name, args=args, contract="0xmarket", block=block, timestamp=1000 + block, tx_hash=tx, log_index=next(_log_index))


def terms(*, price: int = 100, total: int = 10 * EPS) -> dict[str, int]:
    return {"pricePerJob": price, "maxEpsilonPerJob": 2 * EPS, "totalEpsilonBudget": total, "maxDelta": 10**13, "expiry": 0}


def listed(dataset_id: int = 1, *, tx: str = "0xlist", total: int = 10 * EPS, price: int = 100) -> DecodedLog:
    return log(
        "DatasetListed", tx, datasetId=dataset_id, provider=PROVIDER, contentHash=bytes([dataset_id]) * 32, schemaHash=b"\x02" * 32,
        uri=f"blob://{dataset_id}", terms=terms(price=price, total=total),
    )  # fmt: skip


def created(job_id: int, dataset_ids: list[int], *, tx: str, epsilon: int = EPS, prices: list[int] | None = None, fee: int = 5,
            change: int = 0, block: int = 2) -> list[DecodedLog]:  # fmt: skip
    """A createJob transaction's logs: one reservation per dataset, JobCreated, then the change credited."""
    prices = prices or [100] * len(dataset_ids)
    logs = [
        log("EpsilonReserved", tx, block=block, datasetId=d, jobId=job_id, epsilon=epsilon, price=p) for d, p in zip(dataset_ids, prices, strict=True)
    ]
    logs.append(
        log(
            "JobCreated", tx, block=block, jobId=job_id, consumer=CONSUMER, datasetIds=dataset_ids, modelSpecHash=SPEC, epsilon=epsilon,
            delta=10**13, consumerKey=b"\x09" * 32, escrow=sum(prices) + fee, workerFee=fee, claimDeadline=5000, completionDeadline=9000,
        )
    )  # fmt: skip
    if change:
        logs.append(log("PaymentCredited", tx, block=block, account=CONSUMER, jobId=job_id, amount=change))
    return logs


def test_the_ledger_follows_terms_top_ups_reservations_and_debits() -> None:
    state = replay(
        [
            listed(1, total=10 * EPS),
            log("TermsUpdated", "0xterms", datasetId=1, terms=terms(price=300, total=8 * EPS)),
            log("BudgetToppedUp", "0xtop", datasetId=1, amount=4 * EPS, totalEpsilonBudget=12 * EPS),
            *created(1, [1], tx="0xcreate", epsilon=2 * EPS, prices=[300]),
            log("JobClaimed", "0xclaim", block=3, jobId=1, enclave=ENCLAVE, operator=OPERATOR),
            log("BudgetDebited", "0xsubmit", block=4, datasetId=1, jobId=1, epsilonSpent=EPS // 2, remaining=12 * EPS - EPS // 2),
            log("PaymentCredited", "0xsubmit", block=4, account=PROVIDER, jobId=1, amount=300),
            log("PaymentCredited", "0xsubmit", block=4, account=OPERATOR, jobId=1, amount=5),
            log("ResultSubmitted", "0xsubmit", block=4, jobId=1, enclave=ENCLAVE, modelHash=b"\x0a" * 32, resultHash=b"\x0b" * 32,
                metricsHash=b"\x0c" * 32, epsilonSpent=EPS // 2),  # fmt: skip
        ]
    )
    dataset, job = state.datasets[1], state.jobs[1]
    assert (dataset.price_wei, dataset.total_epsilon, dataset.spent_epsilon, dataset.reserved_epsilon) == (300, 12 * EPS, EPS // 2, 0)
    assert dataset.remaining_epsilon == 12 * EPS - EPS // 2 and dataset.updated_block == 1
    history = [(b.kind, b.epsilon, b.remaining_epsilon, b.total_epsilon, b.price_wei) for b in state.budget_events]
    assert history == [
        ("listed", 10 * EPS, 10 * EPS, 10 * EPS, None),
        ("terms_updated", 8 * EPS, 8 * EPS, 8 * EPS, None),
        ("topped_up", 4 * EPS, 12 * EPS, 12 * EPS, None),
        ("reserved", 2 * EPS, 10 * EPS, 12 * EPS, 300),
        ("debited", EPS // 2, 12 * EPS - EPS // 2, 12 * EPS, None),
    ]
    assert (job.status, job.prices, job.escrow_wei, job.enclave, job.operator, job.epsilon_spent) == (
        JobStatus.COMPLETED, (300,), 305, ENCLAVE, OPERATOR, EPS // 2,
    )  # fmt: skip
    assert job.result_hash == "0x" + "0b" * 32
    assert [s.stage for s in state.job_events] == ["created", "claimed", "settled"]
    assert [(p.account, p.reason) for p in state.payments] == [(PROVIDER, PaymentReason.PAYOUT), (OPERATOR, PaymentReason.PAYOUT)]
    assert state.reservations == {}


def test_credits_are_change_at_creation_refunds_when_a_refund_event_follows_else_payouts() -> None:
    state = replay(
        [
            listed(1),
            *created(1, [1], tx="0xcreate", change=7),
            log("EpsilonReleased", "0xcancel", block=3, datasetId=1, jobId=1, epsilon=EPS),
            log("PaymentCredited", "0xcancel", block=3, account=CONSUMER, jobId=1, amount=105),
            log("JobCancelled", "0xcancel", block=3, jobId=1, refund=105),
            log("Withdrawn", "0xwithdraw", block=4, account=CONSUMER, amount=112),
        ]
    )
    assert [(p.kind, p.reason, p.amount_wei) for p in state.payments] == [
        ("credited", PaymentReason.CHANGE, 7),
        ("credited", PaymentReason.REFUND, 105),
        ("withdrawn", None, 112),
    ]
    job = state.jobs[1]
    assert (job.status, job.refund_wei) == (JobStatus.CANCELLED, 105)
    assert state.datasets[1].reserved_epsilon == 0 and state.datasets[1].remaining_epsilon == 10 * EPS
    assert [(s.stage, s.amount_wei) for s in state.job_events] == [("created", 105), ("cancelled", 105)]


def test_an_allow_list_entry_keeps_the_log_that_added_it_until_it_is_removed() -> None:
    first = log("ConsumerAllowed", "0xa", block=2, datasetId=1, consumer=CONSUMER)
    again = log("ConsumerAllowed", "0xb", block=3, datasetId=1, consumer=CONSUMER)
    state = replay([listed(1), first, again, log("ModelAllowed", "0xb", block=3, datasetId=1, modelSpecHash=SPEC)])
    assert state.datasets[1].consumers == {CONSUMER: LogPosition(2, "0xa", first.log_index)}  # allowing again changes nothing
    removed = log("ConsumerDisallowed", "0xc", block=4, datasetId=1, consumer=CONSUMER)
    back = log("ConsumerAllowed", "0xd", block=5, datasetId=1, consumer=CONSUMER)
    apply(state, removed)
    assert state.datasets[1].consumers == {}
    apply(state, back)
    assert state.datasets[1].consumers == {CONSUMER: LogPosition(5, "0xd", back.log_index)}
    apply(state, log("ModelDisallowed", "0xe", block=6, datasetId=1, modelSpecHash=SPEC))
    apply(state, log("AccessRestricted", "0xe", block=6, datasetId=1, consumers=True, models=False))
    apply(state, log("DatasetStatusChanged", "0xf", block=7, datasetId=1, status=2))
    dataset = state.datasets[1]
    assert dataset.models == {} and (dataset.restricted, dataset.models_restricted) == (True, False)
    assert (dataset.status, dataset.updated_block) == (DatasetStatus.DELISTED, 7)


def test_the_registry_and_the_emergency_stop() -> None:
    signer, cert = "0x" + "66" * 20, {"role": 1, "measurement": b"\x01" * 32, "encryptionKey": b"\x02" * 32, "validUntil": 10**9}
    state = replay(
        [
            log("MeasurementApproved", "0x1", role=1, measurement=b"\x01" * 32),
            log("EnclaveRegistered", "0x2", block=2, signer=signer, operator=OPERATOR, **cert),
            log("EnclaveRegistered", "0x3", block=3, signer=signer, operator=GOVERNANCE, **cert),
            log("EnclaveRevoked", "0x4", block=4, signer=signer),
            log("EnclaveRevoked", "0x5", block=5, signer=signer),
            log("MeasurementRevoked", "0x6", block=6, role=1, measurement=b"\x01" * 32),
            log("Paused", "0x7", block=7, account=GOVERNANCE),
        ]
    )
    assert state.enclaves[signer].operator == GOVERNANCE and state.enclaves[signer].registered_tx == "0x3"  # the newer certificate
    assert state.revocations[signer].tx_hash == "0x4"  # the first revocation
    assert state.measurements[(1, "0x" + "01" * 32)].approved is False
    assert state.market is not None and state.market.paused and state.market.changed_by == GOVERNANCE


@pytest.mark.parametrize(
    ("logs", "message"),
    [
        ([log("TermsUpdated", "0x1", datasetId=3, terms=terms())], "dataset 3, which was never listed"),
        ([listed(1), log("JobClaimed", "0x2", jobId=4, enclave=ENCLAVE, operator=OPERATOR)], "job 4, which was never created"),
        ([listed(1), *created(1, [1], tx="0x3")[1:]], "reservations for datasets"),  # JobCreated without its EpsilonReserved
        ([listed(1, total=EPS), log("EpsilonReserved", "0x4", datasetId=1, jobId=1, epsilon=2 * EPS, price=0)], "do not fit"),
        ([listed(1), log("EpsilonReleased", "0x5", datasetId=1, jobId=1, epsilon=1)], "do not fit"),
    ],
)
def test_logs_that_contradict_the_state_are_refused(logs: list[DecodedLog], message: str) -> None:
    with pytest.raises(InconsistentLogs, match=message):
        replay(logs)


def test_touched_names_every_entry_the_fold_reads() -> None:
    logs = [
        *created(7, [1, 2], tx="0x1"),
        log("EnclaveRevoked", "0x2", signer=ENCLAVE),
        log("MeasurementApproved", "0x3", role=2, measurement=b"\x05" * 32),
        log("Unpaused", "0x4", account=GOVERNANCE),
        log("Withdrawn", "0x5", account=CONSUMER, amount=1),
    ]
    assert touched(logs) == StateKeys(
        datasets=frozenset({1, 2}), jobs=frozenset({7}), enclaves=frozenset({ENCLAVE}),
        measurements=frozenset({(2, "0x" + "05" * 32)}), market=True,
    )  # fmt: skip
    # Folding the logs a state holds only those entries for gives what folding everything gives.
    prefix = [listed(1), listed(2), log("BudgetToppedUp", "0x0", datasetId=2, amount=EPS, totalEpsilonBudget=11 * EPS), listed(3)]
    whole = replay([*prefix, *logs])
    part = replay(prefix)
    keys = touched(logs)
    part.datasets = {i: d for i, d in part.datasets.items() if i in keys.datasets}
    part.budget_events.clear()
    replay(logs, part)
    assert part.datasets == {i: whole.datasets[i] for i in keys.datasets}
    assert part.jobs == whole.jobs and part.budget_events == whole.budget_events[len(prefix) :]


def test_events_outside_the_index_change_nothing() -> None:
    state = IndexState()
    apply(state, log("RoleGranted", "0x1", role=b"\x00" * 32, account=GOVERNANCE, sender=GOVERNANCE))
    assert state == IndexState() and "RoleGranted" not in EVENTS


def test_a_re_claim_charges_the_lapsed_claim_and_a_release_reopens_the_job() -> None:
    other_enclave, other_operator = "0x" + "77" * 20, "0x" + "88" * 20
    state = replay(
        [
            listed(1, total=10 * EPS, price=100),
            log("StakeDeposited", "0xs1", block=2, operator=OPERATOR, amount=500, total=500),
            log("StakeDeposited", "0xs2", block=2, operator=other_operator, amount=300, total=300),
            *created(1, [1], tx="0xcreate", epsilon=2 * EPS, prices=[100]),
            DecodedLog("JobClaimed", {"jobId": 1, "enclave": ENCLAVE, "operator": OPERATOR}, "0xmarket", 3, 1003, "0xclaim",
                       next(_log_index), {"claim_lease": 60}),  # fmt: skip
            log("LeaseRenewed", "0xrenew", block=4, jobId=1, enclave=ENCLAVE, leaseExpiry=1100),
            # The lease lapsed; another operator re-claims: ε charged, A slashed to the provider.
            log("BudgetDebited", "0xre", block=5, datasetId=1, jobId=1, epsilonSpent=2 * EPS, remaining=8 * EPS),
            log("EpsilonReserved", "0xre", block=5, datasetId=1, jobId=1, epsilon=2 * EPS, price=100),
            log("ClaimCharged", "0xre", block=5, jobId=1, enclave=ENCLAVE, charges=1),
            log("StakeSlashed", "0xre", block=5, operator=OPERATOR, jobId=1, amount=100),
            log("PaymentCredited", "0xre", block=5, account=PROVIDER, jobId=1, amount=100),
            log("JobClaimed", "0xre", block=5, jobId=1, enclave=other_enclave, operator=other_operator),
        ]
    )
    job, dataset = state.jobs[1], state.datasets[1]
    assert (job.status, job.enclave, job.operator, job.charges, job.claim_deadline) == (JobStatus.CLAIMED, other_enclave, other_operator, 1, 0)
    assert job.lease_expiry == 1005 + 300  # the default lease without the indexer's claim_lease
    assert (dataset.spent_epsilon, dataset.reserved_epsilon, dataset.remaining_epsilon) == (2 * EPS, 2 * EPS, 6 * EPS)
    assert [s.stage for s in state.job_events] == ["created", "claimed", "renewed", "charged", "slashed", "claimed"]
    assert state.job_events[1].job_id == 1 and state.reservations == {} and state.credits_due == {}
    assert [(p.reason, p.amount_wei) for p in state.payments] == [(PaymentReason.SLASH, 100)]
    assert (state.stakes[OPERATOR].amount, state.stakes[OPERATOR].slashed_wei) == (400, 100)
    totals = state.totals
    assert (totals.total_stake_wei, totals.locked_escrow_wei, totals.pending_wei) == (700, 105, 100) and totals.conserved

    apply(state, log("ClaimReleased", "0xrel", block=6, jobId=1, enclave=other_enclave, charges=1))
    assert (job.status, job.enclave, job.operator, job.lease_expiry, job.claim_deadline) == (JobStatus.OPEN, None, None, 0, 9000)
    apply(state, log("UnstakeRequested", "0xu", block=7, operator=OPERATOR, amount=400, unbondingEnd=5000))
    apply(state, log("StakeWithdrawn", "0xw", block=8, operator=OPERATOR, amount=400))
    apply(state, log("PaymentCredited", "0xw", block=8, account=OPERATOR, jobId=0, amount=400))
    assert (state.stakes[OPERATOR].amount, state.stakes[OPERATOR].unbonding_end) == (0, 0)
    assert (state.payments[-1].reason, state.payments[-1].job_id) == (PaymentReason.STAKE, None) and state.totals.conserved


@pytest.mark.parametrize(
    ("logs", "message"),
    [
        ([listed(1), *created(1, [1], tx="0x1"), log("BudgetDebited", "0x2", datasetId=1, jobId=1, epsilonSpent=EPS, remaining=9 * EPS)],
         "OPEN"),  # fmt: skip
        ([listed(1), *created(1, [1], tx="0x1"), log("JobClaimed", "0x2", jobId=1, enclave=ENCLAVE, operator=OPERATOR),
          log("BudgetDebited", "0x3", datasetId=1, jobId=1, epsilonSpent=EPS, remaining=8 * EPS)], "BudgetDebited says"),  # fmt: skip
        ([log("StakeSlashed", "0x1", operator=OPERATOR, jobId=1, amount=1)], "never staked"),
        ([log("StakeDeposited", "0x1", operator=OPERATOR, amount=5, total=6)], "StakeDeposited says"),
    ],
)
def test_ledger_and_stake_logs_that_contradict_the_state_are_refused(logs: list[DecodedLog], message: str) -> None:
    with pytest.raises(InconsistentLogs, match=message):
        replay(logs)
