"""Neuron pages and /api/v1/neurons: from an atlas, without one, and with a broken or stale one."""

from __future__ import annotations

import json
import re
from html import unescape

import numpy as np
import pytest

from app.probe.service import weights_fingerprint
from app.ui.scale import neuron_scale
from models.atlas import ATLAS_FILE, build_atlas, save_atlas
from models.checkpoint import load_checkpoint
from models.trace import run_trace
from tests.conftest import write_tiny_model

from tests.app.conftest import make_client

HELD_OUT = ('"Come here," said she. "What is it?" He did not answer (not at once).\n'
            "They walked on [slowly] for a while; the road was long and dry.\n") * 4


@pytest.fixture(scope="module")
def atlas_models(tmp_path_factory):
    """Its own folder, so the shared tiny models never get an atlas: with-atlas has one, no-atlas none."""
    root = tmp_path_factory.mktemp("atlas-models")
    for name in ("with-atlas", "no-atlas"):
        write_tiny_model(root / name, "lstm", seed=5, card={"corpus": "tiny"})
    ck = load_checkpoint(root / "with-atlas")
    atlas = build_atlas(ck, HELD_OUT, top=4)
    atlas["model"] = {"name": "with-atlas", "weights_sha256": weights_fingerprint(root / "with-atlas")}
    save_atlas(root / "with-atlas", atlas)
    return root, atlas


@pytest.fixture()
def aclient(atlas_models):
    with make_client(atlas_models[0], default_model="with-atlas") as c:
        yield c


def test_api_serves_the_atlas_view_of_a_unit(aclient, atlas_models):
    _, atlas = atlas_models
    r = aclient.get("/api/v1/neurons/with-atlas/1/h/6")
    assert r.status_code == 200, r.text
    body = r.json()
    block = atlas["layers"]["1"]["h"]
    assert body["atlas"] is True and body["atlas_problem"] is None and body["atlas_chars"] == len(HELD_OUT)
    assert body["histogram"]["counts"] == block["hist"][6] and sum(body["histogram"]["counts"]) == len(HELD_OUT)
    edges = body["histogram"]["edges"]
    assert len(edges) == 25 and edges[0] == pytest.approx(block["min"][6]) and edges[-1] == pytest.approx(block["max"][6])
    # contexts come from the unit's values over the atlas's text (traced as the page traces text)
    x = _unit_values(atlas_models[0] / "with-atlas", HELD_OUT, 1, "h", 6)
    assert body["contexts_problem"] is None
    top, bottom = body["top"], body["bottom"]
    assert top[0]["position"] == int(np.argmax(x)) and top[0]["value"] == pytest.approx(float(x.max()), abs=1e-3)
    assert bottom[0]["position"] == int(np.argmin(x)) and bottom[0]["value"] == pytest.approx(float(x.min()), abs=1e-3)
    assert [c["value"] for c in top] == sorted((c["value"] for c in top), reverse=True)
    assert [c["value"] for c in bottom] == sorted(c["value"] for c in bottom)
    for items in (top, bottom, body["quantiles"]):
        spans = []
        for c in items:
            p = c["position"]
            assert c["char"] == HELD_OUT[p] and HELD_OUT[:p].endswith(c["before"]) and HELD_OUT[p + 1:].startswith(c["after"])
            assert c["value"] == pytest.approx(float(x[p]), abs=1e-3)
            assert len(c["before"]) == min(p, 90) and len(c["after"]) == min(len(HELD_OUT) - p - 1, 30)
            spans.append((p - len(c["before"]), p + 1 + len(c["after"])))
        spans.sort()
        if items is not body["quantiles"]:  # a quantile's sample keeps to its quantile first (this text is short)
            assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), spans  # no two share a character
    assert len(top) >= 3  # HELD_OUT is one paragraph of ~560 characters: room for 4 windows of 120
    assert [c["q"] for c in body["quantiles"]] == [0.1, 0.3, 0.5, 0.7, 0.9]
    ranks = np.argsort(np.argsort(x, kind="stable"), kind="stable")
    for c in body["quantiles"]:  # each sample sits at its quantile, give or take QUANTILE_BAND of the ranks
        assert abs(ranks[c["position"]] - int(c["q"] * len(x))) <= max(1, int(0.02 * len(x)))
    assert {p["probe"] for p in body["probes"]} == set(block["probe_scores"])
    assert [p["score"] for p in body["probes"]] == sorted((p["score"] for p in body["probes"]), reverse=True)
    # top layer h: pushes from the atlas, and they are the output layer's column for this unit
    assert [p["char"] for p in body["pushes_up"]] == [c for c, _ in block["pushes"]["up"][6]]
    w = load_checkpoint(atlas_models[0] / "with-atlas").model.head.weight.detach().numpy()[:, 6]
    assert body["pushes_up"][0]["weight"] == pytest.approx(float(w.max()), abs=1e-4)
    assert body["pushes_down"][0]["weight"] == pytest.approx(float(w.min()), abs=1e-4)


