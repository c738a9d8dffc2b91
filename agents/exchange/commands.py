"""``kabuto exchange …``: listing issues, the books, the CertID list and the close of day."""

from __future__ import annotations

import argparse

from agents import render
from agents.cli_types import decimal
from agents.exchange import order_repo, prices, repo
from agents.exchange.trading import end_of_day
from broker.runtime import run_as
from broker.settings import Settings
from schemas.certificates import ShareClass
from schemas.identity import EXCHANGE_ID
from schemas.trading import Side


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ex = sub.add_parser("exchange", help="the exchange's books").add_subparsers(
        dest="exchange_command", required=True, metavar="EXCHANGE_COMMAND"
    )
    listing = ex.add_parser("list", help="list an issue for trading, or set its reference price")
    listing.add_argument("issue_code")
    listing.add_argument("--reference-price", type=decimal, required=True, help="for the daily price limit")
    listing.add_argument("--class", dest="share_class", default="common", choices=[c.value for c in ShareClass])
    book = ex.add_parser("book", help="the open orders of an issue, best first")
    book.add_argument("issue_code")
    cl = ex.add_parser("certid-list", help="the CertID list")
    cl.add_argument("issue_code", nargs="?")
    ex.add_parser("matches", help="the order matching list and each trade's transfer and settlement")
    ex.add_parser("end-of-day", help="expire the DAY orders still open")


async def run(args: argparse.Namespace, settings: Settings) -> int:
    match args.exchange_command:
        case "list":
            await run_as(
                settings,
                "exchange",
                EXCHANGE_ID,
                prices.listed(args.issue_code, args.share_class, args.reference_price),
            )
            print(f"listed {args.issue_code} with reference price {args.reference_price}")
        case "book":
            book = await run_as(
                settings,
                "exchange",
                EXCHANGE_ID,
                lambda ctx: order_repo.load_book(ctx.connection, args.issue_code),
            )
            rows = [
                [o.side.value, o.price, o.remaining, o.acceptance_number, o.user_id]
                for side in (Side.BUY, Side.SELL)
                for o in book.resting(side)
            ]
            print(render.table(["side", "price", "open", "OAN", "user"], rows, indent=""))
        case "certid-list":
            entries = await run_as(
                settings,
                "exchange",
                EXCHANGE_ID,
                lambda ctx: repo.certid_list(ctx.connection, args.issue_code),
            )
            print(
                render.table(
                    ["issue", "CertID", "holder", "shares", "status", "version"],
                    [[e.issue_code, e.cert_id, e.user_id, e.shares, e.status, e.version] for e in entries],
                    indent="",
                )
            )
        case "matches":
            matches = await run_as(
                settings, "exchange", EXCHANGE_ID, lambda ctx: order_repo.matching_list(ctx.connection)
            )
            print(
                render.table(
                    list(matches[0]) if matches else ["matches"],
                    [list(m.values()) for m in matches],
                    indent="",
                )
            )
        case "end-of-day":
            count = await run_as(settings, "exchange", EXCHANGE_ID, end_of_day)
            print(f"expired {count} DAY order(s)")
    return 0
