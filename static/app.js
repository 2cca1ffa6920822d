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

  // ---- repaint: a unit, layer, state or compare change re-colours the spans on screen ----
  // The text's spans are rendered once (GET /); while the model, the text and the unit-value mode stay
  // the same, a change of the unit only fetches its values (POST /ui/paint: float16, base64) and sets
  // each span's colour class (app.ui.levels), so focus, the tooltip and the selection stay. Anything
  // else (a new text, another model, surprisal mode) is an htmx swap of the view as before.
  // <html data-repaint="off"> forces the swap for every change (bench/browser_speed.py compares both).
  let painting = null; // AbortController of the repaint in flight

  function canRepaint() {
    const view = $("view"), box = $("chars"), form = $("controls"), text = $("text"), model = $("model");
    if (document.documentElement.dataset.repaint === "off") return false;
    if (!view || !box || !form || !text || !model || !view.dataset.painted) return false;
    const mode = form.querySelector('input[name="mode"]:checked');
    return view.dataset.model === model.value && Boolean(mode) && mode.value === "neuron" &&
      box.textContent === text.value;
  }

  function float16s(b64) {
    const bin = atob(b64 || "");
    const out = new Float32Array(bin.length >> 1);
    for (let i = 0; i < out.length; i++) {
      const h = bin.charCodeAt(2 * i) | (bin.charCodeAt(2 * i + 1) << 8);
      const sign = h & 0x8000 ? -1 : 1, exp = (h >> 10) & 0x1f, frac = h & 0x3ff;
      out[i] = exp === 0 ? sign * frac * 5.960464477539063e-8 // 2^-24: subnormal
        : exp === 31 ? (frac ? NaN : sign * Infinity) : sign * (1 + frac / 1024) * Math.pow(2, exp - 15);
    }
    return out;
  }

  // The tooltip's surprisal and guesses of other weights (app.trace.views.compact_guesses): int16 hundredths
  // of a bit and thousandths, base64, -1 for none; the guesses one string, k a position. Out: data-trace's form.
  function guesses(g) {
    const ints = (b64) => {
      const bin = atob(b64 || ""), out = new Array(bin.length >> 1);
      for (let i = 0; i < out.length; i++) out[i] = ((bin.charCodeAt(2 * i) | (bin.charCodeAt(2 * i + 1) << 8)) << 16) >> 16;
      return out;
    };
    const cb = ints(g.s), pm = ints(g.p), k = g.k, top = Array.from(g.top || "");
    return {
      s: cb.map((x) => (x < 0 ? null : x / 100)),
      top: cb.map((_, i) => top.slice(i * k, i * k + k).join("")),
      p: cb.map((_, i) => pm.slice(i * k, i * k + k)),
    };
  }

  // A value's colour level, as app.ui.levels writes it: position v/hi in [-1, 1] (NaN -> 0) rounded to
  // one of 101 classes q0..q100; the compare bar: u1..u10 (below, positive) or o1..o10 (above, negative).
  const STEPS = 50, BAR_STEPS = 10;
  function clamp1(p) { return Number.isNaN(p) ? 0 : Math.max(-1, Math.min(1, p)); }
  function levelClass(x, hi) { return "q" + Math.round((clamp1(x / hi) + 1) * STEPS); }
  function barClass(x, hi) {
    const p = clamp1(x / hi), n = Math.round(Math.abs(p) * BAR_STEPS);
    return n ? (p > 0 ? "u" : "o") + n : "";
  }

  // Each span's current level and bar class, read once from the server's rendering, so a repaint
  // touches only the spans whose class changes.
  const levelCache = new WeakMap();
  function levelsOf(box) {
    let st = levelCache.get(box);
    if (!st) {
      st = { q: [], w: [] };
      Array.prototype.forEach.call(box.children, (span) => {
        const q = span.className.match(/(?:^| )(q\d+)(?= |$)/), w = span.className.match(/(?:^| )([uo]\d+)(?= |$)/);
        st.q.push(q ? q[1] : "");
        st.w.push(w ? w[1] : "");
      });
      levelCache.set(box, st);
    }
    return st;
  }

  function showErrors(errors) {
    Object.keys(errors).forEach((field) => {
      const slot = $("err-" + field);
      if (slot) slot.textContent = errors[field];
      else if (errors[field]) netError(errors[field]);
    });
  }

  function viewUrl(form) {
    const q = new URLSearchParams();
    new FormData(form).forEach((v, k) => { if (typeof v === "string" && !(k === "snapshot" && !v)) q.append(k, v); });
    const panel = window.rnnscopePanel ? window.rnnscopePanel() : null; // static/probe.js
    if (panel && panel.probe) q.set("probe", panel.probe);
    if (panel && panel.pattern) q.set("pattern", panel.pattern);
    return "/?" + q.toString();
  }

  // A long text is re-coloured where it can be seen first, the rest in slices over the next frames
  // (each class change costs Chromium a style recalculation: ~5 µs a span, 100 ms for 20,000).
  const SLICE = 3000;
  let paintRun = 0; // a newer repaint stops the slices of an older one

  function recolour(spans, st, from, to, v, hi, w, hi2) {
    for (let i = from; i < to; i++) {
      const q = levelClass(v[i], hi), bar = w ? barClass(w[i], hi2) : "";
      if (q !== st.q[i]) {
        if (st.q[i]) spans[i].classList.replace(st.q[i], q); else spans[i].classList.add(q);
        st.q[i] = q;
      }
      if (bar !== st.w[i]) {
        if (st.w[i]) spans[i].classList.remove(st.w[i]);
        if (bar) spans[i].classList.add(bar);
        st.w[i] = bar;
      }
    }
  }

  // [first, last) of the spans inside the text box's visible part, with a margin (binary search on layout).
  function visibleSpans(box) {
    const spans = box.children, n = spans.length;
    const r = box.getBoundingClientRect();
    const top = Math.max(r.top, 0), bottom = Math.min(r.bottom, window.innerHeight);
    const firstBelow = (y) => {
      let lo = 0, hi = n;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (spans[mid].getBoundingClientRect().bottom < y) lo = mid + 1; else hi = mid;
      }
      return lo;
    };
    if (bottom <= top) return [0, 0];
    return [Math.max(0, firstBelow(top) - 500), Math.min(n, firstBelow(bottom) + 500)];
  }

  function applyPaint(box, data) {
    const v = float16s(data.v), w = data.w ? float16s(data.w) : null;
    const spans = box.children, st = levelsOf(box), hi = data.hi || 1, hi2 = data.hi2 || 1, n = spans.length;
    const run = ++paintRun;
    if (n <= 2 * SLICE) recolour(spans, st, 0, n, v, hi, w, hi2);
    else {
      const [a, b] = visibleSpans(box);
      recolour(spans, st, a, b, v, hi, w, hi2);
      const rest = [];
      for (let i = b; i < n; i += SLICE) rest.push([i, Math.min(n, i + SLICE)]);
      for (let i = a; i > 0; i -= SLICE) rest.push([Math.max(0, i - SLICE), i]);
      const next = () => {
        if (run !== paintRun || box !== $("chars") || !rest.length) return;
        const [from, to] = rest.shift();
        recolour(spans, st, from, to, v, hi, w, hi2);
        requestAnimationFrame(() => setTimeout(next, 0));
      };
      requestAnimationFrame(() => setTimeout(next, 0));
    }
    const trace = traceOf(box).data;
    if (trace) {
      const nulls = (a) => Array.from(a, (x) => (Number.isNaN(x) ? null : x));
      trace.what = data.what;
      trace.v = nulls(v);
      if (w) { trace.what2 = data.what2; trace.w = nulls(w); } else { delete trace.what2; delete trace.w; }
      if (data.preds) Object.assign(trace, guesses(data.preds));
    }
    if (data.timeline !== undefined && $("timeline")) { // the time-lapse panel: mark, numbers and sample of the step
      const t = document.createElement("template");
      t.innerHTML = data.timeline; // the server's rendering (every value escaped by Jinja)
      if (t.content.firstElementChild) $("timeline").replaceWith(t.content.firstElementChild);
    }
    if (data.snapshot !== undefined) $("view").dataset.snapshot = data.snapshot;
    const top = $("view-top");
    if (top) {
      const t = document.createElement("template");
      t.innerHTML = data.top; // the server's rendering (app.ui.render: every value escaped)
      const fresh = t.content.firstElementChild;
      top.replaceWith(fresh);
      if (window.htmx) window.htmx.process(fresh); // the Share button is an htmx element
    }
    if ($("stats")) $("stats").textContent = data.stats;
    document.title = data.title;
    $("view").dataset.painted = data.painted;
    const active = box.querySelector(".ch.active");
    if (active && $("tip") && !$("tip").hidden) showTip(active);
  }

  function repaint(form) {
    const box = $("chars");
    if (painting) painting.abort();
    const ctl = new AbortController();
    painting = ctl;
    const busy = $("busy");
    if (busy) busy.classList.add("htmx-request");
    const url = viewUrl(form);
    const body = new URLSearchParams(new FormData(form));
    const panel = window.rnnscopePanel ? window.rnnscopePanel() : null; // the time-lapse chart follows its probe
    if (panel && panel.probe) body.set("probe", panel.probe);
    // Other weights (a training-step change) change the tooltip's surprisal and guesses too: ask for them.
    const view = $("view"), step = form.elements.snapshot;
    if (view && view.dataset.snapshot && step && !step.disabled && (step.value.trim() || "final") !== view.dataset.snapshot) {
      body.set("predictions", "1");
    }
    fetch("/ui/paint", {
      method: "POST", body: body, signal: ctl.signal,
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
    }).then((r) => r.json().catch(() => null).then((data) => {
      if (painting !== ctl || box !== $("chars")) return; // superseded, or the view was swapped meanwhile
      if (!data || !data.errors) { netError("the server answered " + r.status + "; the view was kept"); return; }
      showErrors(data.errors);
      if (!r.ok) return;
      netError("");
      applyPaint(box, data);
      // The URL (it holds the text: a 20,000-character text makes it ~60 KB) and the panel's marks wait
      // for the frame that shows the colours.
      requestAnimationFrame(() => setTimeout(() => {
        if (painting && painting !== ctl) return; // a newer step is on its way: it will set the URL
        const entry = { htmx: true };
        if (settingsOf(url) === settingsOf(location.href)) history.replaceState(entry, "", url);
        else {
          history.replaceState(entry, document.title, location.href); // so htmx restores this entry on back too
          history.pushState(entry, "", url);
        }
        document.dispatchEvent(new CustomEvent("rnnscope:painted", { detail: { painted: data.painted } }));
      }, 0));
    })).catch((err) => {
      if (err.name !== "AbortError" && painting === ctl) netError("cannot reach the server; the view was kept");
    }).finally(() => {
      if (painting !== ctl) return;
      painting = null;
      if (busy) busy.classList.remove("htmx-request");
    });
  }

  document.addEventListener("htmx:configRequest", function (e) {
    const form = e.detail.elt;
    if (!form || form.id !== "controls") return;
    if (!form.isConnected) {
      e.preventDefault(); // a delayed trigger of a form that a history restore has replaced: nothing to update
      return;
    }
    if (canRepaint()) {
      e.preventDefault();
      repaint(form);
    } else if (painting) {
      painting.abort(); // a swap is coming: a late repaint must not colour the new spans
      painting = null;
    }
  });

  // ---- a swapped view keeps the character that had focus (and its tooltip) when the text is the same ----
  let focusedAt = -1;
  document.addEventListener("htmx:beforeSwap", function (e) {
    const active = document.activeElement;
    focusedAt = e.detail.target && e.detail.target.id === "view" && active && active.parentElement &&
      active.parentElement.id === "chars" ? Array.prototype.indexOf.call(active.parentElement.children, active) : -1;
  });
  document.addEventListener("htmx:afterSettle", function (e) {
    if (focusedAt < 0 || !e.detail.target || e.detail.target.id !== "view") return;
    const box = $("chars");
    const span = box && box.children[focusedAt];
    focusedAt = -1;
    if (span) focusChar(span);
  });

  // ---- a trace that takes a while says how long it has been running ----------------------
  let tracingTimer = 0;
  document.addEventListener("htmx:beforeRequest", function (e) {
    if (!e.detail.elt || e.detail.elt.id !== "controls") return;
    const busy = $("busy"), started = Date.now();
    clearInterval(tracingTimer);
    if (busy) busy.textContent = "tracing…";
    tracingTimer = setInterval(() => {
      const s = Math.round((Date.now() - started) / 1000);
      if (busy && s >= 1) busy.textContent = "tracing… " + s + " s";
    }, 500);
  });
  document.addEventListener("htmx:afterRequest", function (e) {
    if (e.detail.elt && e.detail.elt.id === "controls") clearInterval(tracingTimer);
  });

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
