"""Holdings for the credit holder (seed 003 S2000–S2070, S6000–S6050; R-003-21..24): a
client's positions as a statement, and the changes since a cursor as deltas. The cursor is
the client's journal number: numbers are taken under the client's row lock and so commit in
order, and a request from ``next_cursor`` neither skips nor repeats a change."""

from __future__ import annotations

from agents.custody import repo
from broker.context import Context
from schemas.custody import CustodyHoldingsStatement, HoldingsDeltas, HoldingsDeltasRequest, HoldingsStatementRequest


async def on_deltas_request(request: HoldingsDeltasRequest, ctx: Context) -> None:
    assert ctx.sender is not None and ctx.message_id is not None
    found, next_cursor, more = await repo.deltas(
        ctx.connection, request.client, request.cursor, request.custodian, request.limit
    )
    ctx.emit(
        HoldingsDeltas(
            request_id=ctx.message_id,
            client=request.client,
            cursor=request.cursor,
            next_cursor=next_cursor,
            more=more,
            deltas=tuple(found),
        ),
        to=ctx.sender.user_id,
    )


async def statement(ctx: Context, client: str, custodian: str | None) -> CustodyHoldingsStatement:
    assert ctx.message_id is not None
    await repo.lock_clients(ctx.connection, [client])  # the cursor and positions of one moment
    return CustodyHoldingsStatement(
        request_id=ctx.message_id,
        client=client,
        as_of=ctx.now,
        cursor=await repo.last_sequence(ctx.connection, client),
        positions=tuple(await repo.positions(ctx.connection, client, custodian)),
    )


async def on_statement_request(request: HoldingsStatementRequest, ctx: Context) -> None:
    assert ctx.sender is not None
    ctx.emit(await statement(ctx, request.client, request.custodian), to=ctx.sender.user_id)
