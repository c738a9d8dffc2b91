"""What must hold after every fault, each failed check classified as lost, duplicated, stuck
or unexpected. The one module to adapt when the trading flow changes.

The suite trades one lot at one price between one seller and one buyer. Trade ``i`` is the
sell order ``s<i>`` and the buy order ``b<i>``; every ``BOOK_ENTRY_EVERY``-th trade is a
book-entry trade between the two's safekeeping accounts at custody (securities leg at
custody), the others sell one of the seller's certificates (securities leg at the issuer).
Both settle delivery versus payment through settlement (docs/dvp.md). After ``trades``
trades: every order is filled (an open order is legitimately resting only while its
counter-order has not arrived), there is one match per trade, each completed and settled
once by one committed attempt, nothing the settlement held is still held (covers, cash
holds, reservations at the issuer and custody, custody locks), no instruction waits without
a reason, the cash moved is ``trades × LOT × PRICE`` with the ledger's total unchanged, the
shares are where the register, the wallets and custody's positions agree, the running totals
of open buys and placed holds equal the sums of their rows, the exchange and settlement agree on
what each standing cover may still draw, no outbox row is pending or parked,
and no queue holds a message — no dead letter, no delivery waiting, no retry pending.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

import asyncpg

from agents.exchange import order_repo, standing_repo
from agents.settlement import funds_repo
from agents.settlement import repo as settlement_repo
from broker import ops
from broker.settings import AGENT_IDS, Settings
from broker.topology import Names, check_ready

SELLER, BUYER, ISSUE, LOT, PRICE = "chaos-seller", "chaos-buyer", "CHAOS", 100, Decimal(1000)
SHOPPER, MERCHANT = "chaos-shopper", "chaos-shop"  # card purchases on credit (chaos.shopping)
CASH_ACCOUNT = {SELLER: "seller", BUYER: "buyer", SHOPPER: "shopper", MERCHANT: "shop"}  # at settlement
SAFEKEEPING = {SELLER: "chaos-seller-sk", BUYER: "chaos-buyer-sk", SHOPPER: "chaos-shopper-sk"}  # at custody
LINE_CASH, CARD_ISSUER_CASH = "credit-line", "card-issuer-cash"  # the credit agent's institutions' accounts
CARD, CARD_LIMIT, PURCHASE = "4000-0700", 50_000, 80_000  # each purchase needs 30,000 of secured credit
BOOK_ENTRY_EVERY = 4


def is_book_entry(trade: int) -> bool:
    return trade % BOOK_ENTRY_EVERY == BOOK_ENTRY_EVERY - 1


def certificate_index(trade: int) -> int:
    """Which of the seller's certificates a certificate trade sells (the trades before it that were)."""
    return trade - trade // BOOK_ENTRY_EVERY


@dataclass(frozen=True, slots=True)
class Trades:
    """The first ``total`` trades, by securities leg."""

    total: int

    @property
    def book_entry(self) -> int:
        return self.total // BOOK_ENTRY_EVERY

    @property
    def certificate(self) -> int:
        return self.total - self.book_entry


class Kind(StrEnum):
    LOST = "lost"
    DUPLICATED = "duplicated"
    STUCK = "stuck"
    UNEXPECTED = "unexpected"


@dataclass(frozen=True, slots=True)
class Anomaly:
    kind: Kind
    check: str
    detail: str


@dataclass(frozen=True, slots=True)
class Market:
    """What the suite set up: certificates issued to the seller, the seller's shares deposited
    at custody (one certificate handed over to it), the buyer's cash deposit, and the shopper's
    shares at custody and cash."""

    certificates: int
    custody_shares: int
    deposit: Decimal
    shopper_shares: int = 10 * LOT
    shopper_deposit: Decimal = Decimal(10_000_000)


def _compare(check: str, found: int | Decimal, expected: int | Decimal, *, short: Kind = Kind.LOST) -> list[Anomaly]:
    if found == expected:
        return []
    kind = Kind.DUPLICATED if found > expected else short
    return [Anomaly(kind, check, f"{found} (expected {expected})")]


