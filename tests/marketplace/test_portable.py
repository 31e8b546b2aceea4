"""Portable models: the ONNX export of every architecture answers as torch does on 1,000 rows."""

from __future__ import annotations

import numpy as np
import pytest

from enclave_worker.trusted.dataset import Schema
from enclave_worker.trusted.models import ModelSpec, build_model
from marketplace.portable import ExportMismatch, export_checked, export_onnx, onnx_agreement


def _model(architecture: str, shape: tuple[int, ...], seed: int, **extra: object) -> tuple[object, Schema]:
    import torch

    torch.manual_seed(seed)
    width = int(np.prod(shape))
    schema = Schema(
        task="classification", feature_names=tuple(f"x{i}" for i in range(width)), feature_shape=shape, class_names=("a", "b", "c")
    )
    spec = ModelSpec.model_validate(
        {"architecture": architecture, "epochs": 1, "batch_size": 32, "learning_rate": 0.1, "max_grad_norm": 1.0, **extra}
    )
    return build_model(spec, schema), schema


@pytest.mark.parametrize(
    ("architecture", "shape", "extra"),
    [
        ("logistic_regression", (6,), {"input_mean": (1, 2, 3, 4, 5, 6), "input_scale": (2, 2, 2, 1, 1, 1)}),
        ("mlp", (6,), {"hidden_sizes": (16, 8), "activation": "tanh"}),
        ("cnn", (1, 8, 8), {"channels": (4,), "hidden_sizes": (16,), "input_mean": (0.5,), "input_scale": (4.0,)}),
    ],
)
def test_onnx_and_torch_agree_on_1000_rows(architecture: str, shape: tuple[int, ...], extra: dict[str, object]) -> None:
    model, schema = _model(architecture, shape, 1, **extra)
    rows = np.random.default_rng(2).normal(size=(1000, *shape)).astype(np.float32) * 3
    exported, agreement = export_checked(model, schema, rows)  # type: ignore[arg-type]
    import onnx

    proto = onnx.load_from_string(exported)
    onnx.checker.check_model(proto)
    assert [i.name for i in proto.graph.input] == ["features"] and [o.name for o in proto.graph.output] == ["logits"]
    assert agreement.rows == 1000 and agreement.labels_equal == 1000 and agreement.max_abs_diff < 1e-5
    # The batch dimension is free: one row and 1,000 rows both run.
    assert onnx_agreement(exported, model, rows[:1]).ok  # type: ignore[arg-type]


def test_a_model_that_answers_otherwise_is_caught() -> None:
    model, schema = _model("mlp", (6,), 3, hidden_sizes=(8,))
    other, _ = _model("mlp", (6,), 4, hidden_sizes=(8,))
    rows = np.random.default_rng(5).normal(size=(1000, 6)).astype(np.float32)
    exported = export_onnx(model, schema)  # type: ignore[arg-type]
    agreement = onnx_agreement(exported, other, rows)  # type: ignore[arg-type]
    assert not agreement.ok and agreement.max_abs_diff > 1e-3 and agreement.labels_equal < 1000


def test_export_checked_refuses_a_mismatch(monkeypatch: pytest.MonkeyPatch) -> None:
    import marketplace.portable as portable

    model, schema = _model("logistic_regression", (6,), 6)
    other, _ = _model("logistic_regression", (6,), 7)
    monkeypatch.setattr(portable, "export_onnx", lambda m, s: export_onnx(other, s))  # an exporter that got it wrong
    with pytest.raises(ExportMismatch, match="disagrees with torch on .* of 1000 labels"):
        export_checked(model, schema, np.random.default_rng(8).normal(size=(1000, 6)).astype(np.float32))  # type: ignore[arg-type]
