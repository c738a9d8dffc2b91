"""Version 1 messages with account information in clear, until the cut-over (R-001-06).

Releases before issue 13 carried the settlement account of an order (33) and the dividend
account of 32 and 39 in clear. Their versions stay in the catalogue (a released version is a
promise, docs/catalogue/README.md), but the consumer refuses them as ``clear_account_refused``
from ``KABUTO_CLEAR_ACCOUNTS_UNTIL`` on (``broker.consumer.check_cut_over``). Before that
moment the receiving agent seals what they carry the moment it reads them, to the settlement
agent's key, and handles the sealed version: nothing it stores, forwards or logs holds the
account in clear.
"""

from __future__ import annotations

from broker.sealed_box import seal_account, sealed_dividend
from broker.trust import TrustStore
from schemas.issuance import CertificateIssuanceRequest, CertificateIssuanceRequestV1, DividendDeliveryV1
from schemas.trading import (
    CertificateRequestAfterTransfer,
    CertificateRequestAfterTransferV1,
    SubmitOrder,
    SubmitOrderV1,
)


def sealed_order(trust: TrustStore, order: SubmitOrderV1) -> SubmitOrder:
    account = seal_account(trust, order.user_id, order.settlement_account)
    return SubmitOrder.model_validate({**order.model_dump(), "settlement_account": account})


def _dividend(trust: TrustStore, holder: str, delivery: DividendDeliveryV1) -> dict[str, str]:
    return sealed_dividend(trust, holder, delivery.method, delivery.account).model_dump(mode="json")


def sealed_issuance_request(trust: TrustStore, request: CertificateIssuanceRequestV1) -> CertificateIssuanceRequest:
    dividend = _dividend(trust, request.user_id, request.dividend_delivery)
    return CertificateIssuanceRequest.model_validate({**request.model_dump(), "dividend_delivery": dividend})


def sealed_request_after_transfer(
    trust: TrustStore, holder: str, request: CertificateRequestAfterTransferV1
) -> CertificateRequestAfterTransfer:
    dividend = _dividend(trust, holder, request.dividend_delivery)
    return CertificateRequestAfterTransfer.model_validate({**request.model_dump(), "dividend_delivery": dividend})
