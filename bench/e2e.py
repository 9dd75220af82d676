"""End-to-end benchmark, embedded mode: SDK -> broker -> faust -> chDB -> HTTP API.

Starts ``runstream up`` on free ports and measures, on this machine:

* log lines/s from the SDK (``print`` captured) until queryable through the API;
  each line is a numbered marker followed by a line of the real training logs
  in ``../shared/data/real-logs/`` (``--synthetic``: one made-up progress line);
* metric points/s from ``run.log`` until queryable;
* freshness: one line printed every 50 ms; the time until a search through
  the API returns it (p50, p99), while another process writes background load,
  also split into lines printed before the sink had stored that load and after.

Prints a table and writes bench/results/e2e.json.

    python bench/e2e.py [--lines 300000] [--steps 30000] [--metrics-per-step 10] [--trace]

``--trace`` prints, every half second, how many log messages (batches) each
stage has taken: written to the raw topic, forwarded by the stream worker to
the clean topic, committed by the sink (stored). It shows which stage lags.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

PRODUCER = r"""
import os, sys, time, runstream
mode, n, width, tag = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
run = runstream.init(project="bench", name=f"{mode}-{tag}", config={"n": n})
print("RUN_ID", run.id, file=sys.__stderr__, flush=True)
t0 = time.time_ns()
if mode == "lines":
    corpus = os.environ.get("RS_BENCH_CORPUS")
    texts = open(corpus, encoding="utf-8").read().split("\n") if corpus else []
    if texts:
        k = len(texts)
        for i in range(n):
            print(f"{tag} bench line {i} {texts[i % k]}")
    else:
        for i in range(n):
            print(f"{tag} bench line {i} loss=0.{i % 9973:04d} lr=3e-4 tokens/s=123456")
elif mode == "metrics":
    names = [f"m{j}" for j in range(width)]
    for step in range(n):
        run.log({name: step * 0.001 + j for j, name in enumerate(names)}, step=step)
elif mode == "fresh":
    for i in range(n):
        print(f"{tag} fresh {i} {time.time_ns()}")
        time.sleep(0.05)
print("EMIT_NS", t0, time.time_ns(), file=sys.__stderr__, flush=True)
run.finish()
print("DONE_NS", time.time_ns(), file=sys.__stderr__, flush=True)
print("CPU_S", time.process_time(), file=sys.__stderr__, flush=True)
"""


class Api:
    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token

    def get(self, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        req = urllib.request.Request(f"{self.url}{path}?{query}", headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())


def start_up(data_dir: Path, partitions: int | None = None) -> tuple[subprocess.Popen[str], Api, str]:
    extra = ["--partitions", str(partitions)] if partitions else []
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runstream",
            "up",
            "--data-dir",
            str(data_dir),
            "--port",
            "0",
            "--kafka-port",
            "0",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    url = token = kafka = ""
    assert proc.stdout is not None
    deadline = time.monotonic() + 180
    for line in proc.stdout:
        if m := re.search(r"runstream is up: (http://\S+?)/\?token=(\S+)", line):
            url, token = m.groups()
        if m := re.search(r"Kafka: (\S+)", line):
            kafka = m.group(1)
            break
        if time.monotonic() > deadline:
            break
    if not kafka:
        proc.kill()
        raise SystemExit("runstream up did not start")
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    return proc, Api(url, token), kafka


REAL_LOGS = ROOT.parent / "shared" / "data" / "real-logs"
CORPUS: Path | None = None  # set by main(): the lines a "lines" producer prints after its marker


def real_corpus(out: Path) -> Path | None:
    """One file of the real training logs' lines, one per line (carriage returns and tabs made spaces).

    Every printed line must stay one stored line so the benchmark can count
    them, so a tqdm ``\\r`` update becomes a space instead of a redraw.
    """
    if not REAL_LOGS.is_dir():
        return None
    lines: list[str] = []
    for path in sorted(REAL_LOGS.iterdir()):
        if path.suffix in (".log", ".out", ".txt"):
            text = path.read_text(encoding="utf-8", errors="replace")
            lines += [ln.replace("\r", " ").replace("\t", " ")[:2000] for ln in text.split("\n") if ln.strip()]
    out.write_text("\n".join(lines), encoding="utf-8")
    return out


def producer(kafka: str, mode: str, n: int, width: int, tag: str) -> subprocess.Popen[str]:
    env = {**os.environ, "RUNSTREAM_KAFKA": kafka, "PYTHONPATH": str(ROOT)}
    if CORPUS is not None:
        env["RS_BENCH_CORPUS"] = str(CORPUS)
    return subprocess.Popen(
        [sys.executable, "-c", PRODUCER, mode, str(n), str(width), tag],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_markers(proc: subprocess.Popen[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    assert proc.stderr is not None
    for line in proc.stderr:
        parts = line.split()
        if parts and parts[0] in ("RUN_ID", "EMIT_NS", "DONE_NS", "CPU_S"):
            out[parts[0]] = parts[1:]
    proc.wait()
    return out


def wait_until(pred: Any, timeout_s: float, interval_s: float = 0.05) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            done = pred()
        except urllib.error.HTTPError as exc:
            if exc.code != 404:  # 404: the run is not stored yet
                raise
            done = False
        if done:
            return time.time()
        time.sleep(interval_s)
    raise SystemExit("timed out waiting for data to become queryable")


STAGES = {"tansu": "broker", "-m streams": "stream worker", "-m ui.serve": "sink + API"}


def stage_cpu(root_pid: int) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each stage process under ``runstream up``."""
    import psutil

    out: dict[str, float] = {}
    for child in psutil.Process(root_pid).children(recursive=True):
        try:
            cmd, times = " ".join(child.cmdline()), child.cpu_times()
        except psutil.Error:
            continue
        for needle, stage in STAGES.items():
            if needle in cmd:
                out[stage] = out.get(stage, 0.0) + times.user + times.system
    return out


