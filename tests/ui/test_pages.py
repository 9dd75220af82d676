"""The pages: deep links serve the app shell, which loads only its own script and style."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from starlette.applications import Starlette

from tests.ui.asgi import get
from tests.ui.conftest import TOKEN
from ui.api import STATIC_DIR

COOKIE = {"Cookie": f"runstream_token={TOKEN}"}


class _Shell(HTMLParser):
    """Collects what CSP cares about: scripts, styles, inline handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str | None] = []
        self.stylesheets: list[str | None] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "script":
            self.scripts.append(attributes.get("src"))
            self._in_script = True
        if tag == "link" and attributes.get("rel") == "stylesheet":
            self.stylesheets.append(attributes.get("href"))
        if tag == "style":
            self.inline.append("<style>")
        for name, _ in attrs:
            if name == "style" or name.startswith("on"):
                self.inline.append(f"{tag}[{name}]")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append("inline script")


@pytest.mark.parametrize("path", ["/", "/runs/abc", "/runs/abc/logs"])
async def test_deep_links_serve_the_app_shell(app: Starlette, path: str) -> None:
    """/, /runs/{id} and /runs/{id}/logs all answer the same HTML shell."""
    answer = await get(app, path, {"q": "loss", "since": "1h"} if path.endswith("logs") else None, headers=COOKIE)
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/html")
    assert answer.body == (STATIC_DIR / "index.html").read_bytes()


def test_shell_loads_only_its_own_script_and_style() -> None:
    """index.html loads only same-origin files (its own and uPlot's), nothing inline, so the strict CSP allows it."""
    shell = _Shell()
    shell.feed((STATIC_DIR / "index.html").read_text())
    assert shell.scripts == ["/static/vendor/uplot/uPlot.iife.min.js", "/static/app.js"]
    assert shell.stylesheets == ["/static/vendor/uplot/uPlot.min.css", "/static/app.css"]
    assert shell.inline == []


SCRIPTS = sorted(STATIC_DIR.glob("*.js"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_never_parse_data_as_html(script: Path) -> None:
    """No script uses an HTML-parsing sink at all (innerHTML, outerHTML, document.write, eval)."""
    sinks = re.findall(
        r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|"
        r"createContextualFragment|srcdoc",
        script.read_text(),
    )
    assert sinks == []


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_import_only_their_siblings(script: Path) -> None:
    """The page's modules import each other only: no third-party or remote code."""
    imports = re.findall(r"^import .* from \"([^\"]+)\";$", script.read_text(), re.M)
    assert all(re.fullmatch(r"\./[a-z]+\.js", name) and (STATIC_DIR / name).exists() for name in imports)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_are_valid_javascript(script: Path) -> None:
    """node accepts each script's syntax."""
    proc = subprocess.run(["node", "--check", str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


async def test_static_files_are_served_with_their_types(app: Starlette) -> None:
    """The script and the style sheet come with JavaScript and CSS content types."""
    script = await get(app, "/static/app.js")
    style = await get(app, "/static/app.css")
    assert script.headers["content-type"].startswith("text/javascript")
    assert style.headers["content-type"].startswith("text/css")


async def test_unknown_page_is_404(app: Starlette) -> None:
    """A path that is no page answers 404, not the shell."""
    answer = await get(app, "/nowhere", headers=COOKIE)
    assert answer.status == 404
