"""Demo flow 6 (seed 001 Phases 3 and 4): bob hands his certificate to alice off the exchange;
alice verifies it and has the issuer register it to her; she splits it, reports one part lost
and has it reissued; the issuer's register and the exchange's CertID list still agree."""

from __future__ import annotations

from uuid import UUID

from agents import reconcile, render
from agents.demo.issuance import Say, held_certificate
from agents.investor import lifecycle_repo
from agents.investor.domain import Dividend
from agents.investor.lifecycle import claim_handover, hand_over, reissue
from agents.issuer import repo as issuer_repo
from broker.runtime import AgentRuntime
from schemas.identity import EXCHANGE_ID, ISSUER_ID
from schemas.issuance import DividendMethod
from schemas.lifecycle import ReissueKind


async def lifecycle(runtimes: dict[str, AgentRuntime], issue: str, alice: str, bob: str, say: Say) -> None:
    investor, issuer, exchange = runtimes["investor"], runtimes[ISSUER_ID], runtimes[EXCHANGE_ID]
    say("\nFlow 6 — off-exchange transfer and reissue (seed 001 Phases 3 and 4)")
    gift = await held_certificate(investor, bob, issue)
    handover_id = await investor.command(bob, hand_over(gift.cert_id, alice, "a gift"))
    await investor.outcomes.wait(lambda s: s.type == "certificate.handover", timeout=30)
    handover = await investor.query(lambda c: lifecycle_repo.handover(c, alice, handover_id))
    assert handover is not None
    say(
        f"  {bob} countersigns his {gift.shares}-share certificate over to {alice}; her client verifies "
        f"{bob}'s signature, then the issuer's: {handover.status}."
    )
    dividend = Dividend(method=DividendMethod.BANK_TRANSFER, account=f"{alice}-bank")
    claim = await investor.command(alice, claim_handover(handover_id, alice.capitalize(), "1-1 Kabuto-cho", dividend))
    await investor.outcomes.reply("certificate.issued", claim, timeout=30)
    await exchange.outcomes.reply("certid_list.updated", claim, timeout=30)
    received = await held_certificate(investor, alice, issue, shares=gift.shares)
    say(
        f"  {alice} asks the issuer to register it (41); the issuer answers with a name-transfer number (42), "
        f"she asks for her certificate with it (43) and gets CertID {received.cert_id}."
    )

    split = await investor.command(alice, reissue(ReissueKind.SPLIT, (received.cert_id,), (150, 50)))
    await investor.outcomes.reply("certificate.reissued", split, timeout=30)
    part = await held_certificate(investor, alice, issue, shares=50)
    lost = await investor.command(alice, reissue(ReissueKind.LOST, (part.cert_id,)))
    await investor.outcomes.reply("certificate.reissued", lost, timeout=30)
    await exchange.outcomes.reply("certid_list.updated", lost, timeout=30)
    say(
        f"  {alice} splits it into 150 + 50 shares, then reports the 50-share certificate lost: it is reissued "
        f"under a new CertID and the old one is dead at the issuer and the exchange.\n"
    )
    await _history(issuer, part.cert_id, say)
    found = await reconcile.differences(issuer.settings, issue)
    say(
        "\n  Reconciliation: "
        + (
            "the exchange's CertID list equals the issuer's register."
            if not found
            else f"{len(found)} difference(s): {found}"
        )
    )


async def _history(issuer: AgentRuntime, cert_id: UUID, say: Say) -> None:
    events = await issuer.query(lambda c: issuer_repo.history(c, cert_id))
    say("  The certificate's history at the issuer (`kabuto issuer history CERTID`):")
    say(
        render.table(
            ["event", "CertID", "holder", "shares", "status"],
            [[e["event"], e["cert_id"], e["holder"], e["shares"], e["status"]] for e in events],
            indent="    ",
        )
    )
