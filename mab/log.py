"""structlog, configured once: JSON lines (or a console view) on stdout."""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
import structlog

from mab.config import Config


def _orjson_dumps(event: Any, **_: Any) -> bytes:
    return orjson.dumps(event, default=str)


def configure(config: Config) -> None:
    """Set up structlog for this process; call again after a fork to rebind stdout."""
    level = logging.getLevelNamesMapping()[config.log_level.upper()]
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if config.log_format == "json":
        processors = [
            *shared,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_orjson_dumps),
        ]
        factory: Any = structlog.BytesLoggerFactory(sys.stdout.buffer)
    else:
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


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
