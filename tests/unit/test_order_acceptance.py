"""Order acceptance at the exchange (agents/exchange/acceptance.py, seed 001 S71–S86, E4–E8).

Each refusal reason ``check`` can give, driven with real certificates signed by the issuer's
key and endorsed by the investors' keys from the session CA; then the order the checks run in
(R-001-21..25), and the checks a cancel-replace runs again (``replace_refusal``).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from agents.exchange import acceptance
from agents.exchange.acceptance import Books, Instrument, Refused
from agents.exchange.book import Order
from broker.pki import KeyStore
from broker.stock_certificates import endorse, sign_certificate
from broker.trust import TrustStore
from schemas.certificates import (
    ElectronicStockCertificate,
    EndorsedCertificate,
    ShareClass,
    SignedCertificate,
    TransferRestriction,
)
from schemas.identity import Participant, Role
from schemas.trading import OrderRefusal, OrderTerms, OrderType, ReplaceOrder, Side, SubmitOrder, TimeInForce
from tests import support

R = OrderRefusal
NOW = datetime.now(UTC)
KBT = Instrument(support.ISSUE, "common", Decimal("1000"))  # band 700..1300
LISTED = Books(duplicate_client_order_id=False, listed_holder="alice", committed_to=None, open_buy_exposure=Decimal(0))


@pytest.fixture(scope="module")
def trust(keys: KeyStore) -> TrustStore:
    return TrustStore(keys.ca_certificate(), keys.certificates())


def signed(keys: KeyStore, shares: int = 500, **changes: Any) -> SignedCertificate:
    return sign_certificate(keys.load_identity("issuer"), support.stock_certificate(shares, **changes))


def buy(quantity: int = 100, price: str | None = "1000", **changes: Any) -> SubmitOrder:
    values: dict[str, Any] = dict(
        client_order_id="b1",
        user_id="alice",
        issue_code=support.ISSUE,
        terms=terms(Side.BUY, quantity, price),
        settlement_account=support.box("alice-cash"),
        holder_name="Alice",
        holder_address="1-1 Kabuto-cho, Tokyo",
    )
    return SubmitOrder(**(values | changes))


def terms(side: Side, quantity: int, price: str | None, tif: TimeInForce = TimeInForce.DAY) -> OrderTerms:
    order_type = OrderType.LIMIT if price is not None else OrderType.MARKET
    return OrderTerms(
        side=side,
        order_type=order_type,
        price=None if price is None else Decimal(price),
        quantity=quantity,
        time_in_force=tif,
    )


def sell(
    keys: KeyStore,
    certificate: SignedCertificate | None,
    quantity: int = 500,
    price: str = "1000",
    seller: str = "alice",
    endorser: str | None = None,
    context: str | None = None,
    **changes: Any,
) -> SubmitOrder:
    """A sell order from ``seller``, its certificate endorsed by ``endorser`` (the seller unless
    told) for ``context`` (this order unless told)."""
    order = SubmitOrder(
        client_order_id="s1",
        user_id=seller,
        issue_code=support.ISSUE,
        terms=terms(Side.SELL, quantity, price),
        settlement_account=support.box(f"{seller}-cash"),
        **changes,
    )
    if certificate is None:
        return order
    endorsement = endorse(
        keys.load_identity(endorser or seller),
        certificate,
        "sell_order",
        context or acceptance.sell_context(order),
    )
    return order.model_copy(update={"certificate": endorsement})


def sender(keys: KeyStore, user: str = "alice") -> Participant:
    return keys.load_identity(user).participant


def refusal(
    keys: KeyStore,
    trust: TrustStore,
    order: SubmitOrder,
    *,
    user: str = "alice",
    instrument: Instrument | None = KBT,
    books: Books = LISTED,
    participant: Participant | None = None,
) -> OrderRefusal:
    with pytest.raises(Refused) as refused:
        acceptance.check(order, participant or sender(keys, user), instrument, books, trust, NOW)
    return refused.value.refusal.reason


def accepted(
    keys: KeyStore,
    trust: TrustStore,
    order: SubmitOrder,
    *,
    user: str = "alice",
    books: Books = LISTED,
    instrument: Instrument = KBT,
) -> ElectronicStockCertificate | None:
    return acceptance.check(order, sender(keys, user), instrument, books, trust, NOW)


def books(**changes: Any) -> Books:
    return dataclasses.replace(LISTED, **changes)


# Before the certificate: who, what, and at what price


def test_an_order_naming_another_user_than_its_signer_is_refused(keys: KeyStore, trust: TrustStore) -> None:
    """R-001-60: alice cannot place an order in bob's name."""
    assert refusal(keys, trust, buy(user_id="bob")) is R.USER_MISMATCH


