"""Differentially private training (DP-SGD) of a registered architecture.

Noise is calibrated so that the job's (ε, δ) holds after ``epochs`` epochs of Poisson-sampled
steps at rate ``batch_size / rows``; the ε actually spent, read from the accountant after the last
step, is what the receipt reports. Only the epoch number and ε-so-far are reported as progress:
no loss or accuracy computed on the providers' data leaves the enclave.

Per-sample clipping runs on the book-keeping engine (:mod:`.dpsgd`) by default, or on Opacus's
grad-sample modes; accounting is Opacus's (RDP or PRV). Opacus's ``secure_mode`` needs torchcsprng,
which is not installable on this platform; noise is drawn from a torch generator and a warning
says so (see README, "Security notes").
"""

from __future__ import annotations

import logging
import math
import secrets
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from . import accounting, dpsgd, runtime
from .accounting import AccountantName
from .dataset import DatasetPackage
from .models import ModelSpec, build_model

logger = logging.getLogger(__name__)

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


def calibrate_noise(*, epsilon: float, delta: float, sample_rate: float, steps: int, accountant: AccountantName) -> float:
    """Smallest noise multiplier (to a tolerance of 0.005 in ε) that keeps ``steps`` steps within (ε, δ)."""
    return accounting.noise_multiplier(
        target_epsilon=epsilon, delta=delta, sample_rate=sample_rate, steps=steps, accountant=accountant
    )


