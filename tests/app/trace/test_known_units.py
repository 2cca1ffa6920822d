"""The view lists the units the model card measured, one click from the main view."""

from __future__ import annotations

import re

from tests.conftest import write_tiny_model

from tests.app.conftest import make_client

HX = {"HX-Request": "true"}
CARD = {"corpus": "tiny", "val_bpc": 6.0, "probe_units": {
    "quotes": {"layer": 1, "state": "c", "unit": 3, "score": 0.9991, "sign": 1, "metric": "auc", "chars": 1000},
    "indent": {"layer": 0, "state": "h", "unit": 5, "score": 0.91, "sign": -1, "metric": "pearson", "chars": 1000},
    "comment": {"layer": 0, "state": "i", "unit": 2, "score": 0.62, "sign": 1, "metric": "auc", "chars": 1000},
    "string": {"layer": 7, "state": "h", "unit": 1, "score": 0.99, "sign": 1, "metric": "auc", "chars": 1000},
    "vowel": {"layer": 0, "state": "h", "unit": 1, "score": 0.99, "sign": 1, "metric": "auc", "chars": 1000},
    "short_string": {"layer": 0, "state": "c", "unit": 7, "score": 0.997, "sign": 1, "metric": "auc", "chars": 1000},
    "long_string": {"layer": 0, "state": "c", "unit": 9, "score": 0.971, "sign": 1, "metric": "auc", "chars": 1000},
}}


def buttons(html: str) -> list[tuple[str, str, str, str]]:
    return re.findall(r'<button type="button" class="known-unit[^"]*" data-layer="(\d+)" data-state="(\w+)" '
                      r'data-unit="(\d+)"[^>]*>([^<]*)</button>', html)


def test_every_measured_unit_is_offered_weak_ones_marked_and_impossible_ones_not(tmp_path):
    write_tiny_model(tmp_path / "m" / "carded", "lstm", card=CARD)
    with make_client(tmp_path / "m", default_model="carded") as c:
        page = c.get("/", params={"model": "carded", "layer": 0, "state": "h", "unit": 5, "text": "a b"})
        assert page.status_code == 200
        found = buttons(page.text)
        assert found == [("1", "c", "3", "inside quotes · layer 1 c[3] · AUC 0.999"),
                         ("0", "h", "5", "indentation · layer 0 h[5] · |r| 0.910"),
                         ("0", "i", "2", "inside a comment · layer 0 i[2] · AUC 0.620 (weak)"),
                         ("0", "h", "1", "vowel · layer 0 h[1] · AUC 0.990"),
                         ("0", "c", "7", "one-quote string · layer 0 c[7] · AUC 0.997"),
                         ("0", "c", "9", "triple-quoted string · layer 0 c[9] · AUC 0.971")]
        # a weak unit says so, in its style and its title; layer 7 does not exist, so string is not offered
        assert 'class="known-unit weak" data-layer="0" data-state="i" data-unit="2"' in page.text
        assert page.text.count("follows the probe only loosely") == 1
        assert 'class="known-unit current" data-layer="0" data-state="h" data-unit="5"' in page.text
        # the htmx view swap carries them too
        part = c.get("/", params={"model": "carded", "layer": 1, "state": "c", "unit": 3, "text": "a b"}, headers=HX)
        assert 'class="known-unit current" data-layer="1" data-state="c" data-unit="3"' in part.text


def test_a_model_without_measured_units_shows_no_strip(tiny_models_dir):
    with make_client(tiny_models_dir) as c:
        page = c.get("/", params={"model": "tiny-gru", "text": "a b"})
        assert page.status_code == 200 and 'class="known"' not in page.text
