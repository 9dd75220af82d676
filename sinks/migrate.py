"""Numbered, append-only schema migrations (``sinks/migrations/NNN_name.sql``).

Each file is applied once, in order, and recorded in ``schema_migrations``;
statements are separated by a ``;`` at the end of a line.
"""

from __future__ import annotations

import re
from pathlib import Path

from runstream import tables
from sinks.store import Store

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


def migration_files() -> list[tuple[int, str, Path]]:
    """Every migration file as (version, name, path), in version order."""
    out = []
    for path in sorted(MIGRATIONS_DIR.iterdir()):
        match = _NAME.match(path.name)
        if match:
            out.append((int(match.group(1)), match.group(2), path))
    versions = [v for v, _, _ in out]
    if len(set(versions)) != len(versions):
        raise RuntimeError("two migrations share a version number")
    return out


def statements(sql: str) -> list[str]:
    """Split a migration file into statements (comment lines dropped)."""
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in re.split(r";\s*$", body, flags=re.MULTILINE) if s.strip()]


def migrate(store: Store) -> list[int]:
    """Apply the migrations not applied yet; return their versions."""
    db = store.database
    store.command(
        f"CREATE TABLE IF NOT EXISTS {db}.{tables.MIGRATIONS} "
        "(version UInt32, name String, applied_at DateTime DEFAULT now()) ENGINE = MergeTree ORDER BY version"
    )
    done = {row[0] for row in store.query_rows(f"SELECT version FROM {db}.{tables.MIGRATIONS}")}
    applied = []
    for version, name, path in migration_files():
        if version in done:
            continue
        for statement in statements(path.read_text()):
            store.command(statement.replace("{db}", db))
        store.insert_rows(tables.MIGRATIONS, [(version, name)], ["version", "name"])
        applied.append(version)
    return applied
