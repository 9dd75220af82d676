"""Live-page freshness benchmark: trainer ``print``/``run.log`` -> broker -> streams -> feed -> browser DOM.

Starts ``runstream up`` on free ports (as bench/e2e.py does) and measures, on this machine:

* browser: the run page open in headless Chromium (Playwright); a trainer
  prints one line and logs one metric point every ``--interval-ms``; a
  MutationObserver in the page records ``Date.now()`` when each line (its
  emit time is embedded in the text) reaches the live tail, and when the
  chart caption shows each point; freshness = DOM time - emit time.  The
  time each line's websocket message event fires in the page is recorded
  too: a page busy with earlier work delays that event, so a gap between
  the two rows is the page's, a late event with a short gap the server's;
  and a consumer of the bench's own records when each line reaches the raw
  and the clean logs topic (the trainer's and the stream processors' share);
* fan-out: ``--clients`` websocket clients subscribed to one run's logs, each
  timing every line it receives (per-client p50/p99; missing and duplicate
  lines and ``dropped`` frames are counted, and the histories answered only
  after the lines began: those clients' subscriptions raced the hand-off);

both while another trainer prints ``--background-rate`` lines/s into its own
run.  ``--race``: the fan-out clients subscribe while the trainer's lines
already flow (every hand-off races the lines); a client must then have every
line printed after its subscription was registered (the feed answers
messages in order, so the error answering a probe that follows the
subscription says when), and ``missing_after_subscribe`` counts those it
lacks.  ``--reconnect-ms``: each fan-out client also drops its connection
about that often and resumes from its newest cursor (the resume path).  The
browser, the clients and the server share this machine's cores, so the
figures include their competition.  Prints a table and writes
bench/results/ui_fresh.json.  A benchmark, not a test: nothing is asserted.

    python bench/ui_fresh.py [--count 200] [--interval-ms 50] [--clients 100] [--background-rate 2000]
                             [--race] [--reconnect-ms 0] [--out bench/results/ui_fresh.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e import ROOT, start_up  # noqa: E402 - the sibling benchmark's `runstream up` launcher

TARGET_P50_MS = 250
TARGET_P99_MS = 1000

#: The trainer under measurement: waits for the go file, then one line and one point per interval.
TRAINER = r"""
import os, sys, time, runstream
n, interval_s, tag, go = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
run = runstream.init(project="bench-ui", name=f"fresh-{tag}")
print("RUN_ID", run.id, file=sys.__stderr__, flush=True)
while not os.path.exists(go):
    time.sleep(0.01)
for i in range(n):
    print(f"{tag} fresh {i} {time.time_ns()}")
    t = time.time_ns()
    run.log({"fresh": i}, step=i)
    print("M", i, t, file=sys.__stderr__, flush=True)
    time.sleep(interval_s)
run.finish()
print("DONE", file=sys.__stderr__, flush=True)
"""

#: Background load: ``rate`` lines/s in batches of 1/20 s until the stop file exists.
LOAD = r"""
import os, sys, time, runstream
rate, stop = int(sys.argv[1]), sys.argv[2]
run = runstream.init(project="bench-ui", name="background")
i, tick = 0, 0.05
next_t = time.monotonic()
while not os.path.exists(stop):
    for _ in range(max(1, int(rate * tick))):
        print(f"background line {i} loss=0.{i % 9973:04d} lr=3e-4 tokens/s=123456")
        i += 1
    next_t += tick
    time.sleep(max(0.0, next_t - time.monotonic()))
