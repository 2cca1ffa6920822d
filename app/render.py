"""Jinja2 set-up and block rendering: htmx requests get one named block, fresh loads the page."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = ROOT / "templates"
STATIC_DIR = ROOT / "static"

env = Environment(
    loader=FileSystemLoader(TEMPLATES_DIR),
    autoescape=select_autoescape(("html", "xml"), default=True),  # every {{ }} is escaped
    trim_blocks=True,
    lstrip_blocks=True,
)


def render_page(name: str, context: dict) -> str:
    return env.get_template(name).render(context)


def render_block(name: str, block: str, context: dict) -> str:
    template = env.get_template(name)
    return "".join(template.blocks[block](template.new_context(context)))


def wants_partial(request: Request) -> bool:
    """An htmx swap gets a block; a history restore or a fresh load gets the whole page."""
    return request.headers.get("HX-Request") == "true" and request.headers.get("HX-History-Restore-Request") != "true"
