"""Participants and the certificate policy carried in their identity certificates (seed 001 §3.1)."""

from __future__ import annotations

import re
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

PARTICIPANT_ID_PATTERN = r"^[a-z][a-z0-9_-]{1,62}$"
ParticipantId = Annotated[str, StringConstraints(pattern=PARTICIPANT_ID_PATTERN)]
_PARTICIPANT_ID = re.compile(PARTICIPANT_ID_PATTERN)


def is_participant_id(value: str) -> bool:
    return _PARTICIPANT_ID.fullmatch(value) is not None


class Role(StrEnum):
    """What a participant is; message routing and authorisation are decided by role."""

    INVESTOR = "investor"
    ISSUER = "issuer"
    EXCHANGE = "exchange"
    SETTLEMENT = "settlement"
    BROKERAGE = "brokerage"
    CUSTODY = "custody"
    CREDIT = "credit"
    OPERATOR = "operator"
    # Seed 003: the card issuer (FI server 300) hosted by the credit agent beside the line, and
    # merchants (seller server 400), external systems that publish purchase requests.
    CARD_ISSUER = "card_issuer"
    MERCHANT = "merchant"


# The participant ids of the agents that are one participant each.
ISSUER_ID = "issuer"
EXCHANGE_ID = "exchange"
SETTLEMENT_ID = "settlement"
CREDIT_ID = "credit"
CARD_ISSUER_ID = "card-issuer"


class CertificatePolicy(BaseModel):
    """Seed 001 Fig. 4 field 8b: limits the CA writes into an investor's identity certificate."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    account_usage_limit: Annotated[Decimal, Field(ge=0, decimal_places=0)]
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] = "JPY"
    short_selling_prohibited: bool = True


class Participant(BaseModel):
    """The content of Kabuto's participant extension: who the subject is and what it may do."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    user_id: ParticipantId
    role: Role
    policy: CertificatePolicy | None = None