@contextmanager
def _opacus_warnings_handled() -> Iterator[None]:
    """Silence Opacus warnings this module already handles: secure RNG (documented as off) and
    the full-backward-hook notice its hooks trigger on the first layer."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Secure RNG turned off.*")
        warnings.filterwarnings("ignore", message=".*Full backward hook is firing.*")
        yield


def _seed(seed: int | None) -> None:
    if seed is not None:
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)


def _optimizer(spec: ModelSpec, model: nn.Module) -> torch.optim.Optimizer:
    if spec.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=spec.learning_rate)
    return torch.optim.SGD(model.parameters(), lr=spec.learning_rate, momentum=0.9)


def _tensors(data: DatasetPackage) -> TensorDataset:
    return TensorDataset(torch.from_numpy(data.features), torch.from_numpy(data.labels))


DPEngine = Literal["bookkeeping", "opacus-hooks", "opacus-ew", "opacus-ghost"]
"""How per-sample clipping is computed. ``bookkeeping`` (default) is :mod:`.dpsgd`; the Opacus
grad-sample modes are kept for cross-checks and for layers the book-keeping engine lacks."""


def _generator(seed: int | None) -> torch.Generator:
    """A generator seeded with ``seed``, or from the OS when ``None``."""
    return torch.Generator().manual_seed(seed if seed is not None else _fresh_seed())


def _fresh_seed() -> int:
    return secrets.randbits(63)


def _schedule(spec: ModelSpec, rows: int) -> tuple[int, float, int]:
    """(expected batch size, Poisson sample rate, steps per epoch) for ``rows`` rows."""
    batch_size = min(spec.batch_size, rows)
    steps_per_epoch = math.ceil(rows / batch_size)
    return batch_size, 1 / steps_per_epoch, steps_per_epoch


def train_dp(
    spec: ModelSpec,
    data: DatasetPackage,
    *,
    epsilon: float,
    delta: float,
    progress: ProgressFn | None = None,
    engine: DPEngine | None = None,
    noise_seed: int | None = None,
) -> TrainingResult:
    """Train ``spec`` on ``data`` with DP-SGD so that the whole run is (ε, δ)-DP.

    Each epoch is ``ceil(rows / batch_size)`` steps on Poisson-sampled batches (rate
    ``1 / steps per epoch``); the noise multiplier is the smallest that keeps all steps within
    (ε, δ) under the spec's accountant, and the accountant's ε after the last step is reported.

    Args:
        engine: per-sample clipping implementation; ``None`` picks ``bookkeeping`` when the
            model's layers allow it, else Opacus hooks.
        noise_seed: seeds Poisson sampling, DP noise and dropout, for reproducible tests and
            benchmarks only. The enclave never passes it: ``None`` draws a fresh seed from the OS.
            The spec's ``seed`` seeds the model's initialisation and nothing after it; were the
            consumer's seed to fix the noise, the consumer could replay it and no ε would hold.

    Example:
        >>> result = train_dp(spec, package, epsilon=1.0, delta=1e-5)  # doctest: +SKIP
        >>> result.epsilon_spent <= 1.0
        True
    """
    if not (epsilon > 0 and math.isfinite(epsilon)) or not 0 < delta < 1:
        raise ValueError(f"invalid privacy parameters epsilon={epsilon}, delta={delta}")
    _seed(spec.seed)
    runtime.keep_freed_memory()
    model = build_model(spec, data.schema)
    # From here on every random draw is private randomness: reseed torch's global generator too
    # (Opacus's noise and sampler, dropout) so that nothing the consumer chose fixes it.
    dp_seed = noise_seed if noise_seed is not None else _fresh_seed()
    _seed(dp_seed)
    batch_size, sample_rate, steps_per_epoch = _schedule(spec, data.rows)
    steps = spec.epochs * steps_per_epoch
    sigma = calibrate_noise(epsilon=epsilon, delta=delta, sample_rate=sample_rate, steps=steps, accountant=spec.accountant)
    chosen: DPEngine = engine or ("bookkeeping" if dpsgd.supported(model) else "opacus-hooks")
    logger.warning("DP noise uses torch's generator, not a CSPRNG: torchcsprng is unavailable on this platform")
    curve = accounting.EpsilonCurve(sample_rate=sample_rate, noise_multiplier=sigma, delta=delta, accountant=spec.accountant)

    def after_epoch(epoch: int) -> None:
        spent = curve.at(epoch * steps_per_epoch)
        logger.info("epoch %d/%d, epsilon spent %.4f", epoch, spec.epochs, spent)
        if progress is not None:
            progress(epoch, spec.epochs, spent)

    if chosen == "bookkeeping":
        trained = _train_bookkeeping(spec, model, data, sigma, sample_rate, steps_per_epoch, after_epoch, _generator(dp_seed))
    else:
        trained = _train_opacus(spec, model, data, sigma, batch_size, after_epoch, chosen)
    return TrainingResult(
        model=trained.eval(),
        epsilon_spent=curve.at(steps),
        delta=delta,
        noise_multiplier=sigma,
        sample_rate=sample_rate,
        steps=steps,
        epochs=spec.epochs,
        accountant=spec.accountant,
    )


def _train_bookkeeping(
    spec: ModelSpec,
    model: nn.Module,
    data: DatasetPackage,
    sigma: float,
    sample_rate: float,
    steps_per_epoch: int,
    after_epoch: Callable[[int], None],
    gen: torch.Generator,
) -> nn.Module:
    features, labels = torch.from_numpy(data.features), torch.from_numpy(data.labels)
    engine = dpsgd.BookKeepingDPSGD(
        model,
        _optimizer(spec, model),
        max_grad_norm=spec.max_grad_norm,
        noise_multiplier=sigma,
        expected_batch_size=sample_rate * data.rows,
        generator=gen,
    )
    model.train()
    try:
        for epoch in range(1, spec.epochs + 1):
            for picked in dpsgd.poisson_batches(data.rows, sample_rate, steps_per_epoch, gen):
                engine.step(features[picked], labels[picked])
            after_epoch(epoch)
    finally:
        engine.close()
    return model


def _train_opacus(
    spec: ModelSpec,
    model: nn.Module,
    data: DatasetPackage,
    sigma: float,
    batch_size: int,
    after_epoch: Callable[[int], None],
    engine: DPEngine,
) -> nn.Module:
    mode = {"opacus-hooks": "hooks", "opacus-ew": "ew", "opacus-ghost": "ghost"}[engine]
    loader = DataLoader(_tensors(data), batch_size=batch_size, shuffle=False)
    loss_fn: nn.Module = nn.CrossEntropyLoss()
    with _opacus_warnings_handled():
        privacy = PrivacyEngine(accountant=spec.accountant, secure_mode=False)
        made = privacy.make_private(
            module=model,
            optimizer=_optimizer(spec, model),
            data_loader=loader,
            noise_multiplier=sigma,
            max_grad_norm=spec.max_grad_norm,
            poisson_sampling=True,
            grad_sample_mode=mode,
            **({"criterion": loss_fn} if mode == "ghost" else {}),
        )
        if mode == "ghost":
            private_model, optimizer, loss_fn, private_loader = made
        else:
            private_model, optimizer, private_loader = made
        private_model.train()
        for epoch in range(1, spec.epochs + 1):
            for features, labels in private_loader:
                # Poisson sampling can draw an empty batch: still run forward/backward so that
                # Opacus takes a noise-only step, as the accountant assumes.
                optimizer.zero_grad()
                loss_fn(private_model(features), labels).backward()
                optimizer.step()
            after_epoch(epoch)
    return private_model._module if hasattr(private_model, "_module") else private_model


def _shuffled_batches(rows: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    order = torch.randperm(rows, generator=gen)
    return list(order.split(batch_size))


def train_non_private(spec: ModelSpec, data: DatasetPackage) -> nn.Module:
    """The same model and hyper-parameters trained without DP, on shuffled batches taken by indexing (a baseline)."""
    _seed(spec.seed)
    runtime.keep_freed_memory()
    model = build_model(spec, data.schema)
    optimizer = _optimizer(spec, model)
    gen = _generator(spec.seed)
    features, labels = torch.from_numpy(data.features), torch.from_numpy(data.labels)
    batch_size, _, _ = _schedule(spec, data.rows)
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
        return model(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))).argmax(dim=1).numpy()