async def check(
    connection: asyncpg.Connection, settings: Settings, market: Market, done: int, purchases: int
) -> list[Anomaly]:
    """Every invariant after the first ``done`` trades and ``purchases`` card purchases; an empty
    list means the system is consistent."""
    trades = Trades(done)
    return [
        *await _orders(connection, trades.total),
        *await _matches(connection, trades),
        *await _delivery_versus_payment(connection, trades),
        *await _cash(connection, market, trades.total),
        *await _shares(connection, market, trades.certificate),
        *await _custody(connection, market, trades.book_entry),
        *await _credit(connection, market, purchases),
        *await _standing_covers(connection),
        *await running_totals(connection),
        *await _plumbing(settings),
    ]


async def _standing_covers(connection: asyncpg.Connection) -> list[Anomaly]:
    """The exchange and settlement agree on every live standing cover (docs/dvp.md): what the
    exchange may still draw is what settlement still holds for it — at rest, every trade drawn
    on it is settled at both — and settlement's hold says the same amount."""
    await connection.execute("SET search_path TO exchange")
    try:
        rows = await connection.fetch(
            f"""SELECT s.cover_id, s.status, s.amount - {standing_repo.STANDING_COVER_DRAWN.of("s.cover_id")} AS room,
                       c.unspent, c.status AS held_as,
                       (SELECT h.amount FROM settlement.holds h
                         WHERE h.hold_id = s.cover_id AND h.status = 'placed') AS held
                FROM exchange.standing_covers s LEFT JOIN settlement.covers c ON c.cover_id = s.cover_id
                WHERE s.status IN ('active', 'closing')"""
        )
    finally:
        await connection.execute("RESET search_path")
    found = []
    for r in rows:
        held = r["held"] if r["held"] is not None else Decimal(0)
        if r["unspent"] is None or r["held_as"] != "active" or not r["room"] == r["unspent"] == held:
            seen = f"room {r['room']} at the exchange, unspent {r['unspent']} and held {held} at settlement"
            found.append(Anomaly(Kind.STUCK, f"standing cover {r['cover_id']} ({r['status']})", seen))
    return found


async def _orders(connection: asyncpg.Connection, trades: int) -> list[Anomaly]:
    found = []
    sent = await connection.fetch(
        "SELECT status, count(*) AS n FROM investor.orders WHERE user_id = ANY($1) GROUP BY status", [SELLER, BUYER]
    )
    by_status = {r["status"]: r["n"] for r in sent}
    found += _compare("orders filled at the investor", by_status.pop("filled", 0), 2 * trades)
    for status, n in by_status.items():
        kind = Kind.UNEXPECTED if status in ("rejected", "cancelled") else Kind.STUCK
        found.append(Anomaly(kind, f"investor orders {status}", str(n)))
    accepted = await connection.fetch("SELECT status, count(*) AS n FROM exchange.orders GROUP BY status")
    by_status = {r["status"]: r["n"] for r in accepted}
    found += _compare("orders filled at the exchange", by_status.pop("filled", 0), 2 * trades)
    for status, n in by_status.items():
        found.append(Anomaly(Kind.STUCK if status == "open" else Kind.UNEXPECTED, f"exchange orders {status}", str(n)))
    return found


async def _matches(connection: asyncpg.Connection, trades: Trades) -> list[Anomaly]:
    row = await connection.fetchrow(
        """SELECT count(*) AS matches,
                  count(*) FILTER (WHERE status = 'completed') AS completed,
                  count(*) FILTER (WHERE settled) AS settled,
                  count(*) FILTER (WHERE status = 'failed' OR settled = false) AS failed
           FROM exchange.matches"""
    )
    settlement = await connection.fetchrow(
        """SELECT count(*) AS instructions, count(*) FILTER (WHERE settlement = 'settled') AS settled,
                  (SELECT count(*) FROM settlement.entries WHERE kind = 'trade') AS entries
           FROM settlement.dvp_instructions"""
    )
    transfers = await connection.fetchval("SELECT count(*) FROM issuer.name_transfers WHERE kind = 'exchange'")
    return [
        *_compare("matches", row["matches"], trades.total),
        *_compare("matches completed (both legs)", row["completed"], trades.total),
        *_compare("matches settled", row["settled"], trades.total),
        *([Anomaly(Kind.UNEXPECTED, "matches failed", str(row["failed"]))] if row["failed"] else []),
        *_compare("name transfers on the exchange at the issuer", transfers, trades.certificate),
        *_compare("settlement instructions", settlement["instructions"], trades.total),
        *_compare("settlement instructions settled", settlement["settled"], trades.total),
        *_compare("trade entries in the ledger", settlement["entries"], trades.total),
    ]


