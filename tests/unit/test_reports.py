"""A trade report's terms are validated as it is made (agents/exchange/reports.py): a malformed
report never reaches the exchange's checks, and the error names the field."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from agents.exchange.reports import TradeReport
from broker.trade_reports import ReportTerms
from schemas.certificates import EndorsedCertificate, Endorsement, IssuerSignature, ShareClass, SignedCertificate

GOOD: dict[str, Any] = {
    "report_id": "otc-1",
    "issue_code": "KBT",
    "quantity": 500,
    "price": Decimal(1000),
    "seller_user_id": "alice",
    "seller_account": "alice-cash",
    "buyer_user_id": "bob",
    "buyer_account": "bob-cash",
    "buyer_name": "Bob",
    "buyer_address": "2-2 Kabuto-cho, Tokyo",
    "certificate": EndorsedCertificate(
        certificate=SignedCertificate(content=b"{}", issuer_signature=IssuerSignature(certificate=b"d", signature=b"s"))
    ),
    "buyer_consent": Endorsement(purpose="trade_report", context="report:bob:x", certificate=b"d", signature=b"s"),
}


def test_a_well_formed_report_is_made() -> None:
    assert TradeReport(**GOOD).quantity == 500


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("quantity", 0),
        ("quantity", -100),
        ("price", Decimal(0)),
        ("price", Decimal("1000.00001")),
        ("report_id", "has spaces"),
        ("report_id", "x" * 65),
        ("issue_code", "lower"),
        ("seller_user_id", ""),
        ("buyer_account", "Not An Account!"),
        ("buyer_name", ""),
        ("share_class", "golden"),
    ],
)
def test_a_malformed_report_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as error:
        TradeReport(**(GOOD | {field: value}))
    assert {e["loc"][0] for e in error.value.errors()} == {field}


def test_an_unknown_field_is_refused() -> None:
    with pytest.raises(ValidationError, match="extra"):
        TradeReport(**(GOOD | {"cover_id": "anything"}))


TERMS = ReportTerms("otc-1", "KBT", ShareClass.COMMON, 500, Decimal(1000), "alice", "bob")


def test_the_report_is_read_back_as_the_terms_both_parties_sign() -> None:
    assert TradeReport(**GOOD).terms == TERMS


@pytest.mark.parametrize(
    "change",
    [
        {"report_id": "otc-2"},
        {"issue_code": "KBU"},
        {"share_class": ShareClass.PREFERRED},
        {"quantity": 400},
        {"price": Decimal(1001)},
        {"seller_user_id": "carol"},
        {"buyer_user_id": "carol"},
    ],
)
def test_every_term_is_in_the_digest_both_parties_sign(change: dict[str, Any]) -> None:
    """A countersignature for one set of terms cannot be lifted onto another (found by review:
    the seller's first context named the report only, and a sell order could have signed it)."""
    assert dataclasses.replace(TERMS, **change).digest() != TERMS.digest()


def test_a_price_is_signed_in_its_shortest_form() -> None:
    """1000, 1000.0 and 1E+3 are one price: the parties need not agree on its spelling."""
    spellings = [Decimal("1000"), Decimal("1000.0000"), Decimal("1E+3")]
    assert {dataclasses.replace(TERMS, price=p).digest() for p in spellings} == {TERMS.digest()}
    assert dataclasses.replace(TERMS, price=Decimal("1000.5")).digest() != TERMS.digest()


def test_each_party_signs_in_a_context_of_its_own_that_no_sell_order_has() -> None:
    """The issuer takes ``report:<seller>:`` as the seller's consent to a sale; an order's is
    ``order:<seller>:<client order id>``."""
    assert TERMS.context("alice") == f"report:alice:{TERMS.digest()}"
    assert TERMS.context("alice") != TERMS.context("bob")
    longest = ReportTerms("x" * 64, "K" * 32, ShareClass.COMMON, 10**12, Decimal("9" * 16), "a" * 63, "b" * 63)
    assert len(longest.context("a" * 63)) <= 200  # what an endorsement's context may hold
