"""The colour scale: how a raw value becomes a position in [-1, 1] and, for terminals, a colour.

The page maps the position to colour in CSS (static/app.css); the terminal uses `rgb()` below,
with the same three anchors mixed the same way (linear sRGB mix, as CSS `color-mix(in srgb)`),
so both show the same picture. PuOr: purple for negative, near-white at 0, orange for positive,
a ColorBrewer scheme that stays readable with the common colour-vision deficiencies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

NEGATIVE = (0x5E, 0x3C, 0x99)  # PuOr purple
MIDDLE = (0xF7, 0xF7, 0xF7)
POSITIVE = (0xE6, 0x61, 0x01)  # PuOr orange

# Text on a coloured character: white on purple darker than position -LIGHT_TEXT_FROM, black elsewhere
# (static/app.css `color`). Black reaches WCAG AA's 4.5:1 on every colour lighter than that and white on every
# darker one (both do from -0.754 to -0.769), so the text never has less than 4.56:1. A softer black
# (#1d1d1f) would fall to 4.1:1 there: only pure black and white clear 4.5:1 on both sides of the switch.
LIGHT_TEXT_FROM = 0.76
DARK_TEXT = (0x00, 0x00, 0x00)
LIGHT_TEXT = (0xFF, 0xFF, 0xFF)
# The compare unit's bar: the text colour tinted teal (static/app.css --c-w), dark under dark text and pale
# under light text, so it keeps WCAG's 3:1 for non-text contrast (3.34:1 and 3.97:1 at worst).
COMPARE_LINE = (0x02, 0x2B, 0x27)
COMPARE_LINE_LIGHT = (0xCE, 0xF7, 0xF3)

SURPRISAL_CAP_BITS = 8.0
SPREAD_PERCENTILE = 95  # unbounded states: where the colour scale ends  # surprisal colour saturates here: rarer than 1 in 256

# What each state is, in one line, and the range its values can take.
STATE_INFO: dict[str, tuple[str, str]] = {
    "h": ("hidden state h_t: what the next layer and the output see", "tanh"),
    "c": ("cell state c_t: the LSTM's long-term memory", "free"),
    "i": ("input gate i_t: how much new content is written", "sigmoid"),
    "f": ("forget gate f_t: how much old memory is kept", "sigmoid"),
    "g": ("candidate g_t: the content offered for writing", "tanh"),
    "o": ("output gate o_t: how much memory is shown as h_t", "sigmoid"),
    "kept": ("kept f_t ⊙ c_(t-1): memory carried over from the last step", "free"),
    "written": ("written i_t ⊙ g_t: memory added at this step", "tanh"),
    "r": ("reset gate r_t: how much of h_(t-1) the candidate reads", "sigmoid"),
    "z": ("update gate z_t: how much of h_(t-1) is kept", "sigmoid"),
    "n": ("candidate n_t: the new content mixed into h_t", "tanh"),
}


@dataclass(frozen=True)
class Scale:
    lo: float  # legend's left end (raw units)
    hi: float  # legend's right end (raw units); the colour scale is symmetric: +-hi
    label: str

    def positions(self, values: np.ndarray) -> np.ndarray:
        """Raw values -> positions in [-1, 1] on the colour scale (NaN -> 0)."""
        pos = np.nan_to_num(np.asarray(values, dtype=np.float32) / self.hi, nan=0.0)
        return np.clip(pos, -1.0, 1.0)


def state_kind(state: str, nonlinearity: str = "tanh") -> str:
    """'tanh', 'sigmoid' or 'free': a ReLU RNN's h is unbounded above, so it is free, like c."""
    kind = STATE_INFO.get(state, ("", "free"))[1]
    return "free" if kind == "tanh" and nonlinearity == "relu" else kind


def neuron_scale(state: str, values: np.ndarray, nonlinearity: str = "tanh") -> Scale:
    """Bounded states use their fixed range; unbounded ones (c, kept, a ReLU RNN's h) the text's own spread.

    For those, the scale ends at the 95th percentile of |value| (rounded up), not the maximum:
    the first few characters, read from an all-zero state, often swing far wider than the rest
    and would otherwise wash the whole text out. Values beyond the end saturate.
    """
    kind = state_kind(state, nonlinearity)
    if kind == "tanh":
        return Scale(-1.0, 1.0, "tanh range")
    if kind == "sigmoid":
        return Scale(0.0, 1.0, "gate range")
    finite = np.abs(values[np.isfinite(values)]) if values.size else np.zeros(0)
    spread = float(np.percentile(finite, SPREAD_PERCENTILE)) if finite.size else 0.0
    return Scale(-_nice(spread), _nice(spread), f"ends at the {SPREAD_PERCENTILE}th percentile of |value| in this text")


def surprisal_scale() -> Scale:
    return Scale(0.0, SURPRISAL_CAP_BITS, f"bits, capped at {SURPRISAL_CAP_BITS:g}")


def _nice(x: float) -> float:
    """Round a scale end up to 1, 1.5, 2, 2.5, 3, 4, 5, 6, 8 x 10^k, so the legend reads cleanly."""
    if not math.isfinite(x) or x <= 0:
        return 1.0
    exp = math.floor(math.log10(x))
    for step in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if step * 10**exp >= x * (1 - 1e-9):
            return float(step * 10**exp)
    return float(10 ** (exp + 1))


LEGEND_STEPS = 11


@dataclass(frozen=True)
class Swatch:
    """One step of a colour legend: where it sits on the colour scale, and its label (the ends, and 0
    on a two-sided scale)."""

    position: float
    label: str = ""

    @property
    def pos(self) -> str:
        """The position for CSS (--v), as the page writes it."""
        return f"{self.position:.3f}"


def legend(scale: Scale, steps: int = LEGEND_STEPS) -> list[Swatch]:
    """Swatches from the scale's left end to its right end: the one legend of the page, the dynamics
    pages, the exports and the preview card."""
    lo = scale.lo / scale.hi  # -1 for a symmetric scale, 0 for a one-sided one
    out = []
    for k in range(steps):
        label = ""
        if k == 0:
            label = _end(scale.lo)
        elif k == steps - 1:
            label = _end(scale.hi)
        elif lo < 0 and k == steps // 2:
            label = "0"
        out.append(Swatch(lo + (1 - lo) * k / (steps - 1), label))
    return out


def _end(x: float) -> str:
    return f"{x:+g}" if x else "0"


def rgb(position: float) -> tuple[int, int, int]:
    """Position in [-1, 1] -> the sRGB colour the page's CSS gives it."""
    p = max(-1.0, min(1.0, float(position)))
    end = POSITIVE if p >= 0 else NEGATIVE
    a = abs(p)
    return tuple(round(e * a + m * (1 - a)) for e, m in zip(end, MIDDLE))  # type: ignore[return-value]


def text_is_light(position: float) -> bool:
    """White text only on strong purple, where black would fall below 4.5:1 (as static/app.css does)."""
    return position < -LIGHT_TEXT_FROM
