"""A list of orders as an investor writes it: a CSV file, one order a line, for
``kabuto investor order-list`` (``trading.place_orders``). Pure: text in, tickets out, or the
first line at fault and why.

The header names the columns, in any order: ``side``, ``issue``, ``quantity`` and ``account`` on
every line; ``limit`` (empty for a market order), ``tif``, ``certificate`` (a sell order's CertID),
``name`` and ``address`` (a buy order's holder of record), ``safekeeping_account`` and ``id``
(the client order id; generated when empty) where an order needs them. A column of another name
is refused, so that a misspelt one is not read as empty.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar
from uuid import UUID

from pydantic import ValidationError

from agents.investor.trading import MOST_ORDERS_IN_A_LIST, OrderTicket
from schemas.trading import OrderTerms, OrderType, Side, TimeInForce

REQUIRED = ("side", "issue", "quantity", "account")
OPTIONAL = ("id", "limit", "tif", "certificate", "name", "address", "safekeeping_account")
E = TypeVar("E", Side, TimeInForce)


class OrderFileError(ValueError):
    """A list of orders that cannot be read, and where."""


def tickets(text: str, new_id: Callable[[], str] = lambda: uuid.uuid4().hex[:12]) -> list[OrderTicket]:
    """The orders of a CSV text, in its order. ``new_id``: a client order id for a line without one."""
    reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff"), newline=""), restkey="\0extra")
    if not reader.fieldnames:
        raise OrderFileError("the file is empty: a header line and one order a line are expected")
    header = [name.strip() for name in reader.fieldnames]
    unknown = [name for name in header if name not in REQUIRED + OPTIONAL]
    if unknown:
        raise OrderFileError(f"line 1: unknown column {unknown[0]!r} (columns: {', '.join(REQUIRED + OPTIONAL)})")
    missing = [name for name in REQUIRED if name not in header]
    if missing:
        raise OrderFileError(f"line 1: the column {missing[0]!r} is missing")
    if len(set(header)) < len(header):
        raise OrderFileError("line 1: a column is named twice")
    reader.fieldnames = header
    found: list[OrderTicket] = []
    for row in reader:
        line = reader.line_num
        if len(found) == MOST_ORDERS_IN_A_LIST:
            raise OrderFileError(f"line {line}: a list holds at most {MOST_ORDERS_IN_A_LIST} orders")
        found.append(_ticket(row, line, new_id))
    if not found:
        raise OrderFileError("the file holds no order: one order a line is expected after the header")
    return found


def _ticket(row: Mapping[str, Any], line: int, new_id: Callable[[], str]) -> OrderTicket:
    if "\0extra" in row:
        raise OrderFileError(f"line {line}: more fields than the header names")
    if any(value is None for value in row.values()):
        raise OrderFileError(f"line {line}: fewer fields than the header names")
    field = {name: str(value).strip() for name, value in row.items()}
    for name in REQUIRED:
        if not field[name]:
            raise OrderFileError(f"line {line}: {name} is empty")

    def get(name: str) -> str | None:
        return field.get(name) or None

    ticket = OrderTicket(
        client_order_id=get("id") or new_id(),
        issue_code=field["issue"],
        side=_choice(Side, field["side"], "side", line),
        quantity=_quantity(field["quantity"], line),
        settlement_account=field["account"],
        price=_limit(get("limit"), line),
        time_in_force=_choice(TimeInForce, get("tif") or TimeInForce.DAY.value, "tif", line),
        cert_id=_cert_id(get("certificate"), line),
        holder_name=get("name"),
        holder_address=get("address"),
        safekeeping_account=get("safekeeping_account"),
    )
    if ticket.cert_id is not None and (ticket.side is Side.BUY or ticket.safekeeping_account is not None):
        raise OrderFileError(f"line {line}: only a sell order from a certificate names one")
    _terms_carried(ticket, line)
    return ticket


def _terms_carried(ticket: OrderTicket, line: int) -> None:
    """What the contract's order terms refuse (a quantity or a price out of its range) is named by
    line here, not by its place in the list once it is placed."""
    try:
        OrderTerms(
            side=ticket.side,
            order_type=OrderType.LIMIT if ticket.price is not None else OrderType.MARKET,
            price=ticket.price,
            quantity=ticket.quantity,
            time_in_force=ticket.time_in_force,
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        name = {"price": "limit"}.get(str(error["loc"][0]), str(error["loc"][0])) if error["loc"] else "order"
        raise OrderFileError(f"line {line}: {name}: {error['msg']}") from None


def _choice(kind: type[E], text: str, name: str, line: int) -> E:
    try:
        return kind(text.lower())
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise OrderFileError(f"line {line}: {name} {text!r} is not one of {allowed}") from None


def _quantity(text: str, line: int) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) <= 0:
        raise OrderFileError(f"line {line}: quantity {text!r} is not a positive whole number of shares")
    return int(text)


def _limit(text: str | None, line: int) -> Decimal | None:
    if text is None:
        return None
    try:
        price = Decimal(text)
    except InvalidOperation:
        price = Decimal("NaN")
    if not price.is_finite() or price <= 0:
        raise OrderFileError(f"line {line}: limit {text!r} is not a positive price")
    return price


def _cert_id(text: str | None, line: int) -> UUID | None:
    if text is None:
        return None
    try:
        return UUID(text)
    except ValueError:
        raise OrderFileError(f"line {line}: certificate {text!r} is not a CertID") from None
