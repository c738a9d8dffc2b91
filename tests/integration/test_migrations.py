"""The migration runner against a real PostgreSQL: each file once, in order, append-only."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest

from broker.migrate import MigrationError, ensure_database, migrate
from tests.conftest import DATABASE_URL, MIGRATIONS, database_url

FILES = sorted(p.name for p in MIGRATIONS.glob("*.sql"))


@pytest.fixture(autouse=True)
def roles_made(template_database: str) -> None:
    """This process's template is migrated first, so the cluster's agent roles exist before these
    tests migrate a database of their own outside ``cluster_wide_lock``: migration 0001 making a
    role while the other test process makes it too fails (review, -n 2 on a fresh cluster)."""


@asynccontextmanager
async def fresh_database(*, create: bool = True) -> AsyncIterator[str]:
    """An empty database (or only its name), dropped afterwards."""
    name = f"kabuto_mig_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(DATABASE_URL)
    try:
        if create:
            await admin.execute(f'CREATE DATABASE "{name}"')
        yield database_url(name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def recorded(url: str) -> list[tuple[str, str]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT name, checksum FROM kabuto_meta.migrations ORDER BY applied_at, name")
        return [(r["name"], r["checksum"]) for r in rows]
    finally:
        await conn.close()


async def exists(url: str, table: str) -> bool:
    conn = await asyncpg.connect(url)
    try:
        return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table))
    finally:
        await conn.close()


def copy_of_migrations(tmp_path: Path) -> Path:
    return Path(shutil.copytree(MIGRATIONS, tmp_path / "migrations"))


async def test_an_empty_database_gets_every_file_once_in_order_and_a_rerun_applies_nothing(
    services: None,
) -> None:
    async with fresh_database() as url:
        assert await migrate(url, MIGRATIONS) == FILES
        checksums = [hashlib.sha256((MIGRATIONS / f).read_text().encode()).hexdigest() for f in FILES]
        assert await recorded(url) == list(zip(FILES, checksums, strict=True))

        assert await migrate(url, MIGRATIONS) == []
        assert await recorded(url) == list(zip(FILES, checksums, strict=True))


async def test_two_concurrent_runners_apply_each_file_exactly_once(services: None) -> None:
    async with fresh_database() as url:
        first, second = await asyncio.gather(migrate(url, MIGRATIONS), migrate(url, MIGRATIONS))
        assert sorted([*first, *second]) == FILES
        assert [name for name, _ in await recorded(url)] == FILES


async def test_a_changed_applied_file_is_refused_and_nothing_new_is_applied(database: str, tmp_path: Path) -> None:
    folder = copy_of_migrations(tmp_path)
    assert await migrate(database, folder) == []
    changed = folder / "0002_issuer.sql"
    changed.write_text(changed.read_text() + "\n-- edited after it was applied\n")
    (folder / "0099_later.sql").write_text("CREATE TABLE issuer.later (id int);")

    with pytest.raises(MigrationError, match=r"0002_issuer\.sql"):
        await migrate(database, folder)
    assert [name for name, _ in await recorded(database)] == FILES
    assert not await exists(database, "issuer.later")


async def test_a_failing_file_raises_and_leaves_no_trace(database: str, tmp_path: Path) -> None:
    folder = copy_of_migrations(tmp_path)
    (folder / "0099_broken.sql").write_text("CREATE TABLE issuer.half_done (id int);\nSELECT * FROM no_such_table;")

    with pytest.raises(MigrationError, match=r"0099_broken\.sql"):
        await migrate(database, folder)
    assert [name for name, _ in await recorded(database)] == FILES
    assert not await exists(database, "issuer.half_done")


async def test_ensure_database_creates_a_missing_database_once(services: None) -> None:
    async with fresh_database(create=False) as url:
        assert await ensure_database(url) is True
        conn = await asyncpg.connect(url)
        await conn.close()
        assert await ensure_database(url) is False
