"""Every refusal of the certificate lifecycle off the exchange (seed 001 Phases 3 and 4), against
the real investor, issuer and exchange agents.

A refusal must do three things: reach the requester with its reason code, leave the issuer's
shareholder register (``register``, ``name_transfers``, ``reissues``) exactly as it was, and
leave the exchange's CertID list as it was — no CertID retired, none added (R-001-57). Bad
requests are built by hand, sealed as the investor they claim to come from, and published as
any client could; the investor records each as a pending request so that the answer it gets
is one it asked for.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest

from agents.investor import repo as investor_repo
from agents.investor.app import request_certificates
from agents.investor.domain import Dividend
from agents.investor.lifecycle import LifecycleError, claim_handover, hand_over, reissue
from broker.consumer import Outcome
from broker.envelope import seal
from broker.pki import Identity
from broker.runtime import AgentRuntime
from broker.settings import Settings
from broker.stock_certificates import endorse
from schemas.catalogue import Message
from schemas.certificates import EndorsedCertificate, IssuerSignature, SignedCertificate, TransferRestriction
from schemas.issuance import DividendDelivery, DividendMethod
from schemas.lifecycle import (
    CertificateHandover,
    HoldingsInquiry,
    OffExchangeTransferRequest,
    ReissueKind,
    ReissueRequest,
)
from schemas.trading import CertificateRequestAfterTransfer
from tests import support

AGENTS = ("investor", "issuer", "exchange")
DIVIDEND = Dividend(method=DividendMethod.BANK_TRANSFER, account="0002-999999")
Runtimes = dict[str, AgentRuntime]


# --- setting the scene ------------------------------------------------------------------


async def issued(rt: Runtimes, user: str = "alice", shares: int = 1000, issue: str = support.ISSUE) -> UUID:
    """A certificate issued to ``user``, in its wallet and in the exchange's CertID list."""
    order = support.order(shares, issue_code=issue, holder=user.capitalize())
    request_id = await rt["investor"].command(user, request_certificates(order))
    await rt["investor"].outcomes.reply("certificate.issued", request_id)
    await rt["exchange"].outcomes.reply("certid_list.updated", request_id)
    found = await support.rows(rt["investor"], "SELECT cert_id FROM requests WHERE request_id = $1", request_id)
    cert_id: UUID = found[0]["cert_id"]
    return cert_id


async def signed_certificate(investor: AgentRuntime, cert_id: UUID) -> SignedCertificate:
    """The certificate's bytes as the holder's wallet keeps them."""
    (row,) = await support.rows(
        investor, "SELECT content, issuer_signature, issuer_certificate FROM wallet WHERE cert_id = $1", cert_id
    )
    signature = IssuerSignature(certificate=row["issuer_certificate"], signature=row["issuer_signature"])
    return SignedCertificate(content=row["content"], issuer_signature=signature)


def altered(signed: SignedCertificate) -> SignedCertificate:
    content = signed.content.replace(b'"shares":1000', b'"shares":9000')
    assert content != signed.content
    return signed.model_copy(update={"content": content})


async def books(rt: Runtimes) -> dict[str, list[dict[str, Any]]]:
    """The issuer's register and the exchange's CertID list, and every list change sent."""
    issuer, exchange = rt["issuer"], rt["exchange"]
    return {
        "register": await support.rows(issuer, "SELECT * FROM register ORDER BY cert_id"),
        "name_transfers": await support.rows(issuer, "SELECT * FROM name_transfers ORDER BY name_transfer_number"),
        "reissues": await support.rows(issuer, "SELECT * FROM reissues ORDER BY reissue_number"),
        "certid_list": await support.rows(exchange, "SELECT * FROM certid_list ORDER BY cert_id"),
        # a change still on its way to the exchange would not show in its table yet
        "lists_sent": await support.rows(
            issuer,
            "SELECT message_id FROM outbox_messages WHERE message_type = 'certid_list.updated' ORDER BY seq, place",
        ),
    }


