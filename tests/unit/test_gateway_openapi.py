"""Property-based API test: schemathesis generates requests from the app's own OpenAPI document and sends
them in process (ASGI); no generated request may make the gateway answer 5xx. The bus is a fake that is
ready and accepts everything, so a 503 here would be a real bug, not Kafka being away."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from services.gateway.app import create_app
from services.gateway.core import Gateway
from tests.unit.test_gateway_app import FakeBus, make_settings

pytestmark = pytest.mark.unit

schema = schemathesis.openapi.from_asgi(
    "/openapi.json", create_app(Gateway.in_memory(make_settings(), FakeBus()))
)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_no_generated_request_gets_a_server_error(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=[not_a_server_error])
