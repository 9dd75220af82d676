"""The ClickHouse store: the one module that imports clickhouse_connect.

The same code talks to embedded chDB (``chdb:///path``) and to a ClickHouse
server (``http://user:pass@host:8123/db``).  chDB allows one engine per
process and a synchronous client only.  A store has two lanes, each a
dedicated thread with its own connection to the same engine: writes (DDL,
inserts) run on the write lane, reads on the read lane, so a search never
waits behind an insert and an insert never waits behind a search (chDB runs
two connections' statements at once).  The synchronous methods hop onto their
lane when called from elsewhere (a read called on the write lane runs there);
async code awaits :meth:`Store.call` (write lane) or :meth:`Store.read_call`
(read lane), which never block the event loop.

Errors come out as runstream errors that say whether retrying can help:
:class:`~runstream.errors.StorageUnavailable` (retriable: unreachable, busy,
timed out), :class:`~runstream.errors.QueryLimitExceeded` (a read went over
its cost limits), :class:`~runstream.errors.QueryError` (a bad user value,
such as a regex that does not compile) and :class:`StorageError` (permanent).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import clickhouse_connect
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

from runstream import tables
from runstream.errors import QueryError, QueryLimitExceeded, RunstreamError, StorageUnavailable

T = TypeVar("T")

#: Codes for "over a cost limit" on a read: rows/bytes read, time, memory, result size.
LIMIT_CODES = frozenset({158, 159, 160, 241, 307, 396})
#: Codes for a value the user gave that ClickHouse cannot use (a regex that does not compile).
USER_CODES = frozenset({427})
#: Codes worth retrying: the server is unreachable, busy, or was interrupted.
TRANSIENT_CODES = frozenset({3, 32, 159, 202, 203, 209, 210, 241, 242, 252, 319, 394, 425, 999, 1000})

#: Settings applied to every insert: a batch that spans many days is fine (it only
#: makes more parts), and a repeated deduplication token makes the insert a no-op.
#: Asynchronous inserts are off whatever the server's profile says: the sink batches
#: itself, commits offsets only after a synchronous insert returned, and its tokens
#: are those of plain inserts.
INSERT_SETTINGS: dict[str, Any] = {
    "throw_on_max_partitions_per_insert_block": 0,
    "insert_deduplicate": 1,
    "async_insert": 0,
}

#: Per-table additions to INSERT_SETTINGS.  The logs' skip indexes (full text, tags
#: bloom filter) are built when parts merge, not on insert: the sink's small parts are
#: merged within seconds and every merge rebuilds the indexes anyway, so building them
#: on insert cost CPU for nothing (bench/storage.py: the text index doubled the CPU of
#: a log insert; the tags bloom filter took another ~15 %).  Until its first merge a
#: part is searched without them (same answers, a scan).
TABLE_INSERT_SETTINGS: dict[str, dict[str, Any]] = {
    tables.LOGS: {"exclude_materialize_skip_indexes_on_insert": "text_idx,tags_idx"},
}

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CODE = re.compile(r"\bCode:\s*(\d+)")
_MAX_MESSAGE_CHARS = 500


class StorageError(RunstreamError):
    """ClickHouse refused the operation for a reason retrying will not fix."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


def check_identifier(name: str) -> str:
    """``name`` if it is a plain SQL identifier; raise ``ValueError`` otherwise."""
    if not IDENTIFIER.match(name):
        raise ValueError(f"{name!r} is not an identifier ([A-Za-z_][A-Za-z0-9_]*)")
    return name


def error_code(exc: BaseException) -> int | None:
    """The ClickHouse error code carried by ``exc``, if any."""
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    match = _CODE.search(str(exc))
    return int(match.group(1)) if match else None


def _message(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:_MAX_MESSAGE_CHARS]


def classify(exc: BaseException, reading: bool) -> RunstreamError:
    """The runstream error for a driver error; ``reading`` says the call ran under query limits.

    Time and memory limits (159, 241) mean "over the limit" for a read and
    "busy, try again" for a write, which runs without limits.
    """
    code = error_code(exc)
    message = _message(exc)
    if reading and code in LIMIT_CODES:
        return QueryLimitExceeded(f"query went over its cost limits: {message}")
    if reading and code in USER_CODES:
        return QueryError(message)
    if code in TRANSIENT_CODES or (isinstance(exc, OperationalError) and code is None):
        return StorageUnavailable(message)
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return StorageUnavailable(message)
    return StorageError(message, code)


def split_dsn(dsn: str) -> tuple[str, str | None]:
    """``(dsn without its database path, database or None)`` for an ``http(s)://`` DSN.

    A server DSN may name a database that does not exist yet; the store
    connects without it and creates it.  chDB DSNs pass through unchanged.
    """
    parts = urlsplit(dsn)
    if parts.scheme not in ("http", "https", "clickhouse", "clickhouses"):
        return dsn, None
    name = parts.path.strip("/")
    return urlunsplit((parts.scheme, parts.netloc, "", parts.query, parts.fragment)), name or None


