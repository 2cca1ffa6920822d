// "Find units" panel: pick a ranked unit into the main view, select a span of the text (mouse, or
// shift+arrows from a focused character) and rank units by it. Delegated from `document`, so it
// survives htmx swaps. No inline script (CSP); the ranking itself is an htmx request of #probe-form.
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const SHOW = { "\n": "↵", "\t": "⇥" };
  let span = null; // {start, end} in characters of the text shown, or null
  let anchor = null; // keyboard selection's fixed end
  let rankedKey = null; // model + text of the last ranking, to re-rank when either changes
  let rankTimer = 0;

  function rank(delay) {
    clearTimeout(rankTimer);
    const form = $("probe-form");
    if (!form || !window.htmx) return;
    rankTimer = setTimeout(() => window.htmx.trigger(form, "rank"), delay || 0);
  }
  const viewKey = () => ($("model") ? $("model").value : "") + "\u0000" + ($("text") ? $("text").value : "");

  // ---- a row of the ranking -> that unit in the main view (the main form's own request) ----
  function pick(row) {
    const layer = $("layer"), state = $("state"), unit = $("unit");
    if (!layer || !state || !unit) return;
    layer.value = row.dataset.layer;
    state.value = row.dataset.state;
    unit.value = row.dataset.unit;
    if ($("unit-slider")) $("unit-slider").value = row.dataset.unit;
    const neuron = document.querySelector('input[name=mode][value=neuron]');
    if (neuron) neuron.checked = true;
    markCurrent();
    unit.dispatchEvent(new Event("change", { bubbles: true }));
  }

  function markCurrent() {
    const l = $("layer") && $("layer").value, s = $("state") && $("state").value, u = $("unit") && $("unit").value;
    document.querySelectorAll("#probe-results tr.pick-row").forEach((tr) => {
      const on = tr.dataset.layer === l && tr.dataset.state === s && tr.dataset.unit === u;
      tr.classList.toggle("current", on);
      if (on) tr.setAttribute("aria-current", "true"); else tr.removeAttribute("aria-current");
      const alts = tr.closest("tbody.alt-states");
      if (on && alts && alts.hidden) expand(alts, true); // the unit on screen is one of a row's other states: show it
    });
  }

  // ---- a unit's other states: one row per unit, the rest behind its ▸ button (aria-expanded) ----
  function expand(alts, open) {
    alts.hidden = !open;
    const button = document.querySelector('#probe-results button.more-states[aria-controls="' + alts.id + '"]');
    if (!button) return;
    button.setAttribute("aria-expanded", open ? "true" : "false");
    button.textContent = (open ? "▾" : "▸") + "\u00a0" + (button.dataset.count || "");
  }

  document.addEventListener("click", function (e) {
    if (!e.target.closest) return;
    if (e.target.id === "span-clear") { setSpan(null); return; }
    const more = e.target.closest("#probe-results button.more-states");
    if (more) {
      const alts = $(more.getAttribute("aria-controls"));
      if (alts) expand(alts, more.getAttribute("aria-expanded") !== "true");
      return; // opening the list picks nothing
    }
    const row = e.target.closest("#probe-results tr.pick-row, #view .known-unit");
    if (row && !e.target.closest("a")) pick(row);
  });

  // ---- panel controls --------------------------------------------------------------------
  // What the threshold means on a unit's colour scale, in words (app.probe.views.threshold_meaning says the same).
  function thresholdMeaning(t) {
    if (t > 0) return Math.round(t * 100) + "% of the way from white to orange";
    if (t < 0) return Math.round(-t * 100) + "% of the way from white to purple";
    return "white: any positive value";
  }
  document.addEventListener("input", function (e) {
    if (e.target.id === "threshold") {
      const t = Number(e.target.value);
      if ($("threshold-out")) $("threshold-out").textContent = t.toFixed(2);
      if ($("threshold-meaning")) $("threshold-meaning").textContent = thresholdMeaning(t);
    }
    if (e.target.id === "text" && span) setSpan(null); // positions no longer mean the same characters
  });
  document.addEventListener("change", function (e) {
    if (e.target.id === "pattern" || e.target.id === "threshold") {
      e.stopPropagation(); // already ranked on input (debounced); a blur or release needs no new request
      return;
    }
    if (e.target.id === "probe") {
      const opt = e.target.selectedOptions[0];
      if ($("probe-title")) $("probe-title").textContent = opt ? opt.title : "";
      // only the regex probe has a pattern; a disabled field is neither sent nor part of the view
      if ($("pattern")) $("pattern").disabled = e.target.value !== "regex";
      syncUrl(true);
    }
  }, true);

  // ---- the probe (and the regex probe's pattern) are part of the view: keep them in the URL ----
  // #controls (and the Share button) include #probe and #pattern; the panel's default probe with no
  // pattern is left out, so the URL of a view that names no probe is what it always was.
  function panelParams() {
    const probe = $("probe"), pattern = $("pattern");
    if (!probe) return null;
    const pat = pattern && !pattern.disabled ? pattern.value : "";
    return { probe: probe.value && !(probe.value === probe.dataset.default && !pat) ? probe.value : "", pattern: pat };
  }

  function withPanel(params) {
    const p = panelParams();
    if (!p) return params;
    if (p.probe) params.set("probe", p.probe); else params.delete("probe");
    if (p.pattern) params.set("pattern", p.pattern); else params.delete("pattern");
    return params;
  }

  // A probe change is a new history entry (back returns to the previous probe); typing a pattern only
  // updates the current one. Both are htmx-style entries ({htmx: true}), so htmx restores them on
  // back/forward by loading the URL, which renders the panel on that probe.
  window.rnnscopePanel = panelParams; // static/app.js puts the panel in the URL of a repainted view
  let urlTimer = 0;
  function syncUrl(push) {
    clearTimeout(urlTimer);
    const form = $("controls");
    if (!form || !window.history || !history.replaceState) return;
    // on / the URL holds the view; elsewhere (a /s/{id} link) the form does, as htmx would send it
    const base = location.pathname === "/" ? new URLSearchParams(location.search)
      : new URLSearchParams(Array.from(new FormData(form)).filter(([, v]) => typeof v === "string"));
    const query = withPanel(base).toString();
    if (location.pathname === "/" && query === new URLSearchParams(location.search).toString()) return; // same view
    const next = "/" + (query ? "?" + query : "");
    history.replaceState({ htmx: true }, document.title, location.href);
    // leaving a /s/{id} page always adds an entry, so back returns to the link as it was shared
    if (push || location.pathname !== "/") history.pushState({ htmx: true }, "", next);
    else history.replaceState({ htmx: true }, "", next);
  }

  document.addEventListener("input", function (e) {
    if (e.target.id !== "pattern") return;
    clearTimeout(urlTimer);
    urlTimer = setTimeout(() => syncUrl(false), 300);
  });

  document.addEventListener("htmx:configRequest", function (e) {
    const elt = e.detail.elt;
    if (!elt || elt.id !== "controls") return;
    const params = e.detail.parameters;
    const p = panelParams();
    if (!p || !p.probe) delete params.probe;
    if (!p || !p.pattern) delete params.pattern;
  });

  // ---- the selected span -------------------------------------------------------------------
  function indexOf(el) { return Array.prototype.indexOf.call(el.parentElement.children, el); }

  function setSpan(next, doRank) {
    span = next && next.end > next.start ? next : null;
    if ($("span-start")) $("span-start").value = span ? String(span.start) : "";
    if ($("span-end")) $("span-end").value = span ? String(span.end) : "";
    paint();
    const info = $("span-info");
    if (info) {
      if (!span) info.textContent = "none yet: drag over the text, or focus a character and press shift+→";
      else {
        const box = $("chars");
        const chars = box ? Array.prototype.slice.call(box.children, span.start, span.end).map((c) => SHOW[c.textContent] || c.textContent).join("") : "";
        const shown = chars.length > 40 ? chars.slice(0, 29) + "…" + chars.slice(-10) : chars;
        info.textContent = "characters " + span.start + "–" + span.end + " (" + (span.end - span.start) + "): “" + shown + "”";
      }
    }
    if (span && doRank) {
      const sel = document.querySelector('#probe-form input[name=source][value=selection]');
      if (sel) sel.checked = true;
      rank(doRank === "soon" ? 300 : 0);
    }
  }

  function paint() {
    const box = $("chars");
    if (!box) return;
    box.querySelectorAll(".ch.sel").forEach((c) => c.classList.remove("sel"));
    if (!span) return;
    const kids = box.children;
    for (let i = span.start; i < Math.min(span.end, kids.length); i++) kids[i].classList.add("sel");
  }

  // A selection boundary (node, offset) -> how many characters of the text lie before it.
  function boundary(box, node, offset) {
    const el = node.nodeType === 3 ? node.parentElement : node;
    const ch = el && el.closest ? el.closest("#chars > .ch") : null;
    if (ch) return offset === 0 ? indexOf(ch) : indexOf(ch) + 1;
    if (node === box) return Math.min(offset, box.children.length);
    const all = document.createRange();
    all.selectNodeContents(box);
    return all.comparePoint(node, offset) < 0 ? 0 : box.children.length;
  }

  document.addEventListener("mouseup", function () {
    const box = $("chars");
    const sel = window.getSelection();
    if (!box || !sel || sel.isCollapsed || !sel.rangeCount) return;
    const range = sel.getRangeAt(0);
    if (!range.intersectsNode(box)) return;
    const start = boundary(box, range.startContainer, range.startOffset);
    const end = boundary(box, range.endContainer, range.endOffset);
    if (end <= start) return;
    sel.removeAllRanges(); // the .sel outline shows it from here on, and survives re-colouring
    anchor = null;
    setSpan({ start, end }, true);
  });

  document.addEventListener("rnnscope:walk", function (e) {
    const to = e.target;
    if (!e.detail || !e.detail.extend) { anchor = null; return; }
    if (anchor === null) anchor = indexOf(e.detail.from);
    const at = indexOf(to);
    setSpan({ start: Math.min(anchor, at), end: Math.max(anchor, at) + 1 }, "soon");
  });

  // A busy server (503) still answers the panel with its message: show it there, not as a network error.
  document.addEventListener("htmx:beforeSwap", function (e) {
    const xhr = e.detail.xhr;
    if (e.detail.elt && e.detail.elt.id === "probe-form" && xhr && xhr.status === 503 &&
        (xhr.responseText || "").includes('id="probe-results"')) {
      e.detail.shouldSwap = true;
      e.detail.isError = false;
    }
  });

  // ---- after a swap: restore the span's outline, mark the current unit, re-rank stale results ----
  document.addEventListener("htmx:configRequest", function (e) {
    if (e.detail.elt && e.detail.elt.id === "probe-form") rankedKey = viewKey();
  });
  function afterViewChange(viewChanged) {
    paint();
    markCurrent();
    if (viewChanged && rankedKey !== null && rankedKey !== viewKey()) rank(0);
  }
  document.addEventListener("htmx:afterSettle", function (e) {
    afterViewChange(Boolean(e.detail.target && e.detail.target.id === "view"));
  });
  document.addEventListener("rnnscope:painted", () => afterViewChange(true)); // static/app.js repainted the spans
})();
