"""The migration runner: plain SQL files applied in order, each exactly once.

Files in ``migrations/`` are named ``NNNN_description.sql`` and applied in name order, each
in its own transaction, under a PostgreSQL advisory lock so that two runners never race.
The checksum of every applied file is recorded; if an applied file has since changed, the
runner refuses to go on — migrations are append-only.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from broker.errors import KabutoError
from broker.steps import SILENT, Steps

LOCK_ID = 0x4B414255544F  # "KABUTO"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class MigrationError(KabutoError):
    """The migrations on disk and in the database disagree, or one failed."""


@dataclass(frozen=True, slots=True)
class Migration:
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(folder: Path) -> list[Migration]:
    migrations = []
    for path in sorted(folder.glob("*.sql")):
        if not _NAME.match(path.name):
            raise MigrationError(f"{path.name}: migration files are named NNNN_description.sql")
        migrations.append(Migration(path.name, path.read_text()))
    numbers = [m.name[:4] for m in migrations]
    if len(set(numbers)) != len(numbers):
        raise MigrationError(f"two migrations share a number in {folder}")
    return migrations


async def ensure_database(database_url: str) -> bool:
    """Create the database the URL names if it does not exist; True if it was created."""
    try:
        conn = await asyncpg.connect(database_url)
    except asyncpg.InvalidCatalogNameError:
        pass
    else:
        await conn.close()
        return False
    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
    try:
        await admin.execute(f'CREATE DATABASE "{name.replace(chr(34), "")}"')
    except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
        return False  # created meanwhile by another runner (PostgreSQL reports either)
    finally:
        await admin.close()
    return True


async def migrate(database_url: str, folder: Path, steps: Steps = SILENT) -> list[str]:
    """Apply what is new, telling ``steps`` of each file; return the names applied now."""
    migrations = discover(folder)
    await ensure_database(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", LOCK_ID)
        try:
            return await _apply(conn, migrations, steps)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_ID)
    finally:
        await conn.close()


async def _apply(conn: asyncpg.Connection, migrations: list[Migration], steps: Steps) -> list[str]:
    await conn.execute(
        """CREATE SCHEMA IF NOT EXISTS kabuto_meta;
           CREATE TABLE IF NOT EXISTS kabuto_meta.migrations (
               name text PRIMARY KEY,
               checksum text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now())"""
    )
    rows = await conn.fetch("SELECT name, checksum FROM kabuto_meta.migrations")
    applied = {r["name"]: r["checksum"] for r in rows}
    _refuse_drift(migrations, applied)
    new = [m for m in migrations if m.name not in applied]
    steps.expect(len(new))
    done = []
    for migration in new:
        steps.doing(migration.name)
        async with conn.transaction():
            try:
                await conn.execute(migration.sql)
            except asyncpg.PostgresError as exc:
                raise MigrationError(f"{migration.name} failed: {exc}") from exc
            await conn.execute(
                "INSERT INTO kabuto_meta.migrations (name, checksum) VALUES ($1, $2)",
                migration.name,
                migration.checksum,
            )
        done.append(migration.name)
        steps.done(migration.name)
    return done


def _refuse_drift(migrations: list[Migration], applied: dict[str, str]) -> None:
    on_disk = {m.name: m.checksum for m in migrations}
    changed = [name for name, checksum in applied.items() if on_disk.get(name, checksum) != checksum]
    if changed:
        raise MigrationError(
            f"already-applied migrations changed on disk: {', '.join(sorted(changed))}; "
            "migrations are append-only — restore them and add a new file instead"
        )
    missing = sorted(set(applied) - set(on_disk))
    if missing:
        raise MigrationError(f"applied migrations missing on disk: {', '.join(missing)}")
