"""Crashes and broker restarts: what the SDK reported as delivered is on a broker, once."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections import Counter
from pathlib import Path

from sdk_support import free_port, read_envelopes, run_script, scaled, start_broker, valid_records

from producers.options import Options
from runstream import settings as settings_mod
from runstream.topics import RAW_KINDS, Topics
from runstream.wire import Envelope

KILLED_AFTER_FLUSH = r"""
import os, signal, sys, runstream
run = runstream.init(project="sigkill", capture=False)
for step in range(3000):
    run.log({"loss": float(step)}, step=step)
ok = run.flush(30)
print("FLUSHED", ok, file=sys.stderr, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_sigkill_after_flush_loses_nothing_flushed(sdk_broker: str, sdk_topics: Topics, tmp_path: Path) -> None:
    """A trainer SIGKILLed right after ``run.flush()`` returned true: every step is on the topic, once."""
    env = {
        "RUNSTREAM_KAFKA": sdk_broker,
        "RUNSTREAM_TOPIC_PREFIX": sdk_topics.prefix,
        "RUNSTREAM_DATA_DIR": str(tmp_path),
    }
    proc = run_script(KILLED_AFTER_FLUSH, env, scaled(60))
    assert proc.returncode == -signal.SIGKILL
    assert "FLUSHED True" in proc.stderr
    found = asyncio.run(
        read_envelopes(
            sdk_broker,
            sdk_topics,
            ("metrics",),
            lambda f: sum(len(e.records) for e in f["metrics"]) >= 3000,
            scaled(20),
        )
    )
    steps = [r["step"] for r in valid_records(found["metrics"])]
    assert steps == list(range(3000))


def _steps(found: dict[str, list[Envelope]]) -> list[int]:
    return [r["step"] for r in valid_records(found["metrics"])]


def _read_steps(bootstrap: str, topics: Topics, want: int) -> list[int]:
    found = asyncio.run(
        read_envelopes(
            bootstrap,
            topics,
            ("metrics",),
            lambda f: sum(len(e.records) for e in f["metrics"]) >= want,
            scaled(15),
        )
    )
    return _steps(found)


def _start_broker(port: int, log: Path, topics: Topics) -> subprocess.Popen[bytes]:
    return start_broker(port, log, [topics.raw(k) for k in RAW_KINDS])


def test_broker_restart_mid_run_delivers_each_record_once(tmp_path: Path) -> None:
    """Broker killed and restarted empty: acked records were on the old one, the rest reach the new one.

    Tansu keeps topics in memory, so the restarted broker starts empty.  What
    must hold: the records acknowledged before the crash were on the old
    broker (read back before killing it), every record logged after reaches
    the new broker, and none is on both or twice.
    """
    import runstream

    port = free_port()
    topics = Topics("restart.")
    bootstrap = f"127.0.0.1:{port}"
    settings = settings_mod.load(
        {"kafka": bootstrap, "topic_prefix": topics.prefix, "data_dir": str(tmp_path)}, environ={}
    )
    options = Options(
        request_timeout_ms=1500, retry_initial_s=0.1, retry_max_s=0.5, finish_timeout_s=scaled(20), sample=False
    )
    broker = _start_broker(port, tmp_path / "old.log", topics)
    try:
        run = runstream.init(project="restart", settings=settings, options=options, capture=False)
        for step in range(100):
            run.log({"x": float(step)}, step=step)
        assert run.flush(scaled(10)) is True
        before = _read_steps(bootstrap, topics, 100)
        broker.send_signal(signal.SIGKILL)
        broker.wait(10)

        for step in range(100, 200):
            run.log({"x": float(step)}, step=step)
        assert run.flush(0.5) is False
        broker = _start_broker(port, tmp_path / "new.log", topics)
        assert run.flush(scaled(30)) is True
        after = _read_steps(bootstrap, topics, 100)
        assert run.finish() is True
    finally:
        broker.terminate()
        broker.wait(10)
    assert before == list(range(100))
    assert sorted(after) == list(range(100, 200))
    both = Counter(before) + Counter(after)
    assert set(both) == set(range(200)) and max(both.values()) == 1
