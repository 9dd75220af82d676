"""Which codec carries batch envelopes: MessagePack (msgspec, msgpack-python) vs orjson vs stdlib json.

Encodes and decodes 1000-record log and metric batches (log lines taken from
the real-logs corpus when present) and prints records/s per codec, plus
whether NaN/Inf survive a round trip.  Writes bench/results/codec.json.

    python bench/codec.py
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import msgspec
import orjson

ROOT = Path(__file__).resolve().parents[1]
REAL_LOGS = ROOT.parent / "shared" / "data" / "real-logs"
BATCH = 1000
REPEAT = 200


def _lines() -> list[str]:
    lines: list[str] = []
    if REAL_LOGS.is_dir():
        for path in sorted(REAL_LOGS.iterdir()):
            if path.suffix in (".log", ".out", ".txt"):
                lines += path.read_text(errors="replace").splitlines()[:2000]
    return [line for line in lines if line] or [f"step {i} loss {i * 0.001:.4f}" for i in range(5000)]


def _batches() -> dict[str, dict[str, Any]]:
    lines = _lines()
    ts = 1_795_428_000 * 10**9
    logs = [{"ts_ns": ts + i, "line": lines[i % len(lines)], "stream": "stdout", "level": ""} for i in range(BATCH)]
    metrics = [
        {"ts_ns": ts + i, "step": i, "values": {f"m{j}": i * 0.001 + j for j in range(10)}} for i in range(BATCH)
    ]
    head = {
        "v": 1,
        "v_minor": 0,
        "producer": "p" * 32,
        "seq": 1,
        "run": "r" * 16,
        "node": "node-1",
        "rank": 0,
        "sent_ns": ts,
    }
    return {
        "logs": {**head, "kind": "logs", "records": logs},
        "metrics": {**head, "kind": "metrics", "records": metrics},
    }


CODECS: dict[str, tuple[Callable[[Any], bytes], Callable[[bytes], Any]]] = {
    "msgpack (msgspec)": (msgspec.msgpack.Encoder().encode, msgspec.msgpack.Decoder().decode),
    "msgpack (msgpack-python)": (
        lambda o: msgpack.packb(o, use_bin_type=True),
        lambda b: msgpack.unpackb(b, raw=False),
    ),
    "orjson": (orjson.dumps, orjson.loads),
    "json": (lambda o: json.dumps(o).encode(), json.loads),
}


def _nan_survives(enc: Callable[[Any], bytes], dec: Callable[[bytes], Any]) -> bool:
    try:
        back = dec(enc({"a": math.nan, "b": math.inf}))
    except Exception:  # noqa: BLE001 - a codec that refuses NaN does not keep it
        return False
    return isinstance(back["a"], float) and math.isnan(back["a"]) and back["b"] == math.inf


def main() -> None:
    results: list[dict[str, Any]] = []
    for kind, doc in _batches().items():
        for name, (enc, dec) in CODECS.items():
            data = enc(doc)
            t0 = time.perf_counter()
            for _ in range(REPEAT):
                enc(doc)
            t1 = time.perf_counter()
            for _ in range(REPEAT):
                dec(data)
            t2 = time.perf_counter()
            results.append(
                {
                    "kind": kind,
                    "codec": name,
                    "bytes_per_record": len(data) / BATCH,
                    "encode_records_per_s": BATCH * REPEAT / (t1 - t0),
                    "decode_records_per_s": BATCH * REPEAT / (t2 - t1),
                    "nan_inf_round_trip": _nan_survives(enc, dec),
                }
            )
    print(f"{'kind':8} {'codec':25} {'B/rec':>7} {'encode rec/s':>14} {'decode rec/s':>14}  NaN/Inf kept")
    for r in results:
        print(
            f"{r['kind']:8} {r['codec']:25} {r['bytes_per_record']:7.1f} {r['encode_records_per_s']:14,.0f} "
            f"{r['decode_records_per_s']:14,.0f}  {r['nan_inf_round_trip']}"
        )
    out = ROOT / "bench" / "results" / "codec.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "machine": platform.machine(),
                "cpus": __import__("os").cpu_count(),
                "python": platform.python_version(),
                "results": results,
            },
            indent=2,
        )
    )
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
