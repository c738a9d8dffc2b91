"""Exchange trading (seed 001 Phase 2): orders 33/34, executions, name transfer 35/36, completion 37."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from schemas.catalogue import Message, message
from schemas.certificates import EndorsedCertificate, IssueCode, ShareClass, SignedCertificate
from schemas.identity import ParticipantId, Role
from schemas.issuance import DividendDelivery, DividendDeliveryV1
from schemas.money import AccountId, Amount, Currency, Price, Quantity
from schemas.sealed import SealedText

ClientOrderId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderType(StrEnum):
    LIMIT = "limit"
    MARKET = "market"


class TimeInForce(StrEnum):
    DAY = "day"
    GTC = "gtc"
    IOC = "ioc"
    FOK = "fok"


class OrderTerms(BaseModel):
    """What an order asks for; shared by submit and replace."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    side: Side
    order_type: OrderType
    price: Price | None = Field(default=None, description="Limit price; none for a market order.")
    quantity: Quantity
    time_in_force: TimeInForce = TimeInForce.DAY

    @model_validator(mode="after")
    def _price_matches_type(self) -> OrderTerms:
        if (self.order_type is OrderType.LIMIT) != (self.price is not None):
            raise ValueError("a limit order needs a price and a market order must not have one")
        return self


class _OrderRequest(Message):
    """What every version of ``order.submit`` carries besides the settlement account."""

    client_order_id: ClientOrderId
    user_id: ParticipantId
    issue_code: IssueCode
    share_class: ShareClass = ShareClass.COMMON
    terms: OrderTerms
    certificate: EndorsedCertificate | None = None
    holder_name: str | None = Field(default=None, max_length=200)
    holder_address: str | None = Field(default=None, max_length=400)
    safekeeping_account: AccountId | None = Field(
        default=None,
        description="A custody client's safekeeping account: the securities leg is a book-entry move at custody "
        "(a sell order then carries no certificate); book-entry orders match only book-entry orders.",
    )


_ORDER_SENDERS = {Role.INVESTOR, Role.BROKERAGE, Role.CUSTODY}


@message("order.submit", version=2, senders=_ORDER_SENDERS, recipients={Role.EXCHANGE})
class SubmitOrder(_OrderRequest):
    """An order (seed 001 message 33, Fig. 12). A sell order carries the seller's certificate,
    countersigned by the seller for this order; a buy order carries the buyer's name and address.
    The settlement account is sealed to the settlement agent's key (R-001-06): the exchange keeps
    and forwards the box and never sees the account."""

    settlement_account: SealedText = Field(
        description="The orderer's settlement account sealed to the settlement agent's key, context "
        "order.submit/settlement_account/<user_id> (docs/security.md §6)."
    )


@message("order.submit", senders=_ORDER_SENDERS, recipients={Role.EXCHANGE}, clear_accounts=True)
class SubmitOrderV1(_OrderRequest):
    """An order with its settlement account in clear (version 1). Refused after the cut-over
    ``KABUTO_CLEAR_ACCOUNTS_UNTIL``; until then the exchange seals the account on receipt."""

    settlement_account: AccountId


@message("order.cancel", senders={Role.INVESTOR, Role.BROKERAGE}, recipients={Role.EXCHANGE})
class CancelOrder(Message):
    client_order_id: ClientOrderId


@message("order.replace", senders={Role.INVESTOR, Role.BROKERAGE}, recipients={Role.EXCHANGE})
class ReplaceOrder(Message):
    """Cancel-replace by client order id: new price and/or quantity under a new client order id.
    Lowering only the quantity keeps the order's time priority; anything else loses it."""

    client_order_id: ClientOrderId
    new_client_order_id: ClientOrderId
    price: Price | None = None
    quantity: Quantity


@message("order.status.request", senders={Role.INVESTOR, Role.BROKERAGE}, recipients={Role.EXCHANGE})
class OrderStatusRequest(Message):
    """Order status inquiry by order acceptance number (seed 001 ¶0030, R-001-27)."""

    acceptance_number: int = Field(gt=0)


