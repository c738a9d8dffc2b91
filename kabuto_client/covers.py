"""Standing covers for an external participant (docs/dvp.md, "Standing cover").

Cash set aside once at settlement, drawn on by every buy order sealed with the same account
box: such an order is booked in the hop that receives it, with no per-order cover request.
``Participant.account_box`` seals an account once per participant, and ``buy_order`` uses it,
so the orders of a participant that opened a cover on that account draw on it.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from uuid import UUID

from broker.envelope import Opened
from kabuto_client.participant import Participant
from schemas.dvp import CloseStandingCover, OpenStandingCover
from schemas.identity import EXCHANGE_ID

OPEN_REPLIES = ("standing_cover.opened", "standing_cover.refused")
CLOSE_REPLIES = ("standing_cover.closed", "standing_cover.refused")


async def open_standing_cover(
    me: Participant, account: str, amount: Decimal, *, cover_id: UUID | None = None, timeout: float = 30.0
) -> Opened:
    """Ask settlement, through the exchange, to hold ``amount`` on ``account`` for buy orders;
    the verified ``standing_cover.opened`` or ``standing_cover.refused``."""
    request = OpenStandingCover(
        cover_id=cover_id or uuid.uuid4(), user_id=me.user_id, account=me.account_box(account), amount=amount
    )
    return await me.request(request, to=EXCHANGE_ID, expect=OPEN_REPLIES, timeout=timeout)


async def close_standing_cover(me: Participant, cover_id: UUID, *, timeout: float = 30.0) -> Opened:
    """Stop drawing on the cover; ``standing_cover.closed`` once nothing drawn on it is live
    (resting orders keep it until they end), or ``standing_cover.refused``."""
    return await me.request(
        CloseStandingCover(cover_id=cover_id), to=EXCHANGE_ID, expect=CLOSE_REPLIES, timeout=timeout
    )
