"""``runstream logs`` and ``runstream runs``: the page's search and live tail in a terminal.

They talk to a running server over the same HTTP API and websocket feed as
the page (``RUNSTREAM_URL``, ``RUNSTREAM_TOKEN``).  Log lines are printed as
stored, ANSI colours included; Ctrl-C ends a ``--follow`` cleanly (exit 130,
no traceback).
"""

from __future__ import annotations

import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any, TextIO

from runstream.errors import RunstreamError
from ui.filters import MAX_LIMIT

DIM, RESET = "\x1b[2m", "\x1b[0m"
LEVEL_COLOURS = {"WARNING": "\x1b[33m", "ERROR": "\x1b[31m", "CRITICAL": "\x1b[1;31m"}
PAGE_LINES = 1000

#: Colour and style (SGR) sequences, the only escape sequences a stored line may send to the terminal.
_SGR = r"\x1b\[[0-9;:]*m"
#: Everything else that steers a terminal: other CSI sequences (cursor moves, screen clears), OSC
#: strings (window title, clipboard writes via OSC 52, hyperlinks) ended by BEL or ST, other ESC
#: sequences, C1 controls and the C0 controls but tab and newline (carriage return, bell, backspace).
_UNSAFE = re.compile(
    _SGR
    + r"|\x1b\[[0-?]*[ -/]*[@-~]|\x9b[0-?]*[ -/]*[@-~]"
    + r"|\x1b[\]PX^_].*?(?:\x07|\x1b\\|$)"
    + r"|\x1b[ -/]*[0-~]?"
    + r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]",
    re.DOTALL,
)


class ClientError(RunstreamError):
    """The server refused a request or could not be reached; the message says why."""


