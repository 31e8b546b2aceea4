"""Host-side companions of the enclave's training, run in the caller's own process.

A non-private baseline (:func:`train_non_private`), class predictions (:func:`predict`) and the
one-run empirical privacy audit of a local training run (:func:`run_audit`, Steinke, Nasr &
Jagielski 2023, with :func:`make_canaries` derived from rows one may look at). The CLI, the demo
and notebooks use them on data they hold in the clear. They never run inside an enclave, so they
live outside the measured package: changing them leaves the enclave measurement unchanged. The
audit's statistics and the in-job canaries are the enclave's (:mod:`enclave_worker.trusted.privacy_audit`).

Example:
    >>> from marketplace.datasets import breast_cancer  # doctest: +SKIP
    >>> run_audit(breast_cancer(), epsilon=2.0, seed=1).epsilon_lower_bound <= 2.0  # doctest: +SKIP
    True
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import nn

from enclave_worker.trusted import runtime
from enclave_worker.trusted.dataset import DatasetPackage
from enclave_worker.trusted.models import ModelSpec, build_model
from enclave_worker.trusted.privacy_audit import AuditResult, CanaryPlan, random_canaries
from enclave_worker.trusted.training import make_generator, make_optimizer, schedule, seed_global_generators, train_dp

__all__ = ["AUDIT_DELTA", "audit_spec", "make_canaries", "predict", "run_audit", "train_non_private"]

AUDIT_DELTA = 1e-5
"""δ of the audited claim when the caller gives none (the δ Sterling jobs typically use)."""


def _shuffled_batches(rows: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    order = torch.randperm(rows, generator=gen)
    return list(torch.split(order, batch_size))


def train_non_private(spec: ModelSpec, data: DatasetPackage) -> nn.Module:
    """The same model and hyper-parameters trained without DP, on shuffled batches taken by indexing (a baseline)."""
    seed_global_generators(spec.seed)
    runtime.keep_freed_memory()
    model = build_model(spec, data.schema)
    optimizer = make_optimizer(spec, model)
    gen = make_generator(spec.seed)
    features, labels = torch.from_numpy(data.features), torch.from_numpy(data.labels)
    batch_size, _, _ = schedule(spec, data.rows)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(spec.epochs):
        for picked in _shuffled_batches(data.rows, batch_size, gen):
            optimizer.zero_grad()
            loss_fn(model(features[picked]), labels[picked]).backward()
            optimizer.step()
    return model.eval()


def predict(model: nn.Module, features: np.ndarray) -> np.ndarray:
    """Class predictions for float32 features."""
    with torch.no_grad():
        logits: torch.Tensor = model(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)))
        return logits.argmax(dim=1).numpy()


def make_canaries(base: DatasetPackage, *, count: int, rng: np.random.Generator, noise: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Mislabelled near-copies of base rows: ``x_j + noise · std ⊙ N(0, I)`` with a label other than ``y_j``.

    A model that leaves a canary out predicts roughly ``y_j`` for it (low score); a model that
    memorises it predicts the wrong label it was given (high score). These canaries are derived
    from the base rows, so an audit that uses them is for data one may look at (the CLI's
    public data sets); audits inside a job use :func:`random_canaries`.
    """
    rows = rng.integers(0, base.rows, size=count)
    scale = base.features.std(axis=0, dtype=np.float64)
    features = base.features[rows].astype(np.float64) + noise * scale * rng.normal(size=(count, *base.features.shape[1:]))
    shift = rng.integers(1, base.schema.num_classes, size=count)
    labels = (base.labels[rows] + shift) % base.schema.num_classes
    return features.astype(np.float32), labels.astype(np.int64)



def audit_spec(base: DatasetPackage, *, seed: int) -> ModelSpec:
    """The default audited model: a one-hidden-layer MLP, standardised on the base data, trained long enough to memorise."""
    flat = base.features.reshape(base.rows, -1).astype(np.float64)
    scale = np.where(flat.std(axis=0) > 0, flat.std(axis=0), 1.0)
    return ModelSpec(
        architecture="mlp",
        hidden_sizes=(128,),
        input_mean=tuple(float(v) for v in flat.mean(axis=0)),
        input_scale=tuple(float(v) for v in scale),
        epochs=100,
        batch_size=64,
        learning_rate=0.01,
        optimizer="adam",
        max_grad_norm=1.0,
        seed=seed,
    )



def run_audit(
    base: DatasetPackage,
    *,
    epsilon: float | None,
    delta: float = AUDIT_DELTA,
    canaries: int = 1000,
    guess_included: int | None = None,
    guess_excluded: int | None = None,
    seed: int = 0,
    confidence: float = 0.95,
    spec: ModelSpec | None = None,
    canary_kind: Literal["mislabelled", "random"] = "mislabelled",
) -> AuditResult:
    """Audit one training run: DP-SGD at ``epsilon`` (and ``delta``), or non-private if ``epsilon`` is None.

    Canaries come from :func:`make_canaries`; each is added to ``base`` with probability 1/2
    (seeded by ``seed``, which also seeds training). The guesses are "included" for the
    ``guess_included`` highest :func:`canary_scores` and "excluded" for the ``guess_excluded``
    lowest. The defaults, 0 and m/4, follow what this canary design supports: a mislabelled
    canary that was left out is reliably scored low, whereas a high score is also reached by
    left-out canaries lying near included ones (measured on breast cancer, non-private: the 250
    lowest of 1,000 were all excluded, the 50 highest only ~58% included). Fix the guess counts
    before looking at the scores; choosing them afterwards voids the confidence.

    Example:
        >>> result = run_audit(package, epsilon=2.0, seed=1)  # doctest: +SKIP
        >>> result.epsilon_lower_bound <= 2.0
        True
    """
    if epsilon is not None and not (epsilon > 0 and math.isfinite(epsilon)):
        raise ValueError(f"epsilon must be positive and finite, got {epsilon}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if canaries < 1:
        raise ValueError(f"need at least one canary, got {canaries}")
    k_in = 0 if guess_included is None else guess_included
    k_out = canaries // 4 if guess_excluded is None else guess_excluded
    if k_in < 0 or k_out < 0 or k_in + k_out > canaries:
        raise ValueError(f"guesses ({k_in} included + {k_out} excluded) must be non-negative and at most {canaries}")

    rng = np.random.default_rng(seed)
    model_spec = spec if spec is not None else audit_spec(base, seed=seed)
    if canary_kind == "random":
        features, labels = random_canaries(base.schema, model_spec, count=canaries, rng=rng)
    else:
        features, labels = make_canaries(base, count=canaries, rng=rng)
    plan = CanaryPlan.draw(features, labels, rng)
    training = plan.training_set(base)
    if epsilon is None:
        model = train_non_private(model_spec, training)
    else:
        model = train_dp(model_spec, training, epsilon=epsilon, delta=delta, noise_seed=seed).model
    return plan.evaluate(
        model, epsilon_target=epsilon, delta=delta, guess_included=k_in, guess_excluded=k_out, confidence=confidence, seed=seed
    )
