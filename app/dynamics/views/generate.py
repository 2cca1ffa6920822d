"""The generate page: text sampled from a model, coloured by one unit as it is written."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode

import numpy as np

from app.core.errors import InputError
from app.core.slots import Overloaded
from app.dynamics.results import MAX_GENERATE, GenerationPlan
from app.dynamics.service import DynamicsService
from app.dynamics.views.form import (Base, Cell, PRIME_SHOWN, Picker, Reader, base, cells, picker, resolve_model,
    resolve_unit, show_char)
from app.ui.scale import Swatch, legend


@dataclass
class GeneratePage(Base):
    picker: Picker | None = None
    text: str = ""
    n: int = 300
    temperature: float = 0.8
    seed: str = ""
    max_n: int = MAX_GENERATE
    max_chars: int = 0
    stream_url: str = ""
    what: str = ""
    prime_cells: list[Cell] = field(default_factory=list)
    prime_cut: int = 0
    legend: list[Swatch] = field(default_factory=list)
    legend_note: str = ""
    seed_note: str = ""


def build_generate(service: DynamicsService, query: Mapping[str, str]) -> GeneratePage:
    page = GeneratePage(**vars(base("generate", query, service)))
    r = Reader(query)
    page.text = r.text()
    page.max_chars = service.settings.max_chars
    entry = resolve_model(service, r)
    if entry is None:
        return page
    layer, state, unit = resolve_unit(service, r, entry)
    page.picker = picker(service, entry, layer, state, unit)
    page.n = r.int("n", 300, "length") or 0
    page.temperature = r.float("temperature", 0.8)
    seed = r.int("seed", None)
    page.seed = "" if seed is None else str(seed)
    # Every field checked on its own, so each message shows at once, not one per try.
    r.check(lambda: service.check_text(page.text, what="the prime text"))
    if "n" not in r.errors:
        r.check(lambda: service.check_length(page.n))
    if "temperature" not in r.errors:
        r.check(lambda: service.check_temperature(page.temperature))
    r.check(lambda: service.check_seed(seed))
    run = r.has("n")  # the form always sends n: a bare /generate shows the form only
    plan: GenerationPlan | None = None
    if not r.errors:
        try:
            plan = service.plan_generation(entry.name, page.text, page.n, page.temperature, seed, layer, state, unit)
        except InputError as e:
            r.fail(e)
    page.errors = r.errors
    if plan is None or not run:
        return page
    try:
        values, scale = service.prime_scale(plan)
    except (InputError, Overloaded) as e:
        page.refuse(e)
        return page
    shown = plan.prime[-PRIME_SHOWN:]
    page.prime_cut = len(plan.prime) - len(shown)
    tail = values[page.prime_cut:]
    titles = [f"{show_char(ch)} (prime, position {page.prime_cut + k}): {float(v):.4f}" for k, (ch, v) in enumerate(zip(shown, tail))]
    page.prime_cells = cells(shown, scale.positions(tail), titles, ~np.isfinite(tail),
                             set(entry.checkpoint.vocab.unknown_positions(shown)), extra=None)
    for c, v in zip(page.prime_cells, tail.tolist()):
        c.raw = f"{v:.4f}" if math.isfinite(v) else ""
    page.legend, page.legend_note = legend(scale), scale.label
    page.what = f"{state}[{layer}][{unit}]"
    params = {"model": entry.name, "text": plan.prime, "n": plan.n, "temperature": f"{plan.temperature:g}",
              "layer": layer, "state": state, "unit": unit}
    if plan.seed_given:
        params["seed"] = plan.seed
        page.seed_note = f"seed {plan.seed}: this link reproduces the run exactly"
    else:
        page.seed_note = "no seed given: the server picks one and shows it when the run starts"
    page.stream_url = "/api/v1/generate/stream?" + urlencode(params)
    return page
