"""Standing covers (issue 8; docs/dvp.md, "Standing cover"; R-001-23 cover at order entry).

An external buyer sets cash aside once; its buy orders sealed with the same account box are
booked in the hop that receives them (no per-order cover request), draw their worst case on
the cover, give back what a fill below the limit or a cancel leaves, and settle from the
cover's hold. An order the cover has no room for, or sent once the cover is closing, takes a
per-order cover as before. Closing waits for what was drawn; every refusal changes nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from agents.exchange import standing_repo
from broker.envelope import seal, sign_headers
from broker.errors import Reason
from broker.pki import KeyStore
from broker.runtime import AgentRuntime
from broker.settings import Settings
from kabuto_client import Participant, buy_order, close_standing_cover, open_standing_cover, place
from schemas.dvp import (
    CloseStandingCover,
    OpenStandingCover,
    StandingCoverClosed,
    StandingCoverOpened,
    StandingCoverRefused,
)
from schemas.identity import EXCHANGE_ID
from schemas.trading import CancelOrder, OrderAccepted
from tests import support
from tests.integration.conftest import delete_queue, enrol
from tests.integration.refusal_kit import expect_dead_letter
from tests.integration.test_trading_paths import issue, sell
from tests.integration.test_trading_paths import place as place_hosted

Rt = dict[str, AgentRuntime]


async def opened(dora: Participant, amount: str, account: str = "dora-cash") -> UUID:
    answer = await open_standing_cover(dora, account, Decimal(amount))
    assert isinstance(answer.message, StandingCoverOpened), answer.message
    return answer.message.cover_id


async def refused(dora: Participant, amount: str, account: str = "dora-cash", **fields: Any) -> StandingCoverRefused:
    answer = await open_standing_cover(dora, account, Decimal(amount), **fields)
    assert isinstance(answer.message, StandingCoverRefused), answer.message
    return answer.message


async def bought(dora: Participant, coid: str, quantity: int, price: str, account: str = "dora-cash") -> int:
    order = buy_order(
        dora,
        coid,
        support.ISSUE,
        quantity,
        price=Decimal(price),
        account=account,
        holder_name="Dora",
        holder_address="2-2 Kabuto-cho, Tokyo",
    )
    answer = await place(dora, order)
    assert isinstance(answer.message, OrderAccepted), answer.message
    return answer.message.acceptance_number


async def cancel(dora: Participant, coid: str) -> None:
    answer = await dora.request(CancelOrder(client_order_id=coid), to=EXCHANGE_ID, expect=("order.cancelled",))
    assert answer.envelope.type == "order.cancelled"


async def drawn(exchange: AgentRuntime, cover_id: UUID) -> Decimal:
    rows = await support.rows(exchange, f"SELECT {standing_repo.STANDING_COVER_DRAWN.of('$1')} AS d", cover_id)
    return Decimal(rows[0]["d"])


async def placed_holds(settlement: AgentRuntime, account: str) -> dict[str, Decimal]:
    rows = await support.rows(
        settlement,
        """SELECT c.kind, sum(h.amount) AS amount FROM holds h JOIN covers c ON c.cover_id = h.hold_id
           WHERE h.account_id = $1 AND h.status = 'placed' GROUP BY c.kind""",
        account,
    )
    return {r["kind"]: Decimal(r["amount"]) for r in rows}


async def cover_requests(exchange: AgentRuntime) -> int:
    rows = await support.rows(
        exchange, "SELECT count(*) AS n FROM outbox_messages WHERE message_type = 'settlement.cover.request'"
    )
    return int(rows[0]["n"])


async def drawing_orders(exchange: AgentRuntime) -> list[dict[str, Any]]:
    return await support.rows(
        exchange, "SELECT client_order_id, status, cover_unit FROM orders WHERE user_id = 'dora' ORDER BY 1"
    )


async def test_buy_orders_draw_on_the_standing_cover_without_a_cover_request_until_it_has_no_room(
    settings: Settings, dora: Participant
) -> None:
    async with support.agents(settings, "exchange", "settlement") as rt:
        await support.list_issue(rt["exchange"])
        account = await support.fund(rt["settlement"], "dora", Decimal(1_000_000))
        cover = await opened(dora, "200000")
        assert await placed_holds(rt["settlement"], account) == {"standing": Decimal(200_000)}

        await bought(dora, "d1", 100, "990")  # 99,000 drawn
        await bought(dora, "d2", 100, "990")  # 198,000 drawn
        assert await cover_requests(rt["exchange"]) == 0  # booked in the hop that received them
        assert await drawn(rt["exchange"], cover) == Decimal(198_000)

        await bought(dora, "d3", 100, "990")  # 297,000 would exceed 200,000: a cover of its own
        assert await cover_requests(rt["exchange"]) == 1
        assert await drawing_orders(rt["exchange"]) == [
            {"client_order_id": "d1", "status": "open", "cover_unit": Decimal(990)},
            {"client_order_id": "d2", "status": "open", "cover_unit": Decimal(990)},
            {"client_order_id": "d3", "status": "open", "cover_unit": None},
        ]
        assert await drawn(rt["exchange"], cover) == Decimal(198_000)
        # the standing cover holds its amount whatever was drawn; d3's own cover holds its worst case
        assert await placed_holds(rt["settlement"], account) == {
            "standing": Decimal(200_000),
            "order": Decimal(99_000),
        }

        await cancel(dora, "d1")  # a cancel gives its worst case back: room for another order
        assert await drawn(rt["exchange"], cover) == Decimal(99_000)
        await bought(dora, "d4", 100, "990")
        assert await cover_requests(rt["exchange"]) == 1


async def test_a_trade_on_an_active_cover_reads_none_of_the_orders_drawn_on_it(
    settings: Settings, dora: Participant
) -> None:
    """Every trade drawn on a cover asks whether a closing cover has drained; for an active
    cover the answer must not cost a scan of every order ever drawn on it (it did: the drain
    conditions ran before the cover's status was looked at, so the cost grew with its history)."""
    async with support.agents(settings, "exchange", "settlement") as rt:
        await support.list_issue(rt["exchange"])
        await support.fund(rt["settlement"], "dora", Decimal(1_000_000))
        cover = await opened(dora, "500000")
        for i in range(3):
            await bought(dora, f"h{i}", 100, "990")
        async with rt["exchange"].pool.acquire() as connection:
            scans = await support.plan_nodes(connection, standing_repo.CLOSE_IF_DONE, cover)
        drawn_on = [n for n in scans if n.get("Relation Name") in ("orders", "matches")]
        assert drawn_on, "the plan reads orders and matches for a closing cover"
        assert all(n["Actual Loops"] == 0 for n in drawn_on), [(n["Node Type"], n["Actual Loops"]) for n in drawn_on]
        assert await drawn(rt["exchange"], cover) == Decimal(297_000)  # what was drawn is untouched


async def test_closing_waits_for_the_orders_drawn_on_the_cover_and_then_frees_it(
    settings: Settings, dora: Participant
) -> None:
    async with support.agents(settings, "exchange", "settlement") as rt:
        await support.list_issue(rt["exchange"])
        account = await support.fund(rt["settlement"], "dora", Decimal(1_000_000))
        cover = await opened(dora, "300000")
        await bought(dora, "d1", 100, "990")

        closing = await dora.send(CloseStandingCover(cover_id=cover), to=EXCHANGE_ID)
        await support.eventually(lambda: status_is(rt["exchange"], cover, "closing"))
        assert closing.seen == []  # nothing answered while d1 rests

        await bought(dora, "d2", 100, "990")  # a closing cover is not drawn on
        assert await cover_requests(rt["exchange"]) == 1

        await cancel(dora, "d1")
        answer = await closing.wait_for("standing_cover.closed")
        assert isinstance(answer.message, StandingCoverClosed)
        assert (answer.message.amount, answer.message.spent) == (Decimal(300_000), Decimal(0))
        await rt["settlement"].outcomes.wait(lambda s: s.type == "settlement.cover.release")
        assert await placed_holds(rt["settlement"], account) == {"order": Decimal(99_000)}  # d2's own cover

        again = await close_standing_cover(dora, cover)
        assert isinstance(again.message, StandingCoverRefused) and again.message.reason == "not_active"


async def status_is(exchange: AgentRuntime, cover_id: UUID, status: str) -> bool:
    rows = await support.rows(exchange, "SELECT status FROM standing_covers WHERE cover_id = $1", cover_id)
    return rows == [{"status": status}]


async def test_every_refusal_is_specific_and_changes_nothing(
    settings: Settings, dora: Participant, keys: KeyStore
) -> None:
    async with support.agents(settings, "exchange", "settlement") as rt:
        await support.list_issue(rt["exchange"])
        account = await support.fund(rt["settlement"], "dora", Decimal(100_000))
        await support.fund(rt["settlement"], "alice", Decimal(100_000))

        assert (await refused(dora, "100001")).reason == "insufficient_funds"
        assert (await refused(dora, "1000", account="alice-cash")).reason == "account_not_owned"
        assert (await refused(dora, "1000", account="nobody-cash")).reason == "unknown_account"
        mismatch = OpenStandingCover(
            cover_id=uuid.uuid4(), user_id="alice", account=dora.account_box(account), amount=Decimal(1000)
        )
        answer = await dora.request(mismatch, to=EXCHANGE_ID, expect=("standing_cover.refused",))
        assert isinstance(answer.message, StandingCoverRefused) and answer.message.reason == "user_mismatch"
        wrong_box = OpenStandingCover(
            cover_id=uuid.uuid4(), user_id="dora", account=support.box(account), amount=Decimal(1000)
        )  # sealed for another field: settlement cannot open it
        answer = await dora.request(wrong_box, to=EXCHANGE_ID, expect=("standing_cover.refused",))
        assert isinstance(answer.message, StandingCoverRefused) and answer.message.reason == "sealed_field_invalid"
        assert await placed_holds(rt["settlement"], account) == {}

        cover = await opened(dora, "50000")
        assert (await refused(dora, "1000")).reason == "standing_cover_exists"  # the same box
        assert (await refused(dora, "1000", cover_id=cover)).reason == "duplicate_cover"
        unknown = await close_standing_cover(dora, uuid.uuid4())
        assert isinstance(unknown.message, StandingCoverRefused) and unknown.message.reason == "unknown_cover"
        assert await placed_holds(rt["settlement"], account) == {"standing": Decimal(50_000)}
        statuses = await support.rows(rt["exchange"], "SELECT status, count(*) AS n FROM standing_covers GROUP BY 1")
        assert sorted((r["status"], r["n"]) for r in statuses) == [("active", 1), ("refused", 4)]

        # a refused cover cannot be closed
        refused_covers = "SELECT cover_id FROM standing_covers WHERE status = 'refused' LIMIT 1"
        not_active = await close_standing_cover(
            dora, (await support.rows(rt["exchange"], refused_covers))[0]["cover_id"]
        )
        assert isinstance(not_active.message, StandingCoverRefused) and not_active.message.reason == "not_active"


async def test_a_trade_drawn_on_the_cover_settles_from_its_hold_and_closing_reports_what_was_spent(
    settings: Settings, dora: Participant
) -> None:
    """R-001-23 and docs/dvp.md: the fill below dora's limit gives the difference back at the
    exchange; settlement earmarks the trade's cash from the standing cover's hold, posts it, and
    the close frees the rest."""
    async with support.agents(settings, "investor", "issuer", "exchange", "settlement") as rt:
        await support.open_offering(rt["issuer"])
        await support.list_issue(rt["exchange"])
        await support.fund(rt["settlement"], "alice", Decimal(0))
        account = await support.fund(rt["settlement"], "dora", Decimal(1_000_000))
        cert_id = await issue(rt, "alice", 500)
        await place_hosted(rt, "alice", sell("s1", 500, cert_id, price="1000"))
        cover = await opened(dora, "600000")

        await bought(dora, "d1", 500, "1100")  # worst case 550,000; trades at the sell's 1,000
        await support.eventually(lambda: _settled(rt["settlement"]), timeout=20)

        assert await cover_requests(rt["exchange"]) == 0
        # drawn at the limit until the exchange learns the trade settled, then at its price
        await support.eventually(lambda: drawn_is(rt["exchange"], cover, Decimal(500_000)))
        standing = await support.rows(rt["settlement"], "SELECT unspent FROM covers WHERE cover_id = $1", cover)
        assert standing == [{"unspent": Decimal(100_000)}]
        assert await placed_holds(rt["settlement"], account) == {"standing": Decimal(100_000)}

        closed = await close_standing_cover(dora, cover)
        assert isinstance(closed.message, StandingCoverClosed)
        assert (closed.message.amount, closed.message.spent) == (Decimal(600_000), Decimal(500_000))
        await rt["settlement"].outcomes.wait(lambda s: s.type == "settlement.cover.release")
        assert await placed_holds(rt["settlement"], account) == {}
        balances = await support.rows(
            rt["settlement"], "SELECT account_id, sum(amount) AS b FROM postings GROUP BY 1 ORDER BY 1"
        )
        assert {r["account_id"]: Decimal(r["b"]) for r in balances}["dora-cash"] == Decimal(500_000)


async def drawn_is(exchange: AgentRuntime, cover: UUID, value: Decimal) -> bool:
    return await drawn(exchange, cover) == value


async def _settled(settlement: AgentRuntime) -> bool:
    rows = await support.rows(settlement, "SELECT settlement FROM dvp_instructions")
    return rows == [{"settlement": "settled"}]


def _raw_open(amount: object) -> Callable[[KeyStore], tuple[bytes, dict[str, str]]]:
    """A signed standing_cover.open whose amount was changed past what the model would build."""

    def build(keys: KeyStore) -> tuple[bytes, dict[str, str]]:
        alice = keys.load_identity("alice")
        request = OpenStandingCover(cover_id=uuid.uuid4(), user_id="alice", account=support.box(), amount=Decimal(1000))
        envelope = json.loads(seal(alice, request, recipient=EXCHANGE_ID, now=datetime.now(UTC)).body)
        envelope["payload"]["amount"] = amount
        body = json.dumps(envelope).encode()
        return body, sign_headers(alice, body)

    return build


MALFORMED_OPENS = {
    "B76_zero_amount": _raw_open("0"),
    "B77_negative_amount": _raw_open("-1000"),
    "B78_amount_not_a_number": _raw_open("NaN"),
    "B79_amount_with_too_many_digits": _raw_open("1" * 30),
}


@pytest.mark.parametrize("case", MALFORMED_OPENS, ids=list(MALFORMED_OPENS))
async def test_an_impossible_amount_is_dead_lettered_as_schema_violation(
    settings: Settings, keys: KeyStore, case: str
) -> None:
    body, headers = MALFORMED_OPENS[case](keys)
    async with support.agents(settings, "exchange") as rt:
        await expect_dead_letter(settings, rt["exchange"], body, headers, Reason.SCHEMA_VIOLATION)


async def test_a_client_that_restarts_keeps_drawing_with_the_box_it_kept(settings: Settings, keys: KeyStore) -> None:
    enrol(keys, "dora")
    try:
        async with support.agents(settings, "exchange", "settlement") as rt:
            await support.list_issue(rt["exchange"])
            await support.fund(rt["settlement"], "dora", Decimal(1_000_000))
            async with Participant.enrolled(settings.amqp_url, keys.root, "dora", namespace=settings.namespace) as me:
                cover = await opened(me, "200000")
                kept = me.account_box("dora-cash")
            async with Participant.enrolled(settings.amqp_url, keys.root, "dora", namespace=settings.namespace) as me:
                await bought(me, "d1", 100, "990")  # a new box: a per-order cover
                me.keep_account_box("dora-cash", kept)
                await bought(me, "d2", 100, "990")  # the kept box: drawn on the cover
            assert await cover_requests(rt["exchange"]) == 1
            assert await drawn(rt["exchange"], cover) == Decimal(99_000)
    finally:
        await delete_queue(settings, "dora")
