"""The issuer's set-based answer to a buyer's certificate request by name-transfer number (seed 001
message 39, S141–S150, R-001-44..46; agents/issuer/transfers.py ``on_request_after_transfer``),
against the real RabbitMQ and PostgreSQL, with real name transfers: each made by the issuer's own
reserve and commit of a settlement instruction (tests/integration/test_issuer_sets.py).

The same requests are handled three ways, each by a group of its own built alike (its own issues,
so that certificate numbers and name-transfer numbers are drawn alike):

* ``set``: taken off the issuer's inbox and settled as one group-committed batch — the set handler;
* ``alone``: settled one delivery at a time — the set handler called with sets of one;
* ``reference``: one delivery at a time by the handler as it was before the change (76a6f12^),
  kept below statement for statement: the behaviour the set handler must keep.

All three must leave the same register rows (holder name, address, dividend method and account),
the same certificates kept, the same rows written and nothing else, and emit the same answers — the
certificates compared by their content, each signature verified with the issuer's key, each one
emitted the very bytes kept. The issuer agent is opened but not run (tests/integration/set_kit.py).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import aio_pika

from agents.issuer import app as issuer_app
from agents.issuer import domain, repo, transfers
from broker import clear_accounts
from broker.consumer import Handler, Settled
from broker.context import Context
from broker.envelope import Sealed, seal
from broker.pki import KeyStore
from broker.runtime import AgentDefinition, AgentRuntime
from broker.sealed_box import open_box, sealed_dividend
from broker.set_based import SetBased
from broker.settings import Settings
from broker.stock_certificates import sign_certificate, verify_certificate
from broker.topology import Names
from schemas.catalogue import Message
from schemas.certificates import IssuerSignature, SignedCertificate
from schemas.identity import ISSUER_ID, SETTLEMENT_ID
from schemas.issuance import (
    CertificateIssuanceRefused,
    CertificateIssued,
    DividendDeliveryV1,
    DividendMethod,
    IssuanceRefusal,
)
from schemas.sealed import dividend_account
from schemas.trading import CertificateRequestAfterTransfer, CertificateRequestAfterTransferV1
from tests import support
from tests.integration import set_kit
from tests.integration import test_issuer_sets as dvp
from tests.integration.set_kit import outcomes

Mode = Literal["set", "alone", "reference"]
MODES: tuple[Mode, ...] = ("set", "alone", "reference")
UNKNOWN_NTN = 900_000_001  # no name transfer has this number
REFUSED = "no name transfer {ntn} to {who} whose CertID is still valid"
PROCESSED = ("processed", None)
DATA_INVALID = ("dead_lettered", "data_invalid")
RETRY = "retry_scheduled"


def inbox(names: Names) -> str:
    return names.inbox(ISSUER_ID)


# -- the handler before the change (76a6f12^), statement for statement ---------------------------------


async def reference_request_after_transfer(request: CertificateRequestAfterTransfer, ctx: Context) -> None:
    """agents/issuer/transfers.py ``on_request_after_transfer`` as it was before 76a6f12, with the
    repo statements it then made (``transferred``, ``signed``, ``complete_holder``, ``offering``,
    ``record_signed``): the one-at-a-time behaviour the set handler replaces."""
    assert ctx.sender is not None and ctx.message_id is not None
    conn = ctx.connection
    row = await conn.fetchrow(
        f"""SELECT n.name_transfer_number, n.cert_id, n.buyer_user_id, n.seller_user_id, {repo.record_columns("r")}
            FROM name_transfers n JOIN register r ON r.cert_id = n.cert_id
            WHERE n.name_transfer_number = $1
            FOR UPDATE OF r""",
        request.name_transfer_number,
    )
    found = repo.record_of(row, "r") if row is not None else None
    if (
        row is None
        or found is None
        or row["buyer_user_id"] != ctx.sender.user_id
        or found.status != "valid"
        or found.holder_user_id != ctx.sender.user_id
    ):
        ctx.emit(
            CertificateIssuanceRefused(
                request_id=ctx.message_id,
                reason=IssuanceRefusal.UNKNOWN_TRANSFER,
                detail=f"no name transfer {request.name_transfer_number} to {ctx.sender.user_id} "
                "whose CertID is still valid",
            ),
            to=ctx.sender.user_id,
        )
        return
    kept = await conn.fetchrow(
        "SELECT content, signature, signer_certificate FROM issued_certificates WHERE cert_id = $1", found.cert_id
    )
    if kept is not None and kept["signer_certificate"] is not None:
        signed = SignedCertificate(
            content=kept["content"],
            issuer_signature=IssuerSignature(certificate=kept["signer_certificate"], signature=kept["signature"]),
        )
    else:
        delivery = request.dividend_delivery
        completed = await conn.fetchrow(
            """UPDATE register SET holder_name = $2, holder_address = $3, dividend_method = $4,
                   dividend_account = $5 WHERE cert_id = $1 RETURNING *""",
            found.cert_id,
            request.holder_name,
            request.holder_address,
            delivery.method.value,
            delivery.account,
        )
        record = repo.record_of(completed)
        offering = await repo.offering(conn, record.issue_code)
        assert offering is not None
        certificate = domain.certificate(
            offering,
            cert_id=record.cert_id,
            number=record.certificate_number,
            shares=record.shares,
            holder_name=record.holder_name,
            holder_user_id=record.holder_user_id,
            today=ctx.now.date(),
            agent=domain.issuing_agent(ctx.identity.user_id),
        )
        signed = sign_certificate(ctx.identity, certificate)
        await conn.execute(
            """INSERT INTO issued_certificates (cert_id, content, signature, signer_certificate)
               VALUES ($1, $2, $3, $4)""",
            record.cert_id,
            signed.content,
            signed.issuer_signature.signature,
            signed.issuer_signature.certificate,
        )
    ctx.emit(CertificateIssued(request_id=ctx.message_id, certificate=signed), to=ctx.sender.user_id)


# -- the issuer, opened but not run --------------------------------------------------------------------


@dataclass
class Issuer:
    """The runtime, the name-transfer numbers of each call of the set handler, those of each V1
    request handled, and whether the reference handles the requests instead."""

    calls: list[list[int]] = field(default_factory=list)
    v1: list[int] = field(default_factory=list)
    reference: bool = False
    rt: AgentRuntime = field(init=False)


def issuer_definition(state: Issuer) -> AgentDefinition:
    real = issuer_app.AGENT
    handler = transfers.on_request_after_transfer

    async def handle_set(items: Sequence[tuple[CertificateRequestAfterTransfer, Context]]) -> None:
        state.calls.append([request.name_transfer_number for request, _ in items])
        if state.reference:
            assert len(items) == 1, "the reference is given its deliveries one at a time"
            await reference_request_after_transfer(*items[0])
        else:
            await handler.handle_set(items)

    async def on_v1(request: CertificateRequestAfterTransferV1, ctx: Context) -> None:
        state.v1.append(request.name_transfer_number)
        if state.reference:
            assert ctx.sender is not None
            sealed = clear_accounts.sealed_request_after_transfer(ctx.trust, ctx.sender.user_id, request)
            await reference_request_after_transfer(sealed, ctx)
        else:
            await issuer_app.on_request_after_transfer_v1(request, ctx)

    handlers: dict[type[Message], Handler] = {
        CertificateRequestAfterTransfer: SetBased(handle_set, keys=handler.keys, phase=handler.phase),
        CertificateRequestAfterTransferV1: on_v1,
    }
    return set_kit.with_handlers(real, handlers)


@asynccontextmanager
async def issuer(settings: Settings) -> AsyncIterator[Issuer]:
    state = Issuer()
    async with AgentRuntime(issuer_definition(state), settings) as rt:
        state.rt = rt
        yield state


async def settle(settings: Settings, state: Issuer, mode: Mode, sealed: Sequence[Sealed]) -> list[Settled]:
    state.calls.clear()
    state.v1.clear()
    state.reference = mode == "reference"
    try:
        if mode == "set":
            return await set_kit.as_one_batch(settings, state.rt, sealed, inbox)
        return await set_kit.one_at_a_time(settings, state.rt, sealed, inbox)
    finally:
        state.reference = False


# -- name transfers ------------------------------------------------------------------------------------

# A trade of ``plan``: the issue (by place in the group's issues), seller, buyer, shares the
# seller's certificate holds, shares sold.
Trade = tuple[int, str, str, int, int]


@dataclass
class Group:
    """A group's issues, the name-transfer number of each of its trades and the names its values
    are compared under: certificates c<k> (the seller's), t<k> (the buyer's), r<k> (the seller's
    remainder); trade k's number ntn<k>; a request by its place, req<i>."""

    mode: Mode
    issues: dict[str, str]
    base: int
    ntns: list[int] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)
    extra: dict[str, int] = field(default_factory=dict)  # name-transfer numbers made later, by name

    def ntn(self, k: int | str | None) -> int:
        if k is None:
            return UNKNOWN_NTN
        return self.extra[k] if isinstance(k, str) else self.ntns[k]

    def cert(self, name: str) -> uuid.UUID:
        return uuid.UUID(next(key for key, value in self.names.items() if value == name))


