"""``python -m services.monitor`` with faust's table writes and offset commits held back: every moment
of this process is like the one right after an alert was acknowledged and before faust wrote the table
change that records it to its changelog (and, after that write, committed the input offsets). A SIGKILL
at any time lands in that window, so a fault test can aim at it deterministically.

Test support only: it replaces two faust methods in this process, nothing of the monitor's own code.
Table writes reach the changelog through faust's producer buffer (``send_soon``); the buffer keeps
them here instead of sending them.
"""

from __future__ import annotations

from typing import Any

from faust.transport.consumer import Consumer
from faust.transport.producer import ProducerBuffer
from faust.types import FutureMessage

from services.monitor.service import MonitorService
from shared.runtime import run_service

_held: list[FutureMessage] = []


def _keep(self: ProducerBuffer, fut: FutureMessage) -> None:
    _held.append(fut)


async def _commit_held(self: Consumer, *args: Any, **kwargs: Any) -> bool:
    return False  # nothing committed yet


if __name__ == "__main__":
    ProducerBuffer.put = _keep  # type: ignore[method-assign]
    Consumer.force_commit = _commit_held  # type: ignore[method-assign]
    raise SystemExit(run_service(MonitorService))
