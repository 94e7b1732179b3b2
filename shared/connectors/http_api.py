"""HTTP JSON APIs: pagination by page number, response cursor or RFC 8288 ``Link: rel="next"``.

Failures are retried with exponential backoff (honouring ``Retry-After``) on 429, 5xx and connection
errors; when retries run out the error is transient (``SourceUnavailableError``) so the task can be
retried later. Other 4xx answers are terminal. Requests are spaced by ``1 / rate_limit_per_s`` seconds.

Only page-numbered APIs with a known ``max_pages`` can be split (into page ranges); cursor and link
pagination are inherently sequential, so they are one split.

Egress (``shared.policy.egress``): the URL is checked again here, every connection goes through the
checking, address-pinning transport, and redirects are followed here (at most ``MAX_REDIRECTS``), each
target checked before it is asked for. A refused address is an ``EgressRefusedError`` (terminal).
Credentials: the ``Authorization`` value is the secret of the connection the source names, sent only to
the origin (scheme, host, port) of the spec's URL: never to a redirect target or a ``Link`` page on
another origin.
"""

from __future__ import annotations

import email.utils
import itertools
import json
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pyarrow as pa

from shared.connectors.base import describe, number_splits, whole_split
from shared.connectors.errors import SourceNotFoundError, SourceReadError, SourceUnavailableError
from shared.connectors.records import dotted_get, records_at, records_to_tables
from shared.contracts import Split, SplitKind
from shared.policy.connections import connection_for
from shared.policy.egress import EgressPolicy, EgressRefusedError, egress_client
from shared.policy.settings import PolicySettings, load_policy
from shared.redaction import redact
from shared.spec.models import HttpSource, Pagination

FIRST_PAGE = 1
TIMEOUT_S = 30.0
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 60.0
MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

model = HttpSource  # the spec section it reads (``Connector.model``)
info = describe(
    HttpSource,
    "A JSON HTTP API (GET). Pagination: none, page (?page=N until an empty page), cursor (next cursor "
    "read from cursor_path) or link (RFC 8288 Link rel=next). Retries 429/5xx with backoff; rate "
    "limited; Authorization header from a declared http connection (connection).",
    (SplitKind.WHOLE, SplitKind.PAGES),
)


