"""One-run privacy audit (Steinke, Nasr & Jagielski 2023): the bound's mathematics and real audits."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave_worker.trusted.dataset import DatasetPackage
from enclave_worker.trusted.privacy_audit import (
    AuditResult,
    epsilon_lower_bound,
    p_value,
)
from marketplace.datasets import breast_cancer
from marketplace.local_training import run_audit


def _paper_p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """``p_value_DP_audit`` from the paper's Appendix D, with scipy (as published; test-only dependency)."""
    q = 1 / (1 + math.exp(-eps))
    beta = scipy.stats.binom.sf(v - 1, r, q)
    alpha, total = 0.0, 0.0
    for i in range(1, v + 1):
        total += scipy.stats.binom.pmf(v - i, r, q)
        if total > i * alpha:
            alpha = total / i
    return float(min(beta + alpha * delta * 2 * m, 1))


@pytest.mark.parametrize(
    ("m", "r", "v", "eps", "delta"),
    [
        (1000, 100, 100, 3.0, 1e-5),
        (1000, 100, 90, 1.0, 1e-5),
        (100, 10, 9, 0.5, 1e-3),
        (1000, 1000, 700, 0.5, 1e-6),
        (500, 125, 125, 3.5, 1e-5),
        (1000, 250, 140, 0.1, 1e-5),
        (10, 1, 1, 0.0, 1.0),
        (1000, 200, 190, 2.0, 0.0),
    ],
)
def test_p_value_matches_the_papers_code(m: int, r: int, v: int, eps: float, delta: float) -> None:
    ours = p_value(canaries=m, guesses=r, correct=v, epsilon=eps, delta=delta)
    assert ours == pytest.approx(_paper_p_value(m, r, v, eps, delta), rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("r", [1, 10, 50, 100, 250])
def test_all_correct_pure_dp_bound_has_a_closed_form(r: int) -> None:
    # δ = 0 and v = r: the p-value is P[Binomial(r, q) = r] = q^r, so the bound is the ε whose
    # q = e^ε / (1 + e^ε) equals 0.05^(1/r), i.e. logit(0.05^(1/r)) (r = 100: 3.493); a single
    # right guess (r = 1) rejects nothing at 95%.
    q = 0.05 ** (1 / r)
    expected = max(0.0, math.log(q / (1 - q)))
    assert epsilon_lower_bound(canaries=1000, guesses=r, correct=r, delta=0.0) == pytest.approx(expected, abs=1e-9)


@given(m=st.integers(1, 2000), data=st.data(), delta=st.sampled_from([0.0, 1e-6, 1e-5, 1e-3]))
@settings(max_examples=60, deadline=None)
def test_bound_properties(m: int, data: st.DataObject, delta: float) -> None:
    r = data.draw(st.integers(0, min(m, 400)))
    v = data.draw(st.integers(0, r))
    bound = epsilon_lower_bound(canaries=m, guesses=r, correct=v, delta=delta)
    assert bound >= 0
    if 2 * v <= r:
        assert bound == 0.0  # no better than coin flips: nothing is rejected
    if v < r:
        # At confidence ≥ 1/2 the bound stays below the point estimate log(v / (r - v)): at that
        # ε, v is the mean (and median) of Binomial(r, v / r), so P[≥ v] ≥ 1/2 > 0.05.
        assert bound <= max(0.0, math.log(v / (r - v))) + 1e-9 if v else bound == 0.0
    else:
        q = 0.05 ** (1 / r) if r else 0.5
        assert bound <= max(0.0, math.log(q / (1 - q))) + 1e-9  # the pure-DP, all-correct limit
    if v < r:
        assert epsilon_lower_bound(canaries=m, guesses=r, correct=v + 1, delta=delta) >= bound - 1e-9
    assert epsilon_lower_bound(canaries=m, guesses=r, correct=v, delta=0.0) >= bound - 1e-9  # δ only weakens it
    assert epsilon_lower_bound(canaries=m, guesses=r, correct=v, delta=delta, confidence=0.99) <= bound + 1e-9


def test_bound_inputs_are_checked() -> None:
    for bad in ({"correct": 11}, {"guesses": 2000}, {"delta": -0.1}, {"delta": 1.5}, {"confidence": 1.0}, {"confidence": 0.0}):
        args = {"canaries": 1000, "guesses": 10, "correct": 5, "delta": 1e-5} | bad
        with pytest.raises(ValueError):
            epsilon_lower_bound(**args)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def base() -> Iterator[DatasetPackage]:
    """Breast cancer, with torch on one thread: tiny models train faster so, and far faster when the 2 cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield breast_cancer()
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_non_private_training_is_caught(base: DatasetPackage) -> None:
    # Measured: the 250 lowest-scoring of 1,000 canaries were all left out (seeds 0-3 alike),
    # giving ε ≥ 4.391 at 95% (δ = 1e-5) — far above the asserted 2.5.
    result = run_audit(base, epsilon=None, canaries=1000, seed=0)
    assert result.epsilon_target is None
    assert (result.guesses, result.correct) == (250, 250)
    assert result.epsilon_lower_bound >= 2.5


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dp_training_at_epsilon_two_is_not_contradicted(base: DatasetPackage, seed: int) -> None:
    # Measured lower bounds at ε = 2 (one torch thread): 0.0, 0.104, 0.023 for seeds 0, 1, 2
    # (128, 145 and 140 of 250 guesses right).
    result = run_audit(base, epsilon=2.0, canaries=1000, seed=seed)
    assert result.epsilon_target == 2.0
    assert result.epsilon_lower_bound <= 2.0
    assert result.guesses == 250 and 0 <= result.correct <= 250


def test_audit_result_serialises_to_json() -> None:
    result = AuditResult(
        epsilon_lower_bound=1.5, confidence=0.95, canaries=100, guesses=25, correct=25, epsilon_target=None,
        delta=1e-5, included=48, guessed_included=0, guessed_excluded=25, seed=3,
    )
    doc = json.loads(json.dumps(result.to_json()))
    assert doc["epsilon_lower_bound"] == 1.5 and doc["epsilon_target"] is None and doc["canaries"] == 100
    assert set(doc) >= {"epsilon_lower_bound", "confidence", "canaries", "guesses", "correct", "epsilon_target"}


def test_audit_refuses_impossible_guess_counts(base: DatasetPackage) -> None:
    with pytest.raises(ValueError, match="guesses"):
        run_audit(base, epsilon=None, canaries=10, guess_included=6, guess_excluded=6)
    with pytest.raises(ValueError, match="epsilon"):
        run_audit(base, epsilon=0.0, canaries=10)


@pytest.mark.slow
def test_random_canaries_have_power_against_non_private_training(base: DatasetPackage) -> None:
    # Measured (seed 1, 500 canaries): the 125 lowest-scoring were all left out, ε ≥ 3.705.
    result = run_audit(base, epsilon=None, canaries=500, seed=1, canary_kind="random")
    assert (result.guesses, result.correct) == (125, 125)
    assert result.epsilon_lower_bound >= 2.5


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_random_canaries_do_not_contradict_epsilon_two(base: DatasetPackage, seed: int) -> None:
    # Measured: 0.09 at seed 1 (75 of 125 right).
    result = run_audit(base, epsilon=2.0, canaries=500, seed=seed, canary_kind="random")
    assert result.epsilon_lower_bound <= 2.0


def test_random_canaries_depend_on_no_data_row(base: DatasetPackage) -> None:
    from enclave_worker.trusted.privacy_audit import random_canaries
    from marketplace.local_training import audit_spec

    spec = audit_spec(base, seed=0)
    shifted = DatasetPackage(features=base.features + 1000.0, labels=base.labels, schema=base.schema)
    a = random_canaries(base.schema, spec, count=50, rng=np.random.default_rng(4))
    b = random_canaries(shifted.schema, spec, count=50, rng=np.random.default_rng(4))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    # They land in the consumer's standardised input space: about mean ± scale per feature.
    z = (a[0] - np.asarray(spec.input_mean, dtype=np.float32)) / np.asarray(spec.input_scale, dtype=np.float32)
    assert abs(float(z.mean())) < 0.1 and float(z.std()) == pytest.approx(1.0, rel=0.1)
    assert set(a[1].tolist()) <= set(range(base.schema.num_classes))
