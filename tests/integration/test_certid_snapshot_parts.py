"""The issuer's full CertID list in parts, applied by the exchange (seed 001 S61–S63; found at
stop 33: one issue's list of some 9,000 certificates was larger than any agent takes, and the
exchange dead-lettered it, so the list never healed). Each part is the whole list for its range
of CertIDs: the exchange retires what a part leaves out of its own range, and nothing else."""

from __future__ import annotations

from uuid import UUID

import pytest

from agents.issuer import domain as issuer_domain
from agents.issuer.app import publish_certid_lists
from broker.settings import Settings
from schemas.identity import ISSUER_ID
from tests import support
from tests.integration.test_trading_paths import issue


async def lists_sent(issuer: support.AgentRuntime) -> int:
    rows = await support.rows(
        issuer, "SELECT count(*) AS n FROM outbox_messages WHERE message_type = 'certid_list.updated'"
    )
    return int(rows[0]["n"])


async def valid_at_the_exchange(exchange: support.AgentRuntime) -> set[UUID]:
    rows = await support.rows(exchange, "SELECT cert_id FROM certid_list WHERE status = 'valid'")
    return {UUID(str(r["cert_id"])) for r in rows}


async def test_a_snapshot_in_parts_retires_what_each_part_leaves_out_of_its_own_range(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(issuer_domain, "SNAPSHOT_PART", 2)
    async with support.agents(settings, "investor", "issuer", "exchange") as rt:
        await support.open_offering(rt["issuer"])
        await support.list_issue(rt["exchange"])
        certs = sorted([await issue(rt, "alice", 100) for _ in range(5)])
        # CertIDs the exchange holds valid though the issuer never had them (a change it missed):
        # one inside the second part's range, one above the last CertID
        inside, above = UUID(int=(certs[2].int + certs[3].int) // 2), UUID(int=2**128 - 1)
        for ghost in (inside, above):
            await support.rows(
                rt["exchange"],
                "INSERT INTO certid_list (cert_id, issue_code, user_id, shares, status, version) "
                "VALUES ($1, $2, 'alice', 100, 'valid', 1)",
                ghost,
                support.ISSUE,
            )
        assert await valid_at_the_exchange(rt["exchange"]) == {*certs, inside, above}

        changes = await lists_sent(rt["issuer"])  # one a certificate issued
        assert await rt["issuer"].command(ISSUER_ID, publish_certid_lists) == 1  # one issue
        assert await lists_sent(rt["issuer"]) - changes == 3  # its snapshot in parts of 2 + 2 + 1 CertIDs

        async def healed() -> bool:
            return await valid_at_the_exchange(rt["exchange"]) == set(certs)

        await support.eventually(healed)
        ghosts = await support.rows(
            rt["exchange"], "SELECT status FROM certid_list WHERE cert_id = ANY($1::uuid[])", [inside, above]
        )
        assert [g["status"] for g in ghosts] == ["retired", "retired"]
