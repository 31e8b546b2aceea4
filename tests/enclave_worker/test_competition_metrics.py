"""Competition metrics agree with scikit-learn, convert to on-chain units exactly, and refuse bad inputs."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from enclave_worker.trusted.errors import InvalidDataset
from enclave_worker.trusted.metrics import LOG_LOSS_CLIP, MAX_UNITS, score, to_units
from enclave_worker.trusted.onchain import NO_SCORE_LOWER_IS_BETTER, SCORE_SCALE, Metric

WORST_LOG_LOSS = -math.log(LOG_LOSS_CLIP)  # ≈ 34.5388 nats: a row whose label got probability 0


def _softmax(rng: np.random.Generator, n: int, k: int, *, scale: float = 1.0) -> np.ndarray:
    logits = rng.normal(scale=scale, size=(n, k))
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


def _quantised(rng: np.random.Generator, n: int, k: int, levels: int) -> np.ndarray:
    """Probabilities from small integer weights: many exact zeros and ties, within and across rows."""
    weights = rng.integers(0, levels + 1, size=(n, k)).astype(np.float64)
    weights[weights.sum(axis=1) == 0, 0] = 1.0
    out: np.ndarray = weights / weights.sum(axis=1, keepdims=True)
    return out


def _one_hot(classes: np.ndarray, k: int) -> np.ndarray:
    out: np.ndarray = np.eye(k)[classes]
    return out


def _sklearn(metric: Metric, p: np.ndarray, y: np.ndarray) -> float:
    """The scikit-learn reference for ``metric`` (LOG_LOSS only where sklearn's clip does not bite)."""
    k = p.shape[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # float32 rows sum to 1 only within 1e-7: sklearn warns, the values are the same
        if metric is Metric.ACCURACY:
            return float(skm.accuracy_score(y, p.argmax(axis=1)))
        if metric is Metric.MACRO_F1:
            return float(skm.f1_score(y, p.argmax(axis=1), average="macro", labels=list(range(k)), zero_division=0))
        if metric is Metric.ROC_AUC:
            if k == 2:
                return float(skm.roc_auc_score(y == 1, p[:, 1]))
            # sklearn gives NaN for a class absent from y; the metric averages over the classes present
            per_class = skm.roc_auc_score(y, p, multi_class="ovr", labels=list(range(k)), average=None)
            return float(np.nanmean(per_class))
        if metric is Metric.LOG_LOSS:
            return float(skm.log_loss(y, p.astype(np.float64), labels=list(range(k))))
        if metric is Metric.RMSE:
            return math.sqrt(float(skm.brier_score_loss(y, p.astype(np.float64), labels=list(range(k)), scale_by_half=False)))
    raise AssertionError(metric)


# --- against scikit-learn --------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(2, 80),
    k=st.integers(2, 6),
    float32=st.booleans(),
    levels=st.sampled_from([0, 1, 3, 1000]),  # 0: softmax outputs, else integer weights with ties and zeros
)
def test_every_metric_matches_scikit_learn(seed: int, n: int, k: int, float32: bool, levels: int) -> None:
    rng = np.random.default_rng(seed)
    p = _softmax(rng, n, k, scale=3.0) if levels == 0 else _quantised(rng, n, k, levels)
    if float32:
        p = p.astype(np.float32)
    y = rng.integers(0, k, size=n).astype(np.int64)
    for metric in (Metric.ACCURACY, Metric.MACRO_F1, Metric.RMSE):
        assert score(metric, p, y) == pytest.approx(_sklearn(metric, p, y), abs=1e-12), metric
    if np.unique(y).size >= 2:
        assert score(Metric.ROC_AUC, p, y) == pytest.approx(_sklearn(Metric.ROC_AUC, p, y), abs=1e-12)
    picked = p[np.arange(n), y].astype(np.float64)
    assert score(Metric.LOG_LOSS, p, y) == pytest.approx(float(-np.mean(np.log(np.clip(picked, LOG_LOSS_CLIP, 1.0)))), rel=1e-12)
    if picked.min() > 1e-12:  # sklearn clips to float eps instead of 1e-15: compare only where neither clips
        assert score(Metric.LOG_LOSS, p, y) == pytest.approx(_sklearn(Metric.LOG_LOSS, p, y), rel=1e-9)


@pytest.mark.parametrize("k", [2, 3, 10])
@pytest.mark.parametrize("metric", list(Metric))
def test_ten_thousand_rows_match_scikit_learn(metric: Metric, k: int) -> None:
    rng = np.random.default_rng(k)
    p = _softmax(rng, 10_000, k).astype(np.float32)
    y = rng.integers(0, k, size=10_000)
    assert score(metric, p, y) == pytest.approx(_sklearn(metric, p, y), rel=1e-10, abs=1e-12)


def test_multiclass_roc_auc_is_scikit_learns_macro_one_vs_rest() -> None:
    rng = np.random.default_rng(3)
    p = _softmax(rng, 500, 4)
    y = rng.integers(0, 4, size=500)
    expected = skm.roc_auc_score(y, p, multi_class="ovr", average="macro", labels=[0, 1, 2, 3])
    assert score(Metric.ROC_AUC, p, y) == pytest.approx(expected, abs=1e-12)


def test_binary_roc_auc_counts_ties_half() -> None:
    p = np.array([[0.5, 0.5], [0.5, 0.5], [0.8, 0.2], [0.2, 0.8]])
    y = np.array([0, 1, 0, 1])
    # pairs (negative, positive): (0,1) tie ½, (0,3) 1, (2,1) 1, (2,3) 1 → 3.5 / 4
    assert score(Metric.ROC_AUC, p, y) == 0.875
    assert score(Metric.ROC_AUC, np.full((6, 2), 0.5), np.array([0, 1, 0, 1, 1, 1])) == 0.5


def test_multiclass_roc_auc_averages_over_the_classes_present() -> None:
    rng = np.random.default_rng(4)
    p = _softmax(rng, 200, 5)
    y = rng.choice([0, 2, 3], size=200)
    expected = np.mean([skm.roc_auc_score(y == c, p[:, c]) for c in (0, 2, 3)])
    assert score(Metric.ROC_AUC, p, y) == pytest.approx(expected, abs=1e-12)


# --- edge cases ------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 3, 7])
def test_perfect_predictions(k: int) -> None:
    y = np.arange(40) % k
    p = _one_hot(y, k)
    assert score(Metric.ACCURACY, p, y) == 1.0
    assert score(Metric.MACRO_F1, p, y) == 1.0
    assert score(Metric.ROC_AUC, p, y) == 1.0
    assert score(Metric.LOG_LOSS, p, y) == 0.0
    assert score(Metric.RMSE, p, y) == 0.0


@pytest.mark.parametrize("k", [2, 3, 7])
def test_worst_predictions(k: int) -> None:
    y = np.arange(40) % k
    p = _one_hot((y + 1) % k, k)  # all mass on a wrong class
    assert score(Metric.ACCURACY, p, y) == 0.0
    assert score(Metric.MACRO_F1, p, y) == 0.0
    assert score(Metric.LOG_LOSS, p, y) == pytest.approx(WORST_LOG_LOSS, rel=1e-12)
    assert score(Metric.RMSE, p, y) == pytest.approx(math.sqrt(2.0), rel=1e-12)
    if k == 2:
        assert score(Metric.ROC_AUC, p, y) == 0.0
    assert score(Metric.ROC_AUC, p, y) == pytest.approx(_sklearn(Metric.ROC_AUC, p, y), abs=1e-12)


def test_uniform_predictions_tie_to_the_lowest_class() -> None:
    k = 4
    y = np.array([0, 1, 2, 3, 0, 0, 1, 2])
    p = np.full((8, k), 1 / k)
    assert score(Metric.ACCURACY, p, y) == 3 / 8  # every row predicts class 0
    assert score(Metric.ROC_AUC, p, y) == 0.5
    assert score(Metric.LOG_LOSS, p, y) == pytest.approx(math.log(k), rel=1e-12)
    assert score(Metric.RMSE, p, y) == pytest.approx(math.sqrt(1 - 1 / k), rel=1e-12)
    assert score(Metric.MACRO_F1, p, y) == pytest.approx(_sklearn(Metric.MACRO_F1, p, y), abs=1e-15)


def test_macro_f1_counts_a_class_never_seen_nor_predicted_as_zero() -> None:
    y = np.array([0, 1, 0, 1])
    p = _one_hot(y, 3)  # perfect on classes 0 and 1; class 2 has no rows and no predictions
    assert score(Metric.MACRO_F1, p, y) == pytest.approx(2 / 3, abs=1e-15)
    assert score(Metric.MACRO_F1, p, y) == pytest.approx(_sklearn(Metric.MACRO_F1, p, y), abs=1e-15)


def test_log_loss_clips_at_ten_to_the_minus_fifteen() -> None:
    p = np.array([[1.0, 0.0], [1e-20, 1.0 - 1e-20], [1e-15, 1.0 - 1e-15], [0.5, 0.5]])
    y = np.array([1, 0, 0, 0])
    expected = (WORST_LOG_LOSS * 3 + math.log(2)) / 4
    assert score(Metric.LOG_LOSS, p, y) == pytest.approx(expected, rel=1e-12)


def test_a_single_row_scores() -> None:
    p = np.array([[0.3, 0.7]], dtype=np.float32)
    y = np.array([1])
    assert score(Metric.ACCURACY, p, y) == 1.0
    assert score(Metric.LOG_LOSS, p, y) == pytest.approx(-math.log(np.float32(0.7)), rel=1e-7)
    assert score(Metric.RMSE, p, y) == pytest.approx(math.sqrt(2 * float(np.float32(0.3)) ** 2), rel=1e-7)


@pytest.mark.parametrize("k", [2, 4])
def test_roc_auc_with_a_single_class_is_refused(k: int) -> None:
    p = _softmax(np.random.default_rng(0), 10, k)
    with pytest.raises(InvalidDataset, match="at least two classes"):
        score(Metric.ROC_AUC, p, np.ones(10, dtype=np.int64))
    for metric in (Metric.ACCURACY, Metric.MACRO_F1, Metric.LOG_LOSS, Metric.RMSE):  # the others are defined
        score(metric, p, np.ones(10, dtype=np.int64))


def test_metric_may_be_given_as_its_integer() -> None:
    p, y = np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 0])
    assert score(1, p, y) == score(Metric.ACCURACY, p, y) == 0.5  # type: ignore[arg-type]