async def traded(settings: Settings, state: Issuer, mode: Mode, base: int, plan: Sequence[Trade]) -> Group:
    """The group's issues opened and each trade of ``plan`` reserved and committed by the issuer,
    one delivery at a time: the name transfers its requests ask after."""
    issues = {f"{mode[:3].upper()}{chr(ord('A') + i)}": f"ISSUE{i + 1}" for i in range(1 + max(p[0] for p in plan))}
    group = Group(mode, issues, base)
    codes = list(issues)
    await dvp.open_issues(settings, *codes)
    reserves = []
    for k, (issue, seller, buyer, shares, quantity) in enumerate(plan):
        held = await dvp.holding(settings, state.rt.keys, codes[issue], seller, shares)
        group.names[str(held.record.cert_id)] = f"c{k}"
        the_leg = dvp.leg(state.rt.keys, held, base + k, 20 + k, buyer=buyer)
        reserves.append(
            dvp.sealed_by_settlement(state.rt.keys, dvp.reserve(base + k, held, the_leg, quantity, buyer=buyer))
        )
    commits = [dvp.commit(state.rt.keys, base + k) for k in range(len(plan))]
    assert outcomes(await dvp.one_at_a_time(settings, state.rt, reserves)) == ["processed"] * len(plan)
    assert outcomes(await dvp.one_at_a_time(settings, state.rt, commits)) == ["processed"] * len(plan)
    for k in range(len(plan)):
        group.ntns.append(await _note_transfer(settings, group, base + k, str(k)))
    return group


