"""Customers of the brokerage and their personal authentication (seed 002 R-002-06), free of I/O.

A PIN is kept only as a salted scrypt hash and compared in constant time. A customer's
available accounts and transaction conditions decide what an order may use and do
(seed 000 claims 2 and 4, seed 002 R-002-13/14).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import TypeAdapter, ValidationError

from schemas.brokerage import (
    AvailableAccount,
    BrokerageRefusal,
    CompanyId,
    CustomerId,
    FundingLeg,
    TransactionConditions,
)
from schemas.money import AccountId
from schemas.trading import OrderType, Side

_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
INSTITUTION_KINDS = ("bank", "fund")


def hash_pin(pin: str, salt: bytes | None = None) -> tuple[bytes, bytes]:
    salt = salt or os.urandom(16)
    return salt, hashlib.scrypt(pin.encode(), salt=salt, **_SCRYPT)


def pin_matches(pin: str, salt: bytes, expected: bytes) -> bool:
    return hmac.compare_digest(hash_pin(pin, salt)[1], expected)


@dataclass(frozen=True, slots=True)
class CustomerAccount:
    account_id: str
    institution: str  # 'intermediary' or a securities company id
    kind: str  # 'bank' or 'fund'
    priority: int

    def selectable_for(self, company: str) -> bool:
        """R-002-14: accounts at the intermediary, or at the company the order goes through."""
        return self.institution in ("intermediary", company)

    @property
    def at_intermediary(self) -> bool:
        return self.institution == "intermediary"


@dataclass(frozen=True, slots=True)
class Customer:
    customer_id: str
    user_id: str
    pin_salt: bytes
    pin_hash: bytes
    conditions: TransactionConditions
    accounts: tuple[CustomerAccount, ...] = field(default=())
    company_ids: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Refused(Exception):
    reason: BrokerageRefusal
    detail: str


async def authenticate(customer: Customer | None, customer_id: str, pin: str, signer: str) -> Customer:
    """R-002-06: the customer id and PIN correspond, and the terminal signing is this customer's.

    The PIN's scrypt, about 60 ms of CPU by design, runs in a worker thread: hashlib's scrypt
    releases the GIL, so the agent's loop serves its other deliveries, answers and heartbeats
    meanwhile, where it stalled for every identification and brokered order.
    """
    if customer is None:
        raise Refused(BrokerageRefusal.UNKNOWN_CUSTOMER, f"no customer {customer_id}")
    if customer.user_id != signer:
        raise Refused(BrokerageRefusal.NOT_YOUR_CUSTOMER_ID, f"customer {customer_id} is not {signer}")
    if not await asyncio.to_thread(pin_matches, pin, customer.pin_salt, customer.pin_hash):
        raise Refused(BrokerageRefusal.AUTHENTICATION_FAILED, "the personal authentication does not match")
    check_record(customer)
    return customer


def check_conditions(customer: Customer, issue_code: str, side: Side, order_type: OrderType) -> None:
    """Seed 000 claim 2: relay only what the customer's transaction conditions allow."""
    conditions = customer.conditions
    if conditions.allowed_issues and issue_code not in conditions.allowed_issues:
        raise Refused(BrokerageRefusal.INSTRUMENT_NOT_ALLOWED, f"{issue_code} is not in the customer's conditions")
    if order_type not in conditions.allowed_order_types:
        raise Refused(BrokerageRefusal.ORDER_TYPE_NOT_ALLOWED, f"{order_type.value} orders are not allowed")
    if side not in conditions.allowed_sides:
        raise Refused(BrokerageRefusal.SIDE_NOT_ALLOWED, f"{side.value} orders are not allowed")


def check_funding(customer: Customer, company: str, funding: Sequence[FundingLeg]) -> dict[str, CustomerAccount]:
    """Every indicated account is one of the customer's, usable with this company (R-002-13/14/17)."""
    accounts = {a.account_id: a for a in customer.accounts}
    for leg in funding:
        account = accounts.get(leg.account)
        if account is None or not account.selectable_for(company):
            raise Refused(
                BrokerageRefusal.ACCOUNT_NOT_AVAILABLE,
                f"{leg.account} is not an account of {customer.customer_id} usable with {company}",
            )
    if len({leg.account for leg in funding}) != len(funding):
        raise Refused(BrokerageRefusal.ACCOUNT_NOT_AVAILABLE, "an account is indicated twice")
    return {leg.account: accounts[leg.account] for leg in funding}


def available_accounts(customer: Customer, companies: Sequence[str]) -> list[AvailableAccount]:
    """Seed 000 claim 4: the customer's accounts, best priority first, and which companies each serves."""
    return [
        AvailableAccount(
            account=a.account_id,
            institution=a.institution,
            kind=a.kind,
            priority=a.priority,
            selectable_for=tuple(c for c in companies if a.selectable_for(c)),
        )
        for a in sorted(customer.accounts, key=lambda a: a.priority)
    ]


_ACCOUNT_ID = TypeAdapter(AccountId)
_COMPANY_ID = TypeAdapter(CompanyId)
_CUSTOMER_ID = TypeAdapter(CustomerId)


def record_problems(customer_id: str, accounts: Sequence[CustomerAccount]) -> list[str]:
    """What is wrong with a customer record, each said so an operator can correct it (issue 10).

    The account ids must be ones settlement can be asked about (``schemas.money.AccountId``),
    each account held at the intermediary or at a company (a well-formed company id: a customer
    may hold an MRF at a company before the brokerage contracts with it; such an account is not
    selectable until then), of a known kind, with a distinct priority; an empty list means the
    record can be stored and used.
    """
    problems = [] if _valid(_CUSTOMER_ID, customer_id) else [f"customer id {customer_id!r} is malformed"]
    for a in accounts:
        if not _valid(_ACCOUNT_ID, a.account_id):
            problems.append(f"account id {a.account_id!r} is malformed (lower-case letters, digits and :._- only)")
        if a.institution != "intermediary" and not _valid(_COMPANY_ID, a.institution):
            problems.append(f"{a.account_id} is held at {a.institution!r}: not 'intermediary' nor a company id")
        if a.kind not in INSTITUTION_KINDS:
            problems.append(f"{a.account_id} is of kind {a.kind!r}: not bank or fund")
        if not 1 <= a.priority <= 99:
            problems.append(f"{a.account_id} has priority {a.priority}: not 1–99")
    ids, priorities = [a.account_id for a in accounts], [a.priority for a in accounts]
    if len(set(ids)) != len(ids):
        problems.append("an account is listed twice")
    if len(set(priorities)) != len(priorities):
        problems.append("two accounts have the same priority")
    return problems


def check_record(customer: Customer) -> None:
    """Refuse, with a reason, to act on a stored record that could not be used (one stored before validation)."""
    malformed = [
        a.account_id
        for a in customer.accounts
        if not _valid(_ACCOUNT_ID, a.account_id) or a.kind not in INSTITUTION_KINDS
    ]
    if malformed:
        raise Refused(
            BrokerageRefusal.CUSTOMER_RECORD_INVALID,
            f"customer {customer.customer_id} has malformed account(s) {', '.join(malformed)}; "
            "the brokerage must correct them (`kabuto brokerage customer-update`)",
        )


def _valid(adapter: TypeAdapter[str], value: str) -> bool:
    try:
        adapter.validate_python(value)
    except ValidationError:
        return False
    return True
