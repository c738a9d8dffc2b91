"""Order acceptance checks (seed 001 S71–S86, R-001-21..25), in the seed's order. Pure: the
caller loads what the checks need (instrument, CertID list entry, open exposure) and passes it in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from uuid import UUID

from agents.exchange.book import Order
from broker.stock_certificates import CertificateInvalid, content_of, expired, verify_certificate, verify_endorsement
from broker.trust import TrustStore
from schemas import market_rules as rules
from schemas.certificates import ElectronicStockCertificate, ShareClass, TransferRestriction
from schemas.identity import Participant
from schemas.trading import OrderRefusal, OrderType, ReplaceOrder, Side, SubmitOrder


@dataclass(frozen=True, slots=True)
class Instrument:
    issue_code: str
    share_class: str
    reference_price: Decimal
    last_price: Decimal | None = None

    @property
    def band(self) -> rules.PriceBand:
        return rules.price_band(self.reference_price)

    def market_limit(self, side: Side) -> Decimal:
        """The furthest a market order may trade today (seed 002 §9.6): the day's upper price
        limit for a buy — what its cover holds per share — and the lower for a sell."""
        band = self.band
        return band.upper if side is Side.BUY else band.lower


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: OrderRefusal
    detail: str


class Refused(Exception):
    def __init__(self, reason: OrderRefusal, detail: str) -> None:
        super().__init__(detail)
        self.refusal = Refusal(reason, detail)


@dataclass(frozen=True, slots=True)
class Books:
    """What the exchange's books say about this order's certificate and its sender."""

    duplicate_client_order_id: bool
    listed_holder: str | None  # the CertID list's holder of the order's CertID, if valid
    committed_to: int | None  # the live sell order the CertID already backs
    open_buy_exposure: Decimal  # notional of the sender's open buy orders


def sell_context(order: SubmitOrder) -> str:
    """What the seller's endorsement is bound to: this order and no other."""
    return f"order:{order.user_id}:{order.client_order_id}"


def certificate_of(order: SubmitOrder, trust: TrustStore) -> ElectronicStockCertificate:
    """S72: the attached certificate's issuer signature; raises ``Refused``."""
    assert order.certificate is not None
    try:
        return verify_certificate(order.certificate.certificate, trust)
    except CertificateInvalid as exc:
        raise Refused(OrderRefusal.CERTIFICATE_SIGNATURE_INVALID, exc.detail) from exc


def check(
    order: SubmitOrder,
    sender: Participant,
    instrument: Instrument | None,
    books: Books,
    trust: TrustStore,
    now: datetime,
) -> ElectronicStockCertificate | None:
    """Every acceptance check; returns the verified certificate of a sell order, or raises ``Refused``."""
    if order.user_id != sender.user_id:
        raise Refused(OrderRefusal.USER_MISMATCH, f"order names {order.user_id}, signed by {sender.user_id}")
    if instrument is None:
        raise Refused(OrderRefusal.UNKNOWN_ISSUE, f"{order.issue_code} is not listed")
    if books.duplicate_client_order_id:
        raise Refused(OrderRefusal.DUPLICATE_CLIENT_ORDER_ID, f"{order.client_order_id} was used before")
    _check_price(order, instrument)
    if order.safekeeping_account is not None:
        _check_book_entry(order, sender, instrument, books)
        return None
    if order.terms.side is Side.BUY:
        _check_buy(order, sender, instrument, books)
        return None
    return _check_sell(order, sender, books, trust, now)


def _check_book_entry(order: SubmitOrder, sender: Participant, instrument: Instrument, books: Books) -> None:
    """A custody client's order: no certificate travels, custody checks and moves the position
    when the trade settles (docs/dvp.md); a buy order is limited like any other."""
    if order.certificate is not None:
        raise Refused(OrderRefusal.UNEXPECTED_CERTIFICATE, "a book-entry order sells from its safekeeping account")
    if order.terms.side is Side.BUY:
        _check_buy(order.model_copy(update={"holder_name": "-", "holder_address": "-"}), sender, instrument, books)


