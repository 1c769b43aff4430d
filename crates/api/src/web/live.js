// Live job logs: while a job runs, its page appends log lines as the runner ships them, from
// where the page's own copy ended (the server's Server-Sent Events stream of the job's log).
// The page works without this script: it then reloads itself every few seconds.
"use strict";
(function () {
  const steps = document.querySelector("[data-live-log]");
  if (!steps || !window.EventSource) return;
  // The same cleaning as the server's: escape sequences and control characters removed.
  const inert = (line) =>
    line
      .replace(/\u001b\[[0-?]*[ -/]*[@-~]/g, "")
      .replace(/\u001b\][^\u0007\u001b]*(\u0007|\u001b\\)/g, "")
      .replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, "");
  const tbodyOf = (step) => {
    let details = steps.querySelector('details[data-step="' + step + '"]');
    if (!details) {
      details = document.createElement("details");
      details.className = "step";
      details.dataset.step = step;
      details.open = true;
      const summary = document.createElement("summary");
      summary.textContent = "Step " + step;
      const table = document.createElement("table");
      table.className = "log";
      table.appendChild(document.createElement("tbody"));
      details.append(summary, table);
      steps.appendChild(details);
    }
    details.open = true;
    return details.querySelector("tbody");
  };
  const source = new EventSource(steps.dataset.liveLog);
  source.addEventListener("log", (event) => {
    const step = (event.lastEventId || "0:0").split(":")[0];
    const body = tbodyOf(step);
    for (const line of event.data.split("\n")) {
      const n = body.rows.length + 1;
      const row = body.insertRow();
      row.id = "s" + step + "-L" + n;
      const num = row.insertCell();
      num.className = "num";
      const anchor = document.createElement("a");
      anchor.href = "#" + row.id;
      anchor.textContent = String(n);
      num.appendChild(anchor);
      const text = row.insertCell();
      text.className = "line";
      text.textContent = inert(line);
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
