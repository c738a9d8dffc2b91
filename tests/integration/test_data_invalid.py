"""A handler never crashes into retries on data it did not validate (issue 13, B59–B60).

The issue's case was the brokerage's malformed stored account id, which every later message
about that customer turned into a crash, three retries and ``retries_exhausted``. The
brokerage now refuses such a record (B53); this file proves the consumer's backstop for any
handler: a ``pydantic.ValidationError`` (stored data that fails the wire contract when a reply
is built from it) or an ``asyncpg.DataError`` (data the database refuses) is deterministic,
so it is dead-lettered at once as ``data_invalid``, the handler's writes are rolled back, and
no retry is scheduled. The handlers below are the issuer's own, behind one that does what a
handler reading bad stored data does; the broker and database are real.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from agents.registry import AGENTS
from broker.consumer import Outcome
from broker.context import Context
from broker.errors import Reason
from broker.pki import KeyStore
from broker.runtime import started
from broker.settings import Settings
from schemas.issuance import CertificateIssuanceRefused, CertificateIssuanceRequest, IssuanceRefusal
from tests import support
from tests.integration.refusal_kit import state


async def _reply_from_bad_stored_data(request: CertificateIssuanceRequest, ctx: Context) -> None:
    await ctx.connection.execute("UPDATE offerings SET shares_remaining = shares_remaining - 1")
    stored = await ctx.connection.fetchval("SELECT 'no such reason'::text")
    assert ctx.message_id is not None
    ctx.emit(CertificateIssuanceRefused(request_id=ctx.message_id, reason=stored, detail=""), to=request.user_id)


async def _write_what_the_database_refuses(request: CertificateIssuanceRequest, ctx: Context) -> None:
    await ctx.connection.execute("UPDATE offerings SET shares_remaining = shares_remaining - 1")
    await ctx.connection.fetchval("SELECT $1::text::int", request.holder_name)


Handler = Callable[[Any, Context], Awaitable[None]]


@pytest.mark.parametrize(
    "handler",
    [_reply_from_bad_stored_data, _write_what_the_database_refuses],
    ids=["B59_validation_error_from_stored_data", "B60_database_data_error"],
)
async def test_deterministic_data_failure_is_dead_lettered_as_data_invalid_without_retries(
    settings: Settings, keys: KeyStore, handler: Handler
) -> None:
    issuer = dataclasses.replace(AGENTS["issuer"], handlers={CertificateIssuanceRequest: handler}, background=())
    async with started([issuer], settings) as rt:
        runtime = rt["issuer"]
        await support.open_offering(runtime)
        before = await state(runtime)
        sealed = support.sealed_request(keys.load_identity("alice"))
        await support.publish_sealed(settings, sealed)
        settled = await runtime.outcomes.wait(lambda s: s.outcome is not Outcome.PROCESSED)
        assert (settled.outcome, settled.reason) == (Outcome.DEAD_LETTERED, Reason.DATA_INVALID)
        dead = await support.dead_letter(settings, "issuer")
        assert dead.headers["x-kabuto-reason"] == "data_invalid"
        assert dead.body == sealed.body
        assert runtime.outcomes.count(Outcome.RETRY_SCHEDULED) == 0
        assert await state(runtime) == before  # the handler's update was rolled back


def test_the_refusal_enum_really_refuses_the_stored_value() -> None:
    with pytest.raises(ValueError):
        IssuanceRefusal("no such reason")
