"""The job page's evaluation on the consumer's rows (web/js/evaluate.js) against the Python SDK's
(marketplace.model_metrics.evaluate), in real Chromium: the same model and rows give the same
metrics and baselines for every task, and bad files get a clear error."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import Page

from enclave_worker.trusted.dataset import DatasetPackage
from enclave_worker.trusted.models import ModelSpec
from enclave_worker.trusted.training import train_dp
from marketplace import datasets
from marketplace.model_card import _inputs, _outputs
from marketplace.model_metrics import evaluate
from marketplace.serving import model_weights
from tests.web.test_browser_crypto import crypto_page as page  # noqa: F401  (the harness page, one per module)

pytestmark = pytest.mark.browser


def _split(package: DatasetPackage, rows: int = 400) -> tuple[DatasetPackage, DatasetPackage]:
    order = np.random.default_rng(0).permutation(package.rows)
    train, test = order[rows:], order[:rows]
    return (DatasetPackage(package.features[train], package.labels[train], package.schema),
            DatasetPackage(package.features[test], package.labels[test], package.schema))  # fmt: skip


def _csv(data: DatasetPackage, *, label_name: str = "class") -> str:
    schema = data.schema
    if schema.task == "regression":
        label_names = list(schema.target_names)
    elif schema.task == "survival":
        label_names = ["time", "event"]
    else:
        label_names = [label_name]
    lines = [",".join([*schema.feature_names, *label_names])]
    for x, y in zip(data.features, data.labels, strict=True):
        labels = [schema.class_names[int(y)]] if schema.task == "classification" else [repr(float(v)) for v in np.atleast_1d(y)]
        lines.append(",".join([*(repr(float(v)) for v in x), *labels]))
    return "\n".join(lines) + "\n"


def _card(spec: ModelSpec, data: DatasetPackage) -> dict[str, Any]:
    return {"model": {"task": data.schema.task, "spec": spec.model_dump(mode="json")}, "inputs": _inputs(spec, data.schema),
            "outputs": _outputs(data.schema)}  # fmt: skip


def _in_browser(page: Page, weights: bytes, card: dict[str, Any], csv_text: str) -> Any:
    return page.evaluate(
        """async ([weights, card, csvText]) => {
          const { evaluateCsv } = await import("/js/evaluate.js");
          const bytes = Uint8Array.from(atob(weights), (c) => c.charCodeAt(0));
          try { return evaluateCsv({ weights: bytes, card, csvText }); } catch (e) { return { error: e.message, kind: e.constructor.name }; }
        }""",
        [base64.b64encode(weights).decode(), card, csv_text],
    )


def _close(js: Any, py: Any, where: str = "") -> None:
    if isinstance(py, dict):
        for key, value in py.items():
            _close(js[key], value, f"{where}.{key}")
    elif isinstance(py, list):
        assert len(js) == len(py), where
        for i, (a, b) in enumerate(zip(js, py, strict=True)):
            _close(a, b, f"{where}[{i}]")
    elif isinstance(py, float):
        assert js == pytest.approx(py, abs=2e-4), where  # the page computes in float64, torch in float32
    else:
        assert js == py, where


CASES = {
    "classification-mlp": (datasets.breast_cancer, {"architecture": "mlp", "hidden_sizes": [8], "activation": "tanh"}),
    "regression-two-targets": (datasets.actg175_cd_counts, {"architecture": "logistic_regression"}),
    "survival-embeddings": (lambda: datasets.flchain(categorical=True), {"architecture": "mlp", "hidden_sizes": [6]}),
    "survival-per-interval": (datasets.actg175_survival, {"architecture": "logistic_regression", "survival_head": "per_interval"}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_page_measures_what_the_sdk_measures(page: Page, case: str) -> None:
    make, fields = CASES[case]
    train, test = _split(make())
    extra: dict[str, Any] = {}
    if train.schema.task == "classification":  # the consumer's own standardisation, from its rows
        extra = {"input_mean": train.features.mean(0).tolist(), "input_scale": (train.features.std(0) + 1e-6).tolist()}
    spec = ModelSpec.model_validate({"epochs": 3, "batch_size": 128, "learning_rate": 0.05, "max_grad_norm": 1.0, "seed": 0, **fields, **extra})
    model = train_dp(spec, train, epsilon=1.0, delta=1e-5, noise_seed=0).model
    expected = evaluate(model, test)
    got = _in_browser(page, model_weights(model, spec, test.schema), _card(spec, test), _csv(test))
    assert "error" not in got, got
    _close(got, expected)


def test_bad_files_and_image_models_get_a_clear_error(page: Page) -> None:
    train, test = _split(datasets.breast_cancer())
    spec = ModelSpec(architecture="logistic_regression", epochs=1, batch_size=64, learning_rate=0.05, max_grad_norm=1.0, seed=0)
    model = train_dp(spec, train, epsilon=1.0, delta=1e-5, noise_seed=0).model
    weights, card, text = model_weights(model, spec, test.schema), _card(spec, test), _csv(test)
    missing = text.replace("mean radius", "radius", 1)
    assert _in_browser(page, weights, card, missing) == {"error": 'the file has no column "mean radius" (the model\'s inputs and labels are named in its card)',
                                                         "kind": "EvaluationError"}  # fmt: skip
    unknown_class = text.replace(",benign\n", ",healthy\n", 1)
    assert "is not one of the classes malignant, benign" in _in_browser(page, weights, card, unknown_class)["error"]
    not_number = text.replace(text.split("\n")[1].split(",")[0], "abc", 1)
    assert "not a number" in _in_browser(page, weights, card, not_number)["error"]
    image = {**card, "model": {**card["model"], "spec": {**card["model"]["spec"], "architecture": "resnet"}}}
    assert "evaluate it with marketplace.model_metrics.evaluate" in _in_browser(page, weights, image, text)["error"]
