// Small enhancements every page may use; the pages work without them.
// - `button[data-copy]`: copies the value (or text) of the element its value names.
// - `input[data-filter]`: shows only the log lines (of the element its value names) that hold
//   what is typed, opening the groups they are in; `/` focuses it.
"use strict";
(function () {
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.hidden = false;
    button.addEventListener("click", () => {
      const source = document.querySelector(button.dataset.copy);
      if (!source) return;
      const text = "value" in source ? source.value : source.textContent;
      const done = () => {
        const label = button.textContent;
        button.textContent = "Copied";
        setTimeout(() => (button.textContent = label), 1500);
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, () => {});
      } else if (source.select) {
        source.select();
        document.execCommand("copy");
        done();
      }
    });
  }
  const filter = document.querySelector("input[data-filter]");
  if (filter) {
    filter.hidden = false;
    const label = document.querySelector('label[for="' + filter.id + '"]');
    if (label) label.hidden = false;
    filter.addEventListener("input", () => {
      const needle = filter.value.toLowerCase();
      const root = document.querySelector(filter.dataset.filter);
      if (!root) return;
      for (const line of root.querySelectorAll("div.log .l")) {
        const hit = !needle || line.textContent.toLowerCase().includes(needle);
        line.hidden = !hit;
        if (hit && needle) {
          const group = line.closest("details");
          if (group) group.open = true;
          const step = group && group.parentElement ? group.parentElement.closest("details") : null;
          if (step) step.open = true;
        }
      }
    });
    document.addEventListener("keydown", (event) => {
      if (event.key === "/" && document.activeElement !== filter && !/INPUT|TEXTAREA|SELECT/.test(document.activeElement.tagName)) {
        event.preventDefault();
        filter.focus();
      }
    });
  }
})();
