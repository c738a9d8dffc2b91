"""The issuer's set-based ``securities.reserve`` and ``securities.commit`` (docs/netting.md, step 1),
against the real RabbitMQ and PostgreSQL, with real certificates: signed by the issuer's identity,
countersigned by the seller for its sell order and by the exchange for ``omn:<matching number>``.

A group-committed batch of reserves (or commits) for distinct instructions and CertIDs is handed to
the set handler in one call and leaves exactly the rows and answers the same requests leave handled
one at a time: two groups built alike, each of its own issues (so that certificate numbers and
register versions are drawn alike), one settled as a batch and one a delivery at a time. A commit
for an instruction that holds no reservation fails alone, the others commit.

The issuer agent is opened but not run: the tests take the requests off its queues themselves and
settle them as one batch (``group_commit.settle_batch``, as its consumer does) or one at a time
(``Consumer.settle``), as tests/integration/test_set_based.py does for settlement.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from agents.issuer import app as issuer_app
from agents.issuer import delivery, domain, repo
from agents.issuer.register import RegisterRecord
from broker.consumer import Settled
from broker.envelope import Sealed, seal
from broker.pki import KeyStore
from broker.runtime import AgentDefinition, AgentRuntime
from broker.settings import Settings
from broker.stock_certificates import endorse, sign_certificate, verify_certificate
from schemas.catalogue import Message
from schemas.certificates import ShareClass, SignedCertificate
from schemas.dvp import (
    BookEntryLeg,
    CertificateDelivery,
    CertificateLeg,
    SecuritiesCommit,
    SecuritiesReserve,
)
from schemas.identity import EXCHANGE_ID, ISSUER_ID, SETTLEMENT_ID
from tests.integration import set_kit
from tests.integration.set_kit import outcomes

Calls = list[tuple[str, list[int]]]
TODAY = date.today()


# -- the issuer, opened but not run -----------------------------------------------------------------


def issuer_definition(calls: Calls) -> AgentDefinition:
    handlers = {
        SecuritiesReserve: set_kit.recording(delivery.on_reserve, set_kit.noted("reserve", calls)),
        SecuritiesCommit: set_kit.recording(delivery.on_commit, set_kit.noted("commit", calls)),
    }
    return set_kit.with_handlers(issuer_app.AGENT, handlers)


@asynccontextmanager
async def issuer(settings: Settings, calls: Calls) -> AsyncIterator[AgentRuntime]:
    async with AgentRuntime(issuer_definition(calls), settings) as rt:
        yield rt


@asynccontextmanager
async def admin(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(settings.database_url, server_settings={"search_path": "issuer"})
    try:
        yield connection
    finally:
        await connection.close()


def queue_of(sealed: Sealed) -> str:
    """A commit is an answer (to the issuer's ``securities.reserved``); a reserve, new work."""
    return "answers" if sealed.envelope.type == "securities.commit" else "inbox"


def queue(sealed: Sequence[Sealed]) -> set_kit.Queue:
    """The queue ``sealed`` (all reserves, or all commits) lands on."""
    kinds = {queue_of(s) for s in sealed}
    assert len(kinds) == 1, "one kind of request at a time"
    return (lambda names: names.answers(ISSUER_ID)) if kinds == {"answers"} else (lambda names: names.inbox(ISSUER_ID))


async def as_one_batch(settings: Settings, rt: AgentRuntime, sealed: Sequence[Sealed]) -> list[Settled]:
    return await set_kit.as_one_batch(settings, rt, sealed, queue(sealed))


async def one_at_a_time(settings: Settings, rt: AgentRuntime, sealed: Sequence[Sealed]) -> list[Settled]:
    return await set_kit.one_at_a_time(settings, rt, sealed, queue(sealed))


# -- certificates, legs and requests -----------------------------------------------------------------


def offering(issue_code: str) -> domain.Offering:
    return domain.Offering(
        issue_code=issue_code,
        company_name="Kabuto Test Industries K.K.",
        incorporated_on=date(1999, 11, 11),
        share_class=ShareClass.COMMON,
        offer_price=Decimal(1000),
        shares_offered=100_000,
        shares_remaining=100_000,
        minimum_lot=100,
        par_value_per_share=Decimal(50),
    )


async def open_issues(settings: Settings, *codes: str) -> None:
    async with admin(settings) as c:
        for code in codes:
            await repo.open_offering(c, offering(code))


@dataclass(frozen=True, slots=True)
class Held:
    record: RegisterRecord
    signed: SignedCertificate


async def holding(
    settings: Settings, keys: KeyStore, issue: str, holder: str, shares: int, *, registered: bool = True
) -> Held:
    """A certificate issued to ``holder`` as the issuer issues one: its numbers drawn from the
    offering, its register record (unless not ``registered``), and the certificate signed by the
    issuer's identity."""
    async with admin(settings) as c, c.transaction():
        offer = await repo.offering(c, issue)
        assert offer is not None
        allocation = await repo.allocate(c, issue, shares)
        cert_id = uuid.uuid4()
        number = domain.certificate_number(issue, allocation.certificate_sequence)
        certificate = domain.certificate(
            offer,
            cert_id=cert_id,
            number=number,
            shares=shares,
            holder_name=holder.title(),
            holder_user_id=holder,
            today=TODAY,
            agent=domain.issuing_agent(ISSUER_ID),
        )
        record = RegisterRecord(
            cert_id=cert_id,
            issue_code=issue,
            certificate_number=number,
            holder_user_id=holder,
            holder_name=holder.title(),
            holder_address="1-1 Kabuto-cho, Tokyo",
            shares=shares,
            share_class=ShareClass.COMMON,
            acquired_on=TODAY,
            issuance_conditions={},
            dividend_method="bank_transfer",
            dividend_account="sealed",
        )
        signed = sign_certificate(keys.load_identity(ISSUER_ID), certificate)
        if registered:
            await repo.insert_record(c, record)
            await repo.record_signed(c, cert_id, signed)
    return Held(record, signed)


def tampered(signed: SignedCertificate) -> SignedCertificate:
    """The certificate with one more share than the issuer signed for."""
    content = json.loads(signed.content)
    content["shares"] += 1
    return SignedCertificate(content=json.dumps(content).encode(), issuer_signature=signed.issuer_signature)


def leg(
    keys: KeyStore,
    held: Held,
    number: int,
    order: int,
    *,
    buyer: str = "bob",
    order_open: bool = False,
    omn: int | None = None,
    signed: SignedCertificate | None = None,
) -> CertificateLeg:
    """The certificate countersigned by its holder for sell order ``order`` and by the exchange
    for ``omn:<number>`` (``omn``: another matching number, an endorsement for another trade)."""
    seller = held.record.holder_user_id
    by_seller = endorse(keys.load_identity(seller), signed or held.signed, "sell_order", f"order:{seller}:{order}")
    by_exchange = endorse(keys.load_identity(EXCHANGE_ID), by_seller, "name_transfer", f"omn:{omn or number}")
    return CertificateLeg(
        agent=ISSUER_ID,
        exchange_id=EXCHANGE_ID,
        cert_id=held.record.cert_id,
        share_class=ShareClass.COMMON,
        certificate=by_exchange,
        buyer_name=buyer.title(),
        buyer_address="2-2 Kabuto-cho, Tokyo",
        seller_order=order,
        seller_order_open=order_open,
    )


def reserve(
    number: int,
    held: Held | None,
    the_leg: CertificateLeg | BookEntryLeg,
    quantity: int,
    *,
    buyer: str = "bob",
    attempt: int = 1,
    seller: str | None = None,
    deliver: bool = False,
) -> SecuritiesReserve:
    return SecuritiesReserve(
        instruction=number,
        attempt=attempt,
        issue_code=held.record.issue_code if held else "BOOK",
        quantity=quantity,
        deliverer=seller or (held.record.holder_user_id if held else "alice"),
        receiver=buyer,
        leg=the_leg,
        deliver=deliver,
    )


def sealed_by_settlement(keys: KeyStore, message: Message) -> Sealed:
    return seal(keys.load_identity(SETTLEMENT_ID), message, recipient=ISSUER_ID, now=datetime.now(UTC))


def commit(keys: KeyStore, number: int, attempt: int = 1) -> Sealed:
    return sealed_by_settlement(keys, SecuritiesCommit(instruction=number, attempt=attempt))


# -- what a group of requests left -------------------------------------------------------------------


@dataclass
class Group:
    """The names a group's values are compared under: its instructions (by place), its issues and
    the certificates it was given (by name); the CertIDs the issuer drew are named from the
    transfer that drew them."""

    numbers: list[int]
    issues: dict[str, str]
    certs: dict[str, Held] = field(default_factory=dict)

    def subs(self) -> dict[str, str]:
        out = {str(h.record.cert_id): name for name, h in self.certs.items()}
        out.update(self.issues)
        return out


async def snapshot(settings: Settings, rt: AgentRuntime, group: Group, sealed: Sequence[Sealed]) -> dict[str, Any]:
    """Every row of the group's issues and every message its requests ``sealed`` caused, named so
    that two groups handled alike compare equal and two handled differently do not."""
    index = {n: i for i, n in enumerate(group.numbers)}
    subs = group.subs()
    issues = list(group.issues)
    async with admin(settings) as c:
        transfers = await c.fetch(
            "SELECT * FROM name_transfers WHERE issue_code = ANY($1::text[]) ORDER BY name_transfer_number", issues
        )
        rank = {t["name_transfer_number"]: f"ntn{r}" for r, t in enumerate(transfers)}
        for t in transfers:
            who = f"#{index[t['matching_number']]}"
            subs[str(t["cert_id"])] = f"buyer of {who}"
            if t["remainder_cert_id"] is not None:
                subs[str(t["remainder_cert_id"])] = f"remainder of {who}"

        def norm(value: Any, key: str | None = None) -> Any:
            if isinstance(value, dict):
                return {k: norm(v, k) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [norm(v) for v in value]
            if isinstance(value, uuid.UUID):
                return subs.get(str(value), "unknown CertID")
            if isinstance(value, int) and not isinstance(value, bool):
                if key in ("instruction", "matching_number"):
                    return f"#{index.get(value, value)}"
                if key == "name_transfer_number":
                    return rank.get(value, value)
                return value
            if isinstance(value, str):
                for old, new in sorted(subs.items(), key=lambda kv: -len(kv[0])):
                    value = value.replace(old, new)
                if key == "detail":  # instruction numbers in words
                    value = re.sub(r"\b\d+\b", lambda m: f"#{index[int(m[0])]}" if int(m[0]) in index else m[0], value)
                return value
            return value

        register = await c.fetch(
            """SELECT cert_id, issue_code, certificate_number, holder_user_id, holder_name, holder_address, shares,
                      share_class, acquired_on, issuance_conditions, dividend_method, status, committed_order,
                      committed_by, retired_at IS NOT NULL AS retired
               FROM register WHERE issue_code = ANY($1::text[])""",
            issues,
        )
        reserved = await c.fetch(
            """SELECT instruction, attempt, cert_id, shares, request, previous_order, previous_by, status,
                      name_transfer_number, delivery, ended_at IS NOT NULL AS ended
               FROM reservations WHERE instruction = ANY($1::bigint[]) ORDER BY instruction""",
            group.numbers,
        )
        offerings = await c.fetch(
            "SELECT issue_code, next_certificate_number, register_version, shares_remaining FROM offerings "
            "WHERE issue_code = ANY($1::text[]) ORDER BY issue_code",
            issues,
        )
        signed_for = await c.fetch(
            "SELECT cert_id FROM issued_certificates WHERE cert_id IN (SELECT cert_id FROM register "
            "WHERE issue_code = ANY($1::text[]))",
            issues,
        )
        emitted = await set_kit.caused(c, sealed, lambda payload: norm(_certificates_opened(rt, payload)))
    return {
        "register": sorted(
            (norm({k: v for k, v in dict(r).items()}) for r in register),
            key=lambda r: (r["issue_code"], r["certificate_number"], r["cert_id"]),
        ),
        "reservations": [
            norm(
                {
                    **{k: v for k, v in dict(r).items() if k not in ("request", "delivery")},
                    "request": _request_of(r["request"]),
                    "delivery": _certificates_opened(rt, json.loads(r["delivery"])) if r["delivery"] else None,
                }
            )
            for r in reserved
        ],
        "name_transfers": [norm({k: v for k, v in dict(t).items() if k != "transferred_at"}) for t in transfers],
        "offerings": [norm(dict(o)) for o in offerings],
        "signed": sorted(norm(r["cert_id"]) for r in signed_for),
        "emitted": emitted,
    }


def _request_of(stored: str) -> dict[str, Any]:
    """A stored request by what it says, its certificate by the CertID it carries."""
    request = SecuritiesReserve.model_validate_json(stored)
    assert isinstance(request.leg, CertificateLeg)
    return {
        "instruction": request.instruction,
        "attempt": request.attempt,
        "quantity": request.quantity,
        "deliverer": request.deliverer,
        "receiver": request.receiver,
        "cert_id": request.leg.cert_id,
        "order": request.leg.seller_order,
        "open": request.leg.seller_order_open,
    }


def _certificates_opened(rt: AgentRuntime, value: Any) -> Any:
    """Every signed certificate in ``value`` verified with the issuer's key and replaced by its
    content: the signature itself differs from one signing to the next."""
    if isinstance(value, dict):
        if set(value) == {"content", "issuer_signature"}:
            certificate = verify_certificate(SignedCertificate.model_validate(value), rt.trust)
            return {"signed content": certificate.model_dump(mode="json")}
        return {k: _certificates_opened(rt, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_certificates_opened(rt, v) for v in value]
    return value


def answers(snap: dict[str, Any], item: int) -> list[tuple[str, str, dict[str, Any]]]:
    return [(e[1], e[3], e[4]) for e in snap["emitted"] if e[0] == item]


# -- securities.reserve -------------------------------------------------------------------------------


async def reserve_group(
    settings: Settings, keys: KeyStore, rt: AgentRuntime, base: int, issues: Sequence[str], deliver: bool = False
) -> tuple[Group, list[Sealed]]:
    """The group's certificates and earlier reservations, and the reserves to compare, each
    saying ``deliver`` if asked (the earlier ones never):

    0 valid; 1 endorsed by the exchange for another trade; 2 a certificate whose issuer signature
    fails; 3 a CertID another instruction (of the same sell order) holds reserved; 4 a retired
    CertID; 5 a reserve repeated for an instruction already reserved (another attempt); 6 a
    book-entry leg; 7 valid, of the second issue; 8 a certificate the issuer signed but whose
    CertID the register never held.
    """
    first, second = issues
    await open_issues(settings, first, second)
    group = Group([base + k for k in range(9)] + [base + 50], {first: "ISSUE1", second: "ISSUE2"})
    holders = ("alice", "bob", "carol", "alice", "bob", "carol", None, "bob", "carol")
    for k, holder in enumerate(holders):
        if holder is not None:
            issue = second if k == 7 else first
            group.certs[f"c{k}"] = await holding(settings, keys, issue, holder, 500, registered=k != 8)
    c = group.certs
    n = group.numbers
    # Beforehand, one at a time (alike for every group): c3 reserved for another instruction of
    # its sell order, instruction 5 reserved, and c4 retired.
    earlier = [
        sealed_by_settlement(keys, reserve(base + 50, c["c3"], leg(keys, c["c3"], base + 50, 13), 100)),
        sealed_by_settlement(keys, reserve(n[5], c["c5"], leg(keys, c["c5"], n[5], 15), 200)),
    ]
    assert outcomes(await one_at_a_time(settings, rt, earlier)) == ["processed"] * 2
    async with admin(settings) as a:
        await a.execute(
            "UPDATE register SET status = 'retired', retired_at = now() WHERE cert_id = $1", c["c4"].record.cert_id
        )
    book_entry = BookEntryLeg(agent=ISSUER_ID, deliverer_account="alice-sk", receiver_account="bob-sk")
    requests = [
        reserve(n[0], c["c0"], leg(keys, c["c0"], n[0], 10, order_open=True), 300),
        reserve(n[1], c["c1"], leg(keys, c["c1"], n[1], 11, omn=n[1] + 1), 500),
        reserve(n[2], c["c2"], leg(keys, c["c2"], n[2], 12, signed=tampered(c["c2"].signed)), 500),
        reserve(n[3], c["c3"], leg(keys, c["c3"], n[3], 13), 200),
        reserve(n[4], c["c4"], leg(keys, c["c4"], n[4], 14), 500),
        reserve(n[5], c["c5"], leg(keys, c["c5"], n[5], 15), 200, attempt=2),
        reserve(n[6], None, book_entry, 100, seller="alice"),
        reserve(n[7], c["c7"], leg(keys, c["c7"], n[7], 17, buyer="carol"), 500, buyer="carol"),
        reserve(n[8], c["c8"], leg(keys, c["c8"], n[8], 18), 100),
    ]
    return group, [sealed_by_settlement(keys, r.model_copy(update={"deliver": deliver})) for r in requests]


async def test_a_batch_of_reserves_is_one_set_call_and_leaves_what_one_at_a_time_leaves(
    settings: Settings, keys: KeyStore
) -> None:
    calls: Calls = []
    async with issuer(settings, calls) as rt:
        in_set, as_set = await reserve_group(settings, keys, rt, 100, ("SETA", "SETB"))
        alone, one_by_one = await reserve_group(settings, keys, rt, 200, ("ONEA", "ONEB"))
        async with admin(settings) as c:
            before = {
                r["instruction"]: r["reserved_at"]
                for r in await c.fetch("SELECT instruction, reserved_at FROM reservations")
            }
        calls.clear()

        assert outcomes(await as_one_batch(settings, rt, as_set)) == ["processed"] * 9
        assert calls == [("reserve", in_set.numbers[:9])]  # one call for the nine
        calls.clear()
        assert outcomes(await one_at_a_time(settings, rt, one_by_one)) == ["processed"] * 9
        assert calls == [("reserve", [n]) for n in alone.numbers[:9]]

        snap = await snapshot(settings, rt, in_set, as_set)
        assert snap == await snapshot(settings, rt, alone, one_by_one)
        async with admin(settings) as c:
            after = {
                r["instruction"]: r["reserved_at"]
                for r in await c.fetch("SELECT instruction, reserved_at FROM reservations")
            }

    # and what both left is what each reserve must leave
    reserved = [(a[0], a[2]["attempt"]) for i in range(9) for a in answers(snap, i) if a[0] == "securities.reserved"]
    assert reserved == [("securities.reserved", 1), ("securities.reserved", 2), ("securities.reserved", 1)]
    assert refusals(snap) == REFUSED_IN_THE_GROUP
    assert all(len(answers(snap, i)) == 1 and answers(snap, i)[0][1] == SETTLEMENT_ID for i in range(9))
    rows = {r["instruction"]: r for r in snap["reservations"]}
    assert sorted(rows) == ["#0", "#5", "#7", "#9"]  # nothing written for a refused one
    assert (rows["#0"]["cert_id"], rows["#0"]["status"], rows["#0"]["shares"]) == ("c0", "reserved", 300)
    assert (rows["#7"]["cert_id"], rows["#7"]["status"], rows["#7"]["shares"]) == ("c7", "reserved", 500)
    # the repeated reserve wrote nothing: its row is the first attempt's, untouched
    assert (rows["#5"]["attempt"], rows["#5"]["request"]["attempt"], rows["#5"]["shares"]) == (1, 1, 200)
    assert after[in_set.numbers[5]] == before[in_set.numbers[5]]
    assert after[in_set.numbers[9]] == before[in_set.numbers[9]]
    register = {r["cert_id"]: r for r in snap["register"]}
    assert (register["c0"]["committed_by"], register["c0"]["committed_order"]) == (EXCHANGE_ID, 10)
    assert (register["c7"]["committed_by"], register["c7"]["committed_order"]) == (EXCHANGE_ID, 17)
    assert (register["c3"]["committed_by"], register["c3"]["committed_order"]) == (EXCHANGE_ID, 13)  # the other's
    for name in ("c1", "c2", "c4"):
        assert (register[name]["committed_by"], register[name]["committed_order"]) == (None, None)
    assert register["c4"]["status"] == "retired"


REFUSED_IN_THE_GROUP = {
    1: ("securities_invalid", False, "endorsement_invalid"),
    2: ("securities_invalid", False, "certificate_signature_invalid"),
    3: ("lack_of_securities", True, "CertID is reserved for instruction #9"),
    4: ("lack_of_securities", False, "not_registered"),
    6: ("securities_invalid", False, "the issuer delivers certificates, not book entries"),
    8: ("lack_of_securities", False, "not_registered"),
}


def refusals(snap: dict[str, Any]) -> dict[int, tuple[str, bool, str]]:
    return {
        i: (a[2]["reason"], a[2]["retryable"], a[2]["detail"].split(":")[0])
        for i in range(9)
        for a in answers(snap, i)
        if a[0] == "securities.reservation_refused"
    }


async def test_a_batch_of_reserves_that_say_deliver_transfers_at_once_as_one_at_a_time_does(
    settings: Settings, keys: KeyStore
) -> None:
    """docs/dvp.md, "Delivery against earmarked cash": each reserve that is made is committed in
    the same transaction and answered ``securities.committed``; the refusals are those of plain
    reserves, and nothing is written for them."""
    calls: Calls = []
    async with issuer(settings, calls) as rt:
        in_set, as_set = await reserve_group(settings, keys, rt, 100, ("SETA", "SETB"), deliver=True)
        alone, one_by_one = await reserve_group(settings, keys, rt, 200, ("ONEA", "ONEB"), deliver=True)
        calls.clear()
        assert outcomes(await as_one_batch(settings, rt, as_set)) == ["processed"] * 9
        assert calls == [("reserve", in_set.numbers[:9])]  # one call for the nine, no commit
        assert outcomes(await one_at_a_time(settings, rt, one_by_one)) == ["processed"] * 9
        snap = await snapshot(settings, rt, in_set, as_set)
        assert snap == await snapshot(settings, rt, alone, one_by_one)

    assert refusals(snap) == REFUSED_IN_THE_GROUP
    committed = {i: a[2] for i in range(9) for a in answers(snap, i) if a[0] == "securities.committed"}
    assert sorted(committed) == [0, 5, 7]
    assert [committed[i]["attempt"] for i in (0, 5, 7)] == [1, 2, 1]  # 5: the attempt that asked to deliver
    assert not any(a[0] == "securities.reserved" for i in range(9) for a in answers(snap, i))
    rows = {r["instruction"]: r for r in snap["reservations"]}
    assert sorted(rows) == ["#0", "#5", "#7", "#9"]  # nothing written for a refused one
    for i in (0, 5, 7):
        assert (rows[f"#{i}"]["status"], rows[f"#{i}"]["ended"]) == ("committed", True)
        assert rows[f"#{i}"]["delivery"] == committed[i]["delivery"]
        assert committed[i]["delivery"]["new_cert_id"] == f"buyer of #{i}"
    assert rows["#9"]["status"] == "reserved"  # the other instruction's, untouched
    register = {r["cert_id"]: r for r in snap["register"]}
    expected = {  # holder, shares: #0 sold 300 of alice's 500, #5 200 of carol's, #7 all of bob's
        "buyer of #0": ("bob", 300),
        "remainder of #0": ("alice", 200),
        "buyer of #5": ("bob", 200),
        "remainder of #5": ("carol", 300),
        "buyer of #7": ("carol", 500),
    }
    for name, (holder, shares) in expected.items():
        row = register[name]
        assert (row["status"], row["holder_user_id"], row["shares"]) == ("valid", holder, shares), name
    for name in ("c0", "c5", "c7"):
        assert register[name]["status"] == "retired"
    for name in ("c1", "c2", "c3"):
        assert register[name]["status"] == "valid"  # refused: as they were
    assert "c8" not in register  # the register never held it


# -- securities.commit --------------------------------------------------------------------------------


async def commit_group(
    settings: Settings, keys: KeyStore, rt: AgentRuntime, base: int, issues: Sequence[str]
) -> tuple[Group, list[Sealed]]:
    """The group's certificates, each reserved for its instruction, and the commits to compare:

    #0 whole (alice 500 to bob); #1 partial, 200 of carol's 500, her order still open (the
    remainder stays committed to it); #2 whole, of the second issue; #5 a commit repeated for an
    instruction committed before; #3 partial, 100 of alice's 300, her order done; #4 whole.
    """
    first, second = issues
    await open_issues(settings, first, second)
    group = Group([base + k for k in range(6)], {first: "ISSUE1", second: "ISSUE2"})
    plan = [  # holder, issue, shares held, quantity sold, buyer, order still open
        ("alice", first, 500, 500, "bob", False),
        ("carol", first, 500, 200, "bob", True),
        ("bob", second, 400, 400, "alice", False),
        ("alice", first, 300, 100, "carol", False),
        ("carol", first, 200, 200, "alice", False),
        ("bob", second, 100, 100, "carol", False),
    ]
    requests = []
    for k, (holder, issue, shares, quantity, buyer, order_open) in enumerate(plan):
        held = group.certs[f"c{k}"] = await holding(settings, keys, issue, holder, shares)
        the_leg = leg(keys, held, base + k, 20 + k, buyer=buyer, order_open=order_open)
        requests.append(sealed_by_settlement(keys, reserve(base + k, held, the_leg, quantity, buyer=buyer)))
    assert outcomes(await one_at_a_time(settings, rt, requests)) == ["processed"] * 6
    assert outcomes(await one_at_a_time(settings, rt, [commit(keys, base + 5)])) == ["processed"]
    order = [0, 1, 2, 5, 3, 4]
    return group, [commit(keys, base + k) for k in order]


async def test_a_batch_of_commits_is_one_set_call_and_leaves_what_one_at_a_time_leaves(
    settings: Settings, keys: KeyStore
) -> None:
    calls: Calls = []
    async with issuer(settings, calls) as rt:
        in_set, as_set = await commit_group(settings, keys, rt, 100, ("SETA", "SETB"))
        alone, one_by_one = await commit_group(settings, keys, rt, 200, ("ONEA", "ONEB"))
        async with admin(settings) as c:
            drawn_before = {
                r["issue_code"]: (r["next_certificate_number"], r["register_version"])
                for r in await c.fetch("SELECT * FROM offerings")
            }
        first_delivery = await delivered(settings, in_set.numbers[5])
        calls.clear()

        assert outcomes(await as_one_batch(settings, rt, as_set)) == ["processed"] * 6
        assert calls == [("commit", [in_set.numbers[k] for k in (0, 1, 2, 5, 3, 4)])]  # one call for the six
        calls.clear()
        assert outcomes(await one_at_a_time(settings, rt, one_by_one)) == ["processed"] * 6
        assert calls == [("commit", [alone.numbers[k]]) for k in (0, 1, 2, 5, 3, 4)]

        snap = await snapshot(settings, rt, in_set, as_set)
        assert snap == await snapshot(settings, rt, alone, one_by_one)
        async with admin(settings) as c:
            ntns = {
                r["matching_number"]: r["name_transfer_number"]
                for r in await c.fetch("SELECT matching_number, name_transfer_number FROM name_transfers")
            }
        repeated = await delivered(settings, in_set.numbers[5])

    # what the set left is what the commits must leave. Name-transfer numbers: in the batch's order,
    # one after the other (the repeated commit drew none).
    moved = [in_set.numbers[k] for k in (0, 1, 2, 3, 4)]
    assert [ntns[n] for n in moved] == list(range(ntns[moved[0]], ntns[moved[0]] + 5))
    assert ntns[in_set.numbers[5]] < ntns[moved[0]]
    # certificate numbers and register versions drawn per issue in the batch's order, as one by one
    seq1, version1 = drawn_before["SETA"]
    seq2, version2 = drawn_before["SETB"]
    committed = {
        int(a[2]["instruction"][1:]): a[2] for i in range(6) for a in answers(snap, i) if a[0] == "securities.committed"
    }
    assert sorted(committed) == [0, 1, 2, 3, 4, 5]
    assert [committed[k]["delivery"]["register_version"] for k in (0, 1, 3, 4)] == [
        version1 + 1,
        version1 + 2,
        version1 + 3,
        version1 + 4,
    ]
    assert committed[2]["delivery"]["register_version"] == version2 + 1
    offerings = {o["issue_code"]: (o["next_certificate_number"], o["register_version"]) for o in snap["offerings"]}
    assert offerings == {"ISSUE1": (seq1 + 4, version1 + 4), "ISSUE2": (seq2 + 1, version2 + 1)}
    register = {r["cert_id"]: r for r in snap["register"]}
    # whole: the buyer keeps the certificate number; partial: the buyer's is drawn (#1 drew the
    # second of the issue's four, #3 the third), the remainder keeps the old one
    assert register["buyer of #0"]["certificate_number"] == register["c0"]["certificate_number"]
    assert register["buyer of #1"]["certificate_number"] == f"ISSUE1-{seq1 + 1:08d}"
    assert register["buyer of #3"]["certificate_number"] == f"ISSUE1-{seq1 + 2:08d}"
    assert register["remainder of #1"]["certificate_number"] == register["c1"]["certificate_number"]
    assert register["remainder of #3"]["certificate_number"] == register["c3"]["certificate_number"]
    # old CertIDs retired, buyers and remainders registered
    for k in range(6):
        assert (register[f"c{k}"]["status"], register[f"c{k}"]["retired"]) == ("retired", True)
    expected = {  # holder, shares, committed to
        "buyer of #0": ("bob", 500, None),
        "buyer of #1": ("bob", 200, None),
        "remainder of #1": ("carol", 300, (EXCHANGE_ID, 21)),  # her order is still open
        "buyer of #2": ("alice", 400, None),
        "buyer of #3": ("carol", 100, None),
        "remainder of #3": ("alice", 200, None),
        "buyer of #4": ("alice", 200, None),
        "buyer of #5": ("carol", 100, None),
    }
    for name, (holder, shares, to) in expected.items():
        row = register[name]
        assert (row["status"], row["holder_user_id"], row["shares"]) == ("valid", holder, shares), name
        assert (None if row["committed_by"] is None else (row["committed_by"], row["committed_order"])) == to, name
    # reservations committed with what their commit delivered, each answer its own
    rows = {r["instruction"]: r for r in snap["reservations"]}
    for k in range(6):
        row = rows[f"#{k}"]
        assert (row["status"], row["ended"]) == ("committed", True)
        assert row["delivery"] == committed[k]["delivery"]
        assert row["name_transfer_number"] == committed[k]["delivery"]["name_transfer_number"]
        assert committed[k]["delivery"]["new_cert_id"] == f"buyer of #{k}"
    for place, k in enumerate((0, 1, 2, 5, 3, 4)):  # caused by its own request
        assert [a[0] for a in answers(snap, place) if a[0] == "securities.committed"] == ["securities.committed"]
        assert answers(snap, place)[-1][2]["instruction"] == f"#{k}"
    # the repeated commit: the same delivery again, no second transfer
    assert repeated == first_delivery
    assert [t["matching_number"] for t in snap["name_transfers"]].count("#5") == 1
    assert committed[5]["delivery"]["name_transfer_number"] == "ntn0"
    # a partial sale's remainder: signed, recorded as issued, and pushed to the seller at once
    for place, k, seller in ((1, 1, "carol"), (4, 3, "alice")):
        pushed = [a for a in answers(snap, place) if a[0] == "certificate.remainder"]
        assert len(pushed) == 1 and pushed[0][1] == seller
        remainder = pushed[0][2]
        assert remainder["replaces_cert_id"] == f"c{k}"
        assert remainder["name_transfer_number"] == committed[k]["delivery"]["name_transfer_number"]
        content = remainder["certificate"]["signed content"]
        row = register[f"remainder of #{k}"]
        assert (content["cert_id"], content["shares"], content["holder_user_id"], content["certificate_number"]) == (
            f"remainder of #{k}",
            row["shares"],
            seller,
            row["certificate_number"],
        )
        assert committed[k]["delivery"]["remainder"] == remainder["certificate"]
    for place in (0, 2, 3, 5):
        assert [a[0] for a in answers(snap, place)] == ["securities.committed"]
    assert sorted(snap["signed"]) == sorted([*(f"c{k}" for k in range(6)), "remainder of #1", "remainder of #3"])


async def delivered(settings: Settings, number: int) -> Any:
    async with admin(settings) as c:
        return await c.fetchval("SELECT delivery FROM reservations WHERE instruction = $1", number)


async def test_a_commit_with_no_reservation_fails_alone_and_the_others_commit(
    settings: Settings, keys: KeyStore
) -> None:
    """The set raises for the commit of an instruction the issuer never reserved; the batch runs
    again a savepoint each: that commit is scheduled for retry, the others commit, drawing their
    numbers one after the other."""
    calls: Calls = []
    async with issuer(settings, calls) as rt:
        group = Group([1, 2, 3], {"SETA": "ISSUE1", "SETB": "ISSUE2"})
        await open_issues(settings, "SETA")
        reserves = []
        for k in (0, 2):
            held = group.certs[f"c{k}"] = await holding(settings, keys, "SETA", "alice", 300)
            reserves.append(sealed_by_settlement(keys, reserve(k + 1, held, leg(keys, held, k + 1, 30 + k), 300)))
        assert outcomes(await as_one_batch(settings, rt, reserves)) == ["processed"] * 2
        calls.clear()
        sealed = [commit(keys, 1), commit(keys, 2), commit(keys, 3)]
        settled = await as_one_batch(settings, rt, sealed)
        snap = await snapshot(settings, rt, group, sealed)
    assert calls == [("commit", [1, 2, 3]), ("commit", [1]), ("commit", [2]), ("commit", [3])]
    assert outcomes(settled) == ["processed", "retry_scheduled", "processed"]
    assert [(r["instruction"], r["status"]) for r in snap["reservations"]] == [("#0", "committed"), ("#2", "committed")]
    assert [(t["matching_number"], t["name_transfer_number"]) for t in snap["name_transfers"]] == [
        ("#0", "ntn0"),
        ("#2", "ntn1"),
    ]
    assert [(e[0], e[1]) for e in snap["emitted"]] == [(0, "securities.committed"), (2, "securities.committed")]
    assert [e[4]["delivery"]["new_cert_id"] for e in snap["emitted"]] == ["buyer of #0", "buyer of #2"]


async def test_two_commits_of_one_instruction_in_a_batch_are_never_one_set_and_the_second_changes_nothing(
    settings: Settings, keys: KeyStore
) -> None:
    calls: Calls = []
    async with issuer(settings, calls) as rt:
        group = Group([1, 2], {"SETA": "ISSUE1", "SETB": "ISSUE2"})
        await open_issues(settings, "SETA")
        reserves = []
        for k in (0, 1):
            held = group.certs[f"c{k}"] = await holding(settings, keys, "SETA", "carol", 300)
            the_leg = leg(keys, held, k + 1, 40 + k, order_open=True)
            reserves.append(sealed_by_settlement(keys, reserve(k + 1, held, the_leg, 100)))
        assert outcomes(await as_one_batch(settings, rt, reserves)) == ["processed"] * 2
        calls.clear()
        sealed = [commit(keys, 1), commit(keys, 2), commit(keys, 1)]
        assert outcomes(await as_one_batch(settings, rt, sealed)) == ["processed"] * 3
        snap = await snapshot(settings, rt, group, sealed)
    assert calls == [("commit", [1, 2]), ("commit", [1])]
    assert [t["matching_number"] for t in snap["name_transfers"]] == ["#0", "#1"]
    committed = [(e[0], e[4]) for e in snap["emitted"] if e[1] == "securities.committed"]
    assert [place for place, _ in committed] == [0, 1, 2]
    assert committed[2][1] == committed[0][1]  # the same answer again
    # the second commit pushed no second remainder
    assert [(e[0], e[1]) for e in snap["emitted"] if e[1] == "certificate.remainder"] == [
        (0, "certificate.remainder"),
        (1, "certificate.remainder"),
    ]


# -- the rest of a partly settled instruction, in the middle of a set ------------------------------


async def rest_group(
    settings: Settings, keys: KeyStore, rt: AgentRuntime, base: int, issue: str, rest_first: bool, deliver: bool
) -> tuple[Group, list[Sealed]]:
    """#0 sold 200 of carol's 500 and committed, her order still open (the remainder, 300, stays
    committed to it); then, in one set: #1 a fresh valid reserve, #0's rest from the remainder
    (the rare path), and #2 another trade of carol's order presenting the remainder itself —
    the rest before #2 or after it (``rest_first``); the three saying ``deliver`` if asked."""
    await open_issues(settings, issue)
    group = Group([base, base + 1, base + 2], {issue: "ISSUE1"})
    c0 = group.certs["c0"] = await holding(settings, keys, issue, "carol", 500)
    c1 = group.certs["c1"] = await holding(settings, keys, issue, "alice", 500)
    first = reserve(base, c0, leg(keys, c0, base, 60, order_open=True), 200)
    assert outcomes(await one_at_a_time(settings, rt, [sealed_by_settlement(keys, first)])) == ["processed"]
    assert outcomes(await one_at_a_time(settings, rt, [commit(keys, base)])) == ["processed"]
    async with admin(settings) as c:
        done = CertificateDelivery.model_validate_json(await delivered(settings, base))
        assert done.remainder is not None
        record = await repo.record(c, uuid.UUID(json.loads(done.remainder.content)["cert_id"]))
    assert record is not None and record.committed_order == 60
    remainder = Held(record, done.remainder)
    rest = reserve(base, c0, leg(keys, c0, base, 60, order_open=True), 300, attempt=2)
    other = reserve(base + 2, remainder, leg(keys, remainder, base + 2, 60, order_open=True), 300)
    fresh = reserve(base + 1, c1, leg(keys, c1, base + 1, 61), 500)
    requests = [fresh, rest, other] if rest_first else [fresh, other, rest]
    return group, [sealed_by_settlement(keys, r.model_copy(update={"deliver": deliver})) for r in requests]


@pytest.mark.parametrize("deliver", [False, True], ids=["reserve", "deliver"])
@pytest.mark.parametrize("rest_first", [True, False], ids=["rest-first", "rest-after"])
async def test_the_rest_of_a_partly_settled_instruction_in_a_set_is_reserved_in_order(
    settings: Settings, keys: KeyStore, rest_first: bool, deliver: bool
) -> None:
    calls: Calls = []
    async with issuer(settings, calls) as rt:
        in_set, as_set = await rest_group(settings, keys, rt, 100, "SETA", rest_first, deliver)
        alone, one_by_one = await rest_group(settings, keys, rt, 200, "ONEA", rest_first, deliver)
        calls.clear()
        assert outcomes(await as_one_batch(settings, rt, as_set)) == ["processed"] * 3
        assert len(calls) == 1 and sorted(calls[0][1]) == in_set.numbers
        assert outcomes(await one_at_a_time(settings, rt, one_by_one)) == ["processed"] * 3
        snap = await snapshot(settings, rt, in_set, as_set)
        assert snap == await snapshot(settings, rt, alone, one_by_one)
    said = {
        a[2]["instruction"]: (a[0], a[2].get("retryable"), a[2].get("detail"))
        for i in range(3)
        for a in answers(snap, i)
    }
    made = "securities.committed" if deliver else "securities.reserved"
    assert said["#1"] == (made, None, None)
    if rest_first and deliver:  # the rest takes the remainder, all of it; the other trade finds it gone
        assert said["#0"] == (made, None, None)
        assert said["#2"][:2] == ("securities.reservation_refused", False)
        assert said["#2"][2].startswith("not_registered: CertID remainder of #0 of carol is not valid")
    elif rest_first:  # the rest takes the remainder; the other trade finds it reserved
        assert said["#0"] == (made, None, None)
        assert said["#2"] == ("securities.reservation_refused", True, "CertID is reserved for instruction #0")
    else:  # the other trade takes it first; the rest is no longer covered
        assert said["#2"] == (made, None, None)
        assert said["#0"] == (
            "securities.reservation_refused",
            False,
            "the seller's remainder no longer covers the rest",
        )
