"""Delivered certificates and released remainders, handled in sets (broker/set_based.py), against
the real RabbitMQ and PostgreSQL, the agents opened but not run (tests/integration/set_kit.py):

* the investor agent's ``certificate.issued`` (R-001-18, d5f6211; agents/investor/app.py
  ``on_certificate_issued``): each certificate verified and checked alone, a set's requests
  fulfilled in one statement and its certificates kept in one, byte for byte;
* the issuer's ``certificate.release`` (524345a; agents/issuer/transfers.py ``on_release``): a
  set's remainders freed in one statement.

The same deliveries are handled three ways, each by a group of its own built alike:

* ``set``: taken off the agent's inbox and settled as one group-committed batch — the set handler;
* ``alone``: settled one delivery at a time — the set handler called with sets of one;
* ``reference``: one delivery at a time by the handler as it was before the change, kept below
  statement for statement: the behaviour the set handler must keep.

All three must leave the same rows, refuse the same deliveries for the same reasons and log the
same lines; the set handler is called once for a batch, a run cut where a key repeats, and once
per delivery again when any delivery of the batch is refused.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import pytest
from structlog.testing import capture_logs

from agents.investor import app as investor_app
from agents.investor import domain as investor_domain
from agents.issuer import app as issuer_app
from agents.issuer import repo as issuer_repo
from agents.issuer import reservations, transfers
from agents.issuer.register import RegisterRecord
from broker import logs
from broker.consumer import Handler, Settled
from broker.context import Context
from broker.envelope import Sealed, seal
from broker.errors import Reason, SecurityRejected
from broker.pki import KeyStore, default_participant
from broker.runtime import AgentDefinition, AgentRuntime
from broker.set_based import SetBased
from broker.settings import Settings
from broker.stock_certificates import verify_certificate
from schemas.certificates import IssuerSignature, SignedCertificate
from schemas.identity import EXCHANGE_ID, ISSUER_ID, Role
from schemas.issuance import CertificateIssued
from schemas.trading import CertificateRelease
from tests import support
from tests.integration import set_kit
from tests.integration import test_issuer_rows as rows_kit
from tests.integration import test_issuer_sets as dvp
from tests.integration.conftest import enrol

Mode = Literal["set", "alone", "reference"]
MODES: tuple[Mode, ...] = ("set", "alone", "reference")
Outcome = tuple[str, Reason | None]
PROCESSED: Outcome = ("processed", None)
# The investor and the other investor (whose requests and certificates it must not take) of each mode.
HOLDERS: dict[Mode, tuple[str, str]] = {
    "set": ("alice", "dora"),
    "alone": ("bob", "erin"),
    "reference": ("carol", "frank"),
}
ROGUE_ISSUER = "issuer2"  # an issuing agent, but not the one the investors asked


def dead(reason: Reason) -> Outcome:
    return ("dead_lettered", reason)


UNSOLICITED, INVALID = dead(Reason.UNSOLICITED), dead(Reason.STOCK_CERTIFICATE_INVALID)


def outcomes(settled: Sequence[Settled]) -> list[Outcome]:
    return [(s.outcome.value, s.reason) for s in settled]


@pytest.fixture
def settings(settings: Settings, keys: KeyStore) -> Settings:
    """The investor agent hosting each mode's other investor too; a second issuing agent enrolled."""
    others = [HOLDERS[mode][1] for mode in MODES]
    for user in others:
        enrol(keys, user)
    keys.enrol(default_participant(ROGUE_ISSUER, Role.ISSUER))
    return dataclasses.replace(settings, investors=(*settings.investors, *others))


@contextmanager
def logged(*events: str) -> Iterator[list[MutableMapping[str, Any]]]:
    """The lines logged as any of ``events`` meanwhile, with what was bound to them (the message they name)."""
    found: list[MutableMapping[str, Any]] = []
    with capture_logs(processors=[logs.merge_context]) as lines:
        yield found
    found.extend(line for line in lines if line["event"] in events)


# Why a delivery was refused, by what the consumer logged of it (its detail names CertIDs, users).
WHY = {
    "no pending request": "unsolicited",
    "issuer signature": "signature",
    "delivered by": "another deliverer",
    "is held by": "another holder",
    "expired": "expired",
    "wallet_pkey": "wallet collision",
}
REFUSALS = ("security_event", "input_rejected", "dead_lettered")


def why(detail: str) -> str:
    return next((what for words, what in WHY.items() if words in detail), detail)


@dataclass
class Agent:
    """An agent opened but not run; each call of the set handler under test (its deliveries by
    place in the batch), and whether the reference handles the deliveries instead."""

    calls: list[list[int]] = field(default_factory=list)
    places: dict[str, int] = field(default_factory=dict)
    reference: bool = False
    rt: AgentRuntime = field(init=False)


def under_test(state: Agent, handler: SetBased[Any], reference: Handler) -> SetBased[Any]:
    """``handler`` with its calls noted, or the reference called instead (one delivery a call)."""

    async def handle_set(items: Sequence[tuple[Any, Context]]) -> None:
        state.calls.append([state.places[str(ctx.message_id)] for _, ctx in items])
        if state.reference:
            assert len(items) == 1, "the reference is given its deliveries one at a time"
            await reference(*items[0])
        else:
            await handler.handle_set(items)

    return SetBased(handle_set, keys=handler.keys, phase=handler.phase)


