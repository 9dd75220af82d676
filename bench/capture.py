"""CPU per printed line in a trainer process: console capture to broker acknowledgement, per thread.

A trainer process prints the lines of the real training logs
(``../shared/data/real-logs``, each prefixed with a marker as ``bench/e2e.py``
prints them) with its stdout on ``/dev/null`` and capture on, then waits
until the broker has acknowledged every line.  Its CPU time is split into
the printing thread's ``print`` loop (through the console tee), its
``run.flush`` (which pumps what the sender has not taken yet, then waits),
the SDK's sender thread (capture pump, envelopes, redaction, encoding,
handing them to librdkafka) and the whole process (librdkafka's own threads
compress and send).  Thread CPU comes from
``/proc/self/task`` (10 ms ticks), the rest from ``time.thread_time`` and
``time.process_time``; which thread pumps varies run to run, the whole
process is the figure to compare.  The
``floor`` row prints the same lines with no SDK at all.  Figures are
microseconds of CPU per line, median of ``--reps`` runs [min-max], the
cases interleaved run by run, against one Tansu broker.

``--base DIR`` adds a row for another ``producers`` package (an A/B in the
same sitting)::

    mkdir /tmp/sdk-base && git archive REV producers | tar -x -C /tmp/sdk-base
    python bench/capture.py --base /tmp/sdk-base

    python bench/capture.py [--lines 300000] [--reps 3] [--json bench/results/capture.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.e2e import real_corpus  # noqa: E402  - the same lines, printed as e2e prints them
from runstream import kafka  # noqa: E402
from runstream.embedded import broker_command  # noqa: E402
from runstream.topics import Topics  # noqa: E402

WORKER = r"""
import os, sys, tempfile, threading, time
corpus, n, mode, bootstrap = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
texts = open(corpus, encoding="utf-8").read().split("\n")
k = len(texts)
sys.stdout = open(os.devnull, "w")


def thread_cpu_s():
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            fields = open(f"/proc/self/task/{tid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


if mode == "floor":
    p0, m0 = time.process_time(), time.thread_time()
    for i in range(n):
        print(f"T1 bench line {i} {texts[i % k]}")
    m1, p1 = time.thread_time(), time.process_time()
    print("RESULT", m1 - m0, 0.0, 0.0, p1 - p0, True, n, file=sys.__stderr__, flush=True)
    raise SystemExit(0)

import runstream
from producers.options import Options
from runstream import settings as settings_mod

with tempfile.TemporaryDirectory() as data_dir:
    settings = settings_mod.load({"kafka": bootstrap, "data_dir": data_dir}, environ={})
    run = runstream.init(project="bench", name="capture", settings=settings,
                         options=Options(finish_timeout_s=120.0, spool=False, sample=False))
    run.flush(30)
    sender = next(t for t in threading.enumerate() if t.name == "runstream-sender")
    before = thread_cpu_s()
    p0, m0 = time.process_time(), time.thread_time()
    for i in range(n):
        print(f"T1 bench line {i} {texts[i % k]}")
    m1 = time.thread_time()
    ok = run.flush(120)
    m2, p1 = time.thread_time(), time.process_time()
    after = thread_cpu_s()
    acked = run.stats()["acked"]["logs"]
    run.finish()
sender_s = after[sender.native_id] - before.get(sender.native_id, 0.0)
print("RESULT", m1 - m0, m2 - m1, sender_s, p1 - p0, ok, acked, file=sys.__stderr__, flush=True)
"""

COLUMNS = {
    "print": "print loop",
    "flush": "run.flush",
    "sender": "sender thread",
    "process": "whole process",
}


def start_broker() -> tuple[subprocess.Popen[bytes], str]:
    """A Tansu broker on a free loopback port with the raw topics (stopped by the caller)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        broker_command(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
    )
    bootstrap = f"127.0.0.1:{port}"
    asyncio.run(kafka.wait_for_broker(bootstrap, 30))
    asyncio.run(kafka.ensure_topics(bootstrap, Topics().all(), 1))
    return proc, bootstrap


def run_case(producers_root: Path, corpus_path: Path, lines: int, mode: str, bootstrap: str) -> dict[str, float]:
    """One trainer process; its CPU µs per line (see :data:`COLUMNS`).

    Raises ``RuntimeError`` when the process gave no result or not every line was acknowledged.
    """
    env = {**os.environ, "PYTHONPATH": f"{producers_root}:{ROOT}"}
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, str(corpus_path), str(lines), mode, bootstrap],
        env=env,
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    got = [line.split() for line in proc.stderr.splitlines() if line.startswith("RESULT ")]
    if not got:
        raise RuntimeError((proc.stderr.strip().splitlines() or ["no output"])[-1][:300])
    *seconds, ok, acked = got[0][1:]
    if ok != "True" or int(acked) < lines:
        raise RuntimeError(f"not every line was acknowledged: acked={acked} of {lines}")
    return {col: float(s) * 1e6 / lines for col, s in zip(COLUMNS, seconds, strict=True)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=300_000, help="lines printed per run")
    parser.add_argument("--reps", type=int, default=3, help="runs per case, interleaved")
    parser.add_argument("--base", type=Path, help="a directory holding another producers package to compare")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "capture.json")
    args = parser.parse_args(argv)
    cases: dict[str, tuple[Path, str]] = {"floor (print, no SDK)": (ROOT, "floor")}
    if args.base is not None:
        cases["base (--base)"] = (args.base.resolve(), "capture")
    cases["this tree"] = (ROOT, "capture")
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in cases}
    load_before = os.getloadavg()
    broker, bootstrap = start_broker()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            corpus_path = real_corpus(Path(tmp) / "corpus.txt")
            if corpus_path is None:
                raise SystemExit("the real logs (../shared/data/real-logs) are not here")
            for _ in range(args.reps):
                for name, (root, mode) in cases.items():
                    runs[name].append(run_case(root, corpus_path, args.lines, mode, bootstrap))
    finally:
        broker.terminate()
        broker.wait(10)
    summary = {
        name: {
            col: {"median": statistics.median(v), "min": min(v), "max": max(v)}
            for col in COLUMNS
            for v in [[r[col] for r in rows]]
        }
        for name, rows in runs.items()
    }
    print(f"CPU µs per printed line ({args.lines:,} real-log lines, {args.reps} runs each, median [min-max])")
    print(f"{'case':24}" + "".join(f"{label:>22}" for label in COLUMNS.values()))
    for name, cols in summary.items():
        cells = [f"{c['median']:6.2f} [{c['min']:5.2f}-{c['max']:5.2f}]" for c in cols.values()]
        print(f"{name:24}" + "".join(f"{cell:>22}" for cell in cells))
    load_after = os.getloadavg()
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} ({os.cpu_count()} CPUs)")
    report: dict[str, Any] = {
        "bench": "capture",
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "lines": args.lines,
        "reps": args.reps,
        "base": str(args.base) if args.base is not None else None,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "unit": "CPU us per line",
        "results": summary,
        "runs": runs,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json.relative_to(ROOT) if args.json.is_relative_to(ROOT) else args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
