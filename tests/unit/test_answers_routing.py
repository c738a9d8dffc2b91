"""Where an answer goes (issue 8): the recipient agent's answers queue, never an external participant's."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from broker import outbox
from broker.catalogue import asyncapi, message_key
from broker.envelope import seal
from broker.pki import KeyStore
from broker.topology import Names
from schemas import catalogue
from schemas.catalogue import AGENT_ROLES, Message, message
from schemas.dvp import CoverGranted, CoverRelease, CoverRequest, SecuritiesReserved
from schemas.identity import Role

NOW = datetime(2026, 12, 2, tzinfo=UTC)


def test_an_answer_is_routed_to_the_answers_queue_and_new_work_to_the_inbox(keys: KeyStore) -> None:
    settlement, exchange = keys.load_identity("settlement"), keys.load_identity("exchange")
    grant = seal(settlement, CoverGranted(cover_id=uuid.uuid4(), amount=1), recipient="exchange", now=NOW)
    request = seal(exchange, CoverRelease(cover_id=uuid.uuid4()), recipient="settlement", now=NOW)
    assert outbox.routing_key(grant.envelope) == "exchange.answers"
    assert outbox.routing_key(request.envelope) == "settlement"
    assert Names.is_answers_key("exchange.answers") and not Names.is_answers_key("exchange")
    assert not Names.is_answers_key(None)


def test_the_answers_are_the_replies_that_finish_work_under_way() -> None:
    answers = {s.type for s in catalogue.specs() if s.answer}
    assert answers == {
        "settlement.cover.granted",
        "settlement.cover.refused",
        "securities.reserved",
        "securities.reservation_refused",
        "securities.committed",
        "securities.commit",
        "securities.release",
    }
    assert SecuritiesReserved.spec.answer and not CoverRequest.spec.answer


def test_an_answer_to_a_role_an_external_system_may_take_cannot_be_declared() -> None:
    assert Role.INVESTOR not in AGENT_ROLES and Role.MERCHANT not in AGENT_ROLES
    with pytest.raises(ValueError, match="agents only"):

        @message("test.answer_to_investor", senders={Role.EXCHANGE}, recipients={Role.INVESTOR}, answer=True)
        class AnswerToInvestor(Message):
            pass


def test_the_contract_names_the_answers_address() -> None:
    channels = asyncapi("kabuto")["channels"]
    assert channels[message_key(CoverGranted.spec)]["address"] == "{recipient}.answers"
    assert channels[message_key(CoverRequest.spec)]["address"] == "{recipient}"


def test_the_agent_a_routing_key_addresses_is_known_and_a_participant_is_none() -> None:
    """A row parked for one of these is an agent not started yet (broker.relay_window)."""
    assert Names.agent_of_key("exchange") == "exchange"
    assert Names.agent_of_key("settlement.answers") == "settlement"
    assert Names.agent_of_key("card-issuer.answers") == "credit"  # the credit agent hosts the card issuer
    assert Names.agent_of_key("alice") is None
    assert Names.agent_of_key("alice.answers") is None
    assert Names.agent_of_key("exchange.1000") is None  # a retry delay key is not a message address
