"""The exchange's ``settlement.instruction.status`` handler as a set (docs/netting.md, step 1),
against the real RabbitMQ and PostgreSQL: a group-committed batch of statuses is handed to the
set handler in one call and leaves exactly the rows (matches, the CertID list, orders, standing
covers) and the messages (``trade.completed`` to both parties, the sell order's next
``settlement.instruction``, ``certificate.release``, ``settlement.cover.release``,
``standing_cover.closed``, each from its own delivery and only once) that the same statuses
leave handled one at a time — several settled trades drawing on one closing standing cover, a
pending status, a status for no execution, a sell order's second execution instructed by its
first's status, a dead certificate in the middle of the set.

The state is made by the real investor, issuer and exchange agents, with settlement running
only until the covers are held: the trades then stay with settlement unanswered, their
statuses are sealed here as settlement's. Two groups, each on an issue and accounts of its own
(``KBS`` / ``-s`` for the set, ``KBO`` / ``-o`` for one by one), start from the same state;
the exchange is then opened but not run, and the tests take the statuses off its inbox
themselves and settle them as one batch (``group_commit.settle_batch``) or one at a time
(``Consumer.settle``).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from agents.exchange import app as exchange_app
from agents.investor.standing import close_standing_cover, open_standing_cover
from agents.investor.trading import OrderTicket
from agents.settlement import app as ledger
from broker import set_based
from broker.consumer import Settled
from broker.envelope import Sealed, seal
from broker.pki import KeyStore
from broker.runtime import AgentDefinition, AgentRuntime
from broker.set_based import SetBased
from broker.settings import Settings
from broker.stock_certificates import content_of, sign_certificate
from broker.topology import Names
from schemas.certificates import EndorsedCertificate
from schemas.dvp import (
    CertificateDelivery,
    DvpReason,
    InstructionStatus,
    MatchingStatus,
    ProcessingStatus,
    SettlementStatus,
    StatusFields,
)
from schemas.identity import EXCHANGE_ID, SETTLEMENT_ID
from schemas.trading import Side
from tests import support
from tests.integration import set_kit
from tests.integration.test_investor_standing_cover import mine
from tests.integration.test_set_based import outcomes
from tests.integration.test_trading_paths import answer_to, place

Calls = list[list[int]]
SET, ALONE = "s", "o"
ISSUE = {SET: "KBS", ALONE: "KBO"}
UNKNOWN = 987_654_321  # no execution has this matching number
PRICE = Decimal(1000)


# -- the state both groups start from -------------------------------------------------------------


@dataclass
class Group:
    """One group's trades and the ids that differ between groups, named alike in both."""

    tag: str
    issue: str
    # a CertID or cover -> its name; ("o", acceptance number) and ("m", matching number) -> the order's, the trade's
    names: dict[Any, str] = field(default_factory=dict)
    matching: dict[str, int] = field(default_factory=dict)  # "M0".. -> matching number
    orders: dict[str, int] = field(default_factory=dict)  # client order id (untagged) -> acceptance number
    cover: uuid.UUID | None = None  # bob's standing cover

    def coid(self, name: str) -> str:
        return f"{self.tag}-{name}"


def ticket(
    group: Group, coid: str, side: Side, quantity: int, account: str, cert_id: uuid.UUID | None = None
) -> OrderTicket:
    return OrderTicket(
        group.coid(coid),
        group.issue,
        side,
        quantity,
        account,
        PRICE,
        cert_id=cert_id,
        holder_name=None if side is Side.SELL else account.split("-")[0].capitalize(),
        holder_address=None if side is Side.SELL else "2-2 Kabuto-cho, Tokyo",
    )


async def certificate(rt: dict[str, AgentRuntime], group: Group, shares: int, name: str) -> uuid.UUID:
    """A certificate of ``shares`` for alice, in her wallet and in the exchange's CertID list."""
    request_id = await support.request_issue(rt["investor"], "alice", group.issue, shares)
    await rt["investor"].outcomes.reply("certificate.issued", request_id)
    await rt["exchange"].outcomes.reply("certid_list.updated", request_id)
    held = await support.rows(
        rt["investor"],
        """SELECT cert_id FROM wallet WHERE holder_user_id = 'alice' AND issue_code = $1 AND status = 'held'
           ORDER BY received_at DESC""",
        group.issue,
    )
    cert_id = uuid.UUID(str(held[0]["cert_id"]))
    group.names[cert_id] = f"cert:{name}"
    return cert_id


