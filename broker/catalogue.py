"""The machine-readable contract: an AsyncAPI 3.0 document generated from ``schemas/``.

A non-Python client can be written from it alone. It holds:

* ``servers``: the RabbitMQ broker (AMQP 0.9.1) and its login (``userPassword``);
* one channel per message type and version: a point-to-point message on ``<ns>.messages``
  (direct, routing key = the recipient's participant id, the channel parameter
  ``recipient``, followed by ``.answers`` for an answer) or an event on ``<ns>.events``
  (topic, routing key = the message type); plus the events journal (a stream an integrator
  replays from a cursor) and the reply queue of an external participant;
* one ``send`` operation per message (the roles that may send it, in ``x-kabuto-senders``)
  and one ``receive`` operation (the recipients, or integrators for an event);
* each message: the envelope, with ``type`` and ``version`` fixed and ``payload`` the
  model's JSON Schema; the ``kabuto-*`` signature headers; the correlation id;
* the message-level security scheme: the Ed25519 signature the receiver checks
  (``docs/signatures.md``).

Every ``$ref`` points inside the document: the models' nested schemas are lifted into
``components.schemas``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from schemas import catalogue
from schemas.catalogue import MessageSpec
from schemas.compatibility import breaking_changes
from schemas.envelope import CERTIFICATE_HEADER, SIGNATURE_HEADER, SIGNER_HEADER, Envelope
from schemas.identity import PARTICIPANT_ID_PATTERN, Role

ASYNCAPI_VERSION = "3.0.0"
CONTRACT_VERSION = "2"
SCHEMA_REF = "#/components/schemas/{model}"
AMQP_BINDING = "0.3.0"
SERVER = "rabbitmq"
# Roles whose participants may live outside the agents and receive replies on their own queue.
EXTERNAL_ROLES = (Role.INVESTOR, Role.BROKERAGE)


def message_key(spec: MessageSpec) -> str:
    return f"{spec.type}.v{spec.version}"


def asyncapi(namespace: str = "kabuto", amqp_url: str = "amqp://127.0.0.1:5672/") -> dict[str, Any]:
    specs = list(catalogue.specs())
    payload_refs, schemas = _model_schemas(specs)
    schemas["SignatureHeaders"] = _headers()
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for spec in specs:
        key = message_key(spec)
        messages[key] = _message(spec, payload_refs[spec.model])
        channels[key] = _channel(spec, namespace)
        operations.update(_operations(spec))
    channels["events.journal"] = _journal(namespace, [s for s in specs if s.is_event])
    channels["participant.replies"] = _replies(namespace, [s for s in specs if _to_external(s)])
    operations["replay_journal"] = _replay_operation(channels["events.journal"])
    operations["receive_replies"] = _replies_operation(channels["participant.replies"])
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "id": f"urn:kabuto:{namespace}",
        "info": _info(),
        "defaultContentType": "application/json",
        "servers": {SERVER: _server(amqp_url)},
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": schemas,
            "securitySchemes": _security_schemes(),
            "correlationIds": {
                "conversation": {
                    "description": "The id of the message that began the conversation: a reply carries its "
                    "request's message_id here.",
                    "location": "$message.payload#/correlation_id",
                }
            },
        },
    }


def _info() -> dict[str, Any]:
    return {
        "title": "Kabuto messages",
        "version": CONTRACT_VERSION,
        "description": (
            "Every AMQP body is the UTF-8 JSON of an Envelope whose `payload` is the message. "
            f"The `{SIGNATURE_HEADER}` header is an Ed25519 signature (base64) over the exact body bytes, made "
            f"with the key of the certificate whose SHA-256 fingerprint (hex) is in `{SIGNER_HEADER}`; "
            f"`{CERTIFICATE_HEADER}` attaches that certificate (base64 DER), issued by the Kabuto CA. "
            "The receiver checks signature, chain, validity, sender role for the type, recipient, freshness "
            "and message id before it parses the payload. See docs/signatures.md and docs/integrators.md."
        ),
    }


def _server(amqp_url: str) -> dict[str, Any]:
    url = urlsplit(amqp_url)
    return {
        "host": f"{url.hostname or '127.0.0.1'}:{url.port or 5672}",
        "protocol": "amqp",
        "protocolVersion": "0.9.1",
        "pathname": url.path or "/",
        "description": "RabbitMQ. The pathname is the virtual host.",
        "security": [{"$ref": "#/components/securitySchemes/amqpLogin"}],
    }


def _security_schemes() -> dict[str, Any]:
    return {
        "amqpLogin": {"type": "userPassword", "description": "The RabbitMQ login (PLAIN over AMQP)."},
        "kabutoSignature": {
            "type": "asymmetricEncryption",
            "description": (
                "Message-level Ed25519 signature over the exact body bytes, in the kabuto-signature header, by "
                "an identity certificate (X.509, Ed25519) of the Kabuto CA attached in kabuto-certificate. "
                "The certificate's participant extension (OID 2.25.37399489929064402520551318797375356842) "
                "names the sender's id and role. See docs/signatures.md."
            ),
        },
    }


def _headers() -> dict[str, Any]:
    return {
        "type": "object",
        "required": [SIGNATURE_HEADER, SIGNER_HEADER],
        "properties": {
            SIGNATURE_HEADER: {"type": "string", "description": "Ed25519 signature of the body bytes, base64."},
            SIGNER_HEADER: {
                "type": "string",
                "pattern": "^[0-9a-f]{64}$",
                "description": "SHA-256 of the signer's DER certificate, lower-case hex.",
            },
            CERTIFICATE_HEADER: {
                "type": "string",
                "description": "The signer's identity certificate, DER, base64; optional when the receiver "
                "has it on file.",
            },
        },
    }


def _model_schemas(specs: list[MessageSpec]) -> tuple[dict[Any, Any], dict[str, Any]]:
    """Every model's schema generated together, so two models of one name get distinct names."""
    models: list[tuple[type[BaseModel], Literal["validation"]]] = [(s.model, "validation") for s in specs]
    models.append((Envelope, "validation"))
    top, defs = models_json_schema(models, ref_template=SCHEMA_REF)
    return {model: ref for (model, _), ref in top.items()}, _asyncapi_discriminators(dict(defs.get("$defs", {})))


