"""Enrolment by certificate signing request (R-001-02, issue 13): the participant makes its own
key pair in its own directory; the CA examines the request and signs, and never holds the key."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agents import cli
from broker import enrolment, logs
from broker.pki import KeyStore, PkiError, default_participant, load_certificate, new_request, participant_of
from schemas.identity import Role


@pytest.fixture
def kabuto(monkeypatch: pytest.MonkeyPatch) -> Callable[[list[str]], int]:
    """The ``kabuto`` command in this process, leaving the test run's logging as it was
    (``main`` would point structlog at this test's captured, soon closed, stdout)."""
    monkeypatch.setattr(logs, "configure", lambda *args, **kwargs: None)
    return cli.main


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.fixture
def keys(tmp_path: Path) -> KeyStore:
    store = KeyStore(tmp_path / "keys")
    store.init_ca()
    return store


def test_local_enrolment_keeps_the_key_in_the_participants_own_directory(keys: KeyStore) -> None:
    identity, created = keys.enrol(default_participant("alice", Role.INVESTOR))
    assert created
    own = keys.participant_dir("alice")
    assert keys.key_path("alice") == own / "identity.key"
    assert mode(own / "identity.key") == 0o600 and mode(own) == 0o700
    assert (own / "request.csr").exists()
    ca_files = {p.name for p in (keys.root / "ca").iterdir()}
    assert ca_files <= {"ca.key", "ca.crt", "register.jsonl"}, ca_files
    assert identity.certificate.public_key() == identity.private_key.public_key()
    assert keys.load_identity("alice").fingerprint == identity.fingerprint


def test_the_ca_signs_what_the_request_carries_and_decides_role_and_policy_itself(keys: KeyStore) -> None:
    key, request = new_request("carol")
    participant = default_participant("carol", Role.INVESTOR, limit=5_000)
    certificate = keys.load_ca().sign_request(request, participant)
    assert certificate.public_key() == key.public_key()
    assert participant_of(certificate) == participant
    [record] = [json.loads(line) for line in keys.register_path.read_text().splitlines()]
    assert (record["user_id"], record["role"]) == ("carol", "investor")


def test_a_request_naming_someone_else_is_refused(keys: KeyStore) -> None:
    _, request = new_request("mallory")
    with pytest.raises(PkiError, match="names"):
        keys.load_ca().sign_request(request, default_participant("alice", Role.INVESTOR))


def test_a_request_with_a_key_kabuto_does_not_use_is_refused(keys: KeyStore, tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "erin")])
    request = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    with pytest.raises(PkiError, match="not Ed25519"):
        keys.load_ca().sign_request(request, default_participant("erin", Role.INVESTOR))


@pytest.mark.parametrize(
    ("user_id", "role", "why"),
    [
        ("exchange", Role.INVESTOR, "agent's id"),
        ("mallory", Role.EXCHANGE, "belongs to the exchange agent"),
        ("settlement", Role.ISSUER, "agent's id"),
    ],
)
def test_the_examination_refuses_an_agents_identity_for_anyone_else(
    keys: KeyStore, user_id: str, role: Role, why: str
) -> None:
    with pytest.raises(PkiError, match=why):
        enrolment.examine(keys, default_participant(user_id, role))


def test_the_examination_refuses_a_second_role_for_an_enrolled_id(keys: KeyStore) -> None:
    keys.enrol(default_participant("alice", Role.INVESTOR))
    enrolment.examine(keys, default_participant("alice", Role.INVESTOR))  # a renewal is fine
    with open(keys.register_path, "a") as register:  # a role beyond the seven agents' (a merchant, say)
        register.write(json.dumps({"user_id": "erin", "role": "merchant", "serial": "1"}) + "\n")
    with pytest.raises(PkiError, match="enrolled as merchant"):
        enrolment.examine(keys, default_participant("erin", Role.INVESTOR))


def test_an_external_participant_requests_and_the_ca_signs_from_the_command_line(
    keys: KeyStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    kabuto: Callable[[list[str]], int],
) -> None:
    monkeypatch.setenv("KABUTO_KEY_DIR", str(keys.root))
    own = tmp_path / "dave-laptop"
    assert kabuto(["ca", "request", "dave", "--dir", str(own)]) == 0
    assert mode(own / "identity.key") == 0o600
    assert kabuto(["ca", "sign-csr", str(own / "request.csr"), "--role", "investor", "--limit", "5000"]) == 0
    assert "signed dave (investor)" in capsys.readouterr().out

    certificate = load_certificate(own / "identity.crt")
    key = serialization.load_pem_private_key((own / "identity.key").read_bytes(), password=None)
    assert certificate.public_key() == key.public_key()
    participant = participant_of(certificate)
    assert (participant.user_id, participant.role, participant.policy and participant.policy.account_usage_limit) == (
        "dave",
        Role.INVESTOR,
        5000,
    )
    certificate.verify_directly_issued_by(keys.ca_certificate())
    assert not any(p.name == "identity.key" for p in keys.root.rglob("*")), "the CA's directory holds no dave key"

    assert kabuto(["ca", "sign-csr", str(own / "request.csr"), "--role", "brokerage"]) == 1
    assert "belongs to the brokerage agent, not to dave" in capsys.readouterr().err
    (tmp_path / "junk.csr").write_text("not a request")
    assert kabuto(["ca", "sign-csr", str(tmp_path / "junk.csr"), "--role", "investor"]) == 1
    assert "not a PEM certificate signing request" in capsys.readouterr().err


def test_a_participant_enrolled_before_csr_enrolment_is_still_read_and_moves_on_renewal(keys: KeyStore) -> None:
    identity, _ = keys.enrol(default_participant("bob", Role.INVESTOR))
    legacy = keys.root / "participants"
    (legacy / "bob.key").write_bytes(keys.key_path("bob").read_bytes())
    (legacy / "bob.key").chmod(0o600)
    (legacy / "bob.crt").write_bytes(keys.certificate_path("bob").read_bytes())
    for path in keys.participant_dir("bob").iterdir():
        path.unlink()
    assert keys.key_path("bob") == legacy / "bob.key"
    assert keys.load_identity("bob").fingerprint == identity.fingerprint
    renewed, _ = keys.enrol(identity.participant, renew=True)
    assert not (legacy / "bob.key").exists() and keys.key_path("bob") == keys.participant_dir("bob") / "identity.key"
    assert keys.load_identity("bob").fingerprint == renewed.fingerprint