async def covered(rt: dict[str, AgentRuntime], group: Group) -> None:
    """With settlement running: the issue, bob's standing cover on ``bob-<tag>``, carol's three
    buy orders on ``carol-<tag>`` each with a cover of its own, resting."""
    offer = support.offering(group.issue)
    await support.open_offering(rt["issuer"], offer)
    await support.list_issue(rt["exchange"], group.issue)
    for user in ("bob", "carol"):
        account = f"{user}-{group.tag}"
        await rt["settlement"].command(SETTLEMENT_ID, ledger.open_account(account, user))
        await rt["settlement"].command(SETTLEMENT_ID, ledger.deposit(account, Decimal(10_000_000), f"in-{account}"))
    cover_id: uuid.UUID = await rt["investor"].command(
        "bob", open_standing_cover(f"bob-{group.tag}", Decimal(1_000_000))
    )
    await rt["investor"].outcomes.wait(answer_to((await mine(rt, cover_id))["request_id"], "standing_cover.opened"))
    group.cover = cover_id
    group.names[cover_id] = "standing"
    for coid, quantity in (("c1", 100), ("c2", 200), ("c3", 300)):
        await place(rt, "carol", ticket(group, coid, Side.BUY, quantity, f"carol-{group.tag}"))


async def traded(rt: dict[str, AgentRuntime], group: Group) -> None:
    """Settlement stopped: bob's buys drawn on his cover, which he then closes; alice's sells.
    s1 (100) trades with c1 (M0); s2 (500) with c2 then c3 (M1 instructed, M2 waiting for it);
    s3..s5 (100 each) with b3..b5 (M3..M5). Every instruction stays with settlement."""
    for coid in ("b3", "b4", "b5"):
        await place(rt, "bob", ticket(group, coid, Side.BUY, 100, f"bob-{group.tag}"))
    assert group.cover is not None
    await rt["investor"].command("bob", close_standing_cover(group.cover))
    for coid, shares in (("s1", 100), ("s2", 500), ("s3", 100), ("s4", 100), ("s5", 100)):
        cert_id = await certificate(rt, group, shares, coid)
        await place(rt, "alice", ticket(group, coid, Side.SELL, shares, "alice-cash", cert_id))

    async def all_traded() -> bool:
        found = await support.rows(
            rt["exchange"],
            """SELECT (SELECT count(*) FROM matches WHERE issue_code = $1) AS matches,
                      (SELECT status FROM standing_covers WHERE cover_id = $2) AS cover""",
            group.issue,
            group.cover,
        )
        return found == [{"matches": 6, "cover": "closing"}]

    await support.eventually(all_traded)
    for row in await support.rows(
        rt["exchange"],
        "SELECT acceptance_number, client_order_id, cover_id FROM orders WHERE issue_code = $1",
        group.issue,
    ):
        coid = row["client_order_id"].removeprefix(f"{group.tag}-")
        group.orders[coid] = row["acceptance_number"]
        group.names["o", row["acceptance_number"]] = f"order:{coid}"
        if row["cover_id"] is not None and row["cover_id"] != group.cover:
            group.names[row["cover_id"]] = f"cover:{coid}"
    matches = await support.rows(
        rt["exchange"],
        "SELECT matching_number, status FROM matches WHERE issue_code = $1 ORDER BY matching_number",
        group.issue,
    )
    assert [m["status"] for m in matches] == ["transfer_requested"] * 2 + ["pending_transfer"] + [
        "transfer_requested"
    ] * 3
    for i, m in enumerate(matches):
        group.matching[f"M{i}"] = m["matching_number"]
        group.names["m", m["matching_number"]] = f"M{i}"


@asynccontextmanager
async def prepared(settings: Settings) -> AsyncIterator[dict[str, Group]]:
    """Both groups in the same state: every trade instructed to a settlement that does not answer."""
    groups = {tag: Group(tag, ISSUE[tag]) for tag in (SET, ALONE)}
    async with support.agents(settings, "investor", "issuer", "exchange") as rt:
        async with support.agents(settings, "settlement") as st:
            for group in groups.values():
                await covered({**rt, **st}, group)
        for group in groups.values():
            await traded(rt, group)
    yield groups


# -- the exchange, opened but not run --------------------------------------------------------------


