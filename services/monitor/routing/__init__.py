"""Alert routing: alerts from ``aoetl.alerts`` delivered to HTTP endpoints (generic JSON or Slack), signed the
Standard Webhooks way, retried with backoff and committed per endpoint only after a terminal outcome
(``router`` states the guarantee). Configured by ``settings.AlertRoutingSettings``; off without endpoints."""