async def send(
    settings: Settings, rt: Runtimes, user: str, payload: Message, kind: str, shares: int = 0, to: str = "issuer"
) -> UUID:
    """Seal ``payload`` as ``user``, record it as the investor's pending request, publish it."""
    investor = rt["investor"]
    sealed = seal(investor.identities[user], payload, recipient=to, now=datetime.now(UTC))
    request_id = sealed.envelope.message_id
    await investor.command(
        user, lambda ctx: investor_repo.record_request(ctx.connection, request_id, user, kind, support.ISSUE, shares)
    )
    await support.publish_sealed(settings, sealed)
    return request_id


async def answer(rt: Runtimes, type_: str, request_id: UUID) -> dict[str, Any]:
    """The requester's view once the answer of ``type_`` arrived: its request's status and reason."""
    settled = await rt["investor"].outcomes.reply(type_, request_id)
    assert settled.outcome is Outcome.PROCESSED
    (row,) = await support.rows(rt["investor"], "SELECT status, reason FROM requests WHERE request_id = $1", request_id)
    return row


def refused(reason: str) -> dict[str, Any]:
    return {"status": "refused", "reason": reason}


async def handover_status(investor: AgentRuntime, handover_id: UUID) -> dict[str, Any]:
    (row,) = await support.rows(investor, "SELECT status, reason FROM handovers WHERE handover_id = $1", handover_id)
    return row


async def handed_to_bob(rt: Runtimes, cert_id: UUID) -> UUID:
    """P3.1–P3.2 through the investor client: alice hands the certificate over, bob verifies it."""
    handover_id = await rt["investor"].command("alice", hand_over(cert_id, "bob"))
    await rt["investor"].outcomes.wait(lambda s: s.type == "certificate.handover")
    assert (await handover_status(rt["investor"], handover_id))["status"] == "received"
    return handover_id


# --- E18: the transferee verifies the hand-over (P3.2, R-001-48) ----------------------------

Ids = Mapping[str, Identity]


def for_another_transferee(ids: Ids, signed: SignedCertificate) -> tuple[str, EndorsedCertificate]:
    return "alice", endorse(ids["alice"], signed, "transfer", "transfer:carol")


def countersigned_by_a_non_holder(ids: Ids, signed: SignedCertificate) -> tuple[str, EndorsedCertificate]:
    return "alice", endorse(ids["carol"], signed, "transfer", "transfer:bob")


def handed_over_by_a_non_holder(ids: Ids, signed: SignedCertificate) -> tuple[str, EndorsedCertificate]:
    return "carol", endorse(ids["carol"], signed, "transfer", "transfer:bob")


def with_altered_bytes(ids: Ids, signed: SignedCertificate) -> tuple[str, EndorsedCertificate]:
    return "alice", endorse(ids["alice"], altered(signed), "transfer", "transfer:bob")


def not_countersigned(ids: Ids, signed: SignedCertificate) -> tuple[str, EndorsedCertificate]:
    return "alice", EndorsedCertificate(certificate=signed)


def signed_by_a_non_issuer(ids: Ids, signed: SignedCertificate) -> tuple[str, EndorsedCertificate]:
    alice = ids["alice"]
    forged = SignedCertificate(
        content=signed.content,
        issuer_signature=IssuerSignature(certificate=alice.certificate_der, signature=alice.sign(signed.content)),
    )
    return "alice", endorse(alice, forged, "transfer", "transfer:bob")


@pytest.mark.parametrize(
    "bad_handover",
    [
        for_another_transferee,
        countersigned_by_a_non_holder,
        handed_over_by_a_non_holder,
        with_altered_bytes,
        not_countersigned,
        signed_by_a_non_issuer,
    ],
)
async def test_a_handover_failing_verification_is_kept_rejected_and_cannot_be_claimed(
    settings: Settings, bad_handover: Callable[[Ids, SignedCertificate], tuple[str, EndorsedCertificate]]
) -> None:
    """E18 (P3.2, R-001-48): the transferor's countersignature, then the issuer's signature; a
    hand-over failing either is recorded as rejected and never becomes a request 41."""
    async with support.agents(settings, *AGENTS) as rt:
        investor = rt["investor"]
        await support.open_offering(rt["issuer"])
        cert_id = await issued(rt)
        before = await books(rt)

        transferor, endorsed = bad_handover(investor.identities, await signed_certificate(investor, cert_id))
        handover = CertificateHandover(handover_id=uuid4(), certificate=endorsed)
        sealed = seal(investor.identities[transferor], handover, recipient="bob", now=datetime.now(UTC))
        await support.publish_sealed(settings, sealed)
        assert (await investor.outcomes.wait_for(sealed.envelope.message_id)).outcome is Outcome.PROCESSED

        kept = await handover_status(investor, handover.handover_id)
        assert kept["status"] == "rejected" and kept["reason"]
        with pytest.raises(LifecycleError):
            await investor.command("bob", claim_handover(handover.handover_id, "Bob", "Tokyo", DIVIDEND))
        assert await support.rows(investor, "SELECT * FROM requests WHERE user_id = 'bob'") == []
        assert await books(rt) == before


