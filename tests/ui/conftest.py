"""The API wired to a real chDB store holding real rows, one store per test module.

chDB holds one data directory per process at a time, so each module opens its
own store (in its own temporary directory and database) and closes it when
its tests are done.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pytest
from starlette.applications import Starlette

from runstream import tables
from sinks.queries import Queries
from sinks.store import Store, open_store
from ui.api import Call, HealthCheck, QueryLayer, create_app, queries_health

TOKEN = "test-token-0123456789"
XSS_NAME = '<img src=x onerror="alert(1)">&amp;</script>'
XSS_LINE = "<script>alert('log')</script> <b>bold</b> &lt;"


@dataclass
class Seeded:
    """What the seeded store holds, for tests to compare answers with."""

    project: str
    run_id: str
    xss_run_id: str
    dlq_reason: str
    losses: list[float] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


def make_app(
    queries: QueryLayer,
    call: Call,
    *,
    token: str = TOKEN,
    health: HealthCheck | None = None,
    **options: Any,
) -> Starlette:
    """The app under test; health defaults to "queries answer, ingest works"."""

    async def default_health() -> dict[str, Any]:
        return {"ingest": {"ok": True}, "queries": await queries_health(queries, call)}

    return create_app(queries, call, token=token, health=health or default_health, **options)


def _dt(ts_us: int) -> datetime:
    return datetime.fromtimestamp(ts_us / 1e6, tz=timezone.utc)


def _run_event(
    run_id: str,
    ts_us: int,
    event: str,
    *,
    project: str = "",
    name: str = "",
    node: str = "node-0",
    rank: int = 0,
    status: str = "",
    config: Any = None,
    tags: list[str] | None = None,
    seq: int = 0,
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "ts": _dt(ts_us),
        "event": event,
        "project": project,
        "name": name,
        "node": node,
        "rank": rank,
        "status": status,
        "exit_code": 0 if event == "finish" else None,
        "reason": "",
        "config": json.dumps(config or {}),
        "tags": tags or [],
        "host": node,
        "pid": 1000 + rank,
        "world_size": 2,
        "argv": ["train.py"],
        "producer": f"p-{node}-{rank}",
        "seq": seq,
        "idx": 0,
        "ingest_ts": _dt(ts_us),
    }


def _insert(store: Store, table: str, rows: list[dict[str, Any]]) -> None:
    columns = list(rows[0])
    store.insert_rows(table, [[row[c] for c in columns] for row in rows], columns)


def seed(store: Store) -> Seeded:
    """Insert two runs (one with markup in its name and log), metrics, logs and a dead letter."""
    tag = uuid.uuid4().hex[:8]
    now_us = time.time_ns() // 1000
    t0 = now_us - 2 * 3600 * 1_000_000
    seeded = Seeded(
        project=f"ui-tests-{tag}",
        run_id=f"run-{tag}",
        xss_run_id=f"xss-{tag}",
        dlq_reason=f"not a batch envelope {tag}",
    )

    events = []
    for rank, node in enumerate(("node-0", "node-1")):
        events.append(
            _run_event(
                seeded.run_id,
                t0 + rank,
                "start",
                project=seeded.project,
                name="lr-3e-4",
                node=node,
                rank=rank,
                config={"lr": 0.0003, "batch": 64},
                tags=["baseline"],
            )
        )
        events.append(
            _run_event(
                seeded.run_id, t0 + 3600 * 1_000_000 + rank, "finish", node=node, rank=rank, status="finished", seq=1
            )
        )
    events.append(_run_event(seeded.xss_run_id, now_us - 5_000_000, "start", project=f"ui-xss-{tag}", name=XSS_NAME))
    events.append(_run_event(seeded.xss_run_id, now_us - 1_000_000, "heartbeat", seq=1))
    _insert(store, tables.RUN_EVENTS, events)

    seeded.losses = [50.0 if step == 150 else round(1.0 / (1 + step), 6) for step in range(300)]
    metrics = []
    series = {"loss": seeded.losses, "acc": [step / 300 for step in range(300)], "grad_norm": [1.0, float("nan"), 2.0]}
    for name, values in series.items():
        for step, value in enumerate(values):
            ts = t0 + 1_000_000 + step * 1_000_000
            metrics.append(
                {
                    "run_id": seeded.run_id,
                    "name": name,
                    "step": step,
                    "ts": _dt(ts),
                    "value": value,
                    "node": "node-0",
                    "rank": 0,
                    "producer": "p-node-0-0",
                    "seq": 10 + step,
                    "idx": 0,
                    "sub": 0,
                    "ingest_ts": _dt(ts),
                }
            )
    _insert(store, tables.METRICS, metrics)

    levels = ["INFO", "INFO", "WARNING", "", "ERROR", "DEBUG"]
    logs = []
    for i in range(40):
        line = f"step {i} loss {1 / (1 + i):.4f}"
        if i % 9 == 0:
            line = f"Checkpoint saved at step {i}"
        level = levels[i % len(levels)]
        logs.append(
            {
                "run_id": seeded.run_id,
                "ts": _dt(t0 + 2_000_000 + i * 10_000),
                "node": f"node-{i % 2}",
                "rank": i % 2,
                "stream": "logging" if level else "stdout",
                "level": level,
                "logger": "",
                "line": line,
                "orig_bytes": 0,
                "producer": "p-logs",
                "seq": i,
                "idx": 0,
                "ingest_ts": _dt(t0),
            }
        )
        seeded.lines.append(line)
    logs.append(
        {
            "run_id": seeded.xss_run_id,
            "ts": _dt(now_us - 2_000_000),
            "node": "node-0",
            "rank": 0,
            "stream": "stderr",
            "level": "",
            "logger": "",
            "line": XSS_LINE,
            "orig_bytes": 0,
            "producer": "p-xss",
            "seq": 0,
            "idx": 0,
            "ingest_ts": _dt(now_us),
        }
    )
    _insert(store, tables.LOGS, logs)

    _insert(
        store,
        tables.DEAD_LETTERS,
        [
            {
                "ts": _dt(now_us),
                "topic": "runstream.metrics",
                "partition": 0,
                "offset": 7,
                "reason": seeded.dlq_reason,
                "sample": "\\x00\\x01garbage",
                "producer": "",
                "seq": -1,
                "idx": -1,
                "run_id": "",
            }
        ],
    )
    return seeded


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """A real chDB store in a fresh directory and database, closed after the module."""
    path = tmp_path_factory.mktemp("chdb")
    opened = open_store(f"chdb://{path}", f"ui_{uuid.uuid4().hex[:10]}")
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture(scope="module")
def seeded(store: Store) -> Seeded:
    """The rows every API test reads (read-only: tests never write)."""
    return seed(store)


@pytest.fixture(scope="module")
def queries_app_parts(store: Store, seeded: Seeded) -> tuple[Queries, Call]:
    """The real query layer over the seeded store and its async runner."""
    return Queries(store), store.call


@pytest.fixture(scope="module")
def app(queries_app_parts: tuple[Queries, Call]) -> Starlette:
    """The app wired to the seeded store, accepting 127.0.0.1/localhost/[::1] on any port."""
    return make_app(*queries_app_parts)


# -- a real server process (sink + API + live feed) for the feed, terminal and live-page tests --


@dataclass
class Server:
    """``python -m ui.serve`` on a free port, over a real broker and its own chDB directory."""

    url: str
    kafka: str
    topics: Any
    proc: Any
    log_path: Any

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def run_async(coro: Any) -> Any:
    """Run a coroutine to completion from sync code, even where an event loop already runs (Playwright)."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def start_server(broker: str, tmp: Any, *extra: str, topics: Any = None) -> Server:
    """Create the topics (``topics``, or new ones), start the server and wait for its ready file (raises on failure)."""
    import os
    import subprocess
    import sys

    from runstream import kafka
    from runstream.embedded import free_port
    from runstream.topics import Topics
    from tests.conftest import scaled

    topics = topics or Topics(f"t{uuid.uuid4().hex[:10]}.")
    run_async(kafka.ensure_topics(broker, topics.all(), 2))
    port = free_port()
    ready = tmp / "ready"
    log_path = tmp / "server.log"
    env = dict(os.environ, RUNSTREAM_TOKEN=TOKEN)
    log_file = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ui.serve",
            "--kafka",
            broker,
            "--clickhouse",
            f"chdb://{tmp / 'chdb'}",
            "--topic-prefix",
            topics.prefix,
            "--port",
            str(port),
            "--ready-file",
            str(ready),
            *extra,
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=env,
    )
    log_file.close()
    deadline = time.monotonic() + scaled(60)
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"ui.serve did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
        time.sleep(0.05)
    return Server(f"http://127.0.0.1:{port}", broker, topics, proc, log_path)


def stop_server(server: Server) -> None:
    """SIGTERM the server and wait for it to exit."""
    import signal
    import subprocess

    server.proc.send_signal(signal.SIGTERM)
    try:
        server.proc.wait(60)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


@pytest.fixture(scope="module")
def server(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with a small feed queue bound (500 records), so a slow client overflows quickly."""
    running = start_server(broker, tmp_path_factory.mktemp("serve"), "--feed-max-pending-items", "500")
    try:
        yield running
    finally:
        stop_server(running)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium per test module (``tests/ui/browser.py`` finds the binary)."""
    from tests.ui.browser import launch

    yield from launch()


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    """A signed-in 1400x1000 page on the module's real server (a module may define its own)."""
    from tests.ui.browser import signed_in_page

    with signed_in_page(browser, server.url, "main", viewport={"width": 1400, "height": 1000}) as opened:
        yield opened