def _get(url: str, token: str, path: str, params: dict[str, Any], timeout_s: float = 30.0) -> Any:
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v not in (None, "")})
    request = urllib.request.Request(
        f"{url.rstrip('/')}{path}" + (f"?{query}" if query else ""),
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        try:
            reason = json.loads(exc.read()).get("error", "")
        except ValueError:
            reason = ""
        raise ClientError(f"{exc.code} from {url}: {reason or exc.reason}") from None
    except urllib.error.URLError as exc:
        raise ClientError(f"cannot reach {url} ({exc.reason}); is `runstream up` running? (RUNSTREAM_URL)") from None


def terminal_safe(text: str) -> str:
    """``text`` with its colours (SGR sequences) kept and every other control sequence or character removed.

    A log line is data: printed raw, an escape sequence in it could clear the
    screen, move the cursor over earlier lines, retitle the window or write
    the clipboard (OSC 52) of whoever reads the logs.
    """
    if not _UNSAFE.search(text):
        return text
    return _UNSAFE.sub(lambda m: m.group(0) if re.fullmatch(_SGR, m.group(0)) else "", text)


def format_line(line: dict[str, Any], colour: bool) -> str:
    """One log line as the terminal shows it: time, node:rank, level, then the text as stored, colours kept
    (every field passes :func:`terminal_safe`)."""
    where = terminal_safe(f"{line.get('node', '')}:{line.get('rank', '')}")
    level = terminal_safe(str(line.get("level") or ""))
    ts = terminal_safe(str(line.get("ts", "")))
    text = terminal_safe(str(line.get("line", "")))
    if not colour:
        return f"{ts} {where} {level + ' ' if level else ''}{text}"
    lvl = f"{LEVEL_COLOURS.get(level, '')}{level}{RESET} " if level else ""
    return f"{DIM}{ts} {where}{RESET} {lvl}{text}{RESET}"


def search(
    url: str, token: str, run: str, grep: str | None, since: str | None, node: str | None
) -> Iterator[dict[str, Any]]:
    """Every stored line matching the filters, oldest first (pages through the API's cursor)."""
    cursor = None
    path = f"/api/runs/{urllib.parse.quote(run, safe='')}/logs"
    while True:
        page = _get(url, token, path, {"q": grep, "since": since, "node": node, "limit": PAGE_LINES, "cursor": cursor})
        yield from page["lines"]
        cursor = page.get("next_cursor")
        if not cursor:
            return


def follow(
    url: str,
    token: str,
    run: str,
    grep: str | None,
    node: str | None,
    tail: int,
    since: str | None = None,
    err: TextIO | None = None,
) -> Iterator[dict[str, Any]]:
    """The newest ``tail`` matching lines, then every new one as it arrives (blocks; Ctrl-C ends it).

    With ``since``: every stored matching line from then on (paged, however
    many), then the live ones, none missed or repeated at the join.
    Reconnects after a lost connection and resumes from the last cursor, so
    nothing is missed or repeated.  A ``gap`` frame (storage was behind when
    the feed joined history and live) is said on ``err``.
    """
    err = err or sys.stderr
    printed_last: set[tuple[Any, ...]] = set()
    last_ts = None
    if since:
        # Every stored line first (the feed's history is bounded); the feed then goes on from the
        # last one's time, and the lines of that instant printed already are skipped by content.
        for line in search(url, token, run, grep, since, node):
            if line.get("ts") != last_ts:
                last_ts, printed_last = line.get("ts"), set()
            printed_last.add(_identity(line))
            yield line
        tail = MAX_LIMIT
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    ws_url = url.rstrip("/").replace("http://", "ws://", 1).replace("https://", "wss://", 1) + "/ws"
    filters: dict[str, Any] = {"limit": tail}
    if since:
        filters["since"] = last_ts or since
    if grep:
        filters["q"] = grep
    if node:
        filters["node"] = node
    cursor = None

    def subscribe_message() -> str:
        return json.dumps(
            {"op": "subscribe", "sub": "cli", "run": run, "stream": "logs", "filters": filters, "cursor": cursor}
        )

    while True:
        try:
            with connect(ws_url, additional_headers={"Authorization": f"Bearer {token}"}, max_size=None) as ws:
                ws.send(subscribe_message())
                for message in ws:
                    frame = json.loads(message)
                    if frame.get("type") == "error":
                        raise ClientError(f"the feed refused: {frame.get('error')}")
                    cursor = frame.get("cursor", cursor)
                    if frame.get("type") == "dropped":
                        ws.send(subscribe_message())
                        continue
                    if frame.get("type") == "gap":
                        err.write(
                            "runstream logs: some lines between the stored and the live ones may be missing "
                            "(storage was behind); run the command again to read them once stored.\n"
                        )
                        err.flush()
                        continue
                    for line in frame.get("items", ()):
                        if printed_last and _identity(line) in printed_last:
                            continue
                        yield line
                    if frame.get("last"):
                        printed_last = set()  # only the history can repeat what the search printed
        except InvalidStatus as exc:
            raise ClientError(
                f"the feed refused the connection ({exc.response.status_code}); check RUNSTREAM_TOKEN"
            ) from None
        except (ConnectionClosed, OSError) as exc:
            if cursor is None:
                raise ClientError(f"cannot reach the feed at {ws_url} ({exc})") from None
            import time

            time.sleep(1.0)  # the server restarts or the network blinked: resume from the cursor


def _identity(line: dict[str, Any]) -> tuple[Any, ...]:
    """What tells two API/feed log lines apart, for the join of a search and a live tail."""
    return (line.get("ts"), line.get("node"), line.get("rank"), line.get("stream"), line.get("line"))


def logs_command(
    url: str,
    token: str,
    run: str,
    *,
    follow_: bool,
    grep: str | None,
    since: str | None,
    node: str | None,
    tail: int = 100,
    out: TextIO | None = None,
) -> int:
    """Print a run's lines (``--follow``: and keep printing new ones); the process exit code."""
    out = out or sys.stdout
    colour = out.isatty()
    lines = follow(url, token, run, grep, node, tail, since) if follow_ else search(url, token, run, grep, since, node)
    try:
        for line in lines:
            out.write(format_line(line, colour) + "\n")
            out.flush()
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    return 0


def runs_command(url: str, token: str, project: str | None = None, out: TextIO | None = None) -> int:
    """Print the run list as a table: status, id, name, project, started, duration."""
    out = out or sys.stdout
    runs = _get(url, token, "/api/runs", {"project": project})["runs"]
    rows: list[tuple[str, ...]] = [("STATUS", "ID", "NAME", "PROJECT", "STARTED", "DURATION_S")]
    rows += [
        tuple(
            terminal_safe(str(v)).replace("\n", " ")
            for v in (
                r["status"],
                r["id"],
                r["name"],
                r["project"],
                r.get("started_at") or "",
                "" if r.get("duration_s") is None else f"{r['duration_s']:.0f}",
            )
        )
        for r in runs
    ]
    widths = [min(40, max(len(str(row[i])) for row in rows)) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(str(v)[:40].ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n")
    return 0


def _health(url: str, timeout_s: float = 30.0) -> dict[str, Any]:
    """``GET /api/health``'s report, also when it answers 503 (something does not work); raises :class:`ClientError`."""
    request = urllib.request.Request(f"{url.rstrip('/')}/api/health", headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            report = json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        try:
            report = json.loads(exc.read())
        except ValueError:
            raise ClientError(f"{exc.code} from {url}: {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise ClientError(f"cannot reach {url} ({exc.reason}); is `runstream up` running? (RUNSTREAM_URL)") from None
    if not isinstance(report, dict):
        raise ClientError(f"{url}/api/health did not answer a report")
    return report


def _counters(values: Any, keys: tuple[str, ...]) -> str:
    """``key N`` for each of ``keys`` present in ``values`` (a mapping of counters)."""
    if not isinstance(values, dict):
        return ""
    return ", ".join(f"{key.replace('_', ' ')} {values[key]}" for key in keys if key in values)


def status_command(url: str, token: str, out: TextIO | None = None, dead_letters: int = 100) -> int:
    """Print what the server's components counted, and the newest dead letters by reason.

    Exit code: 0 when everything works, 1 when the health report says a part
    does not (it is printed), 2 when the server cannot be reached.
    """
    out = out or sys.stdout
    report = _health(url)
    ok = report.get("ok") is True
    out.write(f"runstream at {url}: {'ok' if ok else 'NOT OK'}\n")
    if report.get("error"):
        out.write(f"  error      {terminal_safe(str(report['error']))}\n")
    for part in ("queries", "ingest"):
        value = report.get(part)
        if value is not None:
            state = value if isinstance(value, bool) else value.get("ok") if isinstance(value, dict) else value
            detail = "" if isinstance(value, bool) or not isinstance(value, dict) else _counters(value, ("error",))
            if part == "ingest" and state is not True and not detail:
                detail = "the sink is not reading: still joining its consumer group, or the broker is unreachable"
            out.write(f"  {part:<10} {'ok' if state is True else 'NOT OK'}{f' ({detail})' if detail else ''}\n")
    sink = report.get("sink")
    if isinstance(sink, dict):
        out.write(
            "  sink       "
            + _counters(sink, ("messages", "inserts", "pending_rows", "retries", "dead_letters", "refused_rows"))
            + "\n"
        )
        rows = sink.get("rows")
        if isinstance(rows, dict) and rows:
            out.write("             rows stored: " + ", ".join(f"{t} {n}" for t, n in sorted(rows.items())) + "\n")
    live = report.get("live")
    if isinstance(live, dict):
        state = "reading" if live.get("running") else "NOT READING"
        counts = _counters(live, ("messages", "records", "undecodable", "restarts", "failures"))
        out.write(f"  live feed  {state} ({counts})\n")
    feed = report.get("feed")
    if isinstance(feed, dict):
        keys = ("connections", "records_published", "records_delivered", "records_coalesced", "records_dropped")
        out.write(f"  websocket  {_counters(feed, (*keys, 'gaps', 'catch_up_gave_up'))}\n")
    if token:
        try:
            items = _get(url, token, "/api/dlq", {"limit": dead_letters}).get("items", [])
        except ClientError as exc:
            out.write(f"  dead letters: {exc}\n")
        else:
            reasons: dict[tuple[str, str], int] = {}
            for item in items:
                key = (str(item.get("topic", "")), str(item.get("reason", "")).split(":", 1)[0])
                reasons[key] = reasons.get(key, 0) + 1
            out.write(f"  dead letters (newest {len(items)}):" + ("" if reasons else " none") + "\n")
            for (topic, reason), n in sorted(reasons.items(), key=lambda kv: -kv[1]):
                out.write(f"    {n:>5}  {terminal_safe(topic)}  {terminal_safe(reason)[:100]}\n")
    return 0 if ok else 1
