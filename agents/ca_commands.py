"""``kabuto ca …``: the Kabuto certificate authority — create it, enrol participants (locally, or
by certificate signing request: ``request`` on the participant's side, ``sign-csr`` on the CA's),
show and revoke their certificates (R-001-02, issue 13)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import aio_pika
import typer

from agents import progress
from agents.cli_runtime import run
from broker import enrolment, provisioning, revocation
from broker.access import AccessError, participant_credentials_path
from broker.participants import is_external, reply_queue_name
from broker.pki import KeyStore, default_participant, platform_participants
from broker.settings import Settings
from broker.topology import Names
from schemas.identity import Participant, Role

app = typer.Typer(help="The Kabuto certificate authority.", no_args_is_help=True)

UserId = Annotated[str, typer.Argument(help="the participant's user id", show_default=False)]
RoleOption = Annotated[Role, typer.Option(help="the participant's role", show_default=False)]
Limit = Annotated[int | None, typer.Option(help="investor's account usage limit (JPY)")]
ShortSelling = Annotated[
    bool, typer.Option("--allow-short-selling", help="lift the investor's short-selling prohibition")
]


def _serial(text: str) -> int:
    try:
        return int(text, 16)
    except ValueError as exc:
        raise typer.BadParameter(f"not a hexadecimal serial number: {text!r}") from exc


@app.command()
def init() -> None:
    """Create the CA (keeps an existing one)."""

    async def body(settings: Settings) -> None:
        keys = KeyStore(settings.key_dir)
        authority, created = keys.init_ca()
        subject = authority.certificate.subject.rfc4514_string()
        print(f"{'created' if created else 'kept existing'} CA {subject} in {keys.root}")

    run(body)


@app.command()
def enrol(
    user_id: UserId,
    role: RoleOption,
    limit: Limit = None,
    allow_short_selling: ShortSelling = False,
    renew: Annotated[bool, typer.Option("--renew", help="replace a usable certificate")] = False,
    no_reply_queue: Annotated[
        bool,
        typer.Option(
            "--no-reply-queue",
            help="an external participant: declare no reply queue and make no broker user now (no broker needed)",
        ),
    ] = False,
) -> None:
    """Issue an identity certificate."""

    async def body(settings: Settings) -> int:
        _enrol(KeyStore(settings.key_dir), participant_for(user_id, role, limit, allow_short_selling), renew=renew)
        if is_external(settings, user_id) and not no_reply_queue:
            return await _participant_access(settings, user_id)
        return 0

    run(body)


@app.command("enrol-all")
def enrol_all() -> None:
    """Enrol the seven agents, the card issuer and the configured investors."""

    async def body(settings: Settings) -> None:
        keys = KeyStore(settings.key_dir)
        everyone = platform_participants()
        everyone.extend(default_participant(i, Role.INVESTOR) for i in settings.investors)
        with progress.steps("enrolment", total=len(everyone)) as steps:
            for participant in everyone:
                steps.doing(participant.user_id)
                _enrol(keys, participant)
                steps.done(participant.user_id)

    run(body)


@app.command()
def show(user_id: UserId) -> None:
    """Print a participant's identity certificate."""

    async def body(settings: Settings) -> None:
        identity = KeyStore(settings.key_dir).load_identity(user_id)
        cert = identity.certificate
        print(
            f"subject      {cert.subject.rfc4514_string()}\nissuer       {cert.issuer.rfc4514_string()}"
            f"\nserial       {cert.serial_number:x}\nvalid        {cert.not_valid_before_utc} → "
            f"{cert.not_valid_after_utc}\nfingerprint  {identity.fingerprint}"
            f"\nparticipant  {identity.participant.model_dump_json()}"
        )

    run(body)


