"""POST /api/v1/share and GET /api/v1/share/{id}: content-addressed links, checked like the page, clear refusals."""

from __future__ import annotations

import re
import sqlite3

from app.share.store import share_id

from .conftest import make_client

VIEW = {"model": "tiny-lstm", "text": 'He said "hi".\nShe left.', "layer": 0, "state": "h", "unit": 5, "mode": "neuron"}
ID = re.compile(r"^[a-z2-7]{12}$")


def test_create_returns_id_and_link_and_the_same_view_gets_the_same_id(client):
    r = client.post("/api/v1/share", json=VIEW)
    assert r.status_code == 200, r.text
    body = r.json()
    assert ID.match(body["id"]) and body["url"] == f"http://testserver/s/{body['id']}"
    assert body["view"] == {"model": "tiny-lstm", "text": VIEW["text"], "layer": "0", "state": "h", "unit": "5",
                            "mode": "neuron"}
    assert body["id"] == share_id(body["view"])  # the id is the view's hash, not a counter
    again = client.post("/api/v1/share", json=dict(reversed(list(VIEW.items())))).json()
    assert again["id"] == body["id"]
    crlf = client.post("/api/v1/share", json={**VIEW, "text": VIEW["text"].replace("\n", "\r\n")}).json()
    assert crlf["id"] == body["id"]  # the page reads CRLF as LF, so it is the same view
    other = client.post("/api/v1/share", json={**VIEW, "unit": 6}).json()
    assert other["id"] != body["id"]


def test_making_a_link_runs_no_model_and_opening_it_traces_once(client):
    service = client.app.state.service
    view = {**VIEW, "text": "A text nobody has traced yet, shared straight away."}
    r = client.post("/api/v1/share", json=view)
    assert r.status_code == 200, r.text
    assert service.traces_run == 0 and len(service.cache) == 0  # checked, saved, not traced
    page = client.get(f"/s/{r.json()['id']}")
    assert page.status_code == 200 and "shared straight away" in page.text
    assert service.traces_run == 1


def test_defaults_are_resolved_so_an_implicit_view_matches_the_explicit_one(client):
    implicit = client.post("/api/v1/share", json={"text": "abc"}).json()
    # tiny-lstm is the default model and its card names layer 1 / c / unit 3
    assert implicit["view"] == {"model": "tiny-lstm", "layer": "1", "state": "c", "unit": "3", "mode": "neuron",
                                "text": "abc"}
    explicit = client.post("/api/v1/share", json={"text": "abc", "model": "tiny-lstm", "layer": 1, "state": "c",
                                                  "unit": 3, "mode": "neuron"}).json()
    assert explicit["id"] == implicit["id"]


def test_ids_are_hashes_not_counters(client):
    links = [client.post("/api/v1/share", json={**VIEW, "unit": u}).json() for u in range(6)]
    assert all(link["id"] == share_id(link["view"]) for link in links)
    assert len({link["id"][:3] for link in links}) == 6  # no shared prefix, as consecutive counters would have


def test_extra_settings_are_kept_and_empty_ones_dropped(client):
    # (a non-default probe: the default one is the same view as none, see test_probe_links.py)
    r = client.post("/api/v1/share", json={**VIEW, "unit2": "7", "layer2": 1, "probe": "vowel"})
    assert r.status_code == 200, r.text
    view = r.json()["view"]
    assert view["unit2"] == "7" and view["layer2"] == "1" and view["probe"] == "vowel"
    read = client.get(f"/api/v1/share/{r.json()['id']}").json()
    assert read["view"] == view and read["url"] == r.json()["url"]
    blank = client.post("/api/v1/share", json={**VIEW, "unit2": ""}).json()
    assert blank["id"] == client.post("/api/v1/share", json=VIEW).json()["id"]


def test_malformed_extra_settings_are_refused_one_by_one(client):
    cases = [
        ({"Bad-Key": "1"}, "'Bad-Key' is not a view setting"),
        ({"units": [1, 2]}, "units must be one value (text or a number), not a list"),
        ({"probe": "x" * 201}, "probe is 201 characters long; settings hold at most 200"),
        ({f"k{i}": "1" for i in range(17)}, "17 extra settings; a view holds at most 16"),
    ]
    for extra, message in cases:
        r = client.post("/api/v1/share", json={**VIEW, **extra})
        assert r.status_code == 422 and message in r.json()["detail"], (extra, r.text)


def test_views_the_page_would_refuse_are_refused_with_its_message(client):
    cases = [
        ({**VIEW, "model": "nope"}, 404, "unknown model 'nope'; installed models: tiny-gru, tiny-lstm, tiny-rnn"),
        ({**VIEW, "unit": 999}, 422, "unit 999 is out of range: this model has units 0..15"),
        ({**VIEW, "state": "q"}, 422, "q"),
        ({**VIEW, "mode": "rainbow"}, 422, "mode 'rainbow' is not one of: neuron, surprisal"),
        ({**VIEW, "text": ""}, 422, "the text is empty"),
        ({**VIEW, "text": "a" * 20_001}, 413, "the text is 20,001 characters long; the limit is 20,000"),
        ({k: v for k, v in VIEW.items() if k != "text"}, 422, "text"),
        ({**VIEW, "layer": "one"}, 422, "layer"),
    ]
    for body, status, message in cases:
        r = client.post("/api/v1/share", json=body)
        assert r.status_code == status and message in r.json()["detail"], (body.get("text", "")[:20], r.text[:300])
    assert client.app.state.shares.store.count() == 0  # nothing refused was stored


