"""The settlement agent's decisions, free of I/O: double-entry postings for cash movements.

Seed 001 §2.5 and §3.7 (R-001-13, R-001-41): the settlement server keeps each investor's
account — deposits, withdrawals, balance — and settles trades between accounts. Here every
movement is an ``Entry`` whose legs sum to zero: a deposit debits the external account money
comes from and credits the customer; a withdrawal does the reverse; a trade's cash leg debits
the buyer and credits the seller (decided with its securities leg in ``instructions``); an
operator's bad command raises an ``AccountError`` and changes nothing.

::

    AccountError (ValueError)    an operator's command refused, nothing changed
    ├── InvalidAccount           a malformed or reserved account id, owner or currency
    ├── AccountExists            the account id is taken
    ├── UnknownAccount           no such customer account
    ├── InvalidAmount            not a positive amount the ledger can hold
    ├── InsufficientFunds        a withdrawal beyond the balance
    └── DuplicateReference       that deposit or withdrawal reference was already posted
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from schemas.identity import SETTLEMENT_ID, is_participant_id
from schemas.settlement import Posting

EXTERNAL_PREFIX = "external:"
DEPOSITS_ACCOUNT = "external:deposits"
# numeric(20, 4): sixteen digits before the point, four after.
MAX_AMOUNT = Decimal(10) ** 16
_ACCOUNT_ID = re.compile(r"^[a-z0-9][a-z0-9:._-]{1,63}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_MAX_REFERENCE = 100


class AccountError(ValueError):
    """An operator's command was refused; nothing was changed."""


class InvalidAccount(AccountError):
    """A malformed or reserved account id, owner or currency."""


class AccountExists(AccountError):
    """An account with that id is already open."""


class UnknownAccount(AccountError):
    """No customer account with that id."""


class InvalidAmount(AccountError):
    """Not a positive amount the ledger can hold in the account's currency."""


class InsufficientFunds(AccountError):
    """A withdrawal beyond the account's balance."""


class DuplicateReference(AccountError):
    """A deposit or withdrawal with that reference was already posted."""


class UnbalancedEntry(ValueError):
    """A programming error: an entry whose legs do not make a valid double entry."""


class AccountKind(StrEnum):
    CUSTOMER = "customer"
    EXTERNAL = "external"
    INSTITUTION = "institution"  # an intermediary's or securities company's own; may run negative


class EntryKind(StrEnum):
    DEPOSIT = "deposit"
    WITHDRAWAL = "withdrawal"
    TRADE = "trade"
    BROKERED = "brokered"


@dataclass(frozen=True, slots=True)
class Account:
    """A settlement account (DB26 record, seed 001 §3.7) with its balance at the time it was read."""

    account_id: str
    owner_user_id: str
    currency: str
    kind: AccountKind = AccountKind.CUSTOMER
    balance: Decimal = Decimal(0)
    # Where the account is held: the settlement agent itself, the intermediary, or a securities company.
    institution: str = "settlement"
    label: str | None = None


@dataclass(frozen=True, slots=True)
class Leg:
    """One posting of an entry: positive credits the account, negative debits it."""

    account_id: str
    amount: Decimal


@dataclass(frozen=True, slots=True)
class Entry:
    """One business event in the ledger; constructing an unbalanced one is refused outright."""

    kind: EntryKind
    reference: str
    description: str
    legs: tuple[Leg, ...]

    def __post_init__(self) -> None:
        accounts = [leg.account_id for leg in self.legs]
        if len(self.legs) < 2 or len(set(accounts)) != len(accounts):
            raise UnbalancedEntry(f"{self.kind} {self.reference}: needs two or more distinct accounts")
        if any(leg.amount == 0 for leg in self.legs):
            raise UnbalancedEntry(f"{self.kind} {self.reference}: a posting of zero")
        if sum(leg.amount for leg in self.legs) != 0:
            raise UnbalancedEntry(f"{self.kind} {self.reference}: postings do not sum to zero")


@dataclass(frozen=True, slots=True)
class Posted:
    """What an operator's deposit or withdrawal did."""

    entry_id: int
    account_id: str
    balance: Decimal


@dataclass(frozen=True, slots=True)
class Statement:
    """An account's state for its owner or an operator (seed 001 unit 28, R-001-43)."""

    account: Account
    deposits: Decimal
    withdrawals: Decimal
    postings: tuple[Posting, ...]


def external_account_id(currency: str) -> str:
    """Where deposits in ``currency`` come from and withdrawals go to."""
    return DEPOSITS_ACCOUNT if currency == "JPY" else f"{DEPOSITS_ACCOUNT}:{currency.lower()}"


def external_account(currency: str) -> Account:
    return Account(external_account_id(currency), SETTLEMENT_ID, currency, AccountKind.EXTERNAL)


def money(amount: Decimal, currency: str) -> str:
    """``1,200,000 JPY``, ``12.5 USD``: for details people read."""
    if amount == amount.to_integral_value():
        return f"{amount:,.0f} {currency}"
    return f"{amount.normalize():,f} {currency}"


# -- operators' commands -----------------------------------------------------------------------


