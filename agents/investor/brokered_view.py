"""What ``kabuto investor brokered`` prints of each brokered order (issue 10): its state, the
allowance held per account, the trade statement's settlement information — consideration,
commission, consumption tax, the intermediary's fee share, the amount per account — and what
settlement released of the hold."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any


def _money(value: object) -> str:
    amount = Decimal(str(value))
    return f"{amount.quantize(Decimal(1)) if amount == amount.to_integral_value() else amount.normalize():,}"


def lines(order: dict[str, Any]) -> list[str]:
    """Readable lines for one row of ``brokered_orders``."""
    head = f"{order['client_order_id']}  {order['status']}"
    if order["reason"]:
        head += f"  {order['reason']}: {order['detail']}"
    out = [head]
    if order["holds"]:
        held = ", ".join(f"{leg['account']} {_money(leg['amount'])}" for leg in json.loads(order["holds"]))
        out.append(f"  held        {held}")
    if order["statement"]:
        out.extend(_statement(json.loads(order["statement"])))
    if order.get("settlement_date") is not None:
        out.append(f"  settles     {order['settlement_date']} ({order.get('settlement_status') or 'awaiting'})")
    if order["entry_id"] is not None:
        released = _money(order["released"]) if order["released"] is not None else "—"
        out.append(f"  settled     ledger entry {order['entry_id']}; hold released {released}")
    return out


def _statement(info: dict[str, Any]) -> list[str]:
    out = [
        f"  executed    {info['side']} {info['executed_quantity']:,} at {info['average_price']} ({info['design']})",
        f"  amounts     consideration {_money(info['consideration'])} · commission {_money(info['commission'])}"
        f" · consumption tax {_money(info['consumption_tax'])} · total {_money(info['total'])}",
        f"  fee share   intermediary {_money(info['intermediary_fee'])}",
    ]
    for leg in info["customer"]:
        out.append(f"  account     {leg['account']} {_money(leg['amount'])} ({leg['means']}, rule {info['rule']})")
    return out
