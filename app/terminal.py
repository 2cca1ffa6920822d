"""Text coloured by a value per character for a terminal: ANSI 24-bit background colours."""

from __future__ import annotations

from collections.abc import Iterable

from app.ui.scale import DARK_TEXT, LIGHT_TEXT, rgb, text_is_light

RESET = "\x1b[0m"


def paint(text: str, positions: Iterable[float]) -> str:
    """One escape per character; a newline resets first so colour never bleeds to the line's end."""
    out = []
    for ch, p in zip(text, positions):
        if ch == "\n":
            out.append(RESET + "\n")
            continue
        r, g, b = rgb(p)
        fg = "38;2;{};{};{}".format(*(LIGHT_TEXT if text_is_light(p) else DARK_TEXT))
        out.append(f"\x1b[48;2;{r};{g};{b};{fg}m{ch}")
    out.append(RESET)
    return "".join(out)


def legend(lo: float, hi: float, width: int = 11) -> str:
    """A strip of the scale from lo to hi (raw units), with its ends written beside it."""
    start = lo / hi if hi else -1.0
    cells = [paint(" ", [start + (1 - start) * k / (width - 1)]) for k in range(width)]
    return f"{lo:+g} " + "".join(c.replace(RESET, "") for c in cells) + RESET + f" {hi:+g}"
