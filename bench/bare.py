"""The bare loop Kabuto's per-hop rate is measured against, in the same run on the same services.

consume → verify (Ed25519 over the body) → insert (one row, one transaction) → sign a reply →
publish it (confirmed) → ack, one message at a time, in one process: what any correct
signed, durable hop must at least do, with none of Kabuto's envelope, schema, inbox digest,
handler, outbox or relay. The messages are the same signed order.submit bodies the exchange gets.
"""

from __future__ import annotations

import base64
import time

import aio_pika
import asyncpg

from bench.stage import Stage
from broker.envelope import Sealed
from broker.pki import Identity
from schemas.envelope import SIGNATURE_HEADER, SIGNER_HEADER


async def bare_rate(st: Stage, signers: list[Identity], messages: list[Sealed]) -> float:
    """Messages per second through the bare loop; ``signers`` signed ``messages``, the first signs replies."""
    keys = {signer.fingerprint: signer.certificate.public_key() for signer in signers}
    identity = signers[0]
    connection = await aio_pika.connect(st.settings.amqp_url)
    database = await asyncpg.connect(st.settings.database_url)
    try:
        await database.execute(
            "CREATE TABLE IF NOT EXISTS public.bench_bare (message_id uuid PRIMARY KEY, body bytea NOT NULL)"
        )
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=64)
        inbox = await channel.declare_queue(f"{st.settings.namespace}.bench.bare", exclusive=True)
        sink = await channel.declare_queue(f"{st.settings.namespace}.bench.sink", exclusive=True)
        for sealed in messages:
            await channel.default_exchange.publish(
                aio_pika.Message(sealed.body, headers=dict(sealed.headers), message_id=str(sealed.envelope.message_id)),
                routing_key=inbox.name,
            )
        started = time.perf_counter()
        handled = 0
        async with inbox.iterator() as deliveries:
            async for delivery in deliveries:
                signature = base64.b64decode(str(delivery.headers[SIGNATURE_HEADER]))
                public_key = keys[str(delivery.headers[SIGNER_HEADER])]  # the signer named, as a trust store does
                public_key.verify(signature, delivery.body)  # type: ignore[union-attr,call-arg]
                await database.execute(
                    "INSERT INTO public.bench_bare (message_id, body) VALUES ($1, $2)",
                    delivery.message_id,
                    delivery.body,
                )
                reply = identity.sign(delivery.body)
                await channel.default_exchange.publish(aio_pika.Message(reply), routing_key=sink.name)
                await delivery.ack()
                handled += 1
                if handled == len(messages):
                    break
        return handled / (time.perf_counter() - started)
    finally:
        await database.close()
        await connection.close()
