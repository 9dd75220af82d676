"""The token and the Host check: who may reach the API and the pages."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette

from runstream.errors import ConfigError
from tests.ui.asgi import get
from tests.ui.conftest import TOKEN, make_app
from ui.auth import default_allowed_hosts, host_allowed, split_host, token_matches

BEARER = {"Authorization": f"Bearer {TOKEN}"}


async def test_api_without_token_is_401(app: Starlette) -> None:
    """An API call without a token is refused with a JSON error and a Bearer challenge."""
    answer = await get(app, "/api/runs")
    assert answer.status == 401
    assert "token" in answer.json()["error"]
    assert answer.headers["www-authenticate"] == "Bearer"


async def test_api_with_wrong_token_is_401(app: Starlette) -> None:
    """A wrong bearer token is refused."""
    answer = await get(app, "/api/runs", headers={"Authorization": "Bearer nope"})
    assert answer.status == 401


async def test_api_with_bearer_token_answers(app: Starlette) -> None:
    """The right bearer token opens the API."""
    answer = await get(app, "/api/runs", headers=BEARER)
    assert answer.status == 200
    assert "runs" in answer.json()


async def test_token_in_api_query_string_is_not_accepted(app: Starlette) -> None:
    """?token= is a page sign-in only: an API call must use the header or the cookie."""
    answer = await get(app, "/api/runs", {"token": TOKEN})
    assert answer.status == 401


async def test_page_with_token_sets_cookie_and_redirects_without_it(app: Starlette) -> None:
    """Opening a page with ?token= stores an HttpOnly SameSite=Strict cookie and drops the token."""
    params = [("q", "loss spike"), ("token", TOKEN), ("since", "1h")]
    answer = await get(app, "/runs/abc/logs", params)
    assert answer.status == 303
    assert answer.headers["location"] == "/runs/abc/logs?q=loss+spike&since=1h"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"runstream_token={TOKEN};")
    for attribute in ("HttpOnly", "Path=/", "SameSite=strict"):
        assert attribute.lower() in cookie.lower()


async def test_cookie_opens_pages_and_api(app: Starlette) -> None:
    """The cookie set by the sign-in redirect is accepted by pages and API calls."""
    cookie = {"Cookie": f"runstream_token={TOKEN}"}
    assert (await get(app, "/runs/abc", headers=cookie)).status == 200
    assert (await get(app, "/api/runs", headers=cookie)).status == 200


async def test_wrong_cookie_is_refused(app: Starlette) -> None:
    """A cookie holding another token opens nothing."""
    answer = await get(app, "/api/runs", headers={"Cookie": "runstream_token=guess"})
    assert answer.status == 401


async def test_page_with_wrong_token_sets_no_cookie(app: Starlette) -> None:
    """A wrong ?token= gets the sign-in page and no cookie."""
    answer = await get(app, "/", {"token": "guess"})
    assert answer.status == 401
    assert "set-cookie" not in answer.headers


async def test_page_without_token_explains_how_to_sign_in(app: Starlette) -> None:
    """A page opened without the token says to open the URL runstream up printed."""
    answer = await get(app, "/runs/abc")
    assert answer.status == 401
    assert answer.headers["content-type"].startswith("text/html")
    assert "runstream up" in answer.text


async def test_redirect_stays_on_this_site(app: Starlette) -> None:
    """A path starting with // cannot turn the sign-in redirect into an off-site one."""
    answer = await get(app, "//evil.example/x", {"token": TOKEN})
    assert answer.status == 303
    assert answer.headers["location"] == "/evil.example/x"


async def test_health_needs_no_token(app: Starlette) -> None:
    """/api/health answers without a token."""
    answer = await get(app, "/api/health")
    assert answer.status == 200
    assert answer.json()["ok"] is True


async def test_static_assets_need_no_token(app: Starlette) -> None:
    """The page's script and style load without a token (they hold no data)."""
    assert (await get(app, "/static/app.js")).status == 200
    assert (await get(app, "/static/app.css")).status == 200


@pytest.mark.parametrize("path", ["/api/health", "/api/runs", "/", "/static/app.js"])
async def test_foreign_host_is_refused(app: Starlette, path: str) -> None:
    """A Host header naming another site (DNS rebinding) is refused, even with the token."""
    answer = await get(app, path, headers=BEARER, host="attacker.example:8080")
    assert answer.status == 421


async def test_missing_host_is_refused(app: Starlette) -> None:
    """A request without a Host header is refused."""
    answer = await get(app, "/api/health", host="")
    assert answer.status == 421


async def test_allowed_host_with_port_matches_only_that_port(queries_app_parts: tuple) -> None:
    """With host:port entries, the same name on another port is refused."""
    app = make_app(*queries_app_parts, allowed_hosts=default_allowed_hosts(8080))
    assert (await get(app, "/api/health", host="localhost:8080")).status == 200
    assert (await get(app, "/api/health", host="[::1]:8080")).status == 200
    assert (await get(app, "/api/health", host="localhost:9999")).status == 421


def test_split_host_forms() -> None:
    """Host values split into a lower-cased name and a port (None when absent, -1 when bad)."""
    assert split_host("LocalHost:8080") == ("localhost", 8080)
    assert split_host("[::1]:80") == ("[::1]", 80)
    assert split_host("[::1]") == ("[::1]", None)
    assert split_host("127.0.0.1:x") == ("127.0.0.1", -1)


def test_host_allowed_without_port_entry_matches_any_port() -> None:
    """An allowed entry without a port accepts that name on every port."""
    allowed = [split_host("localhost")]
    assert host_allowed("localhost:1234", allowed)
    assert not host_allowed("localhost.attacker.example", allowed)


def test_token_compare() -> None:
    """Only the exact token matches; empty and non-ASCII guesses are refused, not errors."""
    assert token_matches("s3cret", "s3cret")
    assert not token_matches("s3cre", "s3cret")
    assert not token_matches("", "s3cret")
    assert not token_matches("sécret", "s3cret")


def test_empty_token_is_a_config_error(queries_app_parts: tuple) -> None:
    """An app cannot be built without a token."""
    queries, call = queries_app_parts
    with pytest.raises(ConfigError):
        make_app(queries, call, token="")
