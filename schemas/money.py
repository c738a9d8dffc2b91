"""Money on the wire: a ``Decimal`` amount with an explicit currency, never a float."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, overload

from pydantic import Field, StringConstraints

Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
# Yen amounts are whole; other currencies may carry up to four decimal places.
Amount = Annotated[Decimal, Field(max_digits=20, decimal_places=4, allow_inf_nan=False)]
Price = Annotated[Decimal, Field(gt=0, max_digits=20, decimal_places=4, allow_inf_nan=False)]

# A count of shares: positive, and small enough that price × quantity and every column holding
# it stay exact (issue 13: a huge quantity is refused by the schema, never by the database).
MAX_QUANTITY = 10**12
Quantity = Annotated[int, Field(gt=0, le=MAX_QUANTITY)]
AccountId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9:._-]{1,63}$")]


@overload
def plain(amount: Decimal) -> Decimal: ...
@overload
def plain(amount: None) -> None: ...
def plain(amount: Decimal | None) -> Decimal | None:
    """One way of writing a number, whoever wrote it and however it was stored: the fewest digits,
    never an exponent ('985.0000' from a numeric(20, 4) column and '985' from a message are both
    '985'; '985.50' is '985.5'). What is signed must not depend on where a value was read."""
    if amount is None:  # a market order's price
        return None
    fewest = amount.normalize()
    exponent = fewest.as_tuple().exponent
    return fewest.quantize(_UNIT) if isinstance(exponent, int) and exponent > 0 else fewest


_UNIT = Decimal(1)
