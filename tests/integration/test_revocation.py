"""Certificate revocation and key rotation on a running agent (issue 13, docs/bad-input.md B56–B58).

A certificate the CA revokes is refused from the first delivery after the revocation, by an
agent that was not restarted; a participant that renews its key has both certificates
accepted during the overlap, and the old one alone is refused once it is revoked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from agents import cli
from broker import logs, revocation
from broker.consumer import Outcome
from broker.envelope import Sealed, seal
from broker.errors import Reason
from broker.pki import Identity, KeyStore, PkiError, default_participant
from broker.runtime import AgentRuntime
from broker.settings import Settings
from broker.trust import TrustStore
from schemas.identity import Role
from schemas.lifecycle import HoldingsInquiry
from tests import support
from tests.integration.refusal_kit import expect_dead_letter


@pytest.fixture
def kabuto(monkeypatch: pytest.MonkeyPatch) -> Callable[[list[str]], int]:
    """The ``kabuto`` command in this process, leaving the test run's logging as it was
    (``main`` would point structlog at this test's captured, soon closed, stdout)."""
    monkeypatch.setattr(logs, "configure", lambda *args, **kwargs: None)
    return cli.main


def _newcomer(keys: KeyStore) -> Identity:
    """An investor of this test alone, so revoking it touches no other test."""
    identity, _ = keys.enrol(default_participant(f"rev-{uuid4().hex[:10]}", Role.INVESTOR))
    return identity


def _inquiry(identity: Identity) -> Sealed:
    return seal(identity, HoldingsInquiry(user_id=identity.user_id), recipient="issuer", now=datetime.now(UTC))


async def _accepted(settings: Settings, issuer: AgentRuntime, sealed: Sealed) -> None:
    await support.publish_sealed(settings, sealed)
    assert (await issuer.outcomes.wait_for(sealed.envelope.message_id)).outcome is Outcome.PROCESSED


async def test_B56_revoked_certificate_is_refused_from_the_moment_of_revocation_without_a_restart(
    settings: Settings, keys: KeyStore
) -> None:
    identity = _newcomer(keys)
    async with support.agents(settings, "issuer") as rt:
        issuer = rt["issuer"]
        await _accepted(settings, issuer, _inquiry(identity))
        revoked = revocation.revoke(keys, identity.user_id, [identity.certificate.serial_number])
        assert revoked == [identity.certificate.serial_number]
        late = _inquiry(identity)
        await expect_dead_letter(settings, issuer, late.body, late.headers, Reason.CERTIFICATE_REVOKED)


async def test_B57_during_a_key_rotation_both_certificates_work_until_the_old_one_is_revoked(
    settings: Settings, keys: KeyStore
) -> None:
    old = _newcomer(keys)
    async with support.agents(settings, "issuer") as rt:
        issuer = rt["issuer"]
        new, renewed = keys.enrol(old.participant, renew=True)
        assert renewed and new.fingerprint != old.fingerprint
        # The overlap: a process still holding the old key and one with the new are both believed.
        await _accepted(settings, issuer, _inquiry(old))
        await _accepted(settings, issuer, _inquiry(new))

        superseded = revocation.serials_to_revoke(keys, old.user_id, serial=None, superseded=True)
        assert superseded == [old.certificate.serial_number]
        revocation.revoke(keys, old.user_id, superseded)

        stale = _inquiry(old)
        await expect_dead_letter(settings, issuer, stale.body, stale.headers, Reason.CERTIFICATE_REVOKED)
        await _accepted(settings, issuer, _inquiry(new))


async def test_B58_a_message_signed_with_the_old_key_under_the_new_certificate_is_refused(
    settings: Settings, keys: KeyStore
) -> None:
    old = _newcomer(keys)
    new, _ = keys.enrol(old.participant, renew=True)
    mixed = Identity(old.participant, old.private_key, new.certificate)
    sealed = _inquiry(mixed)
    async with support.agents(settings, "issuer") as rt:
        await expect_dead_letter(settings, rt["issuer"], sealed.body, sealed.headers, Reason.SIGNATURE_INVALID)


def test_a_list_not_signed_by_the_ca_is_not_believed(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path / "ours")
    keys.init_ca()
    alice, _ = keys.enrol(default_participant("alice", Role.INVESTOR))
    path = revocation.crl_path(keys)
    reader = revocation.RevocationList(path, keys.ca_certificate())
    revocation.revoke(keys, "alice", [alice.certificate.serial_number])
    assert reader.revoked(alice.certificate) is not None

    rogue = KeyStore(tmp_path / "rogue")
    rogue.init_ca()
    path.write_bytes(revocation.issue_crl(rogue.load_ca(), [], datetime.now(UTC)).public_bytes(Encoding.PEM))
    assert reader.revoked(alice.certificate) is not None, "a forged empty list must not un-revoke"
    with pytest.raises(PkiError, match="not signed by the Kabuto CA"):
        revocation.load_crl(path, keys.ca_certificate())
    path.write_text("not a list")
    assert reader.revoked(alice.certificate) is not None


def _alice_and_reader(tmp_path: Path) -> tuple[KeyStore, Identity, revocation.RevocationList]:
    keys = KeyStore(tmp_path)
    keys.init_ca()
    alice, _ = keys.enrol(default_participant("alice", Role.INVESTOR))
    return keys, alice, revocation.RevocationList(revocation.crl_path(keys), keys.ca_certificate())


async def test_the_list_is_looked_at_once_a_turn_of_the_event_loop_and_again_at_the_next(tmp_path: Path) -> None:
    """One bundle's items are opened in one turn: one look at the file serves them all; what the
    file says after it is seen from the next turn on."""
    keys, alice, reader = _alice_and_reader(tmp_path)
    assert reader.revoked(alice.certificate) is None
    revocation.revoke(keys, "alice", [alice.certificate.serial_number])
    assert reader.revoked(alice.certificate) is None, "within the turn that looked, the look is shared"
    await _next_turn()
    assert reader.revoked(alice.certificate) is not None


async def _next_turn() -> None:
    """Resumed by a callback of the loop's next turn: every callback the turn before scheduled
    (the end of its look among them) has run by then."""
    turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(turn.set_result, None)
    async with asyncio.timeout(5):
        await turn


async def test_a_look_asked_for_sees_the_file_now_even_in_the_turn_that_looked(tmp_path: Path) -> None:
    """What the consumer does when it takes a batch: its deliveries are judged by the list as it
    is then, whatever was looked at earlier in the turn (found by review)."""
    keys, alice, reader = _alice_and_reader(tmp_path)
    trust = TrustStore(keys.ca_certificate(), [], reader)
    assert reader.revoked(alice.certificate) is None
    revocation.revoke(keys, "alice", [alice.certificate.serial_number])
    trust.look_at_revocations()
    assert reader.revoked(alice.certificate) is not None


def _looked_in_a_loop_that_stopped(reader: revocation.RevocationList, certificate: x509.Certificate) -> None:
    """A check in a turn in which its loop was stopped and closed: the turn never ended."""
    loop = asyncio.new_event_loop()
    try:
        loop.call_soon(lambda: (reader.revoked(certificate), loop.stop()))
        loop.run_forever()
    finally:
        loop.close()


@pytest.mark.parametrize("where", ["no loop", "another loop"])
def test_a_look_in_a_loop_that_stopped_stands_for_no_check_after_it(tmp_path: Path, where: str) -> None:
    """Found by review: the look stood for every check after it, with no loop or on any loop."""
    keys, alice, reader = _alice_and_reader(tmp_path)
    _looked_in_a_loop_that_stopped(reader, alice.certificate)
    revocation.revoke(keys, "alice", [alice.certificate.serial_number])

    async def on_another_loop() -> revocation.Revoked | None:
        return reader.revoked(alice.certificate)

    seen = reader.revoked(alice.certificate) if where == "no loop" else asyncio.run(on_another_loop())
    assert seen is not None


def test_without_a_running_loop_every_check_looks_at_the_file(tmp_path: Path) -> None:
    keys, alice, reader = _alice_and_reader(tmp_path)
    assert reader.revoked(alice.certificate) is None
    revocation.revoke(keys, "alice", [alice.certificate.serial_number])
    assert reader.revoked(alice.certificate) is not None


def test_revoking_what_the_ca_never_issued_fails_clearly(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path)
    keys.init_ca()
    keys.enrol(default_participant("alice", Role.INVESTOR))
    with pytest.raises(PkiError, match="no certificate to mallory"):
        revocation.serials_to_revoke(keys, "mallory", serial=None, superseded=False)
    with pytest.raises(PkiError, match="no certificate 1234 to alice"):
        revocation.serials_to_revoke(keys, "alice", serial=0x1234, superseded=False)


def test_kabuto_ca_revoke_superseded_after_renew(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    kabuto: Callable[[list[str]], int],
) -> None:
    monkeypatch.setenv("KABUTO_KEY_DIR", str(tmp_path))
    assert kabuto(["ca", "init"]) == 0
    assert kabuto(["ca", "enrol", "alice", "--role", "investor"]) == 0
    first = KeyStore(tmp_path).load_identity("alice").certificate
    assert kabuto(["ca", "enrol", "alice", "--role", "investor", "--renew"]) == 0
    assert kabuto(["ca", "revoke", "alice", "--superseded"]) == 0
    assert f"revoked {first.serial_number:x} of alice" in capsys.readouterr().out
    reader = revocation.RevocationList(revocation.crl_path(KeyStore(tmp_path)), KeyStore(tmp_path).ca_certificate())
    assert reader.revoked(first) is not None
    assert reader.revoked(KeyStore(tmp_path).load_identity("alice").certificate) is None
    assert kabuto(["ca", "revoke", "mallory"]) == 1
    assert "no certificate to mallory" in capsys.readouterr().err