class OrderRefusal(StrEnum):
    """Why the exchange refused an order, a cancel or a replace; each is something a client can act on."""

    UNKNOWN_ISSUE = "unknown_issue"
    DUPLICATE_CLIENT_ORDER_ID = "duplicate_client_order_id"
    USER_MISMATCH = "user_mismatch"
    INVALID_TICK = "invalid_tick"
    PRICE_LIMIT_EXCEEDED = "price_limit_exceeded"
    NO_REFERENCE_PRICE = "no_reference_price"
    MISSING_CERTIFICATE = "missing_certificate"
    UNEXPECTED_CERTIFICATE = "unexpected_certificate"
    MISSING_HOLDER_DETAILS = "missing_holder_details"
    CERTIFICATE_SIGNATURE_INVALID = "certificate_signature_invalid"
    SELLER_ENDORSEMENT_INVALID = "seller_endorsement_invalid"
    CERTIFICATE_EXPIRED = "certificate_expired"
    TRANSFER_RESTRICTED = "transfer_restricted"
    WRONG_ISSUE = "wrong_issue"
    ACCOUNT_USAGE_LIMIT_EXCEEDED = "account_usage_limit_exceeded"
    SHORT_SELLING_PROHIBITED = "short_selling_prohibited"
    NO_CERTIFICATE_POLICY = "no_certificate_policy"
    HOLDER_MISMATCH = "holder_mismatch"
    CERTIFICATE_NOT_LISTED = "certificate_not_listed"
    CERTIFICATE_ALREADY_COMMITTED = "certificate_already_committed"
    UNKNOWN_ORDER = "unknown_order"
    ORDER_NOT_OPEN = "order_not_open"
    REPLACE_NOT_ALLOWED = "replace_not_allowed"
    # The client order id names an earlier order with another payload (issue 9: idempotent ids).
    CLIENT_ORDER_ID_CONFLICT = "client_order_id_conflict"
    # Issue 11: a buy order's cover at settlement (docs/dvp.md).
    UNKNOWN_ACCOUNT = "unknown_account"
    ACCOUNT_NOT_OWNED = "account_not_owned"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    CURRENCY_MISMATCH = "currency_mismatch"
    COVER_REQUIRED = "cover_required"
    # The settlement account's box does not open with settlement's key (R-001-06).
    SEALED_FIELD_INVALID = "sealed_field_invalid"
    # A trade reported off the order book whose buyer did not countersign its terms (docs/dvp.md).
    BUYER_CONSENT_INVALID = "buyer_consent_invalid"


@message("order.accepted", senders={Role.EXCHANGE}, recipients={Role.INVESTOR, Role.BROKERAGE, Role.CUSTODY})
class OrderAccepted(Message):
    """Order acceptance response (seed 001 message 34): the OAN and the hash of the request."""

    client_order_id: ClientOrderId
    acceptance_number: int
    request_hash: Sha256 = Field(description="SHA-256 of the signed body of the order request (R-001-07).")


class RejectedRequest(StrEnum):
    ORDER = "order"
    CANCEL = "cancel"
    REPLACE = "replace"


@message("order.rejected", senders={Role.EXCHANGE}, recipients={Role.INVESTOR, Role.BROKERAGE, Role.CUSTODY})
class OrderRejected(Message):
    """The exchange's error notification for an order, cancel or replace (seed 001 S74–S86). A
    refused cancel leaves its order as it was; a refused replace leaves the original order live."""

    client_order_id: ClientOrderId
    request: RejectedRequest = RejectedRequest.ORDER
    reason: OrderRefusal
    detail: str
    request_hash: Sha256


class CancelReason(StrEnum):
    REQUESTED = "requested"
    REPLACED = "replaced"
    IOC_REMAINDER = "ioc_remainder"
    FOK_NOT_FILLABLE = "fok_not_fillable"
    MARKET_REMAINDER = "market_remainder"
    SELF_TRADE_PREVENTED = "self_trade_prevented"
    EXPIRED = "expired"
    CERTIFICATE_INVALID = "certificate_invalid"


