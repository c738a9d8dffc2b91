"""Deposits: a client's electronic stock certificate comes into custody (issue 11 §2).

The client hands the certificate to custody as to any transferee (seed 001 P3.1,
``kabuto investor hand-over --to custody --note account:ACC``); custody verifies it as an
investor client would (R-001-48), then claims it at the issuer with request 41 so that the
custodian becomes holder of record. The client's position shows the shares as pending receipt
from the claim and available only once the issuer registered the transfer (42); custody then
asks for its certificate (43) and keeps it in its vault. A hand-over whose note names no
account (or one that is not the client's) waits until an operator deposits it into one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from uuid import UUID

from agents.custody import books, domain, events, repo, vault_repo
from agents.custody.domain import Refused
from agents.custody.vault_repo import Deposit
from broker import logs
from broker.context import Context
from broker.errors import Reason, SecurityRejected
from broker.sealed_box import sealed_dividend
from broker.stock_certificates import CertificateInvalid, content_of, verify_certificate, verify_endorsement
from schemas.identity import ISSUER_ID
from schemas.issuance import CertificateIssuanceRefused, CertificateIssued, DividendMethod
from schemas.lifecycle import (
    CertificateHandover,
    OffExchangeTransferRefused,
    OffExchangeTransferRegistered,
    OffExchangeTransferRequest,
)
from schemas.trading import CertificateRequestAfterTransfer

log = logs.get("kabuto.custody")
ACCOUNT_NOTE = "account:"
HOLDER_ADDRESS = "Kabuto custody, safekeeping for clients"


class DepositError(ValueError):
    """A deposit custody will not start, and why."""


async def on_handover(handover: CertificateHandover, ctx: Context) -> None:
    """Verify like a transferee (R-001-48); a failed check is kept as a rejected deposit."""
    assert ctx.sender is not None
    transferor, me = ctx.sender.user_id, ctx.identity.user_id
    endorsed = handover.certificate
    try:
        if len(endorsed.endorsements) != 1:
            raise CertificateInvalid("a hand-over carries exactly the transferor's countersignature")
        verify_endorsement(
            endorsed, 0, ctx.trust, endorser=transferor, purpose="transfer", context=f"transfer:{me}", now=ctx.now
        )
        certificate = verify_certificate(endorsed.certificate, ctx.trust)
        if certificate.holder_user_id != transferor:
            raise CertificateInvalid(f"certificate is held by {certificate.holder_user_id}, not {transferor}")
    except CertificateInvalid as exc:
        log.warning("deposit_rejected", transferor=transferor, detail=exc.detail)
        rejected = Deposit(handover.handover_id, transferor, endorsed, None, None, None, None, "rejected", exc.detail)
        await vault_repo.record_handover(ctx.connection, rejected, ctx.now)
        events.status_changed(ctx, "deposit", handover.handover_id, transferor, None, "rejected", reason=exc.detail)
        return
    deposit = Deposit(
        handover.handover_id,
        transferor,
        endorsed,
        certificate.cert_id,
        certificate.issue_code,
        certificate.shares,
        None,
        "received",
        None,
    )
    if not await vault_repo.record_handover(ctx.connection, deposit, ctx.now):
        return
    events.status_changed(
        ctx,
        "deposit",
        deposit.handover_id,
        transferor,
        None,
        "received",
        issue_code=deposit.issue_code,
        quantity=deposit.shares,
    )
    if handover.note.startswith(ACCOUNT_NOTE):
        try:
            await claim(ctx, deposit, handover.note.removeprefix(ACCOUNT_NOTE).strip())
        except Refused as refused:  # the operator may still deposit it into the right account
            log.info("deposit_waiting", handover_id=str(handover.handover_id), reason=refused.reason.value)
            await vault_repo.update_deposit(ctx.connection, deposit.handover_id, ctx.now, reason=refused.detail)


def deposit_into(handover_id: UUID, account_id: str) -> Callable[[Context], Awaitable[UUID]]:
    """The operator's command: claim a received hand-over for one of the transferor's accounts."""

    async def action(ctx: Context) -> UUID:
        deposit = await vault_repo.deposit(ctx.connection, handover_id)
        if deposit is None or deposit.status != "received":
            raise DepositError(f"no hand-over {handover_id} waiting to be deposited")
        try:
            return await claim(ctx, deposit, account_id)
        except Refused as refused:
            raise DepositError(f"{refused.reason.value}: {refused.detail}") from refused

    return action


async def claim(ctx: Context, deposit: Deposit, account_id: str) -> UUID:
    """Request 41 for custody; the shares show as pending receipt until the issuer registers them."""
    assert deposit.issue_code is not None and deposit.shares is not None and deposit.cert_id is not None
    account = domain.check_account(await repo.account(ctx.connection, account_id), account_id, deposit.transferor)
    await repo.lock_clients(ctx.connection, [account.client])
    position = await repo.position_for_update(ctx.connection, account_id, deposit.issue_code)
    after = domain.expect_receipt(position, deposit.shares)
    await books.apply(ctx, account, deposit.issue_code, after, "deposit_claimed", deposit.handover_id)
    sealed = ctx.emit(
        OffExchangeTransferRequest(
            cert_id=deposit.cert_id,
            user_id=ctx.identity.user_id,
            holder_name=account.custodian,
            holder_address=HOLDER_ADDRESS,
            certificate=deposit.certificate,
        ),
        to=content_of(deposit.certificate).issuing_agent_id,
    )
    request_id = sealed.envelope.message_id
    await vault_repo.update_deposit(
        ctx.connection,
        deposit.handover_id,
        ctx.now,
        status="claimed",
        account_id=account_id,
        transfer_request_id=request_id,
        reason=None,
    )
    events.status_changed(
        ctx,
        "deposit",
        deposit.handover_id,
        account.client,
        account_id,
        "claimed",
        issue_code=deposit.issue_code,
        quantity=deposit.shares,
    )
    log.info("deposit_claimed", handover_id=str(deposit.handover_id), account=account_id)
    return request_id


async def _claimed(ctx: Context, request_id: UUID) -> tuple[Deposit, domain.Account, domain.Balances]:
    deposit = await vault_repo.deposit_by(ctx.connection, "transfer_request_id", request_id)
    if deposit is None or deposit.status != "claimed" or deposit.account_id is None:
        raise SecurityRejected(Reason.UNSOLICITED, f"no pending deposit claim {request_id}")
    account = await repo.account(ctx.connection, deposit.account_id)
    assert account is not None and deposit.issue_code is not None
    await repo.lock_clients(ctx.connection, [account.client])
    position = await repo.position_for_update(ctx.connection, account.account_id, deposit.issue_code)
    assert position is not None
    return deposit, account, position


async def on_registered(answer: OffExchangeTransferRegistered, ctx: Context) -> None:
    """42: custody is holder of record — the client's shares are available; ask for the certificate (43)."""
    deposit, account, position = await _claimed(ctx, answer.request_id)
    assert deposit.issue_code is not None and deposit.shares is not None
    await books.apply(
        ctx, account, deposit.issue_code, domain.receive(position, deposit.shares), "deposit", deposit.handover_id
    )
    await vault_repo.add(ctx.connection, answer.new_cert_id, deposit.issue_code, deposit.shares)
    sealed = ctx.emit(
        CertificateRequestAfterTransfer(
            name_transfer_number=answer.name_transfer_number,
            holder_name=account.custodian,
            holder_address=HOLDER_ADDRESS,
            dividend_delivery=sealed_dividend(  # R-001-44
                ctx.trust, ctx.identity.user_id, DividendMethod.SETTLEMENT_ACCOUNT, account.custodian
            ),
        ),
        to=ISSUER_ID,
    )
    await vault_repo.update_deposit(
        ctx.connection,
        deposit.handover_id,
        ctx.now,
        status="registered",
        new_cert_id=answer.new_cert_id,
        certificate_request_id=sealed.envelope.message_id,
    )
    events.status_changed(
        ctx,
        "deposit",
        deposit.handover_id,
        account.client,
        account.account_id,
        "registered",
        issue_code=deposit.issue_code,
        quantity=deposit.shares,
    )
    log.info("deposit_registered", handover_id=str(deposit.handover_id), ntn=answer.name_transfer_number)


