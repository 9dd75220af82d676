"""Helpers for the SDK tests: timeouts, ports, reading raw topics back, running trainers."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from runstream import kafka
from runstream.events import VALIDATORS
from runstream.events.limits import DEFAULT_LIMITS
from runstream.topics import Topics
from runstream.wire import Envelope, decode

ROOT = Path(__file__).resolve().parents[2]
TIME_SCALE = float(os.environ.get("RUNSTREAM_TEST_TIME_SCALE", "1"))


def scaled(seconds: float) -> float:
    """A timeout in seconds, scaled for the machine the tests run on."""
    return seconds * TIME_SCALE


def free_port() -> int:
    """A loopback port that nothing listens on (just now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def read_envelopes(
    bootstrap: str, topics: Topics, kinds: tuple[str, ...], until: Any, timeout_s: float
) -> dict[str, list[Envelope]]:
    """Every envelope on the raw ``kinds`` topics, read until ``until(found)`` or the timeout."""
    consumer = kafka.make_consumer(bootstrap, [topics.raw(k) for k in kinds], None)
    await consumer.start()
    found: dict[str, list[Envelope]] = {k: [] for k in kinds}
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not until(found):
            batches = await consumer.getmany(timeout_ms=200)
            for tp, messages in sorted(batches.items(), key=lambda kv: kv[0].partition):
                kind = topics.kind_of(tp.topic)
                assert kind is not None
                for msg in messages:
                    env = decode(msg.value)
                    assert msg.key == env.run.encode()
                    found[kind].append(env)
    finally:
        await consumer.stop()
    return found


def valid_records(envelopes: list[Envelope]) -> list[dict[str, Any]]:
    """The records of ``envelopes`` in order, each passed through its kind's validator."""
    return [VALIDATORS[e.kind](r, DEFAULT_LIMITS) for e in envelopes for r in e.records]


def run_script(code: str, env: dict[str, str], timeout_s: float, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with ``env`` added (RUNSTREAM_* cleared)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("RUNSTREAM_", "TORCHELASTIC_"))}
    full.update(env)
    full["PYTHONPATH"] = str(ROOT) + os.pathsep + full.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-c", code],
        env=full,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        **kwargs,
    )


class Outage:
    """A TCP forwarder in front of a broker that can be cut and restored (a network outage).

    The broker must advertise the forwarder's port, so that every connection
    the client makes goes through it.
    """

    def __init__(self, listen_port: int, target_port: int) -> None:
        self.listen_port, self.target_port = listen_port, target_port
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def restore(self) -> None:
        """Accept connections again."""
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.listen_port))
        server.listen(16)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def cut(self) -> None:
        """Refuse new connections and break the open ones."""
        if self._server is not None:
            with contextlib.suppress(OSError):  # wakes the thread blocked in accept()
                self._server.shutdown(socket.SHUT_RDWR)
            self._server.close()
            self._server = None
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:  # broker not listening yet: the client sees a closed connection
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            done = threading.Semaphore(0)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b, done), daemon=True).start()
            threading.Thread(target=self._close_after, args=(client, upstream, done), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, done: threading.Semaphore) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
            done.release()

    def _close_after(self, a: socket.socket, b: socket.socket, done: threading.Semaphore) -> None:
        done.acquire()
        done.acquire()
        with self._lock:
            self._conns = [c for c in self._conns if c is not a and c is not b]
        a.close()
        b.close()


def start_tansu(port: int, advertised_port: int, log: Path) -> subprocess.Popen[bytes]:
    """A Tansu broker listening on ``port`` and advertising ``advertised_port``."""
    from runstream.embedded import broker_command

    with open(log, "ab") as out:
        return subprocess.Popen(
            broker_command(port, advertised_port),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def start_broker(port: int, log: Path, topics: list[str]) -> subprocess.Popen[bytes]:
    """A Tansu broker on ``port`` (memory only, so empty), answering, with ``topics`` (one partition each)."""
    import asyncio

    proc = start_tansu(port, port, log)
    bootstrap = f"127.0.0.1:{port}"
    asyncio.run(kafka.wait_for_broker(bootstrap, scaled(20)))
    asyncio.run(kafka.ensure_topics(bootstrap, topics, 1))
    return proc


def stop_broker(proc: subprocess.Popen[bytes]) -> None:
    """Kill a broker that may already be dead."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
