"""The SDK against a real Kafka-protocol broker (Tansu), in trainer subprocesses."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sdk_support import (
    ROOT,
    Outage,
    free_port,
    read_envelopes,
    run_script,
    scaled,
    start_tansu,
    valid_records,
)

from producers.batch import Batcher
from producers.buffer import Buffer
from producers.options import Options
from producers.sender import Sender
from producers.spool import DiskSpool, SpoolEntry
from producers.transport import Transport
from runstream import kafka
from runstream import settings as settings_mod
from runstream.topics import Topics
from runstream.wire import Envelope

TRAINER = r"""
import logging, sys, runstream
from producers.options import Options
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
run = runstream.init(project="itest", name="five-k", config={"lr": 0.001, "layers": [1, 2]},
                     tags=["ci"], options=Options(heartbeat_interval_s=0.05, sample=False))
print("RUN", run.id, file=sys.__stderr__, flush=True)
for step in range(5000):
    run.log({"loss": 1.0 / (step + 1), "sq": step * step}, step=step)
    if step % 25 == 0:
        print(f"line {step // 25}")
logging.getLogger("itest").warning("lr decayed")
print("progress", end="")
print("\r 50%", end="")
print("\r100%")
sys.stderr.write("to stderr\n")
print("tail without newline", end="")
print("FLUSHED", run.finish(), file=sys.__stderr__, flush=True)
"""


def _env(bootstrap: str, topics: Topics, data_dir: Path) -> dict[str, str]:
    return {
        "RUNSTREAM_KAFKA": bootstrap,
        "RUNSTREAM_TOPIC_PREFIX": topics.prefix,
        "RUNSTREAM_DATA_DIR": str(data_dir),
    }


def _finished(found: dict[str, list[Envelope]]) -> bool:
    return any(r.get("event") == "finish" for e in found["runs"] for r in e.records)


def _read(bootstrap: str, topics: Topics, kinds: tuple[str, ...] = ("runs", "metrics", "logs")) -> Any:
    return asyncio.run(read_envelopes(bootstrap, topics, kinds, _finished, scaled(20)))


def test_every_record_arrives_once_in_order(sdk_broker: str, sdk_topics: Topics, tmp_path: Path) -> None:
    """5000 metric steps, console lines and a logging record arrive exactly once, in order."""
    proc = run_script(TRAINER, _env(sdk_broker, sdk_topics, tmp_path), scaled(60))
    assert proc.returncode == 0, proc.stderr
    assert "FLUSHED True" in proc.stderr
    assert "INFO" not in proc.stdout and "WARNING itest lr decayed" in proc.stderr
    found = _read(sdk_broker, sdk_topics)
    envelopes = [e for kind in found for e in found[kind]]
    assert len({e.producer for e in envelopes}) == 1
    assert sorted(e.seq for e in envelopes) == list(range(len(envelopes)))
    for kind in found:
        assert [e.seq for e in found[kind]] == sorted(e.seq for e in found[kind])

    metrics = valid_records(found["metrics"])
    assert [r["step"] for r in metrics] == list(range(5000))
    assert all(r["values"] == {"loss": 1.0 / (r["step"] + 1), "sq": float(r["step"] ** 2)} for r in metrics)
    assert max(len(e.records) for e in found["metrics"]) <= 1000

    logs = valid_records(found["logs"])
    stdout = [r["line"] for r in logs if r["stream"] == "stdout"]
    assert stdout == [f"line {i}" for i in range(200)] + ["100%", "tail without newline"]
    assert [r["line"] for r in logs if r["stream"] == "stderr"] == ["to stderr"]
    assert [(r["line"], r["level"], r["logger"]) for r in logs if r["stream"] == "logging"] == [
        ("lr decayed", "WARNING", "itest")
    ]

    runs = valid_records(found["runs"])
    assert runs[0]["event"] == "start" and runs[-1]["event"] == "finish"
    assert (runs[0]["project"], runs[0]["name"], runs[0]["config"], runs[0]["tags"]) == (
        "itest",
        "five-k",
        {"lr": 0.001, "layers": [1, 2]},
        ["ci"],
    )
    assert runs[-1]["status"] == "finished"
    assert {r["event"] for r in runs[1:-1]} <= {"heartbeat"}


def test_unreachable_broker_exits_promptly_and_spools(tmp_path: Path) -> None:
    """With no broker the trainer never raises, warns once, exits within the finish timeout."""
    code = TRAINER.replace("heartbeat_interval_s=0.05", "finish_timeout_s=1.0")
    env = _env(f"127.0.0.1:{free_port()}", Topics("x."), tmp_path)
    t0 = time.monotonic()
    proc = run_script(code, env, scaled(30))
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    assert elapsed < 1.0 + scaled(5)
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("Kafka broker unreachable") == 1
    assert "FLUSHED False" in proc.stderr
    assert list((tmp_path / "spool").rglob("*.spool"))


def test_spooled_envelopes_are_replayed(sdk_broker: str, sdk_topics: Topics, tmp_path: Path) -> None:
    """Envelopes left in the spool by an earlier process are sent by the next one, then deleted."""
    settings = settings_mod.load({"kafka": sdk_broker, "data_dir": str(tmp_path)}, environ={})
    spool = DiskSpool.for_settings(settings, 1 << 20)
    old = Batcher(producer="0" * 32, run="oldrun", node="n", rank=0)
    items = [(time.time_ns(), i, {"x": float(i)}) for i in range(10)]
    (batch,) = old.build("metrics", 0, items).batches
    spool.write([SpoolEntry(sdk_topics.raw("metrics"), b"oldrun", batch.value, "metrics", "0" * 32, 0, 10)])

    code = "import runstream; runstream.init(project='replay').finish()"
    proc = run_script(code, _env(sdk_broker, sdk_topics, tmp_path), scaled(30))
    assert proc.returncode == 0, proc.stderr
    found = _read(sdk_broker, sdk_topics, ("runs", "metrics"))
    replayed = [e for e in found["metrics"] if e.run == "oldrun"]
    assert [r["step"] for r in valid_records(replayed)] == list(range(10))
    assert not list(spool.directory.iterdir())


def test_uncaught_exception_fails_run_with_traceback(sdk_broker: str, sdk_topics: Topics, tmp_path: Path) -> None:
    """An uncaught exception is logged once as ERROR stderr lines, then the run finishes failed."""
    code = "import runstream\nrun = runstream.init(project='crash')\nprint('before')\nraise ValueError('bad batch')\n"
    proc = run_script(code, _env(sdk_broker, sdk_topics, tmp_path), scaled(30))
    assert proc.returncode == 1
    assert "ValueError: bad batch" in proc.stderr  # the terminal still shows it
    found = _read(sdk_broker, sdk_topics, ("runs", "logs"))
    logs = valid_records(found["logs"])
    errors = [r["line"] for r in logs if r["level"] == "ERROR"]
    assert errors[0] == "Traceback (most recent call last):" and errors[-1] == "ValueError: bad batch"
    assert [r["line"] for r in logs if r["level"] != "ERROR"] == ["before"]
    finish = valid_records(found["runs"])[-1]
    assert (finish["status"], finish["exit_code"]) == ("failed", 1)
    assert "ValueError" in finish["reason"]


def test_sigterm_finishes_killed_and_dies_of_the_signal(sdk_broker: str, sdk_topics: Topics, tmp_path: Path) -> None:
    """SIGTERM flushes, finishes the run killed, then the process ends by the signal."""
    code = (
        "import sys, time, runstream\nrun = runstream.init(project='term')\n"
        "run.log({'loss': 1.0}, step=0)\nprint('READY', file=sys.__stdout__, flush=True)\n"
        "time.sleep(60)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
    env.update(_env(sdk_broker, sdk_topics, tmp_path), PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env=env,
        cwd=ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "READY"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=scaled(30))
    assert proc.returncode == -signal.SIGTERM, err
    found = _read(sdk_broker, sdk_topics, ("runs", "metrics"))
    finish = valid_records(found["runs"])[-1]
    assert (finish["event"], finish["status"]) == ("finish", "killed")
    assert len(valid_records(found["metrics"])) == 1


def test_flush_waits_for_acknowledgement(sdk_broker: str, sdk_topics: Topics, tmp_path: Path) -> None:
    """run.flush() returns true once the broker acknowledged every record logged before it."""
    import runstream

    settings = settings_mod.load(
        {"kafka": sdk_broker, "topic_prefix": sdk_topics.prefix, "data_dir": str(tmp_path)},
        environ={},
    )
    run = runstream.init(project="flush", settings=settings, capture=False)
    try:
        for step in range(3000):
            run.log({"loss": math.sin(step)}, step=step)
        assert run.flush(scaled(20)) is True
        stats = run.stats()
        assert stats["acked"]["metrics"] == stats["enqueued"]["metrics"] == 3000
        assert stats["dropped"]["metrics"] == stats["failed"]["metrics"] == 0
    finally:
        assert run.finish() is True


def test_idle_sender_runs_no_cycles_and_wakes_for_new_records(
    sdk_broker: str, sdk_topics: Topics, tmp_path: Path
) -> None:
    """With nothing buffered the sender's wake-ups run no cycle; a new record is still sent."""
    settings = settings_mod.load(
        {"kafka": sdk_broker, "topic_prefix": sdk_topics.prefix, "data_dir": str(tmp_path)},
        environ={},
    )
    options = Options(flush_interval_s=0.01, spool=False)
    buffer = Buffer(options.bounds())
    sender = Sender(
        buffer, Batcher(producer="p", run="r", node="n", rank=0), settings=settings, options=options, key=b"r"
    )
    sender.start()
    try:
        buffer.put("runs", {"ts_ns": time.time_ns(), "event": "heartbeat"})
        assert sender.flush(scaled(20)) is True
        idle_from = sender.cycles
        time.sleep(0.3)  # ~30 flush intervals
        assert sender.cycles == idle_from
        buffer.put("runs", {"ts_ns": time.time_ns(), "event": "heartbeat"})
        deadline = time.monotonic() + scaled(5)
        while buffer.stats()["acked"]["runs"] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # no flush(): the periodic wake-up alone must send it
        assert buffer.stats()["acked"]["runs"] == 2
        assert sender.cycles > idle_from
    finally:
        assert sender.close(scaled(10)) is True


