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


COMPETITION_KEYS = {
    "chain", "competition_id", "test_rows", "public_rows", "leaderboard", "public_history", "copy_attempt", "winner", "prize_wei",
    "purchase", "scoring", "evaluator_measurement", "attestation_format", "gas", "wall_seconds",
}  # fmt: skip


@pytest.mark.slow
def test_the_competition_demo_on_the_embedded_chain(tmp_path: Path) -> None:
    """``sterling demo --scenario competition``: the copy is refused twice, the best private score
    wins the prize, the organizer buys that model and it is the one scored."""
    out = tmp_path / "competition.json"
    proc = subprocess.run(
        [sys.executable, "-m", "sterling.cli", "demo", "--scenario", "competition", "--chain", "embedded", "--json-out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Leaderboard" in proc.stdout and "Gas per transaction" in proc.stdout
    r = json.loads(out.read_text())
    assert set(r) == COMPETITION_KEYS
    assert r["test_rows"] == 797 and 0 < r["public_rows"] < r["test_rows"]
    assert r["copy_attempt"]["key_manager"].startswith("refused") and r["copy_attempt"]["chain"].startswith("refused: CompetitionMarket")
    board = r["leaderboard"]
    assert [e["participant"] for e in board] == ["Alice", "Bob", "Carol"]
    best = max(board, key=lambda e: (e["private_score"], -e["entry"]))
    assert r["winner"] == best["participant"] and r["prize_wei"] == 10**18
    # the Ladder: the public leaderboard never goes down, moves in steps of η = 0.01, and only for a gain above η
    history = r["public_history"]
    assert history == sorted(history) and all(v % 10_000 == 0 for v in history)
    assert all(b == a or b >= a + 10_000 for a, b in zip(history, history[1:], strict=False))
    purchase = r["purchase"]
    assert purchase["weights_match"] and purchase["entry"] == best["entry"]
    assert abs(purchase["test_accuracy"] - best["private_score"]) < 0.05  # the bought model is the one scored (its whole-test-set accuracy)
    assert r["scoring"]["rows_per_second"] > 1_000
    for tx in ("createCompetition", "submit (Alice)", "close", "buy"):
        assert 21_000 < r["gas"][tx] < 300_000
