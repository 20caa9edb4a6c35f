"""schemathesis over the app's own OpenAPI: no 5xx, every response as the schema says; 401s without the token."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from tests.support.api import api_in_thread
from tests.support.services import SettingsFactory

schemathesis = pytest.importorskip("schemathesis")

# A few hundred cases in all (about 20 operations), the same ones on every run.
CASES_PER_OPERATION = 15
TOKEN = "schema-test-token"


def _honour_equal_length(case: Any) -> Any:
    """Applies the one rule JSON Schema cannot say, as a generated client reading the schema's
    `x-equal-length` note would: `original_urls`, when given, has one entry per value."""
    schema = case.operation.definition.raw.get("requestBody", {}).get("content", {}).get("application/json", {})
    ref = schema.get("schema", {}).get("$ref", "")
    body = case.body
    if ref.endswith("/ResolveRequest") and isinstance(body, dict) and isinstance(body.get("original_urls"), list):
        values = case.body.get("values")
        size = len(values) if isinstance(values, list) else 0
        case.body["original_urls"] = (case.body["original_urls"] + [None] * size)[:size]
    return case


def _run_every_operation(url: str, check: Callable[[Any], None]) -> int:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    ran = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        strategy = operation.as_strategy().map(_honour_equal_length)

        @given(case=strategy)
        @settings(max_examples=CASES_PER_OPERATION, derandomize=True, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def one(case: Any) -> None:
            check(case)

        one()
        ran += 1
    return ran


# The event stream never ends: schemathesis reads it for the request's timeout (10 s unless
# told), which made its 15 cases most of this file's time; 1 s takes in its `: ready` line.
STREAM_READ_S = 1.0


def _call_and_validate(case: Any, url: str) -> Any:
    stream = case.operation.path == "/api/events"
    return case.call_and_validate(base_url=url, **({"timeout": STREAM_READ_S} if stream else {}))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_every_operation_conforms_to_the_schema(make_settings: SettingsFactory) -> None:
    with api_in_thread(make_settings) as url:
        ran = _run_every_operation(url, lambda case: _call_and_validate(case, url))
    assert ran >= 15


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_without_the_token_every_protected_operation_is_401(make_settings: SettingsFactory) -> None:
    statuses: list[int] = []

    def check(case: Any) -> None:
        response = _call_and_validate(case, url)
        statuses.append(response.status_code)
        path = case.operation.path
        if path.startswith("/api/"):
            assert response.status_code == 401, (case.method, case.formatted_path, response.text[:200])

    with api_in_thread(make_settings, api_token=TOKEN, api_token_reads=True) as url:
        _run_every_operation(url, check)
    assert statuses.count(401) >= 100