def test_records_that_keep_coming_wait_for_the_cycle_gap(sdk_broker: str, sdk_topics: Topics, tmp_path: Path) -> None:
    """A record that comes right after a cycle is sent by the next tick once cycle_gap_s has passed since that
    cycle began, without flush(); flush() does not wait for the gap."""
    settings = settings_mod.load(
        {"kafka": sdk_broker, "topic_prefix": sdk_topics.prefix, "data_dir": str(tmp_path)},
        environ={},
    )
    gap = 2.0
    options = Options(flush_interval_s=0.01, cycle_gap_s=gap, spool=False)
    buffer = Buffer(options.bounds())
    sender = Sender(
        buffer, Batcher(producer="p", run="r", node="n", rank=0), settings=settings, options=options, key=b"r"
    )

    def sent(count: int) -> bool:
        # Sent, not acknowledged: the answers are taken at the sender's next wake-up (the gap, here).
        deadline = time.monotonic() + scaled(10)
        while buffer.stats()["sent"]["runs"] < count and time.monotonic() < deadline:
            time.sleep(0.01)  # no flush(): the ticks alone must send it
        return buffer.stats()["sent"]["runs"] == count

    sender.start()
    try:
        buffer.put("runs", {"ts_ns": time.time_ns(), "event": "heartbeat"})
        assert sent(1)
        began = sender._cycle_began  # noqa: SLF001 - when the cycle that sent it began
        buffer.put("runs", {"ts_ns": time.time_ns(), "event": "heartbeat"})
        assert sent(2)
        assert sender._cycle_began - began >= gap - 0.01  # noqa: SLF001
        began = sender._cycle_began  # noqa: SLF001
        buffer.put("runs", {"ts_ns": time.time_ns(), "event": "heartbeat"})
        assert sender.flush(scaled(20)) is True
        assert sender._cycle_began - began < gap  # noqa: SLF001 - the flush's cycle did not wait
    finally:
        assert sender.close(scaled(10)) is True


