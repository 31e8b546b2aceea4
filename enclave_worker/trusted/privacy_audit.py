"""Empirical privacy auditing with one training run (Steinke, Nasr & Jagielski, NeurIPS 2023).

The audit inserts ``m`` canaries into a training set, each independently with probability 1/2,
trains once, scores every canary on the trained model and guesses "included" for the ``k+``
highest scores and "excluded" for the ``k-`` lowest (abstaining on the rest). If the training
is (ε, δ)-DP with respect to each canary, the number of correct guesses is stochastically
dominated by what (ε, δ)-randomised response achieves, so many correct guesses reject small ε:
:func:`epsilon_lower_bound` returns the largest ε rejected at the given confidence.

The result is a *lower* bound that holds with the stated confidence over the audit's coin
flips: a bound above the accountant's ε means the implementation or its analysis is wrong; a
bound below it proves nothing about the training's true privacy (the canaries and the scoring
may simply be weak). Pure numpy and math (no scipy), so the enclave's dependencies stay as they are.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from .dataset import DatasetPackage, Schema
from .models import ModelSpec


def _check_counts(canaries: int, guesses: int, correct: int, delta: float) -> None:
    if not 0 <= correct <= guesses <= canaries:
        raise ValueError(f"need 0 <= correct <= guesses <= canaries, got {correct}, {guesses}, {canaries}")
    if not 0 <= delta <= 1:
        raise ValueError(f"delta must be in [0, 1], got {delta}")


def _binomial_pmf(trials: int, log_p: float, log_not_p: float) -> np.ndarray:
    """P[Binomial(trials, p) = k] for k = 0..trials, from log-space terms (no scipy)."""
    k = np.arange(trials + 1, dtype=np.float64)
    log_choose = np.array([math.lgamma(trials + 1) - math.lgamma(i + 1) - math.lgamma(trials - i + 1) for i in range(trials + 1)])
    return np.exp(log_choose + k * log_p + (trials - k) * log_not_p)


def p_value(*, canaries: int, guesses: int, correct: int, epsilon: float, delta: float) -> float:
    """Probability of at least ``correct`` right guesses out of ``guesses`` if the training is (ε, δ)-DP.

    Steinke, Nasr & Jagielski 2023, main theorem and its Appendix D code: with
    ``q = e^ε / (1 + e^ε)`` (the accuracy of ε-DP randomised response), ``β = P[Binomial(r, q) ≥ v]``
    and ``α = max_{1≤i≤v} P[v - i ≤ Binomial(r, q) < v] / i``, the p-value is
    ``min(1, β + α · δ · 2m)`` for ``m`` canaries, ``r`` guesses and ``v`` correct guesses.
    """
    _check_counts(canaries, guesses, correct, delta)
    if not epsilon >= 0 or not math.isfinite(epsilon):
        raise ValueError(f"epsilon must be non-negative and finite, got {epsilon}")
    if correct == 0:
        return 1.0
    # log q and log(1 - q) for q = 1 / (1 + e^-ε), stable for large ε.
    log_q = -math.log1p(math.exp(-epsilon))
    pmf = _binomial_pmf(guesses, log_q, -epsilon + log_q)
    beta = float(pmf[correct:].sum())
    alpha = 0.0
    if delta > 0:
        below = np.cumsum(pmf[correct - 1 :: -1])  # P[v - i <= B < v] for i = 1..v
        alpha = float(np.max(below / np.arange(1, correct + 1)))
    return min(1.0, beta + alpha * delta * 2 * canaries)


def epsilon_lower_bound(*, canaries: int, guesses: int, correct: int, delta: float, confidence: float = 0.95) -> float:
    """The largest ε such that (ε, δ)-DP is rejected at ``confidence`` by ``correct`` of ``guesses`` right.

    That is the largest ε with ``p_value(ε) < 1 - confidence`` (the p-value grows with ε), found
    by bisection and rounded down, as in the paper's ``get_eps_audit``. Zero when even ε = 0 is
    not rejected, e.g. whenever ``correct <= guesses / 2``.

    Args:
        canaries: m, the number of canaries (each included with probability 1/2).
        guesses: r, the guesses made (canaries not abstained on).
        correct: v, the correct guesses.
        delta: δ of the (ε, δ)-DP claim being tested (0 for pure DP).
        confidence: probability, over the canaries' coin flips, that the bound is valid.

    Example:
        >>> round(epsilon_lower_bound(canaries=1000, guesses=100, correct=100, delta=0.0), 3)
        3.493
    """
    _check_counts(canaries, guesses, correct, delta)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    threshold = 1 - confidence

    def rejected(eps: float) -> bool:
        return p_value(canaries=canaries, guesses=guesses, correct=correct, epsilon=eps, delta=delta) < threshold

    if not rejected(0.0):
        return 0.0
    low, high = 0.0, 1.0
    while rejected(high):  # terminates: as ε grows, β → P[Binomial(r, 1) ≥ v] = 1
        low, high = high, 2 * high
    for _ in range(50):
        mid = (low + high) / 2
        if rejected(mid):
            low = mid
        else:
            high = mid
    return low


@dataclass(frozen=True)
class AuditResult:
    """The outcome of one audit run; ``epsilon_target`` is None for the non-private baseline."""

    epsilon_lower_bound: float
    confidence: float
    canaries: int
    guesses: int
    correct: int
    epsilon_target: float | None
    delta: float
    included: int
    guessed_included: int
    guessed_excluded: int
    seed: int | None

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field."""
        return asdict(self)


