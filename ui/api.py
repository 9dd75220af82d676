"""The HTTP API and the pages, as one Starlette app (see ``HTTP API`` in the contract).

:func:`create_app` wires a query layer (any object with the methods of
:class:`QueryLayer`, normally ``sinks.queries.Queries``; this package never
imports the sinks) and ``call``, the coroutine that runs one of its methods on
the store's read lane (``store.read_call``: searches never wait behind an insert).  Every parameter is checked before a
query runs; a wrong one is answered 400 ``{"error": ...}`` naming it, a query
over its cost limits 422, storage that cannot answer 503.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Collection, Mapping
from pathlib import Path
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runstream.errors import ConfigError, QueryError, QueryLimitExceeded, StorageUnavailable
from runstream.events.logs import LEVELS, STREAMS
from runstream.events.runs import STATUSES
from ui.auth import LOCAL_HOSTS, AccessMiddleware
from ui.headers import SecurityHeadersMiddleware
from ui.params import Params, check_run_id
from ui.responses import JSON, error_response

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Third-party browser code, installed by npm (package.json), never copied into the repository.
VENDOR_DIRS = {"uplot": Path(__file__).resolve().parents[1] / "node_modules" / "uplot" / "dist"}

#: Bounds of the numeric parameters: (default, lowest, highest).
#: points starts at 3: a downsampled bucket gives up to three points (min, max, first NaN).
POINTS = (1000, 3, 10_000)
LOG_LIMIT = (500, 1, 10_000)
DLQ_LIMIT = (100, 1, 10_000)
MAX_RANK = 2**31 - 1
#: The run page's deep-linkable tabs: ``/runs/{id}/{tab}``.
RUN_TABS = ("logs", "metrics", "resources", "evaluation")

Call = Callable[..., Awaitable[Any]]
#: ``(run_id, name, points) -> {"name", "steps": [[step, ts], ...]}`` (``ui.history.History.step_times``).
StepTimes = Callable[[str, str, int], dict[str, Any]]
HealthCheck = Callable[[], Awaitable[Mapping[str, Any]]]


class QueryLayer(Protocol):
    """The read side of the store the API answers from (``sinks.queries.Queries``)."""

    def list_runs(self, project: str | None = None, status: str | None = None) -> list[dict[str, Any]]: ...

    def get_run(self, run_id: str) -> dict[str, Any] | None: ...

    def metric_series(
        self,
        run_id: str,
        name: str,
        points: int = 1000,
        since_ns: int | None = None,
        until_ns: int | None = None,
    ) -> dict[str, Any]: ...

    def metric_names(self, run_id: str) -> list[str]: ...

    def search_logs(
        self,
        run_id: str,
        q: str | None = None,
        regex: str | None = None,
        level: Any = None,
        node: str | None = None,
        rank: int | None = None,
        stream: str | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
        limit: int = 500,
        cursor: str | None = None,
        order: str = "asc",
        tag: str | None = None,
    ) -> dict[str, Any]: ...

    def dead_letters(self, limit: int = 100) -> dict[str, Any]: ...

    def resource_series(
        self, run_id: str, points: int = 1000, since_ns: int | None = None, until_ns: int | None = None
    ) -> dict[str, Any]: ...

    def alerts(self, run_id: str) -> dict[str, Any]: ...

    def evals(self, run_id: str) -> dict[str, Any]: ...

    def log_histogram(self, run_id: str, **options: Any) -> dict[str, Any]: ...

    def log_context(
        self, run_id: str, at: str, before: int = 20, after: int = 20, node: str | None = None, rank: int | None = None
    ) -> dict[str, Any]: ...

    def search_project_logs(self, **options: Any) -> dict[str, Any]: ...

    def compare_metric(
        self, run_ids: Any, name: str, points: int = 1000, since_ns: int | None = None, until_ns: int | None = None
    ) -> dict[str, Any]: ...

    def ping(self) -> bool: ...


def health_ok(report: Mapping[str, Any]) -> bool:
    """Whether a health report says everything works.

    Every other key whose value is a bool, or a mapping with an ``"ok"`` key,
    is one part (``ingest``, ``queries``, ...); the report is ok when every
    part is ok and it does not say ``"ok": false`` itself.  A report without
    parts is ok only if it says ``"ok": true``.
    """
    if report.get("ok") is False:
        return False
    parts = [
        v if isinstance(v, bool) else v["ok"]
        for k, v in report.items()
        if k != "ok" and (isinstance(v, bool) or (isinstance(v, Mapping) and "ok" in v))
    ]
    if not parts:
        return report.get("ok") is True
    return all(p is True for p in parts)


async def queries_health(queries: QueryLayer, call: Call) -> dict[str, Any]:
    """The ``queries`` part of a health report: whether a trivial query answers."""
    try:
        return {"ok": bool(await call(queries.ping))}
    except Exception as exc:  # any failure means "not working"; the reason is reported
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}


class _Handlers:
    """The API endpoints; each reads its parameters, runs one query, answers JSON."""

    def __init__(
        self,
        queries: QueryLayer,
        call: Call,
        health: HealthCheck,
        health_timeout_s: float,
        step_times: StepTimes | None = None,
    ) -> None:
        self.step_times_of = step_times
        self.queries = queries
        self.call = call
        self.health_check = health
        self.health_timeout_s = health_timeout_s

    async def health(self, request: Request) -> Response:
        try:
            report = dict(await asyncio.wait_for(self.health_check(), timeout=self.health_timeout_s))
        except asyncio.TimeoutError:
            report = {"ok": False, "error": f"health check took over {self.health_timeout_s} s"}
        except Exception as exc:  # the answer reports the failure instead of a bare 500
            log.warning("Health check failed. error=%s", type(exc).__name__)
            report = {"ok": False, "error": f"health check failed: {type(exc).__name__}"}
        ok = health_ok(report)
        report["ok"] = ok
        return JSON(report, status_code=200 if ok else 503)

    async def runs(self, request: Request) -> Response:
        params = Params(request.query_params.multi_items(), {"project", "status", "name", "tag", "sort", "order"})
        project = params.text("project", max_chars=4096)
        status = params.choice("status", STATUSES)
        extra = {
            "name": params.text("name", max_chars=1024),
            "tag": params.text("tag", max_chars=1024),
            "sort": params.text("sort", max_chars=1100),
            "order": params.choice("order", ("asc", "desc")),
        }
        extra = {k: v for k, v in extra.items() if v is not None}
        runs = await self.call(self.queries.list_runs, project=project, status=status, **extra)
        return JSON({"runs": runs})

    async def run(self, request: Request) -> Response:
        Params(request.query_params.multi_items(), ())
        run_id = check_run_id(request.path_params["run_id"])
        found = await self.call(self.queries.get_run, run_id)
        if found is None:
            return _no_run(run_id)
        return JSON(found)

    async def metrics(self, request: Request) -> Response:
        params = Params(request.query_params.multi_items(), {"name", "points", "since", "until"})
        run_id = check_run_id(request.path_params["run_id"])
        name = params.text("name", max_chars=1024)
        if name is None:
            if any(params.text(p) for p in ("points", "since", "until")):
                raise QueryError(
                    "name is required: which metric? (omit every parameter to list the run's metric names)"
                )
            names = await self.call(self.queries.metric_names, run_id)
            if not names and not await self._run_exists(run_id):
                return _no_run(run_id)
            return JSON({"names": names})
        default, low, high = POINTS
        points = params.integer("points", default=default, low=low, high=high)
        since, until = params.time_range()
        series = await self.call(
            self.queries.metric_series,
            run_id,
            name,
            points=points,
            since_ns=since,
            until_ns=until,
        )
        if not series.get("points") and not await self._run_exists(run_id):
            return _no_run(run_id)
        return JSON(series)

    async def metric_steps(self, request: Request) -> Response:
        """When each step of a metric was logged: what the page's time axis and zoom map steps with."""
        params = Params(request.query_params.multi_items(), {"name", "points"})
        run_id = check_run_id(request.path_params["run_id"])
        name = params.text("name", max_chars=1024)
        if name is None:
            raise QueryError("name is required: which metric?")
        default, low, high = POINTS
        points = params.integer("points", default=default, low=low, high=high)
        if self.step_times_of is None:
            return error_response(404, "this server does not map steps to times")
        found = await self.call(self.step_times_of, run_id, name, points)
        if not found["steps"] and not await self._run_exists(run_id):
            return _no_run(run_id)
        return JSON(found)

    async def logs(self, request: Request) -> Response:
        params = Params(
            request.query_params.multi_items(),
            {"q", "regex", "level", "node", "rank", "stream", "since", "until", "limit", "cursor", "order", "tag"},
        )
        run_id = check_run_id(request.path_params["run_id"])
        default, low, high = LOG_LIMIT
        since, until = params.time_range()
        regex = params.text("regex")
        filters = {
            "q": params.text("q"),
            "regex": regex,
            "level": params.choices("level", LEVELS),
            "node": params.text("node", max_chars=256),
            "rank": params.integer("rank", default=None, low=0, high=MAX_RANK),
            "stream": params.choice("stream", sorted(STREAMS)),
            "since_ns": since,
            "until_ns": until,
            "limit": params.integer("limit", default=default, low=low, high=high),
            "cursor": params.text("cursor"),
            "order": params.choice("order", ("asc", "desc")) or "asc",
            "tag": params.text("tag", max_chars=64),
        }
        try:
            found = await self.call(self.queries.search_logs, run_id, **filters)
        except QueryLimitExceeded:
            raise
        except QueryError as exc:
            raise _regex_error(regex, exc) from None
        if not found.get("lines") and not await self._run_exists(run_id):
            return _no_run(run_id)
        return JSON(found)

    async def dead_letters(self, request: Request) -> Response:
        params = Params(request.query_params.multi_items(), {"limit"})
        default, low, high = DLQ_LIMIT
        limit = params.integer("limit", default=default, low=low, high=high)
        return JSON(await self.call(self.queries.dead_letters, limit=limit))

    async def resources(self, request: Request) -> Response:
        params = Params(request.query_params.multi_items(), {"since", "until", "points"})
        run_id = check_run_id(request.path_params["run_id"])
        default, low, high = POINTS
        points = params.integer("points", default=default, low=low, high=high)
        since, until = params.time_range()
        found = await self.call(self.queries.resource_series, run_id, points=points, since_ns=since, until_ns=until)
        if not found["series"] and not await self._run_exists(run_id):
            return _no_run(run_id)
        return JSON(found)

    async def alerts(self, request: Request) -> Response:
        Params(request.query_params.multi_items(), ())
        run_id = check_run_id(request.path_params["run_id"])
        found = await self.call(self.queries.alerts, run_id)
        if not found["alerts"] and not await self._run_exists(run_id):
            return _no_run(run_id)
        return JSON(found)

    async def evals(self, request: Request) -> Response:
        Params(request.query_params.multi_items(), ())
        run_id = check_run_id(request.path_params["run_id"])
        found = await self.call(self.queries.evals, run_id)
        if not found["evals"] and not await self._run_exists(run_id):
            return _no_run(run_id)
        return JSON(found)

    def _log_filters(self, params: Params) -> dict[str, Any]:
        """The line filters shared by a run's logs, its histogram and the project-wide search."""
        return {
            "q": params.text("q"),
            "regex": params.text("regex"),
            "level": params.choices("level", LEVELS),
            "node": params.text("node", max_chars=256),
            "rank": params.integer("rank", default=None, low=0, high=MAX_RANK),
            "stream": params.choice("stream", sorted(STREAMS)),
            "tag": params.text("tag", max_chars=64),
        }

    async def log_histogram(self, request: Request) -> Response:
        params = Params(
            request.query_params.multi_items(),
            {"q", "regex", "level", "node", "rank", "stream", "tag", "since", "until", "buckets"},
        )
        run_id = check_run_id(request.path_params["run_id"])
        since, until = params.time_range()
        filters = self._log_filters(params)
        buckets = params.integer("buckets", default=100, low=1, high=1000)
        try:
            found = await self.call(
                self.queries.log_histogram, run_id, buckets=buckets, since_ns=since, until_ns=until, **filters
            )
        except QueryLimitExceeded:
            raise
        except QueryError as exc:
            raise _regex_error(filters["regex"], exc) from None
        if not found["total"] and not await self._run_exists(run_id):
            return _no_run(run_id)
        return JSON(found)

    async def log_context(self, request: Request) -> Response:
        params = Params(request.query_params.multi_items(), {"at", "before", "after", "node", "rank"})
        run_id = check_run_id(request.path_params["run_id"])
        at = params.text("at")
        if at is None:
            raise QueryError("at is required: the id of a line from a search answer")
        found = await self.call(
            self.queries.log_context,
            run_id,
            at,
            before=params.integer("before", default=20, low=0, high=500),
            after=params.integer("after", default=20, low=0, high=500),
            node=params.text("node", max_chars=256),
            rank=params.integer("rank", default=None, low=0, high=MAX_RANK),
        )
        if found["line"] is None and not await self._run_exists(run_id):
            return _no_run(run_id)
        return JSON(found)

    async def project_logs(self, request: Request) -> Response:
        params = Params(
            request.query_params.multi_items(),
            {
                "q",
                "regex",
                "level",
                "node",
                "rank",
                "stream",
                "tag",
                "since",
                "until",
                "project",
                "runs",
                "limit",
                "cursor",
                "order",
            },
        )
        since, until = params.time_range()
        filters = self._log_filters(params)
        runs = params.text("runs", max_chars=10_000)
        default, low, high = LOG_LIMIT
        try:
            found = await self.call(
                self.queries.search_project_logs,
                project=params.text("project", max_chars=4096),
                run_ids=[check_run_id(r) for r in runs.split(",")] if runs else None,
                limit=params.integer("limit", default=default, low=low, high=high),
                cursor=params.text("cursor"),
                order=params.choice("order", ("asc", "desc")) or "desc",
                since_ns=since,
                until_ns=until,
                **filters,
            )
        except QueryLimitExceeded:
            raise
        except QueryError as exc:
            raise _regex_error(filters["regex"], exc) from None
        return JSON(found)

    async def compare_metrics(self, request: Request) -> Response:
        params = Params(request.query_params.multi_items(), {"runs", "name", "points", "since", "until"})
        runs = params.text("runs", max_chars=10_000)
        name = params.text("name", max_chars=1024)
        if runs is None or name is None:
            raise QueryError("runs (comma-separated run ids) and name (a metric) are required")
        default, low, high = POINTS
        since, until = params.time_range()
        found = await self.call(
            self.queries.compare_metric,
            [check_run_id(r) for r in runs.split(",")],
            name,
            points=params.integer("points", default=default, low=low, high=high),
            since_ns=since,
            until_ns=until,
        )
        return JSON(found)

    async def _run_exists(self, run_id: str) -> bool:
        return await self.call(self.queries.get_run, run_id) is not None


