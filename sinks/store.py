"""The ClickHouse store: the one module that imports clickhouse_connect.

The same code talks to embedded chDB (``chdb:///path``) and to a ClickHouse
server (``http://user:pass@host:8123/db``).  chDB allows one process per data
directory and a synchronous client only, so every call runs on one dedicated
thread; async code goes through :meth:`Store.call`.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import clickhouse_connect
from clickhouse_connect.driver.exceptions import ClickHouseError, DatabaseError, OperationalError

from runstream import tables
from runstream.errors import QueryError, QueryLimitExceeded, RunstreamError, StorageUnavailable

T = TypeVar("T")

#: ClickHouse error codes that mean "over a cost limit".
LIMIT_CODES = frozenset({158, 159, 160, 161, 241, 307, 396})
#: Codes that mean a bad query parameter from the user (bad regex, bad type).
USER_CODES = frozenset({36, 43, 53, 62, 69, 427})
#: Codes worth retrying: the server is busy or shutting down.
TRANSIENT_CODES = frozenset({202, 203, 209, 210, 242, 252, 425})

_CODE = re.compile(r"Code: (\d+)")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class StorageError(RunstreamError):
    """ClickHouse refused the operation for a reason retrying will not fix."""


def error_code(exc: BaseException) -> int | None:
    """The ClickHouse error code in an exception's message, if any."""
    match = _CODE.search(str(exc))
    return int(match.group(1)) if match else None


def classify(exc: BaseException) -> RunstreamError:
    """Map a clickhouse_connect error to runstream's retriable/permanent errors."""
    code = error_code(exc)
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if code in LIMIT_CODES:
        return QueryLimitExceeded(f"query over its cost limit: {first_line[:300]}")
    if code in USER_CODES:
        return QueryError(first_line[:300])
    if isinstance(exc, OperationalError) or code in TRANSIENT_CODES:
        return StorageUnavailable(first_line[:300])
    return StorageError(first_line[:500])


class Store:
    """A ClickHouse database, every call serialised on one thread."""

    def __init__(self, dsn: str, database: str = tables.DATABASE) -> None:
        if not _IDENT.match(database):
            raise ValueError(f"database name {database!r} is not an identifier")
        self.dsn = dsn
        self.database = database
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        self._thread: threading.Thread | None = None
        self._client = self._run(self._open)

    def _open(self) -> Any:
        self._thread = threading.current_thread()
        client = clickhouse_connect.get_client(dsn=self.dsn)
        client.command(f"CREATE DATABASE IF NOT EXISTS {self.database}")
        return client

    def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if threading.current_thread() is self._thread:
            return fn(*args, **kwargs)
        return self._executor.submit(fn, *args, **kwargs).result()

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on the store's thread without blocking the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def command(self, sql: str, parameters: dict[str, Any] | None = None,
                settings: dict[str, Any] | None = None) -> Any:
        """Run a statement; raises the classified runstream error on failure."""
        def go() -> Any:
            try:
                return self._client.command(sql, parameters=parameters, settings=settings)
            except ClickHouseError as exc:
                raise classify(exc) from exc
        return self._run(go)

    def query_rows(self, sql: str, parameters: dict[str, Any] | None = None,
                   settings: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Rows of a query as tuples (values bound server-side from ``parameters``)."""
        def go() -> list[tuple[Any, ...]]:
            try:
                return list(self._client.query(sql, parameters=parameters, settings=settings).result_rows)
            except ClickHouseError as exc:
                raise classify(exc) from exc
        return self._run(go)

    def query(self, sql: str, parameters: dict[str, Any] | None = None,
              settings: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Rows of a query as dicts keyed by column name."""
        def go() -> list[dict[str, Any]]:
            try:
                result = self._client.query(sql, parameters=parameters, settings=settings)
            except ClickHouseError as exc:
                raise classify(exc) from exc
            names = result.column_names
            return [dict(zip(names, row)) for row in result.result_rows]
        return self._run(go)

    def insert_arrow(self, table: str, data: Any, dedup_token: str | None = None) -> None:
        """Insert an Arrow table; a repeated ``dedup_token`` makes the insert a no-op."""
        def go() -> None:
            settings = {"insert_deduplicate": 1, "insert_deduplication_token": dedup_token} if dedup_token else None
            try:
                self._client.insert_arrow(f"{self.database}.{table}", data, settings=settings)
            except ClickHouseError as exc:
                raise classify(exc) from exc
        self._run(go)

    def insert_rows(self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> None:
        """Insert row tuples (small inserts: dead letters, tests)."""
        def go() -> None:
            try:
                self._client.insert(f"{self.database}.{table}", rows, column_names=list(columns))
            except ClickHouseError as exc:
                raise classify(exc) from exc
        self._run(go)

    def close(self) -> None:
        """Close the client and stop the store's thread."""
        try:
            self._run(self._client.close)
        finally:
            self._executor.shutdown(wait=True)


def open_store(dsn: str, database: str = tables.DATABASE) -> Store:
    """Open the database and apply pending migrations."""
    from sinks.migrate import migrate

    store = Store(dsn, database)
    migrate(store)
    return store


__all__ = ["DatabaseError", "Store", "StorageError", "classify", "open_store"]