def test_unreachable_broker_backs_off_without_spinning(tmp_path: Path) -> None:
    """While the broker is down the sender retries a few times a second at most, then less."""
    attempts: list[float] = []
    bootstrap = f"127.0.0.1:{free_port()}"

    class Counted(Transport):
        def probe(self, timeout_s: float) -> None:
            attempts.append(time.monotonic())
            super().probe(timeout_s)

    def factory() -> Transport:
        return Counted(bootstrap, request_timeout_ms=2000, retry_initial_s=0.1, retry_max_s=0.4)

    settings = settings_mod.load({"kafka": bootstrap, "data_dir": str(tmp_path)}, environ={})
    options = Options(retry_initial_s=0.1, retry_max_s=0.4, spool=False)
    buffer = Buffer(options.bounds())
    sender = Sender(
        buffer,
        Batcher(producer="p", run="r", node="n", rank=0),
        settings=settings,
        options=options,
        key=b"r",
        transport_factory=factory,
    )
    sender.start()
    buffer.put("runs", {"ts_ns": time.time_ns(), "event": "heartbeat"})
    time.sleep(1.5)
    assert sender.close(0.1) is False
    assert 3 <= len(attempts) <= 9
    gaps = [b - a for a, b in zip(attempts, attempts[1:], strict=False)]
    assert gaps[-1] >= 0.35
    assert buffer.stats()["lost"]["runs"] == 1


