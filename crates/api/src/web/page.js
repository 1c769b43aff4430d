// Small enhancements every page may use; the pages work without them.
// - `button[data-copy]`: copies the value (or text) of the element its value names.
// - `#L10-L20` on a file page marks those lines (shift-click a line number to make a range).
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
  const code = document.querySelector("table.code");
  if (code) {
    const mark = () => {
      for (const row of code.querySelectorAll("tr.selected")) row.classList.remove("selected");
      const m = /^#L(\d+)(?:-L(\d+))?$/.exec(location.hash);
      if (!m) return;
      const [a, b] = [Number(m[1]), Number(m[2] || m[1])];
      for (let n = Math.min(a, b); n <= Math.max(a, b) && n - Math.min(a, b) < 100000; n++) {
        const row = document.getElementById("L" + n);
        if (row) row.classList.add("selected");
      }
    };
    let anchor = null;
    code.addEventListener("click", (event) => {
      const link = event.target.closest("td.num a");
      if (!link) return;
      const n = Number(link.textContent);
      if (event.shiftKey && anchor !== null) {
        event.preventDefault();
        history.replaceState(null, "", "#L" + Math.min(anchor, n) + "-L" + Math.max(anchor, n));
        mark();
      } else {
        anchor = n;
      }
    });
    window.addEventListener("hashchange", mark);
    mark();
    const first = document.querySelector("table.code tr.selected");
    if (first) first.scrollIntoView({ block: "center" });
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
