"""What a model's outputs mean for each task, and the loss DP-SGD trains it with.

=================  ===============================  ==========================================================
task               model outputs (one row)          summed loss over a batch (the per-sample losses DP-SGD clips)
=================  ===============================  ==========================================================
classification     a logit per class                cross-entropy
regression         a prediction per target, in the  squared error (``mse``) or Huber (``huber``, δ = 1) of each
                   target's units                   target, both scaled to [-1, 1] by the declared
                                                    ``target_bounds`` and the label clipped to them first
survival           a hazard logit per time          the person-period logistic-hazard likelihood: for a patient
(discrete time)    interval ``(t_{k−1}, t_k]``      whose time falls in interval ``k``, ``−log(1 − h_j)`` for
                                                    every interval ``j < k`` it survived, plus ``−log h_k`` if
                                                    the event was observed in ``k`` (a censored patient adds
                                                    nothing for ``k``; past the last interval, every interval
                                                    counts as survived), ``h = sigmoid(logit)``
=================  ===============================  ==========================================================

Every loss is a sum over rows of a function of that row alone, so a row's gradient is its own and
DP-SGD's per-sample clipping bounds each row's influence. For survival a row is a patient: the
person-period rows of classical discrete-time survival analysis (one per interval the patient was
at risk) are the terms of that patient's loss here, never separate rows, so one patient is one
privacy unit and Poisson sampling draws patients (docs/privacy.md).

A survival model's curve is ``S(t_k) = Π_{j ≤ k} (1 − h_j)``; its risk score (higher: earlier event
expected) is ``1 − S(t_K)``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .dataset import Schema

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(outputs [b, outputs], labels [b, ...]) → the summed loss`` (a 0-d tensor)."""

REGRESSION_LOSSES = ("mse", "huber")


class TargetScale(nn.Module):
    """Fixed (non-trainable) ``z ↦ center + half_range · z``: a regression model's last module, so the
    network learns targets scaled to [-1, 1] by the declared bounds and predicts in their units.
    Buffers only: part of the released weights, no ε."""

    center: torch.Tensor
    half_range: torch.Tensor

    def __init__(self, center: torch.Tensor, half_range: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("center", center)
        self.register_buffer("half_range", half_range)

    @classmethod
    def for_schema(cls, schema: Schema) -> TargetScale:
        assert schema.target_bounds is not None, "a regression schema declares target bounds"
        bounds = torch.tensor(schema.target_bounds, dtype=torch.float64)
        return cls(((bounds[:, 0] + bounds[:, 1]) / 2).float(), ((bounds[:, 1] - bounds[:, 0]) / 2).float())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.center + self.half_range * z


class ProportionalHazard(nn.Module):
    """The discrete-time proportional-odds head (Cox 1972): ``logit h_k(x) = b_k + w · x`` — one
    baseline per interval and one covariate score shared by all of them (``K + d`` parameters
    instead of the ``K · (d + 1)`` of a separate linear layer per interval, so DP-SGD's noise is
    spread over fewer). Both parts are plain linear layers, the baselines one on a constant input
    of 1, so DP-SGD clips them like any dense layer."""

    def __init__(self, features: int, intervals: int) -> None:
        super().__init__()
        self.score = nn.Linear(features, 1, bias=False)
        self.baseline = nn.Linear(1, intervals, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.score(x) + self.baseline(x.new_ones(x.shape[0], 1))
        return result


def loss_function(schema: Schema, regression_loss: str = "mse") -> LossFn | None:
    """The summed loss of ``schema``'s task; ``None`` for classification (cross-entropy, which the
    DP engine differentiates by hand on dense models).

    Raises:
        ValueError: an unknown regression loss.
    """
    if schema.task == "regression":
        if regression_loss not in REGRESSION_LOSSES:
            raise ValueError(f"unknown regression loss {regression_loss!r} (known: {', '.join(REGRESSION_LOSSES)})")
        assert schema.target_bounds is not None
        bounds = torch.tensor(schema.target_bounds, dtype=torch.float32)
        center, half = (bounds[:, 0] + bounds[:, 1]) / 2, (bounds[:, 1] - bounds[:, 0]) / 2
        low, high = bounds[:, 0], bounds[:, 1]

        def regression(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            predicted = (outputs - center) / half
            target = (torch.maximum(torch.minimum(labels, high), low) - center) / half
            if regression_loss == "huber":
                return F.huber_loss(predicted, target, reduction="sum", delta=1.0)
            return F.mse_loss(predicted, target, reduction="sum")

        return regression
    if schema.task == "survival":
        ends = torch.tensor(schema.time_bins, dtype=torch.float32)

        def survival(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            targets, mask = hazard_targets(ends, labels)
            terms = F.binary_cross_entropy_with_logits(outputs, targets, reduction="none")
            return (terms * mask).sum()

        return survival
    return None


def summed_loss(schema: Schema, outputs: torch.Tensor, labels: torch.Tensor, regression_loss: str = "mse") -> torch.Tensor:
    """The task's loss summed over the rows (cross-entropy for classification)."""
    loss = loss_function(schema, regression_loss)
    return F.cross_entropy(outputs, labels, reduction="sum") if loss is None else loss(outputs, labels)


def hazard_targets(ends: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per patient and interval, the person-period target (1: the event happened in it) and whether
    the interval counts (the patient was at risk through it, or had the event in it).

    Args:
        ends: the interval ends ``t_1 < … < t_K``.
        labels: ``[b, 2]`` = (time, event).
    """
    time, event = labels[:, 0], labels[:, 1]
    interval = torch.searchsorted(ends, time.contiguous(), right=False)  # time ≤ t_k: interval k (0-based)
    columns = torch.arange(len(ends)).unsqueeze(0)
    inside = (interval < len(ends)).unsqueeze(1)
    at = columns == interval.unsqueeze(1)
    survived = columns < interval.unsqueeze(1)
    targets = (at & inside & (event.unsqueeze(1) > 0.5)).to(labels.dtype)
    mask = (survived | (at & inside & (event.unsqueeze(1) > 0.5))).to(labels.dtype)
    return targets, mask


def survival_curve(hazard_logits: torch.Tensor) -> torch.Tensor:
    """``S(t_k) = Π_{j ≤ k} (1 − sigmoid(logit_j))`` per row, ``[b, K]``, computed in log space."""
    return torch.exp(torch.cumsum(F.logsigmoid(-hazard_logits), dim=1))


def predictions(schema: Schema, outputs: torch.Tensor) -> np.ndarray:
    """What a consumer reads from the outputs: class probabilities (classification), the targets
    (regression), the survival curve at the interval ends (survival)."""
    with torch.no_grad():
        if schema.task == "classification":
            return torch.softmax(outputs.double(), dim=1).numpy()
        if schema.task == "survival":
            return survival_curve(outputs.double()).numpy()
        return outputs.double().numpy()
