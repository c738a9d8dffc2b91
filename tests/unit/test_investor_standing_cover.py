"""What a refusal makes of a hosted investor's standing cover (agents/investor/domain.py; R-001-23)."""

from __future__ import annotations

import pytest

from agents.investor.domain import CoverStatus, after_refusal
from schemas.dvp import StandingCoverRefusal as Why

S = CoverStatus


@pytest.mark.parametrize("reason", list(Why))
def test_a_refused_open_leaves_the_cover_refused_whatever_the_reason(reason: Why) -> None:
    assert after_refusal(S.REQUESTED, reason) is S.REFUSED


@pytest.mark.parametrize(
    ("status", "reason", "then"),
    [
        (S.CLOSING, Why.NOT_ACTIVE, S.CLOSING),  # closing or closed at the exchange: its closed settles it
        (S.CLOSING, Why.UNKNOWN_COVER, S.REFUSED),  # never to be closed: the account is free again
        (S.CLOSED, Why.NOT_ACTIVE, S.CLOSED),  # a refusal overtaken by the close it refused
    ],
)
def test_a_refused_close_keeps_what_the_exchange_may_still_close(status: S, reason: Why, then: S) -> None:
    assert after_refusal(status, reason) is then


@pytest.mark.parametrize("status", [S.ACTIVE, S.REFUSED])
def test_a_refusal_nothing_waited_for_is_unsolicited(status: S) -> None:
    assert after_refusal(status, Why.NOT_ACTIVE) is None