run.finish()
print("LINES", i, file=sys.__stderr__, flush=True)
"""

#: Installed before the page's scripts: records when each fresh line first arrives in a websocket
#: message event, which separates the server's share from the page's (a busy page delays the event).
WS_PROBE = r"""
window.__ws = {};
const PageWebSocket = window.WebSocket;
window.WebSocket = class extends PageWebSocket {
  constructor(...args) {
    super(...args);
    this.addEventListener("message", (event) => {
      const now = Date.now();
      const fresh = / fresh (\d+) \d+/g;
      let m;
      while ((m = fresh.exec(event.data))) if (!(m[1] in window.__ws)) window.__ws[m[1]] = now;
    });
  }
};
"""

#: Installed in the page: records when each fresh line and each chart value first appears.
OBSERVER = r"""
(tag) => {
  window.__lines = {};
  window.__points = {};
  const line = new RegExp("^" + tag + " fresh (\\d+) (\\d+)$");
  const caption = /last (\d+) ·/;
  const scan = () => {
    const now = Date.now();
    for (const el of document.querySelectorAll(".logview .text")) {
      const m = line.exec(el.textContent);
      if (m && !(m[1] in window.__lines)) window.__lines[m[1]] = [now, m[2]];
    }
    const cap = document.querySelector("figure.card[data-metric='fresh'] figcaption");
    const m = cap && caption.exec(cap.textContent);
    if (m && !(m[1] in window.__points)) window.__points[m[1]] = now;
  };
  new MutationObserver(scan).observe(document.body, { childList: true, subtree: true, characterData: true });
  scan();
}
"""

_CHROMIUM = ("/usr/lib/chromium/chromium-headless-shell", "/usr/lib/chromium/chromium", "/usr/bin/chromium")


def chromium() -> str:
    found = os.environ.get("RUNSTREAM_CHROMIUM") or next((c for c in _CHROMIUM if Path(c).exists()), None)
    if not found:
        found = shutil.which("chromium")
    if not found:
        raise SystemExit("no Chromium found (set RUNSTREAM_CHROMIUM)")
    return found


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def summary(latencies_ms: list[float], expected: int) -> dict[str, Any]:
    return {
        "samples": len(latencies_ms),
        "expected": expected,
        "p50_ms": statistics.median(latencies_ms) if latencies_ms else None,
        "p99_ms": pct(latencies_ms, 0.99),
        "max_ms": max(latencies_ms) if latencies_ms else None,
    }


class Trainer:
    """The measured trainer process: started at once, emitting only after :meth:`go`."""

    def __init__(self, kafka: str, count: int, interval_s: float, work: Path) -> None:
        self.tag = f"F{uuid.uuid4().hex[:8]}"
        self.go_file = work / f"go-{self.tag}"
        env = {**os.environ, "RUNSTREAM_KAFKA": kafka, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", TRAINER, str(count), str(interval_s), self.tag, str(self.go_file)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.metric_emit_ns: dict[int, int] = {}
        assert self.proc.stderr is not None
        self.run_id = ""
        for line in self.proc.stderr:  # the SDK may write a note (no GPU) before the marker
            if line.startswith("RUN_ID "):
                self.run_id = line.split()[1]
                break
        if not self.run_id:
            raise SystemExit("the trainer did not start")
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            parts = line.split()
            if len(parts) == 3 and parts[0] == "M":
                self.metric_emit_ns[int(parts[1])] = int(parts[2])

    def go(self) -> None:
        self.go_file.touch()

    def wait(self) -> None:
        self.proc.wait(120)
        self._reader.join(10)


class TopicTap:
    """Records when each fresh line of a trainer reaches the raw and the clean logs topic.

    A consumer of its own (no group, from the end offsets) in a thread, fetching
    as the live feed does; it splits a line's way to the page into trainer +
    broker (raw), stream processors (clean) and the UI server plus page (rest).
    """

    def __init__(self, kafka: str, tag: str) -> None:
        from runstream.topics import Topics

        topics = Topics()
        self.kafka = kafka
        self.names = {topics.raw("logs"): "raw", topics.clean("logs"): "clean"}
        self.pattern = re.compile(rf"^{tag} fresh (\d+) \d+$")
        self.seen: dict[str, dict[int, int]] = {"raw": {}, "clean": {}}
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        if not self.ready.wait(60):
            raise SystemExit("the topic tap did not start")

    async def _run(self) -> None:
        from runstream import kafka, wire

        consumer = kafka.make_consumer(self.kafka, [], None, auto_offset_reset="latest", fetch_max_wait_ms=40)
        await consumer.start()
        try:
            await kafka.assign_partitions(consumer, list(self.names), set(), at_end=True)
            self.ready.set()
            while not self._stop.is_set():
                batch = await consumer.getmany(timeout_ms=50)
                now = time.time_ns()
                for tp, messages in batch.items():
                    hop = self.seen[self.names[tp.topic]]
                    for message in messages:
                        try:
                            envelope = wire.decode(message.value or b"")
                        except Exception:  # noqa: BLE001 - not ours to judge; the sink dead-letters it
                            continue
                        for record in envelope.records:
                            m = self.pattern.match(str(record.get("line", ""))) if isinstance(record, dict) else None
                            if m:
                                hop.setdefault(int(m.group(1)), now)
        finally:
            await consumer.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def browser_phase(url: str, token: str, kafka: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Freshness to the run page's DOM: log lines in the tail, points in the chart caption."""
    from playwright.sync_api import sync_playwright

    trainer = Trainer(kafka, args.count, args.interval_ms / 1000, work)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.add_init_script(WS_PROBE)
        page.goto(f"{url}/?token={token}")
        page.goto(f"{url}/runs/{trainer.run_id}")
        page.wait_for_selector(".bar .status:text('live')", timeout=60_000)
        page.evaluate(OBSERVER, trainer.tag)
        tap = TopicTap(kafka, trainer.tag)
        trainer.go()
        deadline = time.monotonic() + args.count * args.interval_ms / 1000 + 60
        while time.monotonic() < deadline:
            got = page.evaluate("[Object.keys(window.__lines).length, Object.keys(window.__points).length]")
            if got[0] >= args.count and got[1] >= 1 and trainer.proc.poll() is not None:
                break
            time.sleep(0.5)
        time.sleep(1.0)  # the last chart values
        lines, points, arrived = page.evaluate("[window.__lines, window.__points, window.__ws]")
        browser.close()
    tap.stop()
    trainer.wait()
    line_ms = [seen - int(emit_ns) / 1e6 for seen, emit_ns in lines.values()]
    ws_ms = [arrived[i] - int(emit_ns) / 1e6 for i, (_, emit_ns) in lines.items() if i in arrived]
    emitted = {int(i): int(emit_ns) for i, (_, emit_ns) in lines.items()}
    hop_ms = {
        hop: [(at - emitted[i]) / 1e6 for i, at in seen.items() if i in emitted] for hop, seen in tap.seen.items()
    }
    point_ms = [
        seen - trainer.metric_emit_ns[int(i)] / 1e6 for i, seen in points.items() if int(i) in trainer.metric_emit_ns
    ]
    # The caption shows the newest value only: a point replaced before a repaint is never seen,
    # so the point figures cover the values that were shown.
    return {
        "raw_topic": summary(hop_ms["raw"], args.count),
        "clean_topic": summary(hop_ms["clean"], args.count),
        "ws_message": summary(ws_ms, args.count),
        "lines": summary(line_ms, args.count),
        "points": summary(point_ms, args.count),
    }