async def _note_transfer(settings: Settings, group: Group, matching_number: int, name: str) -> int:
    async with dvp.admin(settings) as c:
        row = await c.fetchrow("SELECT * FROM name_transfers WHERE matching_number = $1", matching_number)
    assert row is not None
    group.names[str(row["cert_id"])] = f"t{name}"
    if row["remainder_cert_id"] is not None:
        group.names[str(row["remainder_cert_id"])] = f"r{name}"
    return int(row["name_transfer_number"])


async def sold_on(settings: Settings, state: Issuer, group: Group, k: int, buyer: str, number: int) -> None:
    """The buyer of trade k sells the certificate it was issued on, whole, to ``buyer``: a real
    name transfer retiring t<k>, noted as ``t<k>b`` (its number ``group.extra["<k>b"]``)."""
    async with dvp.admin(settings) as c:
        record = await repo.record(c, group.cert(f"t{k}"))
        signed = await repo.signed(c, group.cert(f"t{k}"))
    assert record is not None and signed is not None, "the certificate was asked for and issued before"
    held = dvp.Held(record, signed)
    keys = state.rt.keys
    the_leg = dvp.leg(keys, held, number, 90, buyer=buyer)
    request = dvp.sealed_by_settlement(keys, dvp.reserve(number, held, the_leg, record.shares, buyer=buyer))
    assert outcomes(await dvp.one_at_a_time(settings, state.rt, [request])) == ["processed"]
    assert outcomes(await dvp.one_at_a_time(settings, state.rt, [dvp.commit(keys, number)])) == ["processed"]
    group.extra[f"{k}b"] = await _note_transfer(settings, group, number, f"{k}b")


# -- requests ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ask:
    """A request of message 39: which trade's number (None: a number no transfer has; "<k>b": one
    made later), by whom, with what holder details and dividend delivery; in version 1 (the
    account in clear) or 2 (sealed to settlement)."""

    trade: int | str | None
    by: str
    name: str | None = None
    address: str | None = None
    method: DividendMethod = DividendMethod.BANK_TRANSFER
    account: str = "0001-000000"
    v1: bool = False

    def holder_name(self) -> str:
        return f"{self.by.title()} Holder" if self.name is None else self.name

    def holder_address(self) -> str:
        return f"3-3 {self.by.title()}-dori, Osaka" if self.address is None else self.address


def sealed_ask(state: Issuer, group: Group, ask: Ask) -> Sealed:
    ntn = group.ntn(ask.trade)
    request: CertificateRequestAfterTransfer | CertificateRequestAfterTransferV1
    if ask.v1:
        request = CertificateRequestAfterTransferV1(
            name_transfer_number=ntn,
            holder_name=ask.holder_name(),
            holder_address=ask.holder_address(),
            dividend_delivery=DividendDeliveryV1(method=ask.method, account=ask.account),
        )
    else:
        request = CertificateRequestAfterTransfer(
            name_transfer_number=ntn,
            holder_name=ask.holder_name(),
            holder_address=ask.holder_address(),
            dividend_delivery=sealed_dividend(state.rt.trust, ask.by, ask.method, ask.account),
        )
    return seal(state.rt.keys.load_identity(ask.by), request, recipient=ISSUER_ID, now=datetime.now(UTC))


async def asked(settings: Settings, state: Issuer, group: Group, asks: Sequence[Ask]) -> list[Settled]:
    """``asks`` handled one at a time, in the group's own way (beforehand, alike for every group)."""
    mode: Mode = "reference" if group.mode == "reference" else "alone"
    return await settle(settings, state, mode, [sealed_ask(state, group, a) for a in asks])


# -- what a group's requests left -----------------------------------------------------------------------


@dataclass
class Result:
    settled: list[tuple[str, str | None]]  # each request's outcome and reason
    calls: list[list[str]]
    v1: list[str]
    snapshot: dict[str, Any]
    written: dict[str, list[str]]
    # the certificate each request was answered with, by its place: content, signature, signer (not
    # compared between groups: a certificate's bytes name its own CertID)
    raw: dict[int, tuple[bytes, bytes, bytes]]


