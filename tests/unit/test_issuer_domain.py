"""The issuer's examination of a request (seed 001 S55–S56) and the certificate it draws up (S58)."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.issuer.domain import IssuingAgent, Offering, examine, new_certificate
from schemas.certificates import ShareClass, TransferRestriction
from schemas.identity import CertificatePolicy, Participant, Role
from schemas.issuance import CertificateIssuanceRequest, IssuanceRefusal
from tests import support

LIMIT = 1_000_000  # yen; with the offer price of 1000, exactly 1000 shares
ALICE = Participant(user_id="alice", role=Role.INVESTOR, policy=CertificatePolicy(account_usage_limit=LIMIT))


def reason(
    request: CertificateIssuanceRequest | None = None,
    requester: Participant = ALICE,
    offering: Offering | None = None,
) -> IssuanceRefusal | None:
    refusal = examine(request or support.issuance_request(), requester, offering or support.offering())
    return refusal.reason if refusal else None


def test_a_valid_request_is_accepted() -> None:
    assert examine(support.issuance_request(), ALICE, support.offering()) is None


@pytest.mark.parametrize(
    ("request_changes", "offering_changes", "refused"),
    [
        ({"user_id": "bob"}, {}, IssuanceRefusal.HOLDER_MISMATCH),
        ({}, {"status": "closed"}, IssuanceRefusal.OFFERING_CLOSED),
        ({"share_class": ShareClass.PREFERRED}, {}, IssuanceRefusal.SHARE_CLASS_MISMATCH),
        ({"shares": 50}, {}, IssuanceRefusal.BELOW_MINIMUM_LOT),
        ({"shares": 150}, {}, IssuanceRefusal.NOT_A_LOT_MULTIPLE),
        ({"shares": 500}, {"shares_remaining": 400}, IssuanceRefusal.INSUFFICIENT_SHARES),
        ({"shares": 1100}, {}, IssuanceRefusal.ACCOUNT_USAGE_LIMIT_EXCEEDED),
        ({}, {"currency": "USD"}, IssuanceRefusal.ACCOUNT_USAGE_LIMIT_EXCEEDED),
    ],
)
def test_a_request_failing_one_check_is_refused_for_it(
    request_changes: dict[str, object], offering_changes: dict[str, object], refused: IssuanceRefusal
) -> None:
    request = support.issuance_request(**request_changes)
    assert reason(request, offering=support.offering(**offering_changes)) is refused


def test_an_unknown_issue_is_refused() -> None:
    refusal = examine(support.issuance_request(), ALICE, None)
    assert refusal is not None and refusal.reason is IssuanceRefusal.UNKNOWN_ISSUE


def test_a_requester_without_a_certificate_policy_is_refused() -> None:
    no_policy = Participant(user_id="alice", role=Role.INVESTOR, policy=None)
    assert reason(requester=no_policy) is IssuanceRefusal.NO_CERTIFICATE_POLICY


def test_an_amount_equal_to_the_limit_and_shares_equal_to_those_remaining_are_accepted() -> None:
    request = support.issuance_request(shares=1000)
    assert reason(request, offering=support.offering(shares_remaining=1000)) is None


@given(shares=st.integers(min_value=1, max_value=10**7), price=st.integers(min_value=1, max_value=10**6))
def test_the_limit_is_exceeded_exactly_when_price_times_shares_exceeds_it(shares: int, price: int) -> None:
    offering = support.offering(
        offer_price=Decimal(price), minimum_lot=1, shares_offered=shares, shares_remaining=shares
    )
    refused = reason(support.issuance_request(shares=shares), offering=offering)
    assert (refused is IssuanceRefusal.ACCOUNT_USAGE_LIMIT_EXCEEDED) == (price * shares > LIMIT)
    assert refused in (None, IssuanceRefusal.ACCOUNT_USAGE_LIMIT_EXCEEDED)


def test_the_new_certificate_carries_every_field_from_the_offering_and_request() -> None:
    offering = support.offering(
        share_class=ShareClass.CONVERTIBLE,
        transfer_restriction=TransferRestriction.BOARD_APPROVAL_REQUIRED,
        convertible_details="1:1 into common after 2030",
        certificate_validity_days=30,
        currency="USD",
    )
    request = support.issuance_request(shares=700, share_class=ShareClass.CONVERTIBLE)
    agent = IssuingAgent(user_id="issuer", name="Kabuto Transfer Agent", address="2-2 Nihonbashi, Tokyo")
    cert_id = uuid.uuid4()
    today = date(2025, 1, 31)

    certificate = new_certificate(offering, request, cert_id=cert_id, number="KBT-00000007", today=today, agent=agent)

    assert certificate.model_dump() == {
        "company_name": offering.company_name,
        "incorporated_on": offering.incorporated_on,
        "certificate_number": "KBT-00000007",
        "cert_id": cert_id,
        "shares": 700,
        "par_value_per_share": offering.par_value_per_share,
        "currency": "USD",
        "issued_on": today,
        "expires_on": today + timedelta(days=30),
        "holder_name": "Alice",
        "holder_user_id": "alice",
        "share_class": ShareClass.CONVERTIBLE,
        "convertible_details": "1:1 into common after 2030",
        "transfer_restriction": TransferRestriction.BOARD_APPROVAL_REQUIRED,
        "signature_algorithm": "Ed25519",
        "issuing_agent_name": "Kabuto Transfer Agent",
        "issuing_agent_address": "2-2 Nihonbashi, Tokyo",
        "issue_code": offering.issue_code,
        "issuing_agent_id": "issuer",
    }
    assert certificate.expires_on == date(2025, 3, 2)
