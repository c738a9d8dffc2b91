"""``schemas.money.plain``: one text for one number, whichever way it was written or stored.

The exchange's book is held in memory from the orders' messages and rebuilt from their rows
(numeric(20, 4)) after a restart or a rolled-back batch; an execution against a resting order
must be signed in the same words either way (found by review, stop 46)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.money import plain


@pytest.mark.parametrize(
    ("written", "plainly"),
    [
        ("985", "985"),
        ("985.0000", "985"),
        ("985.50", "985.5"),
        ("1000.0000", "1000"),
        ("1E+3", "1000"),
        ("0.0001", "0.0001"),
        ("123456789.1230", "123456789.123"),
        ("99999999999999999999", "99999999999999999999"),
    ],
)
def test_a_number_is_written_with_the_fewest_digits_and_never_an_exponent(written: str, plainly: str) -> None:
    assert str(plain(Decimal(written))) == plainly


def test_a_market_order_has_no_price_to_write() -> None:
    assert plain(None) is None


prices = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("9999999999999999.9999"), places=4)


@given(prices)
def test_as_stored_and_as_sent_are_one_text(price: Decimal) -> None:
    stored = price.quantize(Decimal("0.0001"))  # what a numeric(20, 4) column gives back
    assert str(plain(stored)) == str(plain(price))
    assert plain(price) == price  # the same number
    assert "E" not in str(plain(price))
    assert plain(plain(price)) == plain(price)