async def versions(settings: Settings, group: Group) -> dict[str, dict[str, str]]:
    """Each register row and kept certificate of the group's issues by name, with its row version."""
    async with dvp.admin(settings) as c:
        register = await c.fetch(
            "SELECT cert_id, xmin::text AS v FROM register WHERE issue_code = ANY($1::text[])", list(group.issues)
        )
        issued = await c.fetch(
            """SELECT i.cert_id, i.xmin::text AS v FROM issued_certificates i JOIN register r USING (cert_id)
               WHERE r.issue_code = ANY($1::text[])""",
            list(group.issues),
        )
    return {
        "register": {group.names[str(r["cert_id"])]: r["v"] for r in register},
        "issued": {group.names[str(r["cert_id"])]: r["v"] for r in issued},
    }


def written(before: dict[str, dict[str, str]], after: dict[str, dict[str, str]]) -> dict[str, list[str]]:
    return {
        table: sorted(name for name, version in after[table].items() if before[table].get(name) != version)
        for table in after
    }


async def run(settings: Settings, state: Issuer, group: Group, asks: Sequence[Ask]) -> Result:
    """``asks`` settled in the group's way; what it left."""
    sealed = [sealed_ask(state, group, a) for a in asks]
    before = await versions(settings, group)
    settled = await settle(settings, state, group.mode, sealed)
    await retries_taken(settings, sealed, settled)
    after = await versions(settings, group)
    names = {n: f"ntn{k}" for k, n in enumerate(group.ntns)} | {n: f"ntn{k}" for k, n in group.extra.items()}
    return Result(
        [(each.outcome.value, each.reason.value if each.reason else None) for each in settled],
        [[names.get(n, str(n)) for n in call] for call in state.calls],
        [names.get(n, str(n)) for n in state.v1],
        await snapshot(settings, state, group, sealed),
        written(before, after),
        await raw_answers(settings, sealed),
    )


async def retries_taken(settings: Settings, sealed: Sequence[Sealed], settled: Sequence[Settled]) -> None:
    """A request whose handling failed comes back to the inbox for its retry: taken off it (and
    acked unhandled), so that the next group's requests are the next on the queue."""
    retried = [str(s.envelope.message_id) for s, o in zip(sealed, settled, strict=True) if o.outcome.value == RETRY]
    if not retried:
        return
    queue = inbox(Names(settings.namespace))
    await support.eventually(lambda: _at_least(settings, queue, len(retried)))
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        source = await (await connection.channel()).declare_queue(queue, passive=True)
        back = [await source.get(no_ack=False, timeout=5) for _ in retried]
        assert sorted(str(d.message_id) for d in back) == sorted(retried)
        for delivery in back:
            await delivery.ack()


async def _at_least(settings: Settings, queue: str, count: int) -> bool:
    return await support.queue_depth(settings, queue) >= count


async def raw_answers(settings: Settings, sealed: Sequence[Sealed]) -> dict[int, tuple[bytes, bytes, bytes]]:
    place = {str(s.envelope.message_id): i for i, s in enumerate(sealed)}
    raw: dict[int, tuple[bytes, bytes, bytes]] = {}
    async with dvp.admin(settings) as c:
        for row in await c.fetch(
            "SELECT body FROM outbox_messages WHERE message_type = 'certificate.issued' ORDER BY seq, place"
        ):
            envelope = json.loads(row["body"])
            if envelope.get("causation_id") in place:
                signed = SignedCertificate.model_validate(envelope["payload"]["certificate"])
                assert place[envelope["causation_id"]] not in raw, "one certificate a request"
                raw[place[envelope["causation_id"]]] = (
                    signed.content,
                    signed.issuer_signature.signature,
                    signed.issuer_signature.certificate,
                )
    return raw


def _open_account(settings_keys: KeyStore, holder: str, account: str | None) -> str | None:
    """A dividend account sealed to settlement, opened (boxes differ from one sealing to the next)."""
    if account is None or not account.startswith("ks1."):
        return account
    settlement = settings_keys.load_identity(SETTLEMENT_ID).decryption_key
    assert settlement is not None
    return "opened: " + open_box(settlement, account, dividend_account(holder))


