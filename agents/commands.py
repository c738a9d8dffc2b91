"""The ``kabuto`` sub-commands: each reads what it needs, does one thing, prints for people."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import date
from uuid import UUID

from agents import demo as demo_scenario
from agents import render
from agents.exchange import repo as exchange_repo
from agents.investor import repo as investor_repo
from agents.investor.app import IssuanceOrder, request_certificates, verified_wallet
from agents.issuer import repo as issuer_repo
from agents.issuer.app import publish_certid_lists
from agents.issuer.domain import Offering
from broker import ops
from broker.catalogue import asyncapi
from broker.context import Context
from broker.db import agent_pool
from broker.migrate import migrate as apply_migrations
from broker.pki import KeyStore, default_participant
from broker.runtime import execute
from broker.settings import AGENT_IDS, Settings
from broker.stock_certificates import CertificateInvalid
from broker.trust import TrustStore
from schemas.certificates import ShareClass
from schemas.identity import ISSUER_ID, Participant, Role
from schemas.issuance import DividendDelivery, DividendMethod


async def migrate(args: argparse.Namespace, settings: Settings) -> int:
    from agents.cli import MIGRATIONS

    applied = await apply_migrations(settings.database_url, args.dir or MIGRATIONS)
    print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
    return 0


async def ca(args: argparse.Namespace, settings: Settings) -> int:
    keys = KeyStore(settings.key_dir)
    if args.ca_command == "init":
        authority, created = keys.init_ca()
        print(
            ("created" if created else "kept existing")
            + f" CA {authority.certificate.subject.rfc4514_string()}"
            f" in {keys.root}"
        )
    elif args.ca_command == "enrol":
        participant = default_participant(args.user_id, Role(args.role), args.limit)
        if participant.policy and args.allow_short_selling:
            participant = participant.model_copy(
                update={"policy": participant.policy.model_copy(update={"short_selling_prohibited": False})}
            )
        _enrol(keys, participant, renew=args.renew)
    elif args.ca_command == "enrol-all":
        for agent in AGENT_IDS:
            if agent != "investor":
                _enrol(keys, default_participant(agent, Role(agent)))
        for investor in settings.investors:
            _enrol(keys, default_participant(investor, Role.INVESTOR))
    elif args.ca_command == "show":
        identity = keys.load_identity(args.user_id)
        cert = identity.certificate
        print(
            f"subject      {cert.subject.rfc4514_string()}\nissuer       {cert.issuer.rfc4514_string()}"
            f"\nserial       {cert.serial_number:x}\nvalid        {cert.not_valid_before_utc} → "
            f"{cert.not_valid_after_utc}\nfingerprint  {identity.fingerprint}"
            f"\nparticipant  {identity.participant.model_dump_json()}"
        )
    return 0


def _enrol(keys: KeyStore, participant: Participant, *, renew: bool = False) -> None:
    identity, created = keys.enrol(participant, renew=renew)
    print(
        f"{'enrolled' if created else 'kept'} {identity.user_id} ({participant.role.value}) "
        f"{identity.fingerprint[:16]}…"
    )


async def demo(args: argparse.Namespace, settings: Settings) -> int:
    await demo_scenario.run(settings)
    return 0


async def status(args: argparse.Namespace, settings: Settings) -> int:
    rows = await ops.status(settings, AGENT_IDS)
    print(
        render.table(
            ["agent", "inbox", "consumers", "dead letters", "outbox pending", "outbox failed", "outbox lag"],
            [
                [
                    s.agent,
                    s.inbox_messages,
                    s.consumers,
                    s.dead_letters,
                    s.outbox_pending,
                    s.outbox_failed,
                    s.outbox_lag,
                ]
                for s in rows
            ],
            indent="",
        )
    )
    return 0


async def dead_letters(args: argparse.Namespace, settings: Settings) -> int:
    if args.replay:
        found = await ops.replay(settings, args.agent, args.replay)
        print("replayed" if found else f"no dead letter {args.replay} for {args.agent}")
        return 0 if found else 1
    letters = await ops.dead_letters(settings, args.agent)
    if args.show:
        for letter in letters:
            if letter.message_id == args.show:
                print(
                    json.dumps(
                        {
                            "headers": {k: str(v) for k, v in letter.headers.items()},
                            "body": letter.body.decode(errors="replace"),
                        },
                        indent=2,
                    )
                )
                return 0
        print(f"no dead letter {args.show} for {args.agent}")
        return 1
    print(
        render.table(
            ["message id", "type", "kind", "reason", "detail", "when"],
            [[d.message_id, d.type, d.kind, d.reason, d.detail[:60], d.dead_lettered_at] for d in letters],
            indent="",
        )
    )
    return 0


async def catalogue(args: argparse.Namespace, settings: Settings) -> int:
    print(json.dumps(asyncapi(settings.namespace), indent=2))
    return 0


async def _as(settings: Settings, agent: str, user_id: str, action):  # type: ignore[no-untyped-def]
    """Run a command as a participant against the agent's own schema (no broker needed)."""
    keys = KeyStore(settings.key_dir)
    identity = keys.load_identity(user_id)
    trust = TrustStore(keys.ca_certificate(), keys.certificates())
    async with agent_pool(settings.database_url, agent, max_size=1) as pool:
        from datetime import UTC, datetime

        return await execute(pool, agent, identity, trust, action, datetime.now(UTC))


