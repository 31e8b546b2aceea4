"""Regression and survival task metrics agree with scikit-learn / scikit-survival and refuse bad inputs."""

from __future__ import annotations

import time as clock
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm
from sksurv.metrics import brier_score as sk_brier_score  # type: ignore[import-untyped]
from sksurv.metrics import concordance_index_censored
from sksurv.metrics import integrated_brier_score as sk_integrated_brier_score
from sksurv.nonparametric import SurvivalFunctionEstimator, kaplan_meier_estimator  # type: ignore[import-untyped]
from sksurv.util import Surv  # type: ignore[import-untyped]

from enclave_worker.trusted.task_metrics import (
    brier_scores,
    concordance_index,
    integrated_brier_score,
    kaplan_meier,
    kaplan_meier_baseline,
    mae,
    per_output_rmse,
    r2,
    rmse,
    survival_at,
)

SEEDS = range(8)
TIGHT = 1e-12


# -- helpers -----------------------------------------------------------------------------------------------


def _outcomes(rng: np.random.Generator, n: int, *, tied: bool, event_rate: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Survival times (integers in [0, 12) when ``tied``, so many ties; else continuous) and events (≥ 1 observed)."""
    time = rng.integers(0, 12, n).astype(np.float64) if tied else rng.exponential(10.0, n)
    event = rng.random(n) < event_rate
    event[rng.integers(n)] = True
    return time, event


def _sk_cindex(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    return float(concordance_index_censored(event.astype(bool), time, risk)[0])


def _brier_case(seed: int, *, tied: bool) -> tuple[np.ndarray, ...]:
    """Training and test outcomes, predictions and times inside the test follow-up and the training range."""
    rng = np.random.default_rng(seed)
    train_time, train_event = _outcomes(rng, 120, tied=tied, event_rate=0.6)
    test_time, test_event = _outcomes(rng, 90, tied=tied, event_rate=0.6)
    # a training row censored after every test time: the censoring curve reaches 0 there, so no test time is past it
    train_time = np.append(train_time, test_time.max() + 1.0)
    train_event = np.append(train_event, False)
    times = np.unique(np.quantile(test_time, [0.05, 0.2, 0.4, 0.5, 0.7, 0.85]))
    times = times[(times >= test_time.min()) & (times < test_time.max())]
    survival = np.sort(rng.random((test_time.size, times.size)), axis=1)[:, ::-1].copy()
    return train_time, train_event, test_time, test_event, survival, times


# -- regression --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", [(1,), (2,), (37,), (50, 1), (40, 3)])
def test_regression_metrics_match_sklearn(seed: int, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(seed)
    y_true = rng.normal(scale=3.0, size=shape)
    y_pred = y_true + rng.normal(size=shape)
    assert rmse(y_true, y_pred) == pytest.approx(skm.root_mean_squared_error(y_true, y_pred), abs=TIGHT)
    assert mae(y_true, y_pred) == pytest.approx(skm.mean_absolute_error(y_true, y_pred), abs=TIGHT)
    expected = skm.root_mean_squared_error(y_true, y_pred, multioutput="raw_values")
    got = per_output_rmse(y_true, y_pred)
    assert got.shape == (1 if len(shape) == 1 else shape[1],)
    np.testing.assert_allclose(got, np.atleast_1d(expected), rtol=0, atol=TIGHT)
    if shape[0] >= 2:
        assert r2(y_true, y_pred) == pytest.approx(skm.r2_score(y_true, y_pred), abs=TIGHT)


def test_multi_output_rmse_is_the_mean_of_per_output_rmses_not_the_pooled_rmse() -> None:
    y_true = np.zeros((4, 2))
    y_pred = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 4.0]])
    assert per_output_rmse(y_true, y_pred).tolist() == [1.0, 2.0]
    assert rmse(y_true, y_pred) == 1.5  # pooled would be sqrt(20 / 8)
    assert mae(y_true, y_pred) == pytest.approx(1.0)  # (1 + 1) / 2


def test_r2_constant_columns_follow_sklearn_force_finite() -> None:
    y_true = np.array([[2.0, 5.0, 1.0], [2.0, 5.0, 2.0], [2.0, 5.0, 4.0]])
    y_pred = np.array([[2.0, 5.5, 1.0], [2.0, 5.0, 2.5], [2.0, 5.0, 3.0]])
    # column 0 constant and exact → 1, column 1 constant and missed → 0, column 2 ordinary
    per_column = skm.r2_score(y_true, y_pred, multioutput="raw_values")
    assert per_column[:2].tolist() == [1.0, 0.0]
    assert r2(y_true, y_pred) == pytest.approx(skm.r2_score(y_true, y_pred), abs=TIGHT)
    assert r2(y_true[:, 1], y_pred[:, 1]) == 0.0


def test_regression_accepts_integer_arrays() -> None:
    y_true = np.array([3, 1, 4, 1, 5])
    y_pred = np.array([2, 7, 1, 8, 2])
    assert rmse(y_true, y_pred) == pytest.approx(skm.root_mean_squared_error(y_true, y_pred), abs=TIGHT)
    assert r2(y_true, y_pred) == pytest.approx(skm.r2_score(y_true, y_pred), abs=TIGHT)


@pytest.mark.parametrize(
    ("y_true", "y_pred", "message"),
    [
        (np.zeros(3), np.zeros(4), "same shape"),
        (np.zeros((3, 2)), np.zeros((3, 1)), "same shape"),
        (np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), "1-d"),
        (np.zeros(0), np.zeros(0), "at least 1 rows"),
        (np.zeros((3, 0)), np.zeros((3, 0)), "no output columns"),
        (np.array([1.0, np.nan, 2.0]), np.zeros(3), "finite: 1 rows are not, the first is row 1"),
        (np.zeros((3, 2)), np.array([[0.0, 0.0], [0.0, 0.0], [np.inf, 0.0]]), "y_pred must be finite"),
        (np.array([True, False]), np.zeros(2), "integer or floating"),
        ([1.0, 2.0], np.zeros(2), "numpy arrays"),
    ],
)
def test_regression_bad_input_raises(y_true: np.ndarray, y_pred: np.ndarray, message: str) -> None:
    for metric in (rmse, mae, per_output_rmse):
        with pytest.raises(ValueError, match=message):
            metric(y_true, y_pred)


def test_r2_needs_two_rows() -> None:
    with pytest.raises(ValueError, match="at least 2 rows"):
        r2(np.array([1.0]), np.array([1.0]))


# -- Kaplan–Meier ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("tied", [False, True])
def test_kaplan_meier_matches_sksurv(seed: int, tied: bool) -> None:
    rng = np.random.default_rng(seed)
    time, event = _outcomes(rng, 80, tied=tied)
    expected_times, expected_survival = kaplan_meier_estimator(event, time)
    times, survival = kaplan_meier(time, event)
    np.testing.assert_array_equal(times, expected_times)
    np.testing.assert_allclose(survival, expected_survival, rtol=0, atol=TIGHT)
    # events given as 0/1 integers give the same curve
    np.testing.assert_array_equal(kaplan_meier(time, event.astype(np.int64))[1], survival)


def test_kaplan_meier_edge_cases() -> None:
    times, survival = kaplan_meier(np.array([3.0, 1.0, 2.0]), np.zeros(3, dtype=bool))  # all censored
    assert times.tolist() == [1.0, 2.0, 3.0] and survival.tolist() == [1.0, 1.0, 1.0]
    times, survival = kaplan_meier(np.array([2.0, 2.0, 1.0, 4.0]), np.array([True, False, True, True]))
    # 4 at risk at t=1 (1 event), 3 at t=2 (1 event, 1 censored), 1 at t=4 (1 event)
    assert times.tolist() == [1.0, 2.0, 4.0]
    np.testing.assert_allclose(survival, [3 / 4, 3 / 4 * 2 / 3, 0.0], rtol=0, atol=TIGHT)
    times, survival = kaplan_meier(np.array([0.0]), np.array([1]))
    assert times.tolist() == [0.0] and survival.tolist() == [0.0]


@pytest.mark.parametrize(
    ("time", "event", "message"),
    [
        (np.array([1.0, 2.0]), np.array([True]), "same length"),
        (np.zeros(0), np.zeros(0, dtype=bool), "no rows"),
        (np.array([1.0, -1.0]), np.array([True, True]), "≥ 0: 1 rows are not, the first is row 1"),
        (np.array([1.0, np.nan]), np.array([True, True]), "must be finite"),
        (np.array([1.0, 2.0]), np.array([1, 2]), "bool or 0/1"),
        (np.array([1.0, 2.0]), np.array(["a", "b"]), "bool or 0/1"),
    ],
)
def test_kaplan_meier_bad_input_raises(time: np.ndarray, event: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        kaplan_meier(time, event)


@pytest.mark.parametrize("seed", SEEDS)
def test_survival_at_matches_sksurv_step_function(seed: int) -> None:
    rng = np.random.default_rng(seed)
    time, event = _outcomes(rng, 60, tied=bool(seed % 2))
    km_times, km_survival = kaplan_meier(time, event)
    # exact grid points, points between them, and points before the first time
    at = np.concatenate([km_times, rng.uniform(-1.0, km_times[-1], 50)])
    expected = SurvivalFunctionEstimator().fit(Surv.from_arrays(event, time)).predict_proba(at)
    np.testing.assert_allclose(survival_at(km_times, km_survival, at), expected, rtol=0, atol=TIGHT)


def test_survival_at_is_a_right_continuous_step() -> None:
    km_times, km_survival = np.array([1.0, 3.0]), np.array([0.8, 0.5])
    at = np.array([[0.0, 0.999, 1.0], [2.9, 3.0, 100.0]])
    np.testing.assert_array_equal(survival_at(km_times, km_survival, at), [[1.0, 1.0, 0.8], [0.8, 0.5, 0.5]])
    with pytest.raises(ValueError, match="strictly increasing"):
        survival_at(np.array([1.0, 1.0]), km_survival, at)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        survival_at(km_times, np.array([0.8, 1.5]), at)
    with pytest.raises(ValueError, match="same non-zero length"):
        survival_at(km_times, np.array([0.8]), at)
    with pytest.raises(ValueError, match="at must be finite"):
        survival_at(km_times, km_survival, np.array([np.nan]))


# -- concordance index -------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("risk_kind", ["continuous", "few_levels", "within_tolerance"])
def test_concordance_index_matches_sksurv(seed: int, tied: bool, risk_kind: str) -> None:
    rng = np.random.default_rng(seed)
    time, event = _outcomes(rng, 150, tied=tied, event_rate=rng.uniform(0.1, 0.9))
    if risk_kind == "continuous":
        risk = rng.normal(size=time.size) - 0.05 * time
    elif risk_kind == "few_levels":
        risk = rng.integers(0, 4, time.size).astype(np.float64)
    else:  # spaced about the tie tolerance (1e-8) apart: pairs on both sides of it
        risk = rng.integers(0, 6, time.size).astype(np.float64) * 0.7e-8
    expected = _sk_cindex(time, event, risk)
    assert concordance_index(time, event, risk) == pytest.approx(expected, abs=TIGHT)


@pytest.mark.parametrize("seed", SEEDS)
def test_concordance_index_all_censored_but_one(seed: int) -> None:
    rng = np.random.default_rng(seed)
    time = rng.integers(0, 20, 40).astype(np.float64)
    event = np.zeros(40, dtype=bool)
    event[int(np.argmin(time))] = True  # the earliest row: comparable with every row after it (and censored ties)
    risk = rng.normal(size=40)
    assert concordance_index(time, event.astype(np.int64), risk) == pytest.approx(_sk_cindex(time, event, risk), abs=TIGHT)


def test_concordance_index_tie_rules_by_hand() -> None:
    # rows: (time, event, risk)
    time = np.array([1.0, 1.0, 1.0, 2.0, 3.0])
    event = np.array([True, True, False, True, False])
    risk = np.array([5.0, 4.0, 4.0, 5.0 + 5e-9, 1.0])
    # comparable pairs (i event, j): row 0 with rows 2 (censored at the same time), 3, 4; row 1 the same;
    # row 3 with row 4. Rows 0 and 1 (two events at t=1) are not comparable.
    # row 0: 5 > 4 concordant, 5 vs 5+5e-9 tied (within 1e-8), 5 > 1 concordant → 2.5
    # row 1: 4 vs 4 tied, 4 < 5+5e-9 discordant, 4 > 1 concordant → 1.5
    # row 3: 5+5e-9 > 1 concordant → 1
    assert concordance_index(time, event, risk) == 5.0 / 7.0
    assert _sk_cindex(time, event, risk) == 5.0 / 7.0
    assert concordance_index(time, event, risk, tied_tol=0.0) == 4.5 / 7.0


def test_concordance_index_perfect_and_reversed() -> None:
    time = np.arange(1.0, 11.0)
    event = np.ones(10, dtype=bool)
    assert concordance_index(time, event, -time) == 1.0
    assert concordance_index(time, event, time) == 0.0


@pytest.mark.parametrize(
    ("time", "event", "risk", "message"),
    [
        (np.array([1.0, 2.0]), np.array([False, False]), np.zeros(2), "all 2 rows are censored"),
        (np.array([1.0, 2.0]), np.array([False, True]), np.zeros(2), "no comparable pair"),  # sksurv raises too
        (np.array([1.0, 2.0, 2.0]), np.array([False, True, True]), np.zeros(3), "no comparable pair"),  # sksurv: NaN
        (np.array([1.0]), np.array([True]), np.zeros(1), "at least 2 rows"),
        (np.array([1.0, 2.0]), np.array([True, False]), np.zeros(3), "shape"),
        (np.array([1.0, 2.0]), np.array([True, False]), np.array([0.0, np.nan]), "risk must be finite"),
        (np.array([1.0, np.inf]), np.array([True, False]), np.zeros(2), "time must be finite"),
    ],
)
def test_concordance_index_bad_input_raises(time: np.ndarray, event: np.ndarray, risk: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        concordance_index(time, event, risk)


def test_sksurv_returns_nan_where_concordance_index_raises() -> None:
    """The documented divergence: every event ties in time with events only, so sksurv divides 0 by 0."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert np.isnan(_sk_cindex(np.array([1.0, 2.0, 2.0]), np.array([False, True, True]), np.zeros(3)))


def test_concordance_index_10000_rows_is_fast_and_exact() -> None:
    rng = np.random.default_rng(10_000)
    time, event = _outcomes(rng, 10_000, tied=True, event_rate=0.3)
    time = time * 40 + rng.integers(0, 40, time.size)  # 480 distinct times, still heavily tied
    risk = rng.integers(0, 200, time.size).astype(np.float64) - time / 10
    start = clock.perf_counter()
    value = concordance_index(time, event, risk)
    elapsed = clock.perf_counter() - start
    assert elapsed < 2.0, f"10,000-row concordance index took {elapsed:.3f} s"
    assert value == pytest.approx(_sk_cindex(time, event, risk), abs=TIGHT)


# -- Brier scores ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("tied", [False, True])
def test_brier_scores_match_sksurv(seed: int, tied: bool) -> None:
    train_time, train_event, test_time, test_event, survival, times = _brier_case(seed, tied=tied)
    train, test = Surv.from_arrays(train_event, train_time), Surv.from_arrays(test_event, test_time)
    expected_times, expected = sk_brier_score(train, test, survival, times)
    np.testing.assert_array_equal(expected_times, times)
    got = brier_scores(train_time, train_event, test_time, test_event, survival, times)
    assert got.shape == (times.size,)
    np.testing.assert_allclose(got, expected, rtol=0, atol=TIGHT)
    ibs = integrated_brier_score(train_time, train_event, test_time, test_event, survival, times)
    assert ibs == pytest.approx(sk_integrated_brier_score(train, test, survival, times), abs=TIGHT)


def test_brier_scores_without_training_censoring_and_with_censoring_curve_above_zero() -> None:
    rng = np.random.default_rng(42)
    test_time, test_event = _outcomes(rng, 50, tied=True)
    times = np.array([2.0, 5.0, 8.0])
    survival = rng.random((50, 3))
    test = Surv.from_arrays(test_event, test_time)
    # every training row an event: the censoring curve is 1 everywhere (sksurv's special case)
    train_time, train_event = np.arange(0.0, 14.0), np.ones(14, dtype=bool)
    expected = sk_brier_score(Surv.from_arrays(train_event, train_time), test, survival, times)[1]
    got = brier_scores(train_time, train_event, test_time, test_event, survival, times)
    np.testing.assert_allclose(got, expected, rtol=0, atol=TIGHT)
    # the last training row is an event, so the censoring curve stays above 0 up to it
    train_event = np.arange(14) % 3 != 1
    expected = sk_brier_score(Surv.from_arrays(train_event, train_time), test, survival, times)[1]
    got = brier_scores(train_time, train_event, test_time, test_event, survival, times)
    np.testing.assert_allclose(got, expected, rtol=0, atol=TIGHT)


def test_brier_scores_when_the_censoring_curve_reaches_zero_before_the_test_ends() -> None:
    """Past the training follow-up Ĝ = 0, and sksurv weighs those rows (and times) by 1/∞ = 0."""
    rng = np.random.default_rng(7)
    test_time, test_event = _outcomes(rng, 60, tied=False)
    train_time = np.quantile(test_time, np.linspace(0.0, 0.6, 30))
    train_event = np.arange(30) % 2 == 0
    train_event[-1] = False  # ends censored: Ĝ drops to 0 at the last training time
    times = np.quantile(test_time, [0.1, 0.3, 0.5, 0.7, 0.8])  # the last two past the training follow-up
    survival = rng.random((60, times.size))
    expected = sk_brier_score(Surv.from_arrays(train_event, train_time), Surv.from_arrays(test_event, test_time), survival, times)[1]
    got = brier_scores(train_time, train_event, test_time, test_event, survival, times)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, expected, rtol=0, atol=TIGHT)