_INT64 = range(-(2**63), 2**63)


def _check_value(value: Any) -> None:
    """Raise unless ``value`` is a ``str`` or an ``int`` within Int64 (what :meth:`Store.insert_values` takes)."""
    if isinstance(value, str):
        return
    if isinstance(value, int) and not isinstance(value, bool):
        if value not in _INT64:
            raise ValueError(f"insert_values takes Int64 numbers, not {value}")
        return
    raise TypeError(f"insert_values takes ints and strings, not {type(value).__name__}")


class Store:
    """One ClickHouse database; writes serialised on one thread, reads on another.

    ``settings`` are ClickHouse settings for every statement of the session.

    Raises :class:`~runstream.errors.StorageUnavailable` when the server
    cannot be reached at open time, :class:`StorageError` for anything else.
    """

    def __init__(self, dsn: str, database: str = tables.DATABASE, settings: Mapping[str, Any] | None = None) -> None:
        self.database = check_identifier(database)
        self._dsn = dsn
        self._settings = dict(settings or {})
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="runstream-store")
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="runstream-store-read")
        self._thread: threading.Thread | None = None
        self._read_thread: threading.Thread | None = None
        self._read_client: Any = None
        self._closed = False
        try:
            self._client: Any = self._executor.submit(self._open).result()
            self._read_client = self._reader.submit(self._open_reader).result()
        except BaseException:
            if self._read_client is None and getattr(self, "_client", None) is not None:
                self._executor.submit(self._client.close).result()
            self._executor.shutdown(wait=True)
            self._reader.shutdown(wait=True)
            raise

    def __repr__(self) -> str:
        # Never show the DSN: it may carry a password.
        return f"Store(database={self.database!r})"

    def _open(self) -> Any:
        self._thread = threading.current_thread()
        dsn, _ = split_dsn(self._dsn)
        try:
            client = clickhouse_connect.get_client(
                dsn=dsn, show_clickhouse_errors="scrub", settings=self._settings or None
            )
            client.command(f"CREATE DATABASE IF NOT EXISTS {self.database}")
        except (ClickHouseError, OSError) as exc:
            raise classify(exc, reading=False) from exc
        return client

    def _open_reader(self) -> Any:
        self._read_thread = threading.current_thread()
        dsn, _ = split_dsn(self._dsn)
        try:
            return clickhouse_connect.get_client(
                dsn=dsn, show_clickhouse_errors="scrub", settings=self._settings or None
            )
        except (ClickHouseError, OSError) as exc:
            raise classify(exc, reading=False) from exc

    def _lane_client(self) -> Any:
        """The connection of the lane this thread is (the read lane's on its thread, else the write lane's)."""
        return self._read_client if threading.current_thread() is self._read_thread else self._client

    def _on_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn`` on the write lane (the write lane never waits for the read lane: no deadlock)."""
        if threading.current_thread() is self._thread:
            return fn(*args, **kwargs)
        if self._closed:
            raise StorageError("the store is closed")
        return self._executor.submit(fn, *args, **kwargs).result()

    def _on_read_lane(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn`` on this thread when it is a lane already, else on the read lane."""
        if threading.current_thread() in (self._thread, self._read_thread):
            return fn(*args, **kwargs)
        if self._closed:
            raise StorageError("the store is closed")
        return self._reader.submit(fn, *args, **kwargs).result()

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Await ``fn(*args, **kwargs)`` run on the write lane (the loop keeps running)."""
        if self._closed:
            raise StorageError("the store is closed")
        return await asyncio.wrap_future(self._executor.submit(fn, *args, **kwargs))

    async def read_call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Await ``fn(*args, **kwargs)`` run on the read lane: for functions that only read."""
        if self._closed:
            raise StorageError("the store is closed")
        return await asyncio.wrap_future(self._reader.submit(fn, *args, **kwargs))

    def command(self, sql: str, parameters: Mapping[str, Any] | None = None) -> Any:
        """Run a statement (DDL, ``INSERT ... SELECT``); values bound server-side."""

        def go() -> Any:
            try:
                return self._client.command(sql, parameters=dict(parameters) if parameters else None)
            except (ClickHouseError, OSError) as exc:
                raise classify(exc, reading=False) from exc

        return self._on_thread(go)

    def query_rows(
        self,
        sql: str,
        parameters: Mapping[str, Any] | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> list[tuple[Any, ...]]:
        """The rows of a read as tuples; ``{name:Type}`` placeholders bound server-side."""
        result = self._on_read_lane(self._read, sql, parameters, settings)
        return [tuple(row) for row in result.result_rows]

    def query(
        self,
        sql: str,
        parameters: Mapping[str, Any] | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """The rows of a read as dicts keyed by column name."""
        result = self._on_read_lane(self._read, sql, parameters, settings)
        names = result.column_names
        return [dict(zip(names, row, strict=True)) for row in result.result_rows]

    def _read(self, sql: str, parameters: Mapping[str, Any] | None, settings: Mapping[str, Any] | None) -> Any:
        """One query on this lane's connection, its errors classified as a read's."""
        try:
            return self._lane_client().query(
                sql,
                parameters=dict(parameters) if parameters else None,
                settings=dict(settings) if settings else None,
            )
        except (ClickHouseError, OSError) as exc:
            raise classify(exc, reading=True) from exc

    def insert_arrow(self, table: str, arrow_table: Any, dedup_token: str | None = None) -> None:
        """Insert a ``pyarrow.Table`` into ``table`` of this database.

        A ``dedup_token`` seen before (within the table's deduplication
        window) makes the insert a no-op, so a replayed batch is stored once.
        """
        check_identifier(table)
        settings = dict(INSERT_SETTINGS)
        settings.update(TABLE_INSERT_SETTINGS.get(table, {}))
        if dedup_token:
            settings["insert_deduplication_token"] = dedup_token

        def go() -> None:
            try:
                self._client.insert_arrow(table, arrow_table, database=self.database, settings=settings)
            except (ClickHouseError, OSError) as exc:
                raise classify(exc, reading=False) from exc
            except Exception as exc:  # pyarrow refusing the data is permanent, not a crash
                if type(exc).__module__.startswith("pyarrow"):
                    raise StorageError(f"{type(exc).__name__}: {_message(exc)}") from exc
                raise

        self._on_thread(go)

    def insert_rows(self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> None:
        """Insert row tuples into ``table`` (small inserts: bookkeeping and tests)."""
        check_identifier(table)

        def go() -> None:
            try:
                self._client.insert(
                    table,
                    [list(r) for r in rows],
                    column_names=list(columns),
                    database=self.database,
                    settings={**INSERT_SETTINGS, **TABLE_INSERT_SETTINGS.get(table, {})},
                )
            except (ClickHouseError, OSError) as exc:
                raise classify(exc, reading=False) from exc

        self._on_thread(go)

    def insert_values(self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> None:
        """Insert a few rows of numbers and text into ``table``, as ``JSONCompactEachRow`` data.

        For the sink's bookkeeping: the rows go as data (never SQL text) with
        the insert settings in the insert's own ``SETTINGS`` clause, and none of
        :meth:`insert_rows`'s column-type lookup and conversion.  On chDB this
        costs ~3.5 ms of CPU per small insert; a ``command`` with per-call
        settings costs about four times that (clickhouse_connect applies them
        to chDB as SET statements, reads them back and restores them: eight
        engine calls).  Raises ``TypeError`` for a value that is not an ``int``
        or a ``str``, ``ValueError`` for an ``int`` outside Int64 or a row of
        another length than ``columns``.
        """
        check_identifier(table)
        for column in columns:
            check_identifier(column)
        lines = []
        for row in rows:
            if len(row) != len(columns):
                raise ValueError(f"insert_values got {len(row)} values for {len(columns)} columns")
            for value in row:
                _check_value(value)
            lines.append(json.dumps(list(row), ensure_ascii=False))
        if not lines:
            return
        data = "\n".join(lines).encode()
        settings = {**INSERT_SETTINGS, **TABLE_INSERT_SETTINGS.get(table, {})}

        def go() -> None:
            try:
                self._client.raw_insert(
                    f"{self.database}.{table}", list(columns), data, settings=settings, fmt="JSONCompactEachRow"
                )
            except (ClickHouseError, OSError) as exc:
                raise classify(exc, reading=False) from exc

        self._on_thread(go)

    def close(self) -> None:
        """Close both connections and stop both lanes' threads (idempotent)."""
        if self._closed:
            return
        try:
            try:
                self._reader.submit(self._read_client.close).result()
            finally:
                self._on_thread(self._client.close)
        finally:
            self._closed = True
            self._executor.shutdown(wait=True)
            self._reader.shutdown(wait=True)


def open_store(
    dsn: str,
    database: str | None = None,
    settings: Mapping[str, Any] | None = None,
    log_retention_days: int | None = None,
) -> Store:
    """Open the database and apply pending migrations.

    ``database`` defaults to the one named in a server DSN's path, else
    :data:`runstream.tables.DATABASE`.  ``log_retention_days`` (the
    deployment's setting) becomes the ``logs`` TTL when it differs; ``None``
    leaves the stored TTL as it is (30 days from the first migration).
    """
    from sinks.migrate import apply_log_retention, migrate

    store = Store(dsn, database or split_dsn(dsn)[1] or tables.DATABASE, settings)
    try:
        migrate(store)
        if log_retention_days is not None:
            apply_log_retention(store, log_retention_days)
    except BaseException:
        store.close()
        raise
    return store


__all__ = ["StorageError", "Store", "check_identifier", "classify", "open_store", "split_dsn"]