def new_account(
    account_id: str,
    owner_user_id: str,
    currency: str = "JPY",
    *,
    kind: AccountKind = AccountKind.CUSTOMER,
    institution: str = "settlement",
    label: str | None = None,
) -> Account:
    """A customer account to open; raises ``InvalidAccount`` for a bad or reserved id."""
    if not _ACCOUNT_ID.fullmatch(account_id):
        raise InvalidAccount(
            f"account id {account_id!r} must be 2–64 characters: lower-case letters, digits and : . _ -"
        )
    if account_id.startswith(EXTERNAL_PREFIX):
        raise InvalidAccount(f"account ids beginning with {EXTERNAL_PREFIX!r} are the settlement agent's own")
    if not is_participant_id(owner_user_id):
        raise InvalidAccount(f"owner {owner_user_id!r} is not a participant id")
    if not _CURRENCY.fullmatch(currency):
        raise InvalidAccount(f"currency {currency!r} is not a three-letter ISO 4217 code")
    if kind is AccountKind.EXTERNAL:
        raise InvalidAccount("external accounts are the settlement agent's own")
    return Account(account_id, owner_user_id, currency, kind, institution=institution, label=label)


def check_amount(amount: Decimal, currency: str) -> Decimal:
    """A positive amount the ledger can hold: four decimal places at most, whole yen for JPY."""
    if not isinstance(amount, Decimal) or not amount.is_finite() or amount <= 0:
        raise InvalidAmount(f"the amount must be a positive decimal, not {amount!r}")
    if amount >= MAX_AMOUNT:
        raise InvalidAmount(f"{amount} is beyond what an account can hold")
    places = -int(amount.normalize().as_tuple().exponent)
    if places > 4:
        raise InvalidAmount(f"{amount} has more than four decimal places")
    if currency == "JPY" and places > 0:
        raise InvalidAmount(f"{amount} JPY is not a whole number of yen")
    return amount


def check_reference(reference: str) -> str:
    reference = reference.strip()
    if not reference or len(reference) > _MAX_REFERENCE or not reference.isprintable():
        raise AccountError(f"a reference is 1–{_MAX_REFERENCE} printable characters, not {reference!r}")
    return reference


def customer(account: Account | None, account_id: str) -> Account:
    """The account, if it is a customer's; ``UnknownAccount`` otherwise."""
    if account is None or account.kind is not AccountKind.CUSTOMER:
        raise UnknownAccount(f"no customer account {account_id}")
    return account


def deposit(account: Account, amount: Decimal, reference: str) -> Entry:
    """Money arrives from outside: the external account is debited, the customer credited."""
    amount = check_amount(amount, account.currency)
    return _transfer(
        EntryKind.DEPOSIT,
        check_reference(reference),
        f"deposit of {money(amount, account.currency)} to {account.account_id}",
        debit=external_account_id(account.currency),
        credit=account.account_id,
        amount=amount,
    )


def withdrawal(account: Account, amount: Decimal, reference: str, *, held: Decimal = Decimal(0)) -> Entry:
    """Money leaves for outside, never more than what is available: the balance less its holds."""
    amount = check_amount(amount, account.currency)
    available = account.balance - held
    if amount > available:
        raise InsufficientFunds(
            f"{account.account_id} has {money(available, account.currency)} available "
            f"({money(held, account.currency)} held); cannot withdraw {money(amount, account.currency)}"
        )
    return _transfer(
        EntryKind.WITHDRAWAL,
        check_reference(reference),
        f"withdrawal of {money(amount, account.currency)} from {account.account_id}",
        debit=account.account_id,
        credit=external_account_id(account.currency),
        amount=amount,
    )


def _transfer(kind: EntryKind, reference: str, description: str, *, debit: str, credit: str, amount: Decimal) -> Entry:
    return Entry(kind, reference, description, (Leg(debit, -amount), Leg(credit, amount)))


# -- account inquiry ---------------------------------------------------------------------------


def may_inquire(account: Account | None, user_id: str) -> bool:
    """R-001-43: an investor sees its own customer accounts and nothing else."""
    return account is not None and account.kind is AccountKind.CUSTOMER and account.owner_user_id == user_id


def spread_hold(legs: list[tuple[str, Decimal]], available: dict[str, Decimal]) -> list[tuple[str, Decimal]] | None:
    """Seed 002 R-002-33: the selected accounts' balances *together* must cover the allowance.

    Each leg keeps what it asked for as far as its account has it available; what an account
    cannot hold moves to the next accounts, in the order given (highest priority first), as far as
    theirs allow. None if the accounts together do not have the total available.
    """
    total = sum((amount for _, amount in legs), Decimal(0))
    if sum((max(available.get(a, Decimal(0)), Decimal(0)) for a, _ in legs), Decimal(0)) < total:
        return None
    held = {a: min(amount, max(available.get(a, Decimal(0)), Decimal(0))) for a, amount in legs}
    short = total - sum(held.values(), Decimal(0))
    for account, _ in legs:
        extra = min(short, available.get(account, Decimal(0)) - held[account])
        if extra > 0:
            held[account] += extra
            short -= extra
    return [(a, held[a]) for a, _ in legs if held[a] > 0]
