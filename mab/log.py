"""structlog, configured once: JSON lines (or a console view) on stdout.

structlog's BytesLogger flushes after every line: a write(2) per request, ~10% of
a worker's time at 400 items. Lines logged on an event loop are instead gathered
and written together at the end of the loop iteration, so a burst of requests
costs one write(2). A line is at most one loop iteration (microseconds) late;
lines logged outside a loop are written at once.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable
from typing import Any, BinaryIO, Generic, TypeVar

import orjson
import structlog

from mab.config import Config


def _orjson_dumps(event: Any, **_: Any) -> bytes:
    return orjson.dumps(event, default=str)


T = TypeVar("T")

# An event field for IsoTimeStamper: the time.time() the event happened, when it is
# rendered later than that (see Deferred).
LOGGED_AT = "_logged_at"


class Deferred(Generic[T]):
    """Items handed to `handle` together, at the end of the loop iteration they were
    added in (at once outside a loop); `flush` hands over what is left. Items are
    added on the loop's thread only (the loop path needs no lock).

    Log lines go out this way twice. Written lines (LoopBatchedLogger): one write(2)
    for a burst of requests. And the per-request line itself, before structlog
    renders it: a request's native work and its 200 KB answer push the interpreter's
    code and data out of the caches, so lines rendered back to back cost half what
    one rendered inside its request does (bench/RESULTS.md, section 0). A request
    keeps only a tuple of raw values until then.
    """

    def __init__(self, handle: Callable[[list[T]], None]) -> None:
        self._handle = handle
        self._pending: list[T] = []

    def add(self, item: T) -> None:
        self.extend([item])

    def extend(self, items: list[T]) -> None:
        """`add` each of them, in order."""
        loop = asyncio._get_running_loop()  # the C fast path of get_running_loop
        if loop is None:
            self._handle(items)
            return
        if not self._pending:
            loop.call_soon(self.flush)
        self._pending.extend(items)

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending:
            self._handle(pending)


class LoopBatchedLogger:
    """A structlog logger of JSON bytes lines, written once per loop iteration
    (Deferred); lines from a thread without a loop are written at once, each in one
    write, so lines never interleave."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._lines: Deferred[bytes] = Deferred(self._write)

    def msg(self, message: bytes) -> None:
        self._lines.add(message)

    def write(self, messages: list[bytes]) -> None:
        """Lines rendered already, written as `msg` would write each."""
        self._lines.extend(messages)

    log = debug = info = warn = warning = error = critical = exception = fatal = msg

    def flush(self) -> None:
        self._lines.flush()
        self._stream.flush()

    def _write(self, lines: list[bytes]) -> None:
        lines.append(b"")
        self._stream.write(b"\n".join(lines))
        self._stream.flush()


_batched: LoopBatchedLogger | None = None


class IsoTimeStamper:
    """Adds `timestamp` as ISO 8601 UTC with microseconds, as structlog's
    TimeStamper(fmt="iso", utc=True) writes it, formatting the date and time once a
    second: the per-line datetime formatting was a third of a request line's cost.
    The time is the event's LOGGED_AT field when it has one, else now."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, _: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
        event["timestamp"] = self.iso(event.pop(LOGGED_AT, None) or time.time())
        return event

    def iso(self, now: float) -> str:
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((now - second) * 1e6):06d}Z"


_stamper = IsoTimeStamper()
_info = False  # whether info lines are written


def json_lines() -> tuple[IsoTimeStamper, Callable[[list[bytes]], None]] | None:
    """For a hot path that renders its own info lines as structlog's JSON processors
    would (the per-request line, mab/app.py): the timestamper and the writer of
    rendered lines. None when they are not wanted as JSON (console format, or a level
    above info): then log through structlog."""
    if _batched is None or not _info:
        return None
    return _stamper, _batched.write


def flush() -> None:
    """Write out lines still waiting for their loop iteration to end."""
    if _batched is not None:
        _batched.flush()


def configure(config: Config) -> None:
    """Set up structlog for this process; call again after a fork to rebind stdout."""
    level = logging.getLevelNamesMapping()[config.log_level.upper()]
    # No merge_contextvars: nothing is bound through contextvars, and copying
    # them costs every line.
    global _batched, _info
    _info = level <= logging.INFO
    shared: list[Any] = [
        structlog.processors.add_log_level,
        _stamper,
    ]
    if config.log_format == "json":
        processors = [
            *shared,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_orjson_dumps),
        ]
        _batched = LoopBatchedLogger(sys.stdout.buffer)
        logger = _batched

        def factory(*_: Any) -> Any:
            return logger

    else:
        _batched = None
        processors = [*shared, structlog.dev.ConsoleRenderer(colors=False)]
        factory = structlog.PrintLoggerFactory(sys.stdout)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    # aiohttp and asyncio log through the stdlib: route their warnings to stderr.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, force=True)
