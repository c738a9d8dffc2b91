"""The CSV list of orders ``kabuto investor order-list`` reads (agents/investor/order_file.py):
each line an order ticket, or the first line at fault named with why."""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID

import pytest

from agents.investor.order_file import OrderFileError, tickets
from agents.investor.trading import MOST_ORDERS_IN_A_LIST, OrderTicket
from schemas.trading import Side, TimeInForce

CERT = UUID(int=7)


def test_each_line_is_an_order_in_the_files_order_with_its_columns_in_any_order() -> None:
    text = (
        "account,side,issue,quantity,limit,tif,id,name,address,certificate\n"
        "bob-cash,buy,KBT,100,990,ioc,b1,Bob,Tokyo,\n"
        f" alice-cash , SELL ,KBT, 50 ,,, s1 ,,,{CERT}\n"
    )
    assert tickets(text) == [
        OrderTicket("b1", "KBT", Side.BUY, 100, "bob-cash", Decimal("990"), TimeInForce.IOC, None, "Bob", "Tokyo"),
        OrderTicket("s1", "KBT", Side.SELL, 50, "alice-cash", None, TimeInForce.DAY, CERT),
    ]


def test_a_line_without_an_id_is_given_one() -> None:
    ids = iter(["n1", "n2"])
    read = tickets("side,issue,quantity,account\nbuy,KBT,1,a\nbuy,KBT,2,a\n", lambda: next(ids))
    assert [t.client_order_id for t in read] == ["n1", "n2"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "the file is empty"),
        ("side,issue,quantity,account\n", "holds no order"),
        ("side,issue,quantity,acount\nbuy,KBT,1,a\n", "line 1: unknown column 'acount'"),
        ("side,issue,quantity\nbuy,KBT,1\n", "line 1: the column 'account' is missing"),
        ("side,issue,quantity,account,side\nbuy,KBT,1,a,buy\n", "line 1: a column is named twice"),
        ("side,issue,quantity,account\nbuy,KBT,1,a\nhold,KBT,1,a\n", "line 3: side 'hold' is not one of buy, sell"),
        ("side,issue,quantity,account\nbuy,KBT,many,a\n", "line 2: quantity 'many' is not a positive whole"),
        ("side,issue,quantity,account\nbuy,KBT,0,a\n", "line 2: quantity '0'"),
        ("side,issue,quantity,account\nbuy,KBT,-5,a\n", "line 2: quantity '-5'"),
        ("side,issue,quantity,account,limit\nbuy,KBT,1,a,abc\n", "line 2: limit 'abc' is not a positive price"),
        ("side,issue,quantity,account,limit\nbuy,KBT,1,a,NaN\n", "line 2: limit 'NaN'"),
        ("side,issue,quantity,account,limit\nbuy,KBT,1,a,-1\n", "line 2: limit '-1'"),
        ("side,issue,quantity,account,tif\nbuy,KBT,1,a,forever\n", "line 2: tif 'forever' is not one of"),
        ("side,issue,quantity,account,certificate\nsell,KBT,1,a,xyz\n", "line 2: certificate 'xyz' is not a CertID"),
        ("side,issue,quantity,account\nbuy,,1,a\n", "line 2: issue is empty"),
        ("side,issue,quantity,account\nbuy,KBT,1,a,extra\n", "line 2: more fields than the header names"),
        ("side,issue,quantity,account\nbuy,KBT,1\n", "line 2: fewer fields than the header names"),
    ],
)
def test_a_file_at_fault_names_the_line_and_why(text: str, reason: str) -> None:
    with pytest.raises(OrderFileError, match=reason):
        tickets(text)


def test_a_file_longer_than_a_list_is_refused_at_the_line_past_the_bound() -> None:
    text = "side,issue,quantity,account\n" + "buy,KBT,1,a\n" * (MOST_ORDERS_IN_A_LIST + 1)
    with pytest.raises(OrderFileError, match=f"line {MOST_ORDERS_IN_A_LIST + 2}: a list holds at most"):
        tickets(text)
