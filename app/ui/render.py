"""Jinja2 set-up and block rendering: htmx requests get one named block, fresh loads the page."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape
from starlette.requests import Request

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES_DIR = ROOT / "templates"
STATIC_DIR = ROOT / "static"

env = Environment(
    loader=FileSystemLoader(TEMPLATES_DIR),
    autoescape=select_autoescape(("html", "xml"), default=True),  # every {{ }} is escaped
    trim_blocks=True,
    lstrip_blocks=True,
)
# |tojson without the spaces after , and : (per-character data: about a tenth of a view's bytes).
env.policies["json.dumps_kwargs"] = {"sort_keys": True, "separators": (",", ":")}


def render_page(name: str, context: dict) -> str:
    return env.get_template(name).render(context)


def render_block(name: str, block: str, context: dict) -> str:
    template = env.get_template(name)
    return "".join(template.blocks[block](template.new_context(context)))


def wants_partial(request: Request) -> bool:
    """An htmx swap gets a block; a history restore or a fresh load gets the whole page."""
    return request.headers.get("HX-Request") == "true" and request.headers.get("HX-History-Restore-Request") != "true"


def char_spans(text: str, q: list[int], bars: list[str] | None, cls: dict[int, str], title: dict[int, str]) -> Markup:
    """The coloured text: one <span> per character, its colour level as a class (app.ui.levels).

    `q` holds each character's level and `bars` the compare unit's bar classes (app.ui.levels). Built
    here rather than in a Jinja loop because a fresh text renders every character and the loop cost
    several times the rest of the request. `cls` holds extra CSS classes (" nl", " unk", " na") and
    `title` hover text, for the few positions that have them. Every character and title is escaped;
    each distinct character once.
    """
    esc = {ch: str(escape(ch)) for ch in set(text)}
    if bars is None and not cls:
        return Markup("".join([f'<span class="ch q{k}">{esc[ch]}</span>' for ch, k in zip(text, q)]))
    out = []
    for t, ch in enumerate(text):
        tip = f' title="{escape(title[t])}"' if title.get(t) else ""
        out.append(f'<span class="ch q{q[t]}{bars[t] if bars else ""}{cls.get(t, "")}"{tip}>{esc[ch]}</span>')
    return Markup("".join(out))
