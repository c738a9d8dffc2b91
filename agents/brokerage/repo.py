"""SQL for the brokerage's own schema; records never leave this module."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from agents.brokerage.customers import Customer, CustomerAccount
from agents.brokerage.ledger_legs import CompanyAccounts, Design
from schemas.brokerage import TransactionConditions
from schemas.certificates import IssuerSignature, SignedCertificate


async def add_company(
    connection: asyncpg.Connection, company_id: str, name: str, design: Design, accounts: CompanyAccounts
) -> None:
    await connection.execute(
        """INSERT INTO companies (company_id, name, design, clearing, commission, tax, im_account_at_sc, im_cash,
               sc_account_at_im, im_fees) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)""",
        company_id,
        name,
        design.value,
        accounts.clearing,
        accounts.commission,
        accounts.tax,
        accounts.im_account_at_sc,
        accounts.im_cash,
        accounts.sc_account_at_im,
        accounts.im_fees,
    )


@dataclass(frozen=True, slots=True)
class Company:
    company_id: str
    name: str
    design: Design
    accounts: CompanyAccounts


async def company(connection: asyncpg.Connection, company_id: str) -> Company | None:
    row = await connection.fetchrow("SELECT * FROM companies WHERE company_id = $1", company_id)
    if row is None:
        return None
    accounts = CompanyAccounts(
        **{
            k: row[k]
            for k in ("clearing", "commission", "tax", "im_account_at_sc", "im_cash", "sc_account_at_im", "im_fees")
        }
    )
    return Company(row["company_id"], row["name"], Design(row["design"]), accounts)


async def company_ids(connection: asyncpg.Connection) -> list[str]:
    return [r["company_id"] for r in await connection.fetch("SELECT company_id FROM companies ORDER BY company_id")]


async def add_customer(connection: asyncpg.Connection, customer: Customer) -> None:
    await connection.execute(
        """INSERT INTO customers (customer_id, user_id, company_ids, pin_salt, pin_hash, conditions)
           VALUES ($1, $2, $3::jsonb, $4, $5, $6::jsonb)""",
        customer.customer_id,
        customer.user_id,
        json.dumps(customer.company_ids),
        customer.pin_salt,
        customer.pin_hash,
        customer.conditions.model_dump_json(),
    )
    await connection.executemany(
        """INSERT INTO customer_accounts (customer_id, account_id, institution, kind, priority)
           VALUES ($1, $2, $3, $4, $5)""",
        [(customer.customer_id, a.account_id, a.institution, a.kind, a.priority) for a in customer.accounts],
    )


async def customer_of(connection: asyncpg.Connection, user_id: str) -> str | None:
    """The customer id registered for an investor participant, if any."""
    found: str | None = await connection.fetchval("SELECT customer_id FROM customers WHERE user_id = $1", user_id)
    return found


async def add_accounts(connection: asyncpg.Connection, customer_id: str, accounts: Sequence[CustomerAccount]) -> None:
    await connection.executemany(
        """INSERT INTO customer_accounts (customer_id, account_id, institution, kind, priority)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (customer_id, account_id) DO UPDATE SET priority = excluded.priority""",
        [(customer_id, a.account_id, a.institution, a.kind, a.priority) for a in accounts],
    )


async def customer(connection: asyncpg.Connection, customer_id: str) -> Customer | None:
    row = await connection.fetchrow("SELECT * FROM customers WHERE customer_id = $1", customer_id)
    if row is None:
        return None
    accounts = await connection.fetch(
        """SELECT account_id, institution, kind, priority FROM customer_accounts
           WHERE customer_id = $1 ORDER BY priority""",
        customer_id,
    )
    return Customer(
        customer_id=row["customer_id"],
        user_id=row["user_id"],
        pin_salt=row["pin_salt"],
        pin_hash=row["pin_hash"],
        conditions=TransactionConditions.model_validate_json(row["conditions"]),
        accounts=tuple(CustomerAccount(**dict(a)) for a in accounts),
        company_ids=json.loads(row["company_ids"]),
    )


async def set_price(connection: asyncpg.Connection, issue_code: str, reference: Decimal) -> None:
    await connection.execute(
        """INSERT INTO securities (issue_code, reference_price) VALUES ($1, $2)
           ON CONFLICT (issue_code) DO UPDATE SET reference_price = excluded.reference_price""",
        issue_code,
        reference,
    )


async def last_price(connection: asyncpg.Connection, issue_code: str, price: Decimal) -> None:
    await connection.execute("UPDATE securities SET last_price = $2 WHERE issue_code = $1", issue_code, price)


async def securities(connection: asyncpg.Connection) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await connection.fetch("SELECT * FROM securities ORDER BY issue_code")
    return rows


async def reference_price(connection: asyncpg.Connection, issue_code: str) -> Decimal | None:
    price: Decimal | None = await connection.fetchval(
        "SELECT reference_price FROM securities WHERE issue_code = $1", issue_code
    )
    return price


async def positions(connection: asyncpg.Connection, customer_id: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await connection.fetch(
        "SELECT company_id, issue_code, shares FROM positions WHERE customer_id = $1 AND shares > 0 ORDER BY 2, 1",
        customer_id,
    )
    return rows


async def position(connection: asyncpg.Connection, customer_id: str, company_id: str, issue_code: str) -> int:
    shares: int | None = await connection.fetchval(
        "SELECT shares FROM positions WHERE customer_id = $1 AND company_id = $2 AND issue_code = $3",
        customer_id,
        company_id,
        issue_code,
    )
    return shares or 0


async def move_position(
    connection: asyncpg.Connection, customer_id: str, company_id: str, issue_code: str, shares: int
) -> None:
    """Add to (or, with negative ``shares``, take from) a customer's book-entry position."""
    if shares < 0:  # an INSERT of a negative row would trip the CHECK before ON CONFLICT could apply
        await connection.execute(
            """UPDATE positions SET shares = shares + $4
               WHERE customer_id = $1 AND company_id = $2 AND issue_code = $3""",
            customer_id,
            company_id,
            issue_code,
            shares,
        )
        return
    await connection.execute(
        """INSERT INTO positions (customer_id, company_id, issue_code, shares) VALUES ($1, $2, $3, $4)
           ON CONFLICT (customer_id, company_id, issue_code) DO UPDATE SET shares = positions.shares + $4""",
        customer_id,
        company_id,
        issue_code,
        shares,
    )


