"""Would an n-gram bloom filter index help log search?  A/B on a kept storage data dir.

The logs table searches through a ``text`` index over ``lower(text)``.  A
substring whose ends are partial words (``out of mem``) can use only the whole
words inside it, so it scans more.  This adds an ``ngrambf_v1`` index over
``lower(text)`` to the data of an earlier ``bench/storage.py --data-dir DIR``
run, materialises it, times the UI's searches with it and with it ignored
(``ignore_data_skipping_indices``, same data, same process), and drops it
again (``--keep`` leaves it).  Searches run with the query condition cache off;
p50 of ``--repeat``.  Writes bench/results/ngram.json.

    python bench/storage.py --lines 10000000 --data-dir DIR   # once, builds the data
    python bench/ngram.py --data-dir DIR [--repeat 5] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sinks.queries import Queries  # noqa: E402
from sinks.store import open_store  # noqa: E402

INDEX = "ngram_bench_idx"
INDEX_TYPE = "ngrambf_v1(4, 32768, 2, 0)"
SEARCHES: list[tuple[str, dict[str, Any]]] = [
    ("substring 'out of mem'", {"q": "out of mem"}),
    ("phrase 'CUDA out of memory'", {"q": "CUDA out of memory"}),
    ("keyword 'error'", {"q": "error"}),
    ("keyword 'nccl'", {"q": "nccl"}),
    ("no match 'zzqx never here'", {"q": "zzqx never here"}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="a data dir kept by bench/storage.py --data-dir")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="leave the n-gram index in place")
    args = parser.parse_args()
    store = open_store(f"chdb://{args.data_dir}", "bench", settings={"use_query_condition_cache": 0})
    lines, run = store.query_rows("SELECT count(), any(run_id) FROM bench.logs")[0]
    if not lines:
        raise SystemExit(f"no log lines in {args.data_dir}: run bench/storage.py --data-dir there first")
    queries = Queries(store)
    base = dict(queries._settings)  # noqa: SLF001 - the UI's own limits, plus one setting per arm

    def p50_ms(filters: dict[str, Any], extra: dict[str, Any]) -> float:
        queries._settings = {**base, **extra}  # noqa: SLF001
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            queries.search_logs(run, **filters)
            times.append((time.perf_counter() - t0) * 1000)
        return statistics.median(times)

    t0 = time.perf_counter()
    store.command(f"ALTER TABLE bench.logs ADD INDEX IF NOT EXISTS {INDEX} lower(text) TYPE {INDEX_TYPE} GRANULARITY 1")
    store.command(f"ALTER TABLE bench.logs MATERIALIZE INDEX {INDEX} SETTINGS mutations_sync = 2")
    build_s = time.perf_counter() - t0
    size = store.query_rows(
        "SELECT data_compressed_bytes FROM system.data_skipping_indices "
        "WHERE database = 'bench' AND table = 'logs' AND name = {name:String}",
        {"name": INDEX},
    )[0][0]
    rows = []
    try:
        for name, filters in SEARCHES:
            without = p50_ms(filters, {"ignore_data_skipping_indices": INDEX})
            with_index = p50_ms(filters, {})
            rows.append({"search": name, "without_ms": round(without, 1), "with_ms": round(with_index, 1)})
    finally:
        queries._settings = base  # noqa: SLF001
        if not args.keep:
            store.command(f"ALTER TABLE bench.logs DROP INDEX IF EXISTS {INDEX}")
    print(
        f"{lines:,} log lines; {INDEX_TYPE} over lower(text): built in {build_s:.1f} s, "
        f"{size / 2**20:.1f} MiB compressed"
    )
    print(f"{'search (first page of 500), p50 ms':40} {'text index only':>16} {'+ n-gram':>10}")
    for row in rows:
        print(f"{row['search']:40} {row['without_ms']:16.1f} {row['with_ms']:10.1f}")
    out = ROOT / "bench" / "results" / "ngram.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "lines": lines,
                "index": INDEX_TYPE,
                "build_s": round(build_s, 1),
                "index_bytes": size,
                "loadavg_1m": os.getloadavg()[0],
                "results": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