@asynccontextmanager
async def exchange(settings: Settings, calls: Calls) -> AsyncIterator[AgentRuntime]:
    real = exchange_app.AGENT
    handler = real.handlers[InstructionStatus]  # as the agent has it: wrapped, and set-based
    assert isinstance(handler, SetBased)
    noted = set_kit.recording(handler, lambda messages: calls.append([m.instruction for m in messages]))
    handlers = {**real.handlers, InstructionStatus: noted}
    definition = AgentDefinition(real.id, real.role, handlers, batch_scope=real.batch_scope)
    async with AgentRuntime(definition, settings) as rt:
        yield rt


def inbox(names: Names) -> str:
    return names.inbox(EXCHANGE_ID)


async def as_one_batch(settings: Settings, rt: AgentRuntime, sealed: Sequence[Sealed]) -> list[Settled]:
    return await set_kit.as_one_batch(settings, rt, sealed, inbox)


async def one_at_a_time(settings: Settings, rt: AgentRuntime, sealed: Sequence[Sealed]) -> list[Settled]:
    return await set_kit.one_at_a_time(settings, rt, sealed, inbox)


# -- statuses, sealed as settlement's --------------------------------------------------------------


@dataclass(frozen=True)
class Said:
    """What settlement says of one execution (``M0``..; ``None``: a matching number no execution has)."""

    execution: str | None
    settlement: SettlementStatus
    quantity: int
    reason: DvpReason | None = None
    remainder: int = 0  # shares left to the seller under a new certificate
    version: int = 0  # the register version and name transfer number given

    async def sealed(self, rt: AgentRuntime, keys: KeyStore, group: Group) -> Sealed:
        number = UNKNOWN + (group.tag == ALONE) if self.execution is None else group.matching[self.execution]
        settled = self.settlement is SettlementStatus.SETTLED
        delivery = None
        if settled:
            new = uuid.uuid4()
            group.names[new] = f"new:{self.execution}"
            remainder = await self._remainder(rt, keys, group) if self.remainder else None
            delivery = CertificateDelivery(
                name_transfer_number=self.version, new_cert_id=new, register_version=self.version, remainder=remainder
            )
        status = InstructionStatus(
            instruction=number,
            status=StatusFields(
                processing=ProcessingStatus.ACCEPTED,
                matching=MatchingStatus.MATCHED,
                settlement=self.settlement,
                reason=self.reason,
                detail="" if self.reason is None else "said by the test",
                quantity=self.quantity,
                settled_quantity=self.quantity if settled else 0,
                amount=PRICE * self.quantity,
                settled_amount=PRICE * self.quantity if settled else Decimal(0),
                attempt=1,
            ),
            delivery=delivery,
        )
        return seal(keys.load_identity(SETTLEMENT_ID), status, recipient=EXCHANGE_ID, now=datetime.now(UTC))

    async def _remainder(self, rt: AgentRuntime, keys: KeyStore, group: Group) -> Any:
        """The seller's remainder, signed by the issuer as its commit would be."""
        assert self.execution is not None
        rows = await support.rows(
            rt,
            "SELECT o.certificate FROM orders o JOIN matches m ON m.sell_order = o.acceptance_number "
            "WHERE m.matching_number = $1",
            group.matching[self.execution],
        )
        held = content_of(EndorsedCertificate.model_validate_json(rows[0]["certificate"]))
        remainder = held.model_copy(update={"cert_id": uuid.uuid4(), "shares": self.remainder})
        group.names[remainder.cert_id] = f"remainder:{self.execution}"
        return sign_certificate(keys.load_identity("issuer"), remainder)


async def statuses(rt: AgentRuntime, keys: KeyStore, group: Group, said: Sequence[Said]) -> list[Sealed]:
    return [await s.sealed(rt, keys, group) for s in said]


# -- what a group's statuses left -----------------------------------------------------------------

_OPAQUE = {
    "priority",
    "certificate",
    "settlement_account",
    "buyer_account",
    "seller_account",
    "transfer_request_hash",
    "request_hash",
    "payload_digest",
}
_MATCHING = {"matching_number", "instruction"}
_ORDER = {"acceptance_number", "sell_order", "buy_order", "seller_order"}


