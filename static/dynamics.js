// The dynamics views: stream generated characters (EventSource), sync the w_hh slider, pick a
// position by clicking a character, show an intervention's next-character guesses before and
// after the clamp, and walk a saturation scatter with the keyboard (static/app.js carries the
// shared URL state across the nav).
// No inline script (CSP); every listener is delegated from document.
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const SHOW = { " ": "␣", "\n": "↵", "\t": "⇥" };
  const show = (ch) => SHOW[ch] || ch;

  // ---- scalar RNN: the slider drives the number (the form sends only the number) ----
  document.addEventListener("input", (e) => {
    if (e.target.id === "w_hh-slider") $("w_hh").value = e.target.value;
    else if (e.target.id === "w_hh" && $("w_hh-slider")) $("w_hh-slider").value = e.target.value;
  }, true);

  // ---- gradient flow: click a character to differentiate from its position ----
  document.addEventListener("click", (e) => {
    const span = e.target.closest ? e.target.closest(".pickable .ch[data-t]") : null;
    const form = $("dyn-form");
    if (!span || !form || !$("position")) return;
    $("position").value = span.dataset.t;
    form.requestSubmit();
  });

  // ---- generate: one span per event, coloured as it arrives ----
  // Unbounded states (c, kept) start on the prime's scale; when the generated values outgrow it,
  // the scale widens (as app/scale.py: 95th percentile of |value|, rounded up) and every span is re-coloured.
  function nice(x) {
    if (!(x > 0) || !isFinite(x)) return 1;
    const e = Math.floor(Math.log10(x));
    for (const step of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (step * Math.pow(10, e) >= x * (1 - 1e-9)) return step * Math.pow(10, e);
    return Math.pow(10, e + 1);
  }
  function rescale(box, hi) {
    box.querySelectorAll(".ch[data-v]").forEach((span) => {
      const v = Number(span.dataset.v) / hi;
      span.style.setProperty("--v", String(Math.max(-1, Math.min(1, v)).toFixed(3)));
    });
    const sw = document.querySelectorAll("#gen-legend .sw");
    if (sw.length) {
      sw[0].textContent = "-" + hi;
      sw[sw.length - 1].textContent = "+" + hi;
    }
    const note = document.querySelector("#gen-legend .legend-note");
    if (note) note.textContent = "ends at the 95th percentile of |value| in the prime and the generated text";
  }
  function spread(box) {
    const a = Array.from(box.querySelectorAll(".ch[data-v]"), (s) => Math.abs(Number(s.dataset.v))).filter(isFinite);
    if (!a.length) return 0;
    a.sort((x, y) => x - y);
    const k = 0.95 * (a.length - 1); // numpy's default (linear) percentile
    const lo = Math.floor(k);
    return a[lo] + (a[Math.min(lo + 1, a.length - 1)] - a[lo]) * (k - lo);
  }

  function stream(box) {
    const status = $("gen-status");
    const stop = $("gen-stop");
    let what = "value";
    let total = 0;
    let count = 0;
    let done = false;
    let hi = 1;
    let bounded = true;
    const es = new EventSource(box.dataset.stream);
    box.setAttribute("aria-busy", "true");
    const say = (text, bad) => {
      if (!status) return;
      status.textContent = text;
      status.classList.toggle("err", !!bad);
    };
    const finish = (text, bad) => {
      done = true;
      es.close();
      box.removeAttribute("aria-busy");
      if (stop) stop.hidden = true;
      say(text, bad);
    };
    if (stop) {
      stop.hidden = false;
      stop.addEventListener("click", () => finish("stopped after " + count + " characters"), { once: true });
    }
    es.addEventListener("meta", (e) => {
      const d = JSON.parse(e.data);
      what = d.what;
      total = d.n;
      hi = d.scale.hi;
      bounded = d.scale.bounded;
      box.dataset.seed = String(d.seed);
      say("generating… 0 / " + total + " · seed " + d.seed);
    });
    es.addEventListener("char", (e) => {
      const d = JSON.parse(e.data);
      const atEnd = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
      const span = document.createElement("span");
      span.className = "ch gen" + (d.ch === "\n" ? " nl" : "");
      span.style.setProperty("--v", bounded ? String(d.pos) : String(Math.max(-1, Math.min(1, d.v / hi)).toFixed(3)));
      span.dataset.v = String(d.v);
      span.textContent = d.ch;
      span.title = show(d.ch) + " (generated, #" + (d.i + 1) + "): " + what + " = " + d.v.toFixed(4);
      box.append(span);
      count += 1;
      if (atEnd) box.scrollTop = box.scrollHeight;
      if (count % 10 === 0 || count === total) say("generating… " + count + " / " + total);
      if (!bounded && (count % 25 === 0 || count === total)) {
        const wider = nice(spread(box));
        if (wider > hi) {
          hi = wider;
          rescale(box, hi);
        }
      }
    });
    es.addEventListener("done", (e) => {
      const d = JSON.parse(e.data);
      finish("done: " + d.n + " characters in " + d.seconds + " s · seed " + d.seed);
      box.dataset.done = "true";
      const url = new URL(location.href);
      if (!url.searchParams.get("seed") && status) {
        url.searchParams.set("seed", String(d.seed));
        const a = document.createElement("a");
        a.href = url.pathname + url.search;
        a.textContent = "link that reproduces this run";
        status.append(" · ", a);
      }
    });
    es.addEventListener("fail", (e) => {
      let detail = "the generation failed";
      try { detail = JSON.parse(e.data).detail; } catch (err) { /* keep the default */ }
      finish(detail, true);
    });
    es.addEventListener("error", () => {
      if (!done) finish("the connection to the server was lost after " + count + " characters", true);
    });
  }

  // ---- interventions: the next-character guesses before and after the clamp, on hover or focus ----
  // Every number shown comes formatted from app/dynamics_views.py (data-preds); this only places it.
  // The text is one tab stop; arrows walk it; a click or Enter compares that position in the summary.
  const predCache = new WeakMap();
  function predsOf(box) {
    if (!predCache.has(box)) {
      let data = null;
      try { data = JSON.parse(box.dataset.preds || "null"); } catch (err) { data = null; }
      predCache.set(box, data);
    }
    return predCache.get(box);
  }
  function node(tag, cls, text) {
    const el = document.createElement(tag);
    if (cls) el.className = cls;
    if (text !== undefined) el.textContent = text;
    return el;
  }
  function guessColumn(title, guesses, note) {
    const col = node("div", "tip-col");
    col.append(node("div", "tip-col-head", title));
    if (!guesses) {
      col.append(node("div", "tip-same", note));
      return col;
    }
    guesses.forEach((g) => {
      const line = node("div", "pred" + (g[2] ? " actual" : ""));
      const bar = node("span", "bar");
      bar.style.setProperty("--p", g[1]);
      line.append(node("code", "", g[0]), bar, node("span", "", g[1] + "%"));
      col.append(line);
    });
    return col;
  }
  function placeTip(tip, span) {
    const view = tip.offsetParent || document.body;
    const vr = view.getBoundingClientRect();
    const r = span.getBoundingClientRect();
    const left = Math.max(8, Math.min(r.left - vr.left, view.clientWidth - tip.offsetWidth - 8));
    let top = r.bottom - vr.top + 6;
    if (r.bottom + tip.offsetHeight + 12 > window.innerHeight && r.top - vr.top - tip.offsetHeight - 6 > 0) {
      top = r.top - vr.top - tip.offsetHeight - 6;
    }
    tip.style.left = left + "px";
    tip.style.top = top + "px";
  }
  function showPreds(span) {
    const box = span.parentElement;
    const tip = $("iv-tip");
    const data = box ? predsOf(box) : null;
    const t = Number(span.dataset.t);
    if (!tip || !data || !data.before || !data.before[t]) return;
    if (span.title) { // the tooltip replaces the browser's own (kept for pages without JavaScript)
      span.dataset.head = span.title;
      span.removeAttribute("title");
    }
    box.querySelectorAll(".ch.active").forEach((s) => s.classList.remove("active"));
    span.classList.add("active");
    const cols = node("div", "tip-cols");
    cols.append(guessColumn("unit free", data.before[t]), guessColumn("clamped", data.after[t], data.same));
    tip.replaceChildren(node("div", "tip-head", span.dataset.head || show(span.textContent)),
      node("div", "tip-sub", "the model's guesses for the next character"), cols,
      node("div", "tip-hint", "click or Enter: compare this position below"));
    tip.hidden = false;
    placeTip(tip, span);
  }
  function hidePreds() {
    const tip = $("iv-tip");
    if (tip) tip.hidden = true;
  }
  function pickPosition(span) {
    const form = $("dyn-form");
    if (!form || !$("at")) return;
    $("at").value = span.dataset.t;
    form.requestSubmit();
  }
  function focusChar(span) {
    span.tabIndex = -1;
    span.focus();
  }
  const PREDS = ".dyn-chars.preds";
  let pressing = false;
  document.addEventListener("mouseover", (e) => {
    const span = e.target.closest ? e.target.closest(PREDS + " > .ch[data-t]") : null;
    if (span) showPreds(span);
  });
  document.addEventListener("mouseout", (e) => {
    const from = e.target.closest ? e.target.closest(PREDS) : null;
    const to = e.relatedTarget && e.relatedTarget.closest ? e.relatedTarget.closest(PREDS) : null;
    const focused = document.activeElement && document.activeElement.closest && document.activeElement.closest(PREDS);
    if (from && !to && !focused) hidePreds();
  });
  document.addEventListener("mousedown", (e) => {
    pressing = Boolean(e.target.closest && e.target.closest(PREDS));
  }, true);
  document.addEventListener("click", (e) => {
    const span = e.target.closest ? e.target.closest(PREDS + " > .ch[data-t]") : null;
    pressing = false;
    const sel = window.getSelection();
    if (span && (!sel || sel.isCollapsed)) pickPosition(span);
  });
  document.addEventListener("focusin", (e) => {
    const t = e.target;
    if (t.matches && t.matches(PREDS)) {
      const fromInside = e.relatedTarget && e.relatedTarget.closest && e.relatedTarget.closest(PREDS) === t;
      if (pressing || fromInside) return;
      const first = t.querySelector(".ch.active") || t.querySelector(".ch.at-t") || t.firstElementChild;
      if (first) focusChar(first);
    } else if (t.matches && t.matches(PREDS + " > .ch[data-t]")) {
      showPreds(t);
    }
  });
  document.addEventListener("focusout", (e) => {
    const inside = e.target.closest ? e.target.closest(PREDS) : null;
    const to = e.relatedTarget && e.relatedTarget.closest ? e.relatedTarget.closest(PREDS) : null;
    if (inside && !to) hidePreds();
  });
  document.addEventListener("keydown", (e) => {
    const span = e.target.closest ? e.target.closest(PREDS + " > .ch[data-t]") : null;
    if (!span) return;
    let to = null;
    if (e.key === "ArrowRight") to = span.nextElementSibling;
    else if (e.key === "ArrowLeft") to = span.previousElementSibling;
    else if (e.key === "Home") to = span.parentElement.firstElementChild;
    else if (e.key === "End") to = span.parentElement.lastElementChild;
    else if (e.key === "Enter" || e.key === " ") { e.preventDefault(); pickPosition(span); return; }
    else if (e.key === "Escape") { hidePreds(); return; }
    if (to) {
      e.preventDefault();
      focusChar(to);
    }
  });

  // ---- gate saturation: each scatter is ONE keyboard widget (svg.plot.keys), never a link per dot ----
  // Left/right walk the dots in order of their x value, up/down in order of their y value (Shift: ten at a
  // time), Home/End go to the first/last unit; the highlighted dot's title is written into the plot's
  // readout (a live region, data-live); Enter or a click opens the dot's data-href (the unit in the main view).
  const KEYS = "svg.plot.keys";
  const plotOrders = new WeakMap();
  function plotOrder(svg) {
    let o = plotOrders.get(svg);
    if (!o) {
      const dots = Array.from(svg.querySelectorAll("circle.pt[data-href]"));
      const at = dots.map((d, i) => ({ i: i, x: Number(d.getAttribute("cx")), y: -Number(d.getAttribute("cy")) }));
      const byX = at.slice().sort((a, b) => a.x - b.x || a.y - b.y || a.i - b.i).map((p) => p.i);
      const byY = at.slice().sort((a, b) => a.y - b.y || a.x - b.x || a.i - b.i).map((p) => p.i);
      const rank = (order) => {
        const r = new Array(order.length);
        order.forEach((i, k) => { r[i] = k; });
        return r;
      };
      o = { dots: dots, x: byX, xr: rank(byX), y: byY, yr: rank(byY) };
      plotOrders.set(svg, o);
    }
    return o;
  }
  function highlightDot(svg, i) {
    const o = plotOrder(svg);
    const dot = o.dots[i];
    if (!dot) return;
    svg.dataset.sel = String(i);
    svg.querySelectorAll("circle.pt.sel").forEach((d) => d.classList.remove("sel"));
    dot.classList.add("sel");
    const ring = svg.querySelector("circle.cursor");
    if (ring) {
      ring.setAttribute("cx", dot.getAttribute("cx"));
      ring.setAttribute("cy", dot.getAttribute("cy"));
      ring.setAttribute("visibility", "visible");
    }
    const out = $(svg.dataset.live);
    const title = dot.querySelector("title");
    if (out) {
      out.textContent = (title ? title.textContent : "") + " · dot " + (i + 1) + " of " + o.dots.length +
        " · Enter or click opens it in the main view";
    }
  }
  function openDot(dot, newTab) {
    const href = dot && dot.dataset.href;
    if (!href) return;
    if (newTab) window.open(href, "_blank", "noopener");
    else location.assign(href);
  }
  document.addEventListener("keydown", (e) => {
    const svg = e.target;
    if (!svg.matches || !svg.matches(KEYS) || e.altKey || e.ctrlKey || e.metaKey) return;
    const o = plotOrder(svg);
    if (!o.dots.length) return;
    const cur = svg.dataset.sel === undefined ? -1 : Number(svg.dataset.sel);
    const step = e.shiftKey ? 10 : 1;
    const along = (order, rank, d) => (cur < 0 ? order[0] : order[Math.max(0, Math.min(order.length - 1, rank[cur] + d))]);
    let next;
    if (e.key === "ArrowRight") next = along(o.x, o.xr, step);
    else if (e.key === "ArrowLeft") next = along(o.x, o.xr, -step);
    else if (e.key === "ArrowUp") next = along(o.y, o.yr, step);
    else if (e.key === "ArrowDown") next = along(o.y, o.yr, -step);
    else if (e.key === "Home") next = 0;
    else if (e.key === "End") next = o.dots.length - 1;
    else if (e.key === "Enter" && cur >= 0) {
      e.preventDefault();
      openDot(o.dots[cur], false);
      return;
    } else return;
    e.preventDefault();
    highlightDot(svg, next);
  });
  document.addEventListener("focusin", (e) => {
    const svg = e.target;
    if (svg.matches && svg.matches(KEYS) && svg.dataset.sel === undefined && plotOrder(svg).dots.length) {
      highlightDot(svg, 0);
    }
  });
  document.addEventListener("mouseover", (e) => {
    const dot = e.target.closest ? e.target.closest(KEYS + " circle.pt[data-href]") : null;
    if (!dot) return;
    const svg = dot.closest(KEYS);
    highlightDot(svg, plotOrder(svg).dots.indexOf(dot));
  });
  document.addEventListener("click", (e) => {
    const dot = e.target.closest ? e.target.closest(KEYS + " circle.pt[data-href]") : null;
    if (dot && e.button === 0) openDot(dot, e.ctrlKey || e.metaKey || e.shiftKey);
  });
  document.addEventListener("auxclick", (e) => {
    const dot = e.target.closest ? e.target.closest(KEYS + " circle.pt[data-href]") : null;
    if (dot && e.button === 1) openDot(dot, true);
  });

  function boot() {
    const box = $("gen-out");
    if (box && box.dataset.stream && !box.dataset.started) {
      box.dataset.started = "true";
      stream(box);
    }
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
  else boot();
})();
