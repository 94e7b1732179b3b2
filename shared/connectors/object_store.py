"""Objects in S3 (or an S3-compatible server) as source files: listing, size and ranged reads.

Library: ``pyarrow.fs.S3FileSystem``. pyarrow is already how every file source is parsed (its CSV, JSON
and Parquet readers take its own random-access files natively, so a Parquet footer or a byte range is one
ranged GET, never a whole-object download), and it takes an endpoint override, scheme, region and static
credentials per instance, so each named connection gets a file system of its own. fsspec/s3fs would add
two dependencies (and aiobotocore) for the same reads.

Credentials come only from the spec's named ``s3`` connection (``shared.policy.connections``), whose secret
is ``<access key id>:<secret access key>``; both halves are registered with ``shared.redaction`` before any
request is made, and error texts from the SDK are scrubbed. The policy is checked here again, where the
objects are opened: the connection and the URL's roots (``shared.policy.object_store.s3_use``), every
listed object against the roots, and the endpoint against the egress policy, resolving its name.

Objects are read through a buffered, seekable stream (``open``): memory is bounded by the buffer and the
parser's block, whatever the object's size.
"""

from __future__ import annotations

import fnmatch
import io
import os
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from shared.connectors.errors import SourceNotFoundError, SourceUnavailableError
from shared.errors import ConfigurationError
from shared.policy.connections import ConnectionUse
from shared.policy.errors import PolicyViolation
from shared.policy.object_store import endpoint_egress, endpoint_refusal, s3_use
from shared.policy.s3_urls import S3Url, parse_s3_url, under_roots
from shared.policy.settings import PolicySettings, load_policy
from shared.redaction import register_secret, scrub

READ_BUFFER_BYTES = 1 << 20
DEFAULT_REGION = "us-east-1"


def _credentials(use: ConnectionUse) -> tuple[str, str]:
    access_key, sep, secret_key = use.secret().partition(":")
    if not sep or not access_key or not secret_key:
        raise ConfigurationError(
            f"the secret of s3 connection {use.name!r} ({use.connection.where}) must be"
            " '<access key id>:<secret access key>'"
        )
    register_secret(access_key)
    register_secret(secret_key)
    return access_key, secret_key


@lru_cache(maxsize=32)
def _filesystem(
    endpoint: str | None, region: str | None, access_key: str, secret_key: str
) -> pafs.S3FileSystem:
    """One client per endpoint and credential pair (a rotated secret makes a new one)."""
    options: dict[str, object] = {"region": region or DEFAULT_REGION}
    if endpoint is not None:
        parts = urlsplit(endpoint)
        options["endpoint_override"] = parts.netloc
        options["scheme"] = parts.scheme
        # S3-compatible servers do not all implement the SDK's newer default of flexible checksums on
        # every upload (aws-chunked bodies with checksum trailers); "when required" is what they accept.
        os.environ.setdefault("AWS_REQUEST_CHECKSUM_CALCULATION", "WHEN_REQUIRED")
        os.environ.setdefault("AWS_RESPONSE_CHECKSUM_VALIDATION", "WHEN_REQUIRED")
    return pafs.S3FileSystem(access_key=access_key, secret_key=secret_key, **options)


def filesystem(path: str, connection: str | None, policy: PolicySettings | None = None) -> pafs.S3FileSystem:
    """The checked file system for a part at ``path`` using ``connection`` (raises ``PolicyViolation``)."""
    policy = policy or load_policy()
    use = s3_use(path, connection, policy.connections, tenant=None)
    why = endpoint_refusal(use, endpoint_egress(policy), resolve=True)
    if why:
        raise PolicyViolation(why)
    conn = use.connection
    return _filesystem(conn.endpoint, conn.region, *_credentials(use))


def storage_error(url: S3Url | str, exc: Exception) -> SourceUnavailableError | SourceNotFoundError:
    """An SDK error as ours: access denied or missing is terminal, anything else (network) transient."""
    text = scrub(str(exc))
    if "ACCESS_DENIED" in text or "NoSuchBucket" in text or "NO_SUCH_BUCKET" in text:
        return SourceNotFoundError(f"{url}: {text}")
    return SourceUnavailableError(f"{url}: {text}")


class _RawObject(io.RawIOBase):
    """A pyarrow random-access file as a raw stream, so ``io.BufferedReader`` gives it ``readline``."""

    def __init__(self, native: pa.NativeFile) -> None:
        super().__init__()
        self._native = native

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return int(self._native.seek(offset, whence))

    def tell(self) -> int:
        return int(self._native.tell())

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        return int(self._native.readinto(buffer))

    def close(self) -> None:
        self._native.close()
        super().close()


@dataclass(frozen=True)
class S3Object:
    """One source object: its URL (the split's ``uri``), its size, and a way to open it."""

    fs: pafs.S3FileSystem
    url: S3Url
    size: int

    @property
    def uri(self) -> str:
        return str(self.url)

    def __str__(self) -> str:
        return self.uri

    def identity(self) -> None:
        return None  # an object's version is not in what the listing gives: nothing read from it is cached

    def open(self) -> io.BufferedReader:
        try:
            native = self.fs.open_input_file(self.url.fs_path)
        except OSError as exc:
            raise storage_error(self.url, exc) from None  # not chained: the SDK text is scrubbed above
        return io.BufferedReader(_RawObject(native), buffer_size=READ_BUFFER_BYTES)


def resolve_objects(path: str, connection: str | None) -> list[S3Object]:
    """The objects ``path`` names (a glob in the key lists the fixed prefix), sorted by key."""
    s3 = filesystem(path, connection)
    url = parse_s3_url(path)
    roots = load_policy().connections[str(connection)].roots
    try:
        if not url.is_glob():
            info = s3.get_file_info(url.fs_path)
            if info.type != pafs.FileType.File:
                raise SourceNotFoundError(f"object not found: {url}")
            return [S3Object(s3, url, int(info.size or 0))]
        base = url.glob_base()
        infos = s3.get_file_info(
            pafs.FileSelector(url.child(base).fs_path, recursive=True, allow_not_found=True)
        )
    except OSError as exc:
        raise storage_error(url, exc) from None
    # fnmatch: '*' also matches '/', so 's3://b/logs/*.csv' covers the whole prefix (keys have no folders).
    found = []
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        key = info.path.split("/", 1)[1]
        if fnmatch.fnmatchcase(key, url.key):
            child = url.child(key)
            if not under_roots(child, roots):
                raise PolicyViolation(
                    f"{path}: lists {child}, outside the roots of connection {connection!r}"
                )
            found.append(S3Object(s3, child, int(info.size or 0)))
    if not found:
        raise SourceNotFoundError(f"no object matches {path!r}")
    return sorted(found, key=lambda o: o.url.key)


def object_for(uri: str, connection: str | None) -> S3Object:
    """The object a split reads (its ``uri`` is the object's URL written by the planner), checked again."""
    s3 = filesystem(uri, connection)
    url = parse_s3_url(uri)
    try:
        info = s3.get_file_info(url.fs_path)
    except OSError as exc:
        raise storage_error(url, exc) from None
    if info.type != pafs.FileType.File:
        raise SourceNotFoundError(f"object not found: {url}")
    return S3Object(s3, url, int(info.size or 0))
