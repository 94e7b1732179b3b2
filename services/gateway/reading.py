"""Reading a topic on demand, for one HTTP request, beside the gateway's follower (``services.gateway.bus``):
one record back (``read_at``: a dead letter's payload, which the views do not keep) or a page of a topic
from given offsets (``read_page``: ``GET /results``).

Each read has a group-less reader of its own, so the follower's position never moves and nobody's offsets
are committed, and each is bounded by the gateway's send timeout: Kafka not answering is
``GatewayTransientError`` (503), never a hung request.

A page's positions are the reader's own (``position`` after the records handed over), not "last offset +
1": the topics are written transactionally, and a transaction's commit marker takes an offset that no
record has, so a cursor built from record offsets would ask for the marker again and again and a partition
read to its end would look unfinished. A partition is at its end when its position reaches the end offset.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from services.gateway.exceptions import GatewayTransientError
from shared.avro import AvroError
from shared.contracts import Contract
from shared.kafka.types import Serde

C = TypeVar("C", bound=Contract)
PAGE_WAIT_S = 1.0  # at most this long waiting for the records of a page that Kafka says exist


@dataclass(frozen=True)
class TopicRecord:
    """One record of a page: its place, and its value (None when it is not a ``contract``)."""

    partition: int
    offset: int
    value: Contract | None


@dataclass
class TopicPage:
    records: list[TopicRecord] = field(default_factory=list)
    positions: dict[int, int] = field(default_factory=dict)  # partition -> next offset to read
    ends: dict[int, int] = field(default_factory=dict)  # partition -> its end offset when read

    @property
    def more(self) -> bool:
        """Records past this page were already on the topic when it was read."""
        return any(self.positions.get(p, 0) < end for p, end in self.ends.items())


async def read_at(
    reader: AIOKafkaConsumer, serde: Serde, tp: TopicPartition, offset: int, contract: type[C], timeout: float
) -> C | None:
    """The record at ``offset``, decoded; None when it is gone (retention) or not a ``contract``."""
    try:
        await asyncio.wait_for(reader.start(), timeout)
        reader.assign([tp])
        reader.seek(tp, offset)
        batches = await reader.getmany(tp, timeout_ms=int(timeout * 1000), max_records=1)
    except (TimeoutError, KafkaError) as exc:
        raise GatewayTransientError(f"Kafka did not answer: {exc!r}") from exc
    finally:
        await reader.stop()
    found = [r for r in batches.get(tp, []) if r.offset == offset and r.value is not None]
    if not found:
        return None
    try:
        return serde.decode(found[0].value, contract)
    except AvroError:
        return None


async def read_page(
    reader: AIOKafkaConsumer,
    serde: Serde,
    topic: str,
    partitions: Callable[[str], Awaitable[set[int]]],
    start: Mapping[int, int] | Literal["end"] | None,
    limit: int,
    contract: type[Contract],
    timeout: float,
) -> TopicPage:
    """Up to ``limit`` records of ``topic`` from ``start`` (partition -> offset; a partition it does not
    name, or ``start`` None, from its beginning; an offset retention removed, from the oldest kept; "end":
    from the end offsets, so the page is only the positions to follow from)."""
    page = TopicPage()
    try:
        await asyncio.wait_for(reader.start(), timeout)
        numbers = await asyncio.wait_for(partitions(topic), timeout)
        tps = [TopicPartition(topic, p) for p in sorted(numbers)]
        reader.assign(tps)
        begins = await reader.beginning_offsets(tps)
        page.ends = {tp.partition: end for tp, end in (await reader.end_offsets(tps)).items()}
        for tp in tps:
            ends = page.ends[tp.partition]
            asked = ends if start == "end" else (start or {}).get(tp.partition, begins[tp])
            at = min(max(asked, begins[tp]), ends)
            reader.seek(tp, at)
            page.positions[tp.partition] = at
        await _fill(reader, serde, tps, page, limit, contract)
    except (TimeoutError, KafkaError) as exc:
        raise GatewayTransientError(f"Kafka did not answer: {exc!r}") from exc
    finally:
        await reader.stop()
    return page


async def _fill(
    reader: AIOKafkaConsumer,
    serde: Serde,
    tps: list[TopicPartition],
    page: TopicPage,
    limit: int,
    contract: type[Contract],
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PAGE_WAIT_S
    while len(page.records) < limit and page.more and loop.time() < deadline:
        wanting = [tp for tp in tps if page.positions[tp.partition] < page.ends[tp.partition]]
        left_ms = max(int((deadline - loop.time()) * 1000), 1)
        batches = await reader.getmany(*wanting, timeout_ms=left_ms, max_records=limit - len(page.records))
        for tp in wanting:
            records = batches.get(tp, [])
            for record in records:
                page.records.append(
                    TopicRecord(tp.partition, record.offset, _decoded(serde, record.value, contract))
                )
            # all it handed over is taken: the reader's position is past them and past any commit marker
            page.positions[tp.partition] = await reader.position(tp)


def _decoded(serde: Serde, value: bytes | None, contract: type[Contract]) -> Contract | None:
    if value is None:
        return None
    try:
        return serde.decode(value, contract)
    except AvroError:
        return None