# --- E19: the issuer examines request 41 (P3.4, R-001-50) -----------------------------------


def request_41(endorsed: EndorsedCertificate, cert_id: UUID, user: str = "bob") -> OffExchangeTransferRequest:
    return OffExchangeTransferRequest(
        cert_id=cert_id, user_id=user, holder_name=user.capitalize(), holder_address="Tokyo", certificate=endorsed
    )


Build = Callable[[Ids, SignedCertificate, UUID], tuple[str, OffExchangeTransferRequest]]


def an_altered_certificate(
    ids: Ids, signed: SignedCertificate, cert_id: UUID
) -> tuple[str, OffExchangeTransferRequest]:
    return "bob", request_41(endorse(ids["alice"], altered(signed), "transfer", "transfer:bob"), cert_id)


def no_countersignature(ids: Ids, signed: SignedCertificate, cert_id: UUID) -> tuple[str, OffExchangeTransferRequest]:
    return "bob", request_41(EndorsedCertificate(certificate=signed), cert_id)


def countersigned_for_carol(
    ids: Ids, signed: SignedCertificate, cert_id: UUID
) -> tuple[str, OffExchangeTransferRequest]:
    return "bob", request_41(endorse(ids["alice"], signed, "transfer", "transfer:carol"), cert_id)


def countersigned_by_carol(
    ids: Ids, signed: SignedCertificate, cert_id: UUID
) -> tuple[str, OffExchangeTransferRequest]:
    return "bob", request_41(endorse(ids["carol"], signed, "transfer", "transfer:bob"), cert_id)


def countersigned_for_a_sell_order(
    ids: Ids, signed: SignedCertificate, cert_id: UUID
) -> tuple[str, OffExchangeTransferRequest]:
    return "bob", request_41(endorse(ids["alice"], signed, "sell_order", "order:alice:s1"), cert_id)


def naming_another_certid(ids: Ids, signed: SignedCertificate, cert_id: UUID) -> tuple[str, OffExchangeTransferRequest]:
    return "bob", request_41(endorse(ids["alice"], signed, "transfer", "transfer:bob"), uuid4())


def naming_another_user(ids: Ids, signed: SignedCertificate, cert_id: UUID) -> tuple[str, OffExchangeTransferRequest]:
    """E21 (¶0059): bob signs a request to register carol, with a hand-over made out to carol."""
    return "bob", request_41(endorse(ids["alice"], signed, "transfer", "transfer:carol"), cert_id, user="carol")


def to_oneself(ids: Ids, signed: SignedCertificate, cert_id: UUID) -> tuple[str, OffExchangeTransferRequest]:
    return "alice", request_41(endorse(ids["alice"], signed, "transfer", "transfer:alice"), cert_id, user="alice")


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (an_altered_certificate, "certificate_signature_invalid"),
        (no_countersignature, "endorsement_invalid"),
        (countersigned_for_carol, "endorsement_invalid"),
        (countersigned_by_carol, "endorsement_invalid"),
        (countersigned_for_a_sell_order, "endorsement_invalid"),
        (naming_another_certid, "content_mismatch"),
        (naming_another_user, "bad_request"),
        (to_oneself, "bad_request"),
    ],
)
async def test_the_issuer_refuses_a_name_transfer_request_it_cannot_verify(
    settings: Settings, build: Build, reason: str
) -> None:
    """E19 (P3.4, R-001-50, ¶0052): the issuer's signature on the certificate, the transferor's
    countersignature for this transferee, the request's contents and its signer; each failure is
    answered with name_transfer.refused and the register is untouched."""
    async with support.agents(settings, *AGENTS) as rt:
        investor = rt["investor"]
        await support.open_offering(rt["issuer"])
        cert_id = await issued(rt)
        before = await books(rt)

        signer, request = build(investor.identities, await signed_certificate(investor, cert_id), cert_id)
        request_id = await send(settings, rt, signer, request, "transfer")
        assert await answer(rt, "name_transfer.refused", request_id) == refused(reason)
        assert await books(rt) == before


