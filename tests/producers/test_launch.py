"""``runstream run -- CMD``: a command's output becomes logs and its exit code the run's status."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from sdk_support import ROOT, read_envelopes, scaled, valid_records

from producers.launch import outcome
from runstream.topics import Topics
from runstream.wire import Envelope

CHILD = r"""
import os, sys, time
print("first line")
print("\x1b[32mgreen\x1b[0m text")
for i in range(5):
    sys.stdout.write(f"\rprogress {i * 25}%"); sys.stdout.flush(); time.sleep(0.01)
sys.stdout.write("\n"); sys.stdout.flush()
print("to stderr", file=sys.stderr); sys.stderr.flush()
print("isatty", sys.stdout.isatty(), "run", os.environ.get("RUNSTREAM_RUN_ID"))
print("last line", flush=True)
sys.exit(int(sys.argv[1]))
"""


def _env(bootstrap: str, topics: Topics, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNSTREAM_", "TORCHELASTIC_"))}
    env.update(
        RUNSTREAM_KAFKA=bootstrap,
        RUNSTREAM_TOPIC_PREFIX=topics.prefix,
        RUNSTREAM_DATA_DIR=str(data_dir),
        PYTHONPATH=str(ROOT),
    )
    return env


def _argv(*flags: str) -> list[str]:
    return [sys.executable, "-m", "runstream", "run", "--project", "launch", *flags, "--"]


def _launch(flags: list[str], code: str, arg: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*_argv(*flags), sys.executable, "-c", code, arg],
        env=env,
        cwd=ROOT,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=scaled(60),
        check=False,
    )


def _finishes(found: dict[str, list[Envelope]]) -> int:
    return sum(1 for e in found["runs"] for r in e.records if r.get("event") == "finish")


def _read(bootstrap: str, topics: Topics, finishes: int = 1) -> dict[str, list[Envelope]]:
    return asyncio.run(
        read_envelopes(bootstrap, topics, ("runs", "logs", "metrics"), lambda f: _finishes(f) >= finishes, scaled(20))
    )


def _finish(found: dict[str, list[Envelope]]) -> dict[str, Any]:
    (rec,) = [r for r in valid_records(found["runs"]) if r["event"] == "finish"]
    return rec


def test_pty_output_is_copied_and_logged_once_in_order(sdk_broker: str, sdk_topics: Topics, tmp_path: Path) -> None:
    """Under a terminal: bytes reach our stdout unchanged; lines arrive once, in order, CR collapsed."""
    proc = _launch(["--name", "pty"], CHILD, "0", _env(sdk_broker, sdk_topics, tmp_path))
    assert proc.returncode == 0, proc.stderr
    found = _read(sdk_broker, sdk_topics)
    run_id = found["runs"][0].run
    assert proc.stdout == (
        b"first line\n\x1b[32mgreen\x1b[0m text\n\rprogress 0%\rprogress 25%\rprogress 50%\rprogress 75%"
        b"\rprogress 100%\nto stderr\n" + f"isatty True run {run_id}\n".encode() + b"last line\n"
    )
    logs = valid_records(found["logs"])
    assert [(r["line"], r["stream"]) for r in logs] == [
        ("first line", "stdout"),
        ("\x1b[32mgreen\x1b[0m text", "stdout"),
        ("progress 100%", "stdout"),
        ("to stderr", "stdout"),
        (f"isatty True run {run_id}", "stdout"),
        ("last line", "stdout"),
    ]
    start = valid_records(found["runs"])[0]
    assert (start["event"], start["project"], start["name"]) == ("start", "launch", "pty")
    finish = _finish(found)
    assert (finish["status"], finish["exit_code"]) == ("finished", 0)


def test_nonzero_exit_fails_the_run_and_is_returned(sdk_broker: str, sdk_topics: Topics, tmp_path: Path) -> None:
    """A command exiting 3 makes the run ``failed`` with exit code 3, and ``runstream run`` exits 3."""
    proc = _launch([], CHILD, "3", _env(sdk_broker, sdk_topics, tmp_path))
    assert proc.returncode == 3, proc.stderr
    finish = _finish(_read(sdk_broker, sdk_topics))
    assert (finish["status"], finish["exit_code"]) == ("failed", 3)


def test_death_by_signal_is_killed_and_128_plus_signal(sdk_broker: str, sdk_topics: Topics, tmp_path: Path) -> None:
    """A command killed by SIGTERM makes the run ``killed``; ``runstream run`` exits 143."""
    code = "import os, signal\nprint('dying', flush=True)\nos.kill(os.getpid(), signal.SIGTERM)\n"
    proc = _launch([], code, "", _env(sdk_broker, sdk_topics, tmp_path))
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    found = _read(sdk_broker, sdk_topics)
    finish = _finish(found)
    assert (finish["status"], finish["exit_code"]) == ("killed", 143)
    assert [r["line"] for r in valid_records(found["logs"])] == ["dying"]


def test_sigterm_to_the_launcher_reaches_the_command(sdk_broker: str, sdk_topics: Topics, tmp_path: Path) -> None:
    """SIGTERM sent to ``runstream run`` is forwarded; the command's own exit code decides the status."""
    code = (
        "import signal, sys, time\n"
        "def bye(signum, frame):\n    print('caught', signum, flush=True); sys.exit(42)\n"
        "signal.signal(signal.SIGTERM, bye)\nprint('READY', flush=True)\ntime.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [*_argv(), sys.executable, "-c", code],
        env=_env(sdk_broker, sdk_topics, tmp_path),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"READY\n"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=scaled(30))
    assert proc.returncode == 42, err
    assert out == f"caught {int(signal.SIGTERM)}\n".encode()
    found = _read(sdk_broker, sdk_topics)
    assert [r["line"] for r in valid_records(found["logs"])] == ["READY", f"caught {int(signal.SIGTERM)}"]
    finish = _finish(found)
    assert (finish["status"], finish["exit_code"]) == ("failed", 42)


