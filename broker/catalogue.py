"""The machine-readable contract: an AsyncAPI 2.6 document generated from the models.

A non-Python client can be written from it alone: every message type and version, who may
send it to whom, the JSON Schema of its payload and of the envelope, the exchanges and
routing keys, and the signature headers.
"""

from __future__ import annotations

from typing import Any

from schemas import catalogue
from schemas.envelope import CERTIFICATE_HEADER, SIGNATURE_HEADER, SIGNER_HEADER, Envelope


def asyncapi(namespace: str = "kabuto") -> dict[str, Any]:
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    for spec in catalogue.specs():
        key = f"{spec.type}.v{spec.version}"
        messages[key] = {
            "name": spec.type,
            "title": spec.summary,
            "x-kabuto-version": spec.version,
            "x-kabuto-senders": sorted(r.value for r in spec.senders),
            "x-kabuto-recipients": sorted(r.value for r in spec.recipients),
            "headers": _headers(),
            "payload": spec.model.model_json_schema(ref_template="#/components/schemas/{model}"),
        }
        exchange = f"{namespace}.events" if spec.is_event else f"{namespace}.messages"
        routing = spec.type if spec.is_event else "<recipient participant id>"
        channels[f"{exchange}/{key}"] = {
            "description": f"{spec.summary} Routing key: {routing}.",
            "bindings": {
                "amqp": {
                    "is": "routingKey",
                    "exchange": {
                        "name": exchange,
                        "type": "topic" if spec.is_event else "direct",
                        "durable": True,
                    },
                }
            },
            "subscribe": {"message": {"$ref": f"#/components/messages/{key}"}},
        }
    return {
        "asyncapi": "2.6.0",
        "info": {
            "title": "Kabuto messages",
            "version": "1",
            "description": (
                "Every AMQP body is the JSON of an Envelope whose payload is the message below. "
                f"The {SIGNATURE_HEADER} header is an Ed25519 signature (base64) over the exact body "
                f"bytes by the certificate whose SHA-256 fingerprint is in {SIGNER_HEADER}, attached "
                f"as base64 DER in {CERTIFICATE_HEADER} and issued by the Kabuto CA."
            ),
        },
        "channels": channels,
        "components": {
            "messages": messages,
            "schemas": {"Envelope": Envelope.model_json_schema()},
        },
    }


def _headers() -> dict[str, Any]:
    text = {"type": "string"}
    return {
        "type": "object",
        "required": [SIGNATURE_HEADER, SIGNER_HEADER],
        "properties": {SIGNATURE_HEADER: text, SIGNER_HEADER: text, CERTIFICATE_HEADER: text},
    }