async def record_identification(
    connection: asyncpg.Connection, inquiry_id: UUID, request_id: UUID, customer_id: str
) -> None:
    await connection.execute(
        "INSERT INTO identifications (inquiry_id, request_id, customer_id) VALUES ($1, $2, $3)",
        inquiry_id,
        request_id,
        customer_id,
    )


async def identification(connection: asyncpg.Connection, inquiry_id: UUID) -> tuple[UUID, str] | None:
    row = await connection.fetchrow(
        "SELECT request_id, customer_id FROM identifications WHERE inquiry_id = $1", inquiry_id
    )
    return (row["request_id"], row["customer_id"]) if row else None


ORDER_COLUMNS = (
    "order_id",
    "client_order_id",
    "customer_id",
    "user_id",
    "company_id",
    "issue_code",
    "side",
    "order_type",
    "price",
    "quantity",
    "time_in_force",
    "settlement_type",
    "rule",
    "instruction",
    "trial",
    "balances",
    "exchange_order_id",
    "cert_id",
    "acceptance_number",
    "status",
    "cancelled",
    "reason",
    "detail",
    "information",
    "entry_id",
)


async def insert_order(connection: asyncpg.Connection, values: dict[str, Any]) -> bool:
    columns = [c for c in ORDER_COLUMNS if c in values]
    placeholders = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    inserted = await connection.fetchval(
        f"INSERT INTO orders ({', '.join(columns)}) VALUES ({placeholders}) ON CONFLICT DO NOTHING RETURNING true",
        *(values[c] for c in columns),
    )
    return bool(inserted)


async def order(connection: asyncpg.Connection, order_id: UUID) -> dict[str, Any] | None:
    row = await connection.fetchrow("SELECT * FROM orders WHERE order_id = $1 FOR UPDATE", order_id)
    return dict(row) if row else None


async def order_by_exchange_id(connection: asyncpg.Connection, exchange_order_id: str) -> dict[str, Any] | None:
    row = await connection.fetchrow("SELECT * FROM orders WHERE exchange_order_id = $1 FOR UPDATE", exchange_order_id)
    return dict(row) if row else None