def _valid_brier_args() -> dict[str, np.ndarray]:
    train_time, train_event, test_time, test_event, survival, times = _brier_case(0, tied=False)
    return {
        "train_time": train_time,
        "train_event": train_event,
        "test_time": test_time,
        "test_event": test_event,
        "survival": survival,
        "times": times,
    }


def test_brier_scores_reject_times_outside_test_follow_up_like_sksurv() -> None:
    args = _valid_brier_args()
    train = Surv.from_arrays(args["train_event"], args["train_time"])
    test = Surv.from_arrays(args["test_event"], args["test_time"])
    n = args["test_time"].size
    for times in (np.array([args["test_time"].min() - 0.5, 1.0]), np.array([1.0, args["test_time"].max()])):
        survival = np.full((n, 2), 0.5)
        with pytest.raises(ValueError, match="within follow-up"):
            sk_brier_score(train, test, survival, times)
        with pytest.raises(ValueError, match="within the test follow-up"):
            brier_scores(**{**args, "survival": survival, "times": times})


def test_brier_scores_reject_test_time_past_training_like_sksurv() -> None:
    args = _valid_brier_args()
    train_time = args["test_time"].max() / 2 + np.arange(5.0)
    train_event = np.array([True, False, True, False, True])  # ends in an event: the censoring curve stays above 0
    train = Surv.from_arrays(train_event, train_time)
    test = Surv.from_arrays(args["test_event"], args["test_time"])
    with pytest.raises(ValueError, match="smaller than largest observed time point"):
        sk_brier_score(train, test, args["survival"], args["times"])
    with pytest.raises(ValueError, match="later than the last training time"):
        brier_scores(**{**args, "train_time": train_time, "train_event": train_event})


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"test_event": "all_false"}, "test rows are censored"),
        ({"train_event": "all_false"}, "training rows are censored"),
        ({"times": "reversed"}, "strictly increasing"),
        ({"survival": "wrong_shape"}, "shape"),
        ({"survival": "above_one"}, r"lie in \[0, 1\]"),
        ({"survival": "nan"}, "survival must be finite"),
        ({"test_time": "nan"}, "test_time must be finite"),
        ({"train_time": "short"}, "same length"),
    ],
)
def test_brier_scores_bad_input_raises(override: dict[str, str], message: str) -> None:
    args = _valid_brier_args()
    ((name, how),) = override.items()
    value = args[name].copy()
    if how == "all_false":
        value[:] = False
    elif how == "reversed":
        value = value[::-1].copy()
    elif how == "wrong_shape":
        value = value[:, :-1]
    elif how == "above_one":
        value[3, 1] = 1.5
    elif how == "nan":
        value.flat[7] = np.nan
    elif how == "short":
        value = value[:-1]
    args[name] = value
    with pytest.raises(ValueError, match=message):
        brier_scores(**args)
    with pytest.raises(ValueError):
        integrated_brier_score(**args)


