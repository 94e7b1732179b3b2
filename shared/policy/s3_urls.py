"""``s3://bucket/key`` URLs and the object-storage roots of an ``s3`` connection.

An ``s3`` connection lists ``roots`` (``s3://bucket`` or ``s3://bucket/prefix``): the only objects a spec
using it may read or write. A prefix is a directory, never a string prefix: the root ``s3://b/data`` covers
``s3://b/data`` and ``s3://b/data/x.csv``, not ``s3://b/database.csv``. A URL is refused when it is not a
plain ``s3://bucket/key`` (user info, a port, a query or a fragment: an S3 URL names an object, nothing
else), when its bucket is not a valid S3 bucket name, or when its key holds a ``.`` or ``..`` segment, an
empty segment (``//``), a backslash or a control character: S3 keys are opaque strings, but endpoints and
proxies differ on whether they normalise such keys, so a key that could mean two objects is not accepted.

Pure string rules (no network), used at validation and again where a connector or sink acts
(``shared.connectors.object_store``): a glob is checked on its fixed leading segments, and every object it
lists is checked again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from shared.policy.errors import PolicyViolation

SCHEME = "s3://"
GLOB_CHARS = frozenset("*?[")
# The S3 bucket naming rules (3-63 characters, lower-case letters, digits, '.', '-'; starts and ends with a
# letter or digit); names shaped like an IPv4 address are not buckets.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_IPV4_SHAPED = re.compile(r"^\d+\.\d+\.\d+\.\d+$")


def is_s3(path: str) -> bool:
    return path[: len(SCHEME)].lower() == SCHEME


@dataclass(frozen=True)
class S3Url:
    """A checked ``s3://bucket/key``; ``key`` may be empty (the whole bucket) and may hold a glob."""

    bucket: str
    key: str

    def __str__(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.key}" if self.key else f"{SCHEME}{self.bucket}"

    @property
    def fs_path(self) -> str:
        """The path pyarrow's S3 file system takes: ``bucket/key``."""
        return f"{self.bucket}/{self.key}" if self.key else self.bucket

    def child(self, key: str) -> S3Url:
        return S3Url(self.bucket, key)

    def is_glob(self) -> bool:
        return any(ch in self.key for ch in GLOB_CHARS)

    def glob_base(self) -> str:
        """The key's leading segments that hold no wildcard (the prefix to list)."""
        fixed: list[str] = []
        for segment in self.key.split("/"):
            if any(ch in segment for ch in GLOB_CHARS):
                break
            fixed.append(segment)
        return "/".join(fixed)

    def is_under(self, root: S3Url) -> bool:
        if self.bucket != root.bucket:
            return False
        prefix = root.key.rstrip("/")
        return not prefix or self.key == prefix or self.key.startswith(prefix + "/")


def parse_s3_url(url: str) -> S3Url:
    """The bucket and key of ``url``; ``PolicyViolation`` with the reason when it is not a plain S3 URL."""
    if not is_s3(url):
        raise PolicyViolation(f"{url!r}: not an s3:// URL")
    if any(ord(ch) < 0x20 or ch == "\x7f" or ch == "\\" for ch in url):
        raise PolicyViolation(f"{url!r}: control characters and backslashes are not allowed in an S3 URL")
    parts = urlsplit(url)
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise PolicyViolation(f"{url!r}: an S3 URL names an object: no query or fragment")
    if "@" in parts.netloc or ":" in parts.netloc:
        raise PolicyViolation(
            f"{url!r}: no credentials or port in an S3 URL: the connection holds the credentials and endpoint"
        )
    bucket = parts.netloc
    if not _BUCKET.match(bucket) or _IPV4_SHAPED.match(bucket) or ".." in bucket:
        raise PolicyViolation(f"{url!r}: {bucket!r} is not a valid S3 bucket name")
    key = parts.path[1:] if parts.path.startswith("/") else parts.path
    trimmed = key[:-1] if key.endswith("/") else key  # a trailing '/' names a directory-like prefix
    if trimmed and any(segment in ("", ".", "..") for segment in trimmed.split("/")):
        raise PolicyViolation(f"{url!r}: empty, '.' and '..' segments are not allowed in an S3 key")
    return S3Url(bucket, key)


def under_roots(url: S3Url, roots: Iterable[str]) -> bool:
    return any(url.is_under(parse_s3_url(root)) for root in roots)


def confine_s3(url: str, roots: Iterable[str], *, connection: str) -> S3Url:
    """The parsed URL when it (for a glob: its fixed leading segments) is inside one of ``roots``."""
    parsed = parse_s3_url(url)
    checked = parsed.child(parsed.glob_base()) if parsed.is_glob() else parsed
    roots = list(roots)
    if not under_roots(checked, roots):
        raise PolicyViolation(
            f"{url}: outside the roots of connection {connection!r} ({', '.join(roots) or 'none'})"
        )
    return parsed
