"""A real S3-compatible server for the tests: S3Proxy (``org.gaul:s3proxy`` from Maven Central, its
``jar-with-dependencies``) on its filesystem backend, with AWS v2/v4 signatures checked against an
identity and credential the test chooses, on a free loopback port.

The jar is resolved with Maven once into the artefact cache (``~/.cache/aoetl/s3proxy/<version>``, or
``$AOETL_CACHE_DIR``), as the Kafka jars are; ``python -m tests.support.s3_server`` does it (``make
bootstrap``). ``s3_server`` is a session fixture: one server per pytest session, each test using buckets
of its own (``new_bucket``). Version 3.x: 2.x rejects the chunked upload headers pyarrow's AWS SDK sends.

``s3_connection`` and ``policy_env`` are the one way tests declare ``s3`` connections to the server: the
secret in ``SECRET_ENV``, the connections in ``AOETL_POLICY_CONNECTIONS``, the server's loopback address
allow-listed by the egress policy (set in the test's process with ``monkeypatch``, or given to the
services' environment).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from aoetl.devstack.errors import MissingToolError, StackStartupError
from aoetl.devstack.kafka_jars import cache_dir, java_binary
from aoetl.devstack.osproc import file_lock, free_port, port_accepts, tail, terminate
from tests.helpers import wait_until

S3PROXY_VERSION = "3.1.0"
SECRET_ENV = "AOETL_TEST_S3_SECRET"  # the variable holding the secret of the test connections
_ARTIFACT = f"org.gaul:s3proxy:{S3PROXY_VERSION}:jar:jar-with-dependencies"


def resolve_s3proxy_jar(version: str = S3PROXY_VERSION) -> Path:
    """The S3Proxy jar, fetched with Maven once (idempotent, safe under concurrency)."""
    root = cache_dir() / "s3proxy" / version
    jar = root / f"s3proxy-{version}-jar-with-dependencies.jar"
    if jar.exists():
        return jar
    with file_lock(root / ".lock"):
        if jar.exists():
            return jar
        mvn = shutil.which("mvn")
        if mvn is None:
            raise MissingToolError("mvn (Maven) is required to fetch S3Proxy; run `make bootstrap`")
        staging = root / "partial"
        shutil.rmtree(staging, ignore_errors=True)
        result = subprocess.run(
            [mvn, "-q", "-B", "dependency:copy", f"-Dartifact={_ARTIFACT}", f"-DoutputDirectory={staging}"],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise StackStartupError(f"mvn failed fetching S3Proxy:\n{result.stdout[-3000:]}{result.stderr}")
        (staging / jar.name).rename(jar)  # the rename is the completion marker
        shutil.rmtree(staging, ignore_errors=True)
    return jar


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.1:<port>
    port: int
    access_key: str
    secret_key: str
    basedir: Path

    @property
    def secret(self) -> str:
        """The secret of an s3 connection to this server (``<access key id>:<secret access key>``)."""
        return f"{self.access_key}:{self.secret_key}"

    def filesystem(self) -> pafs.S3FileSystem:
        """A client of the test's own (buckets are made and objects put through the S3 API)."""
        return pafs.S3FileSystem(
            access_key=self.access_key,
            secret_key=self.secret_key,
            endpoint_override=f"127.0.0.1:{self.port}",
            scheme="http",
            region="us-east-1",
            allow_bucket_creation=True,
        )

    def create_bucket(self, name: str) -> None:
        self.filesystem().create_dir(name)

    def put(self, fs_path: str, data: bytes) -> str:
        """Write an object at ``bucket/key``; its ``s3://`` URL."""
        with self.filesystem().open_output_stream(fs_path) as out:
            out.write(data)
        return f"s3://{fs_path}"

    def get(self, fs_path: str) -> bytes:
        return bytes(self.filesystem().open_input_file(fs_path).read())

    def keys(self, prefix: str) -> list[str]:
        """The keys of the objects under ``bucket/prefix``, sorted."""
        infos = self.filesystem().get_file_info(
            pafs.FileSelector(prefix, recursive=True, allow_not_found=True)
        )
        return sorted(i.path.split("/", 1)[1] for i in infos if i.type == pafs.FileType.File)


def new_bucket(server: S3Server, prefix: str = "t") -> str:
    """A bucket of the caller's own on the session's server."""
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    server.create_bucket(name)
    return name


def s3_connection(
    server: S3Server, *roots: str, env: str = SECRET_ENV, endpoint: str | None = None
) -> dict[str, object]:
    """An ``s3`` connection declaration to ``server`` (or another ``endpoint``) covering ``roots``."""
    return {"kind": "s3", "env": env, "endpoint": endpoint or server.endpoint, "roots": list(roots)}


def policy_env(server: S3Server, connections: Mapping[str, object]) -> dict[str, str]:
    """The environment declaring ``connections``, the server's secret and its endpoint allowed."""
    return {
        SECRET_ENV: server.secret,
        "AOETL_POLICY_CONNECTIONS": json.dumps(connections),
        "AOETL_POLICY_HTTP_EGRESS_ALLOW": f"127.0.0.1:{server.port}",
    }


def declare_connections(
    monkeypatch: pytest.MonkeyPatch, server: S3Server, connections: Mapping[str, object]
) -> None:
    """``policy_env`` in this process, for the test only."""
    for name, value in policy_env(server, connections).items():
        monkeypatch.setenv(name, value)


@contextlib.contextmanager
def running_s3_server(workdir: Path) -> Iterator[S3Server]:
    """S3Proxy on a free port with a fresh identity, its data under ``workdir``, stopped on exit."""
    # The SDK in this process uploads as S3-compatible servers expect (see shared.connectors.object_store).
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "WHEN_REQUIRED")
        patch.setenv("AWS_RESPONSE_CHECKSUM_VALIDATION", "WHEN_REQUIRED")
        port = free_port()
        basedir = workdir / "data"
        basedir.mkdir(parents=True)
        server = S3Server(
            f"http://127.0.0.1:{port}",
            port,
            f"AKIA{secrets.token_hex(8).upper()}",
            secrets.token_hex(20),
            basedir,
        )
        properties = workdir / "s3proxy.properties"
        properties.write_text(
            "\n".join(
                [
                    f"s3proxy.endpoint={server.endpoint}",
                    "s3proxy.authorization=aws-v2-or-v4",
                    f"s3proxy.identity={server.access_key}",
                    f"s3proxy.credential={server.secret_key}",
                    "jclouds.provider=filesystem",
                    f"jclouds.filesystem.basedir={basedir}",
                ]
            )
            + "\n"
        )
        log = workdir / "s3proxy.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [java_binary(), "-jar", str(resolve_s3proxy_jar()), "--properties", str(properties)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:

            def listening() -> bool:
                if process.poll() is not None:
                    raise StackStartupError(f"S3Proxy exited with {process.returncode}:\n{tail(log)}")
                return port_accepts(port)

            wait_until(listening, timeout=60, message="S3Proxy to listen")
            yield server
        finally:
            terminate(process.pid)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    with (
        tempfile.TemporaryDirectory(prefix="aoetl-s3-") as workdir,
        running_s3_server(Path(workdir)) as server,
    ):
        yield server


if __name__ == "__main__":
    print(resolve_s3proxy_jar())
