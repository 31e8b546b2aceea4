"""Canonical datasets, the model registry and spec, and DP training's accounting."""

from __future__ import annotations

import json

import numpy as np
import pytest

from enclave_worker.trusted.dataset import DatasetPackage, Schema, join
from enclave_worker.trusted.errors import (
    InvalidDataset,
    InvalidModelSpec,
    SchemaMismatch,
)
from enclave_worker.trusted.models import ModelSpec, build_model
from enclave_worker.trusted.training import calibrate_noise, train_dp
from marketplace.local_training import predict
from tests.conftest import TOY_SCHEMA, toy_package, toy_spec


def test_package_round_trips_through_safetensors() -> None:
    pkg = toy_package(50, 1)
    back = DatasetPackage.from_bytes(pkg.to_bytes())
    assert back.schema == pkg.schema
    np.testing.assert_array_equal(back.features, pkg.features)
    np.testing.assert_array_equal(back.labels, pkg.labels)
    assert pkg.schema.hash() == back.schema.hash()


@pytest.mark.parametrize(
    ("features", "labels", "match"),
    [
        (np.zeros((3, 4), np.float64), np.zeros(3, np.int64), "float32"),
        (np.zeros((3, 4), np.float32), np.zeros(4, np.int64), "3 feature rows but 4 labels"),
        (np.zeros((3, 5), np.float32), np.zeros(3, np.int64), "does not match schema"),
        (np.zeros((3, 4), np.float32), np.array([0, 1, 2], np.int64), "labels outside"),
        (np.full((3, 4), np.nan, np.float32), np.zeros(3, np.int64), "NaN"),
        (np.zeros((0, 4), np.float32), np.zeros(0, np.int64), "no rows"),
    ],
)
def test_invalid_packages_are_refused(features: np.ndarray, labels: np.ndarray, match: str) -> None:
    with pytest.raises(InvalidDataset, match=match):
        DatasetPackage(features=features, labels=labels, schema=TOY_SCHEMA)


def test_garbage_bytes_are_an_invalid_dataset() -> None:
    for junk in (b"", b"\xff" * 8, b"\x02\x00\x00\x00\x00\x00\x00\x00{}", b"\x10\x00\x00\x00\x00\x00\x00\x00" + b'{"a":1}' + b" " * 9):
        with pytest.raises(InvalidDataset):
            DatasetPackage.from_bytes(junk)


def test_join_requires_equal_schemas() -> None:
    a, b = toy_package(10, 1), toy_package(12, 2)
    assert join([a, b]).rows == 22
    other = DatasetPackage(b.features, b.labels, Schema("classification", ("p", "q", "r", "s"), (4,), ("neg", "pos")))
    with pytest.raises(SchemaMismatch):
        join([a, other])


def test_model_spec_validation_and_hash_stability() -> None:
    spec = toy_spec(architecture="mlp", hidden_sizes=[8])
    assert ModelSpec.from_bytes(spec.to_bytes()) == spec
    assert ModelSpec.from_bytes(spec.to_bytes()).hash() == spec.hash()
    assert json.loads(spec.to_bytes())["hidden_sizes"] == [8]
    bad = [
        b"not json",
        json.dumps({"architecture": "transformer", "epochs": 1, "batch_size": 1, "learning_rate": 0.1, "max_grad_norm": 1}).encode(),
        json.dumps({"architecture": "mlp", "epochs": 1, "batch_size": 1, "learning_rate": 0.1, "max_grad_norm": 1}).encode(),
        json.dumps({"architecture": "logistic_regression", "epochs": 0, "batch_size": 1, "learning_rate": 0.1, "max_grad_norm": 1}).encode(),
        json.dumps({"architecture": "logistic_regression", "epochs": 1, "batch_size": 1, "learning_rate": 0.1, "max_grad_norm": 1, "code": "import os"}).encode(),
        b"{" * (1 << 21),
    ]
    for raw in bad:
        with pytest.raises(InvalidModelSpec):
            ModelSpec.from_bytes(raw)


def test_build_model_checks_the_spec_against_the_schema() -> None:
    model = build_model(toy_spec(architecture="mlp", hidden_sizes=[8, 4]), TOY_SCHEMA)
    assert model(__import__("torch").zeros(2, 4)).shape == (2, 2)
    with pytest.raises(InvalidModelSpec, match="input_mean has 3 entries"):
        build_model(toy_spec(input_mean=[0, 0, 0], input_scale=[1, 1, 1]), TOY_SCHEMA)


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_dp_training_spends_at_most_the_target_and_learns(accountant: str) -> None:
    data = toy_package(600, 3)
    result = train_dp(toy_spec(epochs=5, accountant=accountant), data, epsilon=2.0, delta=1e-5)
    assert 1.9 <= result.epsilon_spent <= 2.0
    assert result.steps == 5 * int(np.ceil(600 / 32))
    test = toy_package(500, 4)
    assert (predict(result.model, test.features) == test.labels).mean() > 0.8


def test_noise_calibration_is_monotone_in_epsilon() -> None:
    sigmas = [calibrate_noise(epsilon=e, delta=1e-5, sample_rate=0.05, steps=500, accountant="rdp") for e in (0.5, 1.0, 4.0)]
    assert sigmas[0] > sigmas[1] > sigmas[2] > 0


def test_invalid_privacy_parameters_are_refused() -> None:
    for eps, delta in ((0.0, 1e-5), (float("inf"), 1e-5), (1.0, 0.0), (1.0, 1.0)):
        with pytest.raises(ValueError):
            train_dp(toy_spec(), toy_package(20, 1), epsilon=eps, delta=delta)


@pytest.mark.parametrize("side", [8, 28])
def test_cnn_builds_for_8x8_and_28x28_images_and_trains_privately(side: int) -> None:
    schema = Schema("classification", tuple(f"p{i}" for i in range(side * side)), (1, side, side), tuple("0123456789"))
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 64).astype(np.int64)
    images = (rng.random((64, 1, side, side)) * 0.1).astype(np.float32)
    images[np.arange(64), 0, labels % side, :] = 1.0  # a learnable stripe per class
    spec = toy_spec(architecture="cnn", channels=[4, 8], hidden_sizes=[16], activation="tanh", epochs=2, batch_size=16)
    model = build_model(spec, schema)
    assert model(__import__("torch").zeros(3, 1, side, side)).shape == (3, 10)
    result = train_dp(spec, DatasetPackage(images, labels, schema), epsilon=3.0, delta=1e-5)
    assert result.epsilon_spent <= 3.0
    with pytest.raises(InvalidModelSpec, match="image features"):
        build_model(spec, TOY_SCHEMA)


@pytest.mark.parametrize("shape", [(5, 3, 8, 8), (4, 2, 7, 7), (3, 16, 28, 28), (2, 1, 3, 2)])
def test_channels_last_max_pool_equals_torch_in_values_and_gradients(shape: tuple[int, ...]) -> None:
    import torch
    from torch import nn

    from enclave_worker.trusted.models import MaxPool2d

    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0), requires_grad=True)
    twin = x.detach().clone().requires_grad_()
    ours, theirs = MaxPool2d(2)(x), nn.MaxPool2d(2)(twin)
    assert torch.equal(ours, theirs) and ours.is_contiguous()
    upstream = torch.randn_like(ours)
    ours.backward(upstream)
    theirs.backward(upstream)
    assert x.grad is not None and torch.equal(x.grad, twin.grad) and x.grad.is_contiguous()
    # No state: a released model's weights load the same into torch's own module.
    assert MaxPool2d(2).state_dict() == {}
