"""The Kabuto runtime: the only package that opens connections.

Every agent stands on it: settings, logging, the certificate authority and trust store,
sealed envelopes, the RabbitMQ topology, the consumer pipeline
(verify → parse → inbox → handler → outbox → commit → ack), the outbox relay and the
migration runner. Agents import from here; nothing here imports an agent.
"""
