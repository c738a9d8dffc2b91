"""What custody tells integrators: every position change and every status change, as events
on the topic exchange (``custody.position.changed``, ``custody.status.changed``)."""

from __future__ import annotations

from broker.context import Context
from schemas.custody import CustodyStatusChanged, HoldingDelta, PositionChanged


def position_changed(ctx: Context, client: str, delta: HoldingDelta) -> None:
    ctx.emit(PositionChanged(client=client, delta=delta))


def status_changed(
    ctx: Context,
    subject: str,
    subject_id: object,
    client: str,
    account: str | None,
    status: str,
    *,
    issue_code: str | None = None,
    quantity: int | None = None,
    reason: str | None = None,
) -> None:
    ctx.emit(
        CustodyStatusChanged(
            subject=subject,
            subject_id=str(subject_id),
            client=client,
            account=account,
            status=status,
            issue_code=issue_code,
            quantity=quantity,
            reason=reason,
        )
    )
