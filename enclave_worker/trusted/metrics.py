"""Competition metrics: a submission's class probabilities on test rows, scored against their labels.

The evaluator enclave runs a participant's model on a split of the private test set and scores its
softmax outputs with the competition's :class:`~.onchain.Metric`; :func:`to_units` turns the score
into the fixed-point integer that is signed and posted (units of 10⁻⁶, :data:`~.onchain.SCORE_SCALE`).

Every metric matches its scikit-learn counterpart (the tests compare them) but is computed here with
numpy alone, vectorised in float64, in O(n·k) time (O(n·k·log n) for ROC AUC):

============  ========================================================================================
metric        definition (n rows, k classes of the schema, p the (n, k) probabilities, y the labels)
============  ========================================================================================
ACCURACY      share of rows whose arg-max class is the label; ties go to the lowest class (numpy argmax)
MACRO_F1      unweighted mean over all k classes of F1 = 2·TP / (2·TP + FP + FN) of the arg-max
              predictions; a class with no true and no predicted row counts 0
              (``f1_score(average="macro", labels=range(k), zero_division=0)``)
ROC_AUC       k = 2: the AUC of p[:, 1] for class 1, ties counted half (the Mann–Whitney statistic);
              k > 2: the mean of the one-vs-rest AUCs of the classes present in y
              (``roc_auc_score(multi_class="ovr", average="macro")``, which is NaN for an absent class)
LOG_LOSS      mean of −ln p[i, y_i], p clipped to [10⁻¹⁵, 1]
RMSE          √(mean over rows of Σ_c (p[i, c] − [y_i = c])²): the root of the multi-class Brier score
============  ========================================================================================
"""

from __future__ import annotations

import math

import numpy as np

from .errors import InvalidDataset
from .onchain import SCORE_SCALE, Metric

LOG_LOSS_CLIP = 1e-15
"""Probabilities are clipped to [LOG_LOSS_CLIP, 1] before the logarithm, so one row costs at most ≈ 34.54 nats."""
ROW_SUM_TOLERANCE = 1e-3
"""How far a row of probabilities may sum from 1 (float32 softmax over many classes drifts by ~k·10⁻⁷)."""
MAX_UNITS = 2**64 - 2
"""The largest score :func:`to_units` returns: 2⁶⁴ − 1 is the leaderboard's "no score" for lower-is-better metrics."""


def score(metric: Metric, probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Score class probabilities against labels with ``metric``.

    Args:
        metric: The competition's metric.
        probabilities: (n, k) float32 or float64, finite, in [0, 1], each row summing to 1 (softmax outputs);
            k ≥ 2 is the schema's number of classes.
        labels: (n,) integers in [0, k).

    Returns:
        The metric's value as a float (in [0, 1] for the higher-is-better metrics, ≥ 0 for the others).

    Raises:
        ValueError: ``probabilities`` or ``labels`` have the wrong type, shape or dtype, or the
            probabilities are not finite, not in [0, 1] or do not sum to 1 per row.
        InvalidDataset: a label is outside [0, k), or (ROC_AUC) fewer than two classes are present.

    Example:
        >>> score(Metric.ACCURACY, np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 0]))
        0.5
    """
    metric = Metric(metric)
    p, y = _validated(probabilities, labels)
    if metric is Metric.ACCURACY:
        return float(np.mean(np.argmax(p, axis=1) == y))
    if metric is Metric.MACRO_F1:
        return _macro_f1(p, y)
    if metric is Metric.ROC_AUC:
        return _roc_auc(p, y)
    if metric is Metric.LOG_LOSS:
        picked = np.clip(p[np.arange(y.size), y], LOG_LOSS_CLIP, 1.0)
        return float(-np.mean(np.log(picked)))
    if metric is Metric.RMSE:
        residual = p.copy()
        residual[np.arange(y.size), y] -= 1.0
        return float(math.sqrt(float(np.mean(np.einsum("ij,ij->i", residual, residual)))))
    raise AssertionError(f"unhandled metric {metric!r}")  # pragma: no cover - Metric(metric) above refuses unknown values


def to_units(metric: Metric, value: float) -> int:
    """Convert a metric value to the on-chain fixed-point integer, in units of 10⁻⁶.

    Rounding is round-half-to-even of the float64 product ``value × 10⁶`` (Python's :func:`round`).
    The result is clamped into [0, 10⁶] for the higher-is-better metrics (all of which lie in [0, 1])
    and into [0, 2⁶⁴ − 2] for the lower-is-better ones: 2⁶⁴ − 1 is the leaderboard's "no score"
    (:data:`~.onchain.NO_SCORE_LOWER_IS_BETTER`) and is never produced.

    Args:
        metric: The metric ``value`` was computed with.
        value: The metric's value; ±inf is clamped like any other out-of-range value.

    Returns:
        The score in units of 10⁻⁶.

    Raises:
        ValueError: ``value`` is NaN.
    """
    metric = Metric(metric)
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"cannot convert a NaN {metric.name} score to units")
    upper = SCORE_SCALE if metric.higher_is_better else MAX_UNITS
    if value <= 0.0:
        return 0
    if value * SCORE_SCALE >= upper:  # also +inf, which round() refuses
        return upper
    return min(max(round(value * SCORE_SCALE), 0), upper)


def _validated(probabilities: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The probabilities as float64 and the labels as int64, after checking shapes, dtypes and values."""
    if not isinstance(probabilities, np.ndarray) or not isinstance(labels, np.ndarray):
        raise ValueError(
            f"probabilities and labels must be numpy arrays, not {type(probabilities).__name__} and {type(labels).__name__}"
        )
    if probabilities.ndim != 2:
        raise ValueError(f"probabilities must be a 2-d (rows, classes) array, not {probabilities.ndim}-d of shape {probabilities.shape}")
    n, k = probabilities.shape
    if n == 0:
        raise ValueError("cannot score zero rows")
    if k < 2:
        raise ValueError(f"probabilities must have at least 2 classes (columns), not {k}")
    if probabilities.dtype not in (np.float32, np.float64):
        raise ValueError(f"probabilities must be float32 or float64, not {probabilities.dtype}")
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) to match the probabilities' {n} rows, not {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers (int64), not {labels.dtype}")
    # The messages name rows and counts, never values: the rows are the private test set's.
    p = probabilities.astype(np.float64, copy=False)
    if not np.isfinite(p).all():
        finite = np.isfinite(p).all(axis=1)
        raise ValueError(f"probabilities must be finite: {int((~finite).sum())} rows are not, the first is row {int(np.argmin(finite))}")
    if float(p.min()) < 0.0 or float(p.max()) > 1.0:
        in_range = ((p >= 0.0) & (p <= 1.0)).all(axis=1)
        raise ValueError(
            f"probabilities must lie in [0, 1]: {int((~in_range).sum())} rows do not, the first is row {int(np.argmin(in_range))}"
        )
    normalised = np.abs(p.sum(axis=1) - 1.0) <= ROW_SUM_TOLERANCE
    if not normalised.all():
        raise ValueError(
            f"each row of probabilities must sum to 1 (±{ROW_SUM_TOLERANCE}): {int((~normalised).sum())} rows do not, "
            f"the first is row {int(np.argmin(normalised))}"
        )
    y = labels.astype(np.int64, copy=False)
    if int(y.min()) < 0 or int(y.max()) >= k:
        valid = (y >= 0) & (y < k)
        raise InvalidDataset(
            f"labels must lie in [0, {k}) for {k} classes: {int((~valid).sum())} do not, the first is row {int(np.argmin(valid))}"
        )
    return p, y