def _asyncapi_discriminators(node: Any) -> Any:
    """pydantic writes OpenAPI's discriminator object (``propertyName`` and ``mapping``); an
    AsyncAPI schema's ``discriminator`` is the property name alone. The ``oneOf`` beside it
    still lists every variant, so nothing is lost."""
    if isinstance(node, dict):
        out = {k: _asyncapi_discriminators(v) for k, v in node.items()}
        found = out.get("discriminator")
        if isinstance(found, dict) and "propertyName" in found:
            out["discriminator"] = found["propertyName"]
        return out
    if isinstance(node, list):
        return [_asyncapi_discriminators(v) for v in node]
    return node


def _message(spec: MessageSpec, payload_ref: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": spec.type,
        "title": f"{spec.type} v{spec.version}",
        "summary": spec.summary or spec.type,
        "description": _doc(spec),
        "contentType": "application/json",
        "headers": {"$ref": "#/components/schemas/SignatureHeaders"},
        "payload": {
            "allOf": [
                {"$ref": "#/components/schemas/Envelope"},
                {
                    "type": "object",
                    "properties": {
                        "type": {"const": spec.type},
                        "version": {"const": spec.version},
                        "recipient": {"type": "null"} if spec.is_event else {"type": "string"},
                        "payload": payload_ref,
                    },
                },
            ]
        },
        "correlationId": {"$ref": "#/components/correlationIds/conversation"},
        "bindings": {"amqp": {"messageType": spec.type, "bindingVersion": AMQP_BINDING}},
        "x-kabuto-version": spec.version,
        "x-kabuto-senders": sorted(r.value for r in spec.senders),
        "x-kabuto-recipients": sorted(r.value for r in spec.recipients),
        **({"x-kabuto-retired": _RETIRED} if spec.clear_accounts else {}),
    }


# Why a released version is refused (docs/security.md §6): it stays documented, it is not taken.
_RETIRED = (
    "carries account information in clear (R-001-06): dead-lettered as clear_account_refused unless "
    "KABUTO_CLEAR_ACCOUNTS_UNTIL lies ahead; send the next version, which seals it to the settlement agent"
)


def _doc(spec: MessageSpec) -> str:
    """The model's docstring as one paragraph."""
    return " ".join((spec.model.__doc__ or spec.type).split())


def _exchange_binding(name: str, kind: str) -> dict[str, Any]:
    return {
        "amqp": {
            "is": "routingKey",
            "exchange": {"name": name, "type": kind, "durable": True, "autoDelete": False},
            "bindingVersion": AMQP_BINDING,
        }
    }


def _queue_binding(name: str) -> dict[str, Any]:
    return {
        "amqp": {
            "is": "queue",
            "queue": {"name": name, "durable": True, "exclusive": False, "autoDelete": False},
            "bindingVersion": AMQP_BINDING,
        }
    }


def _channel(spec: MessageSpec, namespace: str) -> dict[str, Any]:
    key = message_key(spec)
    ref = {key: {"$ref": f"#/components/messages/{key}"}}
    servers = [{"$ref": f"#/servers/{SERVER}"}]
    if spec.is_event:
        return {
            "address": spec.type,
            "title": f"event {spec.type}",
            "description": f"{_doc(spec)} Published to the topic exchange {namespace}.events under the routing "
            f"key {spec.type}; every event is also kept in the stream {namespace}.events.journal.",
            "servers": servers,
            "messages": ref,
            "bindings": _exchange_binding(f"{namespace}.events", "topic"),
        }
    routing = (
        "participant id followed by .answers as routing key: an answer, which goes to the recipient agent's "
        "answers queue and is taken ahead of its inbox (a message that is not an answer sent there is "
        "dead-lettered as misrouted)."
        if spec.answer
        else "participant id as routing key."
    )
    return {
        "address": "{recipient}.answers" if spec.answer else "{recipient}",
        "title": f"message {spec.type}",
        "description": f"{_doc(spec)} Published to the direct exchange {namespace}.messages with the recipient's "
        + routing,
        "servers": servers,
        "parameters": {
            "recipient": {
                "description": f"The recipient's participant id ({PARTICIPANT_ID_PATTERN}); its role is one of "
                + ", ".join(sorted(r.value for r in spec.recipients))
                + ".",
            }
        },
        "messages": ref,
        "bindings": _exchange_binding(f"{namespace}.messages", "direct"),
    }