def plan(
    source: HttpSource, parallelism: int | None, *, payload: bytes | None, batch_rows: int
) -> list[Split]:
    if source.pagination is not Pagination.PAGE:
        return whole_split()
    last = None if source.max_pages is None else FIRST_PAGE + source.max_pages
    if last is None or not parallelism or parallelism == 1:
        return whole_split(SplitKind.PAGES, start=FIRST_PAGE, end=last)
    pages = last - FIRST_PAGE
    count = min(parallelism, pages)
    bounds = [FIRST_PAGE + pages * i // count for i in range(count + 1)]
    ranges = [{"start": lo, "end": hi} for lo, hi in itertools.pairwise(bounds)]
    return number_splits(ranges, SplitKind.PAGES)


Origin = tuple[str, str, int | None]


def _origin(url: httpx.URL) -> Origin:
    return url.scheme, url.host, url.port


class _Fetcher:
    """GET with rate limiting, retries and checked redirects; returns the decoded JSON and the response."""

    def __init__(
        self, source: HttpSource, client: httpx.Client, egress: EgressPolicy, credential: str | None
    ) -> None:
        self._source = source
        self._client = client
        self._egress = egress
        self._credential = credential
        self._origin = _origin(httpx.URL(source.url))
        self._interval = 1.0 / source.rate_limit_per_s if source.rate_limit_per_s else 0.0
        self._next_at = 0.0

    def get(self, url: str | httpx.URL, params: dict[str, Any] | None = None) -> tuple[Any, httpx.Response]:
        retries = self._source.max_retries
        for attempt in range(retries + 1):
            self._respect_rate_limit()
            try:
                # httpx would replace the URL's own query string with ``params``; merge them instead.
                target = httpx.URL(url).copy_merge_params(params) if params else httpx.URL(url)
                response = self._follow(target)
            except httpx.TransportError as exc:
                if attempt == retries:
                    raise SourceUnavailableError(
                        redact(f"GET {url}: {exc!r} after {retries} retries")
                    ) from exc
                time.sleep(_backoff(attempt))
                continue
            status = response.status_code
            if status == 429 or status >= 500:
                if attempt == retries:
                    raise SourceUnavailableError(f"GET {response.url}: HTTP {status} after {retries} retries")
                time.sleep(_retry_after(response) or _backoff(attempt))
                continue
            if status == 404:
                raise SourceNotFoundError(f"GET {response.url}: HTTP 404")
            if status >= 400:
                # The body may echo what we sent (the Authorization header): redacted.
                raise SourceReadError(redact(f"GET {response.url}: HTTP {status}: {response.text[:200]!r}"))
            try:
                return response.json(), response
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise SourceReadError(f"GET {response.url}: response is not JSON: {exc}") from exc
        raise AssertionError("unreachable")  # the loop always returns or raises

    def _follow(self, url: httpx.URL) -> httpx.Response:
        """One GET and its redirects, each target checked like the spec's URL before it is asked for;
        the credential goes to the spec URL's origin only (httpx would decide that on its own terms)."""
        for _ in range(MAX_REDIRECTS + 1):
            send_credential = self._credential is not None and _origin(url) == self._origin
            headers = {"Authorization": self._credential} if send_credential and self._credential else {}
            response = self._client.get(url, headers=headers)
            location = response.headers.get("Location")
            if response.status_code not in REDIRECT_STATUSES or not location:
                return response
            response.close()
            url = self._redirect_target(response.url, location)
        raise SourceReadError(f"GET {self._source.url}: more than {MAX_REDIRECTS} redirects")

    def _redirect_target(self, current: httpx.URL, location: str) -> httpx.URL:
        try:
            target = current.join(location)
        except httpx.InvalidURL as exc:
            raise EgressRefusedError(redact(f"redirect from {current} to an invalid URL: {exc}")) from None
        why = self._egress.check_url(str(target))
        if why is not None:
            raise EgressRefusedError(redact(f"redirect from {current} to {target} refused: {why}"))
        return target

    def _respect_rate_limit(self) -> None:
        now = time.monotonic()
        if now < self._next_at:
            time.sleep(self._next_at - now)
        self._next_at = max(now, self._next_at) + self._interval


def _backoff(attempt: int) -> float:
    """Exponential backoff with full jitter, so retrying clients do not synchronise."""
    return float(min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt * (0.5 + random.random() / 2)))


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (email.utils.parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            return None
    return min(BACKOFF_MAX_S, max(0.0, seconds))


def _credential(source: HttpSource, policy: PolicySettings) -> str | None:
    """The Authorization value of the connection the source names (checked again here), if any."""
    use = connection_for(source, policy)
    return None if use is None else use.secret()


def _pages(source: HttpSource, split: Split, fetch: _Fetcher) -> Iterator[list[dict[str, Any]]]:
    """Each page's records, in order, until the API says there is nothing more or ``max_pages``."""
    max_pages = source.max_pages or float("inf")
    if source.pagination is Pagination.NONE:
        document, response = fetch.get(source.url)
        yield records_at(document, source.records_path, where=f"GET {response.url}")
    elif source.pagination is Pagination.PAGE:
        page = split.start if split.start is not None else FIRST_PAGE
        end = split.end if split.end is not None else FIRST_PAGE + max_pages
        while page < end:
            document, response = fetch.get(source.url, {source.page_param: page})
            records = records_at(document, source.records_path, where=f"GET {response.url}")
            if not records:
                return
            yield records
            page += 1
    elif source.pagination is Pagination.CURSOR:
        cursor: Any = None
        fetched = 0
        while fetched < max_pages:
            document, response = fetch.get(source.url, {source.cursor_param: cursor} if cursor else None)
            fetched += 1
            records = records_at(document, source.records_path, where=f"GET {response.url}")
            yield records
            next_cursor = dotted_get(document, source.cursor_path or "")
            # A repeated cursor would loop forever; an empty page with a cursor is treated as the end too.
            if not records or next_cursor in (None, "") or next_cursor == cursor:
                return
            cursor = next_cursor
    else:  # Pagination.LINK
        url: httpx.URL | str | None = source.url
        fetched = 0
        while url is not None and fetched < max_pages:
            document, response = fetch.get(url)
            fetched += 1
            yield records_at(document, source.records_path, where=f"GET {response.url}")
            next_link = response.links.get("next", {}).get("url")
            url = response.url.join(next_link) if next_link else None


def read(source: HttpSource, split: Split, batch_rows: int, *, payload: bytes | None) -> Iterator[pa.Table]:
    policy = load_policy()
    egress = EgressPolicy.from_settings(policy)
    why = egress.check_url(source.url)  # the validation check, again where the connector acts
    if why is not None:
        raise EgressRefusedError(f"GET {source.url} refused: {why}")
    credential = _credential(source, policy)
    with egress_client(egress, headers={"Accept": "application/json"}, timeout=TIMEOUT_S) as client:
        fetch = _Fetcher(source, client, egress, credential)
        records = (record for page in _pages(source, split, fetch) for record in page)
        yield from records_to_tables(records, batch_rows, where=f"GET {source.url}")
