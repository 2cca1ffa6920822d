// /compare: candidate clicks, "use as anchor", the match-by switch, and the panels read together (hovering
// or walking a character shows every model's value there). static/app.js fills the anchor's pickers on a
// model change and steps its unit with j/k. Everything is delegated from `document` (htmx swaps the result
// block); no inline script (CSP). The state stays in the URL: picks travel as hidden inputs of #cmp-picks.
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const SHOW = { " ": "␣", "\n": "↵", "\t": "⇥" };
  const show = (ch) => SHOW[ch] || ch;
  const form = () => $("cmp-form");

  // ---- picks: which candidate a panel shows (none = its best match) ----
  function clearPicks() {
    const box = $("cmp-picks");
    if (box) box.replaceChildren();
  }
  function setPick(model, pick) {
    const box = $("cmp-picks");
    if (!box) return;
    Array.from(box.querySelectorAll('input[name="pick"]')).forEach((i) => {
      if (i.value.split(":").slice(0, -3).join(":") === model) i.remove(); // MODEL:LAYER:STATE:UNIT
    });
    const input = document.createElement("input");
    input.type = "hidden";
    input.name = "pick";
    input.value = model + ":" + pick;
    box.append(input);
  }
  // A change of the form's own settings (text, models, anchor, probe) starts from each model's best match.
  // Capture phase: this runs before htmx reads the form.
  ["input", "change"].forEach((type) => document.addEventListener(type, (e) => {
    const f = form();
    if (f && e.target.form === f) clearPicks();
  }, true));

  document.addEventListener("click", (e) => {
    const cand = e.target.closest ? e.target.closest(".cmp-panel .cand[data-pick]") : null;
    const f = form();
    if (!cand || !f) return;
    const panel = cand.closest(".cmp-panel");
    setPick(panel.dataset.model, cand.dataset.pick);
    f.requestSubmit();
  });

  // ---- the anchor's model is always compared: its box stays ticked (and off the form) when matching by unit ----
  function byUnit() {
    const r = document.querySelector('#cmp-form input[name="by"]:checked');
    return !r || r.value === "unit";
  }
  function syncModelBoxes() {
    const model = $("model");
    const unit = byUnit();
    document.querySelectorAll("#cmp-form .cmp-anchor-hint").forEach((hint) => hint.remove());
    document.querySelectorAll('#cmp-form input[name="models"]').forEach((box) => {
      const anchor = unit && model && box.value === model.value;
      if (anchor) {
        box.checked = true;
        const hint = document.createElement("span");
        hint.className = "hint cmp-anchor-hint";
        hint.textContent = "(the anchor's)";
        box.parentElement.append(" ", hint);
      }
      box.disabled = anchor;
    });
    document.querySelectorAll("#cmp-form .cmp-anchor-pick").forEach((g) => g.classList.toggle("cmp-off", !unit));
    document.querySelectorAll("#cmp-form .cmp-probe-pick").forEach((g) => g.classList.toggle("cmp-off", unit));
  }
  document.addEventListener("change", (e) => {
    if (!form() || e.target.form !== form()) return;
    if (e.target.id === "model" || e.target.name === "by") syncModelBoxes();
  }, true);

  // ---- "use as anchor": the panel's unit becomes the anchor ----
  document.addEventListener("click", (e) => {
    const btn = e.target.closest ? e.target.closest(".cmp-make-anchor") : null;
    const f = form();
    if (!btn || !f) return;
    const model = $("model");
    model.value = btn.dataset.model;
    model.dispatchEvent(new Event("change")); // not bubbling: static/app.js (capture) re-fills the pickers, htmx waits
    $("layer").value = btn.dataset.layer;
    $("state").value = btn.dataset.state;
    $("unit").value = btn.dataset.unit;
    if ($("unit-slider")) $("unit-slider").value = btn.dataset.unit;
    const unitRadio = f.querySelector('input[name="by"][value="unit"]');
    if (unitRadio) unitRadio.checked = true;
    syncModelBoxes();
    clearPicks();
    f.requestSubmit();
  });

  // ---- a busy server (503) answers with the result block saying so: show it in place ----
  document.addEventListener("htmx:beforeSwap", (e) => {
    const xhr = e.detail.xhr;
    if (e.detail.target && e.detail.target.id === "cmp-result" && xhr && xhr.status === 503 &&
        (xhr.responseText || "").includes('id="cmp-result"')) {
      e.detail.shouldSwap = true;
      e.detail.isError = false;
    }
  });

  // ---- the panels read together: one position outlined in all of them, each model's value there ----
  const values = new WeakMap(); // .cmp-chars -> its values (parsed once)
  function valuesOf(box) {
    if (!values.has(box)) values.set(box, JSON.parse(box.dataset.values || "[]"));
    return values.get(box);
  }
  let at = -1;
  function link(i) {
    at = i;
    document.querySelectorAll(".cmp-panel").forEach((panel) => {
      const box = panel.querySelector(".cmp-chars");
      const out = panel.querySelector(".cmp-readout");
      if (!box) return;
      box.querySelectorAll(".ch.linked").forEach((s) => s.classList.remove("linked"));
      const span = i >= 0 ? box.children[i] : null;
      if (span) span.classList.add("linked");
      if (out) {
        const v = i >= 0 ? valuesOf(box)[i] : undefined;
        out.textContent = span ? "‘" + show(span.textContent) + "’ at " + i + ": " +
          (v === null || v === undefined ? "–" : (v >= 0 ? "+" : "") + v.toFixed(4)) : "\u00a0";
      }
    });
  }
  const indexOf = (span) => Array.prototype.indexOf.call(span.parentElement.children, span);
  document.addEventListener("mouseover", (e) => {
    const span = e.target.closest ? e.target.closest(".cmp-chars > .ch") : null;
    if (span) link(indexOf(span));
  });
  document.addEventListener("mouseout", (e) => {
    const from = e.target.closest ? e.target.closest(".cmp-chars") : null;
    const to = e.relatedTarget && e.relatedTarget.closest ? e.relatedTarget.closest(".cmp-chars") : null;
    if (from && !to && !(document.activeElement && document.activeElement.classList.contains("cmp-chars"))) link(-1);
  });
  document.addEventListener("focusin", (e) => {
    if (e.target.classList && e.target.classList.contains("cmp-chars")) link(at >= 0 ? at : 0);
  });
  document.addEventListener("focusout", (e) => {
    if (e.target.classList && e.target.classList.contains("cmp-chars")) link(-1);
  });
  document.addEventListener("keydown", (e) => {
    const box = e.target.classList && e.target.classList.contains("cmp-chars") ? e.target : null;
    if (!box || e.ctrlKey || e.metaKey || e.altKey) return;
    const n = box.children.length;
    let to = -1;
    if (e.key === "ArrowRight") to = Math.min(n - 1, at + 1);
    else if (e.key === "ArrowLeft") to = Math.max(0, at - 1);
    else if (e.key === "Home") to = 0;
    else if (e.key === "End") to = n - 1;
    if (to < 0) return;
    e.preventDefault();
    link(to);
    const span = box.children[to];
    if (span && span.scrollIntoView) span.scrollIntoView({ block: "nearest" });
  });

  // ---- scrolling one panel's text scrolls the others to the same place ----
  let syncing = false;
  document.addEventListener("scroll", (e) => {
    const box = e.target;
    if (syncing || !box.classList || !box.classList.contains("cmp-chars")) return;
    const share = box.scrollTop / Math.max(1, box.scrollHeight - box.clientHeight);
    syncing = true;
    document.querySelectorAll(".cmp-chars").forEach((other) => {
      if (other !== box) other.scrollTop = share * Math.max(0, other.scrollHeight - other.clientHeight);
    });
    requestAnimationFrame(() => { syncing = false; });
  }, true);

  document.addEventListener("htmx:afterSettle", (e) => {
    if (e.detail.target && e.detail.target.id === "cmp-result") at = -1;
  });
})();
