"""``kabuto outbox list|resend AGENT``: see what an agent has not yet published, and send parked rows again.

A row is parked when the broker could not route it (no queue for its recipient). Resending
gives it back to the agent's relay, which publishes it on its next pass (at once if the agent
runs: the resend notifies it); a row that still cannot be routed is parked again. Running
agents also retry parked rows by themselves every ``KABUTO_PARKED_RETRY_INTERVAL`` seconds.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import typer

from agents import render
from agents.cli_runtime import run
from broker import parked
from broker.db import agent_pool
from broker.settings import AgentId, Settings

app = typer.Typer(help="An agent's unpublished and parked outbox rows.", no_args_is_help=True)
Agent = Annotated[AgentId, typer.Argument(help="the agent", show_default=False)]


@app.command("list")
def listing(
    agent: Agent,
    parked_only: Annotated[bool, typer.Option("--parked", help="only the parked (unroutable) rows")] = False,
    limit: Annotated[int, typer.Option(help="list at most this many")] = 100,
) -> None:
    """Rows not yet published, oldest first."""

    async def body(settings: Settings) -> None:
        async with agent_pool(settings.database_url, agent, max_size=1) as pool:
            rows = await parked.listing(pool, parked_only=parked_only, limit=limit)
        print(
            render.table(
                ["seq", "message id", "type", "to", "created", "state", "error"],
                [[r.seq, r.message_id, r.message_type, r.routing_key, r.created_at, r.state, r.error] for r in rows],
                indent="",
            )
        )

    run(body)


@app.command()
def resend(
    agent: Agent,
    message_id: Annotated[UUID | None, typer.Argument(help="one row (default: every parked row)")] = None,
) -> None:
    """Give parked rows back to the relay."""

    async def body(settings: Settings) -> int:
        async with agent_pool(settings.database_url, agent, max_size=1) as pool, pool.acquire() as connection:
            count = await parked.unpark(connection, agent, message_id)
        if message_id is not None and count == 0:
            print(f"no parked row {message_id} in the {agent} outbox")
            return 1
        print(f"{count} parked row(s) handed back to the {agent} relay")
        return 0

    run(body)
