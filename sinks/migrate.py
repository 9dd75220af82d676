"""Numbered, append-only schema migrations: ``sinks/migrations/NNN_name.sql``.

Each file is applied once, in version order, and recorded in
``schema_migrations``; running :func:`migrate` again applies nothing.  A
file holds statements separated by a ``;`` that ends a line; ``--`` comment
lines are dropped; ``{db}`` stands for the database name (an identifier,
checked by the store).  Statements are idempotent (``IF NOT EXISTS``), so a
migration interrupted half-way is simply applied again on the next start.
Never edit a released file: add a new one.
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