def test_integrated_brier_score_needs_two_times() -> None:
    args = _valid_brier_args()
    args["times"], args["survival"] = args["times"][:1], args["survival"][:, :1]
    assert brier_scores(**args).shape == (1,)
    with pytest.raises(ValueError, match="at least 2 times"):
        integrated_brier_score(**args)


# -- Kaplan–Meier baseline ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_kaplan_meier_baseline_matches_sksurv(seed: int) -> None:
    rng = np.random.default_rng(seed)
    train_time, train_event = _outcomes(rng, 70, tied=bool(seed % 2))
    km_times, _ = kaplan_meier(train_time, train_event)
    times = np.concatenate([[-1.0, 0.0], rng.uniform(0.0, train_time.max(), 10), km_times[::3], [train_time.max()]])
    expected = SurvivalFunctionEstimator().fit(Surv.from_arrays(train_event, train_time)).predict_proba(times)
    got = kaplan_meier_baseline(train_time, train_event, times, 4)
    assert got.shape == (4, times.size)
    np.testing.assert_allclose(got, np.tile(expected, (4, 1)), rtol=0, atol=TIGHT)


def test_kaplan_meier_baseline_past_the_last_training_time() -> None:
    train_time = np.array([1.0, 2.0, 3.0])
    # the last row censored: the curve stays above 0 and is undefined later (sksurv raises too)
    with pytest.raises(ValueError, match="later than the last training time"):
        kaplan_meier_baseline(train_time, np.array([True, True, False]), np.array([2.0, 3.5]), 2)
    # the last row an event: the curve reaches 0 and stays there
    got = kaplan_meier_baseline(train_time, np.array([True, False, True]), np.array([0.5, 2.0, 3.5]), 2)
    np.testing.assert_allclose(got, [[1.0, 2 / 3, 0.0]] * 2, rtol=0, atol=TIGHT)
    with pytest.raises(ValueError, match="rows must be a positive integer"):
        kaplan_meier_baseline(train_time, np.array([True, False, True]), np.array([1.0]), 0)


