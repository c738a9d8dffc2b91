"""Reconciliation: does the exchange's CertID list equal the issuer's shareholder register?

An operator's check across two agents, so it reads each agent's schema through that agent's
own role (no agent reads another's books). Every difference is named: a CertID valid at the
issuer but not listed, listed but not valid at the issuer, or listed with another holder or
share count. A CertID the exchange holds back in name transfer is reported as such, since
it is expected to differ until the issuer answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import asyncpg

from broker.db import agent_pool
from broker.settings import Settings


@dataclass(frozen=True, slots=True)
class Difference:
    issue_code: str
    cert_id: UUID
    kind: str
    issuer: str
    exchange: str


async def _fetch(settings: Settings, agent: str, sql: str, issue_code: str | None) -> list[asyncpg.Record]:
    async with agent_pool(settings.database_url, agent, max_size=1) as pool:
        rows: list[asyncpg.Record] = await pool.fetch(sql, issue_code)
        return rows


async def differences(settings: Settings, issue_code: str | None = None) -> list[Difference]:
    register = await _fetch(
        settings,
        "issuer",
        "SELECT cert_id, issue_code, holder_user_id AS holder, shares FROM register "
        "WHERE status = 'valid' AND ($1::text IS NULL OR issue_code = $1)",
        issue_code,
    )
    listed = await _fetch(
        settings,
        "exchange",
        "SELECT cert_id, issue_code, user_id AS holder, shares, status FROM certid_list "
        "WHERE status <> 'retired' AND ($1::text IS NULL OR issue_code = $1)",
        issue_code,
    )
    return compare({r["cert_id"]: r for r in register}, {r["cert_id"]: r for r in listed})


def compare(register: dict[UUID, asyncpg.Record], listed: dict[UUID, asyncpg.Record]) -> list[Difference]:
    found = []
    for cert_id in sorted(register.keys() | listed.keys(), key=str):
        mine, theirs = register.get(cert_id), listed.get(cert_id)
        issue = (mine or theirs)["issue_code"]  # type: ignore[index]
        if theirs is None:
            found.append(Difference(issue, cert_id, "not listed at the exchange", _who(mine), "—"))
        elif mine is None:
            kind = (
                "in name transfer at the exchange" if theirs["status"] == "in_transfer" else "not valid at the issuer"
            )
            found.append(Difference(issue, cert_id, kind, "—", _who(theirs)))
        elif (mine["holder"], mine["shares"]) != (theirs["holder"], theirs["shares"]) or theirs["status"] != "valid":
            found.append(
                Difference(issue, cert_id, f"differs ({theirs['status']} at the exchange)", _who(mine), _who(theirs))
            )
    return found


def _who(row: asyncpg.Record | None) -> str:
    return "—" if row is None else f"{row['holder']} × {row['shares']}"