async def reissued_by_the_transferor(rt: Runtimes, cert_id: UUID) -> None:
    request_id = await rt["investor"].command("alice", reissue(ReissueKind.LOST, (cert_id,)))
    await rt["investor"].outcomes.reply("certificate.reissued", request_id)
    await rt["exchange"].outcomes.reply("certid_list.updated", request_id)


async def committed_to_a_sell_order(rt: Runtimes, cert_id: UUID) -> None:
    """Stands for a remainder the issuer committed to a sell order still open at the exchange."""
    await rt["issuer"].query(
        lambda c: c.execute(
            "UPDATE register SET committed_order = 7, committed_by = 'exchange' WHERE cert_id = $1", cert_id
        )
    )


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [(reissued_by_the_transferor, "not_registered"), (committed_to_a_sell_order, "committed")],
)
async def test_a_verified_handover_of_a_certificate_the_register_no_longer_allows_is_refused(
    settings: Settings, spoil: Callable[[Runtimes, UUID], Awaitable[None]], reason: str
) -> None:
    """E19 (P3.4, R-001-50, R-001-57): the CertID must still be valid and free in DB16 — a copy
    kept after the transferor had it reissued, or a certificate an exchange order holds, is not."""
    async with support.agents(settings, *AGENTS) as rt:
        investor = rt["investor"]
        await support.open_offering(rt["issuer"])
        cert_id = await issued(rt)
        handover_id = await handed_to_bob(rt, cert_id)
        await spoil(rt, cert_id)
        before = await books(rt)

        claim = await investor.command("bob", claim_handover(handover_id, "Bob", "Tokyo", DIVIDEND))
        assert await answer(rt, "name_transfer.refused", claim) == refused(reason)
        assert (await handover_status(investor, handover_id))["status"] == "refused"
        assert await books(rt) == before


async def test_a_not_transferable_certificate_is_not_transferred_off_the_exchange(settings: Settings) -> None:
    """E19 / E5 (S75–S77): shares the company declared not transferable stay with their holder."""
    async with support.agents(settings, *AGENTS) as rt:
        investor = rt["investor"]
        offer = support.offering(transfer_restriction=TransferRestriction.NOT_TRANSFERABLE)
        await support.open_offering(rt["issuer"], offer)
        cert_id = await issued(rt)
        handover_id = await handed_to_bob(rt, cert_id)
        before = await books(rt)

        claim = await investor.command("bob", claim_handover(handover_id, "Bob", "Tokyo", DIVIDEND))
        settled = await investor.outcomes.wait(
            lambda s: s.correlation_id == str(claim) and s.type in ("name_transfer.refused", "name_transfer.registered")
        )
        assert settled.type == "name_transfer.refused"
        assert await books(rt) == before


# --- E16: request 43 must quote a name transfer to its signer (S146, R-001-45/52) -----------


def request_43(ntn: int, user: str) -> CertificateRequestAfterTransfer:
    dividend = DividendDelivery(method=DIVIDEND.method, account=support.box(DIVIDEND.account))  # never opened here
    return CertificateRequestAfterTransfer(
        name_transfer_number=ntn, holder_name=user.capitalize(), holder_address="Tokyo", dividend_delivery=dividend
    )


async def transferred_to_bob(rt: Runtimes) -> int:
    """A completed off-exchange transfer alice → bob; its name-transfer number."""
    handover_id = await handed_to_bob(rt, await issued(rt))
    claim = await rt["investor"].command("bob", claim_handover(handover_id, "Bob", "Tokyo", DIVIDEND))
    await rt["investor"].outcomes.reply("certificate.issued", claim)
    await rt["exchange"].outcomes.reply("certid_list.updated", claim)
    (row,) = await support.rows(rt["issuer"], "SELECT name_transfer_number FROM name_transfers")
    ntn: int = row["name_transfer_number"]
    return ntn


