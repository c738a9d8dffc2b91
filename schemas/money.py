"""Money on the wire: a ``Decimal`` amount with an explicit currency, never a float."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import Field, StringConstraints

Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
# Yen amounts are whole; other currencies may carry up to four decimal places.
Amount = Annotated[Decimal, Field(max_digits=20, decimal_places=4, allow_inf_nan=False)]
Price = Annotated[Decimal, Field(gt=0, max_digits=20, decimal_places=4, allow_inf_nan=False)]
AccountId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9:._-]{1,63}$")]
