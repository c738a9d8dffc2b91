"""A trade report's terms are validated as it is made (agents/exchange/reports.py): a malformed
report never reaches the exchange's checks, and the error names the field."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from agents.exchange.reports import TradeReport, report_context
from schemas.certificates import EndorsedCertificate, IssuerSignature, SignedCertificate

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


def test_the_sellers_countersignature_is_bound_to_the_report_and_read_by_the_issuer_as_a_sale() -> None:
    """The issuer accepts a seller's ``sell_order`` countersignature in ``order:<seller>:…`` only."""
    assert report_context("alice", "otc-1") == "order:alice:report-otc-1"
    assert report_context("alice", "otc-1") != report_context("alice", "otc-2")
