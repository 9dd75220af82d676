"""Storage benchmark: log inserts, log search latency and chart downsampling on chDB.

Builds 1M log lines by repeating the real-logs corpus with shifted times (one
run, 16 ranks), inserts them through the sink's Arrow path, then times the
queries the UI makes: keyword, phrase, substring and regex search (first page
of 500, as the API asks) with and without a time range, the same phrase with
the text index switched off, and a 1M-point metric series reduced to 1000
points.  Prints a table and writes bench/results/storage.json.  The query
condition cache is off so that repeats measure the search, not the cache.

    python bench/storage.py [--lines 1000000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runstream import tables, wire  # noqa: E402
from sinks.queries import Queries  # noqa: E402
from sinks.rows import ColumnBuffer  # noqa: E402
from sinks.store import open_store  # noqa: E402

REAL_LOGS = ROOT.parent / "shared" / "data" / "real-logs"
RUN = "bench-run"
RANKS = 16
ENVELOPE = 1000
INSERT_BATCH = 100_000


def corpus() -> list[str]:
    lines: list[str] = []
    for path in sorted(REAL_LOGS.iterdir()):
        if path.suffix in (".log", ".out", ".txt"):
            lines += path.read_text(encoding="utf-8", errors="replace").split("\n")
    if not lines:
        raise SystemExit(f"no logs under {REAL_LOGS}")
    return lines


def envelopes(n: int, start_ns: int, step_ns: int) -> list[wire.Envelope]:
    """``n`` lines as clean log envelopes of 1000 records, round-robin over 16 ranks."""
    base = corpus()
    out: list[wire.Envelope] = []
    for seq, first in enumerate(range(0, n, ENVELOPE)):
        rank = seq % RANKS
        recs = [
            {
                "ts_ns": start_ns + i * step_ns,
                "line": base[i % len(base)],
                "stream": "stdout",
                "level": "",
                "logger": "",
                "i": i - first,
            }
            for i in range(first, min(n, first + ENVELOPE))
        ]
        out.append(
            wire.Envelope(
                kind="logs",
                producer=f"prod-{rank:02d}",
                seq=seq,
                run=RUN,
                node=f"node-{rank // 8}",
                rank=rank,
                sent_ns=start_ns,
                records=recs,
                ingest_ns=start_ns,
            )
        )
    return out


def p50_ms(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    fn()  # warm: first-touch of columns and index files
    times = []
    result = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--points", type=int, default=1_000_000, help="metric points in the chart series")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    data_dir = tempfile.mkdtemp(prefix="runstream-bench-")
    store = open_store(f"chdb://{data_dir}", "bench", settings={"use_query_condition_cache": 0})
    queries = Queries(store)
    results: dict[str, Any] = {
        "lines": args.lines,
        "points": args.points,
        "repeat": args.repeat,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
    }
    span_s = 6 * 3600
    start_ns = (time.time_ns() // 10**9 - span_s - 600) * 10**9
    step_ns = span_s * 10**9 // args.lines

    # -- inserts -------------------------------------------------------------
    envs = envelopes(args.lines, start_ns, step_ns)
    t0 = time.perf_counter()
    buffers: list[ColumnBuffer] = []
    buf = ColumnBuffer()
    for env in envs:
        buf.add_envelope(env)
        if buf.rows >= INSERT_BATCH:
            buffers.append(buf)
            buf = ColumnBuffer()
    if buf.rows:
        buffers.append(buf)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    batches = [b.to_arrow(tables.LOGS) for b in buffers]
    arrow_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i, batch in enumerate(batches):
        store.insert_arrow(tables.LOGS, batch, dedup_token=f"bench:{i}")
    insert_s = time.perf_counter() - t0
    results["insert"] = {
        "rows": args.lines,
        "batch_rows": INSERT_BATCH,
        "envelope_to_columns_rows_per_s": round(args.lines / build_s),
        "columns_to_arrow_rows_per_s": round(args.lines / arrow_s),
        "arrow_insert_rows_per_s": round(args.lines / insert_s),
        "end_to_end_rows_per_s": round(args.lines / (build_s + arrow_s + insert_s)),
        "bytes_on_disk": store.query_rows(
            "SELECT sum(bytes_on_disk) FROM system.parts WHERE database = 'bench' AND table = 'logs' AND active"
        )[0][0],
    }
    store.command("OPTIMIZE TABLE bench.logs FINAL")

    # -- search --------------------------------------------------------------
    last_hour = {"since_ns": start_ns + (span_s - 3600) * 10**9}
    searches: list[tuple[str, dict[str, Any]]] = [
        ("keyword 'error'", {"q": "error"}),
        ("keyword 'nccl'", {"q": "nccl"}),
        ("phrase 'CUDA out of memory'", {"q": "CUDA out of memory"}),
        ("phrase 'Traceback (most recent call last)'", {"q": "Traceback (most recent call last)"}),
        ("substring 'out of mem'", {"q": "out of mem"}),
        ("no match 'zzqx never here'", {"q": "zzqx never here"}),
        ("regex '(?i)loss[=:] *[0-9.]+'", {"regex": r"(?i)loss[=:] *[0-9.]+"}),
        ("regex '(?i)nccl.*error'", {"regex": r"(?i)nccl.*error"}),
        ("no filter: first page", {}),
    ]
    rows: list[dict[str, Any]] = []
    for label, filters in searches:
        for ranged in (False, True):
            params = dict(filters, **(last_hour if ranged else {}))
            ms, page = p50_ms(lambda p=params: queries.search_logs(RUN, limit=500, **p), args.repeat)
            rows.append(
                {
                    "search": label,
                    "time_range": "last 1 h" if ranged else "whole run",
                    "p50_ms": round(ms, 1),
                    "lines": len(page["lines"]),
                }
            )
    # The same phrase with the text index off shows what the index saves.
    phrase = like = "%traceback (most recent call last)%"
    sql = "SELECT count() FROM bench.logs WHERE run_id = {run:String} AND lower(text) LIKE {p:String}"
    for index_on in (True, False):
        ms, got = p50_ms(
            lambda on=index_on: store.query_rows(sql, {"run": RUN, "p": like}, settings={"use_skip_indexes": int(on)}),
            args.repeat,
        )
        rows.append(
            {
                "search": f"count {phrase!r}, text index {'on' if index_on else 'off'}",
                "time_range": "whole run",
                "p50_ms": round(ms, 1),
                "lines": got[0][0],
            }
        )
    results["search"] = rows

    # -- chart ---------------------------------------------------------------
    buf = ColumnBuffer()
    for first in range(0, args.points, 10_000):
        recs = [
            {
                "ts_ns": start_ns + s * 10**6,
                "step": s,
                "values": {"loss": (math.nan if s == 777_777 else 1e9 if s == 123_457 else 1 / (1 + s))},
                "i": s - first,
            }
            for s in range(first, min(args.points, first + 10_000))
        ]
        buf.add_envelope(
            wire.Envelope(
                kind="metrics",
                producer="p",
                seq=first,
                run=RUN,
                node="n",
                rank=0,
                sent_ns=start_ns,
                records=recs,
                ingest_ns=start_ns,
            )
        )
    store.insert_arrow(tables.METRICS, buf.to_arrow(tables.METRICS))
    ms, series = p50_ms(lambda: queries.metric_series(RUN, "loss", points=1000), args.repeat)
    spike_kept = [123_457, 1e9] in series["points"] and [777_777, "NaN"] in series["points"]
    results["chart"] = {
        "points_in": args.points,
        "points_out": len(series["points"]),
        "p50_ms": round(ms, 1),
        "spike_and_nan_kept": spike_kept,
    }
    store.close()

    # -- report --------------------------------------------------------------
    ins = results["insert"]
    print(f"inserted {ins['rows']:,} log lines in batches of {ins['batch_rows']:,}")
    for key in (
        "envelope_to_columns_rows_per_s",
        "columns_to_arrow_rows_per_s",
        "arrow_insert_rows_per_s",
        "end_to_end_rows_per_s",
    ):
        print(f"  {key:34s} {ins[key]:>12,}")
    print(f"  {'bytes_on_disk':34s} {ins['bytes_on_disk']:>12,}")
    print()
    print(f"{'search (first page of 500)':52s} {'range':10s} {'p50 ms':>8s} {'lines':>7s}")
    for r in rows:
        print(f"{r['search']:52s} {r['time_range']:10s} {r['p50_ms']:8.1f} {r['lines']:7d}")
    ch = results["chart"]
    print()
    print(
        f"chart: {ch['points_in']:,} points -> {ch['points_out']} in {ch['p50_ms']} ms (p50); "
        f"spike and NaN kept: {ch['spike_and_nan_kept']}"
    )
    out = ROOT / "bench" / "results" / "storage.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
