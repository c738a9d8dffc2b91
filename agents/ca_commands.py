"""``kabuto ca`` commands of issue 13: revoking certificates (and, with CSR enrolment, signing
requests), kept apart from the other operations so each concern reads on its own."""

from __future__ import annotations

import argparse

from broker import revocation
from broker.pki import KeyStore


def add_ca_parsers(ca: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    revoke = ca.add_parser("revoke", help="revoke a participant's certificates; agents refuse them at once")
    revoke.add_argument("user_id")
    which = revoke.add_mutually_exclusive_group()
    which.add_argument("--serial", type=_serial, help="only this certificate (hex serial, see `ca show`)")
    which.add_argument(
        "--superseded", action="store_true", help="every certificate but the current one (after `enrol --renew`)"
    )


def run_ca(args: argparse.Namespace, keys: KeyStore) -> None:
    match args.ca_command:
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