async def client_order_used(connection: asyncpg.Connection, user_id: str, client_order_id: str) -> bool:
    return bool(
        await connection.fetchval(
            "SELECT true FROM orders WHERE user_id = $1 AND client_order_id = $2", user_id, client_order_id
        )
    )


async def update_order(connection: asyncpg.Connection, order_id: UUID, **changes: Any) -> None:
    columns = ", ".join(f"{name} = ${i}" for i, name in enumerate(changes, start=2))
    await connection.execute(
        f"UPDATE orders SET {columns}, updated_at = now() WHERE order_id = $1", order_id, *changes.values()
    )


async def record_execution(
    connection: asyncpg.Connection, matching_number: int, order_id: UUID, price: Decimal, quantity: int
) -> bool:
    return bool(
        await connection.fetchval(
            """INSERT INTO executions (matching_number, order_id, price, quantity, status)
           VALUES ($1, $2, $3, $4, 'executed')
           ON CONFLICT DO NOTHING RETURNING true""",
            matching_number,
            order_id,
            price,
            quantity,
        )
    )


async def execution_status(connection: asyncpg.Connection, matching_number: int, status: str) -> None:
    await connection.execute("UPDATE executions SET status = $2 WHERE matching_number = $1", matching_number, status)


async def executions(connection: asyncpg.Connection, order_id: UUID) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await connection.fetch(
        "SELECT matching_number, price, quantity, status FROM executions WHERE order_id = $1 ORDER BY 1", order_id
    )
    return rows


async def keep_certificate(
    connection: asyncpg.Connection, cert_id: UUID, issue_code: str, shares: int, signed: SignedCertificate
) -> None:
    await connection.execute(
        """INSERT INTO nominee_certificates (cert_id, issue_code, shares, content, issuer_signature, issuer_certificate)
           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING""",
        cert_id,
        issue_code,
        shares,
        signed.content,
        signed.issuer_signature.signature,
        signed.issuer_signature.certificate,
    )


async def certificate_for(
    connection: asyncpg.Connection, issue_code: str, shares: int
) -> tuple[UUID, SignedCertificate] | None:
    """The smallest held nominee certificate of ``issue_code`` that covers ``shares``, locked and committed."""
    row = await connection.fetchrow(
        """UPDATE nominee_certificates SET status = 'committed' WHERE cert_id = (
               SELECT cert_id FROM nominee_certificates WHERE issue_code = $1 AND shares >= $2 AND status = 'held'
               ORDER BY shares LIMIT 1 FOR UPDATE)
           RETURNING cert_id, content, issuer_signature, issuer_certificate""",
        issue_code,
        shares,
    )
    if row is None:
        return None
    signed = SignedCertificate(
        content=row["content"],
        issuer_signature=IssuerSignature(certificate=row["issuer_certificate"], signature=row["issuer_signature"]),
    )
    return row["cert_id"], signed


async def certificate_status(connection: asyncpg.Connection, cert_id: UUID, status: str) -> None:
    await connection.execute("UPDATE nominee_certificates SET status = $2 WHERE cert_id = $1", cert_id, status)


async def record_fee(
    connection: asyncpg.Connection, order_id: UUID, company_id: str, fee: Decimal, entry_id: int
) -> None:
    await connection.execute(
        """INSERT INTO fees_received (order_id, company_id, fee, entry_id) VALUES ($1, $2, $3, $4)
           ON CONFLICT DO NOTHING""",
        order_id,
        company_id,
        fee,
        entry_id,
    )


async def replace_accounts(
    connection: asyncpg.Connection, customer_id: str, accounts: Sequence[CustomerAccount]
) -> None:
    await connection.execute("DELETE FROM customer_accounts WHERE customer_id = $1", customer_id)
    await add_accounts(connection, customer_id, accounts)


async def set_pin(connection: asyncpg.Connection, customer_id: str, salt: bytes, digest: bytes) -> None:
    await connection.execute(
        "UPDATE customers SET pin_salt = $2, pin_hash = $3 WHERE customer_id = $1", customer_id, salt, digest
    )
