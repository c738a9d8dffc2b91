"""Certificate revocation: the CA's signed revocation list, and a reader that follows the file.

The CA keeps one X.509 CRL, signed with its key, at ``<key dir>/ca/crl.pem``. Revoking a
certificate re-issues the whole list and replaces the file atomically (write, then rename),
so a reader sees the old list or the new one, never half of one. Each revocation is also
appended to the CA's register.

``RevocationList`` is what a trust store consults for every delivery. It looks at the file's
modification time (one ``stat``) and reloads the list when it changed, so a running agent
refuses a revoked certificate from the first delivery it handles after ``kabuto ca revoke``
returns, without a restart. A delivery is opened as it arrives and checked again when its batch
is taken (``broker.envelope.still_valid``): the batch looks at the file afresh (``look``), and
what else is checked in the same turn of the event loop shares the last look (stop 29).
A list whose signature does not verify with the CA's key is not believed: the reader keeps the
list it had and logs ``crl_invalid``.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker import logs
from broker.pki import CertificateAuthority, KeyStore, PkiError, load_certificate
from broker.trust import TrustStore

log = logs.get("kabuto.revocation")
CRL_VALIDITY = timedelta(days=7)


def crl_path(keys: KeyStore) -> Path:
    return keys.root / "ca" / "crl.pem"


@dataclass(frozen=True, slots=True)
class Revoked:
    serial: int
    revoked_at: datetime


def issue_crl(ca: CertificateAuthority, revoked: Iterable[Revoked], now: datetime) -> x509.CertificateRevocationList:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.certificate.subject)
        .last_update(now)
        .next_update(now + CRL_VALIDITY)
    )
    for entry in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(entry.serial).revocation_date(entry.revoked_at).build()
        )
    return builder.sign(ca.private_key, algorithm=None)


def revoked_entries(crl: x509.CertificateRevocationList) -> dict[int, Revoked]:
    return {r.serial_number: Revoked(r.serial_number, r.revocation_date_utc) for r in crl}


def load_crl(path: Path, ca_certificate: x509.Certificate) -> x509.CertificateRevocationList:
    """The list at ``path``, if the CA signed it; else ``PkiError``."""
    try:
        crl = x509.load_pem_x509_crl(path.read_bytes())
    except ValueError as exc:
        raise PkiError(f"{path} is not a PEM certificate revocation list") from exc
    key = ca_certificate.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise PkiError("the Kabuto CA key is not Ed25519")
    if crl.issuer != ca_certificate.subject or not crl.is_signature_valid(key):
        raise PkiError(f"{path} is not signed by the Kabuto CA")
    return crl


def _serials_of(keys: KeyStore, user_id: str) -> list[int]:
    """Every certificate the CA's register says it issued to ``user_id``."""
    if not keys.register_path.exists():
        return []
    serials = []
    for line in keys.register_path.read_text().splitlines():
        record = json.loads(line)
        if record.get("user_id") == user_id and "serial" in record and "revoked" not in record:
            serials.append(int(record["serial"], 16))
    return serials


def serials_to_revoke(keys: KeyStore, user_id: str, *, serial: int | None, superseded: bool) -> list[int]:
    """One certificate, the superseded ones (all but the current), or every one of ``user_id``."""
    issued = _serials_of(keys, user_id)
    if serial is not None:
        if serial not in issued:
            raise PkiError(f"the CA issued no certificate {serial:x} to {user_id}")
        return [serial]
    if superseded:
        current = load_certificate(keys.certificate_path(user_id)).serial_number
        return [s for s in issued if s != current]
    if not issued:
        raise PkiError(f"the CA issued no certificate to {user_id}")
    return issued


def revoke(keys: KeyStore, user_id: str, serials: Iterable[int], now: datetime | None = None) -> list[int]:
    """Add ``serials`` to the CA's list, re-sign it and replace the file; returns those newly revoked."""
    now = now or datetime.now(UTC)
    ca = keys.load_ca()
    path = crl_path(keys)
    current = revoked_entries(load_crl(path, ca.certificate)) if path.exists() else {}
    added = [s for s in serials if s not in current]
    for serial in added:
        current[serial] = Revoked(serial, now)
    _replace(path, issue_crl(ca, current.values(), now).public_bytes(serialization.Encoding.PEM))
    with keys.register_path.open("a") as fh:
        for serial in added:
            record = {"revoked": format(serial, "x"), "user_id": user_id, "at": now.isoformat()}
            fh.write(json.dumps(record, sort_keys=True) + "\n")
    return added


def _replace(path: Path, data: bytes) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


@dataclass(slots=True)
class RevocationList:
    """The CA's list as the file says now; reloaded when the file changes.

    A check looks at the file (one ``stat``) unless the file was looked at in the same turn of
    the same running event loop: the items of one bundle are opened in one turn, and each of
    them looked at the file for itself — 3.6 % of the investor agent's CPU in a burst
    (docs/performance.md, stop 29). ``look`` looks afresh whatever the turn: the consumer does
    it when it takes a batch, so a delivery is judged by the file as it is when its batch is
    handled (B56). A check without a running loop, or on another loop, always looks."""

    path: Path
    ca_certificate: x509.Certificate
    _revoked: dict[int, Revoked] = field(default_factory=dict)
    _seen: tuple[int, int, int] | None = None
    _path_str: str = field(init=False, repr=False)
    # The loop in whose current turn the file was looked at (None once that turn is over).
    _looked_in: asyncio.AbstractEventLoop | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._path_str = str(self.path)

    def revoked(self, certificate: x509.Certificate) -> Revoked | None:
        return self.revoked_serial(certificate.serial_number)

    def revoked_serial(self, serial: int) -> Revoked | None:
        loop = _running_loop()
        if loop is None or loop is not self._looked_in:
            self._look(loop)
        return self._revoked.get(serial)

    def look(self) -> None:
        """Look at the file now; the checks in the rest of this turn share this look."""
        self._look(_running_loop())

    def _look(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self._refresh()
        if loop is not None and loop is not self._looked_in:
            self._looked_in = loop
            loop.call_soon(self._turn_over, loop)

    def _turn_over(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._looked_in is loop:
            self._looked_in = None

    def _refresh(self) -> None:
        try:
            stat = os.stat(self._path_str)  # os.stat, not Path's wrapper
        except FileNotFoundError:
            return  # no revocation yet; a list once seen is never forgotten because a file vanished
        seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)  # os.replace makes a new inode
        if seen == self._seen:
            return
        self._seen = seen
        try:
            self._revoked = revoked_entries(load_crl(self.path, self.ca_certificate))
        except PkiError as exc:
            log.error("crl_invalid", path=str(self.path), error=str(exc))
            return
        log.info("crl_loaded", path=str(self.path), revoked=len(self._revoked))


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def trust_store(keys: KeyStore) -> TrustStore:
    """What an agent trusts: the CA, the certificates on file, and the CA's revocation list."""
    ca = keys.ca_certificate()
    return TrustStore(ca, keys.certificates(), RevocationList(crl_path(keys), ca))
