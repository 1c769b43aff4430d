// Live job logs: while a job runs, its page appends log lines as the runner ships them, from
// where the page's own copy ended (the server's Server-Sent Events stream of the job's log).
// Lines are shown as the server shows them: text only (never HTML), ANSI foreground colours and
// bold as classes, the runner's ##[group] … ##[endgroup] folded, ##[error]/##[warning]/##[notice]
// set apart. The page works without this script: it then reloads itself every few seconds.
"use strict";
(function () {
  const steps = document.querySelector("[data-live-log]");
  if (!steps || !window.EventSource) return;

  // Runs of text with their colour (30–37, 90–97) and boldness, from SGR sequences; every
  // other escape sequence and control character is dropped (as the server's `styled`).
  const styled = (line) => {
    const runs = [];
    let colour = null;
    let bold = false;
    let text = "";
    const flush = () => {
      if (text) runs.push({ text, colour, bold });
      text = "";
    };
    for (let i = 0; i < line.length; i++) {
      const c = line.charCodeAt(i);
      if (c === 0x1b && line[i + 1] === "[") {
        let j = i + 2;
        while (j < line.length && /[0-?]/.test(line[j])) j++;
        while (j < line.length && /[ -/]/.test(line[j])) j++;
        if (j >= line.length) break;
        if (line[j] === "m") {
          flush();
          const params = line.slice(i + 2, j).split(";");
          for (const p of params) {
            const n = p === "" ? 0 : Number(p);
            if (n === 0) { colour = null; bold = false; }
            else if (n === 1) bold = true;
            else if (n === 22) bold = false;
            else if (n === 39) colour = null;
            else if ((n >= 30 && n <= 37) || (n >= 90 && n <= 97)) colour = n;
          }
        }
        i = j;
      } else if (c === 0x1b && line[i + 1] === "]") {
        let j = i + 2;
        while (j < line.length && line.charCodeAt(j) !== 7 && !(line.charCodeAt(j) === 0x1b && line[j + 1] === "\\")) j++;
        i = line.charCodeAt(j) === 7 ? j : j + 1;
      } else if ((c < 0x20 && c !== 9) || c === 0x7f) {
        // a control character: dropped
      } else {
        text += line[i];
      }
    }
    flush();
    return runs;
  };

  const lineSpan = (line) => {
    const span = document.createElement("span");
    for (const [marker, cls] of [["##[error]", "error"], ["##[warning]", "warning"], ["##[notice]", "notice"]]) {
      if (line.startsWith(marker)) {
        span.className = cls;
        line = line.slice(marker.length);
        break;
      }
    }
    for (const run of styled(line)) {
      if (run.colour === null && !run.bold) {
        span.appendChild(document.createTextNode(run.text));
      } else {
        const inner = document.createElement("span");
        inner.className = (run.colour !== null ? "c" + run.colour : "") + (run.bold ? " b" : "");
        inner.textContent = run.text;
        span.appendChild(inner);
      }
    }
    return span;
  };

  const logOf = (step) => {
    let details = steps.querySelector('details[data-step="' + step + '"]');
    if (!details) {
      details = document.createElement("details");
      details.className = "step";
      details.dataset.step = step;
      const summary = document.createElement("summary");
      summary.textContent = "Step " + step;
      details.append(summary);
      steps.appendChild(details);
    }
    details.open = true;
    let log = details.querySelector("div.log");
    if (!log) {
      log = document.createElement("div");
      log.className = "log";
      details.appendChild(log);
    }
    return log;
  };

  // The time a runner stamps each line with (as the server's `split_log_stamp`).
  const STAMP = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{7}Z) /;
  const stamps = steps.dataset.timestamps === "1";

  // The numbered line element (a div, or a group's summary).
  const numbered = (tag, step, n, stamp, line) => {
    const el = document.createElement(tag);
    if (tag === "div") el.className = "l";
    el.id = "s" + step + "-L" + n;
    const anchor = document.createElement("a");
    anchor.className = "num";
    anchor.href = "#" + el.id;
    anchor.textContent = String(n);
    el.append(anchor);
    if (stamps) {
      const time = document.createElement(stamp ? "time" : "span");
      time.className = "ts";
      if (stamp) {
        time.dateTime = stamp;
        time.title = stamp;
        time.textContent = stamp.slice(11, 19);
      }
      el.append(time);
    }
    const text = document.createElement("span");
    text.className = "t";
    text.appendChild(lineSpan(line));
    el.append(text);
    return el;
  };

  // Per step: lines so far and the group lines go into while one is open.
  const state = {};
  const stateOf = (step) => {
    if (!state[step]) {
      const log = logOf(step);
      const last = log.lastElementChild;
      const open = last && last.matches("details.group[data-open]") ? last : null;
      state[step] = { log, count: Number(log.dataset.lines || 0), group: open };
    }
    return state[step];
  };

  const source = new EventSource(steps.dataset.liveLog);
  source.addEventListener("log", (event) => {
    const step = (event.lastEventId || "0:0").split(":")[0];
    const s = stateOf(step);
    for (let line of event.data.split("\n")) {
      s.count += 1;
      const m = STAMP.exec(line);
      const stamp = m ? m[1] : null;
      if (m) line = line.slice(m[0].length);
      if (line.startsWith("##[group]")) {
        const group = document.createElement("details");
        group.className = "group";
        group.dataset.open = "1";
        group.appendChild(numbered("summary", step, s.count, stamp, line.slice("##[group]".length)));
        s.log.appendChild(group);
        s.group = group;
      } else if (line.startsWith("##[endgroup]")) {
        if (s.group) delete s.group.dataset.open;
        s.group = null;
      } else {
        (s.group || s.log).appendChild(numbered("div", step, s.count, stamp, line));
      }
    }
    if (window.innerHeight + window.scrollY >= document.body.scrollHeight - 80) {
      window.scrollTo(0, document.body.scrollHeight);
    }
  });
  source.addEventListener("end", () => {
    source.close();
    // The job is over: the page as the server renders it now shows every step's outcome.
    window.location.reload();
  });
})();

// A run in progress: its page changes each job's state in place as the run's Server-Sent Events
// report it, and reads the page again once the run is over (its buttons, artifacts, outcome).
(function () {
  const head = document.querySelector("[data-live-run]");
  if (!head || !window.EventSource) return;
  // The same words and classes as the server's `outcome`.
  const outcome = (status, conclusion) => {
    if (status === "completed") {
      return {
        success: ["ok", "✓ success"],
        failure: ["bad", "✗ failure"],
        timed_out: ["bad", "✗ timed out"],
        cancelled: ["muted", "⊘ cancelled"],
        skipped: ["muted", "– skipped"],
      }[conclusion] || ["muted", "completed"];
    }
    return status === "in_progress" ? ["running", "● in progress"] : ["muted", "○ queued"];
  };
  const show = (element, status, conclusion) => {
    if (!element) return;
    const [cls, text] = outcome(status, conclusion);
    element.className = "state " + cls;
    element.textContent = text;
  };
  const source = new EventSource(head.dataset.liveRun);
  source.addEventListener("run", (event) => {
    let detail;
    try {
      detail = JSON.parse(event.data);
    } catch (_) {
      return;
    }
    show(head.querySelector(".state"), detail.status, detail.conclusion);
    for (const job of detail.jobs || []) {
      const line = document.querySelector('li[data-job="' + Number(job.id) + '"]');
      if (line) show(line.querySelector(".state"), job.status, job.conclusion);
    }
    if (detail.status === "completed") {
      source.close();
      window.location.reload();
    }
  });
})();
