"""Training-set statistics released with differential privacy, their ε part of the job's ε.

A consumer may ask (``ModelSpec.private_metrics``) for statistics of the providers' data that it
cannot compute itself: the label histogram, the trained model's accuracy and mean loss on the
training rows. Each is an integer aggregate with a known sensitivity under add/remove-one
neighbours (the neighbour relation of the DP-SGD accountant), released through OpenDP's
discrete Laplace mechanism (exact sampling from the operating system's CSPRNG, so none of the
floating-point attacks on textbook Laplace noise apply):

=================  =================================================  ==================
metric             aggregate                                          L1 sensitivity
=================  =================================================  ==================
``class_counts``   rows per label (a histogram)                       1
``train_accuracy`` rows the model classifies correctly                1
``train_loss``     Σ min(cross-entropy, 10 nats), in units of 10⁻³     10,000 units
=================  =================================================  ==================

``ModelSpec.metrics_epsilon`` is split evenly over the requested metrics; by basic composition
the job spends (ε_training + metrics_epsilon, δ), and the receipt reports that sum. Accuracy and
loss are divided by the row count, which is public: it follows from the dataset ciphertext's
size on the blob store.

OpenDP is imported on the first release, not with this module: its prelude brings scikit-learn and
pandas, ~65 MiB resident that every trainer would otherwise carry through jobs that ask for no
private metrics (``docs/enclave-protocol.md``, "Datasets larger than the enclave").
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .dataset import Schema

if TYPE_CHECKING:
    import opendp.prelude as dp

MetricName = Literal["class_counts", "train_accuracy", "train_loss"]
METRICS: tuple[MetricName, ...] = ("class_counts", "train_accuracy", "train_loss")
LOSS_CLIP_NATS = 10.0
LOSS_UNITS_PER_NAT = 1000
_BATCH = 4096


def _discrete_laplace(vector: bool, *, sensitivity: int, epsilon: float) -> dp.Measurement:
    """An OpenDP discrete Laplace measurement whose privacy map gives at most ``epsilon`` at ``sensitivity``."""
    import opendp.prelude as dp  # on first use: see the module's docstring

    dp.enable_features("contrib")
    if vector:
        domain, metric = dp.vector_domain(dp.atom_domain(T=int)), dp.l1_distance(T=int)
    else:
        domain, metric = dp.atom_domain(T=int), dp.absolute_distance(T=int)
    measurement = dp.m.make_laplace(domain, metric, scale=sensitivity / epsilon)
    spent = measurement.map(sensitivity)  # type: ignore[no-untyped-call]  # opendp leaves Measurement.map unannotated
    if spent > epsilon * (1 + 1e-9):
        raise AssertionError(f"OpenDP maps sensitivity {sensitivity} to ε={spent}, above the {epsilon} allotted")
    return measurement


class Rows(Protocol):
    """The providers' rows, in memory (:class:`.dataset.DatasetPackage`) or read block by block
    from the host (:class:`.trainset.ScannedRows`)."""

    @property
    def rows(self) -> int: ...

    @property
    def schema(self) -> Schema: ...

    def blocks(self, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...


def _aggregates(model: nn.Module, data: Rows) -> tuple[np.ndarray, int, int]:
    """(rows per label, correctly classified rows, Σ clipped loss in 10⁻³ nats), computed exactly."""
    counts = np.zeros(data.schema.num_classes, dtype=np.int64)
    correct = 0
    loss_units = 0
    model.eval()
    with torch.no_grad():
        for features, labels in data.blocks(_BATCH):
            counts += np.bincount(labels, minlength=data.schema.num_classes).astype(np.int64)
            x, y = torch.from_numpy(features), torch.from_numpy(labels)
            logits = model(x).double()
            correct += int((logits.argmax(dim=1) == y).sum())
            loss = F.cross_entropy(logits, y, reduction="none").clamp(min=0.0, max=LOSS_CLIP_NATS)
            loss_units += int(torch.floor(loss * LOSS_UNITS_PER_NAT).to(torch.int64).sum())
    return counts, correct, loss_units


def release(model: nn.Module, data: Rows, names: tuple[MetricName, ...], epsilon: float) -> dict[str, Any]:
    """Release ``names`` about ``data`` (the providers' rows) and ``model`` with ``epsilon``-DP in total.

    Returns:
        The metrics document's ``private_metrics`` entry: the ε spent, the mechanism, and per
        metric its value, ε share and noise scale (the Laplace scale in the value's units).

    Raises:
        ValueError: no or unknown or repeated metric names, or ε not positive and finite.
    """
    if not names or len(set(names)) != len(names) or any(n not in METRICS for n in names):
        raise ValueError(f"private metrics must be distinct names among {METRICS}, got {names}")
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise ValueError(f"metrics epsilon must be positive and finite, got {epsilon}")
    share = epsilon / len(names)
    counts, correct, loss_units = _aggregates(model, data)
    rows = data.rows
    released: dict[str, Any] = {}
    for name in names:
        if name == "class_counts":
            noisy_counts = [int(v) for v in _discrete_laplace(True, sensitivity=1, epsilon=share)([int(c) for c in counts])]
            released[name] = {"value": [max(0, v) for v in noisy_counts], "epsilon": share, "scale": 1 / share}
        elif name == "train_accuracy":
            noisy = int(_discrete_laplace(False, sensitivity=1, epsilon=share)(correct))
            released[name] = {"value": min(1.0, max(0.0, noisy / rows)), "epsilon": share, "scale": 1 / share / rows}
        else:
            sensitivity = int(LOSS_CLIP_NATS * LOSS_UNITS_PER_NAT)
            noisy = int(_discrete_laplace(False, sensitivity=sensitivity, epsilon=share)(loss_units))
            value = min(LOSS_CLIP_NATS, max(0.0, noisy / LOSS_UNITS_PER_NAT / rows))
            released[name] = {"value": value, "epsilon": share, "scale": sensitivity / share / LOSS_UNITS_PER_NAT / rows}
    return {
        "epsilon": epsilon,
        "mechanism": "discrete Laplace (OpenDP), add/remove-one neighbours, basic composition with the training's ε",
        "rows": rows,
        "metrics": released,
    }
