"""What an idle ``runstream up`` costs: CPU of each process while nothing is sent.

Starts ``runstream up`` on free ports (fresh data dir) once per partition
count asked for, waits until it is ready and ``--settle-s`` more, then reads
each child process's CPU time (``/proc/PID/stat``: user + system, threads
included) over ``--seconds`` and reports it as a percentage of one core.  Idle
consumers still poll the broker (each fetch waits at most 40-50 ms), and the
broker's work per fetch grows with the partitions it names, so this is the
floor every other benchmark's CPU figures stand on.  Linux only.

    python bench/idle.py [--partitions 1,4] [--seconds 20] [--settle-s 10]

Prints a table and writes bench/results/idle.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_READY = re.compile(r"runstream is up: http://")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _role(pid: int) -> str:
    """A short name for a child of ``runstream up`` from its command line."""
    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    text = " ".join(part.decode(errors="replace") for part in cmd)
    if "tansu" in text:
        return "broker"
    if "-m streams" in text:
        return "stream worker"
    if "-m ui.serve" in text:
        return "sink + API"
    return text[:40]


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def measure(partitions: int, seconds: float, settle_s: float) -> dict[str, float]:
    """Idle CPU (% of one core) of each process of one ``runstream up --partitions N``."""
    with tempfile.TemporaryDirectory(prefix="rs-idle-") as tmp:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "runstream",
                "up",
                "--data-dir",
                tmp,
                "--port",
                "0",
                "--kafka-port",
                "0",
                "--partitions",
                str(partitions),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )
        try:
            assert proc.stdout is not None
            deadline = time.monotonic() + 180
            for line in proc.stdout:
                if _READY.search(line):
                    break
                if time.monotonic() > deadline:
                    raise SystemExit("runstream up did not start")
            else:
                raise SystemExit("runstream up exited before it was ready")
            time.sleep(settle_s)
            pids = _children(proc.pid)
            before = {pid: _cpu_s(pid) for pid in pids}
            time.sleep(seconds)
            after = {pid: _cpu_s(pid) for pid in pids}
            return {_role(pid): round((after[pid] - before[pid]) / seconds * 100, 1) for pid in pids}
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--partitions", default="1,4", help="comma-separated partition counts (default 1,4)")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long CPU is counted (default 20)")
    parser.add_argument("--settle-s", type=float, default=10.0, help="wait after ready before counting")
    args = parser.parse_args()
    rows = []
    for n in (int(x) for x in args.partitions.split(",")):
        cpu = measure(n, args.seconds, args.settle_s)
        rows.append({"partitions": n, "cpu_pct_of_core": cpu, "total_pct": round(sum(cpu.values()), 1)})
    roles = ["broker", "stream worker", "sink + API"]
    print(f"{'idle runstream up, % of one core':34}" + "".join(f"{r:>15}" for r in roles) + f"{'total':>10}")
    for row in rows:
        cells = "".join(f"{row['cpu_pct_of_core'].get(r, 0.0):>15.1f}" for r in roles)
        print(f"{'partitions per topic: ' + str(row['partitions']):34}{cells}{row['total_pct']:>10.1f}")
    out = ROOT / "bench" / "results" / "idle.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                },
                "seconds": args.seconds,
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