@message("order.cancelled", senders={Role.EXCHANGE}, recipients={Role.INVESTOR, Role.BROKERAGE, Role.CUSTODY})
class OrderCancelled(Message):
    """An order (or what was left of it) was taken off the book, and why (S132 for an invalid ESC)."""

    client_order_id: ClientOrderId
    acceptance_number: int
    cancelled_quantity: int
    reason: CancelReason
    detail: str = ""


@message("order.executed", senders={Role.EXCHANGE}, recipients={Role.INVESTOR, Role.BROKERAGE, Role.CUSTODY})
class OrderExecuted(Message):
    """A fill of the recipient's order (seed 001 S91–S93); name transfer follows."""

    client_order_id: ClientOrderId
    acceptance_number: int
    matching_number: int
    side: Side
    issue_code: IssueCode
    price: Price
    quantity: int
    remaining_quantity: int


class OrderState(StrEnum):
    OPEN = "open"
    FILLED = "filled"
    CANCELLED = "cancelled"


class Fill(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    matching_number: int
    price: Price
    quantity: int
    status: str


@message("order.status", senders={Role.EXCHANGE}, recipients={Role.INVESTOR, Role.BROKERAGE})
class OrderStatus(Message):
    acceptance_number: int
    found: bool
    client_order_id: ClientOrderId | None = None
    issue_code: IssueCode | None = None
    side: Side | None = None
    state: OrderState | None = None
    quantity: int = 0
    filled_quantity: int = 0
    remaining_quantity: int = 0
    fills: tuple[Fill, ...] = ()


@message("name_transfer.request", senders={Role.EXCHANGE}, recipients={Role.ISSUER})
class NameTransferRequest(Message):
    """Shareholder name-transfer request (seed 001 message 35, S95) for one execution."""

    matching_number: int = Field(gt=0)
    issue_code: IssueCode
    share_class: ShareClass
    cert_id: UUID
    shares: Quantity = Field(description="Shares to transfer to the buyer.")
    buyer_user_id: ParticipantId
    buyer_name: str
    buyer_address: str
    seller_user_id: ParticipantId
    certificate: EndorsedCertificate
    # The seller's order still has shares open: the remainder stays committed to it.
    seller_order: int = Field(gt=0, description="The sell order's acceptance number.")
    seller_order_open: bool


class TransferRefusal(StrEnum):
    CERTIFICATE_SIGNATURE_INVALID = "certificate_signature_invalid"
    ENDORSEMENT_INVALID = "endorsement_invalid"
    CONTENT_MISMATCH = "content_mismatch"
    NOT_REGISTERED = "not_registered"
    NOT_AUTHORISED = "not_authorised"
    QUANTITY_EXCEEDS_CERTIFICATE = "quantity_exceeds_certificate"
    UNKNOWN_TRANSFER = "unknown_transfer"
    ALREADY_ISSUED = "already_issued"


@message("name_transfer.completed", senders={Role.ISSUER}, recipients={Role.EXCHANGE})
class NameTransferCompleted(Message):
    """Normal completion of a name transfer (seed 001 message 36, S119)."""

    matching_number: int
    name_transfer_number: int
    new_cert_id: UUID = Field(description="The buyer's new CertID.")
    buyer_user_id: ParticipantId
    buyer_shares: int
    remainder: SignedCertificate | None = Field(
        default=None, description="The seller's remainder certificate after a partial sale."
    )
    request_hash: Sha256
    register_version: int


@message("name_transfer.failed", senders={Role.ISSUER}, recipients={Role.EXCHANGE})
class NameTransferFailed(Message):
    """Error notification for a name transfer (seed 001 message 36, ¶0048)."""

    matching_number: int
    reason: TransferRefusal
    detail: str
    request_hash: Sha256


@message("trade.completed", senders={Role.EXCHANGE}, recipients={Role.INVESTOR, Role.BROKERAGE, Role.CUSTODY})
class TradeCompleted(Message):
    """Trade completion notice (seed 001 message 37, S129), to buyer and seller."""

    matching_number: int
    name_transfer_number: int | None = Field(description="None for a book-entry trade (no name transfer).")
    client_order_id: ClientOrderId
    acceptance_number: int
    side: Side
    issue_code: IssueCode
    price: Price
    quantity: int
    amount: Amount
    currency: Currency = "JPY"
    transferred_cert_id: UUID | None = Field(
        default=None, description="The seller's CertID that the transfer retired; None for a book-entry trade."
    )


@message("trade.report_settled", senders={Role.EXCHANGE}, recipients={Role.INVESTOR})
class ReportSettled(Message):
    """A trade reported off the order book settled, both legs done (docs/dvp.md, "Reported
    trades"): to buyer and seller, as the trade completion notice (37) is for a matched trade. The
    buyer asks the issuer for its certificate by the name-transfer number (39); the seller's
    transferred certificate is no longer its own."""

    matching_number: int
    name_transfer_number: int
    report_id: ClientOrderId
    seller_user_id: ParticipantId
    buyer_user_id: ParticipantId
    side: Side = Field(description="The recipient's side of the trade.")
    issue_code: IssueCode
    price: Price
    quantity: int
    amount: Amount
    currency: Currency = "JPY"
    transferred_cert_id: UUID = Field(description="The seller's CertID that the transfer retired.")


class _RequestAfterTransfer(Message):
    name_transfer_number: int = Field(gt=0)
    holder_name: str
    holder_address: str


_HOLDERS = {Role.INVESTOR, Role.BROKERAGE, Role.CUSTODY}


@message("certificate.request_after_transfer", version=2, senders=_HOLDERS, recipients={Role.ISSUER})
class CertificateRequestAfterTransfer(_RequestAfterTransfer):
    """The buyer asks for its new certificate by name-transfer number (seed 001 message 39, S141),
    with its dividend account sealed to the settlement agent's key (R-001-44)."""

    dividend_delivery: DividendDelivery


@message("certificate.request_after_transfer", senders=_HOLDERS, recipients={Role.ISSUER}, clear_accounts=True)
class CertificateRequestAfterTransferV1(_RequestAfterTransfer):
    """Message 39 with the dividend account in clear (version 1); refused after the cut-over."""

    dividend_delivery: DividendDeliveryV1


@message("certificate.remainder", senders={Role.ISSUER}, recipients={Role.INVESTOR, Role.BROKERAGE, Role.CUSTODY})
class RemainderCertificate(Message):
    """The seller's certificate for the shares left after a partial sale, pushed by the issuer."""

    name_transfer_number: int
    replaces_cert_id: UUID
    certificate: SignedCertificate


@message("trade.executed", senders={Role.EXCHANGE})
class TradeExecuted(Message):
    """Event for integrators and valuation: an execution and the issue's last price."""

    matching_number: int
    issue_code: IssueCode
    price: Price
    quantity: int
    amount: Amount
    currency: Currency = "JPY"


@message("order.execution_reversed", senders={Role.EXCHANGE}, recipients={Role.INVESTOR, Role.BROKERAGE, Role.CUSTODY})
class ExecutionReversed(Message):
    """A buy order's fill was undone because the seller's certificate failed name transfer; the
    shares are back in the order (seed 001 S131) or, for an order that cannot rest, cancelled."""

    client_order_id: ClientOrderId
    acceptance_number: int
    matching_number: int
    quantity: int
    remaining_quantity: int
    detail: str


@message("certificate.release", senders={Role.EXCHANGE}, recipients={Role.ISSUER})
class CertificateRelease(Message):
    """The sell order a remainder certificate was committed to is closed: the holder may use it again."""

    seller_order: int = Field(gt=0)
    seller_user_id: ParticipantId