def cpu_per_record(before: dict[str, float], after: dict[str, float], trainer_s: float, n: int) -> dict[str, float]:
    """Microseconds of CPU per record in each stage between two :func:`stage_cpu` snapshots."""
    used = {stage: after.get(stage, 0.0) - before.get(stage, 0.0) for stage in after}
    used["trainer (SDK)"] = trainer_s
    return {stage: round(seconds / n * 1e6, 2) for stage, seconds in used.items()}


UP_PID = 0  # set by main(): the runstream up process whose children are the stages


def sink_counts(api: Api) -> dict[str, int]:
    """The sink's counters (flushes, inserts, rows stored in ``logs``) from the health report."""
    sink = api.get("/api/health").get("sink", {})
    return {
        "flushes": sink.get("flushes", 0),
        "inserts": sink.get("inserts", 0),
        "log_rows": sink.get("rows", {}).get("logs", 0),
        "metric_rows": sink.get("rows", {}).get("metrics", 0),
        "flush_s": sink.get("flush_s", 0.0),
        **{f"insert_s.{table}": seconds for table, seconds in sink.get("insert_s", {}).items()},
    }


def sink_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, Any]:
    """What the sink did between two readings of :func:`sink_counts`."""
    delta: dict[str, Any] = {k: after[k] - before.get(k, 0) for k in after}
    delta.update({k: round(v, 2) for k, v in delta.items() if k.endswith("_s") or "_s." in k})
    delta["log_rows_per_flush"] = round(delta["log_rows"] / delta["flushes"]) if delta["flushes"] else 0
    return delta


def throughput_lines(api: Api, kafka: str, n: int) -> dict[str, Any]:
    tag = f"L{int(time.time())}"
    cpu_before = stage_cpu(UP_PID)
    sink_before = sink_counts(api)
    proc = producer(kafka, "lines", n, 0, tag)
    m = read_markers(proc)
    run_id = m["RUN_ID"][0]
    start_ns = int(m["EMIT_NS"][0])
    last = f"{tag} bench line {n - 1} "
    # Look for the last line among the newest ones only (as a user searching the last minute
    # would): a search over the whole run on every poll would cost the sink's process more
    # than the ingest being measured.
    since = f"{int(m['EMIT_NS'][1]) / 1e9 - 60:.3f}"
    # Polled through the sink's own count of stored rows (a counter in the health report, no
    # query), then confirmed by one search: a search on every poll costs the process being
    # measured (~40 searches over the run's lines each time).
    wait_until(lambda: sink_counts(api)["log_rows"] - sink_before["log_rows"] >= n, 600)
    end = wait_until(lambda: bool(api.get(f"/api/runs/{run_id}/logs", q=last, since=since, limit=1)["lines"]), 600)
    cpu = cpu_per_record(cpu_before, stage_cpu(UP_PID), float(m["CPU_S"][0]), n)
    sink = sink_delta(sink_before, sink_counts(api))
    seconds = end - start_ns / 1e9
    stored = count_lines(api, run_id)
    emit_s = (int(m["EMIT_NS"][1]) - start_ns) / 1e9
    return {
        "what": "log lines",
        "corpus": "synthetic" if CORPUS is None else "real-logs",
        "records": n,
        "stored": stored,
        "seconds": seconds,
        "per_s": n / seconds,
        "emit_s": emit_s,
        "cpu_us_per_record": cpu,
        "sink": sink,
    }


