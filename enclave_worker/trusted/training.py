"""Differentially private training (DP-SGD through Opacus) of a registered architecture.

Noise is calibrated so that the job's (ε, δ) holds after ``epochs`` epochs of Poisson-sampled
steps at rate ``batch_size / rows``; the ε actually spent, read from the accountant after the last
step, is what the receipt reports. Only the epoch number and ε-so-far are reported as progress:
no loss or accuracy computed on the providers' data leaves the enclave.

Opacus's ``secure_mode`` needs torchcsprng, which is not installable on this platform; noise is
drawn from torch's default generator and a warning says so (see README, "Security notes").
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from opacus import PrivacyEngine
from opacus.accountants.utils import get_noise_multiplier
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from .dataset import DatasetPackage
from .models import ModelSpec, build_model

logger = logging.getLogger(__name__)

RDP_ORDERS: tuple[float, ...] = tuple(
    [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + [64, 80, 96, 128, 160, 192, 256, 384, 512, 1024]
)
"""Explicit Rényi orders for the RDP accountant: Opacus's default grid, extended upwards because
small-ε jobs with strong noise find their optimum above order 63."""

ProgressFn = Callable[[int, int, float], None]
"""Called after each epoch with (epoch, epochs, ε spent so far)."""


@dataclass(frozen=True)
class TrainingResult:
    """A trained model and the privacy accounting that produced it."""

    model: nn.Module
    epsilon_spent: float
    delta: float
    noise_multiplier: float
    sample_rate: float
    steps: int
    epochs: int
    accountant: str


def _accountant_kwargs(accountant: str) -> dict[str, object]:
    return {"alphas": list(RDP_ORDERS)} if accountant == "rdp" else {}


def calibrate_noise(*, epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str) -> float:
    """Smallest noise multiplier (to Opacus's tolerance) that keeps ``steps`` steps within (ε, δ)."""
    return float(
        get_noise_multiplier(
            target_epsilon=epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant=accountant,
            epsilon_tolerance=0.005,
            **_accountant_kwargs(accountant),
        )
    )


@contextmanager
def _opacus_warnings_handled() -> Iterator[None]:
    """Silence Opacus warnings this module already handles: secure RNG (documented as off) and
    the full-backward-hook notice its hooks trigger on the first layer."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Secure RNG turned off.*")
        warnings.filterwarnings("ignore", message=".*Full backward hook is firing.*")
        yield


def _seed(spec: ModelSpec) -> None:
    if spec.seed is not None:
        torch.manual_seed(spec.seed)
        np.random.seed(spec.seed % 2**32)


def _optimizer(spec: ModelSpec, model: nn.Module) -> torch.optim.Optimizer:
    if spec.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=spec.learning_rate)
    return torch.optim.SGD(model.parameters(), lr=spec.learning_rate, momentum=0.9)


def _tensors(data: DatasetPackage) -> TensorDataset:
    return TensorDataset(torch.from_numpy(data.features), torch.from_numpy(data.labels))


def train_dp(
    spec: ModelSpec,
    data: DatasetPackage,
    *,
    epsilon: float,
    delta: float,
    progress: ProgressFn | None = None,
) -> TrainingResult:
    """Train ``spec`` on ``data`` with DP-SGD so that the whole run is (ε, δ)-DP.

    Example:
        >>> result = train_dp(spec, package, epsilon=1.0, delta=1e-5)  # doctest: +SKIP
        >>> result.epsilon_spent <= 1.0
        True
    """
    if not (epsilon > 0 and math.isfinite(epsilon)) or not 0 < delta < 1:
        raise ValueError(f"invalid privacy parameters epsilon={epsilon}, delta={delta}")
    _seed(spec)
    model = build_model(spec, data.schema)
    batch_size = min(spec.batch_size, data.rows)
    loader = DataLoader(_tensors(data), batch_size=batch_size, shuffle=False)
    sample_rate = 1 / len(loader)
    steps = epochs_steps = spec.epochs * len(loader)
    sigma = calibrate_noise(epsilon=epsilon, delta=delta, sample_rate=sample_rate, steps=steps, accountant=spec.accountant)
    logger.warning("Opacus secure_mode is off: torchcsprng is unavailable on this platform")
    with _opacus_warnings_handled():
        engine = PrivacyEngine(accountant=spec.accountant, secure_mode=False)
        model, optimizer, private_loader = engine.make_private(
            module=model,
            optimizer=_optimizer(spec, model),
            data_loader=loader,
            noise_multiplier=sigma,
            max_grad_norm=spec.max_grad_norm,
            poisson_sampling=True,
        )
        loss_fn = nn.CrossEntropyLoss()
        spent = 0.0
        model.train()
        for epoch in range(1, spec.epochs + 1):
            for features, labels in private_loader:
                # Poisson sampling can draw an empty batch: still run forward/backward so that
                # Opacus takes a noise-only step, as the accountant assumes.
                optimizer.zero_grad()
                loss_fn(model(features), labels).backward()
                optimizer.step()
            spent = float(engine.accountant.get_epsilon(delta=delta, **_accountant_kwargs(spec.accountant)))
            logger.info("epoch %d/%d, epsilon spent %.4f", epoch, spec.epochs, spent)
            if progress is not None:
                progress(epoch, spec.epochs, spent)
    trained = model._module if hasattr(model, "_module") else model
    return TrainingResult(
        model=trained.eval(),
        epsilon_spent=spent,
        delta=delta,
        noise_multiplier=sigma,
        sample_rate=sample_rate,
        steps=epochs_steps,
        epochs=spec.epochs,
        accountant=spec.accountant,
    )


def train_non_private(spec: ModelSpec, data: DatasetPackage) -> nn.Module:
    """The same model and hyper-parameters trained without DP (a baseline, never run on private data in the clear outside a demo)."""
    _seed(spec)
    model = build_model(spec, data.schema)
    optimizer = _optimizer(spec, model)
    loader = DataLoader(_tensors(data), batch_size=min(spec.batch_size, data.rows), shuffle=True)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(spec.epochs):
        for features, labels in loader:
            optimizer.zero_grad()
            loss_fn(model(features), labels).backward()
            optimizer.step()
    return model.eval()


def predict(model: nn.Module, features: np.ndarray) -> np.ndarray:
    """Class predictions for float32 features."""
    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))).argmax(dim=1).numpy()