_RE2_ERROR = re.compile(r"cannot compile re2: .*?, error: (.+?)(?:\. Look at|$)", re.S)


def _regex_error(regex: str | None, exc: QueryError) -> QueryError:
    """A storage-side regex compile error restated as a message about ``regex=``."""
    match = _RE2_ERROR.search(str(exc)) if regex else None
    if match is None:
        return exc
    return QueryError(f"regex {regex!r} is not a valid RE2 expression: {match.group(1).strip()}")


def _no_run(run_id: str) -> Response:
    return error_response(404, f"no run with id {run_id!r}")


async def _query_error(request: Request, exc: Exception) -> Response:
    return error_response(400, str(exc))


async def _query_limit(request: Request, exc: Exception) -> Response:
    return error_response(422, f"{exc}; narrow since/until or add a filter")


async def _storage_unavailable(request: Request, exc: Exception) -> Response:
    response = error_response(503, f"storage unavailable, try again: {exc}")
    response.headers["Retry-After"] = "5"
    return response


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/api/"):
        response: Response = error_response(exc.status_code, exc.detail)
    else:
        response = PlainTextResponse(exc.detail, status_code=exc.status_code)
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


class _InternalErrors:
    """Answers an unexpected exception with a JSON 500 (inside the security headers)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            log.error("Request failed. path=%s error=%s", scope["path"], type(exc).__name__, exc_info=exc)
            if started:
                raise
            response = error_response(500, "internal error; the server log has the details")
            await response(scope, receive, send)


def _feed_and_vendor_routes(feed: Any) -> list[BaseRoute]:
    """``WS /ws`` when a feed (``ui.feed.Feed``) is given, and ``/static/vendor/NAME/`` per installed package."""
    routes: list[BaseRoute] = []
    if feed is not None:
        routes.append(WebSocketRoute("/ws", feed.endpoint))
    for name, directory in VENDOR_DIRS.items():
        if directory.is_dir():
            routes.append(Mount(f"/static/vendor/{name}", StaticFiles(directory=directory)))
    return routes


def create_app(
    queries: QueryLayer,
    call: Call,
    *,
    token: str,
    health: HealthCheck,
    static_dir: Path | str = STATIC_DIR,
    allowed_hosts: Collection[str] = LOCAL_HOSTS,
    health_timeout_s: float = 5.0,
    feed: Any = None,
    step_times: StepTimes | None = None,
) -> Starlette:
    """The API and pages answering from ``queries`` through ``call``.

    ``token`` is required by every path but ``/api/health`` and ``/static/``;
    ``health()`` returns a report such as ``{"ingest": {"ok": True, ...},
    "queries": {"ok": True}}`` (see :func:`health_ok`); ``allowed_hosts`` are
    the Host header values accepted (``"name"`` for any port, ``"name:port"``;
    see :func:`ui.auth.default_allowed_hosts`); ``step_times`` answers
    ``/api/runs/{id}/metrics/steps`` (404 without it).  Raises
    :class:`~runstream.errors.ConfigError` for an empty token or host list.
    """
    if not token:
        raise ConfigError("the access token must not be empty")
    if not allowed_hosts:
        raise ConfigError("at least one allowed host is needed")
    static = Path(static_dir)
    index = static / "index.html"
    api = _Handlers(queries, call, health, health_timeout_s, step_times)

    async def page(request: Request) -> Response:
        if request.path_params.get("tab", "logs") not in RUN_TABS:
            raise HTTPException(404, "no such page")
        return FileResponse(index, media_type="text/html; charset=utf-8")

    routes = [
        Route("/api/health", api.health),
        Route("/api/runs", api.runs),
        Route("/api/runs/{run_id}", api.run),
        Route("/api/runs/{run_id}/metrics", api.metrics),
        Route("/api/runs/{run_id}/metrics/steps", api.metric_steps),
        Route("/api/runs/{run_id}/logs", api.logs),
        Route("/api/dlq", api.dead_letters),
        Route("/api/runs/{run_id}/resources", api.resources),
        Route("/api/runs/{run_id}/alerts", api.alerts),
        Route("/api/runs/{run_id}/evals", api.evals),
        Route("/api/runs/{run_id}/logs/histogram", api.log_histogram),
        Route("/api/runs/{run_id}/logs/context", api.log_context),
        Route("/api/logs", api.project_logs),
        Route("/api/metrics", api.compare_metrics),
        Route("/", page),
        Route("/runs/{run_id}", page),
        Route("/compare", page),
        Route("/runs/{run_id}/{tab:str}", page),
        Mount("/static", StaticFiles(directory=static), name="static"),
    ]
    routes[-1:-1] = _feed_and_vendor_routes(feed)
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(SecurityHeadersMiddleware),
            Middleware(_InternalErrors),
            Middleware(AccessMiddleware, token=token, allowed_hosts=allowed_hosts),
        ],
        exception_handlers={
            QueryLimitExceeded: _query_limit,
            QueryError: _query_error,
            StorageUnavailable: _storage_unavailable,
            HTTPException: _http_error,
        },
    )