def test_an_order_for_an_issue_not_listed_is_refused(keys: KeyStore, trust: TrustStore) -> None:
    """R-001-20: an order names a listed issue."""
    assert refusal(keys, trust, buy(), instrument=None) is R.UNKNOWN_ISSUE


def test_a_client_order_id_used_before_is_refused(keys: KeyStore, trust: TrustStore) -> None:
    assert refusal(keys, trust, buy(), books=books(duplicate_client_order_id=True)) is R.DUPLICATE_CLIENT_ORDER_ID


@pytest.mark.parametrize(("reference", "price"), [("1000", "1000.5"), ("3000", "3001"), ("3000", "3004")])
def test_a_price_off_the_tick_is_refused(keys: KeyStore, trust: TrustStore, reference: str, price: str) -> None:
    """Tick 1 below 3,000 JPY, 5 from 3,000 to 5,000."""
    instrument = Instrument(support.ISSUE, "common", Decimal(reference))
    assert refusal(keys, trust, buy(price=price), instrument=instrument) is R.INVALID_TICK


def test_a_price_on_the_tick_of_its_band_is_accepted(keys: KeyStore, trust: TrustStore) -> None:
    assert (
        accepted(keys, trust, buy(price="3005"), instrument=Instrument(support.ISSUE, "common", Decimal("3000")))
        is None
    )


@pytest.mark.parametrize("price", ["699", "1301"])
def test_a_price_outside_the_daily_limits_is_refused(keys: KeyStore, trust: TrustStore, price: str) -> None:
    """Seed 002 §9.6: reference 1,000 allows 700..1,300."""
    assert refusal(keys, trust, buy(price=price)) is R.PRICE_LIMIT_EXCEEDED


@pytest.mark.parametrize("price", ["700", "1300"])
def test_the_daily_limits_themselves_are_allowed(keys: KeyStore, trust: TrustStore, price: str) -> None:
    assert accepted(keys, trust, buy(price=price)) is None


# Buy orders (R-001-20, R-001-23)


def test_a_buy_order_carrying_a_certificate_is_refused(keys: KeyStore, trust: TrustStore) -> None:
    """R-001-20: only sell orders attach a certificate."""
    certificate = EndorsedCertificate(certificate=signed(keys))
    assert refusal(keys, trust, buy(certificate=certificate)) is R.UNEXPECTED_CERTIFICATE


@pytest.mark.parametrize("missing", ["holder_name", "holder_address"])
def test_a_buy_order_without_the_buyers_name_and_address_is_refused(
    keys: KeyStore, trust: TrustStore, missing: str
) -> None:
    """R-001-20: a buy order names the buyer and its address (Fig. 12)."""
    assert refusal(keys, trust, buy().model_copy(update={missing: None})) is R.MISSING_HOLDER_DETAILS


def test_a_buyer_whose_identity_certificate_has_no_policy_is_refused(keys: KeyStore, trust: TrustStore) -> None:
    """R-001-23: without a certificate policy there is no limit to check against."""
    bare = Participant(user_id="alice", role=Role.INVESTOR, policy=None)
    assert refusal(keys, trust, buy(), participant=bare) is R.NO_CERTIFICATE_POLICY


def test_a_buy_above_the_account_usage_limit_is_refused(keys: KeyStore, trust: TrustStore) -> None:
    """R-001-23 (E6): 10,001 × 1,000 JPY against a limit of 10,000,000."""
    assert refusal(keys, trust, buy(10_001)) is R.ACCOUNT_USAGE_LIMIT_EXCEEDED
    assert accepted(keys, trust, buy(10_000)) is None  # exactly the limit


def test_the_usage_limit_counts_the_buyers_open_orders(keys: KeyStore, trust: TrustStore) -> None:
    """R-001-23: 9,000,000 already open leaves room for 1,000,000 more, not 1,001,000."""
    open_ = books(open_buy_exposure=Decimal("9000000"))
    assert refusal(keys, trust, buy(1_001), books=open_) is R.ACCOUNT_USAGE_LIMIT_EXCEEDED
    assert accepted(keys, trust, buy(1_000), books=open_) is None


