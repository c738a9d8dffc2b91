"""Money on the wire: a ``Decimal`` amount with an explicit currency, never a float."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

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
