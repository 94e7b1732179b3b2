"""Gateway metrics (on the shared default registry, next to the ``aoetl_*`` metrics of every service)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

WEBHOOKS = Counter(
    "aoetl_gateway_webhooks",
    "Webhook deliveries by source and outcome "
    "(accepted|duplicate|ignored|replayed|bad_signature|bad_payload|too_large|unavailable|unknown_source)",
    ["source", "outcome"],
)
PUBLISH_SECONDS = Histogram(
    "aoetl_gateway_publish_seconds",
    "From send to Kafka acknowledgement of one gateway record",
    ["topic"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PUBLISH_FAILURES = Counter(
    "aoetl_gateway_publish_failures", "Records Kafka did not acknowledge in time (answered 503)", ["topic"]
)
API_AUTH = Counter(
    "aoetl_gateway_api_auth",
    "API calls refused before reaching their endpoint, by reason "
    "(unauthenticated|forbidden|rate_limited|unverifiable|too_large)",
    ["reason"],
)
AUDIT_RECORDS = Counter(
    "aoetl_gateway_audit_records", "Audit records written, by outcome (and failed writes)", ["outcome"]
)