def test_no_pty_keeps_stdout_and_stderr_apart(sdk_broker: str, sdk_topics: Topics, tmp_path: Path) -> None:
    """With ``--no-pty`` the streams stay separate, on our stdout and stderr and in the records."""
    proc = _launch(["--no-pty"], CHILD, "0", _env(sdk_broker, sdk_topics, tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert b"to stderr\n" in proc.stderr and b"to stderr" not in proc.stdout
    found = _read(sdk_broker, sdk_topics)
    logs = valid_records(found["logs"])
    assert [r["line"] for r in logs if r["stream"] == "stderr"] == ["to stderr"]
    stdout = [r["line"] for r in logs if r["stream"] == "stdout"]
    assert stdout[:3] == ["first line", "\x1b[32mgreen\x1b[0m text", "progress 100%"]
    assert stdout[3].startswith("isatty False run ") and stdout[4] == "last line"


def test_sdk_in_the_command_joins_the_run_without_double_capture(
    sdk_broker: str, sdk_topics: Topics, tmp_path: Path
) -> None:
    """An SDK inside the command logs metrics to the same run; its printed lines are stored once."""
    code = (
        "import runstream\nrun = runstream.init()\nrun.log({'loss': 0.5}, step=1)\n"
        "print('from the trainer', flush=True)\nrun.finish()\n"
    )
    proc = _launch([], code, "", _env(sdk_broker, sdk_topics, tmp_path))
    assert proc.returncode == 0, proc.stderr
    found = _read(sdk_broker, sdk_topics, finishes=2)
    assert len({e.run for kind in found for e in found[kind]}) == 1
    assert [r["values"] for r in valid_records(found["metrics"])] == [{"loss": 0.5}]
    lines = [r["line"] for r in valid_records(found["logs"])]
    assert lines.count("from the trainer") == 1  # (the SDK's own warnings show on the terminal too)
    assert len(lines) == len(set(lines))


def test_terminal_has_a_size_without_one_of_ours(sdk_broker: str, sdk_topics: Topics, tmp_path: Path) -> None:
    """With no terminal of our own, the command's terminal takes COLUMNS x LINES (as a shell would)."""
    code = "import os\nprint(*os.get_terminal_size())\n"
    env = _env(sdk_broker, sdk_topics, tmp_path)
    env.update(COLUMNS="123", LINES="45")
    proc = _launch([], code, "", env)
    assert (proc.returncode, proc.stdout) == (0, b"123 45\n"), proc.stderr


def test_start_record_carries_the_command_as_argv(sdk_broker: str, sdk_topics: Topics, tmp_path: Path) -> None:
    """The run's argv is the command that ran (secrets redacted), not the launcher's own."""
    proc = _launch([], "pass", "--password=hunter2", _env(sdk_broker, sdk_topics, tmp_path))
    assert proc.returncode == 0, proc.stderr
    start = valid_records(_read(sdk_broker, sdk_topics)["runs"])[0]
    assert start["argv"] == [sys.executable, "-c", "pass", "--password=[REDACTED:password]"]


def test_outcome_maps_return_codes() -> None:
    """0 is finished, a positive code failed, a negative (signal) killed with 128 + signal."""
    assert outcome(0) == ("finished", 0, "")
    assert outcome(2)[:2] == ("failed", 2)
    assert outcome(-signal.SIGKILL) == ("killed", 137, "killed by SIGKILL")