async def snapshot(settings: Settings, state: Issuer, group: Group, sealed: Sequence[Sealed]) -> dict[str, Any]:
    """Every register row and kept certificate of the group's issues, and every message its
    requests ``sealed`` caused, named so that groups handled alike compare equal."""
    keys, trust = state.rt.keys, state.rt.trust
    issuer_der = keys.load_identity(ISSUER_ID).certificate_der
    subs = dict(group.names)
    subs.update(group.issues)
    subs.update({str(s.envelope.message_id): f"req{i}" for i, s in enumerate(sealed)})
    ntns = {n: f"ntn{k}" for k, n in enumerate(group.ntns)} | {n: f"ntn{k}" for k, n in group.extra.items()}

    def norm(value: Any, key: str | None = None) -> Any:
        if isinstance(value, dict):
            return {k: norm(v, k) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [norm(v) for v in value]
        if isinstance(value, uuid.UUID):
            return subs.get(str(value), "unknown CertID")
        if isinstance(value, int) and not isinstance(value, bool) and key == "name_transfer_number":
            return ntns.get(value, value)
        if isinstance(value, str):
            for old, new in sorted(subs.items(), key=lambda kv: -len(kv[0])):
                value = value.replace(old, new)
            if key == "detail":
                value = re.sub(r"\b\d+\b", lambda m: ntns.get(int(m[0]), m[0]), value)
            return value
        return value

    async with dvp.admin(settings) as c:
        register = await c.fetch(
            """SELECT cert_id, issue_code, certificate_number, holder_user_id, holder_name, holder_address, shares,
                      share_class, acquired_on, issuance_conditions, dividend_method, dividend_account, status,
                      committed_order, committed_by, retired_at IS NOT NULL AS retired
               FROM register WHERE issue_code = ANY($1::text[])""",
            list(group.issues),
        )
        rows = await c.fetch(
            """SELECT i.cert_id, i.content, i.signature, i.signer_certificate FROM issued_certificates i
               JOIN register r USING (cert_id) WHERE r.issue_code = ANY($1::text[])""",
            list(group.issues),
        )
        kept = {
            r["cert_id"]: SignedCertificate(
                content=r["content"],
                issuer_signature=IssuerSignature(certificate=r["signer_certificate"], signature=r["signature"]),
            )
            for r in rows
        }

        def opened(signed: SignedCertificate) -> dict[str, Any]:
            """The certificate's content, its signature verified with the issuer's key; and
            whether these are the very bytes kept for its CertID."""
            assert signed.issuer_signature.certificate == issuer_der
            content = verify_certificate(signed, trust)
            return {
                "content": norm(content.model_dump(mode="json")),
                "kept byte for byte": kept.get(content.cert_id) == signed,
            }

        def payload(body: dict[str, Any]) -> Any:
            if "certificate" in body:
                body = {**body, "certificate": opened(SignedCertificate.model_validate(body["certificate"]))}
            return norm(body)

        emitted = await set_kit.caused(c, sealed, payload)
    for cert_id, signed in kept.items():
        assert verify_certificate(signed, trust).cert_id == cert_id
    return {
        "register": sorted(
            (
                norm(
                    {
                        **dict(r),
                        "dividend_account": _open_account(keys, r["holder_user_id"], r["dividend_account"]),
                        "issuance_conditions": json.loads(r["issuance_conditions"]),
                    }
                )
                for r in register
            ),
            key=lambda r: r["cert_id"],
        ),
        "issued": {norm(cert_id): opened(signed)["content"] for cert_id, signed in kept.items()},
        "emitted": [(e[0], e[1], e[3], e[4]) for e in emitted],
    }


async def compared(
    settings: Settings,
    plan: Sequence[Trade],
    asks: Sequence[Ask],
    prepare: Callable[[Settings, Issuer, Group], Awaitable[None]] | None = None,
    *,
    modes: Sequence[Mode] = MODES,
    outcomes_alike: bool = True,
) -> dict[Mode, Result]:
    """The same trades and requests in a group of each mode (``prepare``: what is done to each group
    beforehand, alike); every mode must leave what the others leave (``outcomes_alike``: and settle
    each request alike)."""
    results: dict[Mode, Result] = {}
    async with issuer(settings) as state:
        groups = {mode: await traded(settings, state, mode, 1000 * (i + 1), plan) for i, mode in enumerate(modes)}
        if prepare is not None:
            for group in groups.values():
                await prepare(settings, state, group)
        for mode, group in groups.items():
            results[mode] = await run(settings, state, group, asks)
    first = results[modes[0]]
    for mode in modes[1:]:
        if outcomes_alike:
            assert results[mode].settled == first.settled, mode
        assert results[mode].snapshot == first.snapshot, mode
        assert results[mode].written == first.written, mode
        assert results[mode].v1 == first.v1, mode
    # one at a time, the handler is given each request alone
    v2 = [f"ntn{a.trade}" if a.trade is not None else str(UNKNOWN_NTN) for a in asks if not a.v1]
    for mode in set(modes) - {"set"}:
        assert results[mode].calls == [[n] for n in v2], mode
    return results


# -- what one request's answer says ------------------------------------------------------------------------


def answers(result: Result, place: int) -> list[tuple[str, str | None, dict[str, Any]]]:
    return [(e[1], e[2], e[3]) for e in result.snapshot["emitted"] if e[0] == place]


def issued(result: Result, place: int) -> dict[str, Any]:
    """The one answer request ``place`` caused: a certificate issued, kept byte for byte."""
    [(kind, _, body)] = answers(result, place)
    assert kind == "certificate.issued", body
    assert body["request_id"] == f"req{place}"
    assert body["certificate"]["kept byte for byte"], "the certificate emitted is not the one kept"
    content: dict[str, Any] = body["certificate"]["content"]
    return content


def refused(result: Result, place: int, who: str, ntn: str) -> None:
    [(kind, to, body)] = answers(result, place)
    assert (kind, to) == ("certificate.issuance.refused", who), body
    assert body == {
        "request_id": f"req{place}",
        "reason": IssuanceRefusal.UNKNOWN_TRANSFER.value,
        "detail": REFUSED.format(ntn=ntn, who=who),
    }


def register(result: Result) -> dict[str, dict[str, Any]]:
    return {r["cert_id"]: r for r in result.snapshot["register"]}


def completed_as(result: Result, cert: str, ask: Ask) -> None:
    """Register record ``cert`` holds what ``ask`` said (S148), and its certificate says it too."""
    row = register(result)[cert]
    assert (row["holder_user_id"], row["status"]) == (ask.by, "valid")
    assert (row["holder_name"], row["holder_address"], row["dividend_method"], row["dividend_account"]) == (
        ask.holder_name(),
        ask.holder_address(),
        ask.method.value,
        f"opened: {ask.account}",
    )
    content = result.snapshot["issued"][cert]
    assert (content["cert_id"], content["holder_name"], content["holder_user_id"]) == (cert, ask.holder_name(), ask.by)
    assert (content["certificate_number"], content["shares"]) == (row["certificate_number"], row["shares"])
    assert (content["issue_code"], content["issuing_agent_id"]) == (row["issue_code"], ISSUER_ID)


# -- first requests --------------------------------------------------------------------------------------

FIRSTS: list[Trade] = [
    (0, "alice", "bob", 500, 500),
    (0, "carol", "alice", 500, 300),  # partial: carol keeps a remainder
    (1, "bob", "carol", 200, 200),
    (0, "alice", "carol", 100, 100),
    (1, "carol", "bob", 400, 400),
    (0, "bob", "alice", 300, 300),
    (0, "alice", "bob", 200, 100),  # partial
]


async def test_first_requests_in_one_batch_are_one_set_call_and_leave_what_one_at_a_time_leaves(
    settings: Settings,
) -> None:
    """Seven transferees' first requests, in an order that is neither their numbers' nor their
    CertIDs', of two issues and with every dividend method: one set call; the records completed,
    the certificates drawn up, signed and kept, and each buyer answered, as one at a time."""
    methods = list(DividendMethod)
    order = [3, 0, 5, 1, 6, 2, 4]
    asks = [
        Ask(
            k,
            FIRSTS[k][2],
            name=f"{FIRSTS[k][2].title()} of trade {k}",
            address=f"{k}-{k} Kabuto-cho, Tokyo",
            method=methods[k % len(methods)],
            account=f"0001-00000{k}",
        )
        for k in order
    ]
    results = await compared(settings, FIRSTS, asks)
    result = results["set"]
    assert result.calls == [[f"ntn{k}" for k in order]]  # one call for the seven
    assert result.settled == [PROCESSED] * 7
    for place, (k, ask) in enumerate(zip(order, asks, strict=True)):
        content = issued(result, place)
        assert content["cert_id"] == f"t{k}"
        assert [(kind, to) for kind, to, _ in answers(result, place)] == [("certificate.issued", ask.by)]
        completed_as(result, f"t{k}", ask)
        assert content["shares"] == FIRSTS[k][4]
        assert content["issue_code"] == ("ISSUE2" if FIRSTS[k][0] else "ISSUE1")
    # the requests wrote the buyers' records and certificates, nothing else
    assert result.written == {"register": [f"t{k}" for k in range(7)], "issued": [f"t{k}" for k in range(7)]}
    rows = register(result)
    for k in range(7):  # the sellers' records are as the transfer left them
        assert (rows[f"c{k}"]["status"], rows[f"c{k}"]["holder_name"]) == ("retired", FIRSTS[k][1].title())
    assert rows["r1"]["holder_name"] == "Carol" and rows["r1"]["dividend_account"] == "sealed"


# -- runs, and a request repeated in one batch --------------------------------------------------------------

THREE: list[Trade] = [(0, "alice", "bob", 500, 500), (0, "carol", "alice", 300, 300), (0, "bob", "carol", 200, 200)]


async def test_a_request_repeated_in_a_batch_cuts_the_run_and_gets_the_same_certificate_bytes(
    settings: Settings,
) -> None:
    """bob's request for ntn0 comes again later in the batch with other holder details, alice's for
    ntn1 again alike: never in the set of the first, and answered with the certificate the first
    issued — the same bytes; the record keeps what the first request said."""
    bob = Ask(0, "bob", name="Bob First", address="1 First St", account="0001-111111")
    asks = [
        bob,
        Ask(1, "alice"),
        Ask(0, "bob", name="Bob Again", address="2 Other St", method=DividendMethod.POSTAL_ORDER, account="0009"),
        Ask(2, "carol"),
        Ask(1, "alice"),
    ]
    results = await compared(settings, THREE, asks)
    result = results["set"]
    assert result.calls == [["ntn0", "ntn1"], ["ntn0", "ntn2", "ntn1"]]
    assert result.settled == [PROCESSED] * 5
    raw = result.raw
    assert raw[2] == raw[0] and raw[4] == raw[1]  # the same certificate again, byte for byte
    assert len({raw[0], raw[1], raw[3]}) == 3
    assert issued(result, 2) == issued(result, 0) and issued(result, 4) == issued(result, 1)
    completed_as(result, "t0", bob)
    completed_as(result, "t1", asks[1])
    completed_as(result, "t2", asks[3])
    assert sorted(result.snapshot["issued"]) == ["c0", "c1", "c2", "t0", "t1", "t2"]  # one certificate each
    assert result.written == {"register": ["t0", "t1", "t2"], "issued": ["t0", "t1", "t2"]}


# -- unhappy paths, in one set with first and repeated requests -----------------------------------------

UNHAPPY: list[Trade] = [
    (0, "alice", "bob", 500, 500),  # t0: bob asks first
    (0, "carol", "alice", 500, 300),  # t1: bob asks, not the buyer; then alice, the buyer
    (0, "bob", "carol", 200, 200),  # t2: carol asks first
    (0, "alice", "carol", 100, 100),  # t3: carol asked before the batch, asks again
    (0, "carol", "bob", 400, 400),  # t4: bob asked before, then sold it on to alice (t4b)
    (0, "bob", "alice", 300, 300),  # t5: the buyer's CertID retired since
    (0, "alice", "bob", 200, 100),  # t6: the register's holder no longer the buyer
]


async def prepare_unhappy(settings: Settings, state: Issuer, group: Group) -> None:
    before = [Ask(3, "carol", name="Carol Before"), Ask(4, "bob", name="Bob Before")]
    assert outcomes(await asked(settings, state, group, before)) == ["processed"] * 2
    await sold_on(settings, state, group, 4, "alice", group.base + 100)
    async with dvp.admin(settings) as c:
        await c.execute(
            "UPDATE register SET status = 'retired', retired_at = now() WHERE cert_id = $1", group.cert("t5")
        )
        await c.execute("UPDATE register SET holder_user_id = 'carol' WHERE cert_id = $1", group.cert("t6"))


async def test_unhappy_requests_in_a_set_are_refused_or_answered_again_as_one_at_a_time_and_the_others_issued(
    settings: Settings,
) -> None:
    """One set: first requests among an unknown number, a sender not the buyer, a CertID
    transferred on, one retired, one whose register holder is no longer the buyer (asked by the
    buyer, and by that holder), and a request answered before the batch, asked again with other
    details (the same certificate, nothing written)."""
    asks = [
        Ask(0, "bob"),  # 0 issued
        Ask(None, "alice"),  # 1 refused: no such transfer
        Ask(1, "bob"),  # 2 refused: alice bought it
        Ask(2, "carol"),  # 3 issued
        Ask(3, "carol", name="Carol Changed", address="9 Elsewhere", method=DividendMethod.POSTAL_ORDER),  # 4 again
        Ask(4, "bob"),  # 5 refused: transferred on (its certificate issued before)
        Ask(5, "alice"),  # 6 refused: retired
        Ask(6, "bob"),  # 7 refused: the register's holder is carol
        Ask(6, "carol"),  # 8 refused: carol holds it but bob bought it (cuts the run)
        Ask("4b", "alice"),  # 9 issued: the one who bought it on
        Ask(1, "alice"),  # 10 issued: the buyer, after a stranger's request
    ]
    results = await compared(settings, UNHAPPY, asks, prepare_unhappy)
    result = results["set"]
    assert result.calls == [
        ["ntn0", str(UNKNOWN_NTN), "ntn1", "ntn2", "ntn3", "ntn4", "ntn5", "ntn6"],
        ["ntn6", "ntn4b", "ntn1"],
    ]
    assert result.settled == [PROCESSED] * 11
    for place, trade in ((0, 0), (3, 2), (9, "4b"), (10, 1)):
        assert issued(result, place)["cert_id"] == f"t{trade}"
        completed_as(result, f"t{trade}", asks[place])
    refused(result, 1, "alice", str(UNKNOWN_NTN))
    refused(result, 2, "bob", "ntn1")
    refused(result, 5, "bob", "ntn4")
    refused(result, 6, "alice", "ntn5")
    refused(result, 7, "bob", "ntn6")
    refused(result, 8, "carol", "ntn6")
    # the request answered before: its certificate again, the record as the first request left it
    again = issued(result, 4)
    assert again == result.snapshot["issued"]["t3"] and again["holder_name"] == "Carol Before"
    rows = register(result)
    assert (rows["t3"]["holder_name"], rows["t3"]["dividend_method"]) == ("Carol Before", "bank_transfer")
    # the refused wrote nothing: not the records, not a certificate
    assert (rows["t4"]["holder_name"], rows["t4"]["status"]) == ("Bob Before", "retired")
    assert (rows["t5"]["holder_name"], rows["t5"]["dividend_method"], rows["t5"]["status"]) == (
        "Alice",
        None,
        "retired",
    )
    assert (rows["t6"]["holder_user_id"], rows["t6"]["dividend_method"]) == ("carol", None)
    assert sorted(result.snapshot["issued"]) == sorted(
        [*(f"c{k}" for k in range(7)), "r1", "r6", "t0", "t1", "t2", "t3", "t4", "t4b"]
    )
    assert result.written == {"register": ["t0", "t1", "t2", "t4b"], "issued": ["t0", "t1", "t2", "t4b"]}


# -- version 1 -------------------------------------------------------------------------------------------


async def test_version_1_requests_are_still_handled_among_a_set_and_answered_alike(settings: Settings) -> None:
    """Message 39 in version 1 (the dividend account in clear) among version 2 ones: handled
    alone (a run of its own), its account kept sealed to settlement, and a version 1 repeat of a
    version 2 request (and the other way round) given the same certificate."""
    asks = [
        Ask(0, "bob", name="Bob Two"),
        Ask(1, "alice", name="Alice One", account="0002-222222", method=DividendMethod.SETTLEMENT_ACCOUNT, v1=True),
        Ask(2, "carol", name="Carol Two"),
        Ask(0, "bob", name="Bob One Again", v1=True),
        Ask(1, "alice", name="Alice Two Again"),
        Ask(None, "carol", v1=True),
    ]
    window = settings.with_(clear_accounts_until=datetime.now(UTC) + timedelta(days=30))  # before the cut-over
    results = await compared(window, THREE, asks)
    result = results["set"]
    assert result.calls == [["ntn0"], ["ntn2"], ["ntn1"]]
    assert result.v1 == ["ntn1", "ntn0", str(UNKNOWN_NTN)]
    assert result.settled == [PROCESSED] * 6
    completed_as(result, "t0", asks[0])
    completed_as(result, "t1", asks[1])  # the clear account sealed to settlement for alice
    completed_as(result, "t2", asks[2])
    assert issued(result, 3) == issued(result, 0) and issued(result, 4) == issued(result, 1)
    assert result.raw[3] == result.raw[0] and result.raw[4] == result.raw[1]
    refused(result, 5, "carol", str(UNKNOWN_NTN))
    assert result.written == {"register": ["t0", "t1", "t2"], "issued": ["t0", "t1", "t2"]}


# -- a certificate that cannot be drawn up --------------------------------------------------------------

# A holder name the certificate cannot carry (an empty one: message 39 takes it, Fig. 6 field 9 does not).
CANNOT_BE_DRAWN_UP = [Ask(0, "bob"), Ask(1, "alice", name=""), Ask(2, "carol")]


async def test_a_request_whose_certificate_cannot_be_drawn_up_fails_alone_and_the_others_are_issued(
    settings: Settings,
) -> None:
    """The set raises for it, the batch runs again a delivery at a time: that request fails, writing
    nothing and answered nothing; the others are issued, as one at a time."""
    results = await compared(settings, THREE, CANNOT_BE_DRAWN_UP, outcomes_alike=False)
    result = results["set"]
    assert result.calls == [["ntn0", "ntn1", "ntn2"], ["ntn0"], ["ntn1"], ["ntn2"]]
    # alone, as before the change: dead-lettered at once as data_invalid (issue 13, B59)
    assert results["alone"].settled == results["reference"].settled == [PROCESSED, DATA_INVALID, PROCESSED]
    assert (result.settled[0], result.settled[2]) == (PROCESSED, PROCESSED)
    assert result.settled[1] in (DATA_INVALID, (RETRY, None))  # see the test below
    assert answers(result, 1) == []
    issued(result, 0)
    issued(result, 2)
    assert result.written == {"register": ["t0", "t2"], "issued": ["t0", "t2"]}
    assert register(result)["t1"]["dividend_method"] is None


async def test_a_request_whose_certificate_cannot_be_drawn_up_is_dead_lettered_in_a_batch_as_alone(
    settings: Settings,
) -> None:
    """What fails alike whenever it is tried is dead-lettered at once, without retries — in a batch
    too, where the set's failure makes it fail alone in its savepoint."""
    results = await compared(settings, THREE, CANNOT_BE_DRAWN_UP, modes=("set",))
    assert results["set"].settled == [PROCESSED, DATA_INVALID, PROCESSED]