async def _delivery_versus_payment(connection: asyncpg.Connection, trades: Trades) -> list[Anomaly]:
    """Each instruction settled once, both legs, and nothing it held still held (docs/dvp.md)."""
    row = await connection.fetchrow(
        """SELECT (SELECT count(*) FROM settlement.dvp_attempts WHERE status = 'committed') AS committed,
                  (SELECT count(*) FROM settlement.dvp_attempts WHERE status IN ('reserving', 'committing'))
                      AS attempts_open,
                  (SELECT count(*) FROM settlement.dvp_instructions
                    WHERE settlement IN ('pending', 'partially_settled') AND reason IS NULL AND NOT in_flight)
                      AS waiting_without_reason,
                  (SELECT count(*) FROM settlement.dvp_instructions WHERE settlement = 'settled'
                    AND (settled_quantity <> quantity OR settled_amount <> amount)) AS settled_short,
                  (SELECT count(*) FROM settlement.dvp_instructions WHERE settlement = 'failed') AS failed,
                  (SELECT count(*) FROM settlement.covers WHERE status = 'active' AND kind = 'order')
                      AS covers_active,
                  (SELECT count(*) FROM settlement.holds WHERE status = 'placed'
                    AND hold_id NOT IN (SELECT cover_id FROM settlement.covers WHERE kind = 'standing'))
                      AS holds_placed,
                  (SELECT count(*) FROM exchange.pending_orders WHERE status = 'awaiting_cover') AS awaiting_cover,
                  (SELECT count(*) FROM exchange.pending_orders WHERE status = 'refused') AS cover_refused,
                  (SELECT count(*) FROM issuer.reservations WHERE status = 'committed') AS issuer_committed,
                  (SELECT count(*) FROM issuer.reservations WHERE status = 'reserved') AS issuer_reserved,
                  (SELECT count(*) FROM custody.reservations WHERE status = 'committed') AS custody_committed,
                  (SELECT count(*) FROM custody.reservations WHERE status = 'reserved') AS custody_reserved,
                  (SELECT count(*) FROM custody.locks WHERE status = 'active') AS custody_locks"""
    )
    found = [
        *_compare("instructions settled by one committed attempt", row["committed"], trades.total),
        *_compare(
            "certificates delivered (issuer reservations committed)", row["issuer_committed"], trades.certificate
        ),
        *_compare(
            "book entries delivered (custody reservations committed)", row["custody_committed"], trades.book_entry
        ),
    ]
    stuck = {
        "settlement attempts reserving or committing": row["attempts_open"],
        "instructions pending with no reason": row["waiting_without_reason"],
        "buy covers still active": row["covers_active"],
        "cash holds still placed (covers, earmarks)": row["holds_placed"],
        "buy orders awaiting cover at the exchange": row["awaiting_cover"],
        "certificates still reserved at the issuer": row["issuer_reserved"],
        "positions still reserved at custody": row["custody_reserved"],
        "custody locks still active": row["custody_locks"],
    }
    unexpected = {
        "instructions settled for less than traded": row["settled_short"],
        "instructions failed": row["failed"],
        "buy orders refused cover": row["cover_refused"],
    }
    found += [Anomaly(Kind.STUCK, check, str(n)) for check, n in stuck.items() if n]
    found += [Anomaly(Kind.UNEXPECTED, check, str(n)) for check, n in unexpected.items() if n]
    return found


async def _cash(connection: asyncpg.Connection, market: Market, trades: int) -> list[Anomaly]:
    balances = {
        r["owner_user_id"]: r["balance"]
        for r in await connection.fetch(
            """SELECT a.owner_user_id, coalesce(sum(p.amount), 0) AS balance
               FROM settlement.accounts a LEFT JOIN settlement.postings p USING (account_id)
               WHERE a.owner_user_id = ANY($1) GROUP BY a.owner_user_id""",
            [SELLER, BUYER],
        )
    }
    moved = trades * LOT * PRICE
    seller, buyer = balances.get(SELLER, Decimal(0)), balances.get(BUYER, Decimal(0))
    found = _compare("cash received by the seller", seller, moved)
    found += _compare("cash paid by the buyer", market.deposit - buyer, moved)
    if seller + buyer != market.deposit:
        found.append(Anomaly(Kind.UNEXPECTED, "cash conserved", f"{seller + buyer} (expected {market.deposit})"))
    return found


