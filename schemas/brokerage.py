"""Brokered trading (seed 000's claims, seed 002): a customer identifies itself to the brokerage
(the intermediary), sees its securities information and accounts, orders with an account
indication and a funding split; the brokerage holds the funds at settlement, relays the order to
the exchange, and on execution produces the settlement information that settlement posts."""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from schemas.catalogue import Message, message
from schemas.certificates import IssueCode
from schemas.identity import ParticipantId, Role
from schemas.money import AccountId, Amount, Currency, Price, Quantity
from schemas.sealed import SealedText
from schemas.trading import ClientOrderId, OrderType, Side, TimeInForce

CustomerId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,40}$")]
CompanyId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$")]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MismatchRule(StrEnum):
    """Seed 002 §9.8: how designated amounts are adjusted when the actual amount differs."""

    PROTECT_HIGH_PRIORITY = "rule_1"  # keep high priorities' amounts; adjust the lowest first
    DEBIT_HIGH_PRIORITY_FIRST = "rule_2"  # buy: excess from the highest priority first, as balances allow
    RECEIVE_HIGH_PRIORITY_FIRST = "rule_3"  # sell: excess received in the highest priority


class SettlementType(StrEnum):
    IMMEDIATE = "immediate"  # seed 002 Fig. 3
    REGULAR = "regular"  # the "4th-day" trade, Fig. 4


class FundingLeg(_Frozen):
    """One account of the account indication: how much it pays (buy) or receives (sell), and its priority."""

    account: AccountId
    amount: Amount = Field(ge=0)
    priority: int = Field(ge=1, le=99, description="1 is the highest priority.")


@message("brokerage.identify", senders={Role.INVESTOR}, recipients={Role.BROKERAGE})
class IdentifyCustomer(Message):
    """Seed 000 claims 3–4, seed 002 R-002-06: the customer's id and personal authentication."""

    customer_id: CustomerId
    pin: SealedText = Field(description="The PIN sealed to the brokerage's key: never in clear on the way.")


class Security(_Frozen):
    issue_code: IssueCode
    reference_price: Price
    last_price: Price | None = None
    upper_limit: Price
    lower_limit: Price


class Holding(_Frozen):
    issue_code: IssueCode
    securities_company: CompanyId
    shares: int


class AvailableAccount(_Frozen):
    account: AccountId
    institution: str = Field(description="'intermediary' or the securities company holding it.")
    kind: str = Field(description="'bank' at the intermediary, 'fund' (e.g. MRF) at a securities company.")
    priority: int
    balance: Amount | None = None
    available: Amount | None = None
    selectable_for: tuple[CompanyId, ...] = Field(description="Companies an order may use it with (R-002-14).")


class TransactionConditions(_Frozen):
    """Seed 000 claim 2: what this customer may trade."""

    allowed_issues: tuple[IssueCode, ...] = Field(default=(), description="Empty: any listed issue.")
    max_order_value: Amount | None = None
    allowed_order_types: tuple[OrderType, ...] = (OrderType.LIMIT, OrderType.MARKET)
    allowed_sides: tuple[Side, ...] = (Side.BUY, Side.SELL)
    mismatch_rule: MismatchRule = MismatchRule.PROTECT_HIGH_PRIORITY


@message("brokerage.customer_view", senders={Role.BROKERAGE}, recipients={Role.INVESTOR})
class CustomerView(Message):
    """What a customer terminal renders after identification (seed 002 §6, screens as data)."""

    request_id: UUID
    customer_id: CustomerId
    securities: tuple[Security, ...]
    holdings: tuple[Holding, ...]
    accounts: tuple[AvailableAccount, ...]
    companies: tuple[CompanyId, ...]
    conditions: TransactionConditions
    commission_table: tuple[tuple[Amount, Amount], ...] = Field(
        description="(consideration up to, commission) rows, so a terminal can show trial amounts (R-002-12)."
    )
    consumption_tax_rate: Amount


class BrokerageRefusal(StrEnum):
    UNKNOWN_CUSTOMER = "unknown_customer"
    AUTHENTICATION_FAILED = "authentication_failed"
    NOT_YOUR_CUSTOMER_ID = "not_your_customer_id"
    UNKNOWN_COMPANY = "unknown_company"
    INSTRUMENT_NOT_ALLOWED = "instrument_not_allowed"
    ORDER_TYPE_NOT_ALLOWED = "order_type_not_allowed"
    SIDE_NOT_ALLOWED = "side_not_allowed"
    MAX_ORDER_VALUE_EXCEEDED = "max_order_value_exceeded"
    UNKNOWN_ISSUE = "unknown_issue"
    ACCOUNT_NOT_AVAILABLE = "account_not_available"
    NO_FUNDING = "no_funding"
    ALLOWANCE_NOT_COVERED = "allowance_not_covered"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    INSUFFICIENT_HOLDINGS = "insufficient_holdings"
    DUPLICATE_ORDER = "duplicate_order"
    EXCHANGE_REJECTED = "exchange_rejected"
    ORDER_CANCELLED = "order_cancelled"
    SETTLEMENT_FAILED = "settlement_failed"
    # Issue 13: the brokerage's own record of the customer does not pass the wire contract.
    CUSTOMER_RECORD_INVALID = "customer_record_invalid"