async def test_a_certificate_request_quoting_an_unknown_transfer_number_is_refused(settings: Settings) -> None:
    """E16 (S146–S147, R-001-45): no list-17 record with that NTN → unknown_transfer."""
    async with support.agents(settings, *AGENTS) as rt:
        await support.open_offering(rt["issuer"])
        await issued(rt)
        before = await books(rt)
        request_id = await send(settings, rt, "bob", request_43(4242, "bob"), "after_transfer", 1000)
        assert await answer(rt, "certificate.issuance.refused", request_id) == refused("unknown_transfer")
        assert await books(rt) == before


async def test_a_certificate_request_quoting_another_buyers_transfer_number_is_refused(settings: Settings) -> None:
    """E16 (S146, ¶0060, R-001-52): the record's buyer must be the signer of 43 — carol cannot have
    bob's certificate issued to her by quoting his name-transfer number."""
    async with support.agents(settings, *AGENTS) as rt:
        await support.open_offering(rt["issuer"])
        ntn = await transferred_to_bob(rt)
        before = await books(rt)
        request_id = await send(settings, rt, "carol", request_43(ntn, "carol"), "after_transfer", 1000)
        assert await answer(rt, "certificate.issuance.refused", request_id) == refused("unknown_transfer")
        assert await books(rt) == before


async def test_a_certificate_request_for_a_certid_reissued_since_is_refused(settings: Settings) -> None:
    """E16 / R-001-46, R-001-57: the certificate is drawn up from a *valid* DB16 record only."""
    async with support.agents(settings, *AGENTS) as rt:
        investor, issuer = rt["investor"], rt["issuer"]
        await support.open_offering(issuer)
        cert_id = await issued(rt)
        endorsed = endorse(
            investor.identities["alice"], await signed_certificate(investor, cert_id), "transfer", "transfer:bob"
        )
        # bob's 41 built by hand, so his client does not send 43 on the answer by itself
        registered = await send(settings, rt, "bob", request_41(endorsed, cert_id), "transfer")
        await issuer.outcomes.wait_for(registered)
        (row,) = await support.rows(issuer, "SELECT name_transfer_number, cert_id FROM name_transfers")
        lost = await investor.command("bob", reissue(ReissueKind.LOST, (row["cert_id"],)))
        await investor.outcomes.reply("certificate.reissued", lost)
        await rt["exchange"].outcomes.reply("certid_list.updated", lost)
        before = await books(rt)

        request_id = await send(
            settings, rt, "bob", request_43(row["name_transfer_number"], "bob"), "after_transfer", 1000
        )
        settled = await investor.outcomes.wait(
            lambda s: (
                s.correlation_id == str(request_id) and s.type in ("certificate.issued", "certificate.issuance.refused")
            )
        )
        assert settled.type == "certificate.issuance.refused"
        assert await books(rt) == before


# --- E20: reissue request 46 (P4.4, R-001-56) ------------------------------------------------

Reissue = tuple[str, ReissueKind, tuple[UUID, ...], tuple[int, ...]]


async def someone_elses(rt: Runtimes, mine: UUID) -> Reissue:
    return "bob", ReissueKind.LOST, (mine,), ()


async def merged_with_someone_elses(rt: Runtimes, mine: UUID) -> Reissue:
    bobs = await issued(rt, "bob", 500)
    return "alice", ReissueKind.MERGE, (mine, bobs), ()


async def unknown(rt: Runtimes, mine: UUID) -> Reissue:
    return "alice", ReissueKind.LOST, (uuid4(),), ()


async def already_reissued(rt: Runtimes, mine: UUID) -> Reissue:
    split = await rt["investor"].command("alice", reissue(ReissueKind.SPLIT, (mine,), (500, 500)))
    await rt["investor"].outcomes.reply("certificate.reissued", split)
    await rt["exchange"].outcomes.reply("certid_list.updated", split)
    return "alice", ReissueKind.LOST, (mine,), ()


async def not_conserving(rt: Runtimes, mine: UUID) -> Reissue:
    return "alice", ReissueKind.SPLIT, (mine,), (600, 300)


async def of_two_issues(rt: Runtimes, mine: UUID) -> Reissue:
    await support.open_offering(rt["issuer"], support.offering("KBU"))
    other = await issued(rt, issue="KBU", shares=500)
    return "alice", ReissueKind.MERGE, (mine, other), ()