def _operation(action: str, spec: MessageSpec, roles: list[str], summary: str) -> dict[str, Any]:
    key = message_key(spec)
    amqp: dict[str, Any] = {"deliveryMode": 2, "bindingVersion": AMQP_BINDING}
    if action == "send":
        amqp["mandatory"] = True
    else:
        amqp["ack"] = True
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{key}"},
        "messages": [{"$ref": f"#/channels/{key}/messages/{key}"}],
        "summary": summary,
        "security": [{"$ref": "#/components/securitySchemes/kabutoSignature"}],
        "bindings": {"amqp": amqp},
        "x-kabuto-roles": roles,
    }


def _operations(spec: MessageSpec) -> dict[str, Any]:
    key = message_key(spec)
    senders = sorted(r.value for r in spec.senders)
    receivers = sorted(r.value for r in spec.recipients) or ["integrator"]
    return {
        f"send.{key}": _operation("send", spec, senders, f"A {' or '.join(senders)} sends {spec.type}."),
        f"receive.{key}": _operation("receive", spec, receivers, f"A {' or '.join(receivers)} receives {spec.type}."),
    }


def _to_external(spec: MessageSpec) -> bool:
    return any(role in spec.recipients for role in EXTERNAL_ROLES)


def _refs(specs: list[MessageSpec]) -> dict[str, Any]:
    return {message_key(s): {"$ref": f"#/components/messages/{message_key(s)}"} for s in specs}


def _journal(namespace: str, events: list[MessageSpec]) -> dict[str, Any]:
    return {
        "address": f"{namespace}.events.journal",
        "title": "events journal",
        "description": "A RabbitMQ stream bound to the events exchange with '#': every event for 30 days. Consume "
        "with basic.qos (a prefetch is required), manual acks, and the consumer argument x-stream-offset "
        "(first, last, next, an offset, or a timestamp); each delivery carries its offset in the "
        "x-stream-offset header. See docs/integrators.md.",
        "servers": [{"$ref": f"#/servers/{SERVER}"}],
        "messages": _refs(events),
        "bindings": _queue_binding(f"{namespace}.events.journal"),
    }


def _replies(namespace: str, replies: list[MessageSpec]) -> dict[str, Any]:
    return {
        "address": f"{namespace}.participant.{{participant}}",
        "title": "an external participant's reply queue",
        "description": f"Declared by `kabuto ca enrol` (and by the client library on connect): a durable quorum "
        f"queue bound to {namespace}.messages with the participant's id as routing key. A reply to a "
        "participant with no queue is parked by the sender's outbox and sent again once the queue exists.",
        "servers": [{"$ref": f"#/servers/{SERVER}"}],
        "parameters": {"participant": {"description": "The external participant's id."}},
        "messages": _refs(replies),
        "bindings": _queue_binding(f"{namespace}.participant.{{participant}}"),
    }


def _replay_operation(channel: dict[str, Any]) -> dict[str, Any]:
    return {
        "action": "receive",
        "channel": {"$ref": "#/channels/events.journal"},
        "messages": [{"$ref": f"#/channels/events.journal/messages/{k}"} for k in channel["messages"]],
        "summary": "An integrator replays events from a cursor.",
        "security": [{"$ref": "#/components/securitySchemes/kabutoSignature"}],
        "bindings": {"amqp": {"ack": True, "bindingVersion": AMQP_BINDING}},
    }


def _replies_operation(channel: dict[str, Any]) -> dict[str, Any]:
    return {
        "action": "receive",
        "channel": {"$ref": "#/channels/participant.replies"},
        "messages": [{"$ref": f"#/channels/participant.replies/messages/{k}"} for k in channel["messages"]],
        "summary": "An external participant receives the messages addressed to it.",
        "security": [{"$ref": "#/components/securitySchemes/kabutoSignature"}],
        "bindings": {"amqp": {"ack": True, "bindingVersion": AMQP_BINDING}},
    }


def released_schemas() -> dict[str, Any]:
    """Each message version's payload schema, self-contained: what ``docs/catalogue/released.json`` keeps."""
    return {message_key(s): s.model.model_json_schema() for s in catalogue.specs()}


def release(snapshot: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The snapshot with every (type, version) not yet released added, and what it added.

    A released version is never rewritten: one whose current schema breaks it is an error.
    """
    current = released_schemas()
    problems = [
        f"{key}: {change}"
        for key, schema in snapshot.items()
        for change in (
            breaking_changes(schema, current[key]) if key in current else ["released version no longer exists"]
        )
    ]
    if problems:
        raise ValueError("breaking changes to released messages:\n  " + "\n  ".join(problems))
    added = sorted(set(current) - set(snapshot))
    return {**snapshot, **{k: current[k] for k in added}}, added
