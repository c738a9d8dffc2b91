"""Structured logging: JSON lines carrying agent, message id, type and correlation id.

The consumer binds the per-message fields with ``bound_contextvars`` so every log line a
handler writes carries them without passing a logger around. Secrets never reach a log:
keys are never formatted, and message bodies are logged only as sizes and digests.
"""

from __future__ import annotations

import logging
import sys
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, TextIO

import structlog

if TYPE_CHECKING:
    from schemas.envelope import Envelope


def configure(level: str = "info", fmt: str = "json", stream: TextIO | None = None, *, cache: bool = True) -> None:
    """Configure structlog once, at the composition root (``stream`` defaults to standard error).

    ``cache=False`` keeps loggers re-reading the configuration, for tests that reconfigure it.
    """
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.WriteLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=cache,
    )


def get(name: str) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(logger_name=name)
    return logger


def bound_to(envelope: Envelope, **more: object) -> AbstractContextManager[None]:
    """Log lines written inside name this message: its id, type, conversation, cause and sender."""
    return structlog.contextvars.bound_contextvars(
        message_id=str(envelope.message_id),
        type=envelope.type,
        correlation_id=str(envelope.correlation_id),
        causation_id=str(envelope.causation_id or ""),
        sender=envelope.sender,
        **more,
    )
