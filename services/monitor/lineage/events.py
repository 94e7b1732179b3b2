"""OpenLineage run events of a run, built with ``openlineage-python``'s own classes (``event_v2`` and the
generated facets), so the library's serialisation is what a backend receives.

* START when the run is accepted: the job (namespace ``AOETL_LINEAGE_NAMESPACE``, default ``aoetl``, plus
  ``.<tenant>`` for a tenant's run; name the pipeline), its input and output datasets
  (``services.monitor.lineage.datasets``) with their schema facets, and a ``jobType`` facet;
* COMPLETE / FAIL / ABORT when it finishes (COMPLETED; FAILED or TIMED_OUT; CANCELLED), with the same
  datasets, the rows loaded as the output's ``outputStatistics``, and on a failure an ``errorMessage``
  facet holding the run's (redacted) error text.

``runId``: OpenLineage wants a UUID. A run id that is one (the system's own are UUID hex) is used as is;
any other (a caller's own run id) maps to a UUID5 of it, so every event of a run carries the same runId.
``eventTime`` is the time of the run event the lineage event stands for, not the time it is emitted: a
re-emitted event (see ``tracker``) is identical.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from importlib import metadata
from typing import Any

from services.monitor.lineage.datasets import Dataset
from shared.contracts import RunStatus

RUN_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:aoetl:run")
TERMINAL = {
    RunStatus.COMPLETED: "COMPLETE",
    RunStatus.FAILED: "FAIL",
    RunStatus.TIMED_OUT: "FAIL",
    RunStatus.CANCELLED: "ABORT",
}


def default_producer() -> str:
    try:
        version = metadata.version("aoetl")
    except metadata.PackageNotFoundError:  # a checkout that is not installed
        version = "dev"
    return f"urn:aoetl:monitor:{version}"


def lineage_run_id(run_id: str) -> str:
    try:
        return str(uuid.UUID(run_id))
    except ValueError:
        return str(uuid.uuid5(RUN_NAMESPACE, run_id))


def job_namespace(base: str, tenant: str | None) -> str:
    return base if tenant in (None, "", "default") else f"{base}.{tenant}"


def _schema_facets(dataset: Dataset) -> dict[str, Any]:
    from openlineage.client.generated import schema_dataset

    if not dataset.columns:
        return {}
    fields = [schema_dataset.SchemaDatasetFacetFields(name=c.name, type=c.type) for c in dataset.columns]
    return {"schema": schema_dataset.SchemaDatasetFacet(fields=fields)}


def build_event(
    event_type: str,
    *,
    at: datetime,
    run_id: str,
    namespace: str,
    job: str,
    producer: str,
    inputs: list[Dataset],
    outputs: list[Dataset],
    continuous: bool = False,
    rows_loaded: int | None = None,
    error: str | None = None,
) -> Any:
    """An ``openlineage.client.event_v2.RunEvent``."""
    from openlineage.client import event_v2
    from openlineage.client.generated import (
        error_message_run,
        job_type_job,
        output_statistics_output_dataset,
    )

    run_facets: dict[str, Any] = {}
    if error is not None:
        run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message=error, programmingLanguage="python"
        )
    job_facets: dict[str, Any] = {
        "jobType": job_type_job.JobTypeJobFacet(
            processingType="STREAMING" if continuous else "BATCH", integration="AOETL", jobType="PIPELINE"
        )
    }
    output_facets: dict[str, Any] = {}
    if rows_loaded is not None:
        output_facets["outputStatistics"] = (
            output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(rowCount=rows_loaded)
        )
    return event_v2.RunEvent(
        eventType=event_v2.RunState(event_type),
        eventTime=at.isoformat(),
        run=event_v2.Run(runId=lineage_run_id(run_id), facets=run_facets),
        job=event_v2.Job(namespace=namespace, name=job, facets=job_facets),
        producer=producer,
        inputs=[
            event_v2.InputDataset(namespace=d.namespace, name=d.name, facets=_schema_facets(d))
            for d in inputs
        ],
        outputs=[
            event_v2.OutputDataset(
                namespace=d.namespace, name=d.name, facets=_schema_facets(d), outputFacets=output_facets
            )
            for d in outputs
        ],
    )