def _unit_values(folder, text: str, layer: int, state: str, unit: int) -> np.ndarray:
    """The unit over `text` as the server traces it (float16, every state worked out)."""
    ck = load_checkpoint(folder)
    tr = run_trace(ck.model, ck.vocab, text, topk=0, half=True, lazy=True)
    return tr.states[layer].arrays()[state][:, unit].astype(np.float32)


def test_pushes_only_for_the_top_layers_h(aclient):
    assert aclient.get("/api/v1/neurons/with-atlas/0/h/6").json()["pushes_up"] is None
    assert aclient.get("/api/v1/neurons/with-atlas/1/c/6").json()["pushes_up"] is None


def test_without_an_atlas_the_api_says_how_to_build_one_and_still_gives_pushes(aclient, atlas_models):
    r = aclient.get("/api/v1/neurons/no-atlas/1/h/2")
    assert r.status_code == 200
    body = r.json()
    assert body["atlas"] is False and body["histogram"] is None and body["top"] == [] and body["probes"] == []
    assert "no atlas has been built for no-atlas yet: run `rnnscope atlas no-atlas`" in body["atlas_problem"]
    w = load_checkpoint(atlas_models[0] / "no-atlas").model.head.weight.detach().numpy()[:, 2]
    ck = load_checkpoint(atlas_models[0] / "no-atlas")
    assert [p["char"] for p in body["pushes_up"]] == [ck.vocab.chars[i] for i in np.argsort(-w, kind="stable")[:8]]
    assert [p["char"] for p in body["pushes_down"]] == [ck.vocab.chars[i] for i in np.argsort(w, kind="stable")[:8]]


def test_a_saved_atlas_is_readable_by_other_users(atlas_models):
    """A server running as another user (the Docker image's) must be able to read it."""
    mode = (atlas_models[0] / "with-atlas" / ATLAS_FILE).stat().st_mode & 0o777
    assert mode == 0o644


def test_neuron_page_with_an_atlas(aclient, atlas_models):
    r = aclient.get("/neuron/with-atlas/1/h/6")
    assert r.status_code == 200 and r.text.startswith("<!doctype html>")
    html = r.text
    assert "<title>with-atlas · layer 1 · h · unit 6 · neuron · rnnscope</title>" in html
    bars = re.findall(r'<rect class="bar" x="[0-9.]+" y="[0-9.]+" width="[0-9.]+" height="([0-9.]+)" style="--v:-?[0-9.]+">', html)
    counts = atlas_models[1]["layers"]["1"]["h"]["hist"][6]
    assert len(bars) == 24
    tallest = max(range(24), key=lambda k: counts[k])
    assert float(bars[tallest]) == max(float(b) for b in bars) and all((float(b) == 0) == (c == 0) for b, c in zip(bars, counts))
    assert "Most positive" in html and "Most negative" in html and "Across its range" in html
    assert "10th percentile" in html and "90th percentile" in html
    assert "Best-matching probes" in html and "Next characters it pushes" in html
    assert 'href="/?model=with-atlas&amp;layer=1&amp;state=h&amp;unit=6"' in html  # back to the main view
    assert 'href="/neuron/with-atlas/1/h/5" rel="prev"' in html and 'href="/neuron/with-atlas/1/h/7" rel="next"' in html
    assert "<script>" not in html and "no atlas" not in html


def test_neuron_page_without_an_atlas(aclient):
    r = aclient.get("/neuron/no-atlas/1/h/0")
    assert r.status_code == 200
    assert "`rnnscope atlas no-atlas`" in r.text
    assert "<rect" not in r.text and "Next characters it pushes" in r.text and 'class="push-bar"' in r.text
    assert 'rel="prev"' not in r.text  # unit 0 has no previous unit
    r = aclient.get("/neuron/no-atlas/0/f/15")
    assert r.status_code == 200 and "Only the top layer&#39;s h (layer 1 · h) feeds the output layer" in r.text
    assert 'rel="next"' not in r.text


