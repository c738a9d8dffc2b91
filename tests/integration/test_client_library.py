"""The client library and the replies an external participant gets (issue 9).

An external participant is enrolled in the test CA but hosted by no agent: its replies reach
it only through its own reply queue. Idempotent client order ids, a forged reply refused by
the client, and a reply parked for want of a queue and sent again once the queue exists.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from broker import parked
from broker.envelope import seal
from broker.metrics import outbox_figures
from broker.participants import ensure_reply_queue
from broker.pki import KeyStore
from broker.settings import Settings
from kabuto_client import Participant, buy_order, handover, place
from schemas.issuance import CertificateIssued
from schemas.trading import OrderAccepted, OrderRefusal, OrderRejected, OrderTerms, OrderType, Side, SubmitOrder
from tests import support
from tests.integration.conftest import delete_queue, enrol
from tests.support import eventually


def order(me: Participant, client_order_id: str = "dora-1", quantity: int = 100) -> SubmitOrder:
    return buy_order(
        me,
        client_order_id,
        support.ISSUE,
        quantity,
        price=Decimal(990),
        account="dora-cash",
        holder_name="Dora",
        holder_address="2-2 Kabuto-cho, Tokyo",
    )


async def test_the_same_client_order_id_is_answered_again_and_another_payload_is_a_conflict(
    settings: Settings, dora: Participant
) -> None:
    async with support.agents(settings, "exchange", "settlement") as rt:
        await support.list_issue(rt["exchange"])
        await support.fund(rt["settlement"], "dora", Decimal(1_000_000))  # a buy is covered first (issue 11)
        first = await place(dora, order(dora))
        again = await place(dora, order(dora))
        other = await place(dora, order(dora, quantity=200))
        assert isinstance(first.message, OrderAccepted) and isinstance(again.message, OrderAccepted)
        assert again.message.acceptance_number == first.message.acceptance_number
        assert again.envelope.correlation_id != first.envelope.correlation_id  # each request has its answer
        assert isinstance(other.message, OrderRejected)
        assert other.message.reason is OrderRefusal.CLIENT_ORDER_ID_CONFLICT
        assert str(first.message.acceptance_number) in other.message.detail
        rows = await support.rows(rt["exchange"], "SELECT quantity FROM orders WHERE user_id = 'dora'")
        assert rows == [{"quantity": 100}]


async def test_a_reply_forged_by_an_investor_is_refused_by_the_client(
    settings: Settings, keys: KeyStore, dora: Participant
) -> None:
    forged = seal(
        keys.load_identity("bob"),
        OrderAccepted(client_order_id="dora-1", acceptance_number=1, request_hash="0" * 64),
        recipient="dora",
        now=datetime.now(UTC),
    )
    await support.publish_sealed(settings, forged)
    await eventually(lambda: dora.refused)
    assert [(r.message_id, r.reason) for r in dora.refused] == [
        (str(forged.envelope.message_id), "sender_not_authorized")
    ]
    assert dora.conversation(forged).seen == []


async def test_a_reply_to_a_participant_without_a_queue_is_parked_then_sent_when_the_queue_appears(
    settings: Settings, keys: KeyStore
) -> None:
    enrol(keys, "erin")
    erin = keys.load_identity("erin")
    quick = settings.with_(parked_retry_interval=timedelta(seconds=0.3))
    try:
        async with support.agents(quick, "exchange") as rt:
            await support.list_issue(rt["exchange"])
            sealed = seal(erin, order_for("erin"), recipient="exchange", now=datetime.now(UTC))
            await support.publish_sealed(settings, sealed)
            await rt["exchange"].outcomes.wait_for(sealed.envelope.message_id)

            async def parked_rows() -> list[parked.OutboxRow]:
                return await parked.listing(rt["exchange"].pool, parked_only=True, limit=10)

            await eventually(parked_rows)
            (row,) = await parked_rows()
            assert row.routing_key == "erin" and row.message_type == "order.rejected"
            assert row.error is not None and row.error.startswith("unroutable")

            queue = await ensure_reply_queue(settings, "erin")
            reply = await support.next_message(settings, queue, timeout=15)
            assert reply.message_id == str(row.message_id)

            async def none_parked() -> bool:
                return await parked_rows() == []

            await eventually(none_parked)  # marked published just after the broker confirmed it
            assert (await outbox_figures(rt["exchange"].pool)).parked == 0  # `kabuto status` agrees
    finally:
        await delete_queue(settings, "erin")


def order_for(user: str) -> SubmitOrder:
    """An order the exchange answers at once: a sell (no cash cover to wait for, issue 11) of a
    certificate it never listed, refused with a reason. The reply is what these tests route."""
    return SubmitOrder(
        client_order_id=f"{user}-1",
        user_id=user,
        issue_code=support.ISSUE,
        terms=OrderTerms(side=Side.SELL, order_type=OrderType.LIMIT, price=Decimal(990), quantity=100),
        settlement_account=support.box(f"{user}-cash"),
        holder_name=user.title(),
        holder_address="3-3 Kabuto-cho, Tokyo",
    )


async def kabuto(settings: Settings, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agents.cli",
        *args,
        env=support.environment(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(60):
        out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_kabuto_outbox_lists_parked_rows_and_resends_them(settings: Settings, keys: KeyStore) -> None:
    enrol(keys, "fred")
    sealed = seal(keys.load_identity("fred"), order_for("fred"), recipient="exchange", now=datetime.now(UTC))
    try:
        manual = settings.with_(parked_retry_interval=timedelta(hours=1))  # only the operator resends here
        async with support.agents(manual, "exchange") as rt:
            await support.list_issue(rt["exchange"])
            await support.publish_sealed(settings, sealed)
            await rt["exchange"].outcomes.wait_for(sealed.envelope.message_id)
            await eventually(lambda: parked.listing(rt["exchange"].pool, parked_only=True, limit=1))
            code, out = await kabuto(settings, "outbox", "list", "exchange", "--parked")
            assert code == 0 and "fred" in out and "parked" in out and "unroutable" in out, out
            (row,) = await parked.listing(rt["exchange"].pool, parked_only=True, limit=10)

            code, out = await kabuto(settings, "outbox", "resend", "exchange", "00000000-0000-4000-8000-000000000000")
            assert code == 1 and "no parked row" in out
            queue = await ensure_reply_queue(settings, "fred")
            code, out = await kabuto(settings, "outbox", "resend", "exchange", str(row.message_id))
            assert code == 0 and "1 parked row(s) handed back" in out, out
            reply = await support.next_message(settings, queue, timeout=15)
            assert reply.message_id == str(row.message_id)
    finally:
        await delete_queue(settings, "fred")


async def test_a_certificate_handed_over_by_an_external_participant_is_verified_by_the_transferee(
    settings: Settings, dora: Participant
) -> None:
    async with support.agents(settings, "issuer", "investor") as rt:
        await support.open_offering(rt["issuer"])
        issued = await dora.request(
            support.issuance_request("dora", holder_name="Dora"),
            to="issuer",
            expect=("certificate.issued", "certificate.issuance.refused"),
        )
        assert isinstance(issued.message, CertificateIssued)
        sent = await dora.send(handover(dora, issued.message.certificate, "bob", note="a gift"), to="bob")
        await rt["investor"].outcomes.wait_for(sent.correlation_id)
        (row,) = await support.rows(rt["investor"], "SELECT transferee, transferor, shares, status FROM handovers")
        assert row == {"transferee": "bob", "transferor": "dora", "shares": 500, "status": "received"}
        # Countersigned for bob, the same certificate handed to carol is refused by her wallet.
        lifted = handover(dora, issued.message.certificate, "bob")
        await dora.send(lifted, to="carol")
        await rt["investor"].outcomes.wait(
            lambda s: s.type == "certificate.handover" and s.message_id != str(sent.correlation_id)
        )
        statuses = await support.rows(rt["investor"], "SELECT transferee, status FROM handovers ORDER BY transferee")
        assert statuses == [{"transferee": "bob", "status": "received"}, {"transferee": "carol", "status": "rejected"}]
