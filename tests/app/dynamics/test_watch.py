"""The watched character's places split by what the model has to know there (#21 item 5): closing vs
opening quotes by the quotes probe, in the split itself, the JSON API and the page."""

from __future__ import annotations

import re

import numpy as np
import pytest

from app.dynamics.watch import split_watch
from models.checkpoint import load_checkpoint
from models.dynamics import intervene

from tests.app.dynamics.test_pages import intervene_page_and_api

# places t where text[t + 1] is a quote: opening at 9, closing at 21, opening at 26 (never closed), then a
# blank line resets the probe, so the one at 44 opens (it would "close" without the reset) and 49 closes
TEXT = 'She said, "I shall go." He "left, she said.\n\n"Why?" he asked.'
CLOSING, OPENING = [21, 49], [9, 26, 44]


def quote_places(text: str) -> list[int]:
    return [t for t in range(len(text) - 1) if text[t + 1] == '"']


def test_quotes_split_into_closing_and_opening_by_the_quotes_probe():
    n = len(TEXT)
    before = np.linspace(0.1, 0.9, n)
    after = before / 2
    after[21] = 0.0
    s = split_watch(TEXT, '"', before, after)
    places = quote_places(TEXT)
    assert s.all.places == places == [9, 21, 26, 44, 49]
    closing, opening = s.groups
    assert (closing.key, opening.key) == ("closing", "opening")
    assert closing.places == CLOSING and opening.places == OPENING  # the blank line reset the open quote
    assert closing.mean_before == pytest.approx(before[CLOSING].mean())
    assert closing.mean_after == pytest.approx(after[CLOSING].mean())
    assert opening.mean_after == pytest.approx(after[OPENING].mean())
    assert s.all.mean_before == pytest.approx(before[places].mean())
    assert sorted(closing.places + opening.places) == places  # every place in exactly one group
    assert s.kind_of(21) == "closing" and s.kind_of(44) == "opening" and s.kind_of(0) == ""
    assert "quotes probe" in s.rule


def test_another_character_splits_inside_and_outside_quotes_and_empty_groups_have_no_mean():
    p = np.full(len(TEXT), 0.5)
    s = split_watch(TEXT, ",", p, p)
    inside, outside = s.groups
    assert (inside.key, outside.key) == ("inside", "outside")
    assert inside.places == [31] and outside.places == [7]  # "left, is quoted; said, is not
    none = split_watch("abc", "z", p[:3], p[:3])
    assert none.all.count == 0 and none.all.mean_before is None and all(g.mean_after is None for g in none.groups)


def test_the_api_reports_both_groups_exactly(client, tiny_models_dir):
    body = {"model": "tiny-lstm", "text": TEXT, "layer": 1, "state": "c", "unit": 3, "value": 0.0, "start": 0,
            "watch": '"', "topk": 0}
    r = client.post("/api/v1/intervene", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    ws = out["watch_summary"]
    ck = load_checkpoint(tiny_models_dir / "tiny-lstm")
    ref = intervene(ck.model, ck.vocab, TEXT, 1, "c", 3, 0.0, 0, '"', 0)
    groups = {g["group"]: g for g in ws["groups"]}
    assert list(groups) == ["closing", "opening"] and ws["all"]["places"] == 5
    assert groups["closing"]["places"] == 2 and groups["opening"]["places"] == 3
    assert groups["closing"]["mean_p_before"] == pytest.approx(ref.prob_before[CLOSING].mean(), abs=1e-6)
    assert groups["closing"]["mean_p_after"] == pytest.approx(ref.prob_after[CLOSING].mean(), abs=1e-6)
    assert groups["opening"]["mean_p_after"] == pytest.approx(ref.prob_after[OPENING].mean(), abs=1e-6)
    assert "quotes probe" in ws["split"]
    for kept in ("prob_before", "prob_after", "surprisal_before", "mean_bits_after", "top_changes"):
        assert kept in out  # the fields that were there stay
    assert client.post("/api/v1/intervene", json={**body, "watch": None}).json()["watch_summary"] is None


def test_the_page_shows_both_groups_and_marks_each_row(client):
    r, out = intervene_page_and_api(client, TEXT, layer=1, state="c", unit=3, value=0, start=0, watch='"')
    api = out["watch_summary"]
    rows = re.findall(r'<tr class="wg-(\w+)" data-group="\w+"><th scope="row">([^<]*)</th><td class="n">(\d+)</td>'
                      r'<td class="b">([^<]*)</td><td class="a">([^<]*)</td><td class="d \w+">([^<]*)</td></tr>', r.text)
    assert [row[0] for row in rows] == ["closing", "opening", "all"]
    for (key, _, n, b, a, _), g in zip(rows, [*api["groups"], api["all"]]):
        assert int(n) == g["places"] and b == f"{g['mean_p_before']:.3f}" and a == f"{g['mean_p_after']:.3f}"
    kinds = re.findall(r"<tr><td>(\d+)</td><td><code class=\"ctx\">[^<]*</code></td><td>(\w*)</td>", r.text)
    assert kinds == [("9", "opening"), ("21", "closing"), ("26", "opening"), ("44", "opening"), ("49", "closing")]