async def committed(rt: Runtimes, mine: UUID) -> Reissue:
    await committed_to_a_sell_order(rt, mine)
    return "alice", ReissueKind.SPLIT, (mine,), (500, 500)


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (someone_elses, "not_holder"),
        (merged_with_someone_elses, "not_holder"),
        (unknown, "not_registered"),
        (already_reissued, "not_registered"),
        (not_conserving, "shares_not_conserved"),
        (of_two_issues, "mixed_issues"),
        (committed, "committed"),
    ],
)
async def test_a_reissue_the_register_cannot_honour_is_refused_and_changes_nothing(
    settings: Settings, setup: Callable[[Runtimes, UUID], Awaitable[Reissue]], reason: str
) -> None:
    """E20 (P4.4, R-001-56): only valid certificates of the requester that no exchange order
    holds are reissued, a split conserves shares and a merge stays within one issue; otherwise
    certificate.reissue_refused and no new CertID anywhere."""
    async with support.agents(settings, *AGENTS) as rt:
        await support.open_offering(rt["issuer"])
        mine = await issued(rt)
        user, kind, cert_ids, parts = await setup(rt, mine)
        before = await books(rt)

        request_id = await rt["investor"].command(user, reissue(kind, cert_ids, parts))
        assert await answer(rt, "certificate.reissue_refused", request_id) == refused(reason)
        assert await books(rt) == before


async def test_a_reissue_request_naming_another_user_is_refused(settings: Settings) -> None:
    """E20 / E21 (¶0059, R-001-60): bob signs a 46 in alice's name for alice's certificate."""
    async with support.agents(settings, *AGENTS) as rt:
        await support.open_offering(rt["issuer"])
        mine = await issued(rt)
        before = await books(rt)
        request = ReissueRequest(user_id="alice", kind=ReissueKind.LOST, cert_ids=(mine,))
        request_id = await send(settings, rt, "bob", request, "reissue:lost")
        assert await answer(rt, "certificate.reissue_refused", request_id) == refused("not_holder")
        assert await books(rt) == before


async def test_a_refused_reissue_uses_up_no_certificate_number(settings: Settings) -> None:
    """E20 (P4.4: no change on a refusal); certificate numbers are sequential per issue."""
    async with support.agents(settings, *AGENTS) as rt:
        await support.open_offering(rt["issuer"])
        mine = await issued(rt)
        request_id = await rt["investor"].command("alice", reissue(ReissueKind.SPLIT, (mine,), (600, 300)))
        assert await answer(rt, "certificate.reissue_refused", request_id) == refused("shares_not_conserved")
        await issued(rt, "bob", 500)
        numbers = await support.rows(rt["issuer"], "SELECT certificate_number FROM register ORDER BY 1")
        assert [n["certificate_number"] for n in numbers] == ["KBT-00000001", "KBT-00000002"]


# --- holdings inquiry 44/45 (P4.1–P4.2, R-001-54) --------------------------------------------


async def statement_for(settings: Settings, rt: Runtimes, asker: str, named: str) -> list[dict[str, Any]]:
    inquiry = seal(
        rt["investor"].identities[asker], HoldingsInquiry(user_id=named), recipient="issuer", now=datetime.now(UTC)
    )
    await support.publish_sealed(settings, inquiry)
    await rt["investor"].outcomes.reply("holdings.statement", inquiry.envelope.message_id)
    (row,) = await support.rows(rt["investor"], "SELECT statement FROM holdings_statements WHERE user_id = $1", asker)
    holdings: list[dict[str, Any]] = json.loads(row["statement"])["holdings"]
    return holdings


async def test_a_holdings_inquiry_naming_another_user_reveals_nothing(settings: Settings) -> None:
    """P4.2 (R-001-54, ¶0059): DB16 is searched by the signer's user id only — bob asking about
    alice gets an empty statement, while alice asking about herself sees her certificate."""
    async with support.agents(settings, *AGENTS) as rt:
        await support.open_offering(rt["issuer"])
        mine = await issued(rt)
        before = await books(rt)
        assert await statement_for(settings, rt, "bob", "alice") == []
        assert [h["cert_id"] for h in await statement_for(settings, rt, "alice", "alice")] == [str(mine)]
        assert await books(rt) == before
