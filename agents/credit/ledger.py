"""Cash moves of the card issuer and the line, posted as balanced entries in the settlement ledger.

They use the ledger posting message the brokerage uses (``funds.brokered_settlement``) with no
hold: the entry's reference is the posting id, its legs sum to zero, and settlement answers
``funds.brokered_posted`` or ``funds.brokered_failed`` naming the same id.
"""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID

from broker.context import Context
from schemas.brokerage import LedgerLeg, PostBrokeredSettlement
from schemas.identity import SETTLEMENT_ID


def transfer(
    ctx: Context, posting_id: UUID, *, debit: str, credit: str, amount: int, customer: str, description: str
) -> None:
    """Move ``amount`` yen from ``debit`` to ``credit`` in one balanced entry."""
    if amount <= 0:
        raise ValueError("a transfer moves a positive amount")
    legs = (
        LedgerLeg(account=debit, amount=Decimal(-amount), means="seed 003"),
        LedgerLeg(account=credit, amount=Decimal(amount), means="seed 003"),
    )
    ctx.emit(
        PostBrokeredSettlement(
            order_id=posting_id, hold_id=posting_id, customer=customer, description=description[:200], legs=legs
        ),
        to=SETTLEMENT_ID,
    )