def test_a_market_buy_is_valued_at_the_days_upper_limit(keys: KeyStore, trust: TrustStore) -> None:
    """R-001-23, seed 002 §9.6: 7,700 shares at market could cost 7,700 × 1,300 > 10,000,000; at 1,000 they fit."""
    assert refusal(keys, trust, buy(7_700, price=None)) is R.ACCOUNT_USAGE_LIMIT_EXCEEDED
    assert accepted(keys, trust, buy(7_700, price="1000")) is None
    assert accepted(keys, trust, buy(7_692, price=None)) is None  # 7,692 × 1,300 = 9,999,600


# Sell orders: the certificate (R-001-21, R-001-22)


def test_a_sell_order_from_the_holder_of_a_listed_certificate_is_accepted(keys: KeyStore, trust: TrustStore) -> None:
    certificate = signed(keys)
    verified = accepted(keys, trust, sell(keys, certificate))
    assert verified is not None and verified.shares == 500 and verified.holder_user_id == "alice"


def test_a_sell_order_without_a_certificate_is_refused(keys: KeyStore, trust: TrustStore) -> None:
    """R-001-58."""
    assert refusal(keys, trust, sell(keys, None)) is R.MISSING_CERTIFICATE


def test_an_altered_certificate_is_refused(keys: KeyStore, trust: TrustStore) -> None:
    """R-001-21, R-001-59 (E4): 500 shares rewritten to 5,000 after the issuer signed."""
    original = signed(keys)
    content = original.content.replace(b'"shares":500', b'"shares":5000')
    assert content != original.content
    altered = original.model_copy(update={"content": content})
    assert refusal(keys, trust, sell(keys, altered, quantity=5000)) is R.CERTIFICATE_SIGNATURE_INVALID


def test_a_certificate_signed_by_someone_other_than_an_issuer_is_refused(keys: KeyStore, trust: TrustStore) -> None:
    """R-001-21: alice cannot sign herself a certificate, whatever it says."""
    genuine = signed(keys)
    forged = genuine.model_copy(
        update={
            "issuer_signature": genuine.issuer_signature.model_copy(
                update={
                    "certificate": keys.load_identity("alice").certificate_der,
                    "signature": keys.load_identity("alice").sign(genuine.content),
                }
            )
        }
    )
    assert refusal(keys, trust, sell(keys, forged)) is R.CERTIFICATE_SIGNATURE_INVALID


def test_a_certificate_endorsed_by_someone_else_is_refused(keys: KeyStore, trust: TrustStore) -> None:
    """R-001-21: the seller countersigns (IC key); bob's countersignature does not stand for alice's."""
    order = sell(keys, signed(keys), endorser="bob")
    assert refusal(keys, trust, order) is R.SELLER_ENDORSEMENT_INVALID


def test_an_endorsement_for_another_order_is_refused(keys: KeyStore, trust: TrustStore) -> None:
    """An endorsement cannot be lifted from one order onto another."""
    order = sell(keys, signed(keys), context="order:alice:an-earlier-order")
    assert refusal(keys, trust, order) is R.SELLER_ENDORSEMENT_INVALID


def test_an_unendorsed_certificate_is_refused(keys: KeyStore, trust: TrustStore) -> None:
    """R-001-20, R-001-21: the seller signs the certificate it attaches."""
    order = sell(keys, None).model_copy(update={"certificate": EndorsedCertificate(certificate=signed(keys))})
    assert refusal(keys, trust, order) is R.SELLER_ENDORSEMENT_INVALID


def test_an_expired_certificate_is_refused(keys: KeyStore, trust: TrustStore) -> None:
    """R-001-22 (E5): Fig. 6 field 8."""
    expired = signed(keys, expires_on=NOW.date() - timedelta(days=1))
    assert refusal(keys, trust, sell(keys, expired)) is R.CERTIFICATE_EXPIRED


@pytest.mark.parametrize(
    "restriction", [TransferRestriction.BOARD_APPROVAL_REQUIRED, TransferRestriction.NOT_TRANSFERABLE]
)
def test_a_certificate_with_a_transfer_restriction_is_refused(
    keys: KeyStore, trust: TrustStore, restriction: TransferRestriction
) -> None:
    """R-001-22 (E5): Fig. 6 field 13."""
    restricted = signed(keys, transfer_restriction=restriction)
    assert refusal(keys, trust, sell(keys, restricted)) is R.TRANSFER_RESTRICTED