@message("brokerage.identify_refused", senders={Role.BROKERAGE}, recipients={Role.INVESTOR})
class IdentificationRefused(Message):
    request_id: UUID
    reason: BrokerageRefusal
    detail: str


@message("brokerage.order", senders={Role.INVESTOR}, recipients={Role.BROKERAGE})
class BrokeredOrder(Message):
    """Trade-instruction information with account indication (seed 000 claim 1, seed 002 §4.2)."""

    client_order_id: ClientOrderId
    customer_id: CustomerId
    pin: SealedText = Field(description="The PIN sealed to the brokerage's key: never in clear on the way.")
    securities_company: CompanyId
    issue_code: IssueCode
    side: Side
    order_type: OrderType
    price: Price | None = None
    quantity: Quantity
    time_in_force: TimeInForce = TimeInForce.DAY
    funding: tuple[FundingLeg, ...] = Field(min_length=1, max_length=20)
    mismatch_rule: MismatchRule | None = Field(default=None, description="None: the customer's contract rule.")
    settlement_type: SettlementType = SettlementType.IMMEDIATE


class TrialAmounts(_Frozen):
    """Seed 002 §9.1–§9.5: what the order should cost, and the allowance checked and held."""

    price: Price
    consideration: Amount
    commission: Amount
    consumption_tax: Amount
    required: Amount
    allowance: Amount


@message("brokerage.order_accepted", senders={Role.BROKERAGE}, recipients={Role.INVESTOR})
class BrokeredOrderAccepted(Message):
    """The funds are held and the order relayed to the exchange (seed 002 R-002-39..41)."""

    client_order_id: ClientOrderId
    order_id: UUID
    trial: TrialAmounts
    holds: tuple[FundingLeg, ...]


@message("brokerage.order_refused", senders={Role.BROKERAGE}, recipients={Role.INVESTOR})
class BrokeredOrderRefused(Message):
    """Nothing was relayed and nothing stays held (R-002-38)."""

    client_order_id: ClientOrderId
    reason: BrokerageRefusal
    detail: str


class AccountAmount(_Frozen):
    account: AccountId
    amount: Amount = Field(description="Debited (buy) or credited (sell) on this account.")
    means: str = Field(description="Which settlement means moves it (seed 002 §8: 39, 22, 23, 40).")


class SettlementInformation(_Frozen):
    """Seed 000 claim 1: produced by the securities sales system from the result and the account indication."""

    side: Side
    executed_quantity: int
    average_price: Price | None
    consideration: Amount
    commission: Amount
    consumption_tax: Amount
    intermediary_fee: Amount
    total: Amount = Field(description="Buy: consideration + commission + tax; sell: consideration − both.")
    rule: MismatchRule
    design: str
    customer: tuple[AccountAmount, ...]
    institutions: tuple[AccountAmount, ...]


class CustomerSettlementStatus(StrEnum):
    """Where the customer's side of a brokered trade stands (issue 11): never "refused" once executed."""

    SETTLING = "settling"  # being posted now (immediate trades, R-002-69)
    AWAITING_SETTLEMENT_DATE = "awaiting_settlement_date"  # regular trade, held until the date (R-002-72)
    CUSTOMER_FAIL = "customer_fail"  # the customer could not pay on the date; retried until the cut-off
    CUSTOMER_FAILED = "customer_failed"  # past the cut-off: the brokerage's nominee keeps the position


@message("brokerage.trade_statement", senders={Role.BROKERAGE}, recipients={Role.INVESTOR})
class TradeStatement(Message):
    """The customer's trade statement: executions and the settlement information (R-002-49)."""

    client_order_id: ClientOrderId
    order_id: UUID
    issue_code: IssueCode
    information: SettlementInformation
    settlement_date: date | None = Field(
        default=None, description="Intended settlement date of the customer legs (regular trades: R-002-72)."
    )
    settlement_status: CustomerSettlementStatus = CustomerSettlementStatus.SETTLING
    fail_amount: Amount | None = Field(default=None, description="A customer fail: what the customer owes.")


@message("brokerage.settlement_completed", senders={Role.BROKERAGE}, recipients={Role.INVESTOR})
class BrokeredSettlementCompleted(Message):
    """The settlement-completion notice: the ledger posted the settlement information."""

    client_order_id: ClientOrderId
    order_id: UUID
    entry_id: int
    released: Amount = Field(description="What was held beyond what the settlement consumed, now free again.")


