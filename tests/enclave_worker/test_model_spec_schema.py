"""The published JSON schema of the model spec is current, and it accepts what the enclave accepts."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from enclave_worker.trusted.models import ModelSpec
from tests.e2e.test_utility import DIGITS_CNN

SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "model-spec.schema.json"


def test_published_schema_matches_the_code() -> None:
    published = json.loads(SCHEMA.read_text())
    current = ModelSpec.model_json_schema()
    assert {k: v for k, v in published.items() if not k.startswith("$")} == json.loads(json.dumps(current)), (
        "docs/model-spec.schema.json is stale: regenerate it from ModelSpec.model_json_schema()"
    )


def test_schema_accepts_valid_specs_and_rejects_unknown_fields() -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.validate(DIGITS_CNN, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**DIGITS_CNN, "code": "import os"}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**DIGITS_CNN, "architecture": "transformer"}, schema)
