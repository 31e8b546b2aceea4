"""The consumer's own evaluation of a model: each task's metrics and its trivial baseline, on the
consumer's rows, equal to scikit-learn's and scikit-survival's figures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, r2_score, roc_auc_score, root_mean_squared_error
from sksurv.metrics import concordance_index_censored, integrated_brier_score
from sksurv.util import Surv
from torch import nn

from enclave_worker.trusted import tasks
from enclave_worker.trusted.dataset import DatasetPackage
from enclave_worker.trusted.models import ModelSpec, build_model
from enclave_worker.trusted.training import train_dp
from marketplace import datasets
from marketplace.model_metrics import evaluate, evaluation_times, outputs_of


def _split(package: DatasetPackage) -> tuple[DatasetPackage, DatasetPackage]:
    order = np.random.default_rng(0).permutation(package.rows)
    cut = int(package.rows * 0.8)
    return (DatasetPackage(package.features[order[:cut]], package.labels[order[:cut]], package.schema),
            DatasetPackage(package.features[order[cut:]], package.labels[order[cut:]], package.schema))  # fmt: skip


def _spec(**fields: object) -> ModelSpec:
    return ModelSpec.model_validate({"architecture": "logistic_regression", "epochs": 5, "batch_size": 128,
                                     "learning_rate": 0.05, "max_grad_norm": 1.0, "seed": 0, **fields})  # fmt: skip


def test_classification_metrics_equal_scikit_learns() -> None:
    train, test = _split(datasets.breast_cancer())
    standardised = _spec(input_mean=train.features.mean(0).tolist(), input_scale=train.features.std(0).tolist())
    model = train_dp(standardised, train, epsilon=1.0, delta=1e-5, noise_seed=0).model
    report = evaluate(model, test, reference=train)
    probabilities = outputs_of(model, test)
    assert report["accuracy"] == pytest.approx(accuracy_score(test.labels, probabilities.argmax(1)))
    assert report["roc_auc"] == pytest.approx(roc_auc_score(test.labels, probabilities[:, 1]))
    majority = np.bincount(train.labels).argmax()
    assert report["baseline"]["accuracy"] == pytest.approx(float((test.labels == majority).mean()))
    assert report["accuracy"] > report["baseline"]["accuracy"] + 0.2


def test_regression_metrics_per_target_and_the_mean_baseline() -> None:
    train, test = _split(datasets.actg175_cd_counts())
    model = train_dp(_spec(epochs=30, batch_size=256, learning_rate=0.02), train, epsilon=1.0, delta=1e-5, noise_seed=2).model
    report = evaluate(model, test, reference=train)
    predicted = outputs_of(model, test)
    assert report["rmse"] == pytest.approx(root_mean_squared_error(test.labels, predicted))
    assert report["r2"] == pytest.approx(r2_score(test.labels, predicted))
    assert set(report["rmse_per_target"]) == {"cd420", "cd820"}
    mean = np.broadcast_to(train.labels.mean(0), test.labels.shape)
    assert report["baseline"]["rmse"] == pytest.approx(root_mean_squared_error(test.labels, mean))
    assert report["rmse"] < report["baseline"]["rmse"]


def test_survival_metrics_equal_scikit_survivals() -> None:
    train, test = _split(datasets.flchain())
    model = train_dp(_spec(epochs=20, batch_size=512, learning_rate=0.02), train, epsilon=1.0, delta=1e-5, noise_seed=0).model
    report = evaluate(model, test, reference=train)
    curve = outputs_of(model, test)
    time, event = test.labels[:, 0].astype(float), test.labels[:, 1] > 0.5
    cindex = concordance_index_censored(event, time, 1 - curve[:, -1])[0]
    assert report["concordance_index"] == pytest.approx(cindex)
    times = evaluation_times(test.schema, time)
    assert report["brier_times"] == times.tolist() and len(times) == 14
    columns = [test.schema.time_bins.index(t) for t in times]
    train_y = Surv.from_arrays(train.labels[:, 1] > 0.5, train.labels[:, 0].astype(float))
    test_y = Surv.from_arrays(event, time)
    assert report["integrated_brier_score"] == pytest.approx(integrated_brier_score(train_y, test_y, curve[:, columns], times))
    assert report["integrated_brier_score"] < report["baseline"]["integrated_brier_score"] - 0.02


def test_a_model_with_known_outputs_and_bad_reference_rows() -> None:
    package = datasets.diabetes()
    model = build_model(_spec(), package.schema)
    assert isinstance(model[-1], tasks.TargetScale)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                module.weight.zero_()
                module.bias.zero_()
    report = evaluate(model, package)
    assert np.allclose(outputs_of(model, package), 200.0)  # the center of the declared bounds [0, 400]
    assert report["rmse"] == pytest.approx(float(np.sqrt(((package.labels[:, 0] - 200.0) ** 2).mean())))
    with pytest.raises(ValueError, match="another schema"):
        evaluate(model, package, reference=datasets.actg175_cd_counts())