def count_lines(api: Api, run_id: str) -> int:
    total, cursor = 0, None
    while True:
        page = api.get(f"/api/runs/{run_id}/logs", limit=10000, cursor=cursor)
        total += len(page["lines"])
        cursor = page.get("next_cursor")
        if not cursor or not page["lines"]:
            return total


def throughput_metrics(api: Api, kafka: str, steps: int, width: int) -> dict[str, Any]:
    tag = f"M{int(time.time())}"
    cpu_before = stage_cpu(UP_PID)
    metric_rows_before = sink_counts(api).get("metric_rows", 0)
    proc = producer(kafka, "metrics", steps, width, tag)
    m = read_markers(proc)
    run_id = m["RUN_ID"][0]
    start_ns = int(m["EMIT_NS"][0])
    name = f"m{width - 1}"

    def done() -> bool:
        series = api.get(f"/api/runs/{run_id}/metrics", name=name, points=10)
        return series.get("total", 0) >= steps

    # As for the lines: the sink's row counter, then one query to confirm.
    wait_until(lambda: sink_counts(api).get("metric_rows", 0) - metric_rows_before >= steps * width, 600)
    end = wait_until(done, 600)
    seconds = end - start_ns / 1e9
    points = steps * width
    cpu = cpu_per_record(cpu_before, stage_cpu(UP_PID), float(m["CPU_S"][0]), points)
    emit_s = (int(m["EMIT_NS"][1]) - start_ns) / 1e9
    return {
        "what": "metric points",
        "records": points,
        "stored": points,
        "seconds": seconds,
        "per_s": points / seconds,
        "emit_s": emit_s,
        "cpu_us_per_record": cpu,
    }


def freshness(api: Api, kafka: str, count: int, background_lines: int) -> dict[str, Any]:
    tag = f"F{int(time.time())}"
    rows_before = sink_counts(api)["log_rows"]
    load = producer(kafka, "lines", background_lines, 0, f"{tag}bg") if background_lines else None
    # When the sink has stored the background lines (its row counter): lines printed before then
    # were printed under that load, the others on a quiet pipeline.
    load_done_ns: int | None = None if background_lines else 0
    proc = producer(kafka, "fresh", count, 0, tag)
    assert proc.stderr is not None
    run_id = ""
    for line in proc.stderr:  # the SDK may log a note (e.g. no GPU) before the marker
        if line.startswith("RUN_ID "):
            run_id = line.split()[1]
            break
    seen: dict[int, tuple[float, int]] = {}
    deadline = time.monotonic() + count * 0.05 + 60
    cursor = None
    while len(seen) < count and time.monotonic() < deadline:
        try:
            page = api.get(f"/api/runs/{run_id}/logs", q=f"{tag} fresh", limit=1000, cursor=cursor)
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise
            time.sleep(0.01)
            continue
        now = time.time_ns()
        for line in page["lines"]:
            parts = line["line"].split()
            seen.setdefault(int(parts[2]), ((now - int(parts[3])) / 1e6, int(parts[3])))
        cursor = page.get("next_cursor") or cursor
        if load_done_ns is None and sink_counts(api)["log_rows"] - rows_before >= background_lines + len(seen):
            load_done_ns = time.time_ns()
        time.sleep(0.01)
    proc.wait()
    if load is not None:
        load.wait()

    def summary(lat: list[float]) -> dict[str, Any]:
        lat = sorted(lat)
        return {
            "samples": len(lat),
            "p50_ms": statistics.median(lat) if lat else None,
            "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None,
        }

    under = [ms for ms, at in seen.values() if load_done_ns is None or at < load_done_ns]
    return {
        "what": "freshness (print -> API)",
        "background_lines": background_lines,
        **summary([ms for ms, _ in seen.values()]),
        "under_load": summary(under),
        "after_load": summary([ms for ms, at in seen.values() if load_done_ns is not None and at >= load_done_ns]),
    }


