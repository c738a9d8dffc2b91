"""Review of dc1acc6's CSV parser (agents/investor/order_file.py): files as spreadsheets and
editors write them, and lines at fault refused as OrderFileError naming the line."""

from __future__ import annotations

from decimal import Decimal

import pytest

from agents.investor.order_file import OrderFileError, tickets
from agents.investor.trading import MOST_ORDERS_IN_A_LIST

H = "side,issue,quantity,account\n"


def ids() -> object:
    counter = iter(range(10**6))
    return lambda: f"n{next(counter)}"


def test_crlf_line_endings() -> None:
    read = tickets(H.replace("\n", "\r\n") + "buy,KBT,100,bob-cash\r\nsell,KBT,200,bob-cash\r\n")
    assert [(t.side.value, t.quantity, t.settlement_account) for t in read] == [
        ("buy", 100, "bob-cash"),
        ("sell", 200, "bob-cash"),
    ]


def test_blank_lines_are_skipped_and_lines_still_counted_from_the_file() -> None:
    assert len(tickets(H + "\nbuy,KBT,1,a\n\n\nbuy,KBT,2,a\n\n")) == 2
    with pytest.raises(OrderFileError, match="line 5: quantity 'x'"):
        tickets(H + "\nbuy,KBT,1,a\n\nbuy,KBT,x,a\n")


def test_quoted_fields_with_commas_quotes_and_newlines() -> None:
    text = 'side,issue,quantity,account,name,address\nbuy,KBT,1,a,"Bob, Jr.","1-2, Kabuto-cho\nChuo-ku"\n'
    [ticket] = tickets(text)
    assert (ticket.holder_name, ticket.holder_address) == ("Bob, Jr.", "1-2, Kabuto-cho\nChuo-ku")
    with pytest.raises(OrderFileError, match="line 4: quantity 'x'"):
        tickets(text + "buy,KBT,x,a,b,c\n")
    [quoted] = tickets('side,issue,quantity,account,name\nbuy,KBT,1,a,"say ""hi"""\n')
    assert quoted.holder_name == 'say "hi"'


def test_header_with_spaces_and_any_case_of_values() -> None:
    [ticket] = tickets(" side ,  issue,quantity , account ,tif\n BUY , KBT , 7 , a , IOC \n")
    assert (ticket.side.value, ticket.issue_code, ticket.quantity, ticket.time_in_force.value) == (
        "buy",
        "KBT",
        7,
        "ioc",
    )


def test_a_byte_order_mark_before_the_header_is_not_part_of_the_first_column() -> None:
    """``Path.read_text(encoding='utf-8')`` keeps the BOM Excel writes: the header's first name is
    then '\\ufeffside'."""
    [ticket] = tickets("\ufeff" + H + "buy,KBT,1,a\n")
    assert ticket.side.value == "buy"


@pytest.mark.parametrize("quantity", ["\u00b2", "\u2460", "\u00b9\u2070"])
def test_a_quantity_of_digit_like_characters_is_an_order_file_error_naming_the_line(quantity: str) -> None:
    with pytest.raises(OrderFileError, match="line 2: quantity"):
        tickets(H + f"buy,KBT,{quantity},a\n")


def test_a_header_only_file_and_an_empty_file() -> None:
    with pytest.raises(OrderFileError, match="holds no order"):
        tickets(H)
    with pytest.raises(OrderFileError, match="holds no order"):
        tickets(H + "\n\n")
    with pytest.raises(OrderFileError, match="empty"):
        tickets("")


def test_a_file_of_exactly_the_bound_is_read_and_one_more_is_refused() -> None:
    body = "".join(f"buy,KBT,{i + 1},a\n" for i in range(MOST_ORDERS_IN_A_LIST))
    read = tickets(H + body, ids())  # type: ignore[arg-type]
    assert [t.quantity for t in read] == list(range(1, MOST_ORDERS_IN_A_LIST + 1))
    assert len({t.client_order_id for t in read}) == MOST_ORDERS_IN_A_LIST
    with pytest.raises(OrderFileError, match=f"line {MOST_ORDERS_IN_A_LIST + 2}: a list holds at most"):
        tickets(H + body + "buy,KBT,1,a\n")


def test_a_very_long_file_is_refused_at_the_bound_without_reading_every_line() -> None:
    body = "buy,KBT,1,a\n" * 200_000
    with pytest.raises(OrderFileError, match=f"line {MOST_ORDERS_IN_A_LIST + 2}"):
        tickets(H + body)


def test_limits_as_written() -> None:
    text = "side,issue,quantity,account,limit\nbuy,KBT,1,a,1000\nbuy,KBT,1,a, 990.5 \nbuy,KBT,1,a,\n"
    assert [t.price for t in tickets(text)] == [Decimal("1000"), Decimal("990.5"), None]
    for bad in ("Infinity", "1,000", "0", "sNaN"):
        with pytest.raises(OrderFileError, match="line 2: limit"):
            tickets(f'side,issue,quantity,account,limit\nbuy,KBT,1,a,"{bad}"\n')


def test_a_misspelt_or_empty_header_name_is_refused_at_line_1() -> None:
    with pytest.raises(OrderFileError, match="line 1: unknown column 'qty'"):
        tickets("side,issue,qty,account\nbuy,KBT,1,a\n")
    with pytest.raises(OrderFileError, match="line 1: unknown column ''"):
        tickets("side,issue,quantity,account,\nbuy,KBT,1,a,\n")
