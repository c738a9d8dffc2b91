"""Orders, certificates and hand-overs for an external participant (seed 001 messages 33/34, P3.1).

A buy order names the holder of record; a sell order carries the certificate it sells from,
countersigned by the seller for this very order (docs/signatures.md §4). The settlement account
is sealed to the settlement agent's certified key (R-001-06, docs/security.md §6): the exchange
forwards the box and never reads it; ``dividend`` does the same for 32 and 39. Client order ids
are idempotent at the exchange: sending the same order again (after a lost reply) is
answered with the same acceptance number; the same id with another payload is refused as
``client_order_id_conflict``.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from broker.envelope import Opened
from broker.sealed_box import seal_account, sealed_dividend
from broker.stock_certificates import endorse, verify_certificate
from kabuto_client.participant import Participant
from schemas.certificates import ElectronicStockCertificate, SignedCertificate
from schemas.identity import EXCHANGE_ID
from schemas.issuance import DividendDelivery, DividendMethod
from schemas.lifecycle import CertificateHandover
from schemas.trading import OrderTerms, OrderType, Side, SubmitOrder, TimeInForce

ORDER_REPLIES = ("order.accepted", "order.rejected")


def _terms(side: Side, quantity: int, price: Decimal | None, time_in_force: TimeInForce) -> OrderTerms:
    order_type = OrderType.MARKET if price is None else OrderType.LIMIT
    return OrderTerms(side=side, order_type=order_type, price=price, quantity=quantity, time_in_force=time_in_force)


def buy_order(
    me: Participant,
    client_order_id: str,
    issue_code: str,
    quantity: int,
    *,
    price: Decimal | None,
    account: str,
    holder_name: str,
    holder_address: str,
    time_in_force: TimeInForce = TimeInForce.DAY,
) -> SubmitOrder:
    return SubmitOrder(
        client_order_id=client_order_id,
        user_id=me.user_id,
        issue_code=issue_code,
        terms=_terms(Side.BUY, quantity, price, time_in_force),
        settlement_account=me.account_box(account),
        holder_name=holder_name,
        holder_address=holder_address,
    )


def sell_order(
    me: Participant,
    client_order_id: str,
    certificate: SignedCertificate,
    quantity: int,
    *,
    price: Decimal | None,
    account: str,
    time_in_force: TimeInForce = TimeInForce.DAY,
) -> SubmitOrder:
    """A sell order from ``certificate``, countersigned by ``me`` for this order only."""
    content = verified(me, certificate)
    context = f"order:{me.user_id}:{client_order_id}"
    return SubmitOrder(
        client_order_id=client_order_id,
        user_id=me.user_id,
        issue_code=content.issue_code,
        share_class=content.share_class,
        terms=_terms(Side.SELL, quantity, price, time_in_force),
        settlement_account=seal_account(me.trust, me.user_id, account),
        certificate=endorse(me.identity, certificate, "sell_order", context),
    )


def dividend(me: Participant, method: DividendMethod, account: str) -> DividendDelivery:
    """How ``me`` wants its dividends, for 32 and 39: the account sealed to settlement (R-001-44)."""
    return sealed_dividend(me.trust, me.user_id, method, account)


def verified(me: Participant, certificate: SignedCertificate) -> ElectronicStockCertificate:
    """The stock certificate inside, if its issuer's signature holds (raises ``CertificateInvalid``)."""
    return verify_certificate(certificate, me.trust)


async def place(
    me: Participant, order: SubmitOrder, *, exchange: str = EXCHANGE_ID, timeout: float = 30.0, attempts: int = 3
) -> Opened:
    """Send an order; the verified ``order.accepted`` or ``order.rejected``. Safe to call again."""
    return await me.request(order, to=exchange, expect=ORDER_REPLIES, timeout=timeout, attempts=attempts)


def handover(me: Participant, certificate: SignedCertificate, transferee: str, note: str = "") -> CertificateHandover:
    """A hand-over off the exchange (P3.1): ``certificate`` countersigned by ``me`` for ``transferee``
    only. Send it with ``me.send(…, to=transferee)``; the transferee asks the issuer to register it."""
    verified(me, certificate)
    endorsed = endorse(me.identity, certificate, "transfer", f"transfer:{transferee}")
    return CertificateHandover(handover_id=uuid.uuid4(), certificate=endorsed, note=note)