@message("brokerage.settled", senders={Role.BROKERAGE})
class BrokeredTradeSettled(Message):
    """Event for integrators: a brokered order's fund settlement was posted."""

    order_id: UUID
    issue_code: IssueCode
    side: Side
    executed_quantity: int
    consideration: Amount
    commission: Amount
    consumption_tax: Amount
    intermediary_fee: Amount
    design: str
    entry_id: int


# --- brokerage ↔ settlement -----------------------------------------------------------------


class AccountBalance(_Frozen):
    account: AccountId
    found: bool
    owner: ParticipantId | None = None
    currency: Currency | None = None
    balance: Amount | None = None
    available: Amount | None = None


@message("funds.balance_inquiry", senders={Role.BROKERAGE}, recipients={Role.SETTLEMENT})
class BalanceInquiry(Message):
    """R-002-22/23: balances of a customer's candidate accounts."""

    owner: ParticipantId
    accounts: tuple[AccountId, ...] = Field(min_length=1, max_length=50)


@message("funds.balances", senders={Role.SETTLEMENT}, recipients={Role.BROKERAGE})
class Balances(Message):
    inquiry_id: UUID
    balances: tuple[AccountBalance, ...]


class HoldLeg(_Frozen):
    account: AccountId
    amount: Amount = Field(gt=0)


@message("funds.hold", senders={Role.BROKERAGE}, recipients={Role.SETTLEMENT})
class PlaceHold(Message):
    """R-002-33/74: check the selected accounts cover the allowance and block that much."""

    hold_id: UUID
    owner: ParticipantId
    legs: tuple[HoldLeg, ...] = Field(min_length=1, max_length=20)


@message("funds.hold_placed", senders={Role.SETTLEMENT}, recipients={Role.BROKERAGE})
class HoldPlaced(Message):
    hold_id: UUID
    balances: tuple[AccountBalance, ...]
    held: tuple[HoldLeg, ...] = Field(
        default=(),
        description="What each account holds; it may differ from "
        "what was asked when one account's balance could not take its share.",
    )


class HoldFailure(StrEnum):
    UNKNOWN_ACCOUNT = "unknown_account"
    ACCOUNT_NOT_OWNED = "account_not_owned"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    DUPLICATE_HOLD = "duplicate_hold"


@message("funds.hold_refused", senders={Role.SETTLEMENT}, recipients={Role.BROKERAGE})
class HoldRefused(Message):
    hold_id: UUID
    reason: HoldFailure
    detail: str


@message("funds.hold_release", senders={Role.BROKERAGE}, recipients={Role.SETTLEMENT})
class ReleaseHold(Message):
    """Nothing will be settled against this hold (refused, cancelled or unfilled order)."""

    hold_id: UUID


@message("funds.hold_revise", senders={Role.BROKERAGE}, recipients={Role.SETTLEMENT})
class ReviseHold(Message):
    """Issue 11, seed 002 S22: hold exactly what the settlement information will debit each account,
    as far as the account can cover it; accounts left out are freed."""

    hold_id: UUID
    legs: tuple[HoldLeg, ...] = Field(max_length=20)


class LedgerLeg(_Frozen):
    account: AccountId
    amount: Amount = Field(description="Positive credits the account, negative debits it.")
    means: str


# The credit agent's card issuer and line, and custody paying sale proceeds on, post their cash
# moves with the same balanced-entry message (seed 003 R-003-42/45/51/55); they place no hold.
@message(
    "funds.brokered_settlement",
    senders={Role.BROKERAGE, Role.CUSTODY, Role.CARD_ISSUER, Role.CREDIT},
    recipients={Role.SETTLEMENT},
)
class PostBrokeredSettlement(Message):
    """Seed 002 §8: post the settlement information, consuming the order's hold (R-002-76)."""

    order_id: UUID
    hold_id: UUID
    customer: ParticipantId
    description: str
    legs: tuple[LedgerLeg, ...] = Field(min_length=2, max_length=40)
    keep_hold_on_shortfall: bool = Field(
        default=False,
        description="Issue 11: a posting refused for lack of cash keeps the hold, to be retried (a customer fail).",
    )


@message(
    "funds.brokered_posted",
    senders={Role.SETTLEMENT},
    recipients={Role.BROKERAGE, Role.CUSTODY, Role.CARD_ISSUER, Role.CREDIT},
)
class BrokeredSettlementPosted(Message):
    order_id: UUID
    entry_id: int
    released: Amount


@message(
    "funds.brokered_failed",
    senders={Role.SETTLEMENT},
    recipients={Role.BROKERAGE, Role.CUSTODY, Role.CARD_ISSUER, Role.CREDIT},
)
class BrokeredSettlementFailed(Message):
    order_id: UUID
    reason: str
    detail: str