def _check_price(order: SubmitOrder, instrument: Instrument) -> None:
    if order.terms.price is not None:
        check_price(order.terms.price, instrument)


def check_price(price: Decimal, instrument: Instrument) -> None:
    """A price on the tick and within the day's limits (seed 002 §9.6)."""
    if not rules.on_tick(price):
        raise Refused(OrderRefusal.INVALID_TICK, f"{price} is not a multiple of the tick {rules.tick_size(price)}")
    band = instrument.band
    if not band.contains(price):
        raise Refused(
            OrderRefusal.PRICE_LIMIT_EXCEEDED,
            f"{price} is outside today's limits {band.lower}–{band.upper} (reference {instrument.reference_price})",
        )


def worst_price(order: SubmitOrder, instrument: Instrument) -> Decimal:
    """What a buy order could cost per share: its limit, or the day's upper limit for a market order
    (seed 002 §9.6)."""
    if order.terms.order_type is OrderType.MARKET or order.terms.price is None:
        return instrument.band.upper
    return order.terms.price


def _check_buy(order: SubmitOrder, sender: Participant, instrument: Instrument, books: Books) -> None:
    if order.certificate is not None:
        raise Refused(OrderRefusal.UNEXPECTED_CERTIFICATE, "a buy order carries no certificate")
    if not order.holder_name or not order.holder_address:
        raise Refused(OrderRefusal.MISSING_HOLDER_DETAILS, "a buy order names the buyer and address (Fig. 12)")
    if sender.policy is None:
        raise Refused(OrderRefusal.NO_CERTIFICATE_POLICY, "the identity certificate carries no policy")
    notional = worst_price(order, instrument) * order.terms.quantity
    limit = sender.policy.account_usage_limit
    if books.open_buy_exposure + notional > limit:
        raise Refused(
            OrderRefusal.ACCOUNT_USAGE_LIMIT_EXCEEDED,
            f"{_amount(notional)} with {_amount(books.open_buy_exposure)} already open exceeds the account "
            f"usage limit {_amount(limit)}",
        )


def _check_sell(
    order: SubmitOrder, sender: Participant, books: Books, trust: TrustStore, now: datetime
) -> ElectronicStockCertificate:
    if order.certificate is None:
        raise Refused(OrderRefusal.MISSING_CERTIFICATE, "a sell order carries the seller's certificate")
    certificate = certificate_of(order, trust)  # S72, the issuer's signature
    try:  # S72, the seller's countersignature for this order
        verify_endorsement(
            order.certificate,
            0,
            trust,
            endorser=sender.user_id,
            purpose="sell_order",
            context=sell_context(order),
            now=now,
        )
    except CertificateInvalid as exc:
        raise Refused(OrderRefusal.SELLER_ENDORSEMENT_INVALID, exc.detail) from exc
    check_certificate_terms(order.issue_code, order.share_class, certificate, now)  # S75–S77
    _check_sell_policy(order, sender, certificate)  # S78–S80
    check_seller_holds(certificate, sender.user_id, books.listed_holder, books.committed_to)
    return certificate


def check_seller_holds(
    certificate: ElectronicStockCertificate, seller: str, listed_holder: str | None, committed_to: int | None
) -> None:
    """S81–S86: the certificate is the seller's, valid in the CertID list, and backs no live sell order."""
    if certificate.holder_user_id != seller:  # S81–S83
        raise Refused(
            OrderRefusal.HOLDER_MISMATCH, f"certificate is held by {certificate.holder_user_id}, the seller is {seller}"
        )
    if listed_holder != certificate.holder_user_id:  # S84–S86
        raise Refused(
            OrderRefusal.CERTIFICATE_NOT_LISTED,
            f"CertID {certificate.cert_id} of {certificate.holder_user_id} is not in the CertID list",
        )
    if committed_to is not None:
        raise Refused(
            OrderRefusal.CERTIFICATE_ALREADY_COMMITTED,
            f"CertID {certificate.cert_id} already backs order {committed_to}",
        )


