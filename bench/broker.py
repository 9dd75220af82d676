"""What a batch of log lines costs the broker and its clients, per record batch compression.

Starts the embedded broker (Tansu, memory storage) on a free port, produces
``--envelopes`` log envelopes of 1000 real training-log lines (the real-logs
corpus, encoded with ``runstream.wire``) to one partition, then fetches them
all back, once per compression type.  CPU time is read per process: the
broker's from ``/proc``, the client's from ``time.process_time``, so other
work on the machine changes the figures less than it would wall time.

Prints µs of CPU per log line for producing and for fetching, broker and
client, and the bytes per line on the wire; writes bench/results/broker.json.

    python bench/broker.py [--envelopes 300] [--repeat 2]
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
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import logging  # noqa: E402

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402
from aiokafka.codec import gzip_encode, lz4_encode  # noqa: E402

from runstream import kafka, wire  # noqa: E402
from runstream.embedded import tansu_binary  # noqa: E402

REAL_LOGS = ROOT.parent / "shared" / "data" / "real-logs"
LINES_PER_ENVELOPE = 1000
COMPRESSIONS = (None, "lz4", "zstd", "gzip")
#: How each compression shrinks one message value (the size on the wire, less the batch framing); zstd at the
#: level runstream's producers use (importing ``runstream.kafka`` sets it for the producers here too).
ENCODERS: dict[str | None, Any] = {None: bytes, "lz4": lz4_encode, "zstd": kafka.zstd_encode, "gzip": gzip_encode}


def corpus() -> list[str]:
    lines: list[str] = []
    for path in sorted(REAL_LOGS.iterdir()):
        if path.suffix in (".log", ".out", ".txt"):
            lines += [line for line in path.read_text(encoding="utf-8", errors="replace").split("\n") if line]
    if not lines:
        raise SystemExit(f"no logs under {REAL_LOGS}")
    return lines


def envelopes(n: int) -> list[bytes]:
    lines = corpus()
    out = []
    t0 = time.time_ns()
    for seq in range(n):
        first = seq * LINES_PER_ENVELOPE
        records = [
            {"ts_ns": t0 + first + i, "line": lines[(first + i) % len(lines)], "stream": "stdout", "level": ""}
            for i in range(LINES_PER_ENVELOPE)
        ]
        env = wire.Envelope(
            kind="logs", producer="bench", seq=seq, run="bench-run", node="node-1", rank=0, sent_ns=t0, records=records
        )
        out.append(wire.encode(env))
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def one(compression: str | None, values: list[bytes]) -> dict[str, Any]:
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    broker = subprocess.Popen(
        [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    bootstrap = f"127.0.0.1:{port}"
    try:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks=1,
            linger_ms=5,
            max_request_size=16 * 1024 * 1024,
            compression_type=compression,
        )
        for _ in range(100):
            try:
                await producer.start()
                break
            except Exception:  # noqa: BLE001 - the broker is still starting
                await asyncio.sleep(0.1)
        else:
            raise SystemExit("the broker did not start")
        await producer.send_and_wait("bench", b"warm-up", key=b"k")
        b0, c0 = proc_cpu_s(broker.pid), time.process_time()
        futures = [await producer.send("bench", value, key=b"k") for value in values]
        await asyncio.gather(*futures)
        b1, c1 = proc_cpu_s(broker.pid), time.process_time()
        await producer.stop()

        consumer = AIOKafkaConsumer(
            "bench",
            bootstrap_servers=bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=16 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
            fetch_max_wait_ms=50,
        )
        await consumer.start()
        got = 0
        b2, c2 = proc_cpu_s(broker.pid), time.process_time()
        deadline = time.monotonic() + 120
        while got < len(values) + 1 and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=1000)
            got += sum(len(msgs) for msgs in batch.values())
        b3, c3 = proc_cpu_s(broker.pid), time.process_time()
        await consumer.stop()
        if got < len(values) + 1:
            raise SystemExit(f"fetched {got} of {len(values) + 1} messages")
    finally:
        broker.terminate()
        broker.wait(10)
    lines = len(values) * LINES_PER_ENVELOPE
    return {
        "compression": compression or "none",
        "produce_broker_us": 1e6 * (b1 - b0) / lines,
        "produce_client_us": 1e6 * (c1 - c0) / lines,
        "fetch_broker_us": 1e6 * (b3 - b2) / lines,
        "fetch_client_us": 1e6 * (c3 - c2) / lines,
        "value_bytes_per_line": sum(map(len, map(ENCODERS[compression], values))) / lines,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envelopes", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=2, help="runs per compression (the median is shown)")
    args = parser.parse_args()
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # "unable to connect" while the broker starts
    values = envelopes(args.envelopes)
    runs: dict[str, list[dict[str, Any]]] = {}
    for _ in range(args.repeat):  # interleaved, so a busy moment of the machine hits every codec alike
        for compression in COMPRESSIONS:
            result = asyncio.run(one(compression, values))
            runs.setdefault(result["compression"], []).append(result)
    keys = ("produce_broker_us", "produce_client_us", "fetch_broker_us", "fetch_client_us", "value_bytes_per_line")
    table = [
        {"compression": name, **{k: statistics.median(r[k] for r in rs) for k in keys}} for name, rs in runs.items()
    ]
    print(
        f"{args.envelopes} envelopes of {LINES_PER_ENVELOPE} real log lines; CPU µs per line (median of {args.repeat})"
    )
    print(f"{'compression':12} {'produce: broker':>16} {'client':>8} {'fetch: broker':>14} {'client':>8} {'B/line':>8}")
    for row in table:
        print(
            f"{row['compression']:12} {row['produce_broker_us']:16.2f} {row['produce_client_us']:8.2f} "
            f"{row['fetch_broker_us']:14.2f} {row['fetch_client_us']:8.2f} {row['value_bytes_per_line']:8.1f}"
        )
    out = ROOT / "bench" / "results" / "broker.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "machine": {
                    "python": platform.python_version(),
                    "cpus": os.cpu_count(),
                    "platform": platform.platform(),
                    "loadavg_1m_at_start": os.getloadavg()[0],
                },
                "envelopes": args.envelopes,
                "lines_per_envelope": LINES_PER_ENVELOPE,
                "results": table,
            },
            indent=2,
        )
    )
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