@app.command()
def revoke(
    user_id: UserId,
    serial: Annotated[
        int | None,
        typer.Option(parser=_serial, metavar="HEX", help="only this certificate (hex serial, see `ca show`)"),
    ] = None,
    superseded: Annotated[
        bool, typer.Option("--superseded", help="every certificate but the current one (after `enrol --renew`)")
    ] = False,
) -> None:
    """Revoke a participant's certificates; agents refuse them at once."""
    if serial is not None and superseded:
        raise typer.BadParameter("--serial and --superseded exclude each other")

    async def body(settings: Settings) -> None:
        keys = KeyStore(settings.key_dir)
        added = revocation.revoke(
            keys, user_id, revocation.serials_to_revoke(keys, user_id, serial=serial, superseded=superseded)
        )
        listed = ", ".join(f"{s:x}" for s in added) or "nothing new"
        print(f"revoked {listed} of {user_id}; the list is {revocation.crl_path(keys)}")

    run(body)


@app.command()
def request(
    user_id: UserId,
    folder: Annotated[
        Path, typer.Option("--dir", help="the participant's key directory (not the CA's)", show_default=False)
    ],
) -> None:
    """A participant's side: make its key pair and a CSR in its own directory."""

    async def body(settings: Settings) -> None:
        path = enrolment.request_into(folder, user_id)
        print(f"key pair in {folder}; send {path} to the CA (`kabuto ca sign-csr`)")

    run(body)


@app.command("sign-csr")
def sign_csr(
    csr: Annotated[Path, typer.Argument(help="the participant's certificate signing request", show_default=False)],
    role: RoleOption,
    limit: Limit = None,
    allow_short_selling: ShortSelling = False,
    out: Annotated[Path | None, typer.Option(help="where to write the certificate (default: beside the CSR)")] = None,
) -> None:
    """Examine a participant's CSR and sign its certificate."""

    async def body(settings: Settings) -> None:
        _, user_id = enrolment.requested_id(csr)
        participant = participant_for(user_id, role, limit, allow_short_selling)
        written = out or csr.with_name("identity.crt")
        certificate = enrolment.sign_request_file(KeyStore(settings.key_dir), csr, participant, written)
        print(f"signed {user_id} ({role.value}) serial {certificate.serial_number:x}: {written}")

    run(body)


def participant_for(user_id: str, role: Role, limit: int | None, allow_short_selling: bool) -> Participant:
    """The participant the CA decides to certify: role and policy come from the operator."""
    participant = default_participant(user_id, role, limit)
    if participant.policy and allow_short_selling:
        policy = participant.policy.model_copy(update={"short_selling_prohibited": False})
        participant = participant.model_copy(update={"policy": policy})
    return participant


def _enrol(keys: KeyStore, participant: Participant, *, renew: bool = False) -> None:
    enrolment.examine(keys, participant)  # R-001-02: the CA examines the requester first
    identity, created = keys.enrol(participant, renew=renew)
    print(
        f"{'enrolled' if created else 'kept'} {identity.user_id} ({participant.role.value}) "
        f"{identity.fingerprint[:16]}…"
    )


async def _participant_access(settings: Settings, user_id: str) -> int:
    """An external participant's reply queue, so that no reply to it is parked (docs/client.md),
    and its own broker user, which may read that queue and publish messages, nothing else
    (issue 13, docs/security.md §5)."""
    try:
        made = await provisioning.provision(settings, [], [user_id])
    except (OSError, aio_pika.exceptions.AMQPError, AccessError) as exc:
        print(
            f"kabuto: {user_id} is enrolled, but its reply queue and broker user could not be made ({exc}); run "
            f"this again (the certificate is kept) or `kabuto access provision --participant {user_id}` where "
            "RabbitMQ and rabbitmqctl answer"
        )
        return 1
    user, _ = made.participants[user_id]
    queue = reply_queue_name(Names(settings.namespace), user_id)
    print(f"reply queue {queue} bound to {settings.namespace}.messages by {user_id}")
    print(f"broker user {user}, its login in {participant_credentials_path(settings.key_dir, user_id)}")
    return 0
