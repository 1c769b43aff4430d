// Small enhancements every page may use; the pages work without them.
// - `button[data-copy]`: copies the value (or text) of the element its value names.
// - `#L10-L20` on a file page marks those lines (shift-click a line number to make a range).
// - `input[data-filter]`: shows only the log lines (of the element its value names) that hold
//   what is typed, opening the groups they are in; `/` focuses it.
// - `div.graph`: a run's jobs in columns by stage; lines are drawn from each job to the jobs that
//   `needs` it (the nodes carry `data-key` and `data-needs`), whenever the layout changes.
// - Keyboard shortcuts (not while typing): `?` lists them.
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
  const graph = document.querySelector("div.graph");
  if (graph && window.ResizeObserver) {
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("class", "edges");
    svg.setAttribute("aria-hidden", "true");
    graph.prepend(svg);
    const draw = () => {
      while (svg.firstChild) svg.firstChild.remove();
      const box = graph.getBoundingClientRect();
      svg.setAttribute("width", String(box.width));
      svg.setAttribute("height", String(box.height));
      const nodes = new Map();
      for (const node of graph.querySelectorAll("li[data-key]")) nodes.set(node.dataset.key, node);
      for (const node of nodes.values()) {
        const to = node.getBoundingClientRect();
        for (const need of (node.dataset.needs || "").split(" ")) {
          const source = need && nodes.get(need);
          if (!source) continue;
          const from = source.getBoundingClientRect();
          // Only between columns left to right: on a narrow screen the stages stack, and the
          // "needs" each job names says it.
          if (from.right > to.left) continue;
          const [x1, y1] = [from.right - box.left, from.top + Math.min(from.height / 2, 20) - box.top];
          const [x2, y2] = [to.left - box.left, to.top + Math.min(to.height / 2, 20) - box.top];
          const mid = (x1 + x2) / 2;
          const path = document.createElementNS(ns, "path");
          path.setAttribute("d", `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`);
          svg.append(path);
        }
      }
    };
    new ResizeObserver(draw).observe(graph);
    graph.addEventListener("toggle", draw, true);
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
  }

  // Keyboard shortcuts: elements with `data-hotkey` ("y", "g c") are followed (links) or
  // clicked; `/` focuses the log search; `?` opens the list of what this page offers.
  const typing = () => {
    const active = document.activeElement;
    return active && (/INPUT|TEXTAREA|SELECT/.test(active.tagName) || active.isContentEditable);
  };
  const bound = new Map();
  for (const element of document.querySelectorAll("[data-hotkey]")) {
    if (!bound.has(element.dataset.hotkey)) bound.set(element.dataset.hotkey, element);
  }
  let help = null;
  const showHelp = () => {
    if (help) {
      help.open ? help.close() : help.showModal();
      return;
    }
    help = document.createElement("dialog");
    help.className = "shortcuts";
    help.setAttribute("aria-label", "Keyboard shortcuts");
    const title = document.createElement("h2");
    title.textContent = "Keyboard shortcuts";
    const list = document.createElement("dl");
    const entry = (keys, what) => {
      const dt = document.createElement("dt");
      keys.split(" ").forEach((key, i) => {
        if (i) dt.append(" then ");
        const kbd = document.createElement("kbd");
        kbd.textContent = key;
        dt.append(kbd);
      });
      const dd = document.createElement("dd");
      dd.textContent = what;
      list.append(dt, dd);
    };
    for (const [keys, element] of bound) entry(keys, element.title || element.textContent.trim());
    if (filter) entry("/", "Search the log");
    entry("?", "Show or hide this list");
    const close = document.createElement("button");
    close.type = "button";
    close.textContent = "Close";
    close.addEventListener("click", () => help.close());
    help.append(title, list, close);
    document.body.append(help);
    help.showModal();
  };
  let pending = "";
  let timer = 0;
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || typing()) return;
    if (event.key === "/" && filter) {
      event.preventDefault();
      filter.focus();
      return;
    }
    if (event.key === "?") {
      event.preventDefault();
      showHelp();
      return;
    }
    if (event.key.length !== 1) return;
    const keys = pending ? pending + " " + event.key : event.key;
    clearTimeout(timer);
    pending = "";
    const element = bound.get(keys);
    if (element) {
      event.preventDefault();
      element.href ? (location.href = element.href) : element.click();
    } else if ([...bound.keys()].some((k) => k.startsWith(keys + " "))) {
      pending = keys;
      timer = setTimeout(() => (pending = ""), 1500);
    }
  });
})();
