"""The Kabuto client library for external participants and integrators.

It talks only to RabbitMQ — no database: connect with the participant's key and identity
certificate (``kabuto ca enrol``), sign and publish, await verified replies by correlation
id, place idempotent orders, check events, replay the events journal. See
docs/client.md; ``examples/place_orders.py`` runs it end to end.
"""

from kabuto_client.covers import close_standing_cover, open_standing_cover
from kabuto_client.events import JOURNAL_FRESHNESS, JournalEntry, open_event, replay
from kabuto_client.orders import buy_order, dividend, handover, place, sell_order, verified
from kabuto_client.participant import ClientError, Conversation, Participant, Refusal

__all__ = [
    "JOURNAL_FRESHNESS",
    "ClientError",
    "Conversation",
    "JournalEntry",
    "Participant",
    "Refusal",
    "buy_order",
    "close_standing_cover",
    "dividend",
    "handover",
    "open_event",
    "open_standing_cover",
    "place",
    "replay",
    "sell_order",
    "verified",
]
