"""The settlement ledger's decisions (seed 001 §2.5, Phase 2F; R-001-13, R-001-41, R-001-43), no services.

Deposits and withdrawals, the checks on operators' input, and the double-entry property over any
sequence of movements, trades included (their decisions are in test_dvp_instructions).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.settlement import domain, instructions
from agents.settlement.domain import Account, AccountKind, Entry, EntryKind, Leg
from tests.unit.test_dvp_instructions import instruction

ALICE = Account("alice-cash", "alice", "JPY", balance=Decimal(1_000_000))
BOB = Account("bob-cash", "bob", "JPY", balance=Decimal(0))


def test_a_deposit_debits_the_external_account_and_credits_the_customer() -> None:
    entry = domain.deposit(BOB, Decimal(5000), " bank-0001 ")
    assert (entry.kind, entry.reference) == (EntryKind.DEPOSIT, "bank-0001")
    assert entry.legs == (Leg("external:deposits", Decimal(-5000)), Leg("bob-cash", Decimal(5000)))


def test_deposits_in_another_currency_come_from_that_currencys_external_account() -> None:
    dollars = Account("bob-usd", "bob", "USD")
    entry = domain.deposit(dollars, Decimal("10.25"), "wire-1")
    assert entry.legs[0] == Leg("external:deposits:usd", Decimal("-10.25"))


def test_a_withdrawal_credits_the_external_account_up_to_the_balance() -> None:
    entry = domain.withdrawal(ALICE, Decimal(1_000_000), "payout-1")
    assert entry.legs == (
        Leg("alice-cash", Decimal(-1_000_000)),
        Leg("external:deposits", Decimal(1_000_000)),
    )


def test_a_withdrawal_beyond_the_balance_is_refused_with_the_balance() -> None:
    with pytest.raises(domain.InsufficientFunds, match=r"has 1,000,000 JPY available .*cannot withdraw 1,000,001 JPY"):
        domain.withdrawal(ALICE, Decimal(1_000_001), "payout-1")


def test_issue_11_a_withdrawal_cannot_take_what_a_hold_protects() -> None:
    with pytest.raises(domain.InsufficientFunds, match=r"400,000 JPY available \(600,000 JPY held\)"):
        domain.withdrawal(ALICE, Decimal(400_001), "payout-2", held=Decimal(600_000))
    entry = domain.withdrawal(ALICE, Decimal(400_000), "payout-3", held=Decimal(600_000))
    assert entry.legs[0] == Leg("alice-cash", Decimal(-400_000))


@pytest.mark.parametrize(
    ("amount", "currency", "message"),
    [
        (Decimal(0), "JPY", "positive"),
        (Decimal(-5), "JPY", "positive"),
        (Decimal("NaN"), "JPY", "positive"),
        (Decimal("Infinity"), "JPY", "positive"),
        (Decimal("0.5"), "JPY", "whole number of yen"),
        (Decimal("1.00001"), "USD", "four decimal places"),
        (Decimal(10) ** 16, "JPY", "beyond"),
    ],
)
def test_an_amount_the_ledger_cannot_hold_is_refused(amount: Decimal, currency: str, message: str) -> None:
    with pytest.raises(domain.InvalidAmount, match=message):
        domain.check_amount(amount, currency)


def test_a_float_amount_is_refused() -> None:
    with pytest.raises(domain.InvalidAmount):
        domain.check_amount(1.5, "USD")  # type: ignore[arg-type]


def test_amounts_with_trailing_zeros_and_cents_are_accepted() -> None:
    assert domain.check_amount(Decimal("1000.0000"), "JPY") == Decimal(1000)
    assert domain.check_amount(Decimal("0.0001"), "USD") == Decimal("0.0001")


@pytest.mark.parametrize("reference", ["", "   ", "x" * 101, "line\nbreak"])
def test_a_reference_must_be_short_printable_text(reference: str) -> None:
    with pytest.raises(domain.AccountError, match="reference"):
        domain.deposit(BOB, Decimal(1), reference)


@pytest.mark.parametrize(
    ("account_id", "owner", "currency", "message"),
    [
        ("A", "alice", "JPY", "must be 2–64 characters"),
        ("alice cash", "alice", "JPY", "must be 2–64 characters"),
        ("external:mine", "alice", "JPY", "settlement agent's own"),
        ("alice-cash", "Alice!", "JPY", "not a participant id"),
        ("alice-cash", "alice", "yen", "ISO 4217"),
    ],
)
def test_a_malformed_or_reserved_account_is_refused(account_id: str, owner: str, currency: str, message: str) -> None:
    with pytest.raises(domain.InvalidAccount, match=message):
        domain.new_account(account_id, owner, currency)


def test_account_errors_are_value_errors() -> None:
    for error in (
        domain.InvalidAccount,
        domain.UnknownAccount,
        domain.InsufficientFunds,
        domain.InvalidAmount,
    ):
        assert issubclass(error, domain.AccountError) and issubclass(error, ValueError)


def test_only_customer_accounts_take_deposits_and_withdrawals() -> None:
    with pytest.raises(domain.UnknownAccount, match="no customer account nobody"):
        domain.customer(None, "nobody")
    with pytest.raises(domain.UnknownAccount):
        domain.customer(domain.external_account("JPY"), "external:deposits")
    assert domain.customer(ALICE, "alice-cash") is ALICE


@pytest.mark.parametrize(
    "legs",
    [
        (Leg("a", Decimal(1)),),
        (Leg("a", Decimal(1)), Leg("b", Decimal(-2))),
        (Leg("a", Decimal(1)), Leg("a", Decimal(-1))),
        (Leg("a", Decimal(0)), Leg("b", Decimal(0))),
    ],
)
def test_an_unbalanced_entry_cannot_even_be_constructed(legs: tuple[Leg, ...]) -> None:
    with pytest.raises(domain.UnbalancedEntry):
        Entry(EntryKind.DEPOSIT, "r", "d", legs)


def test_r_001_43_an_investor_may_inquire_only_about_its_own_customer_account() -> None:
    assert domain.may_inquire(ALICE, "alice")
    assert not domain.may_inquire(ALICE, "bob")
    assert not domain.may_inquire(None, "alice")
    assert not domain.may_inquire(domain.external_account("JPY"), "settlement")


def test_amounts_are_shown_grouped_without_spurious_decimals() -> None:
    assert domain.money(Decimal("1200000.0000"), "JPY") == "1,200,000 JPY"
    assert domain.money(Decimal("12.5000"), "USD") == "12.5 USD"


# -- the double-entry property -------------------------------------------------------------------

CUSTOMERS = {"alice-cash": "alice", "bob-cash": "bob", "carol-cash": "carol"}
customer_ids = st.sampled_from(sorted(CUSTOMERS))
# Sized so that deposits cover most withdrawals and trades, and some of each are refused.
deposits = st.tuples(st.just("deposit"), customer_ids, st.integers(1, 5_000_000).map(Decimal))
withdrawals = st.tuples(st.just("withdraw"), customer_ids, st.integers(1, 1_000_000).map(Decimal))
trades = st.tuples(st.just("trade"), customer_ids, customer_ids, st.integers(1, 500).map(Decimal), st.integers(1, 200))
operations = st.one_of(deposits, withdrawals, trades)
# Opening deposits, so that most sequences have money to move from the start.
openings = st.tuples(
    *(st.tuples(st.just("deposit"), st.just(i), st.integers(1, 3_000_000).map(Decimal)) for i in sorted(CUSTOMERS))
)


class Book:
    """An in-memory ledger that applies whatever the domain accepts."""

    def __init__(self) -> None:
        self.balances = {account_id: Decimal(0) for account_id in CUSTOMERS}
        self.balances[domain.DEPOSITS_ACCOUNT] = Decimal(0)
        self.references: set[tuple[EntryKind, str]] = set()

    def account(self, account_id: str) -> Account:
        return Account(account_id, CUSTOMERS[account_id], "JPY", AccountKind.CUSTOMER, self.balances[account_id])

    def apply(self, entry: Entry) -> None:
        assert sum(leg.amount for leg in entry.legs) == 0
        assert (entry.kind, entry.reference) not in self.references
        self.references.add((entry.kind, entry.reference))
        for leg in entry.legs:
            self.balances[leg.account_id] += leg.amount

    def check(self) -> None:
        assert sum(self.balances.values()) == 0
        assert all(self.balances[account_id] >= 0 for account_id in CUSTOMERS)


@given(openings, st.lists(operations, max_size=60))
def test_r_001_41_any_sequence_of_movements_keeps_the_books_balanced(
    opening: tuple[tuple[Any, ...], ...], operations: list[tuple[Any, ...]]
) -> None:
    book = Book()
    for number, operation in enumerate((*opening, *operations), start=1):
        if operation[0] == "deposit":
            book.apply(domain.deposit(book.account(operation[1]), operation[2], f"dep-{number}"))
        elif operation[0] == "withdraw":
            _, account_id, amount = operation
            try:
                book.apply(domain.withdrawal(book.account(account_id), amount, f"wd-{number}"))
            except domain.InsufficientFunds:
                assert amount > book.balances[account_id]
        else:
            _, buyer, seller, price, shares = operation
            # Issue 11: a trade's cash leg is an attempt of a DvP instruction.
            request = instruction(
                matching_number=number,
                price=price,
                quantity=shares,
                amount=price * shares,
                buyer_user_id=CUSTOMERS[buyer],
                buyer_account=buyer,
                seller_user_id=CUSTOMERS[seller],
                seller_account=seller,
            )
            checked = instructions.validate(request, book.account(buyer), book.account(seller))
            plan = instructions.plan(checked, None, book.balances[buyer], checked.intended_settlement_date)
            if checked.live and isinstance(plan, instructions.Attempt):
                book.apply(
                    Entry(EntryKind.TRADE, f"{number}/1", "trade", (Leg(buyer, -plan.amount), Leg(seller, plan.amount)))
                )
            else:
                assert buyer == seller or price * shares > book.balances[buyer]
        book.check()
