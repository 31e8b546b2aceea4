"""The gas budget of issue 6, measured by ``make gas`` (benchmarks.gas_report) on py-evm.

Budget: a one-dataset job's lifecycle (createJob + claimJob + submitResult + the provider's and
the worker's withdraw) at most 400,000 gas in steady state, and at most 60,000 more per extra
dataset. Per-function ceilings (measured + ~1 %) catch storage-layout regressions early.
"""

from __future__ import annotations

import pytest

from benchmarks.gas_report import GasReport, main, measure

LIFECYCLE_ONE = 400_000
PER_EXTRA_DATASET = 60_000
CEILINGS = {
    ("createJob", "1 dataset"): 189_000,
    ("claimJob", ""): 48_200,  # 42,700 before issue 13: the stake check reads the operator's stake and Σ prices
    ("submitResult", "1 dataset"): 94_100,
    ("withdraw", ""): 36_200,
    ("createJob", "16 datasets (the maximum)"): 572_000,
    ("submitResult", "16 datasets"): 362_500,
    # issue 13: leases and stakes
    ("renewLease", ""): 41_600,
    ("claimJob", "re-claim after lapse, 1 dataset (charge + slash)"): 88_500,
    ("releaseClaim", ""): 54_700,
    ("expireJob", "lapsed claim, 1 dataset (slash)"): 91_400,
    ("depositStake", "top-up"): 35_800,
    ("requestUnstake", ""): 30_300,
    ("withdrawStake", ""): 33_600,
}


@pytest.fixture(scope="module")
def report() -> GasReport:
    return measure()


def test_lifecycle_within_budget(report: GasReport) -> None:
    assert report.lifecycle_one <= LIFECYCLE_ONE, report.lifecycle[1]
    assert report.per_extra_dataset <= PER_EXTRA_DATASET, report.lifecycle


def test_lifecycle_is_the_sum_of_its_transactions(report: GasReport) -> None:
    one = report.lifecycle[1]
    parts = ("createJob", "claimJob", "submitResult", "withdraw (provider)", "withdraw (worker)")
    assert one["total"] == sum(one[p] for p in parts)
    # One provider holds all three datasets: still one provider withdraw.
    assert report.lifecycle[3]["withdraw (provider)"] == one["withdraw (provider)"]


@pytest.mark.parametrize(("function", "case"), sorted(CEILINGS))
def test_function_ceilings(report: GasReport, function: str, case: str) -> None:
    assert report.gas(function, case) <= CEILINGS[(function, case)]


def test_every_state_changing_function_is_reported(report: GasReport) -> None:
    from marketplace.abi import load_artifact

    reported = {f for f, _case, _gas in report.rows}
    # Handover functions of AccessControlDefaultAdminRules are governance-only and rare.
    rare = {
        "beginDefaultAdminTransfer", "acceptDefaultAdminTransfer", "cancelDefaultAdminTransfer",
        "changeDefaultAdminDelay", "rollbackDefaultAdminDelay", "renounceRole", "revokeRole",
    }
    for name in ("EnclaveRegistry", "JobMarket"):
        for item in load_artifact(name)["abi"]:
            if item["type"] == "function" and item["stateMutability"] in ("nonpayable", "payable"):
                assert item["name"] in reported | rare, item["name"]


def test_make_gas_last_line(report: GasReport) -> None:
    del report
    lines: list[str] = []
    assert main([], out=lines.append) == 0
    assert lines[-1].startswith("lifecycle gas: one dataset ")
    one, extra = (int(x) for x in lines[-1].removeprefix("lifecycle gas: one dataset ").split(", per extra dataset "))
    assert 300_000 < one <= LIFECYCLE_ONE and 0 < extra <= PER_EXTRA_DATASET