class Tracer:
    """Samples each stage's progress on the log topics in a thread (for ``--trace``)."""

    def __init__(self, kafka: str) -> None:
        from runstream.topics import DEFAULT_APP_ID, Topics

        self.kafka, self.app_id, self.topics = kafka, DEFAULT_APP_ID, Topics()
        self.rows: list[tuple[float, int, int, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        import asyncio

        from runstream import kafka

        raw, clean = self.topics.raw("logs"), self.topics.clean("logs")
        t0 = time.monotonic()
        while not self._stop.wait(0.5):
            try:
                ends = asyncio.run(kafka.end_offsets(self.kafka, [raw, clean]))
                raw_end = sum(v for tp, v in ends.items() if tp.topic == raw)
                clean_end = sum(v for tp, v in ends.items() if tp.topic == clean)
                streams_lag = asyncio.run(kafka.group_lag(self.kafka, self.app_id, [raw]))
                sink_lag = asyncio.run(kafka.group_lag(self.kafka, "runstream-sink", [clean]))
            except Exception as exc:  # a trace sample is best effort
                print(f"trace: {exc}", file=sys.stderr)
                continue
            self.rows.append((time.monotonic() - t0, raw_end, raw_end - streams_lag, clean_end, clean_end - sink_lag))

    def print(self) -> None:
        print(
            f"{'t s':>6} {'raw written':>12} {'streams read':>13} {'clean written':>14} {'sink stored':>12}"
            "   (log messages)"
        )
        for t, raw, read, clean, stored in self.rows:
            print(f"{t:6.1f} {raw:12,} {read:13,} {clean:14,} {stored:12,}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=300_000)
    parser.add_argument("--steps", type=int, default=30_000)
    parser.add_argument("--metrics-per-step", type=int, default=10)
    parser.add_argument("--fresh", type=int, default=200)
    parser.add_argument("--background-lines", type=int, default=100_000)
    parser.add_argument("--trace", action="store_true", help="print each stage's progress every 0.5 s")
    parser.add_argument(
        "--partitions", type=int, help="partitions per topic (runstream up --partitions; default: runstream up's own)"
    )
    parser.add_argument(
        "--synthetic",
        action="store_true",
        help="print one made-up progress line (every line a metric-extraction candidate) "
        "instead of the real training logs' lines",
    )
    args = parser.parse_args()
    global CORPUS, UP_PID
    with tempfile.TemporaryDirectory(prefix="rs-bench-") as tmp:
        CORPUS = None if args.synthetic else real_corpus(Path(tmp) / "corpus.txt")
        proc, api, kafka = start_up(Path(tmp), args.partitions)
        UP_PID = proc.pid
        tracer = Tracer(kafka) if args.trace else None
        if tracer:
            tracer.start()
        try:
            results = [
                throughput_lines(api, kafka, args.lines),
                throughput_metrics(api, kafka, args.steps, args.metrics_per_step),
            ]
            fresh = freshness(api, kafka, args.fresh, args.background_lines)
        finally:
            if tracer:
                tracer.stop()
            proc.send_signal(signal.SIGTERM)
            proc.wait(300)
    if tracer:
        tracer.print()
    print(
        f"{'pipeline (embedded, SDK -> queryable via API)':48} {'records':>10} {'seconds':>8} {'records/s':>11}"
        f" {'trainer emit s':>15}"
    )
    for r in results:
        print(f"{r['what']:48} {r['records']:>10,} {r['seconds']:8.2f} {r['per_s']:>11,.0f} {r['emit_s']:15.2f}")
    stages = list(results[0]["cpu_us_per_record"])
    print(f"\n{'CPU µs per record (includes the health polls)':48} " + " ".join(f"{s:>14}" for s in stages))
    for r in results:
        print(f"{r['what']:48} " + " ".join(f"{r['cpu_us_per_record'].get(s, 0):14.2f}" for s in stages))
    sink = results[0]["sink"]
    print(
        f"{'sink during the log lines':48} {sink['flushes']:,} flushes, {sink['inserts']:,} inserts, "
        f"{sink['log_rows_per_flush']:,} log rows per flush, {sink['flush_s']} s flushing"
    )
    inserting = ", ".join(f"{k.split('.', 1)[1]} {v} s" for k, v in sink.items() if k.startswith("insert_s.") and v)
    print(f"{'  of which inserting into':48} {inserting}")
    print(
        f"{'freshness p50 / p99 (ms), all lines':48} "
        f"{fresh['p50_ms']:.0f} / {fresh['p99_ms']:.0f}  ({fresh['samples']} lines)"
    )
    for part, label in (("under_load", "printed while background lines were stored"), ("after_load", "printed after")):
        if fresh[part]["samples"]:
            print(
                f"{'  ' + label:48} {fresh[part]['p50_ms']:.0f} / {fresh[part]['p99_ms']:.0f}  "
                f"({fresh[part]['samples']} lines)"
            )
    out = ROOT / "bench" / "results" / "e2e.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                },
                "partitions": args.partitions or "runstream up's default",
                "throughput": results,
                "freshness": fresh,
            },
            indent=2,
        )
    )
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
