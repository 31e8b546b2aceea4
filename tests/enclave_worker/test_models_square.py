"""The ``square`` activation (HE-friendly networks): built from a spec, published in the schema, and
trained by DP-SGD through the autograd path of the book-keeping engine, with Opacus's numbers."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import torch
from torch import nn

from enclave_worker.trusted import dpsgd
from enclave_worker.trusted.dataset import Schema
from enclave_worker.trusted.models import ModelSpec, Square, build_model
from enclave_worker.trusted.training import train_dp
from marketplace.local_training import predict
from tests.conftest import TOY_SCHEMA, toy_package, toy_spec
from tests.enclave_worker.test_dpsgd import _reference

SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "model-spec.schema.json"
IMAGES = Schema("classification", tuple(f"p{i}" for i in range(36)), (1, 6, 6), ("a", "b", "c"))


def test_a_square_mlp_is_linear_square_linear() -> None:
    spec = toy_spec(architecture="mlp", hidden_sizes=(5,), activation="square")
    model = build_model(spec, TOY_SCHEMA)
    assert [type(m) for m in model] == [nn.Linear, Square, nn.Linear]
    x = torch.randn(7, 4)
    first, last = model[0], model[2]
    assert isinstance(first, nn.Linear) and isinstance(last, nn.Linear)
    expected = ((x @ first.weight.T + first.bias) ** 2) @ last.weight.T + last.bias
    torch.testing.assert_close(model(x), expected)
    # Negative pre-activations square to positive values (a ReLU would zero them).
    assert torch.equal(Square()(torch.tensor([-3.0, 0.0, 2.0])), torch.tensor([9.0, 0.0, 4.0]))
    cnn = build_model(toy_spec(architecture="cnn", channels=(2,), hidden_sizes=(4,), activation="square"), IMAGES)
    assert sum(isinstance(m, Square) for m in cnn) == 2


def test_the_published_schema_accepts_square_and_nothing_else_new() -> None:
    schema = json.loads(SCHEMA.read_text())
    spec = toy_spec(architecture="mlp", hidden_sizes=(5,), activation="square")
    jsonschema.validate(json.loads(spec.to_bytes()), schema)
    assert ModelSpec.from_bytes(spec.to_bytes()) == spec
    bad = {**json.loads(spec.to_bytes()), "activation": "cube"}
    try:
        jsonschema.validate(bad, schema)
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("the schema accepted an unknown activation")


def test_square_models_take_the_autograd_path_and_match_opacus() -> None:
    torch.manual_seed(0)
    mlp = build_model(toy_spec(architecture="mlp", hidden_sizes=(16, 8), activation="square"), TOY_SCHEMA)
    cnn = build_model(toy_spec(architecture="cnn", channels=(3, 4), hidden_sizes=(6,), activation="square"), IMAGES)
    for model, x, classes in ((mlp, torch.randn(23, 4), 2), (cnn, torch.randn(23, 1, 6, 6), 3)):
        y = torch.randint(0, classes, (23,))
        expected, expected_norms = _reference(model, x, y, 0.5)
        engine = dpsgd.BookKeepingDPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1),
            max_grad_norm=0.5, noise_multiplier=0.0, expected_batch_size=23)
        assert engine._dense is None  # x² has no backward from its output alone: not the hand path
        got, norms = engine.clipped_sum(x, y)
        engine.close()
        torch.testing.assert_close(norms, expected_norms, rtol=1e-4, atol=1e-5)
        assert len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


def test_dp_training_of_a_square_mlp_learns() -> None:
    data, held_out = toy_package(600, 1), toy_package(300, 2)
    spec = toy_spec(architecture="mlp", hidden_sizes=(8,), activation="square", epochs=5, learning_rate=0.05)
    result = train_dp(spec, data, epsilon=3.0, delta=1e-5, noise_seed=7)
    assert result.epsilon_spent <= 3.0
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    assert sum(isinstance(m, Square) for m in result.model.modules()) == 1
    accuracy = float(np.mean(predict(result.model, held_out.features) == held_out.labels))
    assert accuracy > 0.8, accuracy