def _normal(value: Any, group: Group, key: str = "") -> Any:
    """``value`` with what differs between groups named alike: numbers, CertIDs, covers, the issue,
    the tag of client order ids; sealed boxes, hashes and signatures by their presence."""
    if key in _OPAQUE:
        return value is not None
    if isinstance(value, datetime):
        return "time"
    if isinstance(value, dict):
        return {k: _normal(v, group, k) for k, v in value.items() if k not in ("sealed_at", "sent_at")}
    if isinstance(value, list | tuple):
        return [_normal(v, group, key) for v in value]
    if isinstance(value, uuid.UUID):
        value = str(value)
    if isinstance(value, int) and key in _MATCHING | _ORDER:
        found = group.names.get(("m" if key in _MATCHING else "o", value))
        return found or ("unknown" if value in (UNKNOWN, UNKNOWN + 1) else value)
    if isinstance(value, str):
        if value == group.issue:
            return "ISSUE"
        if key == "client_order_id":
            return value.removeprefix(f"{group.tag}-")
        try:
            as_uuid = uuid.UUID(value)
        except ValueError:
            return value.replace(f"-{group.tag}", "-TAG").replace(group.issue, "ISSUE")
        return group.names.get(as_uuid, "uuid")
    return value


async def snapshot(rt: AgentRuntime, group: Group, sealed: Sequence[Sealed]) -> dict[str, Any]:
    async def rows(sql: str, *args: Any) -> list[dict[str, Any]]:
        return [_normal(row, group) for row in await support.rows(rt, sql, *args)]

    issue = group.issue
    emitted = await set_kit.caused(
        rt.pool,
        sealed,
        lambda payload: _normal(payload, group),
        # a standing cover's closing is told in the close request's conversation
        own_conversation=lambda kind: kind != "standing_cover.closed",
    )
    return {
        "matches": await rows("SELECT * FROM matches WHERE issue_code = $1 ORDER BY matching_number", issue),
        "certid_list": sorted(
            await rows("SELECT * FROM certid_list WHERE issue_code = $1", issue), key=lambda r: str(r["cert_id"])
        ),
        "orders": await rows(
            """SELECT o.*, rank() OVER (ORDER BY priority) AS priority_rank FROM orders o
               WHERE issue_code = $1 ORDER BY acceptance_number""",
            issue,
        ),
        "standing_covers": await rows(
            "SELECT cover_id, user_id, amount, status, reason FROM standing_covers WHERE cover_id = $1", group.cover
        ),
        "emitted": emitted,  # in the outbox's order
    }


def sent(snap: dict[str, Any], type_: str) -> list[tuple[int, str]]:
    """(delivery, recipient) of each ``type_`` message, in delivery order (``set_kit.caused``)."""
    return [(e[0], e[3]) for e in snap["emitted"] if e[1] == type_]


async def compared(
    settings: Settings, keys: KeyStore, said: Sequence[Said]
) -> tuple[dict[str, Any], dict[str, Any], Calls, Calls, list[Settled]]:
    """The same statuses for both groups, as one batch and one at a time; both snapshots, the
    handler's calls for each and the batch's outcomes."""
    async with prepared(settings) as groups:
        calls: Calls = []
        async with exchange(settings, calls) as rt:
            as_set = await statuses(rt, keys, groups[SET], said)
            alone = await statuses(rt, keys, groups[ALONE], said)
            settled = await as_one_batch(settings, rt, as_set)
            set_calls = list(calls)
            calls.clear()
            assert outcomes(await one_at_a_time(settings, rt, alone)) == ["processed"] * len(said)
            alone_calls = list(calls)
            in_set = await snapshot(rt, groups[SET], as_set)
            one_by_one = await snapshot(rt, groups[ALONE], alone)
    return in_set, one_by_one, set_calls, alone_calls, settled


# -- the tests ------------------------------------------------------------------------------------