def test_sync_replays_the_spool(sdk_broker: str, sdk_topics: Topics, tmp_path: Path) -> None:
    """producers.run.sync() sends every spooled envelope and empties the spool."""
    from producers.run import sync

    settings = settings_mod.load({"kafka": sdk_broker, "data_dir": str(tmp_path)}, environ={})
    spool = DiskSpool.for_settings(settings, 1 << 20)
    old = Batcher(producer="1" * 32, run="syncrun", node="n", rank=0, max_records=4)
    built = old.build("metrics", 0, [(time.time_ns(), i, {"x": float(i)}) for i in range(10)])
    spool.write([SpoolEntry(sdk_topics.raw("metrics"), b"syncrun", b.value) for b in built.batches])
    assert sync(settings, scaled(20)) == 3
    found = asyncio.run(
        read_envelopes(sdk_broker, sdk_topics, ("metrics",), lambda f: len(f["metrics"]) >= 3, scaled(20))
    )
    assert [r["step"] for r in valid_records(found["metrics"])] == list(range(10))
    assert not list(spool.directory.iterdir())


def test_forked_child_sends_nothing_and_parent_finishes(sdk_broker: str, sdk_topics: Topics, tmp_path: Path) -> None:
    """A forked worker (data loader) neither captures nor sends; the parent's run is intact."""
    code = (
        "import os, sys, runstream\nrun = runstream.init(project='fork')\n"
        "print('parent line')\npid = os.fork()\n"
        "if pid == 0:\n"
        "    print('child line'); run.log({'child': 1.0}, step=0)\n"
        "    sys.stdout.flush(); os._exit(0)\n"
        "os.waitpid(pid, 0)\nrun.log({'parent': 1.0}, step=0)\n"
        "print('FLUSHED', run.finish(), file=sys.__stderr__)\n"
    )
    proc = run_script(code, _env(sdk_broker, sdk_topics, tmp_path), scaled(30))
    assert proc.returncode == 0, proc.stderr
    assert "child line" in proc.stdout and "FLUSHED True" in proc.stderr
    found = _read(sdk_broker, sdk_topics)
    assert [r["line"] for r in valid_records(found["logs"])] == ["parent line"]
    assert [r["values"] for r in valid_records(found["metrics"])] == [{"parent": 1.0}]
    assert len({e.producer for kind in found for e in found[kind]}) == 1


@pytest.mark.parametrize("spool_after_s", [600.0, 0.3], ids=["in-memory", "spooled"])
def test_records_logged_during_an_outage_arrive_after_it(tmp_path: Path, spool_after_s: float) -> None:
    """The network to the broker is cut and restored: what was logged meanwhile arrives.

    Kept in memory through a short outage; after ``spool_after_s`` written to
    the disk spool and replayed by the same process once the broker answers.
    """
    import runstream

    port, front = free_port(), free_port()
    broker = start_tansu(port, front, tmp_path / "broker.log")
    net = Outage(front, port)
    net.restore()
    bootstrap = f"127.0.0.1:{front}"
    topics = Topics("outage.")
    settings = settings_mod.load(
        {"kafka": bootstrap, "topic_prefix": topics.prefix, "data_dir": str(tmp_path)}, environ={}
    )
    options = Options(
        request_timeout_ms=1500,
        retry_initial_s=0.1,
        retry_max_s=0.5,
        spool_after_s=spool_after_s,
        finish_timeout_s=scaled(20),
    )
    try:
        asyncio.run(kafka.wait_for_broker(bootstrap, scaled(20)))
        asyncio.run(kafka.ensure_topics(bootstrap, topics.all(), 1))
        run = runstream.init(project="outage", settings=settings, options=options, capture=False)
        for step in range(100):
            run.log({"x": float(step)}, step=step)
        assert run.flush(scaled(10)) is True
        net.cut()
        for step in range(100, 200):
            run.log({"x": float(step)}, step=step)
        assert run.flush(1.0) is False
        if spool_after_s < 1:
            deadline = time.monotonic() + scaled(10)
            while run.stats()["spooled"]["metrics"] < 100 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert run.stats()["spooled"]["metrics"] == 100
        assert run.stats()["acked"]["metrics"] == 100
        net.restore()
        assert run.flush(scaled(30)) is True
        assert run.finish() is True
        found = asyncio.run(
            read_envelopes(
                bootstrap,
                topics,
                ("metrics",),
                lambda f: sum(len(e.records) for e in f["metrics"]) >= 200,
                scaled(10),
            )
        )
        steps = [r["step"] for r in valid_records(found["metrics"])]
        assert sorted(set(steps)) == list(range(200))
        assert not list(tmp_path.glob("spool/*/*.spool*"))
    finally:
        net.cut()
        broker.terminate()
        broker.wait(10)