async def _shares(connection: asyncpg.Connection, market: Market, trades: int) -> list[Anomaly]:
    """The certificate trades' shares: where the issuer's register and the wallets say."""
    register = {
        r["holder_user_id"]: r["shares"]
        for r in await connection.fetch(
            """SELECT holder_user_id, sum(shares) AS shares FROM issuer.register
               WHERE issue_code = $1 AND status = 'valid' GROUP BY holder_user_id""",
            ISSUE,
        )
    }
    wallet = {
        r["holder_user_id"]: r["shares"]
        for r in await connection.fetch(
            """SELECT holder_user_id, sum(shares) AS shares FROM investor.wallet
               WHERE issue_code = $1 AND status = 'held' GROUP BY holder_user_id""",
            ISSUE,
        )
    }
    total = market.certificates * LOT
    found = []
    issued = total + market.custody_shares + market.shopper_shares
    if sum(register.values()) != issued:
        found.append(Anomaly(Kind.UNEXPECTED, "shares conserved", f"{sum(register.values())} (expected {issued})"))
    at_custody = market.custody_shares + market.shopper_shares
    found += _compare("shares registered to custody", register.get("custody", 0), at_custody)
    found += _compare("shares registered to the buyer", register.get(BUYER, 0), trades * LOT)
    found += _compare("shares in the buyer's wallet", wallet.get(BUYER, 0), trades * LOT)
    found += _compare("shares left registered to the seller", register.get(SELLER, 0), total - trades * LOT)
    found += _compare("shares left in the seller's wallet", wallet.get(SELLER, 0), total - trades * LOT)
    return found


async def _custody(connection: asyncpg.Connection, market: Market, trades: int) -> list[Anomaly]:
    """The book-entry trades' shares: moved between the two safekeeping accounts, none in transit."""
    rows = await connection.fetch(
        """SELECT account_id, available, locked, pending_delivery, pending_receipt FROM custody.positions
           WHERE issue_code = $1""",
        ISSUE,
    )
    positions = {r["account_id"]: r for r in rows}
    available = {user: positions[a]["available"] if a in positions else 0 for user, a in SAFEKEEPING.items()}
    found = []
    held, deposited = sum(r["available"] for r in rows), market.custody_shares + market.shopper_shares
    if held != deposited:
        found.append(Anomaly(Kind.UNEXPECTED, "custody shares conserved", f"{held} (expected {deposited})"))
    found += _compare("book-entry shares in the buyer's account", available[BUYER], trades * LOT)
    found += _compare("book-entry shares left in the seller's", available[SELLER], market.custody_shares - trades * LOT)
    found += _compare("the shopper's shares free again", available[SHOPPER], market.shopper_shares)
    in_transit = sum(r["locked"] + r["pending_delivery"] + r["pending_receipt"] for r in rows)
    if in_transit:
        found.append(Anomaly(Kind.STUCK, "custody shares locked or pending", str(in_transit)))
    return found


