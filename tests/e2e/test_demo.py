"""The README's scenario end to end through the real `sterling demo` command, on both chains."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
KEYS = {
    "chain", "job_id", "datasets", "epsilon_target", "epsilon_spent", "delta", "dp_accuracy", "baseline_accuracy",
    "budget_remaining", "payments_wei", "measurement", "attestation_format", "gas", "wall_seconds",
}


def _run_demo(chain: str, out: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "sterling.cli", "demo", "--chain", chain, "--json-out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "DP model accuracy" in proc.stdout and "Gas per transaction" in proc.stdout
    return json.loads(out.read_text())


def _check(report: dict[str, Any], chain: str) -> None:
    assert set(report) == KEYS
    assert report["chain"] == chain
    assert report["attestation_format"] == "sim"
    assert len(bytes.fromhex(report["measurement"])) == 32
    # Privacy: the receipt's ε is at most the target, and every dataset is debited exactly that.
    assert 0.9 <= report["epsilon_spent"] <= report["epsilon_target"] == 1.0
    assert report["delta"] == 1e-5
    assert len(report["datasets"]) == 3 and sum(d["rows"] for d in report["datasets"]) == 455
    for dataset in report["datasets"]:
        assert report["budget_remaining"][str(dataset["dataset_id"])] == pytest.approx(10.0 - report["epsilon_spent"], abs=1e-6)
    # Utility of this one run: the enclave draws fresh DP noise on every job (a consumer's seed
    # cannot fix it), so the accuracy varies. Over 40 noise seeds the demo's DP model was 1.8-6.1
    # points below the 99.1 % baseline (median 3.5; above 6 in 10 % of runs; 114 validation rows),
    # so the bound here is 10 points. The 5-point utility goal is tested over fixed noise seeds in
    # tests/e2e/test_utility.py.
    assert report["baseline_accuracy"] > 0.9
    assert report["dp_accuracy"] >= report["baseline_accuracy"] - 0.10
    # Money: each provider got its price, the worker its fee, no refund on success.
    payments = report["payments_wei"]
    assert [p["amount"] for p in payments["providers"]] == [10**17, 12 * 10**16, 15 * 10**16]
    assert payments["worker"] == 5 * 10**16 and payments["consumer_refund"] == 0
    for tx in ("createJob", "claimJob", "submitResult", "register (trainer)", "withdraw (worker)"):
        assert 21_000 < report["gas"][tx] < 1_000_000
    assert report["wall_seconds"] < 120


@pytest.mark.slow
def test_demo_on_the_embedded_chain(tmp_path: Path) -> None:
    _check(_run_demo("embedded", tmp_path / "report.json"), "embedded")


@pytest.mark.slow
@pytest.mark.anvil
def test_demo_on_anvil(tmp_path: Path) -> None:
    _check(_run_demo("anvil", tmp_path / "report.json"), "anvil")