async def issuer(args: argparse.Namespace, settings: Settings) -> int:
    if args.issuer_command == "offer":
        offering = Offering(
            issue_code=args.issue_code,
            company_name=args.company,
            incorporated_on=date.fromisoformat(args.incorporated),
            share_class=ShareClass(args.share_class),
            offer_price=args.price,
            shares_offered=args.shares,
            shares_remaining=args.shares,
            minimum_lot=args.lot,
            par_value_per_share=args.par_value,
        )
        await _as(
            settings, "issuer", ISSUER_ID, lambda ctx: issuer_repo.open_offering(ctx.connection, offering)
        )
        print(f"opened offering {offering.issue_code}")
    elif args.issuer_command == "register":
        rows = await _as(
            settings,
            "issuer",
            ISSUER_ID,
            lambda ctx: issuer_repo.register_rows(ctx.connection, args.issue_code),
        )
        print(
            render.table(
                list(rows[0].keys()) if rows else ["register"], [list(r.values()) for r in rows], indent=""
            )
        )
    elif args.issuer_command == "offerings":
        offerings = await _as(
            settings, "issuer", ISSUER_ID, lambda ctx: issuer_repo.offerings(ctx.connection)
        )
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
    elif args.issuer_command == "publish-certid-list":
        count = await _as(settings, "issuer", ISSUER_ID, publish_certid_lists)
        print(f"queued CertID lists of {count} issue(s) for the exchange")
    return 0


async def investor(args: argparse.Namespace, settings: Settings) -> int:
    if args.investor_command == "request-certificates":
        order = IssuanceOrder(
            issue_code=args.issue_code,
            share_class=ShareClass(args.share_class),
            shares=args.shares,
            holder_name=args.name,
            holder_address=args.address,
            dividend_delivery=DividendDelivery(
                method=DividendMethod.SETTLEMENT_ACCOUNT, account=args.dividend_account
            ),
        )
        request_id: UUID = await _as(settings, "investor", args.user, request_certificates(order))
        print(f"request {request_id} queued; `kabuto investor requests --as {args.user}` shows its outcome")
    elif args.investor_command == "wallet":
        wallet = await _as(settings, "investor", args.user, verified_wallet)
        for item in wallet:
            if isinstance(item, CertificateInvalid):
                print(f"  INVALID certificate: {item.detail}")
            else:
                print(render.certificate(item) + "\n")
        if not wallet:
            print("  (no certificates)")
    elif args.investor_command == "requests":

        async def load(ctx: Context) -> list[investor_repo.Request]:
            return await investor_repo.requests(ctx.connection, args.user)

        reqs = await _as(settings, "investor", args.user, load)
        print(
            render.table(
                ["request", "kind", "issue", "shares", "status", "reason", "CertID"],
                [[r.request_id, r.kind, r.issue_code, r.shares, r.status, r.reason, r.cert_id] for r in reqs],
                indent="",
            )
        )
    return 0


async def exchange(args: argparse.Namespace, settings: Settings) -> int:
    async with agent_pool(settings.database_url, "exchange", max_size=1) as pool:
        async with pool.acquire() as connection:
            entries = await exchange_repo.certid_list(connection, args.issue_code)
    print(
        render.table(
            ["issue", "CertID", "holder", "shares", "status", "version"],
            [[e.issue_code, e.cert_id, e.user_id, e.shares, e.status, e.version] for e in entries],
            indent="",
        )
    )
    return 0


__all__ = ["asyncio"]