async def _credit(connection: asyncpg.Connection, market: Market, purchases: int) -> list[Anomaly]:
    """Every purchase approved, captured, repaid once and its collateral released; the merchant
    paid, the shopper charged, the card issuer's and the line's accounts back at zero."""
    found: list[Anomaly] = []
    finished = {"authorisations": "repaid", "obligations": "repaid", "repayments": "succeeded"}
    unfinished = {"awaiting_line", "approved", "captured", "refreshing", "locking", "requested"}
    for table, done in finished.items():
        rows = await connection.fetch(f"SELECT status, count(*) AS n FROM credit.{table} GROUP BY status")
        by_status = {r["status"]: r["n"] for r in rows}
        found += _compare(f"credit {table} {done}", by_status.pop(done, 0), purchases)
        for status, n in by_status.items():
            kind = Kind.STUCK if status in unfinished else Kind.UNEXPECTED
            found.append(Anomaly(kind, f"credit {table} {status}", str(n)))
    collateral = await connection.fetch("SELECT status, count(*) AS n FROM credit.collateral GROUP BY status")
    for row in collateral:
        if row["status"] != "released":
            kind = Kind.STUCK if row["status"] in ("requested", "placed", "releasing") else Kind.UNEXPECTED
            found.append(Anomaly(kind, f"credit collateral {row['status']}", str(row["n"])))
    if purchases and not any(r["status"] == "released" for r in collateral):
        found.append(Anomaly(Kind.LOST, "credit collateral released", "none (every purchase locks some)"))
    used = await connection.fetchval("SELECT outstanding FROM credit.card_accounts WHERE card_number = $1", CARD)
    found += _compare("the card's limit in use", used or 0, 0)
    balances = await _balances(connection, [CASH_ACCOUNT[SHOPPER], CASH_ACCOUNT[MERCHANT], CARD_ISSUER_CASH, LINE_CASH])
    spent = purchases * PURCHASE
    found += _compare("cash the merchant was paid", balances[CASH_ACCOUNT[MERCHANT]], spent)
    found += _compare("cash the shopper repaid", market.shopper_deposit - balances[CASH_ACCOUNT[SHOPPER]], spent)
    found += _compare("the card issuer's account", balances[CARD_ISSUER_CASH], 0)
    found += _compare("the line's account", balances[LINE_CASH], 0)
    return found


async def _balances(connection: asyncpg.Connection, accounts: list[str]) -> dict[str, Decimal]:
    rows = await connection.fetch(
        """SELECT a.account_id, coalesce(sum(p.amount), 0) AS balance
           FROM settlement.accounts a LEFT JOIN settlement.postings p USING (account_id)
           WHERE a.account_id = ANY($1) GROUP BY a.account_id""",
        accounts,
    )
    found = {r["account_id"]: r["balance"] for r in rows}
    return {account: found.get(account, Decimal(0)) for account in accounts}


async def running_totals(connection: asyncpg.Connection) -> list[Anomaly]:
    """The totals kept beside their rows (migrations 0068, 0070, 0072) still equal the sums of those rows."""
    found = []
    drifts = (
        ("exchange", order_repo.exposure_drift),
        ("exchange", standing_repo.drawn_drift),
        ("settlement", funds_repo.held_drift),
        ("settlement", settlement_repo.balance_drift),
    )
    for schema, drift in drifts:
        await connection.execute(f"SET search_path TO {schema}")
        for key, kept, summed in await drift(connection):
            found.append(Anomaly(Kind.UNEXPECTED, f"{schema} running total of {key}", f"{kept} (rows: {summed})"))
    await connection.execute("RESET search_path")
    return found


async def _plumbing(settings: Settings) -> list[Anomaly]:
    found = []
    for status in await ops.status(settings, AGENT_IDS):
        if status.outbox_pending:
            found.append(Anomaly(Kind.STUCK, f"{status.agent} outbox pending", str(status.outbox_pending)))
        if status.outbox_failed:
            found.append(Anomaly(Kind.UNEXPECTED, f"{status.agent} outbox parked", str(status.outbox_failed)))
        if status.inbox_messages:
            found.append(Anomaly(Kind.STUCK, f"{status.agent} inbox backlog", str(status.inbox_messages)))
        if status.answers_messages:
            found.append(Anomaly(Kind.STUCK, f"{status.agent} answers backlog", str(status.answers_messages)))
        if status.dead_letters:
            found.append(Anomaly(Kind.UNEXPECTED, f"{status.agent} dead letters", str(status.dead_letters)))
        if status.consumers != 1:
            found.append(Anomaly(Kind.STUCK, f"{status.agent} consumers", f"{status.consumers} (expected 1)"))
    found += await _retries_waiting(settings)
    return found


async def _retries_waiting(settings: Settings) -> list[Anomaly]:
    import aio_pika

    names = Names(settings.namespace)
    delays = [names.delay(a, d) for a in AGENT_IDS for d in settings.retry_delays_ms]
    connection = await aio_pika.connect(settings.amqp_url, timeout=10)
    try:
        queues = await check_ready(connection, delays, timeout=10)
    finally:
        await connection.close()
    return [Anomaly(Kind.STUCK, f"{name} retries waiting", str(n)) for name, (n, _) in queues.items() if n]


def tally(anomalies: Sequence[Anomaly]) -> dict[Kind, int]:
    return {kind: sum(1 for a in anomalies if a.kind is kind) for kind in Kind}
