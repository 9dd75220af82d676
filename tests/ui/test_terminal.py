"""``runstream logs`` and ``runstream runs`` against the real server over its API and feed."""

from __future__ import annotations

import contextlib
import os
import queue
import select
import signal
import subprocess
import sys
import threading
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
    return subprocess.Popen(
        [sys.executable, "-m", "runstream", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **options,
    )


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


def test_logs_print_colours_but_no_other_terminal_control_sequences(server: Server) -> None:
    """A stored line's colours reach the terminal; its screen clears, cursor moves, title or clipboard writes do not."""
    run = f"cli-{uuid.uuid4().hex[:8]}"
    hostile = (
        "A\x1b]0;new title\x07B \x1b[2Jcleared \x1b[31mred\x1b[0m \x1b]52;c;ZXZpbA==\x07clip "
        "\x1b[10;10Hmoved \x07bell\x08 \x9b2Jc1 back\rover"
    )
    emit_lines(server, run, [hostile])
    wait_stored(server, run, 1)
    out, err = cli(server, "logs", run).communicate(timeout=scaled(30))
    assert err == ""
    assert out.split(" ", 3)[3] == "AB cleared \x1b[31mred\x1b[0m clip moved bell c1 backover\n"


def test_logs_follow_since_prints_every_stored_line_since_then_and_goes_on_live(server: Server) -> None:
    """`--follow --since 1h`: all 150 lines of the last hour (not only --tail 100, none older), then live ones once."""
    run = f"cli-{uuid.uuid4().hex[:8]}"
    two_hours_ago = time.time_ns() - 7200 * 10**9

    async def go() -> None:
        async with Emitter(server, run) as e:
            await e.send("logs", [{"line": f"old {n}", "ts_ns": two_hours_ago + n} for n in range(3)])
            await e.lines([f"recent {n}" for n in range(150)])

    run_async(go())
    wait_stored(server, run, 153)
    proc = cli(server, "logs", run, "--follow", "--since", "1h")
    seen: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            seen.put(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    got: list[str] = []
    try:
        deadline = time.monotonic() + scaled(20)
        while len(got) < 150:
            got.append(seen.get(timeout=max(0.0, deadline - time.monotonic())))
        emit_lines(server, run, ["arrived live"])
        got.append(seen.get(timeout=scaled(10)))
        # A line repeated at the join would come right after the live one.
        with contextlib.suppress(queue.Empty):
            got.append(seen.get(timeout=1.0))
    finally:
        proc.send_signal(signal.SIGINT)
        reader.join(scaled(10))  # the process ended: its output is read to the end
        _, err = proc.communicate(timeout=scaled(10))
    texts = [line.rstrip("\n").split(" ", 3)[3] for line in got]
    assert texts == [f"recent {n}" for n in range(150)] + ["arrived live"]
    assert proc.returncode == 130 and "Traceback" not in err


def test_status_reports_each_part_and_the_dead_letters(server: Server) -> None:
    """`runstream status` prints ok, the sink's, live feed's and websocket counters, and dead letters; exit 0."""
    deadline = time.monotonic() + scaled(30)
    while True:  # a fresh server's sink is still joining its consumer group: ingest is not ok yet
        proc = cli(server, "status")
        out, err = proc.communicate(timeout=scaled(30))
        if proc.returncode == 0 or time.monotonic() > deadline:
            break
        assert proc.returncode == 1 and "ingest     NOT OK (the sink is not reading" in out, out
        time.sleep(0.2)
    assert err == ""
    lines = out.splitlines()
    assert lines[0] == f"runstream at {server.url}: ok", out
    for part in ("queries", "ingest", "sink", "live feed  reading", "websocket", "dead letters"):
        assert any(line.strip().startswith(part) for line in lines), (part, out)


def test_status_of_a_server_that_cannot_be_reached_exits_2_with_a_reason(server: Server) -> None:
    """An unreachable URL: one line naming it on stderr, exit code 2, no traceback."""
    from runstream.embedded import free_port

    env = dict(os.environ, RUNSTREAM_URL=f"http://127.0.0.1:{free_port()}", RUNSTREAM_TOKEN=TOKEN)
    done = subprocess.run(
        [sys.executable, "-m", "runstream", "status"], capture_output=True, text=True, env=env, timeout=scaled(30)
    )
    assert done.returncode == 2 and "cannot reach" in done.stderr and "Traceback" not in done.stderr
