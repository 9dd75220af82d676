"""Who may talk to the UI: the Host check and the access token.

:class:`AccessMiddleware` is plain ASGI (HTTP and WebSocket alike) and runs
before routing:

1. The ``Host`` header must name one of the allowed hosts, so a page on
   another site cannot reach this server through DNS rebinding (421 otherwise).
2. A websocket handshake that carries an ``Origin`` must come from this
   server's own origin (``http(s)://`` + its Host), so a page on another site
   cannot open the live feed with the browser's cookie (403 otherwise);
   clients that are not browsers send no Origin and pass.
3. Every path but :data:`PUBLIC_PATHS` and :data:`PUBLIC_PREFIXES` needs the
   token, as ``Authorization: Bearer TOKEN`` or the :data:`COOKIE` cookie
   (a websocket may also pass ``?token=TOKEN``, for clients that cannot set
   headers).
   A page opened as ``/any/page?token=TOKEN`` stores the token in that cookie
   (HttpOnly, SameSite=Strict) and is redirected to the same URL without it, so
   the token leaves the address bar and the history.  Tokens are compared in
   constant time.
"""

from __future__ import annotations

import hmac
from collections.abc import Collection, Iterable
from http.cookies import SimpleCookie
from urllib.parse import quote, urlencode

from starlette.requests import HTTPConnection
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from runstream.errors import ConfigError
from ui.responses import error_response

COOKIE = "runstream_token"
TOKEN_PARAM = "token"
PUBLIC_PATHS = frozenset({"/api/health"})
PUBLIC_PREFIXES = ("/static/",)
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")

#: WebSocket close code for a refused connection (policy violation).
WS_POLICY_VIOLATION = 1008

_LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>runstream: sign-in needed</title></head>
<body><h1>runstream</h1>
<p>This page needs the access token. Open the URL that <code>runstream up</code>
printed when it started (it ends in <code>?token=...</code>), or set
<code>RUNSTREAM_TOKEN</code> and open <code>/?token=YOUR_TOKEN</code>.</p>
</body></html>
"""


def default_allowed_hosts(port: int | None = None) -> tuple[str, ...]:
    """The loopback names, with ``:port`` when given (then only that port matches)."""
    if port is None:
        return LOCAL_HOSTS
    return tuple(f"{host}:{port}" for host in LOCAL_HOSTS)


def split_host(value: str) -> tuple[str, int | None]:
    """``(hostname, port)`` of a Host header or an allowed-host entry, lower-cased.

    The port is ``None`` when absent; a malformed port gives ``-1`` (never allowed).
    """
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value.partition("]")
        name += "]"
        port_text = rest[1:] if rest.startswith(":") else ("" if not rest else "x")
    elif value.count(":") == 1:
        name, _, port_text = value.partition(":")
    else:
        name, port_text = value, ""
    if not port_text:
        return name, None
    return name, int(port_text) if port_text.isdigit() and len(port_text) <= 5 else -1


def host_allowed(header: str, allowed: Iterable[tuple[str, int | None]]) -> bool:
    """Whether a Host header matches an allowed entry (an entry without a port matches any)."""
    if not header:
        return False
    name, port = split_host(header)
    if port == -1:
        return False
    return any(name == a_name and a_port in (None, port) for a_name, a_port in allowed)


def token_matches(given: str | None, token: str) -> bool:
    """Constant-time comparison of a presented token with the configured one."""
    if not given:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), token.encode("utf-8"))


def presented_token(conn: HTTPConnection) -> str | None:
    """The token a request carries: the Bearer header first, else the cookie."""
    auth = conn.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    try:
        cookie = SimpleCookie(conn.headers.get("cookie", ""))
    except Exception:  # a malformed Cookie header carries no token
        return None
    morsel = cookie.get(COOKIE)
    return morsel.value if morsel is not None else None


def origin_allowed(origin: str | None, host: str) -> bool:
    """Whether a websocket's ``Origin`` is absent or names this server (``http(s)://`` + its Host)."""
    if origin is None:
        return True
    scheme, sep, rest = origin.strip().lower().partition("://")
    return bool(sep) and scheme in ("http", "https") and rest == host.strip().lower()


def _is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def _is_api(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def _without_token(conn: HTTPConnection) -> str:
    """The request's path and query, minus the token parameter, as a same-site URL."""
    path = "/" + conn.scope["path"].lstrip("/")  # "//evil.example" must stay on this site
    rest = [(k, v) for k, v in conn.query_params.multi_items() if k != TOKEN_PARAM]
    url = quote(path, safe="/:@!$&'()*+,;=-._~")
    return f"{url}?{urlencode(rest)}" if rest else url


class AccessMiddleware:
    """Refuses requests for a foreign Host or without the token; see the module doc."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str,
        allowed_hosts: Collection[str] = LOCAL_HOSTS,
    ) -> None:
        if not token:
            raise ConfigError("the access token must not be empty")
        if not allowed_hosts:
            raise ConfigError("at least one allowed host is needed")
        self.app = app
        self.token = token
        self.allowed = tuple(split_host(h) for h in allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        path: str = scope["path"]
        if not host_allowed(conn.headers.get("host", ""), self.allowed):
            await self._refuse(
                scope,
                receive,
                send,
                error_response(421, "this server answers only to its own host name (Host header not allowed)"),
            )
            return
        if scope["type"] == "websocket" and not origin_allowed(
            conn.headers.get("origin"), conn.headers.get("host", "")
        ):
            await self._refuse(scope, receive, send, error_response(403, "cross-origin websocket refused"))
            return
        if _is_public(path):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "http" and not _is_api(path) and TOKEN_PARAM in conn.query_params:
            await self._login(conn)(scope, receive, send)
            return
        given = presented_token(conn)
        if scope["type"] == "websocket" and not given:
            given = conn.query_params.get(TOKEN_PARAM)
        if token_matches(given, self.token):
            await self.app(scope, receive, send)
            return
        if _is_api(path):
            response: Response = error_response(
                401, "missing or wrong access token: send 'Authorization: Bearer TOKEN'"
            )
            response.headers["WWW-Authenticate"] = "Bearer"
        else:
            response = HTMLResponse(_LOGIN_PAGE, status_code=401)
        await self._refuse(scope, receive, send, response)

    def _login(self, conn: HTTPConnection) -> Response:
        """Store a valid ``?token=`` in the cookie and redirect to the URL without it."""
        if not token_matches(conn.query_params.get(TOKEN_PARAM), self.token):
            return HTMLResponse(_LOGIN_PAGE, status_code=401)
        response = RedirectResponse(_without_token(conn), status_code=303)
        response.set_cookie(
            COOKIE,
            self.token,
            path="/",
            httponly=True,
            samesite="strict",
            secure=conn.url.scheme == "https",
        )
        return response

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, response: Response) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": WS_POLICY_VIOLATION})
            return
        await response(scope, receive, send)
