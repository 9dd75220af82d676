"""``runstream logs`` and ``runstream runs`` against the real server over its API and feed."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

from tests.conftest import scaled
from tests.ui.conftest import TOKEN, Server, run_async
from tests.ui.feedclient import Emitter


def emit_lines(server: Server, run: str, lines: list[str], **extra: Any) -> None:
    async def go() -> None:
        async with Emitter(server, run) as e:
            await e.lines(lines, **extra)

    run_async(go())


def cli(server: Server, *args: str, **options: Any) -> Any:
    env = dict(os.environ, RUNSTREAM_URL=server.url, RUNSTREAM_TOKEN=TOKEN)
    return subprocess.Popen([sys.executable, "-m", "runstream", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **options)


def wait_stored(server: Server, run: str, n: int) -> None:
    deadline = time.monotonic() + scaled(20)
    while True:
        out, _ = cli(server, "logs", run).communicate(timeout=scaled(30))
        if len(out.splitlines()) >= n or time.monotonic() > deadline:
            return
        time.sleep(0.2)


def test_logs_grep_prints_exactly_the_matching_lines_with_colours_kept(server: Server) -> None:
    """`runstream logs RUN --grep WORD` prints the matching stored lines, ANSI codes as stored."""
    run = f"cli-{uuid.uuid4().hex[:8]}"
    lines = ["epoch 1 \x1b[32mok\x1b[0m", "CUDA out of memory", "epoch 2 \x1b[32mok\x1b[0m"]
    emit_lines(server, run, lines)
    wait_stored(server, run, 3)
    out, err = cli(server, "logs", run, "--grep", "EPOCH").communicate(timeout=scaled(30))
    assert err == ""
    assert [line.split(" ", 3)[3] for line in out.splitlines()] == [lines[0], lines[2]]


def test_logs_follow_prints_new_lines_and_exits_cleanly_on_ctrl_c(server: Server) -> None:
    """`--follow` prints a line emitted after it started; SIGINT ends it with 130 and no traceback."""
    run = f"cli-{uuid.uuid4().hex[:8]}"
    emit_lines(server, run, ["already there"])
    proc = cli(server, "logs", run, "--follow")
    seen: list[str] = []
    try:
        deadline = time.monotonic() + scaled(20)
        sent = False
        while not any("arrived live" in s for s in seen):
            assert time.monotonic() < deadline, f"no live line; got {seen}"
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            if ready:
                seen.append(proc.stdout.readline())
            if any("already there" in s for s in seen) and not sent:
                emit_lines(server, run, ["arrived live"])
                sent = True
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=scaled(10))
    assert proc.returncode == 130 and "Traceback" not in err


def test_runs_lists_a_run(server: Server) -> None:
    """`runstream runs` prints a row with the run's id and name."""
    run = f"cli-{uuid.uuid4().hex[:8]}"

    async def go() -> None:
        async with Emitter(server, run) as e:
            await e.send("runs", [{"event": "start", "project": "cli", "name": "named-run", "world_size": 1}])

    run_async(go())
    deadline = time.monotonic() + scaled(20)
    while True:
        out, _ = cli(server, "runs", "--project", "cli").communicate(timeout=scaled(30))
        if run in out or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    row = [line for line in out.splitlines() if run in line]
    assert len(row) == 1 and "named-run" in row[0]
