// Progressive enhancement only: every feature works without this file.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // Click anywhere on an event row to open it (the time cell is the real link).
  for (const row of document.querySelectorAll("tr[data-href]")) {
    row.addEventListener("click", (ev) => {
      if (ev.target.closest("a") || window.getSelection().toString()) return;
      window.location.assign(row.dataset.href);
    });
  }
  // Close the action dropdown when clicking elsewhere.
  const multi = document.getElementById("action-filter");
  if (multi) {
    document.addEventListener("click", (ev) => {
      if (multi.open && !multi.contains(ev.target)) multi.open = false;
    });
  }
  // Empty fields stay out of the URL, so shared links stay short.
  const form = document.getElementById("filters");
  if (form) {
    form.addEventListener("submit", () => {
      for (const input of form.querySelectorAll("input[name]")) {
        if (input.type !== "checkbox" && !input.value) input.disabled = true;
      }
    });
  }
  const copy = document.getElementById("copy-json");
  if (copy && navigator.clipboard) {
    copy.addEventListener("click", async () => {
      await navigator.clipboard.writeText(document.getElementById("event-json").textContent);
      copy.textContent = "Copied";
      setTimeout(() => { copy.textContent = "Copy"; }, 1500);
    });
  }
});
