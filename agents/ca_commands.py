"""``kabuto ca`` commands of issue 13: enrolment by certificate signing request (``request`` on
the participant's side, ``sign-csr`` on the CA's) and revocation (``revoke``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from broker import enrolment, revocation
from broker.pki import KeyStore, default_participant
from schemas.identity import Participant, Role


def add_ca_parsers(ca: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    revoke = ca.add_parser("revoke", help="revoke a participant's certificates; agents refuse them at once")
    revoke.add_argument("user_id")
    which = revoke.add_mutually_exclusive_group()
    which.add_argument("--serial", type=_serial, help="only this certificate (hex serial, see `ca show`)")
    which.add_argument(
        "--superseded", action="store_true", help="every certificate but the current one (after `enrol --renew`)"
    )

    request = ca.add_parser("request", help="a participant's side: make its key pair and a CSR in its own directory")
    request.add_argument("user_id")
    request.add_argument("--dir", type=Path, required=True, help="the participant's key directory (not the CA's)")
    sign = ca.add_parser("sign-csr", help="examine a participant's CSR and sign its certificate")
    sign.add_argument("csr", type=Path)
    sign.add_argument("--role", required=True, choices=[r.value for r in Role])
    sign.add_argument("--limit", type=int, help="investor's account usage limit (JPY)")
    sign.add_argument("--allow-short-selling", action="store_true")
    sign.add_argument("--out", type=Path, help="where to write the certificate (default: beside the CSR)")


def participant_for(user_id: str, role: str, limit: int | None, allow_short_selling: bool) -> Participant:
    """The participant the CA decides to certify: role and policy come from the operator."""
    participant = default_participant(user_id, Role(role), limit)
    if participant.policy and allow_short_selling:
        policy = participant.policy.model_copy(update={"short_selling_prohibited": False})
        participant = participant.model_copy(update={"policy": policy})
    return participant


def run_ca(args: argparse.Namespace, keys: KeyStore) -> None:
    match args.ca_command:
        case "request":
            path = enrolment.request_into(args.dir, args.user_id)
            print(f"key pair in {args.dir}; send {path} to the CA (`kabuto ca sign-csr`)")
        case "sign-csr":
            _, user_id = enrolment.requested_id(args.csr)
            participant = participant_for(user_id, args.role, args.limit, args.allow_short_selling)
            out = args.out or args.csr.with_name("identity.crt")
            certificate = enrolment.sign_request_file(keys, args.csr, participant, out)
            print(f"signed {user_id} ({args.role}) serial {certificate.serial_number:x}: {out}")
        case "revoke":
            serials = revocation.serials_to_revoke(keys, args.user_id, serial=args.serial, superseded=args.superseded)
            added = revocation.revoke(keys, args.user_id, serials)
            listed = ", ".join(f"{s:x}" for s in added) or "nothing new"
            print(f"revoked {listed} of {args.user_id}; the list is {revocation.crl_path(keys)}")


def _serial(text: str) -> int:
    try:
        return int(text, 16)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a hexadecimal serial number: {text!r}") from exc
