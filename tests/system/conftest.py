"""The real embedded system, started with the real ``runstream up`` command."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import scaled

ROOT = Path(__file__).resolve().parents[2]
_URL = re.compile(r"runstream is up: (http://[^/\s]+)/\?token=(\S+)")
_KAFKA = re.compile(r"Kafka: (\S+)")


@dataclass
class System:
    """A running ``runstream up`` process and how to talk to it."""

    proc: subprocess.Popen[str]
    data_dir: Path
    url: str = ""
    token: str = ""
    kafka: str = ""
    output: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def api(self, path: str, params: dict[str, Any] | None = None, token: str | None = None) -> Any:
        """GET an API path with the token; returns the decoded JSON or raises HTTPError."""
        query = urllib.parse.urlencode({k: v for k, v in (params or {}).items() if v is not None})
        req = urllib.request.Request(f"{self.url}{path}" + (f"?{query}" if query else ""))
        req.add_header("Authorization", f"Bearer {self.token if token is None else token}")
        with urllib.request.urlopen(req, timeout=scaled(30)) as resp:
            return json.loads(resp.read())

    def env(self) -> dict[str, str]:
        """Environment for a trainer process that reports to this system."""
        env = dict(os.environ)
        env["RUNSTREAM_KAFKA"] = self.kafka
        env["PYTHONPATH"] = str(ROOT)
        env.pop("RUNSTREAM_RUN_ID", None)
        return env

    def stop(self, timeout_s: float = 180) -> int:
        """SIGTERM ``runstream up`` and wait for it; returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(scaled(timeout_s))
        if self.reader is not None:
            self.reader.join(scaled(10))
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code


def start_system(data_dir: Path, timeout_s: float = 120) -> System:
    """Start ``runstream up`` on free ports and return once it printed its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "runstream", "up", "--data-dir", str(data_dir), "--port", "0", "--kafka-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    system = System(proc=proc, data_dir=data_dir)
    ready = threading.Event()

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            system.output.append(line)
            if m := _URL.search(line):
                system.url, system.token = m.group(1), m.group(2)
            if m := _KAFKA.search(line):
                system.kafka = m.group(1)
                ready.set()
        ready.set()

    system.reader = threading.Thread(target=reader, daemon=True)
    system.reader.start()
    if not ready.wait(scaled(timeout_s)) or not system.kafka:
        proc.kill()
        raise RuntimeError("runstream up did not start:\n" + "".join(system.output))
    return system


@pytest.fixture(scope="session")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """One embedded system for the session's system tests."""
    sys_ = start_system(tmp_path_factory.mktemp("up"))
    yield sys_
    code = sys_.stop()
    assert code == 0, "".join(sys_.output)


def run_trainer(system: System, tmp_path: Path, *args: str, timeout_s: float = 180) -> tuple[int, dict[str, Any], str]:
    """Run tests/system/trainer.py against ``system``; return exit code, truth, output."""
    truth_path = tmp_path / "truth.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "system" / "trainer.py"), "--truth", str(truth_path), *args],
        env=system.env(),
        capture_output=True,
        text=True,
        timeout=scaled(timeout_s),
    )
    truth = json.loads(truth_path.read_text())
    return proc.returncode, truth, proc.stdout + proc.stderr


def wait_for(predicate: Any, timeout_s: float, what: str, interval_s: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + scaled(timeout_s)
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}; last={last!r}")


def all_lines(system: System, run_id: str, **params: Any) -> list[dict[str, Any]]:
    """Every log line of a run matching ``params``, following cursors; [] while the run is unknown (404)."""
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        try:
            page = system.api(f"/api/runs/{run_id}/logs", {**params, "limit": 5000, "cursor": cursor})
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and not out:
                return []
            raise
        out += page["lines"]
        cursor = page.get("next_cursor")
        if not cursor or not page["lines"]:
            return out