def check_certificate_terms(
    issue_code: str, share_class: ShareClass, certificate: ElectronicStockCertificate, now: datetime
) -> None:
    """S75–S77: the certificate is of the issue and class traded, not expired, freely transferable."""
    if certificate.issue_code != issue_code or certificate.share_class != share_class:
        raise Refused(
            OrderRefusal.WRONG_ISSUE,
            f"certificate is for {certificate.issue_code} {certificate.share_class.value}",
        )
    if expired(certificate, now.date()):
        raise Refused(OrderRefusal.CERTIFICATE_EXPIRED, f"certificate expired {certificate.expires_on}")
    if certificate.transfer_restriction is not TransferRestriction.NONE:
        raise Refused(
            OrderRefusal.TRANSFER_RESTRICTED,
            f"shares are {certificate.transfer_restriction.value.replace('_', ' ')}",
        )


def _check_sell_policy(order: SubmitOrder, sender: Participant, certificate: ElectronicStockCertificate) -> None:
    # Kabuto has no stock lending: whatever the policy, a seller sells only shares it holds.
    if order.terms.quantity > certificate.shares:
        prohibited = sender.policy is None or sender.policy.short_selling_prohibited
        raise Refused(
            OrderRefusal.SHORT_SELLING_PROHIBITED,
            f"selling {order.terms.quantity} against a certificate of {certificate.shares} shares"
            + (" (short selling is prohibited by the certificate policy)" if prohibited else ""),
        )


def cert_id_of(order: SubmitOrder) -> UUID | None:
    """The CertID a sell order names, read before verification only to look up the books."""
    if order.certificate is None:
        return None
    try:
        return content_of(order.certificate).cert_id
    except ValueError:
        return None


def replace_refusal(
    old: Order, request: ReplaceOrder, instrument: Instrument, sender: Participant, open_buy_exposure: Decimal
) -> Refusal | None:
    """The checks a replacement needs again: price rules, the certificate's cover, the usage limit."""
    if (request.price is None) != (old.order_type is OrderType.MARKET):
        return Refusal(OrderRefusal.REPLACE_NOT_ALLOWED, "a replace keeps the order type")
    try:
        if request.price is not None:
            check_price(request.price, instrument)
    except Refused as refused:
        return refused.refusal
    reduction = request.price == old.price and request.quantity <= old.remaining
    if old.side is Side.SELL and old.filled and not reduction:
        # Its certificate is in name transfer, bound to this order: only the open rest may shrink.
        return Refusal(
            OrderRefusal.REPLACE_NOT_ALLOWED,
            "a partly filled sell order can only be reduced; cancel it and sell the remainder anew",
        )
    if old.side is Side.SELL and request.quantity > old.quantity:
        return Refusal(OrderRefusal.SHORT_SELLING_PROHIBITED, "a replace cannot sell more than the order did")
    if old.side is Side.BUY and sender.policy is not None:
        price = request.price or instrument.band.upper
        current = (old.price or Decimal(0)) * old.remaining
        if open_buy_exposure - current + price * request.quantity > sender.policy.account_usage_limit:
            return Refusal(OrderRefusal.ACCOUNT_USAGE_LIMIT_EXCEEDED, "the replacement exceeds the account usage limit")
    if old.side is Side.BUY and (
        request.quantity > old.remaining or (request.price or Decimal(0)) > (old.price or Decimal(0))
    ):
        # Issue 11: the cover settlement holds is for this order's worst case; a replace cannot raise it.
        return Refusal(
            OrderRefusal.COVER_REQUIRED, "a replace cannot raise a buy order's cover; cancel it and enter a new order"
        )
    return None


def _amount(value: Decimal) -> str:
    """An amount in a refusal's detail as the same digits however it was summed: the database's
    sum carries its scale (98500.0000), a sum in Python another (98500), and an order read ahead
    with its run is refused with the same words as one decided alone (found by an independent
    suite, tests/integration/test_batch_equivalence_random.py)."""
    return f"{value.normalize():f}"