@pytest.mark.parametrize("changes", [{"issue_code": "OTHER"}, {"share_class": ShareClass.PREFERRED}])
def test_a_certificate_of_another_issue_or_class_is_refused(
    keys: KeyStore, trust: TrustStore, changes: dict[str, Any]
) -> None:
    assert refusal(keys, trust, sell(keys, signed(keys, **changes))) is R.WRONG_ISSUE


# Sell orders: policy, holder, CertID list (R-001-23..25, R-001-57, R-001-58)


def test_selling_more_than_the_certificate_holds_is_refused(keys: KeyStore, trust: TrustStore) -> None:
    """R-001-23, R-001-58 (E6): no short selling — 600 against a certificate of 500."""
    assert refusal(keys, trust, sell(keys, signed(keys), quantity=600)) is R.SHORT_SELLING_PROHIBITED
    assert accepted(keys, trust, sell(keys, signed(keys), quantity=300)) is not None  # part of it is fine


def test_selling_someone_elses_certificate_is_refused(keys: KeyStore, trust: TrustStore) -> None:
    """R-001-24 (E7): bob endorses alice's certificate for his own order."""
    order = sell(keys, signed(keys), seller="bob")
    assert refusal(keys, trust, order, user="bob", books=books(listed_holder="alice")) is R.HOLDER_MISMATCH


@pytest.mark.parametrize("listed", [None, "bob"])
def test_a_certificate_not_in_the_certid_list_is_refused(keys: KeyStore, trust: TrustStore, listed: str | None) -> None:
    """R-001-25, R-001-57 (E8): not listed at all, or listed under another holder."""
    order = sell(keys, signed(keys))
    assert refusal(keys, trust, order, books=books(listed_holder=listed)) is R.CERTIFICATE_NOT_LISTED


def test_a_certificate_already_backing_a_live_order_is_refused(keys: KeyStore, trust: TrustStore) -> None:
    """R-001-57: one certificate, one live sell order."""
    order = sell(keys, signed(keys))
    assert refusal(keys, trust, order, books=books(committed_to=7)) is R.CERTIFICATE_ALREADY_COMMITTED


# The seed's order of checks: S72–S74, S75–S77, S78–S80, S81–S83, S84–S86


def test_a_mis_signed_order_over_the_limit_gets_the_signature_refusal(keys: KeyStore, trust: TrustStore) -> None:
    """S72 before S78 (R-001-21 before R-001-23): an altered certificate is refused as such, whatever else is wrong."""
    original = signed(keys)
    altered = original.model_copy(update={"content": original.content.replace(b"Alice", b"Alicia")})
    order = sell(keys, altered, quantity=600, seller="alice")
    assert refusal(keys, trust, order, books=books(listed_holder=None, committed_to=3)) is (
        R.CERTIFICATE_SIGNATURE_INVALID
    )


def test_a_bad_endorsement_is_found_before_expiry(keys: KeyStore, trust: TrustStore) -> None:
    """S72 before S75 (R-001-21 before R-001-22)."""
    expired = signed(keys, expires_on=NOW.date() - timedelta(days=1))
    assert refusal(keys, trust, sell(keys, expired, endorser="bob")) is R.SELLER_ENDORSEMENT_INVALID


def test_expiry_is_found_before_the_policy(keys: KeyStore, trust: TrustStore) -> None:
    """S75 before S78 (R-001-22 before R-001-23)."""
    expired = signed(keys, expires_on=NOW.date() - timedelta(days=1))
    assert refusal(keys, trust, sell(keys, expired, quantity=600)) is R.CERTIFICATE_EXPIRED


def test_the_policy_is_found_before_the_holder(keys: KeyStore, trust: TrustStore) -> None:
    """S78 before S81 (R-001-23 before R-001-24): bob sells 600 of alice's 500."""
    order = sell(keys, signed(keys), quantity=600, seller="bob")
    assert refusal(keys, trust, order, user="bob") is R.SHORT_SELLING_PROHIBITED


def test_the_holder_is_found_before_the_certid_list(keys: KeyStore, trust: TrustStore) -> None:
    """S81 before S84 (R-001-24 before R-001-25)."""
    order = sell(keys, signed(keys), seller="bob")
    assert refusal(keys, trust, order, user="bob", books=books(listed_holder=None)) is R.HOLDER_MISMATCH


def test_the_certid_list_is_found_before_a_commitment(keys: KeyStore, trust: TrustStore) -> None:
    """R-001-25 first; then one live order per CertID (R-001-57)."""
    order = sell(keys, signed(keys))
    assert refusal(keys, trust, order, books=books(listed_holder=None, committed_to=3)) is R.CERTIFICATE_NOT_LISTED


