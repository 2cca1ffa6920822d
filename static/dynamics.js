// The dynamics views: stream generated characters (EventSource), sync the w_hh slider and pick a
// position by clicking a character (static/app.js carries the shared URL state across the nav).
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
