"""How the monitor's faust agents and timers fail, so that a failure is never silent:

* a handler's unexpected exception skips that one message, loudly: a bug or an odd record must not stop
  all monitoring (nor crash-loop the restarted monitor on the same record);
* a Kafka failure (``FATAL``) stops the monitor. A faust agent that raises just stops, and the process
  would look alive while monitoring nothing; stopped, it exits non-zero, and its restart processes the
  messages it had not committed again;
* a timer's transient error is retried at its next tick.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import faust
from aiokafka.errors import KafkaError

from services.monitor.exceptions import MonitorTransientError
from shared.metrics import PROCESSING_ERRORS

_log = logging.getLogger(__name__)

# Failures that mean Kafka is not taking our writes: stop, restart, and process the messages again.
FATAL = (KafkaError, MonitorTransientError, TimeoutError)

Handler = Callable[[faust.EventT], Awaitable[None]]
Timer = Callable[[], Awaitable[None]]


class Supervision:
    """The first failure of any agent or timer; the service waits on ``failed`` and then stops."""

    def __init__(self) -> None:
        self.failure: BaseException | None = None
        self.failed = asyncio.Event()

    def agent(self, name: str, handler: Handler) -> Callable[[faust.StreamT[Any]], Awaitable[None]]:
        """A faust agent that runs ``handler`` on each event of its stream."""

        async def agent(stream: faust.StreamT[Any]) -> None:
            try:
                async for event in stream.events():
                    await self._handle(name, handler, event)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                self.fail(name, exc)
                raise

        agent.__name__ = agent.__qualname__ = name.replace("-", "_")
        return agent

    async def _handle(self, name: str, handler: Handler, event: Any) -> None:
        try:
            await handler(event)
        except FATAL:
            raise
        except Exception:
            PROCESSING_ERRORS.labels("unhandled", "false").inc()
            msg = event.message
            _log.exception("%s: skipping %s[%d]@%d", name, msg.topic, msg.partition, msg.offset)

    def timer(self, name: str, timer: Timer) -> Timer:
        async def guarded() -> None:
            try:
                await timer()
            except MonitorTransientError as exc:
                _log.warning("%s: %s (retrying at the next tick)", name, exc)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                self.fail(name, exc)
                raise

        guarded.__name__ = guarded.__qualname__ = name.replace("-", "_")
        return guarded

    def fail(self, name: str, exc: BaseException) -> None:
        _log.error("%s failed: %r; stopping the monitor", name, exc, exc_info=exc)
        if self.failure is None:
            self.failure = exc
        self.failed.set()
