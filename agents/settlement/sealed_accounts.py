"""The settlement accounts the parties sealed to this agent in their orders (R-001-06).

The exchange keeps and forwards each order's box unopened, in the buy order's cover request
and in every instruction; only here is it opened, with the context of the order it came
from (``order.submit/settlement_account/<user>``), so a box moved to another party's place,
taken from another field or sealed to another key does not open. Settlement then refuses —
the cover as ``sealed_field_invalid``, the instruction rejected with that reason — and
nothing moves. What it opened stays in settlement's books and never goes back out, except
to the account's owner.
"""

from __future__ import annotations

import pydantic

from broker import logs
from broker.context import Context
from broker.errors import InputRejected
from broker.pki import PkiError
from broker.sealed_box import Opened, open_box
from schemas.money import AccountId
from schemas.sealed import order_account

log = logs.get("kabuto.settlement")
# The accounts settlement keeps in its books anyway, by the box each came in (sealed_box.Opened).
OPENED = Opened()
# What an opened box must hold: an account id, as an account in clear would have had to be. A box
# is sealed by the party itself, outside every schema (B96).
ACCOUNT_ID: pydantic.TypeAdapter[str] = pydantic.TypeAdapter(AccountId)


def opened(ctx: Context, box: str, user_id: str) -> str | None:
    """The account ``user_id`` sealed in its order, or None when the box does not open or holds
    no account id (a NUL, an empty or overlong text: refused as the box would be, B96)."""
    if ctx.identity.decryption_key is None:
        raise PkiError("settlement has no encryption key; renew its certificate (`ca enrol settlement --renew`)")
    try:
        return ACCOUNT_ID.validate_python(open_box(ctx.identity.decryption_key, box, order_account(user_id), OPENED))
    except (InputRejected, pydantic.ValidationError):
        log.warning("sealed_field_invalid", party=user_id)
        return None
