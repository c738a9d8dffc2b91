"""Structured logging: JSON lines carrying agent, message id, type and correlation id.

The consumer binds the per-message fields (``bound_to``, ``bound``) so every log line a
handler writes carries them without passing a logger around; ``merge_context`` adds them to a
line as it is written. Secrets never reach a log: keys are never formatted, and message bodies
are logged only as sizes and digests.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TextIO

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
            merge_context,
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


# What log lines written now are about, outermost first: fields, or a message whose fields are
# read out of its envelope only when a line is written. One context variable set and reset per
# binding: structlog's ``bound_contextvars`` copied the whole context and set a variable for
# each field, on every message every agent handled (docs/performance.md, stop 33).
Binding = tuple["Mapping[str, object] | Envelope", ...]
_BOUND: ContextVar[Binding] = ContextVar("kabuto_log_bound", default=())


def bound(**fields: object) -> AbstractContextManager[None]:
    """Log lines written inside carry ``fields``."""
    return _pushed(fields)


def bound_to(envelope: Envelope, **more: object) -> AbstractContextManager[None]:
    """Log lines written inside name this message: its id, type, conversation, cause and sender."""
    return _pushed(envelope, more) if more else _pushed(envelope)


def binding() -> Binding:
    """What log lines written here carry, for work done later on this one's behalf (``rebound``)."""
    return _BOUND.get()


@contextmanager
def rebound(kept: Binding) -> Iterator[None]:
    """Log lines written inside carry what they carried where ``kept`` was taken (``binding``),
    and nothing bound since: work one message's handler left to be done with a later one's."""
    token = _BOUND.set(kept)
    try:
        yield
    finally:
        _BOUND.reset(token)


@contextmanager
def _pushed(*layers: Mapping[str, object] | Envelope) -> Iterator[None]:
    token = _BOUND.set((*_BOUND.get(), *layers))
    try:
        yield
    finally:
        _BOUND.reset(token)


def merge_context(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor, first in the chain: structlog's own context variables, then what
    ``bound`` and ``bound_to`` hold (the innermost winning), then the line's own fields. Kabuto
    binds only through ``bound`` and ``bound_to``: a field bound with structlog's
    ``bound_contextvars`` loses to one of ours of the same name, wherever it is nested."""
    merged: dict[str, Any] = dict(structlog.contextvars.get_contextvars())
    for layer in _BOUND.get():
        merged.update(layer if isinstance(layer, Mapping) else _message_fields(layer))
    merged.update(event_dict)
    return merged


def _message_fields(envelope: Envelope) -> dict[str, object]:
    return {
        "message_id": str(envelope.message_id),
        "type": envelope.type,
        "correlation_id": str(envelope.correlation_id),
        "causation_id": str(envelope.causation_id or ""),
        "sender": envelope.sender,
    }