# --- bad inputs ------------------------------------------------------------------------------------

_P = np.array([[0.25, 0.75], [0.5, 0.5], [1.0, 0.0]])
_Y = np.array([1, 0, 0], dtype=np.int64)


@pytest.mark.parametrize(
    ("probabilities", "labels", "match"),
    [
        ([[0.5, 0.5]], np.array([0]), "numpy arrays"),
        (_P, [1, 0, 0], "numpy arrays"),
        (_P[0], _Y[:1], "2-d"),
        (_P[:0], _Y[:0], "zero rows"),
        (np.ones((3, 1)), _Y, "at least 2 classes"),
        (_P.astype(np.float16), _Y, "float32 or float64"),
        (np.array([[0, 1], [1, 0], [1, 0]]), _Y, "float32 or float64"),
        (_P, _Y[:2], r"shape \(3,\)"),
        (_P, _Y[:, None], r"shape \(3,\)"),
        (_P, _Y.astype(np.float64), "integers"),
        (np.array([[0.5, 0.5], [np.nan, 0.5], [1.0, 0.0]]), _Y, "finite.*row 1"),
        (np.array([[0.5, 0.5], [0.5, 0.5], [np.inf, 0.0]]), _Y, "finite.*row 2"),
        (np.array([[1.5, -0.5], [0.5, 0.5], [1.0, 0.0]]), _Y, r"\[0, 1\].*row 0"),
        (np.array([[0.5, 0.5], [0.6, 0.6], [1.0, 0.0]]), _Y, "sum to 1.*row 1"),
    ],
)
def test_malformed_inputs_are_refused(probabilities: object, labels: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        score(Metric.ACCURACY, probabilities, labels)  # type: ignore[arg-type]


@pytest.mark.parametrize("labels", [np.array([1, 0, 2]), np.array([1, -1, 0])])
def test_labels_outside_the_schemas_classes_are_refused(labels: np.ndarray) -> None:
    with pytest.raises(InvalidDataset, match=r"labels must lie in \[0, 2\).*row"):
        score(Metric.ACCURACY, _P, labels)


def test_errors_name_rows_not_values() -> None:
    p = np.array([[0.123456789, 0.876543211], [0.2, 0.3]])
    with pytest.raises(ValueError) as info:
        score(Metric.LOG_LOSS, p, np.array([0, 1]))
    assert "row 1" in str(info.value) and "0.3" not in str(info.value) and "0.5" not in str(info.value)


def test_unknown_metrics_are_refused() -> None:
    with pytest.raises(ValueError):
        score(99, _P, _Y)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        to_units(0, 0.5)  # type: ignore[arg-type]


def test_float32_softmax_drift_is_tolerated() -> None:
    p = _softmax(np.random.default_rng(5), 1000, 200).astype(np.float32)  # rows sum to 1 within ~1e-6 only
    y = np.arange(1000) % 200
    assert score(Metric.LOG_LOSS, p, y) == pytest.approx(_sklearn(Metric.LOG_LOSS, p, y), rel=1e-9)


# --- to_units --------------------------------------------------------------------------------------


def test_to_units_scales_by_a_million() -> None:
    assert SCORE_SCALE == 10**6
    assert to_units(Metric.ACCURACY, 0.9731) == 973_100
    assert to_units(Metric.ROC_AUC, 1.0) == 1_000_000
    assert to_units(Metric.MACRO_F1, 0.0) == 0
    assert to_units(Metric.LOG_LOSS, WORST_LOG_LOSS) == 34_538_776
    assert to_units(Metric.RMSE, math.sqrt(2)) == 1_414_214
    assert to_units(Metric.ACCURACY, 1 / 3) == 333_333 and to_units(Metric.ACCURACY, 2 / 3) == 666_667


def test_to_units_rounds_half_to_even() -> None:
    # these values times 10⁶ are exactly j + ½ in float64
    assert [to_units(Metric.ACCURACY, v) for v in (5e-7, 1.5e-6, 2.5e-6, 3.5e-6, 4.5e-6)] == [0, 2, 2, 4, 4]
    assert [to_units(Metric.LOG_LOSS, v) for v in (5e-7, 1.5e-6, 2.5e-6)] == [0, 2, 2]


def test_to_units_clamps() -> None:
    assert to_units(Metric.ACCURACY, 1.0000001) == SCORE_SCALE
    assert to_units(Metric.ROC_AUC, math.inf) == SCORE_SCALE
    assert to_units(Metric.LOG_LOSS, 1e30) == MAX_UNITS == NO_SCORE_LOWER_IS_BETTER - 1
    assert to_units(Metric.RMSE, math.inf) == MAX_UNITS
    assert to_units(Metric.LOG_LOSS, (2**64 - 1) / 1e6) == MAX_UNITS  # never "no score"
    for metric in Metric:
        assert to_units(metric, -1e-9) == 0
        assert to_units(metric, -0.0) == 0
        assert to_units(metric, -math.inf) == 0
        with pytest.raises(ValueError, match="NaN"):
            to_units(metric, math.nan)


@given(metric=st.sampled_from(list(Metric)), value=st.floats(0.0, 50.0))
def test_to_units_is_the_nearest_unit_within_range(metric: Metric, value: float) -> None:
    units = to_units(metric, value)
    top = SCORE_SCALE if metric.higher_is_better else MAX_UNITS
    assert 0 <= units <= top
    if value * SCORE_SCALE <= top:
        assert abs(units - value * SCORE_SCALE) <= 0.5
        assert units == round(value * SCORE_SCALE)
    else:
        assert units == top


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 50), k=st.integers(2, 5))
def test_scores_land_in_range_after_conversion(seed: int, n: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    p, y = _quantised(rng, n, k, 2), rng.integers(0, k, size=n)
    for metric in Metric:
        if metric is Metric.ROC_AUC and np.unique(y).size < 2:
            continue
        value = score(metric, p, y)
        assert value >= 0.0 and (value <= 1.0 or not metric.higher_is_better)
        assert to_units(metric, value) < NO_SCORE_LOWER_IS_BETTER
