"""The Find units panel's probe (and the regex probe's pattern) are part of a shared view.

Stored with the link, checked like the panel would take them, part of the content hash, and restored
when /s/{id} opens; a view that names no probe keeps exactly the id it had before probes were shared.
"""

from __future__ import annotations

import json
import re
import sqlite3
from html import unescape

import pytest

from app.share.store import share_id
from models.probes import PROBES

from .conftest import make_client, selected, spans, textarea

HX = {"HX-Request": "true"}
VIEW = {"model": "tiny-lstm", "text": 'He said "hi".\nShe left.', "layer": 0, "state": "h", "unit": 5, "mode": "neuron"}
FORM = {"model": "tiny-gru", "layer": "1", "state": "z", "unit": "7", "mode": "neuron", "text": 'x "q" y\nz end'}
# Ids these views had before the probe was part of a view (computed with the code of that time): a
# view that names no probe must keep them, or every link made before would stop matching its view.
VIEW_ID_BEFORE = "7t5xp7sfvjgc"
FORM_ID_BEFORE = "bdqgo7wct52v"
ID = re.compile(r"^[a-z2-7]{12}$")


def create(client, **extra) -> dict:
    r = client.post("/api/v1/share", json={**VIEW, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def button(client, form: dict) -> str:
    """The Share button's link for these form fields (as htmx posts them)."""
    r = client.post("/share", data=form, headers=HX)
    assert r.status_code == 200, r.text
    url = re.search(r'<input id="share-url" class="share-url" type="text" readonly value="([^"]+)"', r.text).group(1)
    return url.rsplit("/", 1)[1]


def panel(html: str) -> dict:
    """What the Find units panel opens on: the probe, its title, the pattern field, whether it ranks at once."""
    form = re.search(r'<form id="probe-form"[^>]*>', html).group(0)
    pattern = re.search(r'<input id="pattern"[^>]*>', html).group(0)
    value = re.search(r'\bvalue="([^"]*)"', pattern)
    return {
        "probe": selected(html, "probe"),
        "title": unescape(re.search(r'<span id="probe-title"[^>]*>(.*?)</span>', html).group(1)),
        "pattern": unescape(value.group(1)) if value else None,
        "pattern_disabled": bool(re.search(r"\sdisabled\b", pattern)),
        "ranks_on_load": 'hx-trigger="load, ' in form,
    }


# ---- ids ------------------------------------------------------------------------------------
def test_a_view_without_a_probe_keeps_the_id_it_had_before(client):
    assert create(client)["id"] == VIEW_ID_BEFORE
    assert button(client, FORM) == FORM_ID_BEFORE
    # the panel's default probe with no pattern, or an empty probe/pattern, is the same view as no probe
    assert create(client, probe="quotes")["id"] == VIEW_ID_BEFORE
    assert button(client, {**FORM, "probe": "quotes"}) == FORM_ID_BEFORE  # what the page's Share button sends
    assert button(client, {**FORM, "probe": "", "pattern": ""}) == FORM_ID_BEFORE
    assert "probe" not in create(client, probe="quotes")["view"]
    assert client.app.state.shares.store.count() == 2


def test_the_probe_is_part_of_the_view_and_of_its_id(client):
    plain = create(client)
    vowel = create(client, probe="vowel")
    assert vowel["view"] == {**plain["view"], "probe": "vowel"} and vowel["id"] == share_id(vowel["view"])
    assert vowel["id"] != plain["id"]
    assert create(client, probe="vowel")["id"] == vowel["id"]  # same view, same id
    assert create(client, probe="word_start")["id"] not in (plain["id"], vowel["id"])
    a = create(client, probe="regex", pattern="[A-Z][a-z]+")
    b = create(client, probe="regex", pattern="[a-z]+")
    assert a["view"]["probe"] == "regex" and a["view"]["pattern"] == "[A-Z][a-z]+"
    assert len({plain["id"], vowel["id"], a["id"], b["id"]}) == 4 and all(ID.match(x["id"]) for x in (a, b))
    # the page's Share button and the API agree on the same view
    assert button(client, {**{k: str(v) for k, v in VIEW.items()}, "probe": "regex", "pattern": "[a-z]+"}) == b["id"]
    assert client.get(f"/api/v1/share/{b['id']}").json()["view"] == b["view"]


def test_every_probe_id_can_be_shared(client):
    ids = {create(client, probe=p, **({"pattern": "s"} if p == "regex" else {}))["id"] for p in PROBES}
    assert len(ids) == len(PROBES)


# ---- validation -----------------------------------------------------------------------------
@pytest.mark.parametrize("extra, status, message", [
    ({"probe": "nope"}, 422, "unknown probe 'nope': choose one of quotes, brackets, bracket_depth, line_position, indent, "
                             "comment, string, short_string, long_string, word_start, vowel, regex"),
    ({"probe": "Quotes"}, 422, "unknown probe 'Quotes'"),
    ({"pattern": "[a-z]+"}, 422, "a pattern is only used by the regex probe, but the probe is 'quotes'"),
    ({"probe": "vowel", "pattern": "[a-z]+"}, 422, "a pattern is only used by the regex probe, but the probe is 'vowel'"),
    ({"probe": "regex", "pattern": "a" * 501}, 422, "pattern is 501 characters long; a pattern holds at most 500"),
    ({"probe": "regex", "pattern": "(["}, 422, "pattern: invalid regular expression"),
    ({"probe": 3}, 422, "probe: Input should be a valid string"),
    ({"probe": "regex", "pattern": ["a"]}, 422, "pattern: Input should be a valid string"),
])
def test_bad_probe_settings_are_refused_with_their_own_message(client, extra, status, message):
    r = client.post("/api/v1/share", json={**VIEW, **extra})
    assert r.status_code == status and message in r.json()["detail"], r.text
    assert client.app.state.shares.store.count() == 0  # nothing refused was stored


def test_a_long_pattern_up_to_the_cap_is_kept(client):
    pattern = "[a-z]" * 100  # 500 characters: more than other settings may hold, as much as the panel takes
    shared = create(client, probe="regex", pattern=pattern)
    assert shared["view"]["pattern"] == pattern
    assert panel(client.get(f"/s/{shared['id']}").text)["pattern"] == pattern


def test_the_share_button_refuses_bad_probe_settings_in_place(client):
    cases = [
        ({**FORM, "probe": "nope"}, "Cannot share: unknown probe &#39;nope&#39;"),
        ({**FORM, "probe": "vowel", "pattern": "x"}, "Cannot share: a pattern is only used by the regex probe"),
        ({**FORM, "probe": "regex", "pattern": "(["}, "Cannot share: pattern: invalid regular expression"),
    ]
    for form, message in cases:
        r = client.post("/share", data=form, headers=HX)
        assert r.status_code == 422 and message in r.text, r.text


# ---- /s/{id} opens the panel on the shared probe --------------------------------------------
def test_the_link_opens_the_panel_on_its_probe_with_its_pattern(client):
    sid = button(client, {**FORM, "probe": "regex", "pattern": "[a-z]+"})
    html = client.get(f"/s/{sid}").text
    assert panel(html) == {"probe": "regex", "title": PROBES["regex"].title, "pattern": "[a-z]+",
                           "pattern_disabled": False, "ranks_on_load": True}
    assert spans(html) == spans(client.get("/", params=FORM).text) and textarea(html) == FORM["text"]
    vowel = client.get(f"/s/{button(client, {**FORM, 'probe': 'vowel'})}").text
    assert panel(vowel) == {"probe": "vowel", "title": PROBES["vowel"].title, "pattern": "",
                            "pattern_disabled": True, "ranks_on_load": True}
    plain = client.get(f"/s/{button(client, FORM)}").text
    assert panel(plain) == {"probe": "quotes", "title": PROBES["quotes"].title, "pattern": "",
                            "pattern_disabled": True, "ranks_on_load": False}


def test_the_linked_panel_ranks_what_the_api_ranks(client):
    sid = create(client, probe="vowel")["id"]
    assert panel(client.get(f"/s/{sid}").text)["ranks_on_load"]
    # the panel's load request: the page's fields (from the link) plus the probe it opened on
    ranking = client.get("/ui/find-units", params={**{k: str(v) for k, v in VIEW.items()}, "probe": "vowel"},
                         headers=HX)
    api = client.post("/api/v1/probe", json={"model": "tiny-lstm", "text": VIEW["text"], "probe": "vowel",
                                             "top": 200}).json()
    # the panel shows one row per unit (its cleanest near-best state, the others behind it): the API's units in
    # its best-first order, each shown row one the API ranked
    groups = ranking.text.split('<tbody class="unit-group">')[1:]
    rows = [[(int(a), s, int(u)) for a, s, u in re.findall(r'data-layer="(\d+)" data-state="(\w+)" data-unit="(\d+)"', g)]
            for g in groups]
    ranked = [(x["layer"], x["state"], x["unit"]) for x in api]
    units = list(dict.fromkeys((a, u) for a, _, u in ranked))
    assert rows and [(r[0][0], r[0][2]) for r in rows] == units[:len(rows)]
    assert {r[0] for r in rows} <= set(ranked)


def test_a_shared_pattern_is_escaped_on_the_page(client):
    evil = '"><script>alert(1)</script>'
    sid = create(client, probe="regex", pattern=evil)["id"]
    html = client.get(f"/s/{sid}").text
    assert "<script>alert" not in html and 'value="&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in html
    assert panel(html)["pattern"] == evil


# ---- links stored before the probe was part of a view ---------------------------------------
def _insert(db, view: dict, sid: str | None = None) -> str:
    sid = sid or share_id(view)
    con = sqlite3.connect(db)
    con.execute("INSERT INTO shares (id, view, created) VALUES (?, ?, ?)",
                (sid, json.dumps(view), "2026-01-01T00:00:00+00:00"))
    con.commit()
    con.close()
    return sid


def test_an_old_format_stored_view_still_opens_and_keeps_its_id(client, tmp_path):
    db = tmp_path / "data" / "shares.sqlite3"
    old = {"model": "tiny-lstm", "layer": "0", "state": "h", "unit": "5", "mode": "neuron", "text": VIEW["text"]}
    sid = _insert(db, old)  # written as the earlier version wrote it: no probe key at all
    assert sid == VIEW_ID_BEFORE
    r = client.get(f"/s/{sid}")
    assert r.status_code == 200 and f"Shared view <code>{sid}</code>" in r.text
    assert panel(r.text)["probe"] == "quotes" and not panel(r.text)["ranks_on_load"]
    assert spans(r.text) == spans(client.get("/", params=old).text)
    assert create(client)["id"] == sid and client.app.state.shares.store.count() == 1  # the same link again


def test_old_rows_with_settings_the_panel_does_not_know_still_open(client, tmp_path):
    # An earlier version stored any well-formed extra setting verbatim, so a row may hold a probe id that
    # does not exist, a pattern without the regex probe, or an explicit default probe.
    db = tmp_path / "data" / "shares.sqlite3"
    base = {"model": "tiny-lstm", "layer": "0", "state": "h", "unit": "5", "mode": "neuron", "text": VIEW["text"]}
    for extra, probe, pattern in [({"probe": "nonsense"}, "quotes", ""),
                                  ({"probe": "vowel", "pattern": "[a-z]"}, "vowel", ""),
                                  ({"probe": "quotes"}, "quotes", ""),
                                  ({"probe": "regex", "pattern": "a" * 800}, "regex", "a" * 500)]:
        sid = _insert(db, {**base, **extra})
        r = client.get(f"/s/{sid}")
        assert r.status_code == 200, (extra, r.text[:300])
        p = panel(r.text)
        assert (p["probe"], p["pattern"]) == (probe, pattern), extra
        assert spans(r.text) == spans(client.get("/", params=base).text)
        assert client.get(f"/api/v1/share/{sid}").json()["view"] == {**base, **extra}  # read back as stored


def test_a_version_1_database_with_a_probe_row_is_migrated_and_opens(tiny_models_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    view = {"model": "tiny-lstm", "layer": "0", "state": "h", "unit": "5", "mode": "neuron", "text": VIEW["text"],
            "probe": "vowel"}
    con = sqlite3.connect(data / "shares.sqlite3")  # version 1: no `opened` column
    con.execute("CREATE TABLE rnnscope_schema (version INTEGER NOT NULL)")
    con.execute("INSERT INTO rnnscope_schema VALUES (1)")
    con.execute("CREATE TABLE shares (id VARCHAR(12) PRIMARY KEY, view TEXT NOT NULL, created VARCHAR(32) NOT NULL)")
    con.commit()
    con.close()
    sid = _insert(data / "shares.sqlite3", view)
    with make_client(tiny_models_dir, data) as c:
        r = c.get(f"/s/{sid}")
        assert r.status_code == 200 and panel(r.text)["probe"] == "vowel"
        again = c.post("/api/v1/share", json={**VIEW, "probe": "vowel"}).json()
        assert again["id"] == sid and c.app.state.shares.store.count() == 1
