"""Enrolment by certificate signing request (R-001-02): the two sides, kept apart.

The participant's side (``request_into``) makes a key pair in the participant's own
directory and writes a CSR signed with it; the private key never leaves that directory.
The CA's side (``sign_request_file``) reads only the CSR, examines the requester and signs a
certificate for the request's public key. What the certificate says about the participant
(role and certificate policy) is the CA operator's decision, taken from the command line,
never from the request.

The examination refuses: a request that is not self-signed or not Ed25519, a request naming
someone other than the participant, an agent's id asked for another role (or an agent role
for another id), and an id the CA already enrolled under another role.
"""

from __future__ import annotations

import json
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from broker.pki import KeyStore, PkiError, new_request, write_certificate, write_private_key
from broker.settings import AGENT_IDS
from schemas.identity import Participant, Role

AGENT_ROLES = {Role(agent) for agent in AGENT_IDS if agent != "investor"}


def request_into(directory: Path, user_id: str) -> Path:
    """The participant's side: key and CSR in ``directory``; returns the CSR's path."""
    key, request = new_request(user_id)
    write_private_key(directory / "identity.key", key)
    path = directory / "request.csr"
    path.write_bytes(request.public_bytes(serialization.Encoding.PEM))
    return path


def examine(keys: KeyStore, participant: Participant) -> None:
    """The CA's examination of who asks (R-001-02), before it signs anything."""
    user_id, role = participant.user_id, participant.role
    if user_id in AGENT_IDS and user_id != "investor" and role.value != user_id:
        raise PkiError(f"{user_id} is an agent's id; only its own role may have it, not {role.value}")
    if role in AGENT_ROLES and user_id != role.value:
        raise PkiError(f"the {role.value} role belongs to the {role.value} agent, not to {user_id}")
    enrolled = _enrolled_roles(keys, user_id)
    if enrolled and enrolled != {role.value}:
        raise PkiError(f"{user_id} is enrolled as {', '.join(sorted(enrolled))}; it cannot become {role.value}")


def requested_id(path: Path) -> tuple[x509.CertificateSigningRequest, str]:
    """The request at ``path`` and the participant id it names."""
    try:
        request = x509.load_pem_x509_csr(path.read_bytes())
    except ValueError as exc:
        raise PkiError(f"{path} is not a PEM certificate signing request") from exc
    names = request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1:
        raise PkiError(f"{path} must name exactly one participant (CN)")
    return request, str(names[0].value)


def sign_request_file(keys: KeyStore, path: Path, participant: Participant, out: Path) -> x509.Certificate:
    """The CA's side: examine, sign the CSR at ``path``, write the certificate to ``out``."""
    request, _ = requested_id(path)
    examine(keys, participant)
    certificate = keys.load_ca().sign_request(request, participant)
    write_certificate(out, certificate)
    return certificate


def _enrolled_roles(keys: KeyStore, user_id: str) -> set[str]:
    if not keys.register_path.exists():
        return set()
    records = (json.loads(line) for line in keys.register_path.read_text().splitlines())
    return {r["role"] for r in records if r.get("user_id") == user_id and "role" in r}
