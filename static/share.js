// Share button helpers (no inline script: CSP). Delegated from `document`, so they work after htmx swaps.
// 1. The server refuses a share with 4xx/503 and a readable message: show it in place rather than
//    treating it as a failed request. 2. The Copy button copies the link.
(function () {
  "use strict";

  document.addEventListener("htmx:beforeSwap", function (e) {
    const elt = e.detail.elt;
    if (!elt || !elt.closest || !elt.closest(".share-bar")) return;
    const status = e.detail.xhr ? e.detail.xhr.status : 0;
    if (status >= 400 && status < 600 && e.detail.serverResponse) {
      e.detail.shouldSwap = true;
      e.detail.isError = false;
    }
  });

  document.addEventListener("htmx:afterSwap", function (e) {
    const url = e.target && e.target.querySelector ? e.target.querySelector(".share-url") : null;
    if (url) { url.focus(); url.select(); }
  });

  function copied(button, message) {
    const box = button.closest(".share-done");
    const note = box ? box.querySelector(".share-copied") : null;
    if (note) note.textContent = message;
  }

  document.addEventListener("click", function (e) {
    const button = e.target.closest ? e.target.closest(".share-copy") : null;
    if (!button) return;
    const input = document.getElementById(button.dataset.copy || "");
    if (!input) return;
    const fallback = function () {
      input.focus();
      input.select();
      let ok = false;
      try { ok = document.execCommand("copy"); } catch (err) { ok = false; }
      copied(button, ok ? "copied" : "press Ctrl+C (⌘C) to copy");
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(input.value).then(() => copied(button, "copied"), fallback);
    } else {
      fallback();
    }
  });
})();
