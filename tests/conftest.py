"""Shared fixtures: a complete local Sterling on the embedded chain, and small datasets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from enclave_worker.trusted.dataset import DatasetPackage, Schema
from enclave_worker.trusted.models import ModelSpec
from marketplace import chain as chain_mod
from marketplace.contracts import Terms, delta_units, epsilon_units
from sterling.localnet import LocalNet, bring_up

TOY_SCHEMA = Schema(
    task="classification",
    feature_names=("x0", "x1", "x2", "x3"),
    feature_shape=(4,),
    class_names=("neg", "pos"),
)


def toy_package(rows: int, seed: int) -> DatasetPackage:
    """A linearly separable 4-feature problem, so tiny DP models still learn it."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(rows, 4)).astype(np.float32)
    labels = (features @ np.array([1.5, -1.0, 0.5, 0.0], dtype=np.float32) > 0).astype(np.int64)
    return DatasetPackage(features=features, labels=labels, schema=TOY_SCHEMA)


def toy_spec(**overrides: object) -> ModelSpec:
    fields: dict[str, object] = {
        "architecture": "logistic_regression",
        "epochs": 3,
        "batch_size": 32,
        "learning_rate": 0.1,
        "max_grad_norm": 1.0,
        "seed": 0,
    }
    fields.update(overrides)
    return ModelSpec.model_validate(fields)


def toy_terms(*, price: int = 10**17, max_epsilon: float = 2.0, total: float = 10.0) -> Terms:
    return Terms(
        price_per_job=price,  # type: ignore[arg-type]
        max_epsilon_per_job=epsilon_units(max_epsilon),
        total_epsilon_budget=epsilon_units(total),
        max_delta=delta_units(1e-4),
    )


@pytest.fixture(scope="session")
def localnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNet]:
    """One embedded chain with deployed contracts and registered enclaves, shared by a session.

    Tests create their own datasets and jobs (ids never collide) and must not move chain time.
    """
    net = bring_up(chain_mod.embedded(), tmp_path_factory.mktemp("localnet"))
    yield net
    net.close()


@pytest.fixture(scope="function")
def fresh_localnet(tmp_path: Path) -> Iterator[LocalNet]:
    """A private local deployment for tests that move chain time or change governance state."""
    net = bring_up(chain_mod.embedded(), tmp_path)
    yield net
    net.close()
