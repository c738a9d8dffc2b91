"""A secret field sealed to its recipient's X25519 key (R-001-06), as it travels on the wire.

Only the shape is checked here; ``broker.sealed_box`` seals and opens. 32 bytes of one-time
public key, 16 of tag and the ciphertext, base64url, behind a version prefix.
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import StringConstraints

SEALED_PREFIX: Final = "ks1."
# Each sealed field's context, bound into its box so it cannot be pasted into another field.
ACCOUNT_INQUIRY_ACCOUNT: Final = "account.inquiry/account"
CUSTOMER_PIN: Final = "brokerage/pin"
SealedText = Annotated[str, StringConstraints(pattern=r"^ks1\.[A-Za-z0-9_-]{64,1400}={0,2}$")]