async def test_settled_trades_on_one_closing_standing_cover_with_a_pending_and_an_unknown_status(
    settings: Settings, keys: KeyStore
) -> None:
    """One set: three settled trades of bob's drawn on his closing standing cover (M3, M4, M5), a
    pending status (M0), one for no execution, and M1 settled with the seller's remainder, which
    instructs its sell order's second execution (M2) and frees c2's own cover. The cover closes
    once, from M5's delivery, as one by one; everything else is as one by one too."""
    said = [
        Said("M3", SettlementStatus.SETTLED, 100, version=3),
        Said("M0", SettlementStatus.PENDING, 100, reason=DvpReason.LACK_OF_CASH),
        Said(None, SettlementStatus.SETTLED, 100, version=9),
        Said("M4", SettlementStatus.SETTLED, 100, version=4),
        Said("M1", SettlementStatus.SETTLED, 200, remainder=300, version=1),
        Said("M5", SettlementStatus.SETTLED, 100, version=5),
    ]
    in_set, one_by_one, set_calls, alone_calls, settled = await compared(settings, keys, said)
    assert outcomes(settled) == ["processed"] * 6
    assert [len(c) for c in set_calls] == [6]  # one call for the six
    assert [len(c) for c in alone_calls] == [1] * 6
    assert in_set == one_by_one

    # and what both left is what these statuses must leave
    statuses_left = [(m["matching_number"], m["status"], m["settlement_status"]) for m in in_set["matches"]]
    assert statuses_left == [
        ("M0", "transfer_requested", "pending"),
        ("M1", "completed", "settled"),
        ("M2", "transfer_requested", None),  # instructed by M1's status
        ("M3", "completed", "settled"),
        ("M4", "completed", "settled"),
        ("M5", "completed", "settled"),
    ]
    assert sent(in_set, "trade.completed") == [  # by cause, then by recipient (set_kit.caused)
        (0, "alice"),
        (0, "bob"),
        (3, "alice"),
        (3, "bob"),
        (4, "alice"),
        (4, "carol"),
        (5, "alice"),
        (5, "bob"),
    ]
    assert sent(in_set, "settlement.instruction") == [(4, "settlement")]
    [instruction] = [e[4] for e in in_set["emitted"] if e[1] == "settlement.instruction"]
    assert (instruction["matching_number"], instruction["securities"]["cert_id"]) == ("M2", "remainder:M1")
    assert sent(in_set, "certificate.release") == [(0, "issuer"), (3, "issuer"), (5, "issuer")]  # not s2's
    assert [(e[0], e[4]["cover_id"]) for e in in_set["emitted"] if e[1] == "settlement.cover.release"] == [
        (4, "cover:c2"),
        (5, "standing"),
    ]
    assert sent(in_set, "standing_cover.closed") == [(5, "bob")]
    assert in_set["standing_covers"][0]["status"] == "closed"
    listed = {r["cert_id"]: r["status"] for r in in_set["certid_list"]}
    assert listed["remainder:M1"] == "valid" and listed["new:M1"] == "valid" and listed["new:M5"] == "valid"
    assert [e for e in in_set["emitted"] if e[0] in (1, 2)] == []


async def test_a_dead_certificate_mid_set_leaves_the_rest_to_be_handled_one_by_one_as_alone(
    settings: Settings, keys: KeyStore
) -> None:
    """One set: M3 settled, then M1 failed for lack of securities (S131: s2 is cancelled, both
    its executions fail, c2 and c3 get their shares back), then a settled status for M2 (its
    execution already failed: nothing), M4, M0 (frees c1's own cover) and M5 settled (the standing
    cover closes there). The settled trade before the failure is completed with the set; the rest
    after it one by one in the same call; all as one by one."""
    said = [
        Said("M3", SettlementStatus.SETTLED, 100, version=3),
        Said("M1", SettlementStatus.FAILED, 200, reason=DvpReason.LACK_OF_SECURITIES),
        Said("M2", SettlementStatus.SETTLED, 300, version=2),
        Said("M4", SettlementStatus.SETTLED, 100, version=4),
        Said("M0", SettlementStatus.SETTLED, 100, version=7),
        Said("M5", SettlementStatus.SETTLED, 100, version=5),
    ]
    in_set, one_by_one, set_calls, alone_calls, settled = await compared(settings, keys, said)
    assert outcomes(settled) == ["processed"] * 6
    assert [len(c) for c in set_calls] == [6]
    assert [len(c) for c in alone_calls] == [1] * 6
    assert in_set == one_by_one

    statuses_left = [(m["matching_number"], m["status"], m["failure"]) for m in in_set["matches"]]
    assert statuses_left == [
        ("M0", "completed", None),
        ("M1", "failed", "lack_of_securities"),
        ("M2", "failed", "lack_of_securities"),
        ("M3", "completed", None),
        ("M4", "completed", None),
        ("M5", "completed", None),
    ]
    orders = {o["client_order_id"]: (o["status"], o["remaining"]) for o in in_set["orders"]}
    assert orders["s2"][0] == "cancelled" and orders["c2"] == ("open", 200) and orders["c3"] == ("open", 300)
    assert sent(in_set, "trade.completed") == [  # by cause, then by recipient (set_kit.caused)
        (0, "alice"),
        (0, "bob"),
        (3, "alice"),
        (3, "bob"),
        (4, "alice"),
        (4, "carol"),
        (5, "alice"),
        (5, "bob"),
    ]
    assert [e for e in in_set["emitted"] if e[0] == 2] == []  # M2's status finds it failed
    assert sent(in_set, "settlement.instruction") == []
    assert [(e[0], e[4]["cover_id"]) for e in in_set["emitted"] if e[1] == "settlement.cover.release"] == [
        (4, "cover:c1"),
        (5, "standing"),
    ]
    assert sent(in_set, "standing_cover.closed") == [(5, "bob")]
    # s2's certificate is released with its cancel, each other sell order's with its trade
    assert sent(in_set, "certificate.release") == [
        (0, "issuer"),
        (1, "issuer"),
        (3, "issuer"),
        (4, "issuer"),
        (5, "issuer"),
    ]
    listed = {r["cert_id"]: r["status"] for r in in_set["certid_list"]}
    assert "new:M2" not in listed and listed["new:M0"] == "valid"


