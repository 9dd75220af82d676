"""Cost of secret redaction per log line: one line at a time (``producers.records.redact_log``) and
as the sender pays it, a batch of 1000 lines at a time (``producers.redact.LineRedactor``).

Cases: a clean line (no trigger word: only the prefilter runs), a clean line
with a trigger word (``tokens/s``: the full pass runs and changes nothing),
a line with a secret, and every line of the real-log corpus
(``/work/shared/data/real-logs``) in turn.  Each figure is the mean of a
timed loop over many calls (best of 5 repeats), in ns per line; the
``floor`` is the same loop calling a function that returns 0, so the
difference is what redaction adds.  This runs on the sender thread, never on
the training thread.

    python bench/redact.py [--loops 200000] [--json bench/results/redact.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from producers.records import redact_log  # noqa: E402
from producers.redact import LineRedactor, candidate  # noqa: E402

REAL_LOGS = ROOT.parent / "shared" / "data" / "real-logs"
CASES = {
    "clean line": "[2026-11-23 10:00:01,123] INFO step=1200 loss=0.3141 lr=3.0e-04 grad_norm=1.27 epoch=3",
    "clean line with a trigger word": "step 1200 | loss 0.3141 | tokens/s 48213 | max_tokens=2048 | lr 3e-4",
    "line with a secret": "Logging in: HF_TOKEN=hf_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3f user=bob",
}


def _floor(record: dict[str, Any]) -> int:
    return 0


def _time_per_line(fn: Callable[[dict[str, Any]], int], lines: list[str], loops: int) -> float:
    """Mean ns per call of ``fn`` on records made from ``lines`` (best of 5)."""
    records = [{"line": line} for line in lines]
    n = len(records)
    reps = max(1, loops // n)
    best = float("inf")
    for _ in range(5):
        fresh = [[dict(r) for r in records] for _ in range(reps)]
        t0 = time.perf_counter_ns()
        for batch in fresh:
            for rec in batch:
                fn(rec)
        best = min(best, (time.perf_counter_ns() - t0) / (reps * n))
    return best


def _time_batched(lines: list[str], loops: int, batch: int = 1000) -> float:
    """Mean ns per line of :class:`LineRedactor` over batches of ``batch`` lines (best of 5)."""
    reps = max(1, loops // batch)
    chunk = (lines * (batch // max(1, len(lines)) + 1))[:batch] if len(lines) < batch else lines
    batches = [chunk[i : i + batch] for i in range(0, len(chunk), batch)]
    streams = ["stdout"] * batch
    best = float("inf")
    for _ in range(5):
        red = LineRedactor()
        t0 = time.perf_counter_ns()
        for _ in range(max(1, reps // len(batches))):
            for part in batches:
                red.redact(part, streams[: len(part)])
        n = max(1, reps // len(batches)) * len(chunk)
        best = min(best, (time.perf_counter_ns() - t0) / n)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loops", type=int, default=200_000)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "redact.json")
    args = parser.parse_args(argv)

    rows: dict[str, dict[str, float]] = {}
    for name, line in CASES.items():
        floor = _time_per_line(_floor, [line], args.loops)
        cost = _time_per_line(redact_log, [line], args.loops)
        rows[name] = {"ns_per_line": cost, "floor_ns": floor, "added_ns": cost - floor}
        rows[name + ", batched"] = {"ns_per_line": _time_batched([line], args.loops)}
    corpus: dict[str, Any] = {"present": REAL_LOGS.is_dir()}
    if REAL_LOGS.is_dir():
        lines = [
            line
            for path in sorted(REAL_LOGS.iterdir())
            if path.suffix not in (".tsv", ".md")
            for line in path.read_text(errors="replace").split("\n")
        ]
        floor = _time_per_line(_floor, lines, len(lines))
        cost = _time_per_line(redact_log, lines, len(lines))
        rows["real-log corpus, every line"] = {"ns_per_line": cost, "floor_ns": floor, "added_ns": cost - floor}
        rows["real-log corpus, batched"] = {"ns_per_line": _time_batched(lines, len(lines))}
        corpus.update(
            lines=len(lines),
            candidates=sum(candidate(line) for line in lines),
            changed=sum(1 for line in lines if redact_log({"line": line})),
        )

    header = f"{'case':<44}{'ns/line':>10}{'floor ns':>10}{'added ns':>10}"
    print(header)
    print("-" * len(header))
    for name, r in rows.items():
        floor_text = f"{r['floor_ns']:>10.0f}{r['added_ns']:>10.0f}" if "floor_ns" in r else ""
        print(f"{name:<44}{r['ns_per_line']:>10.0f}{floor_text}")
    if corpus.get("lines"):
        print(
            f"\nreal logs: {corpus['lines']} lines, {corpus['candidates']} pass the prefilter "
            f"({100 * corpus['candidates'] / corpus['lines']:.1f}%), {corpus['changed']} changed"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "bench": "redact",
                "python": sys.version.split()[0],
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
                "loadavg": os.getloadavg(),
                "results": rows,
                "corpus": corpus,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