async def _client(
    ws_url: str,
    token: str,
    run_id: str,
    tag: str,
    ready: asyncio.Event,
    subscribed: list[int],
    started: list[float],
    out: dict[str, Any],
    count: int,
    timeout_s: float,
    reconnect_s: float = 0.0,
) -> None:
    """One fan-out client; gives up ``timeout_s`` after the trainer started (``started[0]``, monotonic).

    ``reconnect_s`` > 0: the client drops its connection after a random 0.5-1.5x that time,
    again and again, and resubscribes with the newest cursor it got (a page that reconnects).
    """
    import random

    from websockets.asyncio.client import connect

    pattern = re.compile(rf"^{tag} fresh (\d+) (\d+)$")
    seen: dict[int, float] = {}
    dropped = duplicates = reconnects = 0
    history_at = None
    registered_ns = None
    cursor: str | None = None
    last_at = None
    done = False
    while not done:
        async with connect(ws_url, additional_headers={"Authorization": f"Bearer {token}"}, max_size=None) as ws:
            message: dict[str, Any] = {"op": "subscribe", "sub": "s", "run": run_id, "stream": "logs"}
            message.update({"cursor": cursor} if cursor else {"filters": {"limit": 1}})
            await ws.send(json.dumps(message))
            # The feed handles a connection's messages in order: the error answering this probe comes
            # after the subscription was registered (its time bounds the registration from above).
            await ws.send(json.dumps({"op": "unsubscribe", "sub": "probe"}))
            if registered_ns is None:
                subscribed[0] += 1
                if subscribed[0] == subscribed[1]:
                    ready.set()
            drop_at = time.monotonic() + reconnect_s * random.uniform(0.5, 1.5) if reconnect_s else None
            while True:
                if len(seen) >= count:
                    done = True
                    break
                # Counted from the trainer's start: clients that connected early must not give up first.
                left = (started[0] or time.monotonic()) + timeout_s - time.monotonic()
                if last_at is None and count - 1 in seen:
                    last_at = time.monotonic()  # a client that joined late never sees every line: wait 2 s more
                if last_at is not None:
                    left = min(left, last_at + 2.0 - time.monotonic())
                if left <= 0:
                    done = True
                    break
                if drop_at is not None and started[0] and time.monotonic() >= drop_at and cursor:
                    reconnects += 1
                    break
                wait = left if drop_at is None else min(left, max(0.0, drop_at - time.monotonic()))
                try:
                    raw = await asyncio.wait_for(ws.recv(), max(0.05, wait))
                except TimeoutError:
                    continue
                now = time.time_ns()
                frame = json.loads(raw)
                if frame.get("type") == "error" and frame.get("sub") == "probe":
                    registered_ns = registered_ns or now
                    continue
                if frame.get("cursor"):
                    cursor = frame["cursor"]
                if frame.get("last") and history_at is None:
                    history_at = time.monotonic()
                if frame.get("type") == "dropped":
                    dropped += 1
                    await ws.send(json.dumps({**message, "cursor": frame.get("cursor"), "filters": None}))
                for item in frame.get("items") or ():
                    m = pattern.match(item.get("line", ""))
                    if m:
                        duplicates += int(m.group(1)) in seen
                        seen.setdefault(int(m.group(1)), (now - int(m.group(2))) / 1e6)
    out["seen"] = seen
    out["dropped"] = dropped
    out["duplicates"] = duplicates
    out["reconnects"] = reconnects
    out["history_at"] = history_at
    out["registered_ns"] = registered_ns


