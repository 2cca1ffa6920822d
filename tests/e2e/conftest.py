"""The browser tests' set-up: a real `rnnscope serve` on tiny models (tests/share/server.py), Debian's
chromium driven by Playwright, and pages that list the errors their console and scripts report.

A test that asks for `browser` (every test here) is skipped, with the reason, where /usr/bin/chromium or
Playwright is missing; CI installs both. Never runs `playwright install`: the system chromium is the browser.

A module changes what it gets by overriding a fixture: `models_dir` (the models the server serves) or
`page_options` (the viewport, the default timeout, the console errors that are expected).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conftest import write_tiny_model
from tests.share.server import running_server

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
ZOO = Path(__file__).resolve().parents[2] / "models" / "zoo"  # the shipped models
# hx-sync="this:replace" aborts stale requests, and htmx reports each abort on the console: expected.
HTMX_ABORTS = ("htmx:sendAbort", "htmx:afterRequest")
# The browser noting a 422: expected where a page answers with the block that says what to fix.
STATUS_422 = "Failed to load resource: the server responded with a status of 422"
PAGE_OPTIONS = {"viewport": {"width": 1200, "height": 900}, "timeout": 20_000, "expected": HTMX_ABORTS}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    """tiny-lstm (the server's default model) and tiny-gru."""
    models = tmp_path_factory.mktemp("e2e-models")
    write_tiny_model(models / "tiny-lstm", "lstm", seed=3)
    write_tiny_model(models / "tiny-gru", "gru", seed=4, hidden=12)
    return models


@pytest.fixture(scope="module")
def server(models_dir, tmp_path_factory):
    """The base URL of `rnnscope serve` over `models_dir`, with its own data folder and log."""
    tmp = tmp_path_factory.mktemp("e2e-serve")
    with running_server(models_dir, tmp / "data", tmp / "serve.log") as base:
        yield base


@pytest.fixture(scope="module")
def shipped_server(tmp_path_factory):
    """The base URL of `rnnscope serve` over the shipped models (ZOO; austen-lstm the default, 2 torch threads):
    a module that tests the shipped models makes it its `server`."""
    tmp = tmp_path_factory.mktemp("e2e-shipped")
    with running_server(ZOO, tmp / "data", tmp / "serve.log", RNNSCOPE_DEFAULT_MODEL="austen-lstm",
                        RNNSCOPE_TORCH_THREADS="2") as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium to run the browser tests")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM,
                              args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield b
        b.close()


def new_page(context, timeout: int = PAGE_OPTIONS["timeout"], expected: tuple[str, ...] = HTMX_ABORTS):
    """A page of `context`; `pg.problems` lists its page errors and the console errors not in `expected`."""
    pg = context.new_page()
    pg.set_default_timeout(timeout)
    problems: list[str] = []
    pg.on("console", lambda m: problems.append(f"{m.type}: {m.text}")
          if m.type == "error" and not m.text.startswith(expected) else None)
    pg.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    pg.problems = problems  # type: ignore[attr-defined]
    return pg


@pytest.fixture(scope="module")
def page_options() -> dict:
    return PAGE_OPTIONS


@pytest.fixture()
def page(browser, server, page_options):
    """A page in a fresh browser context, with `pg.base` the server's URL and `pg.problems` (see new_page)."""
    context = browser.new_context(viewport=page_options["viewport"])
    pg = new_page(context, page_options["timeout"], page_options["expected"])
    pg.base = server  # type: ignore[attr-defined]
    yield pg
    context.close()


def query(pg) -> dict[str, str]:
    """The page URL's query parameters (blank ones too)."""
    return {k: v[0] for k, v in parse_qs(urlsplit(pg.url).query, keep_blank_values=True).items()}


def wait_for_query(pg, **params: str) -> None:
    """Wait until the page URL carries these parameters: a repaint updates the URL the frame after the colours."""
    pg.wait_for_function("p => Object.entries(p).every(([k, v]) => new URLSearchParams(location.search).get(k) === v)",
                         arg=params)
