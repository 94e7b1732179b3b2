"""Property-based API test: schemathesis generates requests from the app's own OpenAPI document and sends
them in process (ASGI); no generated request may make the gateway answer 5xx, with an admin's key (so the
requests reach every endpoint's own validation) or with none (so they meet the access guard). The bus is a
fake that is ready and accepts everything, so a 503 here would be a real bug, not Kafka being away."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from services.gateway.app import create_app
from tests.unit.gateway_support import ADMIN, FakeBus, bearer, make_gateway

pytestmark = pytest.mark.unit

schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(make_gateway(FakeBus())))


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_no_generated_request_gets_a_server_error(case: schemathesis.Case) -> None:
    case.call_and_validate(headers=bearer(ADMIN), checks=[not_a_server_error])


@schema.parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_no_generated_request_without_a_token_gets_a_server_error(case: schemathesis.Case) -> None:
    response = case.call_and_validate(checks=[not_a_server_error])
    operation = case.operation.definition.raw
    if operation.get("security") == [{"bearer": []}] and case.headers is None:
        assert response.status_code in (400, 401, 413, 422), response.text
