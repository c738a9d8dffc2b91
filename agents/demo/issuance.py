"""Demo flow 1 (seed 001 Phase 1): an issuer opens an offering; alice asks for certificates; the
issuer examines the request, registers her, signs the certificate and sends it; her wallet
verifies and keeps it; the exchange stores the CertID list. Then the refusals a real
market needs: bob asks for more than his certificate policy allows, and an altered copy of
alice's certificate fails verification.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import date
from decimal import Decimal

from agents import render
from agents.exchange import repo as exchange_repo
from agents.investor import repo as investor_repo
from agents.investor.app import IssuanceOrder, request_certificates, verified_wallet
from agents.investor.domain import Dividend
from agents.issuer import repo as issuer_repo
from agents.issuer.domain import Offering
from broker.context import Context
from broker.runtime import AgentRuntime
from broker.stock_certificates import CertificateInvalid, verify_certificate
from schemas.certificates import ElectronicStockCertificate, ShareClass, SignedCertificate
from schemas.identity import EXCHANGE_ID, ISSUER_ID
from schemas.issuance import DividendMethod

Say = Callable[[str], None]


async def issuance(runtimes: dict[str, AgentRuntime], alice: str, bob: str, say: Say) -> Offering:
    issuer, investor, exchange = runtimes[ISSUER_ID], runtimes["investor"], runtimes[EXCHANGE_ID]
    offering = _offering()
    await issuer.command(ISSUER_ID, lambda ctx: issuer_repo.open_offering(ctx.connection, offering))
    say("Flow 1 — certificate issuance (seed 001 Phase 1)")
    say(
        f"  The issuer opens offering {offering.issue_code}: {offering.company_name}, "
        f"{offering.shares_offered:,} {offering.share_class.value} shares at "
        f"{offering.offer_price:,} {offering.currency}, lot {offering.minimum_lot}."
    )
    request_id = await investor.command(alice, request_certificates(_order(offering, alice, 500)))
    say(f"  {alice} signs request 32 for 500 shares (request {request_id}).")
    issued = await investor.outcomes.reply("certificate.issued", request_id)
    listed = await exchange.outcomes.reply("certid_list.updated", request_id)
    say(
        f"  The issuer examined it, registered {alice} and signed the certificate; "
        f"{alice}'s wallet verified it ({issued.outcome.value})."
    )
    wallet = await investor.command(alice, verified_wallet)
    certificate = next(c for c in wallet if not isinstance(c, CertificateInvalid))
    say("\n" + render.certificate(certificate) + "\n")

    register = await issuer.query(lambda c: issuer_repo.register_rows(c, offering.issue_code))
    say("  Shareholder register (issuer, DB16):")
    say(
        render.table(
            ["certificate number", "CertID", "holder", "shares", "status"],
            [[r["certificate_number"], r["cert_id"], r["holder_user_id"], r["shares"], r["status"]] for r in register],
            indent="    ",
        )
    )
    entries = await exchange.query(lambda c: exchange_repo.certid_list(c, offering.issue_code))
    say(f"\n  CertID list at the exchange ({listed.outcome.value}):")
    say(
        render.table(
            ["CertID", "holder", "shares", "status", "version"],
            [[e.cert_id, e.user_id, e.shares, e.status, e.version] for e in entries],
            indent="    ",
        )
    )

    too_many = offering.shares_offered // 2
    refused_id = await investor.command(bob, request_certificates(_order(offering, bob, too_many)))
    await investor.outcomes.reply("certificate.issuance.refused", refused_id)
    requests = await investor.query(lambda c: investor_repo.requests(c, bob))
    refusal = next(r for r in requests if r.request_id == refused_id)
    say(f"\n  {bob} asks for {too_many:,} shares: refused, {refusal.reason} — {refusal.detail}.")

    await _altered_copy(investor, alice, say, offering.issue_code)
    return offering


async def _altered_copy(investor: AgentRuntime, alice: str, say: Say, issue_code: str) -> None:
    async def tamper(ctx: Context) -> str:
        held = await investor_repo.held(ctx.connection, alice)
        signed = next(s for s in held if f'"issue_code":"{issue_code}"'.encode() in s.content)
        content = signed.content.replace(b'"shares":500', b'"shares":5000')
        forged = SignedCertificate(content=content, issuer_signature=signed.issuer_signature)
        try:
            verify_certificate(forged, ctx.trust)
        except CertificateInvalid as exc:
            return exc.detail
        raise AssertionError("an altered certificate verified")

    detail = await investor.command(alice, tamper)
    say(f"  A copy of {alice}'s certificate altered to 5,000 shares fails verification: {detail}.")


def _offering() -> Offering:
    return Offering(
        issue_code=f"DEMO-{secrets.token_hex(3).upper()}",
        company_name="Kabuto Demonstration Holdings K.K.",
        incorporated_on=date(2001, 4, 1),
        share_class=ShareClass.COMMON,
        offer_price=Decimal("1200"),
        shares_offered=1_000_000,
        shares_remaining=1_000_000,
        minimum_lot=100,
        par_value_per_share=Decimal("50"),
        issuance_conditions={"subscription_period": "demo", "payment": "on allotment"},
    )


def _order(offering: Offering, user: str, shares: int) -> IssuanceOrder:
    return IssuanceOrder(
        issue_code=offering.issue_code,
        share_class=offering.share_class,
        shares=shares,
        holder_name=user.capitalize(),
        holder_address=f"1-1 Kabuto-cho, Nihonbashi, Chuo-ku, Tokyo ({user})",
        dividend_delivery=Dividend(method=DividendMethod.SETTLEMENT_ACCOUNT, account=f"settlement:{user}"),
    )


async def held_certificate(
    investor: AgentRuntime, user: str, issue: str, shares: int | None = None
) -> ElectronicStockCertificate:
    """The newest verified certificate of ``issue`` in ``user``'s wallet (of ``shares``, if given)."""
    wallet = await investor.command(user, verified_wallet)
    return next(
        c
        for c in reversed(wallet)
        if not isinstance(c, CertificateInvalid) and c.issue_code == issue and shares in (None, c.shares)
    )
