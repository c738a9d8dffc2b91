"""Place a buy and a sell order as an external participant, with the Kabuto client library only.

The participant talks to RabbitMQ and nothing else: no database, no agent code. It asks the
issuer for certificates of an offered issue, verifies the certificate it receives, places a
buy order and a sell order from that certificate (countersigned for the order), sends the
buy order once more to show that client order ids are idempotent, then cancels both.

Before running it (see README, "External participants"):

    kabuto ca enrol trader-1 --role investor          # key, certificate and reply queue
    kabuto issuer offer DEMO --company "Demo K.K." --incorporated 2001-04-01 --shares 100000 --price 1000
    kabuto exchange list DEMO --reference-price 1000
    kabuto run all                                     # in another terminal

    python examples/place_orders.py trader-1 DEMO --buy-price 990 --sell-price 1010

The buy order is booked only once settlement has covered it (delivery versus payment,
docs/dvp.md): the participant needs a settlement account of its own with enough available cash,
opened and funded by an operator (`kabuto settlement open-account trader-1-cash --owner trader-1`,
`kabuto settlement deposit trader-1-cash 1000000 --reference funding`). The account travels
sealed to the settlement agent's key, read from its certificate beside ours under the key
directory (R-001-06): the exchange and the issuer keep and forward the box, never the account.

It reads ``KABUTO_AMQP_URL``, ``KABUTO_KEY_DIR`` and ``KABUTO_NAMESPACE`` like the ``kabuto``
command, and exits 1 if the issuer or the exchange refuses anything.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from decimal import Decimal

from broker.settings import load
from kabuto_client import Participant, buy_order, dividend, place, sell_order, verified
from schemas.certificates import ShareClass
from schemas.issuance import CertificateIssuanceRequest, CertificateIssued, DividendMethod
from schemas.trading import CancelOrder, OrderAccepted


def arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("participant")
    p.add_argument("issue_code")
    p.add_argument("--shares", type=int, default=500, help="certificates to ask the issuer for")
    p.add_argument("--quantity", type=int, default=100, help="shares to buy and to sell")
    p.add_argument("--buy-price", type=Decimal, default=Decimal(990))
    p.add_argument("--sell-price", type=Decimal, default=Decimal(1010))
    p.add_argument("--account", help="settlement account (default: <participant>-cash)")
    return p.parse_args()


async def main(args: argparse.Namespace) -> int:
    settings = load()
    account = args.account or f"{args.participant}-cash"
    run = uuid.uuid4().hex[:8]
    async with Participant.enrolled(
        settings.amqp_url, settings.key_dir, args.participant, namespace=settings.namespace
    ) as me:
        request = CertificateIssuanceRequest(
            user_id=me.user_id,
            holder_name=me.user_id.title(),
            holder_address="1-1 Kabuto-cho, Tokyo",
            issue_code=args.issue_code,
            share_class=ShareClass.COMMON,
            shares=args.shares,
            dividend_delivery=dividend(me, DividendMethod.BANK_TRANSFER, account),  # sealed to settlement
        )
        reply = await me.request(request, to="issuer", expect=("certificate.issued", "certificate.issuance.refused"))
        if not isinstance(reply.message, CertificateIssued):
            print(f"issuer refused: {reply.message.model_dump_json()}")
            return 1
        certificate = verified(me, reply.message.certificate)
        print(f"certificate {certificate.cert_id}: {certificate.shares} shares of {certificate.issue_code}")

        buy = buy_order(
            me,
            f"{run}-buy",
            args.issue_code,
            args.quantity,
            price=args.buy_price,
            account=account,
            holder_name=me.user_id.title(),
            holder_address="1-1 Kabuto-cho, Tokyo",
        )
        sell = sell_order(
            me, f"{run}-sell", reply.message.certificate, args.quantity, price=args.sell_price, account=account
        )
        accepted = {}
        for order in (buy, sell):
            answer = await place(me, order)
            if not isinstance(answer.message, OrderAccepted):
                print(f"{order.terms.side} order refused: {answer.message.model_dump_json()}")
                return 1
            accepted[order.client_order_id] = answer.message.acceptance_number
            print(
                f"{order.terms.side} {order.terms.quantity} {order.issue_code} at {order.terms.price}: "
                f"accepted, acceptance number {answer.message.acceptance_number}"
            )

        again = await place(me, buy)  # a lost reply is no reason to fear a second order
        assert isinstance(again.message, OrderAccepted)
        print(
            f"buy order sent again: same acceptance number {again.message.acceptance_number} "
            f"({'idempotent' if again.message.acceptance_number == accepted[buy.client_order_id] else 'NEW'})"
        )
        if again.message.acceptance_number != accepted[buy.client_order_id]:
            return 1

        for client_order_id in accepted:
            done = await me.request(
                CancelOrder(client_order_id=client_order_id),
                to="exchange",
                expect=("order.cancelled", "order.rejected"),
            )
            print(f"cancel {client_order_id}: {done.envelope.type}")
            if done.envelope.type != "order.cancelled":
                return 1
        if me.refused:
            print(f"refused deliveries: {me.refused}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(arguments())))