async def test_a_reversed_trade_mid_set_is_handled_in_place_and_the_rest_one_by_one_as_alone(
    settings: Settings, keys: KeyStore
) -> None:
    """One set: M4 settled, M0 failed for lack of cash (reversed: neither leg happened, s1's
    certificate is back in the list and released, c1's cover freed), then M3, M1 (instructs M2)
    and M5 settled (the standing cover closes there); all as one by one."""
    said = [
        Said("M4", SettlementStatus.SETTLED, 100, version=4),
        Said("M0", SettlementStatus.FAILED, 100, reason=DvpReason.LACK_OF_CASH),
        Said("M3", SettlementStatus.SETTLED, 100, version=3),
        Said("M1", SettlementStatus.SETTLED, 200, remainder=300, version=1),
        Said("M5", SettlementStatus.SETTLED, 100, version=5),
    ]
    in_set, one_by_one, set_calls, alone_calls, settled = await compared(settings, keys, said)
    assert outcomes(settled) == ["processed"] * 5
    assert [len(c) for c in set_calls] == [5]
    assert [len(c) for c in alone_calls] == [1] * 5
    assert in_set == one_by_one

    statuses_left = [(m["matching_number"], m["status"], m["failure"]) for m in in_set["matches"]]
    assert statuses_left == [
        ("M0", "failed", "lack_of_cash"),
        ("M1", "completed", None),
        ("M2", "transfer_requested", None),
        ("M3", "completed", None),
        ("M4", "completed", None),
        ("M5", "completed", None),
    ]
    assert [e[1] for e in in_set["emitted"] if e[0] == 1] == [
        "order.execution_reversed",
        "order.execution_reversed",
        "certificate.release",
        "settlement.cover.release",
    ]
    assert sent(in_set, "settlement.instruction") == [(3, "settlement")]
    assert [(e[0], e[4]["cover_id"]) for e in in_set["emitted"] if e[1] == "settlement.cover.release"] == [
        (1, "cover:c1"),
        (3, "cover:c2"),
        (4, "standing"),
    ]
    assert sent(in_set, "standing_cover.closed") == [(4, "bob")]
    listed = {r["cert_id"]: r["status"] for r in in_set["certid_list"]}
    assert listed["cert:s1"] == "valid"  # back in the list: the trade never happened


def test_the_exchange_agent_hands_a_run_of_statuses_to_its_set_handler() -> None:
    """The exchange's handler of statuses is set-based, but app.py wraps every handler (the warm
    books' seal, the read-ahead rows) in a plain function: ``set_based.runs`` then sees no
    ``SetBased`` and cuts every status into a run of its own, so the agent never calls the set
    handler with more than one status."""
    handler = exchange_app.AGENT.handlers[InstructionStatus]
    fields = StatusFields(
        processing=ProcessingStatus.ACCEPTED,
        matching=MatchingStatus.MATCHED,
        settlement=SettlementStatus.PENDING,
        quantity=100,
        amount=PRICE * 100,
    )
    messages = [InstructionStatus(instruction=n, status=fields) for n in (1, 2, 3)]
    runs = list(set_based.runs(messages, lambda m: m, exchange_app.AGENT.handlers.__getitem__))
    assert isinstance(handler, SetBased), f"the exchange registers {handler!r} for statuses"
    assert [len(r) for r in runs] == [3]
