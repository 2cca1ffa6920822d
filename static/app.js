// rnnscope page behaviour that htmx does not cover: the unit slider and keys, model-dependent
// pickers, the second unit's on/off, and the per-character tooltip. Everything is delegated from `document`, so it keeps
// working after htmx swaps the view or restores a page from history. No inline script (CSP).
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const SHOW = { " ": "␣", "\n": "↵", "\t": "⇥" };
  const show = (ch) => SHOW[ch] || ch;

  // ---- unit: number input, slider, j/k -------------------------------------------------
  function setUnit(value, fire) {
    const unit = $("unit");
    const slider = $("unit-slider");
    if (!unit) return;
    const max = Number(unit.max || 0);
    const v = Math.max(0, Math.min(max, Math.round(Number(value) || 0)));
    unit.value = String(v);
    if (slider) slider.value = String(v);
    if (fire) unit.dispatchEvent(new Event("change", { bubbles: true }));
  }

  document.addEventListener("input", function (e) {
    if (e.target.id === "unit-slider") $("unit").value = e.target.value;
    else if (e.target.id === "unit" && $("unit-slider")) $("unit-slider").value = e.target.value;
  }, true);

  document.addEventListener("keydown", function (e) {
    if (e.key !== "j" && e.key !== "k") return;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target;
    const typing = t.isContentEditable || t.tagName === "TEXTAREA" || t.tagName === "SELECT" ||
      (t.tagName === "INPUT" && t.type !== "range" && t.type !== "number" && t.type !== "radio") ||
      t.id === "unit2" || t.id === "threshold";
    if (typing || !$("unit")) return;
    e.preventDefault();
    setUnit(Number($("unit").value) + (e.key === "j" ? 1 : -1), true);
  });

  // ---- pickers that depend on the model -------------------------------------------------
  document.addEventListener("change", function (e) {
    if (e.target.id === "text") {
      e.stopPropagation(); // typing already traced it (input + delay); a blur needs no new request
      return;
    }
    if (e.target.id !== "model") return;
    const opt = e.target.selectedOptions[0];
    if (!opt) return;
    const layers = Number(opt.dataset.layers);
    const hidden = Number(opt.dataset.hidden);
    const states = (opt.dataset.states || "h").split(" ");
    fillPickers($("layer"), $("state"), layers, states);
    fillPickers($("layer2"), $("state2"), layers, states);
    $("unit").max = String(hidden - 1);
    $("unit-slider").max = String(hidden - 1);
    $("unit-max").textContent = String(hidden - 1);
    setUnit(Math.min(Number($("unit").value) || 0, hidden - 1), false);
    const unit2 = $("unit2");
    if (unit2) {
      unit2.max = String(hidden - 1);
      unit2.value = String(Math.min(Number(unit2.value) || 0, hidden - 1));
    }
  }, true);

  function fillPickers(layer, state, layers, states) {
    if (!layer || !state) return;
    const keepLayer = Math.min(Number(layer.value) || 0, layers - 1);
    const keepState = states.includes(state.value) ? state.value : states[0];
    layer.replaceChildren(...Array.from({ length: layers }, (_, k) => new Option(String(k), String(k), false, k === keepLayer)));
    state.replaceChildren(...states.map((s) => new Option(s, s, false, s === keepState)));
  }

  // ---- second unit: the checkbox enables its fields (disabled fields are not sent: off) ----
  document.addEventListener("change", function (e) {
    if (e.target.id !== "compare") return;
    ["layer2", "state2", "unit2"].forEach((id) => { if ($(id)) $(id).disabled = !e.target.checked; });
  }, true);

  // ---- history: a setting change is a new entry; typing only updates the current one ----
  function settingsOf(url) {
    const params = new URL(url, location.href).searchParams;
    params.delete("text");
    params.sort();
    return params.toString();
  }
  document.addEventListener("htmx:beforeHistoryUpdate", function (e) {
    const h = e.detail.history;
    if (h && h.type === "push" && location.search && settingsOf(h.path) === settingsOf(location.href)) {
      h.type = "replace";
    }
  });

  // ---- network trouble: say so beside the button ----------------------------------------
  function netError(msg) { const el = $("net-error"); if (el) el.textContent = msg; }
  document.addEventListener("htmx:responseError", (e) =>
    netError("the server answered " + e.detail.xhr.status + "; the view was kept"));
  document.addEventListener("htmx:sendError", () => netError("cannot reach the server; the view was kept"));
  document.addEventListener("htmx:afterRequest", (e) => { if (e.detail.successful) netError(""); });

  // ---- tooltip: value, surprisal, top-5 next characters ---------------------------------
  const dataCache = new WeakMap(); // #chars element -> {data, index: Map(span -> position)}

  function traceOf(box) {
    let entry = dataCache.get(box);
    if (!entry) {
      let data = null;
      try { data = JSON.parse(box.dataset.trace || "null"); } catch (err) { data = null; }
      const index = new Map();
      Array.prototype.forEach.call(box.children, (span, i) => index.set(span, i));
      entry = { data, index };
      dataCache.set(box, entry);
    }
    return entry;
  }

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function row(label, value) {
    const r = el("div", "tip-row");
    r.append(el("span", "", label), el("span", "", value));
    return r;
  }

  function showTip(span) {
    const box = span.parentElement;
    const tip = $("tip");
    if (!box || box.id !== "chars" || !tip) return;
    const { data, index } = traceOf(box);
    const i = index.get(span);
    if (!data || i === undefined) return;
    box.querySelectorAll(".ch.active").forEach((s) => s.classList.remove("active"));
    span.classList.add("active");
    const next = box.children[i + 1] ? box.children[i + 1].textContent : null;
    tip.replaceChildren();
    const head = el("div", "tip-head");
    head.append(el("code", "", show(span.textContent)), document.createTextNode(" at position " + i));
    tip.append(head);
    if (span.classList.contains("unk")) tip.append(el("div", "", "never seen in training: read as the unknown character"));
    const v = data.v[i];
    tip.append(row(data.what, v === null ? "–" : v.toFixed(4)));
    if (data.w) {
      const w = data.w[i];
      tip.append(row(data.what2 + " (underline)", w === null || w === undefined ? "–" : w.toFixed(4)));
    }
    const bits = (x) => (x === null || x === undefined ? "–" : x.toFixed(2) + " bits");
    tip.append(row("surprisal of this character", i > 0 ? bits(data.s[i - 1]) : "– (first)"));
    if (next !== null) tip.append(row("surprisal of next " + show(next), bits(data.s[i])));
    const preds = el("div", "tip-preds");
    preds.append(el("div", "", "model's guesses for the next character"));
    const top = data.top[i] || "";
    const probs = data.p[i] || [];
    Array.from(top).forEach((ch, k) => {
      const p = probs[k] / 1000;
      const line = el("div", "pred" + (ch === next ? " actual" : ""));
      const bar = el("span", "bar");
      bar.style.setProperty("--p", String(p));
      line.append(el("code", "", show(ch)), bar, el("span", "", (p * 100).toFixed(1) + "%"));
      preds.append(line);
    });
    tip.append(preds);
    tip.hidden = false;
    place(tip, span);
  }

  function place(tip, span) {
    const view = tip.offsetParent || document.body;
    const vr = view.getBoundingClientRect();
    const r = span.getBoundingClientRect();
    let left = r.left - vr.left;
    const maxLeft = view.clientWidth - tip.offsetWidth - 8;
    left = Math.max(8, Math.min(left, maxLeft));
    let top = r.bottom - vr.top + 6;
    if (r.bottom + tip.offsetHeight + 12 > window.innerHeight && r.top - vr.top - tip.offsetHeight - 6 > 0) {
      top = r.top - vr.top - tip.offsetHeight - 6;
    }
    tip.style.left = left + "px";
    tip.style.top = top + "px";
  }

  function hideTip() {
    const tip = $("tip");
    if (tip) tip.hidden = true;
  }

  document.addEventListener("mouseover", function (e) {
    const span = e.target.closest ? e.target.closest("#chars > .ch") : null;
    if (span) showTip(span);
  });
  document.addEventListener("mouseout", function (e) {
    if (e.target.closest && e.target.closest("#chars") && !(e.relatedTarget && e.relatedTarget.closest && e.relatedTarget.closest("#chars"))) {
      if (!document.activeElement || !document.activeElement.closest || !document.activeElement.closest("#chars")) hideTip();
    }
  });
  // A mouse press in the text must not move focus (that would cancel a drag-selection, which
  // static/probe.js ranks units by); a plain click focuses the clicked character on release.
  let pressing = false;
  document.addEventListener("mousedown", function (e) {
    pressing = Boolean(e.target.closest && e.target.closest("#chars"));
  }, true);
  document.addEventListener("mouseup", function (e) {
    if (!pressing) return;
    pressing = false;
    const sel = window.getSelection();
    const span = e.target.closest ? e.target.closest("#chars > .ch") : null;
    if (span && (!sel || sel.isCollapsed)) focusChar(span);
  }, true);

  document.addEventListener("focusin", function (e) {
    const t = e.target;
    if (t.id === "chars") {
      if (pressing) return;
      const fromInside = e.relatedTarget && e.relatedTarget.closest && e.relatedTarget.closest("#chars");
      const first = t.querySelector(".ch.active") || t.firstElementChild;
      if (first && !fromInside) focusChar(first);
    } else if (t.classList && t.classList.contains("ch")) {
      showTip(t);
    }
  });
  document.addEventListener("focusout", function (e) {
    if (!(e.relatedTarget && e.relatedTarget.closest && e.relatedTarget.closest("#chars"))) {
      if (e.target.closest && e.target.closest("#chars")) hideTip();
    }
  });

  // The text is one tab stop; arrows walk it one character at a time (roving focus).
  function focusChar(span) {
    span.tabIndex = -1;
    span.focus({ preventScroll: false });
  }
  document.addEventListener("keydown", function (e) {
    const span = e.target.closest ? e.target.closest("#chars > .ch") : null;
    if (!span) {
      if (e.key === "Escape") hideTip();
      return;
    }
    let to = null;
    if (e.key === "ArrowRight") to = span.nextElementSibling;
    else if (e.key === "ArrowLeft") to = span.previousElementSibling;
    else if (e.key === "Home") to = span.parentElement.firstElementChild;
    else if (e.key === "End") to = span.parentElement.lastElementChild;
    else if (e.key === "Escape") { hideTip(); span.parentElement.focus(); return; }
    if (to) {
      e.preventDefault();
      focusChar(to);
      // static/probe.js extends the span selection on shift+arrows
      to.dispatchEvent(new CustomEvent("rnnscope:walk", { bubbles: true, detail: { from: span, extend: e.shiftKey } }));
    }
  });
})();

// Nav links to the other views carry the shared state (model, layer, state, unit, text) that
// this page's URL holds now; htmx keeps the URL current as the user works.
(function () {
  "use strict";
  const SHARED = ["model", "layer", "state", "unit", "text"];
  function carry(a) {
    const now = new URLSearchParams(location.search);
    const q = new URLSearchParams();
    SHARED.forEach((k) => { if (now.has(k)) q.set(k, now.get(k)); });
    const url = new URL(a.getAttribute("href"), location.href);
    url.search = q.toString();
    a.href = url.pathname + url.search;
  }
  ["pointerdown", "click", "focusin"].forEach((type) =>
    document.addEventListener(type, (e) => {
      const a = e.target.closest ? e.target.closest("a[data-carry]") : null;
      if (a && location.search) carry(a);
    }, true));
})();
