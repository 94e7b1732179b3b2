"""``aoetl profile`` and ``aoetl suggest`` on ``s3://`` inputs, against a real S3-compatible server
(S3Proxy, ``tests.support.s3_server``): the sample is read through the sources' own connector and the
declared ``s3`` connection (every row of a date-sorted object and of a glob over a prefix is sampled, so a
suggested range holds on the whole input), the suggested spec names the object and its connection and
passes the policy, an s3 destination gets its connection, and a URL without a connection is a one-line
error naming the connection to give."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from aoetl.cli import app
from shared.policy import check_spec, load_policy
from shared.spec import load_spec
from shared.spec.models import CsvSource, ParquetDestination
from shared.spec.quality import RangeRule
from tests.support.s3_server import (  # noqa: F401 - s3_server: the session fixture
    S3Server,
    declare_connections,
    new_bucket,
    s3_connection,
    s3_server,
)

pytestmark = pytest.mark.integration

ROWS = 12_000
DAYS = 300


@pytest.fixture
def bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:  # noqa: F811
    name = new_bucket(s3_server)
    declare_connections(monkeypatch, s3_server, {"lake": s3_connection(s3_server, f"s3://{name}/in")})
    return name


def orders_by_day(rows: int, first_id: int = 0) -> bytes:
    """An export sorted by day: the head of the object is day 1 only (the sampling regression case)."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["order_id", "day", "amount"])
    for i in range(rows):
        writer.writerow([first_id + i, i * DAYS // rows + 1, f"{(i % 97) * 1.5:.2f}"])
    return text.getvalue().encode()


def test_profile_of_an_object_reads_every_row(s3_server: S3Server, bucket: str) -> None:  # noqa: F811
    url = s3_server.put(f"{bucket}/in/orders.csv", orders_by_day(ROWS))
    result = CliRunner().invoke(app, ["profile", url, "--connection", "lake", "--rows", "500", "-o", "json"])
    assert result.exit_code == 0, result.output
    profile = json.loads(result.stdout)
    assert profile["source"] == CsvSource(path=url, connection="lake").model_dump(mode="json")
    assert profile["total_rows"] == ROWS  # the whole object was read to draw the sample
    columns = {c["name"]: c for c in profile["columns"]}
    assert columns["order_id"]["inferred_type"] == "int64"
    assert columns["day"]["max"] > DAYS // 2  # spread over the object, not its head


def test_suggest_from_a_glob_to_an_s3_prefix(
    s3_server: S3Server,  # noqa: F811
    bucket: str,
    tmp_path: Path,
) -> None:
    for part in range(2):
        s3_server.put(f"{bucket}/in/daily/part-{part}.csv", orders_by_day(ROWS // 2, part * ROWS))
    glob = f"s3://{bucket}/in/daily/*.csv"
    out = tmp_path / "spec.yaml"
    argv = ["suggest", glob, "--connection", "lake", "--to", f"parquet:s3://{bucket}/in/curated"]
    result = CliRunner().invoke(app, [*argv, "--rows", "800", "-o", str(out)])
    assert result.exit_code == 0, result.output
    spec = load_spec(out)
    assert spec.source == CsvSource(path=glob, connection="lake")  # a URL is kept as written
    assert spec.destination == ParquetDestination(path=f"s3://{bucket}/in/curated", connection="lake")
    assert check_spec(spec, load_policy()) == []  # the policy the services apply accepts it
    ranges = [r for r in spec.quality if isinstance(r, RangeRule) and r.column == "day"]
    assert ranges and ranges[0].max is not None and ranges[0].max > DAYS // 2


def test_an_object_without_a_connection_names_the_fix(s3_server: S3Server, bucket: str) -> None:  # noqa: F811
    url = s3_server.put(f"{bucket}/in/orders.csv", orders_by_day(10))
    result = CliRunner().invoke(app, ["profile", url])
    assert result.exit_code == 2
    assert "give --connection lake" in result.stderr
    assert "Traceback" not in result.output
    to_s3 = CliRunner().invoke(
        app, ["suggest", url, "--connection", "lake", "--to", f"jsonl:s3://{bucket}/in/x"]
    )
    assert to_s3.exit_code == 0, to_s3.output
    assert yaml.safe_load(to_s3.stdout)["destination"]["connection"] == "lake"  # defaults to --connection
    local = CliRunner().invoke(app, ["profile", "orders.csv", "--connection", "lake"])
    assert local.exit_code == 2 and "--connection is for s3:// paths only" in local.stderr


def test_profile_outside_the_connections_roots_is_refused_before_anything_is_read(
    s3_server: S3Server,  # noqa: F811
    bucket: str,
) -> None:
    # The object exists and the connection's credentials could read it: only the policy stops this.
    outside = s3_server.put(f"{bucket}/private/orders.csv", orders_by_day(10))
    for argv in (["profile", outside], ["suggest", outside, "--to", "postgres://t"]):
        result = CliRunner().invoke(app, [*argv, "--connection", "lake"])
        assert result.exit_code == 2, result.output
        assert "outside" in result.stderr or "not under" in result.stderr or "roots" in result.stderr, (
            result.stderr
        )
        assert "order_id" not in result.output, "nothing of the object was read"
        assert "Traceback" not in result.output
        assert s3_server.secret_key not in result.output
