"""``kabuto outbox list|resend AGENT``: see what an agent has not yet published, and send parked rows again.

A row is parked when the broker could not route it (no queue for its recipient). Resending
gives it back to the agent's relay, which publishes it on its next pass (at once if the agent
runs: the resend notifies it); a row that still cannot be routed is parked again. Running
agents also retry parked rows by themselves every ``KABUTO_PARKED_RETRY_INTERVAL`` seconds.
"""

from __future__ import annotations

import argparse
from uuid import UUID

from agents import render
from broker import parked
from broker.db import agent_pool
from broker.settings import AGENT_IDS, Settings


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    outbox = sub.add_parser("outbox", help="an agent's unpublished and parked outbox rows").add_subparsers(
        dest="outbox_command", required=True, metavar="OUTBOX_COMMAND"
    )
    listing = outbox.add_parser("list", help="rows not yet published, oldest first")
    listing.add_argument("agent", choices=AGENT_IDS)
    listing.add_argument("--parked", action="store_true", help="only the parked (unroutable) rows")
    listing.add_argument("--limit", type=int, default=100)
    resend = outbox.add_parser("resend", help="give parked rows back to the relay")
    resend.add_argument("agent", choices=AGENT_IDS)
    resend.add_argument("message_id", nargs="?", type=UUID, help="one row (default: every parked row)")


async def run(args: argparse.Namespace, settings: Settings) -> int:
    async with agent_pool(settings.database_url, args.agent, max_size=1) as pool:
        if args.outbox_command == "list":
            rows = await parked.listing(pool, parked_only=args.parked, limit=args.limit)
            print(
                render.table(
                    ["seq", "message id", "type", "to", "created", "state", "error"],
                    [
                        [r.seq, r.message_id, r.message_type, r.routing_key, r.created_at, r.state, r.error]
                        for r in rows
                    ],
                    indent="",
                )
            )
            return 0
        async with pool.acquire() as connection:
            count = await parked.unpark(connection, args.agent, args.message_id)
    if args.message_id is not None and count == 0:
        print(f"no parked row {args.message_id} in the {args.agent} outbox")
        return 1
    print(f"{count} parked row(s) handed back to the {args.agent} relay")
    return 0
