"""What the in-process gateway tests share: a fake bus (a list of what was published), the settings, and
API keys of each role in two tenants, held by a key ring that is always fresh (a frozen clock)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, TypeVar

from services.gateway.bus import RecordPosition
from services.gateway.configuration import GatewaySettings
from services.gateway.core import Gateway
from services.gateway.exceptions import GatewayTransientError
from services.gateway.reading import TopicPage, TopicRecord
from shared.auth.keys import IssuedKey, KeyRing, issue_key
from shared.contracts import AuditRecord, Contract, PipelineRequest, Role

C = TypeVar("C", bound=Contract)

GITHUB_SECRET = "gh-secret-of-16+bytes"
STRIPE_SECRET = "whsec_stripe-secret-16+bytes"
PLAIN_SECRET = "plain-secret-16+bytes"
STD_SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()

TENANT = "acme"
ADMIN = issue_key(TENANT, Role.ADMIN, created_by="test")
OPERATOR = issue_key(TENANT, Role.OPERATOR, created_by="test")
VIEWER = issue_key(TENANT, Role.VIEWER, created_by="test")
OTHER_ADMIN = issue_key("globex", Role.ADMIN, created_by="test")
KEYS_BY_ROLE = {Role.VIEWER: VIEWER, Role.OPERATOR: OPERATOR, Role.ADMIN: ADMIN}  # lowest first


def bearer(key: IssuedKey | str) -> dict[str, str]:
    token = key if isinstance(key, str) else key.token
    return {"Authorization": f"Bearer {token}"}


class FakeBus:
    """Kafka as a list: every record is acknowledged at once at the next offset of one partition per
    topic, and there is no follower (the gateway applies its own records, as it does after reading them
    back), so ``caught_up_to`` has nothing to wait for unless a test holds it."""

    def __init__(self) -> None:
        self.ready = True
        self.down = False
        self.audit_down = False
        self.published: list[tuple[str, str, Contract | None]] = []
        # bytes published as they were (a re-driven dead letter): topic, key, value, headers
        self.raw: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]] = []
        self.stored: dict[RecordPosition, Contract] = {}  # what read_at finds (``store``)
        self.gate: asyncio.Event | None = None
        self.before_caught_up: Callable[[RecordPosition], Awaitable[None]] | None = None

    async def publish(self, topic: str, key: str, value: Contract | None) -> RecordPosition:
        if self.gate is not None:
            await self.gate.wait()
        if self.down or (self.audit_down and isinstance(value, AuditRecord)):
            raise GatewayTransientError("broker down")
        offset = sum(1 for t, _, _ in self.published if t == topic)
        self.published.append((topic, key, value))
        return RecordPosition(topic, 0, offset)

    async def publish_raw(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> RecordPosition:
        if self.down:
            raise GatewayTransientError("broker down")
        self.raw.append((topic, key, value, headers))
        return RecordPosition(topic, 0, sum(1 for t, *_ in self.raw if t == topic) - 1)

    def store(self, topic: str, value: Contract, partition: int = 0) -> RecordPosition:
        """Put a record on a topic as another writer would (not ``published``): ``read_at`` finds it."""
        offset = sum(1 for p in self.stored if (p.topic, p.partition) == (topic, partition))
        position = RecordPosition(topic, partition, offset)
        self.stored[position] = value
        return position

    async def read_at(self, position: RecordPosition, contract: type[C]) -> C | None:
        if self.down:
            raise GatewayTransientError("broker down")
        found = self.stored.get(position)
        return found if isinstance(found, contract) else None

    async def read_page(
        self,
        topic: str,
        start: Mapping[int, int] | Literal["end"] | None,
        limit: int,
        contract: type[Contract],
    ) -> TopicPage:
        """The ``stored`` records of ``topic`` from ``start``, as ``services.gateway.reading.read_page``."""
        if self.down:
            raise GatewayTransientError("broker down")
        ends: dict[int, int] = {0: 0}
        for p in self.stored:
            if p.topic == topic:
                ends[p.partition] = max(ends.get(p.partition, 0), p.offset + 1)
        page = TopicPage(ends=ends)
        page.positions = {p: end if start == "end" else (start or {}).get(p, 0) for p, end in ends.items()}
        for partition in sorted(ends):
            while page.positions[partition] < ends[partition] and len(page.records) < limit:
                offset = page.positions[partition]
                found = self.stored.get(RecordPosition(topic, partition, offset))
                page.records.append(
                    TopicRecord(partition, offset, found if isinstance(found, contract) else None)
                )
                page.positions[partition] = offset + 1
        return page

    async def caught_up_to(self, position: RecordPosition) -> None:
        if self.before_caught_up is not None:
            await self.before_caught_up(position)

    def on(self, topic: str) -> list[tuple[str, Contract | None]]:
        return [(key, value) for t, key, value in self.published if t == topic]

    def requests(self) -> list[PipelineRequest]:
        return [v for _, _, v in self.published if isinstance(v, PipelineRequest)]

    def audits(self) -> list[AuditRecord]:
        return [v for _, _, v in self.published if isinstance(v, AuditRecord)]

    def actions(self) -> list[tuple[str, str, Contract | None]]:
        """Everything published but the audit records: what the calls did."""
        return [p for p in self.published if not isinstance(p[2], AuditRecord)]


def make_settings(**overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "topic_suffix": ".unit",
        "max_body_bytes": 2048,
        "api_max_body_bytes": 4096,
        "auth_api_keys": True,
        "rate_limit_per_s": 1000.0,
        "rate_limit_burst": 1000,
        "console_stream_s": 0,  # the console's event streams end at once (tests read them to the end)
        "webhooks": {
            # the senders of the keys' tenant: its definitions' triggers match their deliveries
            "github": {"scheme": "github", "secrets": [GITHUB_SECRET], "tenant": TENANT},
            "stripe": {"scheme": "stripe", "secrets": [STRIPE_SECRET], "tenant": TENANT},
            "acme": {"scheme": "standard", "secrets": [STD_SECRET], "tenant": TENANT},
            "plain": {"scheme": "hmac", "secrets": [PLAIN_SECRET], "signature_header": "X-Plain-Sig"},
        },
        "triggers": [
            {
                "source": "github",
                "event": "push",
                "definition": "repo-sync",
                "where": {"ref": "refs/heads/main"},
                "parameters": {"commit": "head_commit.id", "repo": "repository.full_name", "n": "size"},
            },
            {"source": "github", "event": "push", "definition": "audit"},
            {"source": "stripe", "event": "invoice.paid", "definition": "billing"},
            {"source": "acme", "definition": "acme-any"},
            {"source": "plain", "event": "thing", "definition": "plain"},
        ],
    }
    values.update(overrides)
    return GatewaySettings(**values)


def fresh_ring(*keys: IssuedKey) -> KeyRing:
    """A ring holding ``keys`` that stays fresh: its clock never moves."""
    ring = KeyRing(10.0, clock=lambda: 1000.0)
    for key in keys:
        ring.apply(key.key_id, key.record)
    ring.confirm_fresh(1000.0)
    return ring


def make_gateway(bus: FakeBus, **overrides: Any) -> Gateway:
    ring = fresh_ring(ADMIN, OPERATOR, VIEWER, OTHER_ADMIN)
    return Gateway.in_memory(make_settings(**overrides), bus, keys=ring)