def test_unpaired_surrogate_is_a_clear_422_not_a_crash(client):
    r = client.post("/api/v1/share", content=b'{"text": "a\\ud800b", "model": "tiny-lstm"}',
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "unpaired UTF-16 surrogate" in r.json()["detail"]


def test_reading_bad_and_unknown_ids(client):
    r = client.get("/api/v1/share/..%2F..%2Fetc")
    assert r.status_code == 404
    r = client.get("/api/v1/share/ABC")
    assert r.status_code == 404 and "is not a share id (12 characters, a-z and 2-7)" in r.json()["detail"]
    r = client.get("/api/v1/share/aaaaaaaaaaaa")
    assert r.status_code == 404 and "no shared view 'aaaaaaaaaaaa'" in r.json()["detail"]


def test_share_routes_are_in_the_openapi_schema(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert "post" in paths["/api/v1/share"] and "get" in paths["/api/v1/share/{sid}"]
    assert "/s/{sid}" not in paths and "/export.csv" not in paths  # pages and files are not API


def test_a_store_that_cannot_open_turns_sharing_off_but_traces_still_serve(tiny_models_dir, tmp_path, caplog):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("I am a file, not a folder")
    with make_client(tiny_models_dir, not_a_folder) as c:
        assert "sharing is unavailable" in caplog.text
        page = c.get("/", params={"text": "abc"})
        assert page.status_code == 200 and 'class="ch' in page.text
        assert c.post("/api/v1/trace", json={"model": "tiny-lstm", "text": "abc", "layer": 0, "state": "h"}).status_code == 200
        r = c.post("/api/v1/share", json=VIEW)
        assert r.status_code == 503
        assert r.json()["detail"].startswith("sharing is unavailable on this server: cannot create the share folder")
        assert "RNNSCOPE_DATA_DIR" in r.json()["detail"] and "downloads still work" in r.json()["detail"]
        button = c.post("/share", data={"text": "abc"}, headers={"HX-Request": "true"})
        assert button.status_code == 503 and "Cannot share: sharing is unavailable" in button.text
        link = c.get("/s/aaaaaaaaaaaa")
        assert link.status_code == 503 and "Sharing is unavailable" in link.text
        assert c.get("/export.csv", params={"text": "abc"}).status_code == 200


def test_an_unusable_database_url_is_reported(tiny_models_dir, tmp_path):
    with make_client(tiny_models_dir, tmp_path, database_url="nosuchdb://somewhere/db") as c:
        r = c.post("/api/v1/share", json=VIEW)
        assert r.status_code == 503 and "cannot use the share database nosuchdb://somewhere/db" in r.json()["detail"]


def test_database_url_setting_chooses_the_store(tiny_models_dir, tmp_path):
    db = tmp_path / "elsewhere" / "links.db"
    with make_client(tiny_models_dir, tmp_path / "data", database_url=f"sqlite:///{db}") as c:
        sid = c.post("/api/v1/share", json=VIEW).json()["id"]
    assert db.is_file() and not (tmp_path / "data" / "shares.sqlite3").exists()
    con = sqlite3.connect(db)
    assert con.execute("SELECT id FROM shares").fetchall() == [(sid,)]
    con.close()


def test_read_only_database_refuses_new_links_and_keeps_the_old_ones(tiny_models_dir, tmp_path):
    data = tmp_path / "data"
    with make_client(tiny_models_dir, data) as c:
        old = c.post("/api/v1/share", json=VIEW).json()["id"]
    ro = f"sqlite:///file:{data / 'shares.sqlite3'}?mode=ro&uri=true"
    with make_client(tiny_models_dir, data, database_url=ro) as c:
        r = c.post("/api/v1/share", json={**VIEW, "unit": 9})
        assert r.status_code == 503
        assert "cannot save the link" in r.json()["detail"] and "is read-only: existing links still open" in r.json()["detail"]
        page = c.get(f"/s/{old}")
        assert page.status_code == 200 and "She left." in page.text
    with make_client(tiny_models_dir, data) as c:
        assert c.app.state.shares.store.count() == 1
        assert c.get(f"/api/v1/share/{old}").json()["view"]["unit"] == "5"


def test_locked_database_gives_a_clear_503_and_loses_nothing(tiny_models_dir, tmp_path):
    db = tmp_path / "shares.sqlite3"
    with make_client(tiny_models_dir, tmp_path, database_url=f"sqlite:///{db}?timeout=0.3") as c:
        old = c.post("/api/v1/share", json=VIEW).json()["id"]
        blocker = sqlite3.connect(db, timeout=0)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            r = c.post("/api/v1/share", json={**VIEW, "unit": 9})
            assert r.status_code == 503
            assert r.json()["detail"] == f"cannot save the link: {db} is locked by another process; try again in a moment"
            assert c.get(f"/s/{old}").status_code == 200  # readers are not blocked (WAL)
        finally:
            blocker.rollback()
            blocker.close()
        again = c.post("/api/v1/share", json={**VIEW, "unit": 9})
        assert again.status_code == 200
        assert c.app.state.shares.store.count() == 2
        assert c.get(f"/api/v1/share/{old}").status_code == 200


def test_a_damaged_stored_view_is_a_clear_410(client, tmp_path):
    sid = client.post("/api/v1/share", json=VIEW).json()["id"]
    con = sqlite3.connect(tmp_path / "data" / "shares.sqlite3")
    con.execute("UPDATE shares SET view = ? WHERE id = ?", ("[1, 2]", sid))
    con.commit()
    con.close()
    r = client.get(f"/api/v1/share/{sid}")
    assert r.status_code == 410 and "is damaged in the database" in r.json()["detail"]
    page = client.get(f"/s/{sid}")
    assert page.status_code == 410 and "is damaged in the database" in page.text
