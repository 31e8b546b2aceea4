"""How good a trained model is, measured by the consumer on data the consumer holds.

Nothing here touches the providers' rows: the consumer runs its decrypted model on its own
labelled rows (a held-out split it never listed) and compares it with the trivial baseline of the
task, fitted on the consumer's rows too. No ε is spent (docs/privacy.md, "Statistics released
from private data").

==============  ================================================  ===============================================
task            metrics                                           baseline
==============  ================================================  ===============================================
classification  accuracy; ROC AUC (one-vs-rest macro for more     the majority class of ``reference`` (accuracy)
                than two classes, classes present)
regression      RMSE (mean over targets), MAE, R², RMSE per       the mean of each target in ``reference``
                target
survival        concordance index (risk = 1 − S at the last       Kaplan–Meier of ``reference``; its IBS
                interval's end), integrated Brier score over the
                interval ends inside the rows' follow-up
==============  ================================================  ===============================================

``reference`` is the consumer's data the baselines (and, for survival, the censoring distribution
of the Brier score's weights) are estimated from; by default the evaluated rows themselves.

Example:
    >>> model = consumer.fetch_model(job_id)  # doctest: +SKIP
    >>> evaluate(model, my_holdout)  # doctest: +SKIP
    {'task': 'survival', 'rows': 1575, 'concordance_index': 0.79, 'integrated_brier_score': 0.105, ...}
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from enclave_worker.trusted import metrics, tasks
from enclave_worker.trusted import task_metrics as tm
from enclave_worker.trusted.dataset import DatasetPackage, Schema
from enclave_worker.trusted.onchain import Metric

BATCH_ROWS = 4096


def outputs_of(model: nn.Module, data: DatasetPackage) -> np.ndarray:
    """What the model predicts for each row (:func:`~enclave_worker.trusted.tasks.predictions`):
    class probabilities, targets, or the survival curve at the interval ends."""
    model.eval()
    with torch.inference_mode():
        raw = torch.cat([model(x) for x in torch.split(torch.from_numpy(data.features), BATCH_ROWS)])
    return tasks.predictions(data.schema, raw)


def evaluate(model: nn.Module, data: DatasetPackage, *, reference: DatasetPackage | None = None) -> dict[str, Any]:
    """The task's metrics of ``model`` on ``data`` next to the trivial baseline's (module docstring).

    Raises:
        ValueError: ``reference`` has another schema; or the rows cannot give the metric (one
            class only for AUC, no comparable pair for the concordance index, no follow-up time
            inside the intervals for the Brier score) — the message says which.
    """
    reference = reference if reference is not None else data
    if reference.schema != data.schema:
        raise ValueError("the reference rows have another schema than the evaluated rows")
    predicted = outputs_of(model, data)
    return {"task": data.schema.task, "rows": data.rows, **_METRICS[data.schema.task](data, predicted, reference)}


def _classification(data: DatasetPackage, probabilities: np.ndarray, reference: DatasetPackage) -> dict[str, Any]:
    labels = data.labels
    majority = int(np.bincount(reference.labels, minlength=data.schema.num_classes).argmax())
    result: dict[str, Any] = {
        "accuracy": metrics.score(Metric.ACCURACY, probabilities, labels),
        "baseline": {"name": f"majority class ({data.schema.class_names[majority]})", "accuracy": float((labels == majority).mean())},
    }
    if len(np.unique(labels)) > 1:
        result["roc_auc"] = metrics.score(Metric.ROC_AUC, probabilities, labels)
    return result


def _regression(data: DatasetPackage, predicted: np.ndarray, reference: DatasetPackage) -> dict[str, Any]:
    labels = data.labels.astype(np.float64)
    mean = np.broadcast_to(reference.labels.astype(np.float64).mean(axis=0), labels.shape)
    per_target = tm.per_output_rmse(labels, predicted)
    return {
        "rmse": tm.rmse(labels, predicted),
        "mae": tm.mae(labels, predicted),
        "r2": tm.r2(labels, predicted) if data.rows >= 2 else None,
        "rmse_per_target": dict(zip(data.schema.target_names, (float(v) for v in per_target), strict=True)),
        "baseline": {"name": "mean of each target", "rmse": tm.rmse(labels, mean), "mae": tm.mae(labels, mean)},
    }


def evaluation_times(schema: Schema, time: np.ndarray) -> np.ndarray:
    """The interval ends at which a survival model's Brier score is taken on rows with follow-up
    ``time``: those inside ``[min time, max time)`` (the score's weights need follow-up past them)."""
    return np.array([end for end in schema.time_bins if time.min() <= end < time.max()], dtype=np.float64)


def _survival(data: DatasetPackage, curve: np.ndarray, reference: DatasetPackage) -> dict[str, Any]:
    time, event = data.labels[:, 0].astype(np.float64), data.labels[:, 1] > 0.5
    ref_time, ref_event = reference.labels[:, 0].astype(np.float64), reference.labels[:, 1] > 0.5
    times = evaluation_times(data.schema, time)
    result: dict[str, Any] = {"concordance_index": tm.concordance_index(time, event, 1.0 - curve[:, -1])}
    baseline: dict[str, Any] = {"name": "Kaplan–Meier"}
    if len(times) >= 2:
        columns = [data.schema.time_bins.index(float(t)) for t in times]
        km = tm.kaplan_meier_baseline(ref_time, ref_event, times, data.rows)
        result["integrated_brier_score"] = tm.integrated_brier_score(ref_time, ref_event, time, event, curve[:, columns], times)
        result["brier_times"] = [float(t) for t in times]
        baseline["integrated_brier_score"] = tm.integrated_brier_score(ref_time, ref_event, time, event, km, times)
    baseline["concordance_index"] = 0.5  # one curve for every row: every comparable pair is a tie
    result["baseline"] = baseline
    return result


_METRICS = {"classification": _classification, "regression": _regression, "survival": _survival}