async def on_refused(answer: OffExchangeTransferRefused, ctx: Context) -> None:
    """E19: the issuer will not register it; the pending receipt is called off."""
    deposit, account, position = await _claimed(ctx, answer.request_id)
    assert deposit.issue_code is not None and deposit.shares is not None
    after = domain.cancel_receipt(position, deposit.shares)
    await books.apply(ctx, account, deposit.issue_code, after, "deposit_refused", deposit.handover_id)
    reason = f"{answer.reason.value}: {answer.detail}"
    await vault_repo.update_deposit(ctx.connection, deposit.handover_id, ctx.now, status="refused", reason=reason)
    events.status_changed(
        ctx, "deposit", deposit.handover_id, account.client, account.account_id, "refused", reason=answer.reason.value
    )
    log.info("deposit_refused", handover_id=str(deposit.handover_id), reason=answer.reason.value)


async def on_certificate(answer: CertificateIssued, ctx: Context) -> None:
    """The certificate for a registered deposit (or a reissue answer's certificate): into the vault."""
    deposit = await vault_repo.deposit_by(ctx.connection, "certificate_request_id", answer.request_id)
    if deposit is None:
        raise SecurityRejected(Reason.UNSOLICITED, f"no certificate request {answer.request_id}")
    certificate = verify_certificate(answer.certificate, ctx.trust)
    if certificate.holder_user_id != ctx.identity.user_id or certificate.cert_id != deposit.new_cert_id:
        raise SecurityRejected(Reason.UNSOLICITED, f"certificate {certificate.cert_id} is not the one registered")
    await vault_repo.set_signed(ctx.connection, certificate.cert_id, answer.certificate)
    if deposit.status == "registered":
        await vault_repo.update_deposit(ctx.connection, deposit.handover_id, ctx.now, status="completed")
        events.status_changed(ctx, "deposit", deposit.handover_id, deposit.transferor, deposit.account_id, "completed")


async def on_certificate_refused(answer: CertificateIssuanceRefused, ctx: Context) -> None:
    deposit = await vault_repo.deposit_by(ctx.connection, "certificate_request_id", answer.request_id)
    if deposit is None:
        raise SecurityRejected(Reason.UNSOLICITED, f"no certificate request {answer.request_id}")
    log.error("deposit_certificate_refused", handover_id=str(deposit.handover_id), reason=answer.reason.value)
    await vault_repo.update_deposit(ctx.connection, deposit.handover_id, ctx.now, reason=answer.detail)
