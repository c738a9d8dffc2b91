"""The message catalogue: every message type, its version, and who may send it to whom.

A message model subclasses ``Message`` and registers itself with ``@message(...)``. The
runtime looks a delivery's (type, version) up here to find the model that parses its payload
and the roles that may send and receive it.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict

from schemas.identity import Role


class Message(BaseModel):
    """Base of every payload; the envelope carries its type and version."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec: ClassVar[MessageSpec]


@dataclass(frozen=True, slots=True)
class MessageSpec:
    type: str
    version: int
    model: builtins.type[Message]
    senders: frozenset[Role]
    # Empty for an event: it goes to the integrators' topic exchange, not to one participant.
    recipients: frozenset[Role]
    summary: str
    # This version carries account information in clear (R-001-06): a newer version seals it,
    # and receivers refuse this one after the cut-over (KABUTO_CLEAR_ACCOUNTS_UNTIL).
    clear_accounts: bool = False
    # An answer to work its recipient already took on (a cover granted, securities reserved):
    # routed to the recipient agent's answers queue, which it consumes ahead of its inbox, so
    # the answer never waits behind new work (broker/topology.py, docs/performance.md).
    answer: bool = False

    @property
    def is_event(self) -> bool:
        return not self.recipients


_CATALOGUE: dict[tuple[str, int], MessageSpec] = {}
# Roles only Kabuto's agents take (investors and merchants may be external systems).
AGENT_ROLES = frozenset(
    {Role.ISSUER, Role.EXCHANGE, Role.SETTLEMENT, Role.BROKERAGE, Role.CUSTODY, Role.CREDIT, Role.CARD_ISSUER}
)
M = TypeVar("M", bound=type[Message])


def message(
    type_: str,
    *,
    version: int = 1,
    senders: set[Role],
    recipients: set[Role] | None = None,
    clear_accounts: bool = False,
    answer: bool = False,
) -> Callable[[M], M]:
    """Register a message model under its wire type and version."""

    def register(model: M) -> M:
        key = (type_, version)
        if key in _CATALOGUE:
            raise ValueError(f"message {type_} v{version} is registered twice")
        if answer and not (recipients and recipients <= AGENT_ROLES):
            raise ValueError(f"answer {type_} must go to agents only: an external participant has no answers queue")
        spec = MessageSpec(
            type_,
            version,
            model,
            frozenset(senders),
            frozenset(recipients or ()),
            (model.__doc__ or "").strip().split("\n")[0],
            clear_accounts,
            answer,
        )
        model.spec = spec
        _CATALOGUE[key] = spec
        return model

    return register


_LOADED = False


def lookup(type_: str, version: int) -> MessageSpec | None:
    _load_all()
    return _CATALOGUE.get((type_, version))


def specs() -> Iterator[MessageSpec]:
    _load_all()
    return iter(sorted(_CATALOGUE.values(), key=lambda s: (s.type, s.version)))


def _load_all() -> None:
    """Import every message family so the catalogue is complete: once (the import statements
    cost a lookup of each module on every message opened, docs/performance.md, stop 33)."""
    global _LOADED
    if _LOADED:
        return
    import schemas.custody  # noqa: F401
    from schemas import brokerage, certificates, issuance, lifecycle, settlement, trading  # noqa: F401
    from schemas import credit, prices  # noqa: F401  # isort: skip
    from schemas import dvp  # noqa: F401  # isort: skip

    _LOADED = True
