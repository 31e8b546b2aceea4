"""Gas of the job lifecycle, measured on py-evm (Prague rules) and guarded against regressions.

Numbers are for "steady state": provider and operator accounts that were paid and withdrew
before, and a dataset that already had a job (see docs/contracts.md for first-time numbers).
"""

from __future__ import annotations

from eth_utils import keccak

from .conftest import (
    EPSILON_SCALE,
    ETHER,
    Deployment,
    list_dataset,
    receipt_for,
    receipt_tuple,
    sign_receipt,
    transact,
)

FEE = ETHER // 100
PRICE = ETHER // 10

# Ceilings: measured values plus ~1 % slack, so that a storage-layout regression fails.
CEILINGS_1 = {"createJob": 209_000, "claimJob": 54_500, "submitResult": 140_000, "withdraw": 38_000}
LIFECYCLE_1 = 476_000  # createJob + claimJob + submitResult + 2 withdraws, one dataset
PER_EXTRA_DATASET = 60_000  # budget for createJob + submitResult per extra dataset


def _lifecycle(d: Deployment, ids: list[int]) -> dict[str, int]:
    a = d.actors
    now = d.now()
    call = d.market.functions.createJob(
        ids, keccak(b"spec"), EPSILON_SCALE, 10**13, keccak(b"key"), FEE, now + 3600, now + 7200
    )
    gas = {"createJob": transact(d.w3, call, a.consumer, FEE + PRICE * len(ids))["gasUsed"]}
    job_id = d.market.functions.jobCount().call()
    claim = d.market.functions.claimJob(job_id, a.trainer.address)
    gas["claimJob"] = transact(d.w3, claim, a.operator)["gasUsed"]
    receipt = receipt_for(d, job_id, EPSILON_SCALE // 2)
    submit = d.market.functions.submitResult(job_id, receipt_tuple(receipt), sign_receipt(d, a.trainer, receipt))
    gas["submitResult"] = transact(d.w3, submit, a.operator)["gasUsed"]
    withdraws = [transact(d.w3, d.market.functions.withdraw(), who)["gasUsed"] for who in (*a.providers[: len(ids)], a.operator)]
    gas["withdraw"] = max(withdraws)
    gas["lifecycle"] = gas["createJob"] + gas["claimJob"] + gas["submitResult"] + withdraws[0] + withdraws[-1]
    return gas


def test_lifecycle_gas(chain: Deployment) -> None:
    a = chain.actors
    ids = [list_dataset(chain, a.providers[i], content=bytes([i])) for i in range(3)]
    _lifecycle(chain, ids)  # warm-up: every account has been paid and has withdrawn once
    one = _lifecycle(chain, ids[:1])
    three = _lifecycle(chain, ids)
    for name, ceiling in CEILINGS_1.items():
        assert one[name] <= ceiling, (name, one[name])
    assert one["lifecycle"] <= LIFECYCLE_1, one
    per_extra = (three["createJob"] + three["submitResult"] - one["createJob"] - one["submitResult"]) // 2
    assert per_extra <= PER_EXTRA_DATASET, (per_extra, one, three)
