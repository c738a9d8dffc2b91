"""A secret field sealed to its recipient's X25519 key (R-001-06), as it travels on the wire.

Only the shape is checked here; ``broker.sealed_box`` seals and opens. 32 bytes of one-time
public key, 16 of tag and the ciphertext, base64url, behind a version prefix.

Each sealed field has a *context*, bound into its box, so a box cannot be cut from one field
and pasted into another. An account the settlement agent keeps for a participant is also
bound to that participant's id: the exchange forwards the buyer's and the seller's boxes to
settlement, and a box moved to another party's place no longer opens.
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import StringConstraints

SEALED_PREFIX: Final = "ks1."
ACCOUNT_INQUIRY_ACCOUNT: Final = "account.inquiry/account"
CUSTOMER_PIN: Final = "brokerage/pin"
SealedText = Annotated[str, StringConstraints(pattern=r"^ks1\.[A-Za-z0-9_-]{64,1400}={0,2}$")]


def order_account(user_id: str) -> str:
    """The settlement account of ``user_id``'s order (33), in whatever message carries it on (38)."""
    return f"order.submit/settlement_account/{user_id}"


def dividend_account(holder: str) -> str:
    """The account for ``holder``'s dividends (32, 39; R-001-44)."""
    return f"dividend_delivery/account/{holder}"


def is_sealed(value: str) -> bool:
    return value.startswith(SEALED_PREFIX)
