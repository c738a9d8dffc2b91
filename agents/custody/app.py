"""The custody agent (issue 11 §2, seed 003's custodian): its handlers, wired to the runtime.

Handlers only decide: they load from ``repo``, decide in ``domain`` and write through
``books``, emitting answers and events through the outbox in the same transaction.
"""

from __future__ import annotations

from agents.custody import delivery, deposits, holdings, locks, sale_outcomes, sales, withdrawals
from broker.consumer import Handler
from broker.runtime import AgentDefinition
from schemas.brokerage import BrokeredSettlementFailed, BrokeredSettlementPosted
from schemas.catalogue import Message
from schemas.custody import HoldingsDeltasRequest, HoldingsStatementRequest, PlaceLock, ReleaseLock, SellInstruction
from schemas.dvp import InstructionStatus, SecuritiesCommit, SecuritiesRelease, SecuritiesReserve
from schemas.identity import Role
from schemas.issuance import CertificateIssuanceRefused, CertificateIssued
from schemas.lifecycle import (
    CertificateHandover,
    CertificatesReissued,
    HoldingsStatement,
    OffExchangeTransferRefused,
    OffExchangeTransferRegistered,
    ReissueRefused,
)
from schemas.settlement import SettlementNotice, SettlementNoticeV1
from schemas.trading import (
    ExecutionReversed,
    OrderAccepted,
    OrderCancelled,
    OrderExecuted,
    OrderRejected,
    RemainderCertificate,
    TradeCompleted,
)

HANDLERS: dict[type[Message], Handler] = {
    PlaceLock: locks.on_place_lock,
    ReleaseLock: locks.on_release_lock,
    HoldingsDeltasRequest: holdings.on_deltas_request,
    HoldingsStatementRequest: holdings.on_statement_request,
    SecuritiesReserve: delivery.on_reserve,
    SecuritiesCommit: delivery.on_commit,
    SecuritiesRelease: delivery.on_release,
    CertificateHandover: deposits.on_handover,
    OffExchangeTransferRegistered: deposits.on_registered,
    OffExchangeTransferRefused: deposits.on_refused,
    CertificateIssued: deposits.on_certificate,
    CertificateIssuanceRefused: deposits.on_certificate_refused,
    CertificatesReissued: withdrawals.on_reissued,
    ReissueRefused: withdrawals.on_reissue_refused,
    HoldingsStatement: withdrawals.on_holdings,
    SellInstruction: sales.on_sell_instruction,
    OrderRejected: sale_outcomes.on_order_rejected,
    OrderExecuted: sale_outcomes.on_order_executed,
    ExecutionReversed: sale_outcomes.on_execution_reversed,
    OrderCancelled: sale_outcomes.on_order_cancelled,
    TradeCompleted: sale_outcomes.on_trade_completed,
    RemainderCertificate: sale_outcomes.on_remainder,
    SettlementNotice: sale_outcomes.on_settlement_notice,
    SettlementNoticeV1: sale_outcomes.on_settlement_notice,
    OrderAccepted: sale_outcomes.on_order_accepted,
    InstructionStatus: sale_outcomes.on_instruction_status,
    BrokeredSettlementPosted: sale_outcomes.on_payover_posted,
    BrokeredSettlementFailed: sale_outcomes.on_payover_failed,
}

AGENT = AgentDefinition(
    id="custody", role=Role.CUSTODY, handlers=HANDLERS, background=(withdrawals.confirm_withdrawals,)
)
