"""Property-based API fuzz: schemathesis over the gateway's OpenAPI document, zero 5xx responses.

Every operation of the OpenAPI document except the never-ending event stream (it has its own
test) gets valid (positive) and invalid (negative) generated requests. schemathesis 4.32's
pytest plugin does not run under pytest 9 (it reads ``Function._nodeid``), so the operations'
Hypothesis strategies are driven directly.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.generation.case import Case

from tests.gateway.conftest import Gateway

EXAMPLES_PER_OPERATION = 60
NO_INVALID_FORM = frozenset({"POST /api/blobs", "POST /api/inference"})


@pytest.mark.slow
@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE], ids=str)
def test_no_generated_request_gets_a_server_error(gateway: Gateway, mode: schemathesis.GenerationMode) -> None:
    gateway.sync()
    schema = schemathesis.openapi.from_asgi("/openapi.json", gateway.app).exclude(path="/api/events")
    operations = [result.ok() for result in schema.get_all_operations() if isinstance(result, Ok)]
    assert len(operations) >= 14
    exercised: dict[str, set[int]] = {}
    if mode is schemathesis.GenerationMode.NEGATIVE:
        # Nothing schema-invalid exists for a request without inputs, or for an upload or an inference envelope (any bytes, a free-form
        # header): positive generation already sends it arbitrary bytes.
        operations = [
            op for op in operations if (any(True for _ in op.iter_parameters()) or len(op.body)) and op.label not in NO_INVALID_FORM
        ]
    for operation in operations:

        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode))
        def fuzz(case: Case[Any]) -> None:
            response = case.call()
            case.validate_response(response, checks=[not_a_server_error])
            exercised.setdefault(case.operation.label, set()).add(response.status_code)
            if response.status_code >= 400:
                assert isinstance(response.json().get("detail"), str), response.text

        fuzz()
    assert set(exercised) == {op.label for op in operations}
