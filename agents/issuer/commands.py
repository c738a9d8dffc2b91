"""``kabuto issuer …``: the issuing agent's books, for operators."""

from __future__ import annotations

import argparse
from datetime import date
from uuid import UUID

from agents import render
from agents.cli_types import decimal
from agents.issuer import repo
from agents.issuer.app import publish_certid_lists
from agents.issuer.domain import Offering
from broker.runtime import run_as
from broker.settings import Settings
from schemas.certificates import ShareClass
from schemas.identity import ISSUER_ID


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    issuer = sub.add_parser("issuer", help="the issuing agent's books").add_subparsers(
        dest="issuer_command", required=True, metavar="ISSUER_COMMAND"
    )
    offer = issuer.add_parser("offer", help="open a new-share offering")
    offer.add_argument("issue_code")
    offer.add_argument("--company", required=True)
    offer.add_argument("--incorporated", required=True, type=date.fromisoformat, help="YYYY-MM-DD")
    offer.add_argument("--shares", type=int, required=True)
    offer.add_argument("--price", type=decimal, required=True)
    offer.add_argument("--lot", type=int, default=100)
    offer.add_argument("--par-value", type=decimal)
    offer.add_argument("--class", dest="share_class", default="common", choices=[c.value for c in ShareClass])
    reg = issuer.add_parser("register", help="the shareholder register of an issue")
    reg.add_argument("issue_code")
    issuer.add_parser("offerings", help="every offering")
    issuer.add_parser("publish-certid-list", help="send the exchange every issue's CertID list")
    history = issuer.add_parser("history", help="the life of a certificate: issuance, name transfers, reissues")
    history.add_argument("cert_id", type=UUID)


async def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.issuer_command == "offer":
        offering = Offering(
            issue_code=args.issue_code,
            company_name=args.company,
            incorporated_on=args.incorporated,
            share_class=ShareClass(args.share_class),
            offer_price=args.price,
            shares_offered=args.shares,
            shares_remaining=args.shares,
            minimum_lot=args.lot,
            par_value_per_share=args.par_value,
        )
        await run_as(settings, "issuer", ISSUER_ID, lambda ctx: repo.open_offering(ctx.connection, offering))
        print(f"opened offering {offering.issue_code}")
    elif args.issuer_command == "register":
        rows = await run_as(
            settings, "issuer", ISSUER_ID, lambda ctx: repo.register_rows(ctx.connection, args.issue_code)
        )
        headers = list(rows[0]) if rows else ["register"]
        print(render.table(headers, [list(r.values()) for r in rows], indent=""))
    elif args.issuer_command == "offerings":
        offerings = await run_as(settings, "issuer", ISSUER_ID, lambda ctx: repo.offerings(ctx.connection))
        print(
            render.table(
                ["issue", "company", "class", "price", "offered", "remaining", "lot", "status"],
                [
                    [
                        o.issue_code,
                        o.company_name,
                        o.share_class,
                        o.offer_price,
                        o.shares_offered,
                        o.shares_remaining,
                        o.minimum_lot,
                        o.status,
                    ]
                    for o in offerings
                ],
                indent="",
            )
        )
    elif args.issuer_command == "history":
        events = await run_as(settings, "issuer", ISSUER_ID, lambda ctx: repo.history(ctx.connection, args.cert_id))
        print(
            render.table(
                ["when", "event", "CertID", "from CertID", "holder", "shares", "number", "status", "NTN/reissue"],
                [
                    [
                        e["at"].isoformat(timespec="seconds"),
                        e["event"],
                        e["cert_id"],
                        e["from_cert_id"],
                        e["holder"],
                        e["shares"],
                        e["certificate_number"],
                        e["status"],
                        e["number"],
                    ]
                    for e in events
                ],
                indent="",
            )
        )
        return 0 if events else 1
    elif args.issuer_command == "publish-certid-list":
        count = await run_as(settings, "issuer", ISSUER_ID, publish_certid_lists)
        print(f"queued CertID lists of {count} issue(s) for the exchange")
    return 0
