"""The stream workers against the real broker: alerts, scale-out, recovery from changelogs, stalled runs.

Each test starts ``python -m streams`` worker processes with its own topic
prefix and app id (consumer group and changelog topics), writes raw envelopes
as a producer would and reads what the workers wrote back.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from runstream import kafka, wire
from runstream.topics import Topics, changelog_topics
from streams.levels import detect_level
from tests.conftest import scaled

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 4
NS = 1_000_000_000


class Worker:
    """One ``python -m streams`` process and its ready file."""

    def __init__(self, proc: subprocess.Popen[bytes], ready: Path, log: Path) -> None:
        self.proc, self.ready, self.log = proc, ready, log

    def assigned(self) -> list[str]:
        """The ``topic:partition`` list of its last rebalance (empty before the first)."""
        try:
            return list(json.loads(self.ready.read_text())["assigned"])
        except (FileNotFoundError, json.JSONDecodeError):
            return []

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(scaled(30))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextmanager
def workers(broker: str, topics: Topics, app_id: str, tmp: Path, n: int = 1, *extra: str) -> Iterator[list[Worker]]:
    """``n`` workers of one app, started together; terminated on exit."""
    started: list[Worker] = []
    try:
        for _ in range(n):
            started.append(start_worker(broker, topics, app_id, tmp, *extra))
        yield started
    finally:
        for w in started:
            w.stop()


def start_worker(broker: str, topics: Topics, app_id: str, tmp: Path, *extra: str) -> Worker:
    name = uuid.uuid4().hex[:8]
    ready, log = tmp / f"{name}.ready", tmp / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streams",
                "--kafka",
                broker,
                "--topic-prefix",
                topics.prefix,
                "--app-id",
                app_id,
                "--data-dir",
                str(tmp / name),
                "--partitions",
                str(PARTITIONS),
                "--ready-file",
                str(ready),
                "--loglevel",
                "info",
                *extra,
            ],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    return Worker(proc, ready, log)


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, procs: list[Worker]) -> None:
    deadline = time.monotonic() + scaled(timeout_s)
    while not check():
        for w in procs:
            assert w.proc.poll() is None, f"worker exited: {w.log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {procs[0].log.read_text()[-3000:]}"
        time.sleep(0.1)


def envelope(
    kind: str,
    run: str,
    records: list[dict[str, Any]],
    *,
    producer: str = "p0",
    seq: int = 0,
    node: str = "node-a",
    rank: int = 0,
) -> tuple[bytes, bytes]:
    env = wire.Envelope(
        kind=kind, producer=producer, seq=seq, run=run, node=node, rank=rank, sent_ns=time.time_ns(), records=records
    )
    return run.encode(), wire.encode(env)


async def _send(broker: str, topic: str, items: list[tuple[bytes, bytes]]) -> None:
    producer = kafka.make_producer(broker)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, key=k, value=v) for k, v in items])
    finally:
        await producer.stop()


def send(broker: str, topic: str, items: list[tuple[bytes, bytes]]) -> None:
    asyncio.run(_send(broker, topic, items))


async def _read(
    broker: str, topic: str, until: Callable[[list[wire.Envelope]], bool], timeout_s: float
) -> list[wire.Envelope]:
    """Envelopes of ``topic`` read from the start until ``until(found)``, then up to the end offsets at that moment."""
    consumer = kafka.make_consumer(broker, [topic], None)
    await consumer.start()
    found: list[wire.Envelope] = []
    read_to: dict[Any, int] = {}
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for tp, messages in (await consumer.getmany(timeout_ms=200)).items():
                for msg in messages:
                    found.append(wire.decode(msg.value))
                    read_to[tp] = msg.offset + 1
            if until(found):
                ends = await kafka.end_offsets(broker, [topic])
                while any(read_to.get(tp, 0) < end for tp, end in ends.items()) and time.monotonic() < deadline:
                    for tp, messages in (await consumer.getmany(timeout_ms=200)).items():
                        for msg in messages:
                            found.append(wire.decode(msg.value))
                            read_to[tp] = msg.offset + 1
                return found
    finally:
        await consumer.stop()
    return found


def read(
    broker: str, topic: str, until: Callable[[list[wire.Envelope]], bool], timeout_s: float
) -> list[wire.Envelope]:
    return asyncio.run(_read(broker, topic, until, scaled(timeout_s)))


def alerts_by_key(envelopes: list[wire.Envelope]) -> dict[str, dict[str, Any]]:
    """The alerts of ``envelopes`` after dedup by key (what the store keeps)."""
    return {rec["key"]: rec for env in envelopes if env.kind == "alerts" for rec in env.records}


def prepare(broker: str, topic_prefix: str) -> tuple[Topics, str]:
    topics = Topics(topic_prefix)
    app_id = f"app-{uuid.uuid4().hex[:10]}"
    asyncio.run(kafka.ensure_topics(broker, topics.all(), PARTITIONS))
    return topics, app_id


OOM_TRACEBACK = [
    "Traceback (most recent call last):",
    '  File "train.py", line 41, in <module>',
    "    loss.backward()",
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
    "79.15 GiB of which 1.20 GiB is free.",
]


def test_nan_loss_and_oom_traceback_raise_exactly_their_alerts(broker: str, topic_prefix: str, tmp_path: Path) -> None:
    """A run logging a NaN loss and an OOM traceback gets one nan_loss and one oom alert, and nothing else."""
    topics, app_id = prepare(broker, topic_prefix)
    t0 = time.time_ns()
    metrics = [
        {"ts_ns": t0 + s, "step": s, "values": {"loss": 1.0 if s < 3 else math.nan, "lr": 0.1}} for s in range(6)
    ]
    logs = [
        {"ts_ns": t0 + i, "line": line, "stream": "stderr", "level": ""}
        for i, line in enumerate(["step 1 ok", *OOM_TRACEBACK])
    ]
    with workers(broker, topics, app_id, tmp_path) as procs:
        wait_until(lambda: bool(procs[0].assigned()), 90, "partitions", procs)
        send(broker, topics.raw("metrics"), [envelope("metrics", "run-1", metrics)])
        send(broker, topics.raw("logs"), [envelope("logs", "run-1", logs, producer="p1")])
        found = read(
            broker, topics.alerts, lambda f: {"nan_loss", "oom"} <= {a["kind"] for a in alerts_by_key(f).values()}, 60
        )
    alerts = alerts_by_key(found)
    assert sorted(a["kind"] for a in alerts.values()) == ["nan_loss", "oom"], alerts
    assert "nan_loss/node-a/0/loss" in alerts and all(env.run == "run-1" for env in found)
    nan = alerts["nan_loss/node-a/0/loss"]
    assert nan["severity"] == "error" and math.isnan(nan["value"])


def test_undecodable_clean_message_does_not_stop_the_detectors(broker: str, topic_prefix: str, tmp_path: Path) -> None:
    """Garbage bytes on a clean topic or on the log digests ahead of a run's records are skipped; its alerts
    still fire."""
    topics, app_id = prepare(broker, topic_prefix)
    t0 = time.time_ns()
    metrics = [{"ts_ns": t0 + s, "step": s, "values": {"loss": 1.0 if s < 3 else math.nan}, "i": s} for s in range(6)]
    logs = [{"ts_ns": t0 + i, "line": line, "stream": "stderr", "level": ""} for i, line in enumerate(OOM_TRACEBACK)]
    with workers(broker, topics, app_id, tmp_path) as procs:
        wait_until(lambda: bool(procs[0].assigned()), 90, "partitions", procs)
        # The same key as the run, so the garbage sits ahead of its records in the same partition.
        send(broker, topics.clean("metrics"), [(b"run-2", b"\xc1 not msgpack")])
        send(broker, topics.log_digests, [(b"run-2", b"\xc1 not msgpack"), (b"run-2", wire.pack({"v": 99}))])
        send(broker, topics.clean("metrics"), [envelope("metrics", "run-2", metrics)])
        send(broker, topics.raw("logs"), [envelope("logs", "run-2", logs, producer="p2")])
        found = read(
            broker, topics.alerts, lambda f: {"nan_loss", "oom"} <= {a["kind"] for a in alerts_by_key(f).values()}, 60
        )
        assert procs[0].proc.poll() is None
    assert sorted(a["kind"] for a in alerts_by_key(found).values()) == ["nan_loss", "oom"]


def test_two_workers_share_partitions_and_forward_every_record(broker: str, topic_prefix: str, tmp_path: Path) -> None:
    """Two workers of one app split the partitions; every raw record reaches the clean topic, none invented."""
    topics, app_id = prepare(broker, topic_prefix)
    raw_logs = {f"{topics.raw('logs')}:{p}" for p in range(PARTITIONS)}
    with workers(broker, topics, app_id, tmp_path, 2) as procs:

        def split() -> bool:
            a, b = (raw_logs & set(w.assigned()) for w in procs)
            return bool(a) and bool(b) and not a & b and a | b == raw_logs

        wait_until(split, 120, "both workers to hold raw partitions", procs)
        items, expected = [], set()
        for b in range(40):
            run, producer, seq = f"run-{b % 8}", f"prod-{b % 8}", b // 8
            recs = [
                {"ts_ns": time.time_ns(), "line": f"batch {b} line {i}", "stream": "stdout", "level": ""}
                for i in range(25)
            ]
            items.append(envelope("logs", run, recs, producer=producer, seq=seq))
            expected |= {(producer, seq, i) for i in range(25)}
        send(broker, topics.raw("logs"), items)

        def ids(found: list[wire.Envelope]) -> set[tuple[str, int, int]]:
            return {(env.producer, env.seq, rec["i"]) for env in found for rec in env.records}

        found = read(broker, topics.clean("logs"), lambda f: expected <= ids(f), 90)
    assert ids(found) == expected


def test_restarted_worker_recovers_loss_window_from_changelog(broker: str, topic_prefix: str, tmp_path: Path) -> None:
    """A worker SIGKILLed after committing 30 losses still flags a spike after restart (window from changelog)."""
    topics, app_id = prepare(broker, topic_prefix)
    t0 = time.time_ns()
    quiet = [{"ts_ns": t0 + s, "step": s, "values": {"loss": 1.0 + 0.01 * (s % 5)}} for s in range(30)]
    spike = [{"ts_ns": t0 + 30, "step": 30, "values": {"loss": 50.0}}]
    first = start_worker(broker, topics, app_id, tmp_path, "--session-timeout-s", "6")
    second: Worker | None = None
    try:
        wait_until(lambda: bool(first.assigned()), 90, "partitions", [first])
        send(broker, topics.raw("metrics"), [envelope("metrics", "run-r", quiet)])
        clean = [topics.clean("metrics")]

        def committed() -> bool:
            ends = asyncio.run(kafka.end_offsets(broker, clean))
            return sum(ends.values()) > 0 and asyncio.run(kafka.group_lag(broker, app_id, clean)) == 0

        wait_until(committed, 60, "the detector to commit the quiet losses", [first])
        changelog = changelog_topics(app_id)[1]
        assert changelog.endswith("-metrics-changelog")
        assert sum(asyncio.run(kafka.end_offsets(broker, [changelog])).values()) > 0
        first.stop(signal.SIGKILL)
        second = start_worker(broker, topics, app_id, tmp_path, "--session-timeout-s", "6")
        wait_until(lambda: bool(second.assigned()), 120, "partitions after restart", [second])
        send(broker, topics.raw("metrics"), [envelope("metrics", "run-r", spike, seq=1)])
        found = read(broker, topics.alerts, lambda f: "loss_spike/node-a/0/loss/30" in alerts_by_key(f), 60)
    finally:
        first.stop()
        if second is not None:
            second.stop()
    assert "loss_spike/node-a/0/loss/30" in alerts_by_key(found), second.log.read_text()[-3000:] if second else ""


def test_stalled_alert_after_heartbeats_stop(broker: str, topic_prefix: str, tmp_path: Path) -> None:
    """A running run whose heartbeats stop gets a stalled alert once crashed_after_s has passed."""
    topics, app_id = prepare(broker, topic_prefix)
    hb = time.time_ns()
    with workers(broker, topics, app_id, tmp_path, 1, "--crashed-after-s", "1", "--check-interval-s", "0.5") as procs:
        wait_until(lambda: bool(procs[0].assigned()), 90, "partitions", procs)
        send(broker, topics.raw("runs"), [envelope("runs", "run-s", [{"ts_ns": hb, "event": "heartbeat"}])])
        found = read(
            broker, topics.alerts, lambda f: any(a["kind"] == "stalled" for a in alerts_by_key(f).values()), 60
        )
    alerts = alerts_by_key(found)
    assert list(alerts) == [f"stalled/{hb}"] and alerts[f"stalled/{hb}"]["severity"] == "error"
    assert {env.run for env in found} == {"run-s"}


async def _states(
    broker: str, topic: str, until: Callable[[dict[str, dict[str, Any]]], bool], timeout_s: float, whole: bool = False
) -> dict[str, dict[str, Any]]:
    """The latest ``runs`` table value per run id read from its changelog (its state, or with ``whole`` the
    stored map ``{"p": partition, "s": state}``), once ``until(states)`` or at the timeout."""
    consumer = kafka.make_consumer(broker, [topic], None)
    await consumer.start()
    states: dict[str, dict[str, Any]] = {}
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not until(states):
            for messages in (await consumer.getmany(timeout_ms=200)).values():
                for msg in messages:
                    if msg.value:
                        doc = wire.unpack(msg.value)
                        states[json.loads(msg.key)] = doc if whole else doc["s"]
    finally:
        await consumer.stop()
    return states


def run_states(
    broker: str, app_id: str, until: Callable[[dict[str, dict[str, Any]]], bool], timeout_s: float, whole: bool = False
) -> dict[str, dict[str, Any]]:
    topic = changelog_topics(app_id)[0]
    assert topic.endswith("-runs-changelog")
    return asyncio.run(_states(broker, topic, until, scaled(timeout_s), whole))


def _lifecycle(run: str, rank: int, seq: int, event: str, ts_ns: int, **extra: Any) -> tuple[bytes, bytes]:
    return envelope(
        "runs",
        run,
        [{"ts_ns": ts_ns, "event": event, **extra}],
        producer=f"{run}-r{rank}",
        seq=seq,
        node=f"node-{rank}",
        rank=rank,
    )


def test_run_finishes_when_every_rank_finished_and_fails_with_one_rank(
    broker: str, topic_prefix: str, tmp_path: Path
) -> None:
    """Two-rank runs: finished only after both ranks finish; one failed rank makes its run failed at once."""
    topics, app_id = prepare(broker, topic_prefix)
    t0 = time.time_ns()
    with workers(broker, topics, app_id, tmp_path) as procs:
        wait_until(lambda: bool(procs[0].assigned()), 90, "partitions", procs)
        send(
            broker,
            topics.raw("runs"),
            [
                _lifecycle("run-a", 0, 0, "start", t0),
                _lifecycle("run-a", 1, 0, "start", t0),
                _lifecycle("run-a", 0, 1, "finish", t0 + NS, status="finished", exit_code=0),
                _lifecycle("run-b", 0, 0, "start", t0),
                _lifecycle("run-b", 1, 0, "start", t0),
                _lifecycle("run-b", 1, 1, "finish", t0 + NS, status="failed", exit_code=1),
            ],
        )
        first = run_states(
            broker,
            app_id,
            lambda s: (
                s.get("run-a", {}).get("life") == {"0": "finished", "1": ""}
                and s.get("run-b", {}).get("life", {}).get("1") == "failed"
            ),
            60,
        )
        send(broker, topics.raw("runs"), [_lifecycle("run-a", 1, 1, "finish", t0 + 2 * NS, status="finished")])
        last = run_states(broker, app_id, lambda s: s.get("run-a", {}).get("status") == "finished", 60)
    assert first["run-a"]["status"] == "running", first
    assert first["run-b"]["status"] == "failed" and first["run-b"]["life"] == {"0": "", "1": "failed"}
    assert last["run-a"]["status"] == "finished" and last["run-a"]["life"] == {"0": "finished", "1": "finished"}


def test_gpu_idle_while_running_raises_one_alert_even_after_a_replay(
    broker: str, topic_prefix: str, tmp_path: Path
) -> None:
    """A running run whose GPU shows 0% for over idle_after_s while steps advance gets one gpu_idle alert;
    the same samples delivered again add none."""
    topics, app_id = prepare(broker, topic_prefix)
    t0 = time.time_ns() - 120 * NS
    seconds = range(0, 100, 5)
    steps = [{"ts_ns": t0 + s * NS, "step": s, "values": {"loss": 2.0 - s / 100}} for s in seconds]

    def idle(device: str) -> list[dict[str, Any]]:
        return [
            {"ts_ns": t0 + s * NS, "device": device, "values": {"util_pct": 0.0, "mem_used_mb": 512.0}} for s in seconds
        ]

    samples = envelope("resources", "run-g", idle("gpu0"), producer="sampler", seq=0)
    with workers(broker, topics, app_id, tmp_path) as procs:
        wait_until(lambda: bool(procs[0].assigned()), 90, "partitions", procs)
        send(broker, topics.raw("runs"), [envelope("runs", "run-g", [{"ts_ns": t0, "event": "start"}])])
        send(broker, topics.raw("metrics"), [envelope("metrics", "run-g", steps, producer="trainer")])
        send(broker, topics.raw("resources"), [samples])
        read(broker, topics.alerts, lambda f: any(a["kind"] == "gpu_idle" for a in alerts_by_key(f).values()), 60)
        # The replay, then a second GPU's idle stretch: its alert comes after the replay was processed.
        send(
            broker,
            topics.raw("resources"),
            [samples, envelope("resources", "run-g", idle("gpu1"), producer="sampler", seq=1)],
        )
        found = read(broker, topics.alerts, lambda f: f"gpu_idle/node-a/gpu1/{t0}" in alerts_by_key(f), 60)
    records = [rec for env in found for rec in env.records if rec["kind"] == "gpu_idle"]
    assert sorted(rec["key"] for rec in records) == [f"gpu_idle/node-a/gpu0/{t0}", f"gpu_idle/node-a/gpu1/{t0}"]
    first = records[0]
    assert first["metric"] == "gpu0/util_pct" and first["value"] == 0.0 and first["ts_ns"] >= t0 + 60 * NS
    assert set(alerts_by_key(found)) == {r["key"] for r in records}


def _split(procs: list[Worker], topic: str) -> list[set[int]]:
    """The partitions of ``topic`` each worker holds now."""
    return [{int(tp.rpartition(":")[2]) for tp in w.assigned() if tp.rpartition(":")[0] == topic} for w in procs]


def _shared_runs_input(
    runs: list[str], stalled: list[str], t0: int, old_hb: int
) -> dict[str, list[tuple[bytes, bytes]]]:
    """Raw batches per kind: two ranks per run (NaN loss on rank 1, an OOM traceback cut between two batches
    of rank 0, a WARNING and an ERROR line), finished or failed; one old heartbeat per stalled run."""
    raw: dict[str, list[tuple[bytes, bytes]]] = {"runs": [], "metrics": [], "logs": []}
    for k, run in enumerate(runs):
        raw["runs"] += [_lifecycle(run, 0, 0, "start", t0), _lifecycle(run, 1, 0, "start", t0)]
        for rank in (0, 1):
            values = [
                {"ts_ns": t0 + s, "step": s, "values": {"loss": math.nan if rank and s >= 4 else 2.0 - s / 10}}
                for s in range(8)
            ]
            raw["metrics"].append(
                envelope("metrics", run, values, producer=f"{run}-r{rank}", node=f"node-{rank}", rank=rank)
            )
        for seq, part in enumerate((SHARED_LINES[:SHARED_CUT], SHARED_LINES[SHARED_CUT:])):
            first = 0 if seq == 0 else SHARED_CUT
            recs = [
                {"ts_ns": t0 + first + i, "line": line, "stream": "stderr", "level": ""} for i, line in enumerate(part)
            ]
            raw["logs"].append(envelope("logs", run, recs, producer=f"{run}-r0", seq=seq, node="node-0", rank=0))
        failed = k % 2 == 1
        raw["runs"] += [
            _lifecycle(run, 0, 1, "finish", t0 + NS, status="finished", exit_code=0),
            _lifecycle(run, 1, 1, "finish", t0 + NS, status="failed" if failed else "finished", exit_code=int(failed)),
        ]
    for run in stalled:
        raw["runs"].append(envelope("runs", run, [{"ts_ns": old_hb, "event": "heartbeat"}], producer=f"{run}-r0"))
    return raw


SHARED_LINES = ["epoch 1 started", "WARNING: lr decayed", *OOM_TRACEBACK, "ERROR: giving up"]
SHARED_CUT = 3  # the first batch ends inside the traceback


def test_two_workers_keep_detector_state_per_run_exactly_once(broker: str, topic_prefix: str, tmp_path: Path) -> None:
    """Two workers of one app split the runs: each run's status, ranks, nodes, line counts, traceback group and
    alerts are what one worker makes of it, and each alert is emitted once (no run is evaluated by both)."""
    topics, app_id = prepare(broker, topic_prefix)
    runs = [f"shared-run-{k}" for k in range(8)]
    stalled = [f"shared-stalled-{k}" for k in range(4)]
    clean_runs = topics.clean("runs")
    with workers(broker, topics, app_id, tmp_path, 2, "--crashed-after-s", "30", "--check-interval-s", "0.5") as procs:

        def split() -> bool:
            a, b = _split(procs, clean_runs)
            return bool(a) and bool(b) and not a & b and a | b == set(range(PARTITIONS))

        wait_until(split, 120, "both workers to hold clean.runs partitions", procs)
        held = _split(procs, clean_runs)
        # Finished and failed runs are never stalled; their heartbeats are fresh until the finish is applied.
        t0 = time.time_ns()
        old_hb = t0 - 120 * NS
        raw = _shared_runs_input(runs, stalled, t0, old_hb)
        for kind in ("runs", "metrics", "logs"):
            send(broker, topics.raw(kind), raw[kind])
        oom = f"oom/{{run}}-r0/0/{SHARED_LINES.index(OOM_TRACEBACK[0])}"  # the group: the traceback's first line
        expected = {(run, key) for run in runs for key in ("nan_loss/node-1/1/loss", oom.format(run=run))}
        expected |= {(run, f"stalled/{old_hb}") for run in stalled}

        def emitted(found: list[wire.Envelope]) -> Counter[tuple[str, str]]:
            return Counter((env.run, a["key"]) for env in found for a in env.records)

        found = read(broker, topics.alerts, lambda f: expected <= set(emitted(f)), 90)
        levels = [detect_level(line) for line in SHARED_LINES]
        counts = {"lines": len(SHARED_LINES), "warnings": levels.count("WARNING"), "errors": levels.count("ERROR")}
        docs = run_states(
            broker,
            app_id,
            lambda s: all(
                s.get(run, {}).get("s", {}).get("counts") == counts and s[run]["s"]["status"] != "running"
                for run in runs
            ),
            60,
            whole=True,
        )
        assert _split(procs, clean_runs) == held, "the partitions moved during the test"

    assert counts["warnings"] == 1 and counts["errors"] == 3, counts  # the Traceback and exception lines, ERROR:
    assert dict(emitted(found)) == dict.fromkeys(expected, 1), emitted(found)
    for k, run in enumerate(runs):
        state = docs[run]["s"]
        assert state["status"] == ("failed" if k % 2 else "finished"), (run, state)
        assert state["counts"] == counts, (run, state)
        assert sorted(state["ranks"]) == [0, 1] and sorted(state["nodes"]) == ["node-0", "node-1"], (run, state)
    # The runs were stored under partitions of both workers: each worker kept some of the state.
    parts = {docs[run]["p"] for run in runs + stalled}
    assert parts & held[0] and parts & held[1], (parts, held)


def _restart(first: Worker, broker: str, topics: Topics, app_id: str, tmp: Path) -> Worker:
    """SIGKILL ``first`` and start a worker of the same app in its place, once it holds partitions."""
    first.stop(signal.SIGKILL)
    second = start_worker(
        broker, topics, app_id, tmp, "--session-timeout-s", "6", "--crashed-after-s", "1", "--check-interval-s", "0.5"
    )
    wait_until(lambda: bool(second.assigned()), 120, "partitions after restart", [second])
    return second


def test_stalled_alert_is_not_sent_again_after_a_restart(broker: str, topic_prefix: str, tmp_path: Path) -> None:
    """A stalled alert sent before the worker is killed is not sent again by the restarted worker (the run-wide
    detectors' reported keys come back from the runs changelog)."""
    topics, app_id = prepare(broker, topic_prefix)
    hb = time.time_ns() - 120 * NS
    first = start_worker(
        broker,
        topics,
        app_id,
        tmp_path,
        "--session-timeout-s",
        "6",
        "--crashed-after-s",
        "1",
        "--check-interval-s",
        "0.5",
    )
    second: Worker | None = None
    try:
        wait_until(lambda: bool(first.assigned()), 90, "partitions", [first])
        send(broker, topics.raw("runs"), [envelope("runs", "run-s", [{"ts_ns": hb, "event": "heartbeat"}])])
        read(broker, topics.alerts, lambda f: f"stalled/{hb}" in alerts_by_key(f), 60)
        run_states(broker, app_id, lambda s: f"stalled/{hb}" in s.get("run-s", {}).get("reported", ()), 60)
        second = _restart(first, broker, topics, app_id, tmp_path)
        # Two later stalled runs, the second sent once the first's alert is out: by then the restarted worker
        # has finished a whole pass of the run-wide detectors over every run it holds, run-s included.
        for later in ("run-later-1", "run-later-2"):
            send(broker, topics.raw("runs"), [envelope("runs", later, [{"ts_ns": hb + 1, "event": "heartbeat"}])])

            def alerted(found: list[wire.Envelope], run: str = later) -> bool:
                return any(env.run == run for env in found)

            found = read(broker, topics.alerts, alerted, 90)
    finally:
        first.stop()
        if second is not None:
            second.stop()
    sent = Counter((env.run, a["key"]) for env in found for a in env.records)
    assert sent[("run-s", f"stalled/{hb}")] == 1, (sent, second.log.read_text()[-3000:] if second else "")
    assert sent[("run-later-1", f"stalled/{hb + 1}")] == 1 and sent[("run-later-2", f"stalled/{hb + 1}")] == 1


def test_nan_loss_is_not_sent_again_after_a_restart(broker: str, topic_prefix: str, tmp_path: Path) -> None:
    """A series whose NaN loss was reported before the worker is killed raises no second nan_loss after the
    restart (its flag comes back from the metrics changelog); a new series still does."""
    topics, app_id = prepare(broker, topic_prefix)
    t0 = time.time_ns()
    first = start_worker(broker, topics, app_id, tmp_path, "--session-timeout-s", "6")
    second: Worker | None = None
    try:
        wait_until(lambda: bool(first.assigned()), 90, "partitions", [first])
        send(
            broker,
            topics.raw("metrics"),
            [envelope("metrics", "run-n", [{"ts_ns": t0, "step": 0, "values": {"loss": math.nan}}])],
        )
        read(broker, topics.alerts, lambda f: "nan_loss/node-a/0/loss" in alerts_by_key(f), 60)
        clean = [topics.clean("metrics")]
        wait_until(
            lambda: asyncio.run(kafka.group_lag(broker, app_id, clean)) == 0, 60, "the detector to commit", [first]
        )
        second = _restart(first, broker, topics, app_id, tmp_path)
        send(
            broker,
            topics.raw("metrics"),
            [
                envelope(
                    "metrics",
                    "run-n",
                    [{"ts_ns": t0 + 1, "step": 1, "values": {"loss": math.inf, "val_loss": math.nan}}],
                    seq=1,
                )
            ],
        )
        found = read(broker, topics.alerts, lambda f: "nan_loss/node-a/0/val_loss" in alerts_by_key(f), 60)
    finally:
        first.stop()
        if second is not None:
            second.stop()
    sent = Counter(a["key"] for env in found for a in env.records)
    assert sent == {"nan_loss/node-a/0/loss": 1, "nan_loss/node-a/0/val_loss": 1}, sent


def test_batch_after_the_timer_marked_a_run_reported_keeps_the_mark(
    broker: str, topic_prefix: str, tmp_path: Path
) -> None:
    """A log batch applied after the run-wide timer recorded a stalled alert as sent keeps that record in the run's
    state (the agents take the state the timer wrote, not the object they last saved), so it is not sent again."""
    topics, app_id = prepare(broker, topic_prefix)
    hb = time.time_ns() - 120 * NS
    key = f"stalled/{hb}"
    with workers(broker, topics, app_id, tmp_path, 1, "--crashed-after-s", "1", "--check-interval-s", "0.5") as procs:
        wait_until(lambda: bool(procs[0].assigned()), 90, "partitions", procs)
        send(broker, topics.raw("runs"), [envelope("runs", "run-m", [{"ts_ns": hb, "event": "heartbeat"}])])
        run_states(broker, app_id, lambda s: key in s.get("run-m", {}).get("reported", ()), 60)
        send(
            broker,
            topics.raw("logs"),
            [envelope("logs", "run-m", [{"ts_ns": hb + 1, "line": "epoch 2", "stream": "stdout", "level": ""}])],
        )
        states = run_states(broker, app_id, lambda s: s.get("run-m", {}).get("counts", {}).get("lines") == 1, 60)
    assert states["run-m"]["counts"]["lines"] == 1, states
    assert key in states["run-m"]["reported"], states["run-m"]


def test_log_batches_sent_together_count_once_each_and_alert_once(
    broker: str, topic_prefix: str, tmp_path: Path
) -> None:
    """Sixty log batches of one run from two ranks, sent at once (their digests merged as the worker sees fit),
    count every line and warning once, see each rank's newest line, and raise the OOM of one batch once."""
    topics, app_id = prepare(broker, topic_prefix)
    t0 = time.time_ns()
    items = []
    for seq in range(60):
        lines = OOM_TRACEBACK if seq == 31 else ["step ok", "WARNING: slow step", "loss 0.5"]
        records = [
            {"ts_ns": t0 + seq * 10 + k, "line": line, "stream": "stderr", "level": ""} for k, line in enumerate(lines)
        ]
        items.append(envelope("logs", "run-many", records, producer=f"p{seq % 2}", seq=seq // 2, rank=seq % 2))
    total = 59 * 3 + len(OOM_TRACEBACK)
    with workers(broker, topics, app_id, tmp_path) as procs:
        wait_until(lambda: bool(procs[0].assigned()), 90, "partitions", procs)
        send(broker, topics.raw("logs"), items)
        states = run_states(broker, app_id, lambda s: s.get("run-many", {}).get("counts", {}).get("lines") == total, 60)
        found = read(broker, topics.alerts, lambda f: "oom" in {a["kind"] for env in f for a in env.records}, 60)
    state = states["run-many"]
    assert state["counts"] == {"lines": total, "warnings": 59, "errors": 2}, state
    assert state["seen"] == {"node-a/0": t0 + 580 + 2, "node-a/1": t0 + 590 + 2}, state
    assert [a["kind"] for env in found for a in env.records] == ["oom"]
    # All sixty arrive in one fetch, so the validator finds more queued after each and merges their digests.
    digests = sum(asyncio.run(kafka.end_offsets(broker, [topics.log_digests])).values())
    assert 3 <= digests < 60, digests