# -- real data: flchain ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flchain() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    datasets = pytest.importorskip("sksurv.datasets")
    x, y = datasets.load_flchain()
    return y["futime"].astype(np.float64), y["death"].astype(bool), x["age"].to_numpy(dtype=np.float64)


def test_flchain_concordance_of_age(flchain: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    time, event, age = flchain
    value = concordance_index(time, event, age)
    assert value == pytest.approx(_sk_cindex(time, event, age), abs=TIGHT)
    assert 0.7 < value < 0.85  # age is a strong predictor of death in this cohort


def test_flchain_kaplan_meier_baseline_integrated_brier_score(flchain: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    time, event, _ = flchain
    rng = np.random.default_rng(0)
    is_test = rng.random(time.size) < 0.3
    train_time, train_event, test_time, test_event = time[~is_test], event[~is_test], time[is_test], event[is_test]
    times = np.quantile(test_time[test_event], np.linspace(0.1, 0.9, 25))
    times = np.unique(times[times < min(test_time.max(), train_time.max())])
    survival = kaplan_meier_baseline(train_time, train_event, times, int(is_test.sum()))
    train, test = Surv.from_arrays(train_event, train_time), Surv.from_arrays(test_event, test_time)
    expected_survival = SurvivalFunctionEstimator().fit(train).predict_proba(times)
    np.testing.assert_allclose(survival, np.tile(expected_survival, (survival.shape[0], 1)), rtol=0, atol=TIGHT)
    np.testing.assert_allclose(
        brier_scores(train_time, train_event, test_time, test_event, survival, times),
        sk_brier_score(train, test, survival, times)[1],
        rtol=0,
        atol=TIGHT,
    )
    ibs = integrated_brier_score(train_time, train_event, test_time, test_event, survival, times)
    assert ibs == pytest.approx(sk_integrated_brier_score(train, test, survival, times), abs=TIGHT)
    assert 0.0 < ibs < 0.25  # a calibrated but featureless prediction
