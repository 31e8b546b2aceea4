"""Differentially private training (DP-SGD) of a registered architecture.

Noise is calibrated so that the job's (ε, δ) holds after ``epochs`` epochs of Poisson-sampled
steps at rate ``batch_size / rows``; the ε actually spent, read from the accountant after the last
step, is what the receipt reports. Only the epoch number and ε-so-far are reported as progress:
no loss or accuracy computed on the providers' data leaves the enclave.

Per-sample clipping runs on the book-keeping engine (:mod:`.dpsgd`) by default, or on Opacus's
grad-sample modes; accounting is Opacus's (RDP or PRV). The book-keeping engine draws its noise and
Poisson samples from a ChaCha20 CSPRNG with a fresh key per run (:mod:`.csprng`). Opacus accepts
only a ``torch.Generator`` (its ``secure_mode`` needs torchcsprng, not installable here), so its
modes, kept for cross-checks, draw from torch's Mersenne Twister, and a warning says so
(docs/privacy.md, "Randomness").
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
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from . import accounting, dpsgd, runtime, tasks
from .accounting import AccountantName
from .csprng import ChaCha20Generator
from .dataset import DatasetPackage
from .models import ModelSpec, build_model
from .trainset import InMemoryRows, ScannedRows, TrainingRows

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


def seed_global_generators(seed: int | None) -> None:
    """Seed torch's and numpy's global generators (nothing when ``seed`` is None)."""
    if seed is not None:
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)


def make_optimizer(spec: ModelSpec, model: nn.Module) -> torch.optim.Optimizer:
    """The spec's optimizer over ``model``'s parameters."""
    if spec.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=spec.learning_rate)
    return torch.optim.SGD(model.parameters(), lr=spec.learning_rate, momentum=0.9)


def _tensors(data: DatasetPackage) -> TensorDataset:
    return TensorDataset(torch.from_numpy(data.features), torch.from_numpy(data.labels))


DPEngine = Literal["bookkeeping", "opacus-hooks", "opacus-ew", "opacus-ghost"]
"""How per-sample clipping is computed. ``bookkeeping`` (default) is :mod:`.dpsgd`; the Opacus
grad-sample modes are kept for cross-checks and for layers the book-keeping engine lacks."""


def make_generator(seed: int | None) -> torch.Generator:
    """A torch generator seeded with ``seed``, or from the OS when ``None`` (non-private training only)."""
    return torch.Generator().manual_seed(seed if seed is not None else _fresh_seed())


NOISE_STREAM, SAMPLING_STREAM = 1, 2
"""Substreams of a run's CSPRNG key: the DP noise and the Poisson samples."""


def make_dp_randomness(noise_seed: int | None) -> tuple[ChaCha20Generator, ChaCha20Generator]:
    """The (noise, sampling) CSPRNG streams of one run: a fresh 256-bit key from the OS, or, for
    tests and benchmarks only, a key derived from ``noise_seed`` (:meth:`ChaCha20Generator.from_seed`)."""
    rng = ChaCha20Generator.from_seed(noise_seed) if noise_seed is not None else ChaCha20Generator.from_entropy()
    return rng.substream(NOISE_STREAM), rng.substream(SAMPLING_STREAM)


def _fresh_seed() -> int:
    return secrets.randbits(63)


def schedule(spec: ModelSpec, rows: int) -> tuple[int, float, int]:
    """(expected batch size, Poisson sample rate, steps per epoch) for ``rows`` rows."""
    batch_size = min(spec.batch_size, rows)
    steps_per_epoch = math.ceil(rows / batch_size)
    return batch_size, 1 / steps_per_epoch, steps_per_epoch


