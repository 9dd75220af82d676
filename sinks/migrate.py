"""Numbered, append-only schema migrations: ``sinks/migrations/NNN_name.sql``.

Each file is applied once, in version order, and recorded in
``schema_migrations``; running :func:`migrate` again applies nothing.  A
file holds statements separated by a ``;`` that ends a line; ``--`` comment
lines are dropped; ``{db}`` stands for the database name (an identifier,
checked by the store).  Statements are idempotent (``IF NOT EXISTS``), so a
migration interrupted half-way is simply applied again on the next start.
Never edit a released file: add a new one.

Retention that a deployment chooses (``log_retention_days``) is not a
migration: :func:`apply_log_retention` sets the ``logs`` TTL at every start
when it differs from the configured one.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from runstream import tables
from sinks.store import Store

log = logging.getLogger("runstream.sink.migrate")

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_FILE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
_END = re.compile(r";[ \t]*$", re.MULTILINE)
_TTL_DAYS = re.compile(r"\bTTL toDateTime\(ts\) \+ toIntervalDay\((\d+)\)")


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    path: Path

    def statements(self, database: str) -> list[str]:
        """The file's statements with ``{db}`` replaced by ``database``."""
        return split_statements(self.path.read_text(encoding="utf-8").replace("{db}", database))


def split_statements(sql: str) -> list[str]:
    """Statements of a migration file: split at ``;`` ending a line, comment lines dropped."""
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in _END.split(body) if s.strip()]


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every migration in ``directory``, in version order; ``ValueError`` on a repeated version."""
    found: list[Migration] = []
    for path in sorted(directory.iterdir()):
        match = _FILE.match(path.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"two migrations in {directory} share a version number")
    return found


def applied_versions(store: Store) -> set[int]:
    """The versions recorded in ``schema_migrations``."""
    rows = store.query_rows(f"SELECT DISTINCT version FROM {store.database}.{tables.MIGRATIONS}")
    return {int(r[0]) for r in rows}


def migrate(store: Store, directory: Path = MIGRATIONS_DIR) -> list[int]:
    """Apply the migrations not applied yet, in order; return their versions.

    Raises the store's errors (``StorageUnavailable``, ``StorageError``).
    """
    db = store.database
    store.command(
        f"CREATE TABLE IF NOT EXISTS {db}.{tables.MIGRATIONS} "
        "(version UInt32, name String, applied_at DateTime DEFAULT now()) "
        "ENGINE = MergeTree ORDER BY version"
    )
    done = applied_versions(store)
    applied: list[int] = []
    for migration in discover(directory):
        if migration.version in done:
            continue
        for statement in migration.statements(db):
            store.command(statement)
        store.command(
            f"INSERT INTO {db}.{tables.MIGRATIONS} (version, name) SELECT {{v:UInt32}}, {{n:String}}",
            {"v": migration.version, "n": migration.name},
        )
        log.info("Applied migration. version=%03d name=%s", migration.version, migration.name)
        applied.append(migration.version)
    return applied


def log_retention_days(store: Store) -> int | None:
    """The days of the ``logs`` table's TTL as stored now (``None``: no TTL in days)."""
    rows = store.query_rows(
        "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = {t:String}",
        {"db": store.database, "t": tables.LOGS},
    )
    match = _TTL_DAYS.search(rows[0][0]) if rows else None
    return int(match.group(1)) if match else None


def apply_log_retention(store: Store, days: int) -> bool:
    """Make log lines expire ``days`` after their time; True when the TTL changed.

    Idempotent: nothing is done when the TTL already says ``days``.  The new
    TTL applies to stored parts too (ClickHouse recomputes it in a background
    mutation; whole daily partitions are dropped).  Raises ``ValueError``
    unless ``days`` is an integer >= 1, and the store's errors.
    """
    if not isinstance(days, int) or isinstance(days, bool) or days < 1:
        raise ValueError(f"log retention must be a whole number of days >= 1, not {days!r}")
    before = log_retention_days(store)
    if before == days:
        return False
    # DDL takes no bound parameters; ``days`` is a checked int.
    store.command(f"ALTER TABLE {store.database}.{tables.LOGS} MODIFY TTL toDateTime(ts) + INTERVAL {days} DAY")
    log.info("Changed log retention. before_days=%s after_days=%d", before, days)
    return True