@pytest.mark.parametrize("content, fragment", [
    ("{not json", "is corrupt"),
    ('{"version": 99}', "has version 99"),
    ("[1, 2, 3]", "is malformed"),
    ('{"version": 1, "text": "abc", "layers": {"1": {"h": {"min": [0, 0]}}}}', "is malformed"),
    ('{"version": 1, "text": "abc", "layers": {}}', "the atlas has no layer 1 state 'h'"),
])
def test_broken_atlas_is_a_message_never_a_500(tmp_path, content, fragment):
    write_tiny_model(tmp_path / "broken", "lstm", seed=5)
    (tmp_path / "broken" / ATLAS_FILE).write_text(content, encoding="utf-8")
    with make_client(tmp_path, default_model="broken") as c:
        api = c.get("/api/v1/neurons/broken/1/h/1")
        page = c.get("/neuron/broken/1/h/1")
    assert api.status_code == 200 and page.status_code == 200
    assert fragment in api.json()["atlas_problem"] and "rnnscope atlas broken" in api.json()["atlas_problem"]
    assert api.json()["pushes_up"] is not None  # what the weights give is still there
    assert "rnnscope atlas broken" in page.text


def test_an_atlas_built_for_other_weights_is_not_shown(tmp_path, atlas_models):
    write_tiny_model(tmp_path / "retrained", "lstm", seed=6)
    atlas = json.loads((atlas_models[0] / "with-atlas" / ATLAS_FILE).read_text())
    (tmp_path / "retrained" / ATLAS_FILE).write_text(json.dumps(atlas))  # carries with-atlas's fingerprint
    with make_client(tmp_path, default_model="retrained") as c:
        body = c.get("/api/v1/neurons/retrained/1/h/1").json()
    assert body["atlas"] is False and "was built for other weights of retrained" in body["atlas_problem"]


def test_atlas_is_read_once_and_reread_when_the_file_changes(tmp_path, atlas_models):
    write_tiny_model(tmp_path / "m", "lstm", seed=5)
    with make_client(tmp_path, default_model="m") as c:
        assert c.get("/api/v1/neurons/m/0/h/0").json()["atlas"] is False
        svc = c.app.state.probes
        first = svc.atlas(c.app.state.registry.get("m"))
        assert svc.atlas(c.app.state.registry.get("m")) is first  # cached
        ck = load_checkpoint(tmp_path / "m")
        save_atlas(tmp_path / "m", build_atlas(ck, HELD_OUT, top=3))
        assert c.get("/api/v1/neurons/m/0/h/0").json()["atlas"] is True


@pytest.mark.parametrize("path, status, fragment", [
    ("/neuron/nope/0/h/0", 404, "unknown model &#39;nope&#39;"),
    ("/neuron/with-atlas/2/h/0", 404, "layer 2 is out of range: this model has layers 0..1"),
    ("/neuron/with-atlas/0/z/0", 404, "state &#39;z&#39; does not exist in a lstm model"),
    ("/neuron/with-atlas/0/h/16", 404, "unit 16 is out of range: this model has units 0..15"),
    ("/neuron/with-atlas/zero/h/1", 404, "layer must be a whole number, got &#39;zero&#39;"),
])
def test_neuron_page_for_a_unit_that_does_not_exist(aclient, path, status, fragment):
    r = aclient.get(path)
    assert r.status_code == status and r.text.startswith("<!doctype html>")
    assert "No such unit" in r.text and fragment in r.text


@pytest.mark.parametrize("path, status, fragment", [
    ("/api/v1/neurons/nope/0/h/0", 404, "unknown model 'nope'"),
    ("/api/v1/neurons/with-atlas/0/h/16", 422, "unit 16 is out of range"),
    ("/api/v1/neurons/with-atlas/0/q/1", 422, "state 'q' does not exist"),
    ("/api/v1/neurons/with-atlas/x/h/1", 422, "layer: Input should be a valid integer"),
])
def test_neuron_api_bad_paths(aclient, path, status, fragment):
    r = aclient.get(path)
    assert r.status_code == status and fragment in r.json()["detail"]


def _context_items(html: str, list_id: str) -> list[str]:
    part = html.split(f'id="{list_id}"')[1].split("</ol>")[0]
    return re.findall(r"<li>(.*?)</li>", part, re.S)