def random_canaries(schema: Schema, spec: ModelSpec, *, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Canaries that depend on no data row: Gaussian inputs with uniformly random labels.

    Inputs are ``input_mean + input_scale · N(0, I)`` in the consumer's standardisation when the
    spec has one (so they land where the model's inputs live), else ``N(0, I)``. When the schema
    declares feature bounds, a bounded feature is drawn uniformly inside its bounds when the spec
    has no standardisation (the model scales that box to [-1, 1]), and clipped to its bounds
    otherwise, so a canary is what the model's :class:`~.models.ClipScale` lets through. Because
    nothing about them comes from the providers' rows (the bounds are the provider's public
    declaration), the audit computed from them is post-processing of the DP-trained model and
    costs no ε.
    """
    shape = tuple(schema.feature_shape)
    z = rng.normal(size=(count, *shape))
    standardised = spec.input_mean is not None and spec.input_scale is not None
    if spec.input_mean is not None and spec.input_scale is not None:
        width = int(np.prod(shape))
        stats_shape = shape if len(spec.input_mean) == width else (-1, *([1] * (len(shape) - 1)))
        mean = np.asarray(spec.input_mean, dtype=np.float64).reshape(stats_shape)
        scale = np.asarray(spec.input_scale, dtype=np.float64).reshape(stats_shape)
        z = mean + scale * z
    if schema.feature_bounds is not None:
        bounded = np.array([b is not None for b in schema.feature_bounds]).reshape(shape)
        low = np.array([b[0] if b is not None else 0.0 for b in schema.feature_bounds], dtype=np.float64).reshape(shape)
        high = np.array([b[1] if b is not None else 0.0 for b in schema.feature_bounds], dtype=np.float64).reshape(shape)
        inside = np.clip(z, low, high) if standardised else rng.uniform(low, high, size=z.shape)
        z = np.where(bounded, inside, z)
    labels = rng.integers(0, schema.num_classes, size=count)
    return z.astype(np.float32), labels.astype(np.int64)


@dataclass(frozen=True)
class CanaryPlan:
    """Canaries and the secret coin flips that decide which of them are trained on."""

    features: np.ndarray
    labels: np.ndarray
    included: np.ndarray

    @classmethod
    def draw(cls, features: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> CanaryPlan:
        """Include each canary independently with probability 1/2."""
        return cls(features, labels, rng.random(len(labels)) < 0.5)

    def training_set(self, base: DatasetPackage) -> DatasetPackage:
        """``base`` with the included canaries appended."""
        return DatasetPackage(
            features=np.concatenate([base.features, self.features[self.included]]),
            labels=np.concatenate([base.labels, self.labels[self.included]]),
            schema=base.schema,
        )

    def evaluate(
        self,
        model: torch.nn.Module,
        *,
        epsilon_target: float | None,
        delta: float,
        guess_included: int,
        guess_excluded: int,
        confidence: float = 0.95,
        seed: int | None = None,
    ) -> AuditResult:
        """Guess "included" for the ``guess_included`` highest scores and "excluded" for the
        ``guess_excluded`` lowest, count the correct guesses and bound ε from below."""
        canaries = len(self.labels)
        if guess_included < 0 or guess_excluded < 0 or guess_included + guess_excluded > canaries:
            raise ValueError(f"guesses ({guess_included} included + {guess_excluded} excluded) must be non-negative and at most {canaries}")
        model.eval()
        order = np.argsort(-canary_scores(model, self.features, self.labels), kind="stable")
        correct = int(self.included[order[:guess_included]].sum()) + int((~self.included[order[canaries - guess_excluded :]]).sum())
        guesses = guess_included + guess_excluded
        bound = epsilon_lower_bound(canaries=canaries, guesses=guesses, correct=correct, delta=delta, confidence=confidence)
        return AuditResult(
            epsilon_lower_bound=bound,
            confidence=confidence,
            canaries=canaries,
            guesses=guesses,
            correct=correct,
            epsilon_target=epsilon_target,
            delta=delta,
            included=int(self.included.sum()),
            guessed_included=guess_included,
            guessed_excluded=guess_excluded,
            seed=seed,
        )


def canary_scores(model: torch.nn.Module, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Log-odds of each canary's own label against the best other label (higher: more likely trained on)."""
    with torch.no_grad():
        log_probs = torch.log_softmax(model(torch.from_numpy(features)).double(), dim=1)
    own = log_probs[torch.arange(len(labels)), torch.from_numpy(labels)]
    others = log_probs.clone()
    others[torch.arange(len(labels)), torch.from_numpy(labels)] = -math.inf
    return (own - others.max(dim=1).values).numpy()
