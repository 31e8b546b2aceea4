"""Privacy accounting for DP-SGD with Poisson sampling: pure functions over Opacus's analyses.

``epsilon`` gives the ε of ``steps`` steps of the sampled Gaussian mechanism at sample rate ``q``
and noise multiplier ``σ`` for a given δ; ``noise_multiplier`` inverts it (the smallest σ, to a
tolerance, whose ε does not exceed the target). Two accountants: ``rdp`` (Rényi DP, Mironov et
al. 2019, over the explicit orders below) and ``prv`` (privacy random variables, Gopi et al.
2021). State (which steps ran) is kept by the caller; :class:`EpsilonCurve` evaluates ε along a
run of identical steps without recomputing the per-step analysis.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from types import ModuleType
from typing import Literal

import numpy as np


def _opacus_rdp_analysis() -> ModuleType:
    """Opacus's RDP analysis (``opacus/accountants/analysis/rdp.py``: NumPy and SciPy's special
    functions), loaded from its file without running the ``opacus`` package's ``__init__``.

    Importing any part of Opacus the usual way runs ``opacus/__init__``, which imports every
    accountant, Opacus's grad-sample machinery, and SciPy's statistics and signal processing for
    the Gaussian and PRV accountants: ~52 MiB more resident in a trainer enclave that uses none of
    them for an RDP job (docs/enclave-protocol.md, "Datasets larger than the enclave"). The PRV
    accountant and Opacus's DP-SGD modes still import Opacus whole, when a job asks for them.
    """
    package = importlib.util.find_spec("opacus")  # finds the package without importing it
    if package is None or not package.submodule_search_locations:
        raise ImportError("Opacus is not installed")
    folder = package.submodule_search_locations[0]
    spec = importlib.util.spec_from_file_location("_sterling_opacus_rdp", f"{folder}/accountants/analysis/rdp.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"Opacus's RDP analysis is not at {folder}/accountants/analysis/rdp.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


rdp_analysis = _opacus_rdp_analysis()

AccountantName = Literal["rdp", "prv"]

RDP_ORDERS: tuple[float, ...] = tuple(
    [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + [64, 80, 96, 128, 160, 192, 256, 384, 512, 1024]
)
"""Explicit Rényi orders: Opacus's default grid, extended upwards because small-ε jobs with strong
noise find their optimum above order 63."""


def _check(sample_rate: float, noise_multiplier: float, steps: int, delta: float) -> None:
    if not 0 < sample_rate <= 1:
        raise ValueError(f"sample rate must be in (0, 1], got {sample_rate}")
    if not noise_multiplier > 0 or not math.isfinite(noise_multiplier):
        raise ValueError(f"noise multiplier must be positive and finite, got {noise_multiplier}")
    if steps < 0:
        raise ValueError(f"steps must be non-negative, got {steps}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")


def epsilon(*, sample_rate: float, noise_multiplier: float, steps: int, delta: float, accountant: AccountantName = "rdp") -> float:
    """ε after ``steps`` Poisson-sampled Gaussian steps (0 for no steps).

    Example:
        >>> round(epsilon(sample_rate=256 / 60000, noise_multiplier=1.1, steps=60 * 234, delta=1e-5), 2)  # doctest: +SKIP
        2.92
    """
    _check(sample_rate, noise_multiplier, steps, delta)
    if steps == 0:
        return 0.0
    return EpsilonCurve(sample_rate=sample_rate, noise_multiplier=noise_multiplier, delta=delta, accountant=accountant).at(steps)


def noise_multiplier(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: AccountantName = "rdp",
    tolerance: float = 0.005,
) -> float:
    """The smallest noise multiplier (within ``tolerance`` in ε) that keeps ``steps`` steps within (ε, δ).

    Raises:
        ValueError: invalid parameters, or a target so small that no σ ≤ 10⁶ reaches it.
    """
    if not target_epsilon > 0 or not math.isfinite(target_epsilon):
        raise ValueError(f"target epsilon must be positive and finite, got {target_epsilon}")
    _check(sample_rate, 1.0, steps, delta)
    if steps < 1:
        raise ValueError("steps must be at least 1")

    def epsilon_at(sigma: float) -> float:
        return EpsilonCurve(sample_rate=sample_rate, noise_multiplier=sigma, delta=delta, accountant=accountant).at(steps)

    return _search_sigma(epsilon_at, target_epsilon=target_epsilon, tolerance=tolerance)


MAX_SIGMA = 1e6
"""The largest noise multiplier :func:`noise_multiplier` tries (Opacus's ``MAX_SIGMA``)."""


def _search_sigma(epsilon_at: Callable[[float], float], *, target_epsilon: float, tolerance: float) -> float:
    """Opacus's ``get_noise_multiplier`` search (``opacus/accountants/utils.py``), step for step,
    over an ε function of σ: double σ from 10 until ε is within the target, then bisect until the
    upper end's ε is within ``tolerance`` of it. Its result is Opacus's to the last bit (a test
    compares them); it is restated here only so that an RDP job need not import Opacus whole.
    """
    eps_high, sigma_low, sigma_high = math.inf, 0.0, 10.0
    while eps_high > target_epsilon:
        sigma_high = 2 * sigma_high
        eps_high = epsilon_at(sigma_high)
        if sigma_high > MAX_SIGMA:
            raise ValueError("The privacy budget is too low.")
    while target_epsilon - eps_high > tolerance:
        sigma = (sigma_low + sigma_high) / 2
        eps = epsilon_at(sigma)
        if eps < target_epsilon:
            sigma_high, eps_high = sigma, eps
        else:
            sigma_low = sigma
    return float(sigma_high)


class EpsilonCurve:
    """ε as a function of the number of identical steps, computed cheaply for progress reports."""

    def __init__(self, *, sample_rate: float, noise_multiplier: float, delta: float, accountant: AccountantName = "rdp") -> None:
        _check(sample_rate, noise_multiplier, 0, delta)
        self.sample_rate, self.noise_multiplier, self.delta, self.accountant = sample_rate, noise_multiplier, delta, accountant
        if accountant == "rdp":
            self._per_step = np.asarray(
                rdp_analysis.compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=list(RDP_ORDERS))
            )
        elif accountant != "prv":
            raise ValueError(f"unknown accountant {accountant!r} (rdp or prv)")

    def at(self, steps: int) -> float:
        """ε after ``steps`` steps."""
        if steps <= 0:
            return 0.0
        if self.accountant == "rdp":
            eps, _ = rdp_analysis.get_privacy_spent(orders=list(RDP_ORDERS), rdp=self._per_step * steps, delta=self.delta)
            return float(eps)
        from opacus.accountants import PRVAccountant  # imports Opacus whole: only for PRV jobs

        prv = PRVAccountant()
        prv.history = [(self.noise_multiplier, self.sample_rate, steps)]
        return float(prv.get_epsilon(delta=self.delta))
