// The main view's training-step slider (templates/_timeline_slider.html): the range walks the model's
// snapshots in step order with the final weights last; the number box (#snapshot, blank = final) is what
// the form sends. Moving the range sets the box and fires the form's change, so static/app.js repaints
// the spans on screen (POST /ui/paint) as it does for a unit step. A model change refills or hides the
// field from #snapshot-field's data-models. No inline script (CSP); delegated from `document`.
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);

  function modelData() {
    const field = $("snapshot-field"), model = $("model");
    if (!field || !model) return null;
    try { return JSON.parse(field.dataset.models || "{}")[model.value] || null; } catch (err) { return null; }
  }

  // Put the range at position i (the final weights at steps.length) and say where that is.
  function place(i, d, setBox) {
    const slider = $("snapshot-slider"), box = $("snapshot"), out = $("snapshot-out");
    if (!slider || !d) return;
    const n = d.steps.length, at = Math.max(0, Math.min(n, i));
    const label = at === n ? d.final : d.labels[at];
    slider.value = String(at);
    slider.setAttribute("aria-valuetext", label);
    if (out) out.textContent = label;
    if (setBox && box) box.value = at === n ? "" : String(d.steps[at]);
  }

  function send() {
    const box = $("snapshot");
    if (box) box.dispatchEvent(new Event("change", { bubbles: true }));
  }

  // A key on the range sends at once (a step, as j/k is for the unit); a drag waits for a pause.
  let keyed = false, dragTimer = 0;
  document.addEventListener("keydown", (e) => { keyed = e.target.id === "snapshot-slider"; }, true);
  document.addEventListener("pointerdown", () => { keyed = false; }, true);
  document.addEventListener("input", function (e) {
    if (e.target.id !== "snapshot-slider") return;
    place(Number(e.target.value), modelData(), true);
    clearTimeout(dragTimer);
    if (keyed) send(); else dragTimer = setTimeout(send, 80);
  }, true);

  document.addEventListener("change", function (e) {
    const t = e.target;
    if (t.id === "snapshot-slider") { e.stopPropagation(); return; } // its input events already sent the step
    if (t.id === "snapshot") { // a typed step: the range follows when it is one of the snapshots
      const d = modelData();
      if (!d) return;
      const v = t.value.trim();
      const i = v === "" ? d.steps.length : d.steps.indexOf(Number(v));
      if (i >= 0 && /^\d*$/.test(v)) place(i, d, false);
      return;
    }
    if (t.id !== "model") return;
    // Another model has other steps (or none): back to its final weights before the form sends the change.
    const field = $("snapshot-field");
    if (!field) return;
    const d = modelData(), slider = $("snapshot-slider"), box = $("snapshot"), list = $("snapshot-steps");
    field.hidden = !d;
    if (slider) { slider.disabled = !d; slider.max = String(d ? d.steps.length : 0); }
    if (box) { box.disabled = !d; box.value = ""; }
    if ($("err-snapshot")) $("err-snapshot").textContent = "";
    if (list) list.replaceChildren(...(d ? d.steps : []).map((s) => new Option("", String(s))));
    if (d) place(d.steps.length, d, true);
    else if ($("snapshot-out")) $("snapshot-out").textContent = "";
  }, true);

  // ↑/↓ in the number box go to the next or previous snapshot, not to the next whole number.
  document.addEventListener("keydown", function (e) {
    if (e.target.id !== "snapshot" || (e.key !== "ArrowUp" && e.key !== "ArrowDown")) return;
    const d = modelData();
    if (!d || e.altKey || e.ctrlKey || e.metaKey) return;
    e.preventDefault();
    const v = e.target.value.trim(), n = d.steps.length;
    let i;
    if (v === "" || !/^\d+$/.test(v)) i = e.key === "ArrowUp" ? n : n - 1;
    else if (e.key === "ArrowUp") { i = d.steps.findIndex((s) => s > Number(v)); if (i < 0) i = n; }
    else { i = -1; d.steps.forEach((s, k) => { if (s < Number(v)) i = k; }); if (i < 0) i = 0; }
    place(i, d, true);
    send();
  });

  // The form's URL leaves a blank step out: no `snapshot` is the final weights.
  document.addEventListener("htmx:configRequest", function (e) {
    const elt = e.detail.elt;
    if (elt && (elt.id === "controls" || elt.id === "probe-form") && e.detail.parameters.snapshot === "") {
      delete e.detail.parameters.snapshot;
    }
  });

  // The next step in the direction of travel is traced while this one is looked at (a step's first visit
  // runs the model; the server shares a run already in flight), so walking the slider steps from the cache.
  const warmed = new Set();
  function warmNext(before, now) {
    const d = modelData(), form = $("controls"), view = $("view");
    if (!d || !form || !view || view.dataset.mode !== "neuron" || before === null) return;
    const index = (key) => (key === "final" ? d.steps.length : d.steps.indexOf(Number(key)));
    const from = index(before), at = index(now), next = at + Math.sign(at - from);
    if (from < 0 || at < 0 || next < 0 || next > d.steps.length || next === at) return;
    const body = new URLSearchParams(new FormData(form));
    body.set("snapshot", next === d.steps.length ? "" : String(d.steps[next]));
    const key = body.get("model") + "\u0000" + body.get("snapshot") + "\u0000" + body.get("text");
    if (warmed.has(key)) return;
    if (warmed.size > 200) warmed.clear();
    warmed.add(key);
    fetch("/ui/paint", { method: "POST", body: body, priority: "low",
      headers: { "Content-Type": "application/x-www-form-urlencoded" } }).catch(() => warmed.delete(key));
  }

  // Find units ranks the units of the weights on screen: a ranking shown goes stale when the step changes.
  let shown = null, rankTimer = 0;
  function stepChanged() {
    const view = $("view");
    const now = view ? view.dataset.snapshot || "" : "";
    const before = shown;
    shown = now;
    if (before === null || before === now) return;
    warmNext(before, now);
    const form = $("probe-form");
    if (!form || !window.htmx || !document.querySelector("#probe-results tr.pick-row")) return;
    clearTimeout(rankTimer);
    rankTimer = setTimeout(() => window.htmx.trigger(form, "rank"), 300);
  }
  document.addEventListener("DOMContentLoaded", stepChanged);
  document.addEventListener("rnnscope:painted", stepChanged);
  document.addEventListener("htmx:afterSettle", (e) => { if (e.detail.target && e.detail.target.id === "view") stepChanged(); });
})();