def test_neuron_page_contexts_are_coloured_by_the_unit_as_the_main_view_colours_it(aclient, atlas_models):
    html = aclient.get("/neuron/with-atlas/1/c/6").text
    x = _unit_values(atlas_models[0] / "with-atlas", HELD_OUT, 1, "c", 6)
    scale = neuron_scale("c", x)  # c is unbounded: the held-out text's own spread, as on the main page
    assert f'<span class="sw" style="--v:-1.000">{scale.lo:+g}</span>' in html  # the contexts' legend
    body = aclient.get("/api/v1/neurons/with-atlas/1/c/6").json()
    items = _context_items(html, "ctx-top")
    assert len(items) == len(body["top"]) >= 3
    for item, c in zip(items, body["top"]):
        spans = re.findall(r'<span class="ch( active)?" style="--v:(-?[0-9.]+)" title="([^"]*)">(.*?)</span>', item)
        shown = "".join(unescape(ch) for *_, ch in spans)
        start = c["position"] - len(c["before"])
        want = (c["before"] + c["char"] + c["after"]).replace("\n", "↵")
        assert shown.endswith(want)  # (after the lead-in, when the run began further back)
        body_spans = spans[len(spans) - len(want):]
        np.testing.assert_allclose([float(v) for _, v, _, _ in body_spans],
                                   scale.positions(x[start:start + len(want)]), atol=1e-3)
        active = [k for k, (a, *_rest) in enumerate(body_spans) if a]
        assert active == [len(c["before"])]  # the character just read is the outlined one
        assert f'{c["value"]:+.3f} · position {c["position"]:,}' in item
    q = _context_items(html, "ctx-quantiles")
    assert [re.search(r"([+-][0-9.]+) · (\d+)th percentile", i).group(2) for i in q] == ["10", "30", "50", "70", "90"]
    assert "<mark>" not in html  # every context is coloured


def test_a_busy_server_leaves_the_atlas_places_uncoloured_and_says_why(aclient, monkeypatch):
    from app.core.slots import Overloaded

    def busy(*args, **kwargs):
        raise Overloaded("the server is busy: every model slot is taken; try again in a few seconds", retry_after=5)

    monkeypatch.setattr(aclient.app.state.probes.traces, "view_trace", busy)
    body = aclient.get("/api/v1/neurons/with-atlas/1/h/3").json()
    assert body["contexts_problem"].startswith("the contexts below are not coloured and carry no values: the server is busy")
    assert body["top"] and all(c["value"] is None and c["lead"] is None for c in body["top"])
    html = aclient.get("/neuron/with-atlas/1/h/3").text
    assert "the contexts below are not coloured" in html and "<mark>" in html and 'class="ch' not in html
    assert "10th percentile" in html


def test_context_picking_takes_distinct_passages_and_a_lead_in_where_the_run_began():
    from app.probe.contexts import AFTER, BEFORE, extremes, passages, quantile_samples, window

    paragraphs = []
    for k in range(12):
        narration = " ".join(["told"] * 60)
        words = " ".join(["word"] * (30 + 5 * k))
        paragraphs.append(f'{narration} {k}. "{words}," said she.')
    text = "\n\n".join(paragraphs)
    x = np.full(len(text), -1.0)
    opened = None
    for t, ch in enumerate(text):
        if ch == '"':
            opened = t if opened is None else None
        if opened is not None:
            x[t] = 1.0 + (t - opened) / 100  # a quote cell that grows the longer a quotation runs
    top = extremes(text, x, 8, high=True)
    assert len(top) == 8 and [c.value for c in top] == sorted((c.value for c in top), reverse=True)
    ids = passages(text)
    assert len({int(ids[c.position]) for c in top}) == 8  # one per paragraph
    for c in top:
        shown = "".join(text[a:b] for a, b in c.pieces)
        assert '"' in shown  # the opening quote is on screen
        opening = text.rfind('"', 0, c.position + 1)
        assert any(a <= opening < b for a, b in c.pieces)
        assert c.main[0] <= max(0, c.position - BEFORE) and c.main[1] == min(len(text), c.position + 1 + AFTER)
    assert all(c.lead is not None for c in top)  # every quotation here is longer than the window
    # where the run began within reach of the window, one stretch; further back, a lead-in and the window
    assert window(1000, 500, 420) == ((410, 531),) and window(1000, 500, 395) == ((375, 531),)
    assert window(1000, 500, 300) == ((280, 330), (410, 531)) and window(1000, 500, None) == ((410, 531),)
    covered = sorted(piece for c in top for piece in c.pieces)
    assert all(a[1] <= b[0] for a, b in zip(covered, covered[1:]))  # nothing shown twice
    qs = quantile_samples(text, x, (0.1, 0.5, 0.9))
    assert [c.q for c in qs] == [0.1, 0.5, 0.9] and qs[0].value <= qs[1].value <= qs[2].value
    assert len({int(ids[c.position]) for c in qs}) == 3
    assert extremes("", np.zeros(0), 8, high=True) == [] and quantile_samples("", np.zeros(0), (0.5,)) == []