def train_dp(
    spec: ModelSpec,
    data: DatasetPackage | ScannedRows,
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
        data: the rows, in memory, or scanned from the host window by window (:mod:`.trainset`);
            the same randomness gives the same model either way. Scanned rows need the
            book-keeping engine.
        engine: per-sample clipping implementation; ``None`` picks ``bookkeeping`` when the
            model's layers allow it, else Opacus hooks.
        noise_seed: fixes Poisson sampling, DP noise and dropout, for reproducible tests and
            benchmarks only: the CSPRNG's key is derived from it, and torch's global generator
            seeded with it. The enclave never passes it: ``None`` draws a fresh key and seed from
            the OS. The spec's ``seed`` seeds the model's initialisation and nothing after it; were
            the consumer's seed to fix the noise, the consumer could replay it and no ε would hold.

    Example:
        >>> result = train_dp(spec, package, epsilon=1.0, delta=1e-5)  # doctest: +SKIP
        >>> result.epsilon_spent <= 1.0
        True
    """
    if not (epsilon > 0 and math.isfinite(epsilon)) or not 0 < delta < 1:
        raise ValueError(f"invalid privacy parameters epsilon={epsilon}, delta={delta}")
    seed_global_generators(spec.seed)
    runtime.keep_freed_memory()
    rows: TrainingRows = data if isinstance(data, ScannedRows) else InMemoryRows(data)
    model = build_model(spec, rows.schema)
    # From here on every random draw is private randomness: reseed torch's global generator too
    # (Opacus's noise and sampler, dropout) so that nothing the consumer chose fixes it.
    dp_seed = noise_seed if noise_seed is not None else _fresh_seed()
    seed_global_generators(dp_seed)
    batch_size, sample_rate, steps_per_epoch = schedule(spec, rows.rows)
    steps = spec.epochs * steps_per_epoch
    sigma = calibrate_noise(epsilon=epsilon, delta=delta, sample_rate=sample_rate, steps=steps, accountant=spec.accountant)
    chosen: DPEngine = engine or ("bookkeeping" if dpsgd.supported(model) else "opacus-hooks")
    if chosen != "bookkeeping" and rows.schema.task != "classification":
        raise ValueError(f"the {chosen} engine trains classification only; {rows.schema.task} trains on the book-keeping engine")
    if chosen != "bookkeeping" and not isinstance(data, DatasetPackage):
        raise ValueError(f"the {chosen} engine needs the rows in memory; scanned rows train on the book-keeping engine")
    if chosen != "bookkeeping":
        logger.warning(
            "DP engine %s draws noise and Poisson samples from torch's Mersenne Twister, not the CSPRNG "
            "(Opacus accepts only a torch.Generator)", chosen,
        )
    curve = accounting.EpsilonCurve(sample_rate=sample_rate, noise_multiplier=sigma, delta=delta, accountant=spec.accountant)

    def after_epoch(epoch: int) -> None:
        spent = curve.at(epoch * steps_per_epoch)
        logger.info("epoch %d/%d, epsilon spent %.4f", epoch, spec.epochs, spent)
        if progress is not None:
            progress(epoch, spec.epochs, spent)

    if chosen == "bookkeeping":
        trained = _train_bookkeeping(spec, model, rows, sigma, sample_rate, steps_per_epoch, after_epoch, make_dp_randomness(noise_seed))
    else:
        assert isinstance(data, DatasetPackage)
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
    data: TrainingRows,
    sigma: float,
    sample_rate: float,
    steps_per_epoch: int,
    after_epoch: Callable[[int], None],
    randomness: tuple[ChaCha20Generator, ChaCha20Generator],
) -> nn.Module:
    noise, sampling = randomness
    engine = dpsgd.BookKeepingDPSGD(
        model,
        make_optimizer(spec, model),
        max_grad_norm=spec.max_grad_norm,
        noise_multiplier=sigma,
        expected_batch_size=sample_rate * data.rows,
        generator=noise,
        loss=tasks.loss_function(data.schema, spec.regression_loss),
    )
    model.train()
    try:
        for epoch in range(1, spec.epochs + 1):
            # The one sampler, whatever holds the rows: in memory, or scanned in a fixed order (trainset).
            for features, labels in data.batches(dpsgd.poisson_batches(data.rows, sample_rate, steps_per_epoch, sampling)):
                engine.step(features, labels)
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
    from opacus import PrivacyEngine  # Opacus whole (with SciPy's statistics): only for its modes

    with _opacus_warnings_handled():
        privacy = PrivacyEngine(accountant=spec.accountant, secure_mode=False)
        made = privacy.make_private(
            module=model,
            optimizer=make_optimizer(spec, model),
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
    # Opacus is untyped: the GradSampleModule wrapper and the module it wraps are both nn.Modules.
    trained: nn.Module = private_model._module if hasattr(private_model, "_module") else private_model
    return trained

