"""No PIN or account secret in clear on the way (R-001-06, R-001-44, issue 13; B62–B63).

A customer's PIN travels sealed to the brokerage's certified X25519 key, and an account
inquiry's account id sealed to the settlement agent's: the sender's outbox, the broker and
every log hold only the sealed box; the brokerage keeps the PIN as a salted hash alone. A
box sealed to another key, or moved from another field, is dead-lettered and changes nothing.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

from structlog.testing import capture_logs

from agents.brokerage import operators
from agents.brokerage.customers import CustomerAccount
from agents.investor.brokered import identify
from agents.investor.trading import inquire_account
from broker.envelope import seal
from broker.errors import Reason
from broker.pki import KeyStore
from broker.runtime import AgentRuntime
from broker.settings import Settings
from schemas.brokerage import IdentifyCustomer
from schemas.sealed import ACCOUNT_INQUIRY_ACCOUNT, CUSTOMER_PIN
from tests import support
from tests.integration.refusal_kit import expect_dead_letter, state

PIN = "97531864"


async def _everything_stored(runtime: AgentRuntime) -> str:
    return json.dumps((await state(runtime)).tables) + "".join(
        bytes(r["body"]).decode() + json.dumps(r["headers"])
        for r in await support.rows(runtime, "SELECT body, headers::text AS headers FROM outbox_messages")
    )


async def test_the_pin_is_in_clear_in_no_outbox_no_table_and_no_log(settings: Settings) -> None:
    with capture_logs() as logged:
        async with support.agents(settings, "investor", "brokerage", "settlement") as rt:
            await support.fund(rt["settlement"], "alice", Decimal(1000))
            account = CustomerAccount("alice-cash", "intermediary", "bank", 1)
            await rt["brokerage"].command("brokerage", operators.register_customer("IM-0001", "alice", PIN, [account]))
            asked = await rt["investor"].command("alice", identify("IM-0001", PIN))
            view = await rt["investor"].outcomes.reply("brokerage.customer_view", asked)
            assert view.outcome.value == "processed"  # the PIN opened and matched: the view came back
            stored = [await _everything_stored(rt[a]) for a in ("investor", "brokerage", "settlement")]
    assert all(PIN not in text for text in stored)
    assert "ks1." in stored[0]  # the investor's outbox holds the sealed box
    assert not [e for e in logged if PIN in repr(e)]


async def test_an_account_inquiry_carries_the_account_sealed_and_is_answered(settings: Settings) -> None:
    async with support.agents(settings, "investor", "settlement") as rt:
        await support.fund(rt["settlement"], "alice", Decimal(1000))
        asked = await rt["investor"].command("alice", inquire_account("alice-cash"))
        await rt["investor"].outcomes.reply("account.statement", asked)
        [row] = await support.rows(
            rt["investor"],
            "SELECT body FROM outbox_messages WHERE message_type = 'account.inquiry' AND message_id = $1",
            asked,
        )
    payload = json.loads(bytes(row["body"]))["payload"]
    assert payload["account"].startswith("ks1.") and "alice-cash" not in json.dumps(payload)


async def test_B62_a_pin_sealed_to_another_key_is_dead_lettered_as_sealed_field_invalid(
    settings: Settings, keys: KeyStore
) -> None:
    wrong_key = support.sealed_to(keys, "settlement", PIN, CUSTOMER_PIN)
    request = IdentifyCustomer(customer_id="IM-0001", pin=wrong_key)
    sealed = seal(keys.load_identity("alice"), request, recipient="brokerage", now=datetime.now(UTC))
    async with support.agents(settings, "brokerage") as rt:
        await expect_dead_letter(settings, rt["brokerage"], sealed.body, sealed.headers, Reason.SEALED_FIELD_INVALID)


async def test_B63_a_box_moved_from_another_field_is_dead_lettered_as_sealed_field_invalid(
    settings: Settings, keys: KeyStore
) -> None:
    moved = support.sealed_to(keys, "brokerage", PIN, ACCOUNT_INQUIRY_ACCOUNT)
    request = IdentifyCustomer(customer_id="IM-0001", pin=moved)
    sealed = seal(keys.load_identity("alice"), request, recipient="brokerage", now=datetime.now(UTC))
    async with support.agents(settings, "brokerage") as rt:
        await expect_dead_letter(settings, rt["brokerage"], sealed.body, sealed.headers, Reason.SEALED_FIELD_INVALID)
