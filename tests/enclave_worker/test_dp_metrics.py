"""Training-set statistics are released with calibrated discrete Laplace noise, or not at all."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from enclave_worker.trusted import dp_metrics
from enclave_worker.trusted.errors import InvalidModelSpec
from enclave_worker.trusted.models import ModelSpec
from tests.conftest import toy_package, toy_spec


def _perfect_model() -> nn.Module:
    """Logistic regression with the toy problem's true separating direction, scaled up."""
    model = nn.Linear(4, 2)
    with torch.no_grad():
        w = torch.tensor([1.5, -1.0, 0.5, 0.0]) * 50
        model.weight.copy_(torch.stack([-w / 2, w / 2]))
        model.bias.zero_()
    return model


def test_with_a_large_epsilon_the_released_values_are_close_to_the_truth() -> None:
    data = toy_package(2000, 5)
    out = dp_metrics.release(_perfect_model(), data, ("class_counts", "train_accuracy", "train_loss"), epsilon=300.0)
    assert out["epsilon"] == 300.0 and out["rows"] == 2000
    m = out["metrics"]
    truth = np.bincount(data.labels, minlength=2)
    assert all(abs(a - b) <= 3 for a, b in zip(m["class_counts"]["value"], truth, strict=True))
    assert m["train_accuracy"]["value"] == pytest.approx(1.0, abs=0.005)
    assert m["train_loss"]["value"] == pytest.approx(0.0, abs=0.05)
    assert all(v["epsilon"] == pytest.approx(100.0) for v in m.values())


def test_noise_has_the_discrete_laplace_variance_of_its_scale() -> None:
    data = toy_package(300, 6)
    truth = np.bincount(data.labels, minlength=2)
    epsilon = 0.5  # one metric: scale 2 per count
    draws = np.array(
        [dp_metrics.release(_perfect_model(), data, ("class_counts",), epsilon)["metrics"]["class_counts"]["value"] for _ in range(600)]
    )
    noise = (draws - truth).ravel()
    t = math.exp(-epsilon)  # discrete Laplace with scale 1/ε: variance 2t / (1 - t)²
    assert abs(noise.mean()) < 0.5
    assert noise.var() == pytest.approx(2 * t / (1 - t) ** 2, rel=0.2)
    assert len(set(noise.tolist())) > 10  # not a constant offset


def test_the_loss_sensitivity_and_scale_follow_the_clip() -> None:
    data = toy_package(500, 7)
    out = dp_metrics.release(_perfect_model(), data, ("train_loss",), epsilon=1.0)
    assert out["metrics"]["train_loss"]["scale"] == pytest.approx(dp_metrics.LOSS_CLIP_NATS / 500)


@pytest.mark.parametrize(
    ("names", "epsilon"),
    [((), 1.0), (("class_counts", "class_counts"), 1.0), (("row_values",), 1.0), (("class_counts",), 0.0), (("class_counts",), math.inf)],
)
def test_bad_requests_are_refused(names: tuple[str, ...], epsilon: float) -> None:
    with pytest.raises(ValueError):
        dp_metrics.release(_perfect_model(), toy_package(10, 1), names, epsilon)  # type: ignore[arg-type]


def test_the_spec_ties_private_metrics_to_their_epsilon() -> None:
    with pytest.raises(ValueError, match="go together"):
        toy_spec(private_metrics=("class_counts",))
    with pytest.raises(ValueError, match="go together"):
        toy_spec(metrics_epsilon=0.5)
    with pytest.raises(ValueError, match="repeated"):
        toy_spec(private_metrics=("class_counts", "class_counts"), metrics_epsilon=0.5)
    with pytest.raises(ValueError, match="at least 20 canaries"):
        toy_spec(audit_canaries=5)
    spec = toy_spec(private_metrics=("train_accuracy",), metrics_epsilon=0.25)
    assert spec.training_epsilon(1_000_000) == 0.75
    with pytest.raises(InvalidModelSpec):
        spec.training_epsilon(250_000)
    # The metrics' share is rounded up to micro-ε, as the receipt counts it.
    assert toy_spec(private_metrics=("train_accuracy",), metrics_epsilon=0.2500001).training_epsilon(1_000_000) == 0.749999
    assert ModelSpec.from_bytes(spec.to_bytes()) == spec