def must_have(emit_ns: dict[int, int], registered_ns: int | None, count: int) -> set[int]:
    """The lines a client must have: those printed after its subscription was registered.

    Line ``i`` is printed after the point ``i - 1`` was timed (the trainer's
    ``M`` line), so it was surely printed after ``registered_ns`` when that
    point was.  Without a registration time, none can be required.
    """
    if registered_ns is None:
        return set()
    return {i for i in range(1, count) if emit_ns.get(i - 1, 0) > registered_ns}


def fanout_phase(url: str, token: str, kafka: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """``--clients`` websocket clients on one run: per-client freshness, missing lines, dropped frames."""
    trainer = Trainer(kafka, args.count, args.interval_ms / 1000, work)
    ws_url = url.replace("http://", "ws://") + "/ws"

    async def go(started: list[float]) -> list[dict[str, Any]]:
        ready = asyncio.Event()
        subscribed = [0, args.clients]
        outs: list[dict[str, Any]] = [{} for _ in range(args.clients)]
        timeout_s = args.count * args.interval_ms / 1000 + 60
        tasks = [
            asyncio.create_task(
                _client(
                    ws_url,
                    token,
                    trainer.run_id,
                    trainer.tag,
                    ready,
                    subscribed,
                    started,
                    outs[i],
                    args.count,
                    timeout_s,
                    args.reconnect_ms / 1000,
                )
            )
            for i in range(args.clients)
        ]
        await asyncio.wait_for(ready.wait(), 60)
        if not args.race:
            await asyncio.sleep(1.0)  # every subscription's history answered
            started[0] = time.monotonic()
            trainer.go()
        await asyncio.gather(*tasks)
        return outs

    started: list[float] = [0.0]
    if args.race:
        # The lines flow first; the clients subscribe a quarter into them, all at once.
        trainer.go()
        started[0] = time.monotonic()
        time.sleep(args.count * args.interval_ms / 4000)
    outs = asyncio.run(go(started))
    trainer.wait()
    required = [must_have(trainer.metric_emit_ns, o.get("registered_ns"), args.count) for o in outs]
    lacking = [sorted(r - set(o["seen"])) for r, o in zip(required, outs, strict=True)]
    per_client = [sorted(o["seen"].values()) for o in outs]
    every = [v for c in per_client for v in c]
    return {
        "clients": args.clients,
        "all": summary(every, args.count * args.clients),
        "client_p50_ms": {
            "best": min(statistics.median(c) for c in per_client if c),
            "worst": max(statistics.median(c) for c in per_client if c),
        },
        "client_p99_ms": {
            "best": min(pct(c, 0.99) or 0 for c in per_client if c),
            "worst": max(pct(c, 0.99) or 0 for c in per_client if c),
        },
        "race": bool(args.race),
        "missing_lines": sum(args.count - len(o["seen"]) for o in outs),
        # Lines printed after the client's subscription was registered that it never got: a loss.
        "required_lines": sum(len(r) for r in required),
        "missing_after_subscribe": sum(len(m) for m in lacking),
        "clients_missing_after_subscribe": sum(bool(m) for m in lacking),
        "missing_examples": [m[:10] for m in lacking if m][:5],
        "clients_complete": sum(len(o["seen"]) == args.count for o in outs),
        "dropped_frames": sum(o["dropped"] for o in outs),
        "reconnects": sum(o["reconnects"] for o in outs),
        "duplicate_lines": sum(o["duplicates"] for o in outs),
        # Histories answered after the trainer started: lines flowed while they were read (the
        # hand-off race a late history must survive with no line missing).
        "late_histories": sum(o["history_at"] is None or o["history_at"] > started[0] for o in outs),
    }


def background(kafka: str, rate: int, work: Path) -> tuple[subprocess.Popen[str], Path]:
    stop = work / "stop-load"
    env = {**os.environ, "RUNSTREAM_KAFKA": kafka, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", LOAD, str(rate), str(stop)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, stop


def fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}"


def report(result: dict[str, Any]) -> None:
    b, f = result["browser"], result["fanout"]
    print(f"{'live page freshness (ms), under background load':52} {'p50':>6} {'p99':>6} {'max':>6} {'seen':>11}")
    for label, s in (
        ("print -> raw logs topic (trainer, broker)", b["raw_topic"]),
        ("print -> clean logs topic (+ stream processors)", b["clean_topic"]),
        ("print -> websocket message event in the page", b["ws_message"]),
        ("print -> line in the browser's tail", b["lines"]),
        ("run.log -> value in the browser's chart", b["points"]),
        (f"print -> {f['clients']} websocket clients (all lines)", f["all"]),
    ):
        print(
            f"{label:52} {fmt(s['p50_ms']):>6} {fmt(s['p99_ms']):>6} {fmt(s['max_ms']):>6} "
            f"{s['samples']:>5}/{s['expected']:<5}"
        )
    print(
        f"per-client p50 best/worst {f['client_p50_ms']['best']:.0f}/{f['client_p50_ms']['worst']:.0f} ms, "
        f"p99 best/worst {f['client_p99_ms']['best']:.0f}/{f['client_p99_ms']['worst']:.0f} ms; "
        f"{f['clients_complete']}/{f['clients']} clients got every line, {f['missing_lines']} missing, "
        f"{f['duplicate_lines']} duplicates, {f['dropped_frames']} dropped frames; "
        f"{f['late_histories']} histories answered after the lines began"
    )
    print(
        f"race={f['race']}, {f['reconnects']} reconnects: {f['missing_after_subscribe']} of "
        f"{f['required_lines']} lines printed after a subscription was registered never reached it "
        f"({f['clients_missing_after_subscribe']} clients)"
    )
    print(
        f"background load {result['background']['rate_per_s']} lines/s "
        f"({result['background']['lines']} lines); targets p50 < {TARGET_P50_MS} ms, p99 < {TARGET_P99_MS} ms; "
        f"load average {result['machine']['load_avg_1m']['before']:.1f} before, "
        f"{result['machine']['load_avg_1m']['after']:.1f} after on {result['machine']['cpus']} CPUs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200, help="lines (and points) the measured trainer emits")
    parser.add_argument("--interval-ms", type=float, default=50)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--background-rate", type=int, default=2000, help="background lines/s (0: none)")
    parser.add_argument("--race", action="store_true", help="fan-out clients subscribe while the lines already flow")
    parser.add_argument(
        "--reconnect-ms",
        type=float,
        default=0,
        help="fan-out clients drop and resume (from their cursor) about this often (0: never)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ui_fresh.json")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="rs-uibench-") as tmp:
        work = Path(tmp)
        proc, api, kafka = start_up(work / "data")
        load = stop = None
        try:
            if args.background_rate:
                load, stop = background(kafka, args.background_rate, work)
                time.sleep(2.0)  # the load is flowing before anything is measured
            browser = browser_phase(api.url, api.token, kafka, args, work)
            fanout = fanout_phase(api.url, api.token, kafka, args, work)
        finally:
            lines = 0
            if load is not None and stop is not None:
                stop.touch()
                _, err = load.communicate(timeout=120)
                lines = int(next((ln.split()[1] for ln in err.splitlines() if ln.startswith("LINES ")), 0))
            proc.send_signal(signal.SIGTERM)
            proc.wait(300)
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            # Other work on the machine competes with the measured processes: the 1-minute load
            # average before and after the run says how much.
            "load_avg_1m": {"before": load_before, "after": os.getloadavg()[0]},
        },
        "settings": {
            "count": args.count,
            "interval_ms": args.interval_ms,
            "clients": args.clients,
            "race": bool(args.race),
            "reconnect_ms": args.reconnect_ms,
        },
        "background": {"rate_per_s": args.background_rate, "lines": lines},
        "browser": browser,
        "fanout": fanout,
        "targets_ms": {"p50": TARGET_P50_MS, "p99": TARGET_P99_MS},
    }
    report(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


if __name__ == "__main__":
    main()
