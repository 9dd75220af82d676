"""``runstream logs`` and ``runstream runs``: the page's search and live tail in a terminal.

They talk to a running server over the same HTTP API and websocket feed as
the page (``RUNSTREAM_URL``, ``RUNSTREAM_TOKEN``).  Log lines are printed as
stored, ANSI colours included; Ctrl-C ends a ``--follow`` cleanly (exit 130,
no traceback).
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any, TextIO

from runstream.errors import RunstreamError

DIM, RESET = "\x1b[2m", "\x1b[0m"
LEVEL_COLOURS = {"WARNING": "\x1b[33m", "ERROR": "\x1b[31m", "CRITICAL": "\x1b[1;31m"}
PAGE_LINES = 1000


class ClientError(RunstreamError):
    """The server refused a request or could not be reached; the message says why."""


def _get(url: str, token: str, path: str, params: dict[str, Any], timeout_s: float = 30.0) -> Any:
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v not in (None, "")})
    request = urllib.request.Request(f"{url.rstrip('/')}{path}" + (f"?{query}" if query else ""),
                                     headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
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


def format_line(line: dict[str, Any], colour: bool) -> str:
    """One log line as the terminal shows it: time, node:rank, level, then the text as stored."""
    where = f"{line.get('node', '')}:{line.get('rank', '')}"
    level = line.get("level") or ""
    if not colour:
        return f"{line.get('ts', '')} {where} {level + ' ' if level else ''}{line.get('line', '')}"
    lvl = f"{LEVEL_COLOURS.get(level, '')}{level}{RESET} " if level else ""
    return f"{DIM}{line.get('ts', '')} {where}{RESET} {lvl}{line.get('line', '')}{RESET if colour else ''}"


def search(url: str, token: str, run: str, grep: str | None, since: str | None, node: str | None
           ) -> Iterator[dict[str, Any]]:
    """Every stored line matching the filters, oldest first (pages through the API's cursor)."""
    cursor = None
    path = f"/api/runs/{urllib.parse.quote(run, safe='')}/logs"
    while True:
        page = _get(url, token, path, {"q": grep, "since": since, "node": node, "limit": PAGE_LINES,
                                       "cursor": cursor})
        yield from page["lines"]
        cursor = page.get("next_cursor")
        if not cursor:
            return


def follow(url: str, token: str, run: str, grep: str | None, node: str | None, tail: int) -> Iterator[dict[str, Any]]:
    """The newest ``tail`` matching lines, then every new one as it arrives (blocks; Ctrl-C ends it).

    Reconnects after a lost connection and resumes from the last cursor, so nothing is missed or repeated.
    """
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    ws_url = url.rstrip("/").replace("http://", "ws://", 1).replace("https://", "wss://", 1) + "/ws"
    filters: dict[str, Any] = {"limit": tail}
    if grep:
        filters["q"] = grep
    if node:
        filters["node"] = node
    cursor = None
    while True:
        try:
            with connect(ws_url, additional_headers={"Authorization": f"Bearer {token}"}, max_size=None) as ws:
                ws.send(json.dumps({"op": "subscribe", "sub": "cli", "run": run, "stream": "logs",
                                    "filters": filters, "cursor": cursor}))
                for message in ws:
                    frame = json.loads(message)
                    if frame.get("type") == "error":
                        raise ClientError(f"the feed refused: {frame.get('error')}")
                    cursor = frame.get("cursor", cursor)
                    if frame.get("type") == "dropped":
                        ws.send(json.dumps({"op": "subscribe", "sub": "cli", "run": run, "stream": "logs",
                                            "filters": filters, "cursor": cursor}))
                        continue
                    yield from frame.get("items", [])
        except InvalidStatus as exc:
            raise ClientError(f"the feed refused the connection ({exc.response.status_code}); "
                              "check RUNSTREAM_TOKEN") from None
        except (ConnectionClosed, OSError) as exc:
            if cursor is None:
                raise ClientError(f"cannot reach the feed at {ws_url} ({exc})") from None
            import time

            time.sleep(1.0)  # the server restarts or the network blinked: resume from the cursor


def logs_command(url: str, token: str, run: str, *, follow_: bool, grep: str | None, since: str | None,
                 node: str | None, tail: int = 100, out: TextIO | None = None) -> int:
    """Print a run's lines (``--follow``: and keep printing new ones); the process exit code."""
    out = out or sys.stdout
    colour = out.isatty()
    lines = follow(url, token, run, grep, node, tail) if follow_ else search(url, token, run, grep, since, node)
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
    rows = [("STATUS", "ID", "NAME", "PROJECT", "STARTED", "DURATION_S")]
    rows += [(r["status"], r["id"], r["name"], r["project"], r.get("started_at") or "",
              "" if r.get("duration_s") is None else f"{r['duration_s']:.0f}") for r in runs]
    widths = [min(40, max(len(str(row[i])) for row in rows)) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(str(v)[:40].ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n")
    return 0