def _macro_f1(p: np.ndarray, y: np.ndarray) -> float:
    """Unweighted mean over the k classes of 2·TP / (2·TP + FP + FN), 0 where the denominator is 0."""
    k = p.shape[1]
    predicted = np.argmax(p, axis=1)
    true_positives = np.bincount(y[predicted == y], minlength=k)
    # 2·TP + FP + FN = (TP + FP) + (TP + FN) = rows predicted as the class + rows labelled with it
    denominator = np.bincount(predicted, minlength=k) + np.bincount(y, minlength=k)
    f1 = np.divide(2.0 * true_positives, denominator, out=np.zeros(k), where=denominator > 0)
    return float(np.mean(f1))


def _roc_auc(p: np.ndarray, y: np.ndarray) -> float:
    """Binary AUC of class 1 (k = 2) or the macro one-vs-rest AUC over the classes present in ``y`` (k > 2)."""
    n, k = p.shape
    counts = np.bincount(y, minlength=k)
    present = np.flatnonzero(counts)
    if present.size < 2:
        raise InvalidDataset(f"ROC AUC needs at least two classes among the labels; all {n} rows are class {int(present[0])}")
    if k == 2:
        return float(_one_vs_rest_auc(p[:, 1][None, :], (y == 1)[None, :])[0])
    scores = np.ascontiguousarray(p[:, present].T)
    positives = present[:, None] == y[None, :]
    return float(np.mean(_one_vs_rest_auc(scores, positives)))


def _one_vs_rest_auc(scores: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """Per row c, the AUC of ``scores[c]`` for the columns where ``positives[c]`` holds, ties counted half.

    The Mann–Whitney form: AUC = (Σ ranks of the positives − n₁(n₁ + 1)/2) / (n₀·n₁), with tied scores
    sharing their average rank (so the order a sort leaves ties in does not matter). The arrays are
    (classes, rows), each class contiguous for the sort; every class must have at least one positive and
    one negative row. The sorted classes are then laid end to end and cut into tie groups (a class's first
    position always starts a group), so one pass finds every group's first and last position; the rank
    sums are kept in integers (twice the ranks) until the final division.
    """
    classes, n = scores.shape
    order = np.argsort(scores, axis=1)
    ordered = np.take_along_axis(scores, order, axis=1)
    new_group = np.empty(ordered.shape, dtype=bool)  # a tie group starts here
    new_group[:, 0] = True
    np.not_equal(ordered[:, 1:], ordered[:, :-1], out=new_group[:, 1:])
    starts = new_group.ravel()
    group = np.cumsum(starts) - 1  # each flat position's tie group
    first = np.flatnonzero(starts)  # each group's first flat position
    last = np.append(first[1:], starts.size) - 1  # ... and its last
    sorted_positives = np.take_along_axis(positives, order, axis=1)
    where = np.flatnonzero(sorted_positives)  # flat positions of the positives, class by class
    g = group[where]
    row_start = (where // n) * n
    twice_rank = first[g] + last[g] - 2 * row_start + 2  # twice the average 1-based rank within the class
    n1 = sorted_positives.sum(axis=1, dtype=np.int64)
    twice_rank_sum = np.add.reduceat(twice_rank, np.searchsorted(where, np.arange(classes) * n))  # no class is empty
    twice_u = twice_rank_sum - n1 * (n1 + 1)
    auc: np.ndarray = twice_u / (2.0 * (n - n1) * n1)
    return auc