def test_the_sender_is_checked_before_anything_about_the_order(keys: KeyStore, trust: TrustStore) -> None:
    """R-001-60 first: an order in someone else's name is refused as such."""
    order = sell(keys, signed(keys), price="1000.5").model_copy(update={"user_id": "bob"})
    assert refusal(keys, trust, order, instrument=None, books=books(duplicate_client_order_id=True)) is (
        R.USER_MISMATCH
    )


# Cancel-replace: the checks that apply again


def resting(side: Side, quantity: int = 500, remaining: int | None = None, price: str | None = "1000") -> Order:
    order_type = OrderType.LIMIT if price is not None else OrderType.MARKET
    return Order(
        1,
        "o1",
        "alice",
        side,
        order_type,
        None if price is None else Decimal(price),
        quantity,
        quantity if remaining is None else remaining,
    )


def replace(quantity: int, price: str | None) -> ReplaceOrder:
    return ReplaceOrder(
        client_order_id="o1",
        new_client_order_id="o2",
        quantity=quantity,
        price=None if price is None else Decimal(price),
    )


def replace_refusal(
    keys: KeyStore,
    old: Order,
    request: ReplaceOrder,
    exposure: str = "0",
    participant: Participant | None = None,
) -> OrderRefusal | None:
    refused = acceptance.replace_refusal(old, request, KBT, participant or sender(keys), Decimal(exposure))
    return None if refused is None else refused.reason


@pytest.mark.parametrize(
    ("old", "request_"),
    [(resting(Side.BUY), replace(500, None)), (resting(Side.BUY, price=None), replace(500, "1000"))],
)
def test_a_replace_cannot_change_the_order_type(keys: KeyStore, old: Order, request_: ReplaceOrder) -> None:
    assert replace_refusal(keys, old, request_) is R.REPLACE_NOT_ALLOWED


@pytest.mark.parametrize(("price", "reason"), [("1000.5", R.INVALID_TICK), ("1301", R.PRICE_LIMIT_EXCEEDED)])
def test_a_replacement_price_is_checked_like_a_new_one(keys: KeyStore, price: str, reason: OrderRefusal) -> None:
    assert replace_refusal(keys, resting(Side.SELL), replace(500, price)) is reason


def test_a_sell_replace_cannot_sell_more_than_the_order_did(keys: KeyStore) -> None:
    """R-001-58: the certificate covered the order's 500, not more."""
    assert replace_refusal(keys, resting(Side.SELL), replace(501, "1010")) is R.SHORT_SELLING_PROHIBITED
    assert replace_refusal(keys, resting(Side.SELL), replace(500, "1010")) is None


def test_a_partly_filled_sell_order_can_only_be_reduced(keys: KeyStore) -> None:
    """400 of 1,000 sold: the certificate is in name transfer for this order, so no new order may
    take it over — neither the filled shares again nor the 600 left at a new price."""
    partly_filled = resting(Side.SELL, quantity=1000, remaining=600)
    assert replace_refusal(keys, partly_filled, replace(1000, "1010")) is R.REPLACE_NOT_ALLOWED
    assert replace_refusal(keys, partly_filled, replace(600, "1010")) is R.REPLACE_NOT_ALLOWED
    assert replace_refusal(keys, partly_filled, replace(700, "1000")) is R.REPLACE_NOT_ALLOWED
    assert replace_refusal(keys, partly_filled, replace(300, "1000")) is None


def test_a_buy_replace_counts_the_exposure_it_gives_up(keys: KeyStore) -> None:
    """R-001-23: the old order's 500,000 JPY comes off the 9,500,000 open before the new one is added."""
    old = resting(Side.BUY)
    # 9,000,000 + 1,000,000 is within the limit; the larger order then needs a new cover (issue 11).
    assert replace_refusal(keys, old, replace(1000, "1000"), exposure="9500000") is OrderRefusal.COVER_REQUIRED
    assert replace_refusal(keys, old, replace(1001, "1000"), exposure="9500000") is R.ACCOUNT_USAGE_LIMIT_EXCEEDED


def test_a_replace_within_the_rules_is_allowed(keys: KeyStore) -> None:
    assert replace_refusal(keys, resting(Side.BUY), replace(300, "1000")) is None
    assert replace_refusal(keys, resting(Side.SELL), replace(200, "990")) is None
