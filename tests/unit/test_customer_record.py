"""A customer record is checked before it is stored, and a bad stored one is refused with a reason
(issue 10; seed 002 R-002-13/14/31)."""

from __future__ import annotations

import asyncio

import pytest

from agents.brokerage.customers import (
    Customer,
    CustomerAccount,
    Refused,
    authenticate,
    check_record,
    hash_pin,
    record_problems,
)
from schemas.brokerage import BrokerageRefusal, TransactionConditions

GOOD = [CustomerAccount("kamata-alice", "intermediary", "bank", 1), CustomerAccount("x-mrf", "x-sec", "fund", 2)]


def test_a_well_formed_record_has_no_problems() -> None:
    assert record_problems("IM-0001", GOOD) == []


def test_every_problem_is_named() -> None:
    bad = [
        CustomerAccount("Kamata Alice", "intermediary", "bank", 1),
        CustomerAccount("omori", "Y Sec", "cash", 1),
        CustomerAccount("omori", "intermediary", "bank", 100),
    ]
    assert record_problems("IM 1", bad) == [
        "customer id 'IM 1' is malformed",
        "account id 'Kamata Alice' is malformed (lower-case letters, digits and :._- only)",
        "omori is held at 'Y Sec': not 'intermediary' nor a company id",
        "omori is of kind 'cash': not bank or fund",
        "omori has priority 100: not 1–99",
        "an account is listed twice",
        "two accounts have the same priority",
    ]
    assert record_problems("IM-1", []) == []  # accounts may be added later; identification answers at once


def test_a_stored_record_with_a_malformed_account_is_refused_not_crashed_on() -> None:
    customer = Customer(
        "IM-1", "alice", b"s", b"h", TransactionConditions(), (*GOOD, CustomerAccount("Bad", "x", "bank", 3))
    )
    with pytest.raises(Refused) as refused:
        check_record(customer)
    assert refused.value.reason is BrokerageRefusal.CUSTOMER_RECORD_INVALID and "Bad" in refused.value.detail
    check_record(Customer("IM-1", "alice", b"s", b"h", TransactionConditions(), tuple(GOOD)))


async def test_the_pin_is_hashed_off_the_loop_which_serves_others_meanwhile() -> None:
    """R-002-06's PIN check costs an scrypt (about 60 ms of CPU). Run on the loop, it stalled every
    other task of the brokerage agent for each identification and brokered order: a task beside
    the loop did not get a single turn before it ended."""
    salt, digest = hash_pin("2468")
    customer = Customer("IM-1", "alice", salt, digest, TransactionConditions(), tuple(GOOD))
    took_a_turn = asyncio.Event()
    asyncio.get_running_loop().call_soon(took_a_turn.set)  # runs as soon as the loop has control
    assert await authenticate(customer, "IM-1", "2468", "alice") is customer
    assert took_a_turn.is_set()
    with pytest.raises(Refused) as refused:
        await authenticate(customer, "IM-1", "1357", "alice")
    assert refused.value.reason is BrokerageRefusal.AUTHENTICATION_FAILED
