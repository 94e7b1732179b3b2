"""The audit of CLI commands that change the system through Kafka directly (the Kafka door).

The same rule as the gateway's (``shared.auth.audit``): the ALLOWED record is acknowledged by Kafka before the
command publishes anything, and a command whose record cannot be written stops there (exit 11,
``aoetl.failures.EXIT_KAFKA_UNAVAILABLE``) with nothing done. The record's actor is the OS user and its tenant
the one the command speaks for: the tenant of the CLI's Kafka user when that is a tenant's own user
(``tenant-<name>``, whose requests go to its tenant's topic, where the broker vouches for the tenant), else
the configured one, which nothing verifies (see the README's "Security model"). One request id per command run
ties its records together.
"""

from __future__ import annotations

import uuid

import typer

from aoetl.client import AoetlClient
from aoetl.commands.config import CliConfig, load_config
from aoetl.failures import EXIT_KAFKA_UNAVAILABLE, CliFailure
from aoetl.output import CliConsole
from shared.auth.audit import cli_record
from shared.contracts import AuditOutcome, PipelineRequest, new_id
from shared.errors import TransientError
from shared.kafka.topics import Topics
from shared.spec.models import PipelineSpec

EXIT_UNAVAILABLE = EXIT_KAFKA_UNAVAILABLE  # not 3: that is a TIMED_OUT run's

_err = CliConsole(stderr=True)


class DoorAudit:
    def __init__(self, client: AoetlClient, config: CliConfig | None = None):
        self.client = client
        self.config = config or load_config()
        self.request_id = uuid.uuid4().hex
        self.tenant = client.tenant_for(self.config.tenant_or_default)

    def allowed(self, action: str, object: str) -> None:
        """Write the ALLOWED record, or exit without doing anything."""
        try:
            self._write(action, object, AuditOutcome.ALLOWED, None)
        except CliFailure:
            raise  # an unreachable broker: aoetl.failures says so, with its own line and code
        except TransientError as exc:
            _err.print(f"[red]could not write the audit record, nothing done: {exc}[/]")
            raise typer.Exit(EXIT_UNAVAILABLE) from exc

    def failed(self, action: str, object: str, reason: str) -> None:
        """After an allowed action failed: best effort (the command fails anyway)."""
        try:
            self._write(action, object, AuditOutcome.FAILED, reason[:500])
        except TransientError:
            _err.print("[yellow]could not write the FAILED audit record either[/]")

    def _write(self, action: str, object: str, outcome: AuditOutcome, reason: str | None) -> None:
        tenant = self.tenant
        record = cli_record(
            tenant=tenant,
            token=self.config.token,
            request_id=self.request_id,
            action=action,
            object=object,
            outcome=outcome,
            reason=reason,
        )
        self.client.publish(Topics.AUDIT, tenant, record)


def submit_audited(client: AoetlClient, spec: PipelineSpec) -> PipelineRequest:
    """``client.submit(spec)`` behind its ALLOWED record."""
    run_id = new_id()
    audit = DoorAudit(client)
    audit.allowed("runs.submit", f"run/{run_id}")
    try:
        return client.submit(spec, run_id=run_id, tenant=audit.tenant)
    except TransientError as exc:
        audit.failed("runs.submit", f"run/{run_id}", str(exc))
        raise


def stop_audited(client: AoetlClient, run_id: str) -> PipelineRequest:
    audit = DoorAudit(client)
    audit.allowed("runs.stop", f"run/{run_id}")
    try:
        return client.stop(run_id, tenant=audit.tenant)
    except TransientError as exc:
        audit.failed("runs.stop", f"run/{run_id}", str(exc))
        raise