async def settle(
    settings: Settings, state: Agent, mode: Mode, sealed: Sequence[Sealed], queue: set_kit.Queue
) -> list[Outcome]:
    state.calls.clear()
    state.places = {str(s.envelope.message_id): i for i, s in enumerate(sealed)}
    state.reference = mode == "reference"
    try:
        if mode == "set":
            return outcomes(await set_kit.as_one_batch(settings, state.rt, sealed, queue))
        return outcomes(await set_kit.one_at_a_time(settings, state.rt, sealed, queue))
    finally:
        state.reference = False


def place_of(line: MutableMapping[str, Any], sealed: Sequence[Sealed]) -> int:
    return [str(s.envelope.message_id) for s in sealed].index(line["message_id"])


# ==================================================================================================
# The investor: certificate.issued
# ==================================================================================================

INVESTOR_INBOX: set_kit.Queue = lambda names: names.inbox("investor")  # noqa: E731 — a queue by the namespace's names
investor_log = logs.get("kabuto.investor")


async def reference_certificate_issued(message: CertificateIssued, ctx: Context) -> None:
    """agents/investor/app.py ``on_certificate_issued`` as it was before d5f6211, with the repo
    statements it then made (``fulfil_request``, ``keep``)."""
    assert ctx.sender is not None
    certificate = verify_certificate(message.certificate, ctx.trust)
    investor_domain.check_delivered(
        certificate, holder=ctx.identity.user_id, delivered_by=ctx.sender.user_id, today=ctx.now.date()
    )
    fulfilled = await ctx.connection.fetchval(
        """UPDATE requests SET status = 'fulfilled', cert_id = $2, updated_at = now()
           WHERE request_id = $1 AND status = 'sent' AND user_id = $3
             AND issue_code = $4 AND shares = $5
           RETURNING true""",
        message.request_id,
        certificate.cert_id,
        certificate.holder_user_id,
        certificate.issue_code,
        certificate.shares,
    )
    if not fulfilled:
        raise SecurityRejected(Reason.UNSOLICITED, f"no pending request {message.request_id} for this certificate")
    signed = message.certificate
    await ctx.connection.execute(
        """INSERT INTO wallet (cert_id, holder_user_id, issue_code, certificate_number, shares,
               content, issuer_signature, issuer_certificate)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        certificate.cert_id,
        certificate.holder_user_id,
        certificate.issue_code,
        certificate.certificate_number,
        certificate.shares,
        signed.content,
        signed.issuer_signature.signature,
        signed.issuer_signature.certificate,
    )
    investor_log.info("certificate_kept", cert_id=str(certificate.cert_id), shares=certificate.shares)


def investor_definition(state: Agent) -> AgentDefinition:
    handler = under_test(state, investor_app.on_certificate_issued, reference_certificate_issued)
    return set_kit.with_handlers(investor_app.AGENT, {CertificateIssued: handler})


@asynccontextmanager
async def running(settings: Settings, definition: Callable[[Agent], AgentDefinition]) -> AsyncIterator[Agent]:
    """The agent of ``definition`` opened with a new state (the investor's or the issuer's)."""
    state = Agent()
    async with AgentRuntime(definition(state), settings) as rt:
        state.rt = rt
        yield state


@dataclass(frozen=True)
class Cert:
    """A certificate delivered (``certificate.issued``), by name: the request it answers, by name
    (``p…``: one of the other investor's; None: one never made); its shares (the request's unless
    given) and issue; whose it is; who signed it and who sealed the message; ``forged``: its holder's
    name altered after signing; ``expired``: out of date; ``same_as``: the very certificate delivered
    under that name; ``cert_id_of``: a certificate of its own under that one's CertID."""

    name: str
    request: str | None
    shares: int | None = None
    issue: str = support.ISSUE
    holder: Literal["me", "other"] = "me"
    signer: str = ISSUER_ID
    sender: str = ISSUER_ID
    forged: bool = False
    expired: bool = False
    same_as: str | None = None
    cert_id_of: str | None = None


@dataclass
class Holders:
    """One mode's investors, its requests by name and the certificates it was sent, by name."""

    mode: Mode
    me: str
    other: str
    requests: dict[str, uuid.UUID] = field(default_factory=dict)
    signed: dict[str, SignedCertificate] = field(default_factory=dict)
    cert_ids: dict[str, uuid.UUID] = field(default_factory=dict)
    unknown: dict[str, uuid.UUID] = field(default_factory=dict)  # requests never made, by certificate

    def user(self, whose: Literal["me", "other"]) -> str:
        return self.me if whose == "me" else self.other


def signed_as(keys: KeyStore, signer: str, content: bytes) -> SignedCertificate:
    identity = keys.load_identity(signer)
    return SignedCertificate(
        content=content,
        issuer_signature=IssuerSignature(certificate=identity.certificate_der, signature=identity.sign(content)),
    )


def certificate_for(keys: KeyStore, holders: Holders, cert: Cert, shares: int, number: int) -> SignedCertificate:
    """The certificate ``cert`` names, signed; every other one's content laid out otherwise than
    pydantic writes it (keys sorted, indented), so bytes kept as received are told from bytes
    written again."""
    if cert.same_as is not None:
        return holders.signed[cert.same_as]
    holder = holders.user(cert.holder)
    changes: dict[str, Any] = {
        "holder_user_id": holder,
        "holder_name": holder.capitalize(),
        "issue_code": cert.issue,
        "certificate_number": f"{cert.issue}-{number:08d}",
        "issuing_agent_id": cert.signer,
        "issuing_agent_name": f"Kabuto Issuing Agent ({cert.signer})",
        "issuing_agent_address": f"kabuto:{cert.signer}",
    }
    if cert.cert_id_of is not None:
        changes["cert_id"] = holders.cert_ids[cert.cert_id_of]
    if cert.expired:
        changes["expires_on"] = date.today() - timedelta(days=1)
    content = support.stock_certificate(shares, **changes)
    raw = content.model_dump_json().encode()
    if number % 2:
        raw = json.dumps(json.loads(raw), sort_keys=True, indent=1).encode()
    signed = signed_as(keys, cert.signer, raw)
    if cert.forged:
        altered = json.loads(signed.content)
        altered["holder_name"] = "Someone Else"  # what no request is checked against: only the signature tells
        signed = SignedCertificate(content=json.dumps(altered).encode(), issuer_signature=signed.issuer_signature)
    return signed


def delivered(keys: KeyStore, holders: Holders, shares: dict[str, int], certs: Sequence[Cert]) -> list[Sealed]:
    """Each certificate of ``certs`` sealed to the investor by its sender, answering its request."""
    sealed = []
    for number, cert in enumerate(certs, start=1):
        if cert.request is None:
            request_id = holders.unknown.setdefault(cert.name, uuid.uuid4())
        else:
            request_id = holders.requests[cert.request]
        wanted = cert.shares or shares.get(cert.request or "", 100)
        signed = certificate_for(keys, holders, cert, wanted, number)
        holders.signed[cert.name] = signed
        holders.cert_ids.setdefault(cert.name, json_cert_id(signed))
        message = CertificateIssued(request_id=request_id, certificate=signed)
        sender = keys.load_identity(cert.sender)
        sealed.append(seal(sender, message, recipient=holders.me, now=datetime.now(UTC)))
    return sealed


def json_cert_id(signed: SignedCertificate) -> uuid.UUID:
    return uuid.UUID(json.loads(signed.content)["cert_id"])


async def requested(state: Agent, mode: Mode, shares: dict[str, int]) -> Holders:
    """Each request of ``shares`` sent by the mode's investor (``p…``: by the other investor) and
    not answered yet (R-001-14; the requests stay in the outbox, the agent not run)."""
    me, other = HOLDERS[mode]
    holders = Holders(mode, me, other)
    for name, count in shares.items():
        holders.requests[name] = await support.request(state.rt, other if name.startswith("p") else me, count)
    return holders


async def wallet_and_requests(state: Agent, holders: Holders, sealed: Sequence[Sealed]) -> dict[str, Any]:
    """Every row the deliveries ``sealed`` can have left for the mode's investors, by name:
    requests (status, reason, detail, the certificate that fulfilled it), wallet rows (their
    bytes named by the certificate they were sent as), inbox claims and outbox rows caused."""
    users = [holders.me, holders.other]
    request_names = {request_id: name for name, request_id in holders.requests.items()}
    cert_names: dict[uuid.UUID, str] = {}
    for name, cert_id in holders.cert_ids.items():
        cert_names.setdefault(cert_id, name)
    issuers = {keys_der: who for who, keys_der in issuer_certificates(state.rt.keys).items()}

    def bytes_of(value: bytes, part: str) -> str:
        for name, signed in holders.signed.items():
            sent = {"content": signed.content, "signature": signed.issuer_signature.signature}
            if part in sent and sent[part] == value:
                return f"{part} of {name}"
        return issuers.get(value, f"unknown {part}")

    async with state.rt.pool.acquire() as c:
        requests = await c.fetch(
            """SELECT request_id, user_id, kind, issue_code, shares, status, reason, detail, cert_id
               FROM requests WHERE user_id = ANY($1::text[])""",
            users,
        )
        wallet = await c.fetch(
            """SELECT cert_id, holder_user_id, issue_code, certificate_number, shares, content, issuer_signature,
                      issuer_certificate, status, committed_order
               FROM wallet WHERE holder_user_id = ANY($1::text[]) OR cert_id = ANY($2::uuid[])""",
            users,
            list(cert_names),
        )
        claimed = await c.fetch(
            "SELECT message_id FROM inbox WHERE message_id = ANY($1::uuid[])", [s.envelope.message_id for s in sealed]
        )
        caused = await set_kit.caused(c, sealed, lambda payload: payload)
    whose = {holders.me: "me", holders.other: "other"}
    ids = [s.envelope.message_id for s in sealed]
    return {
        "requests": sorted(
            (
                request_names[r["request_id"]],
                whose[r["user_id"]],
                r["kind"],
                r["issue_code"],
                r["shares"],
                r["status"],
                r["reason"],
                r["detail"],
                cert_names.get(r["cert_id"], r["cert_id"] and "unknown"),
            )
            for r in requests
        ),
        "wallet": sorted(
            (
                cert_names.get(r["cert_id"], "unknown"),
                whose.get(r["holder_user_id"], r["holder_user_id"]),
                r["issue_code"],
                r["certificate_number"],
                r["shares"],
                bytes_of(bytes(r["content"]), "content"),
                bytes_of(bytes(r["issuer_signature"]), "signature"),
                issuers.get(bytes(r["issuer_certificate"]), "unknown certificate"),
                r["status"],
                r["committed_order"],
            )
            for r in wallet
        ),
        "claimed": sorted(ids.index(r["message_id"]) for r in claimed),
        "caused": caused,
    }


def issuer_certificates(keys: KeyStore) -> dict[str, bytes]:
    return {who: keys.load_identity(who).certificate_der for who in (ISSUER_ID, ROGUE_ISSUER)}


@dataclass
class Compared:
    """What each mode's deliveries left, how each was settled, the handler's calls and the
    ``certificate_kept`` lines (place of the delivery, certificate, shares)."""

    rows: dict[Mode, dict[str, Any]] = field(default_factory=dict)
    outcomes: dict[Mode, list[Outcome]] = field(default_factory=dict)
    calls: dict[Mode, list[list[int]]] = field(default_factory=dict)
    kept: dict[Mode, list[tuple[int, str | int, int]]] = field(default_factory=dict)
    refused: dict[Mode, list[tuple[int, str, str]]] = field(default_factory=dict)  # place, reason, why


async def compared_deliveries(
    settings: Settings,
    shares: dict[str, int],
    certs: Sequence[Cert],
    *,
    before: Sequence[Cert] = (),
) -> Compared:
    """The requests of ``shares`` sent by each mode's investor, ``before`` delivered one at a
    time, then ``certs`` delivered and settled as the mode settles them."""
    result = Compared()
    async with running(settings, investor_definition) as state:
        keys = state.rt.keys
        for mode in MODES:
            holders = await requested(state, mode, shares)
            if before:
                earlier = delivered(keys, holders, shares, before)
                assert await settle(settings, state, "alone", earlier, INVESTOR_INBOX) == [PROCESSED] * len(before)
            sealed = delivered(keys, holders, shares, certs)
            with logged("certificate_kept", *REFUSALS) as lines:
                result.outcomes[mode] = await settle(settings, state, mode, sealed, INVESTOR_INBOX)
            result.calls[mode] = list(state.calls)
            names = {cert_id: name for name, cert_id in reversed(holders.cert_ids.items())}
            result.kept[mode] = [
                (place_of(line, sealed), names[uuid.UUID(line["cert_id"])], line["shares"])
                for line in lines
                if line["event"] == "certificate_kept"
            ]
            result.refused[mode] = [
                (place_of(line, sealed), line["reason"], why(line["detail"]))
                for line in lines
                if line["event"] in REFUSALS
            ]
            result.rows[mode] = await wallet_and_requests(state, holders, sealed)
            for name, signed in holders.signed.items():  # every certificate signed as its Cert says
                cert = next(c for c in (*before, *certs) if c.name == name)
                if not (cert.forged or cert.expired):
                    assert verify_certificate(signed, state.rt.trust).issuing_agent_id == cert.signer
    return result


def all_modes_agree(result: Compared, count: int) -> None:
    """The set left, refused and logged what one at a time and the reference did; one at a time,
    each delivery was a call of its own."""
    assert result.outcomes["set"] == result.outcomes["alone"] == result.outcomes["reference"]
    assert result.rows["set"] == result.rows["alone"] == result.rows["reference"]
    assert result.kept["alone"] == result.kept["reference"]
    assert result.refused["set"] == result.refused["alone"] == result.refused["reference"]
    # a batch run again a delivery at a time logs again what its first, rolled-back attempt logged
    assert result.kept["set"][len(result.kept["set"]) - len(result.kept["alone"]) :] == result.kept["alone"]
    assert result.calls["alone"] == result.calls["reference"] == [[i] for i in range(count)]


def refused_then_one_by_one(calls: list[list[int]], first: list[int], count: int) -> None:
    """The batch's set calls up to the one refused (``first``), then every delivery alone again."""
    assert calls[-count:] == [[i] for i in range(count)]
    assert calls[0] == first


def request_row(name: str, shares: int, status: str, cert: str | None, whose: str = "me") -> tuple[Any, ...]:
    return (name, whose, "issuance", support.ISSUE, shares, status, None, None, cert)


def wallet_row(name: str, number: int, shares: int, *, bytes_of: str | None = None) -> tuple[Any, ...]:
    """A certificate kept exactly as sent as ``bytes_of`` (itself unless given), the ``number``-th sent."""
    sent = bytes_of or name
    return (
        name,
        "me",
        support.ISSUE,
        f"{support.ISSUE}-{number:08d}",
        shares,
        f"content of {sent}",
        f"signature of {sent}",
        ISSUER_ID,
        "held",
        None,
    )


FOUR = {"r1": 500, "r2": 300, "r3": 200, "r4": 100, "r5": 400, "p1": 500}


async def test_certificates_answering_several_requests_are_kept_in_one_set_as_one_at_a_time(
    settings: Settings,
) -> None:
    certs = [Cert("c1", "r1"), Cert("c2", "r2"), Cert("c3", "r3"), Cert("c4", "r4")]
    result = await compared_deliveries(settings, FOUR, certs)
    assert result.outcomes["set"] == [PROCESSED] * 4
    assert result.calls["set"] == [[0, 1, 2, 3]]
    all_modes_agree(result, 4)
    rows = result.rows["set"]
    assert rows["requests"] == [
        request_row("p1", 500, "sent", None, "other"),
        request_row("r1", 500, "fulfilled", "c1"),
        request_row("r2", 300, "fulfilled", "c2"),
        request_row("r3", 200, "fulfilled", "c3"),
        request_row("r4", 100, "fulfilled", "c4"),
        request_row("r5", 400, "sent", None),
    ]
    assert rows["wallet"] == [
        wallet_row("c1", 1, 500),
        wallet_row("c2", 2, 300),
        wallet_row("c3", 3, 200),
        wallet_row("c4", 4, 100),
    ]
    assert rows["claimed"] == [0, 1, 2, 3] and rows["caused"] == []
    assert result.refused["set"] == []
    # each line names the message whose certificate it kept
    assert result.kept["set"] == [(0, "c1", 500), (1, "c2", 300), (2, "c3", 200), (3, "c4", 100)]


async def test_a_request_answered_twice_in_a_set_is_cut_and_the_second_answer_refused(settings: Settings) -> None:
    """r0 was answered before the batch; r1 is answered twice in it: the second answer starts the
    next set, and finds r1 fulfilled: refused alone, r1 keeps the first certificate."""
    certs = [
        Cert("c1", "r1"),
        Cert("c2", "r2"),
        Cert("c1b", "r1"),  # r1 again: cut
        Cert("c3", "r3"),
        Cert("c0b", "r0"),  # answered before the batch
    ]
    shares = {"r0": 100, **FOUR}
    result = await compared_deliveries(settings, shares, certs, before=[Cert("c0", "r0")])
    assert result.outcomes["set"] == [PROCESSED, PROCESSED, UNSOLICITED, PROCESSED, UNSOLICITED]
    refused_then_one_by_one(result.calls["set"], [0, 1], 5)
    assert result.calls["set"][:2] == [[0, 1], [2, 3, 4]]
    all_modes_agree(result, 5)
    assert result.refused["set"] == [(2, "unsolicited", "unsolicited"), (4, "unsolicited", "unsolicited")]
    rows = result.rows["set"]
    assert [(r[0], r[5], r[8]) for r in rows["requests"]] == [
        ("p1", "sent", None),
        ("r0", "fulfilled", "c0"),
        ("r1", "fulfilled", "c1"),
        ("r2", "fulfilled", "c2"),
        ("r3", "fulfilled", "c3"),
        ("r4", "sent", None),
        ("r5", "sent", None),
    ]
    assert [w[0] for w in rows["wallet"]] == ["c0", "c1", "c2", "c3"]
    assert rows["claimed"] == [0, 1, 3]


async def test_a_certificate_answering_no_pending_request_of_its_own_is_refused_alone(settings: Settings) -> None:
    """Refused as unsolicited, each alone, the others of the batch kept: a request never made,
    another size than asked for, another issue, the other investor's request."""
    certs = [
        Cert("c1", "r1"),
        Cert("x1", None),  # a request never made
        Cert("c2", "r2"),
        Cert("x3", "r3", shares=999),  # r3 asked for 200
        Cert("x5", "r5", issue="KBX"),  # r5 asked for KBT
        Cert("xp", "p1"),  # the other investor's request, with a certificate of this one's
        Cert("c3", "r3"),  # r3 again, rightly: cut
        Cert("c4", "r4"),
    ]
    result = await compared_deliveries(settings, FOUR, certs)
    assert result.outcomes["set"] == [
        PROCESSED,
        UNSOLICITED,
        PROCESSED,
        UNSOLICITED,
        UNSOLICITED,
        UNSOLICITED,
        PROCESSED,
        PROCESSED,
    ]
    refused_then_one_by_one(result.calls["set"], [0, 1, 2, 3, 4, 5], 8)
    assert len(result.calls["set"]) == 1 + 8  # the refused set stopped the batch before [6, 7]
    all_modes_agree(result, 8)
    assert result.refused["set"] == [(i, "unsolicited", "unsolicited") for i in (1, 3, 4, 5)]
    rows = result.rows["set"]
    assert rows["requests"] == [
        request_row("p1", 500, "sent", None, "other"),
        request_row("r1", 500, "fulfilled", "c1"),
        request_row("r2", 300, "fulfilled", "c2"),
        request_row("r3", 200, "fulfilled", "c3"),
        request_row("r4", 100, "fulfilled", "c4"),
        request_row("r5", 400, "sent", None),
    ]
    assert rows["wallet"] == [
        wallet_row("c1", 1, 500),
        wallet_row("c2", 3, 300),
        wallet_row("c3", 7, 200),
        wallet_row("c4", 8, 100),
    ]
    assert rows["claimed"] == [0, 2, 6, 7]


async def test_a_certificate_that_is_forged_or_not_this_holders_from_its_issuer_is_refused_alone(
    settings: Settings,
) -> None:
    """Refused as an invalid stock certificate, each alone (R-001-18): a signature that does not
    verify, a certificate of the asked issuer delivered by another issuing agent, one of another
    issuing agent delivered by the asked issuer, one naming the other investor, one expired."""
    shares = {f"r{i}": 100 * i for i in range(1, 8)} | {"p1": 500}
    certs = [
        Cert("c1", "r1"),
        Cert("x2", "r2", forged=True),
        Cert("c3", "r3"),
        Cert("x4", "r4", sender=ROGUE_ISSUER),
        Cert("x5", "r5", signer=ROGUE_ISSUER),
        Cert("x6", "r6", holder="other"),
        Cert("x7", "r7", expired=True),
        Cert("c2", "r2"),  # r2 again, rightly: cut
    ]
    result = await compared_deliveries(settings, shares, certs)
    assert result.outcomes["set"] == [PROCESSED, INVALID, PROCESSED, INVALID, INVALID, INVALID, INVALID, PROCESSED]
    refused_then_one_by_one(result.calls["set"], [0, 1, 2, 3, 4, 5, 6], 8)
    all_modes_agree(result, 8)
    invalid = "stock_certificate_invalid"
    assert result.refused["set"] == [
        (1, invalid, "signature"),
        (3, invalid, "another deliverer"),
        (4, invalid, "another deliverer"),
        (5, invalid, "another holder"),
        (6, invalid, "expired"),
    ]
    rows = result.rows["set"]
    assert [(r[0], r[5], r[8]) for r in rows["requests"]] == [
        ("p1", "sent", None),
        ("r1", "fulfilled", "c1"),
        ("r2", "fulfilled", "c2"),
        ("r3", "fulfilled", "c3"),
        ("r4", "sent", None),
        ("r5", "sent", None),
        ("r6", "sent", None),
        ("r7", "sent", None),
    ]
    assert rows["wallet"] == [wallet_row("c1", 1, 100), wallet_row("c2", 8, 200), wallet_row("c3", 3, 300)]
    assert rows["claimed"] == [0, 2, 7]


# One refused certificate between two good ones, alone in its batch: a check skipped for all but
# some certificates of a set shows here, not hidden by another refusal that runs the batch again.
ONE_REFUSED = {
    "a request never made": (Cert("x", None), "unsolicited", "unsolicited"),
    "another size": (Cert("x", "r2", shares=999), "unsolicited", "unsolicited"),
    "another issue": (Cert("x", "r2", issue="KBX"), "unsolicited", "unsolicited"),
    "the other investor's request": (Cert("x", "p1"), "unsolicited", "unsolicited"),
    "forged": (Cert("x", "r2", forged=True), "stock_certificate_invalid", "signature"),
    "delivered by another issuing agent": (
        Cert("x", "r2", sender=ROGUE_ISSUER),
        "stock_certificate_invalid",
        "another deliverer",
    ),
    "another issuing agent's": (Cert("x", "r2", signer=ROGUE_ISSUER), "stock_certificate_invalid", "another deliverer"),
    "the other investor's": (Cert("x", "r2", holder="other"), "stock_certificate_invalid", "another holder"),
    "expired": (Cert("x", "r2", expired=True), "stock_certificate_invalid", "expired"),
}


@pytest.mark.parametrize("kind", list(ONE_REFUSED))
async def test_one_refused_certificate_between_good_ones_is_refused_alone(settings: Settings, kind: str) -> None:
    refused, reason, because = ONE_REFUSED[kind]
    shares = {"r1": 100, "r2": 200, "r3": 300, "p1": 200}
    result = await compared_deliveries(settings, shares, [Cert("c1", "r1"), refused, Cert("c3", "r3")])
    assert result.outcomes["set"] == [PROCESSED, dead(Reason(reason)), PROCESSED]
    assert result.calls["set"] == [[0, 1, 2], [0], [1], [2]]
    all_modes_agree(result, 3)
    assert result.refused["set"] == [(1, reason, because)]
    rows = result.rows["set"]
    assert [(r[0], r[5], r[8]) for r in rows["requests"]] == [
        ("p1", "sent", None),
        ("r1", "fulfilled", "c1"),
        ("r2", "sent", None),
        ("r3", "fulfilled", "c3"),
    ]
    assert rows["wallet"] == [wallet_row("c1", 1, 100), wallet_row("c3", 3, 300)]
    assert rows["claimed"] == [0, 2]


async def test_two_requests_answered_with_one_certid_collide_in_the_wallet_as_one_at_a_time(
    settings: Settings,
) -> None:
    """r1 and r2 (500 shares each) answered with the very same certificate, r3 and r4 with two
    certificates under one CertID: each second one fulfils its request and then collides in the
    wallet. The set fails whole and the batch runs again a delivery at a time; the second of each
    fails alone (no retry configured: dead-lettered at once), as one at a time and before."""
    shares = {"r1": 500, "r2": 500, "r3": 200, "r4": 100, "r5": 300}
    certs = [
        Cert("c1", "r1"),
        Cert("c1again", "r2", same_as="c1"),
        Cert("c3", "r3"),
        Cert("c4", "r4", cert_id_of="c3"),
        Cert("c5", "r5"),
    ]
    result = await compared_deliveries(settings.with_(retry_delays_ms=()), shares, certs)
    exhausted = dead(Reason.RETRIES_EXHAUSTED)
    assert result.outcomes["set"] == [PROCESSED, exhausted, PROCESSED, exhausted, PROCESSED]
    refused_then_one_by_one(result.calls["set"], [0, 1, 2, 3, 4], 5)
    assert len(result.calls["set"]) == 1 + 5
    all_modes_agree(result, 5)
    assert result.refused["set"] == [
        (1, "retries_exhausted", "wallet collision"),
        (3, "retries_exhausted", "wallet collision"),
    ]
    rows = result.rows["set"]
    assert [(r[0], r[5], r[8]) for r in rows["requests"]] == [
        ("r1", "fulfilled", "c1"),
        ("r2", "sent", None),
        ("r3", "fulfilled", "c3"),
        ("r4", "sent", None),
        ("r5", "fulfilled", "c5"),
    ]
    assert rows["wallet"] == [wallet_row("c1", 1, 500), wallet_row("c3", 3, 200), wallet_row("c5", 5, 300)]
    assert rows["claimed"] == [0, 2, 4]


# ==================================================================================================
# The issuer: certificate.release
# ==================================================================================================

ISSUER_INBOX: set_kit.Queue = lambda names: names.inbox(ISSUER_ID)  # noqa: E731 — a queue by the namespace's names
issuer_log = logs.get("kabuto.issuer")
OTHER_EXCHANGE = "other-exchange"
# Each mode's sell orders are numbered from its own base, its instructions from ten times it.
BASES: dict[Mode, int] = {"set": 1000, "alone": 2000, "reference": 3000}


async def reference_release(release: CertificateRelease, ctx: Context) -> None:
    """agents/issuer/transfers.py ``on_release`` as it was before 524345a, with the statement
    ``repo.release`` then made."""
    assert ctx.sender is not None
    result: str = await ctx.connection.execute(
        """UPDATE register SET committed_order = NULL, committed_by = NULL
           WHERE committed_by = $1 AND committed_order = $2 AND holder_user_id = $3
             AND cert_id NOT IN (SELECT cert_id FROM reservations WHERE status = 'reserved')""",
        ctx.sender.user_id,
        release.seller_order,
        release.seller_user_id,
    )
    issuer_log.info("remainder_released", seller_order=release.seller_order, certificates=int(result.split()[-1]))


def issuer_definition(state: Agent) -> AgentDefinition:
    handler = under_test(state, transfers.on_release, reference_release)
    return set_kit.with_handlers(issuer_app.AGENT, {CertificateRelease: handler})


@dataclass(frozen=True)
class Held:
    """A register row by name: its holder, to whom and which sell order (relative to the mode's
    base) it is committed, and whether an instruction holds it reserved for that order."""

    name: str
    holder: str
    order: int | None
    by: str = EXCHANGE_ID
    reserved: bool = False


# alice's and bob's certificates: committed to sell orders 1..4, one reserved, one to another
# exchange, one to nothing.
REGISTER = [
    Held("a1", "alice", 1),
    Held("a2", "alice", 1),
    Held("a3", "alice", 2),
    Held("a4", "alice", 2, reserved=True),
    Held("b1", "bob", 1),  # another seller's, under the same order number
    Held("o1", "alice", 1, by=OTHER_EXCHANGE),
    Held("a5", "alice", 4),  # an order never released
    Held("b2", "bob", 3),
    Held("a6", "alice", None),
]


async def registered(settings: Settings, mode: Mode) -> dict[uuid.UUID, str]:
    """The mode's register rows of ``REGISTER`` (its own order numbers), by CertID to name."""
    base = BASES[mode]
    names = {}
    async with dvp.admin(settings) as c:
        if mode == MODES[0]:
            await issuer_repo.open_offering(c, dvp.offering(rows_kit.ISSUE))
        for k, held in enumerate(REGISTER):
            record: RegisterRecord = dataclasses.replace(
                rows_kit.held_by(held.holder, f"{rows_kit.ISSUE}-{base + k:08d}"),
                committed_order=None if held.order is None else base + held.order,
                committed_by=None if held.order is None else held.by,
            )
            await issuer_repo.insert_record(c, record)
            if held.reserved:
                assert held.order is not None
                reserving = rows_kit.reserve(base * 10 + k)
                assert await reservations.reserve(c, reserving, record, held.by, base + held.order) is None
            names[record.cert_id] = held.name
    return names


async def register_rows(settings: Settings, mode: Mode, names: dict[uuid.UUID, str]) -> dict[str, Any]:
    """The mode's register and reservation rows, by name, its order numbers relative to its base."""
    base = BASES[mode]
    async with dvp.admin(settings) as c:
        register = await c.fetch(
            """SELECT cert_id, holder_user_id, shares, status, committed_by, committed_order FROM register
               WHERE cert_id = ANY($1::uuid[])""",
            list(names),
        )
        reserved = await c.fetch(
            """SELECT instruction, cert_id, status, previous_by, previous_order FROM reservations
               WHERE cert_id = ANY($1::uuid[])""",
            list(names),
        )
    return {
        "register": sorted(
            (
                names[r["cert_id"]],
                r["holder_user_id"],
                r["shares"],
                r["status"],
                r["committed_by"],
                None if r["committed_order"] is None else r["committed_order"] - base,
            )
            for r in register
        ),
        "reservations": sorted(
            (
                r["instruction"] - base * 10,
                names[r["cert_id"]],
                r["status"],
                r["previous_by"],
                None if r["previous_order"] is None else r["previous_order"] - base,
            )
            for r in reserved
        ),
    }


@dataclass(frozen=True)
class Release:
    order: int  # relative to the mode's base
    seller: str


def released(keys: KeyStore, mode: Mode, releases: Sequence[Release]) -> list[Sealed]:
    exchange = keys.load_identity(EXCHANGE_ID)
    return [
        seal(
            exchange,
            CertificateRelease(seller_order=BASES[mode] + r.order, seller_user_id=r.seller),
            recipient=ISSUER_ID,
            now=datetime.now(UTC),
        )
        for r in releases
    ]


async def compared_releases(settings: Settings, releases: Sequence[Release]) -> Compared:
    """``REGISTER`` registered for each mode, then ``releases`` sent by the exchange and settled as
    the mode settles them; ``kept`` holds the ``remainder_released`` lines (place of the delivery,
    sell order, certificates freed)."""
    result = Compared()
    async with running(settings, issuer_definition) as state:
        for mode in MODES:
            names = await registered(settings, mode)
            sealed = released(state.rt.keys, mode, releases)
            with logged("remainder_released") as lines:
                result.outcomes[mode] = await settle(settings, state, mode, sealed, ISSUER_INBOX)
            result.calls[mode] = list(state.calls)
            result.kept[mode] = [
                (place_of(line, sealed), line["seller_order"] - BASES[mode], line["certificates"]) for line in lines
            ]
            result.rows[mode] = await register_rows(settings, mode, names)
            async with dvp.admin(settings) as c:
                result.rows[mode]["caused"] = await set_kit.caused(c, sealed, lambda payload: payload)
    return result


UNRELEASED = [
    ("a1", "alice", 100, "valid", EXCHANGE_ID, 1),
    ("a2", "alice", 100, "valid", EXCHANGE_ID, 1),
    ("a3", "alice", 100, "valid", EXCHANGE_ID, 2),
    ("a4", "alice", 100, "valid", EXCHANGE_ID, 2),
    ("a5", "alice", 100, "valid", EXCHANGE_ID, 4),
    ("a6", "alice", 100, "valid", None, None),
    ("b1", "bob", 100, "valid", EXCHANGE_ID, 1),
    ("b2", "bob", 100, "valid", EXCHANGE_ID, 3),
    ("o1", "alice", 100, "valid", OTHER_EXCHANGE, 1),
]


def freed(*names: str) -> list[tuple[Any, ...]]:
    """``UNRELEASED`` with ``names`` committed to nothing."""
    return [(*row[:4], None, None) if row[0] in names else row for row in UNRELEASED]


async def test_releases_of_several_sell_orders_free_their_remainders_in_one_set_as_one_at_a_time(
    settings: Settings,
) -> None:
    """Each release frees what is committed to its order by the exchange for its seller: not a
    certificate reserved for an instruction, not another seller's under the same order number,
    not one committed to that number by another exchange, not one of an order not released."""
    releases = [Release(1, "alice"), Release(2, "alice"), Release(5, "alice"), Release(3, "bob")]
    result = await compared_releases(settings, releases)
    assert result.outcomes["set"] == [PROCESSED] * 4
    assert result.calls["set"] == [[0, 1, 2, 3]]
    assert result.calls["alone"] == result.calls["reference"] == [[0], [1], [2], [3]]
    assert result.outcomes["set"] == result.outcomes["alone"] == result.outcomes["reference"]
    assert result.rows["set"] == result.rows["alone"] == result.rows["reference"]
    assert result.rows["set"]["register"] == freed("a1", "a2", "a3", "b2")
    assert result.rows["set"]["reservations"] == [(3, "a4", "reserved", EXCHANGE_ID, 2)]
    assert result.rows["set"]["caused"] == []
    # the count of each release is logged under its own message
    assert result.kept["set"] == result.kept["alone"] == result.kept["reference"]
    assert result.kept["set"] == [(0, 1, 2), (1, 2, 1), (2, 5, 0), (3, 3, 1)]


async def test_releases_of_one_sell_order_twice_in_a_batch_cut_the_run(settings: Settings) -> None:
    """Keyed by sell order: a second release of order 1 (again for alice, then for bob) starts a
    new set, and finds what the first freed already free."""
    releases = [
        Release(1, "alice"),
        Release(3, "bob"),
        Release(1, "alice"),  # again: cut
        Release(2, "alice"),
        Release(1, "bob"),  # the same order number, another seller: cut
    ]
    result = await compared_releases(settings, releases)
    assert result.outcomes["set"] == [PROCESSED] * 5
    assert result.calls["set"] == [[0, 1], [2, 3], [4]]
    assert result.calls["alone"] == result.calls["reference"] == [[i] for i in range(5)]
    assert result.outcomes["set"] == result.outcomes["alone"] == result.outcomes["reference"]
    assert result.rows["set"] == result.rows["alone"] == result.rows["reference"]
    assert result.rows["set"]["register"] == freed("a1", "a2", "a3", "b1", "b2")
    assert result.kept["set"] == result.kept["alone"] == result.kept["reference"]
    assert result.kept["set"] == [(0, 1, 2), (1, 3, 1), (2, 1, 0), (3, 2, 1), (4, 1, 1)]
