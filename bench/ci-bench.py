#!/usr/bin/env python3
"""CI latency and throughput against a real `gitstratum serve` (embedded runner or N external runners).

    python3 bench/ci-bench.py --bin $CARGO_TARGET_DIR/release/gitstratum [--runs 30] [--runners 4]

Measures, and prints as p50/p99 (ms):
  push -> run created   from `git push` returning (refs durable) until the run is listed by the API
  push -> job running   from the push until the API shows its job running, one idle runner
  created -> running    the difference (client-side polling every 2 ms; timestamps are whole seconds)
  log line -> SSE       a step prints its wall clock; an SSE client notes when each line arrives
and jobs/s with no-op jobs: one push of many branches, external runners, first created -> last done.
Everything runs on this machine; absolute numbers depend on it, so compare runs made here."""
import argparse, json, os, re, shutil, signal, statistics, subprocess, sys, tempfile, threading, time, urllib.request
from datetime import datetime

from benchlib import Server, git

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]

def ts(s):  # RFC 3339 -> seconds
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()

def repo_with(tmp, workflow):
    src = os.path.join(tmp, "src")
    os.makedirs(os.path.join(src, ".github/workflows"))
    open(os.path.join(src, ".github/workflows/ci.yml"), "w").write(workflow)
    git(src, "init", "-q", "-b", "main"); git(src, "add", "-A"); git(src, "commit", "-q", "-m", "ci")
    return src

def runs(s):
    return s.api("GET", "/api/v1/repos/admin/app/runs?limit=100")["runs"]

def latency(binary, n):
    tmp = tempfile.mkdtemp()
    s = Server(binary, os.path.join(tmp, "data"), [])
    s.api("POST", "/api/v1/repos", {"name": "app"})
    src = repo_with(tmp, "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo hi\n")
    url = s.push_url("admin/app")
    created, started = [], []  # push -> run listed; push -> its job running
    for i in range(n):
        open(os.path.join(src, "f"), "w").write(str(i)); git(src, "add", "-A"); git(src, "commit", "-qm", str(i))
        git(src, "push", "-q", url, "main")
        t0 = time.time()
        while len(runs(s)) < i + 1:
            time.sleep(0.002)
        created.append((time.time() - t0) * 1000)
        run = runs(s)[0]
        while True:
            d = s.api("GET", f"/api/v1/runs/{run['id']}")
            if d["jobs"] and d["jobs"][0]["status"] != "queued":
                break
            time.sleep(0.002)
        started.append((time.time() - t0) * 1000)
        while s.api("GET", f"/api/v1/runs/{run['id']}")["status"] != "completed":
            time.sleep(0.01)
    # Log line -> SSE client.
    open(os.path.join(src, ".github/workflows/ci.yml"), "w").write(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: for i in $(seq 40); do echo t=$(date +%s%N); sleep 0.05; done\n")
    git(src, "add", "-A"); git(src, "commit", "-qm", "log"); git(src, "push", "-q", url, "main")
    while len(runs(s)) < n + 1:
        time.sleep(0.005)
    run = runs(s)[0]
    job = None
    while job is None:
        jobs = s.api("GET", f"/api/v1/runs/{run['id']}")["jobs"]
        job = jobs[0]["id"] if jobs else None
    req = urllib.request.Request(f"{s.base}/api/v1/jobs/{job}/logs/stream", headers={"Authorization": f"Bearer {s.token}"})
    sse = []
    with urllib.request.urlopen(req) as r:
        for raw in r:
            line = raw.decode().rstrip("\n")
            m = re.match(r"data: t=(\d+)", line)
            if m:
                sse.append((time.time_ns() - int(m.group(1))) / 1e6)
            if line == "event: end":
                break
    s.stop(); shutil.rmtree(tmp)
    return created, started, sse

def throughput(binary, jobs, runners):
    tmp = tempfile.mkdtemp()
    s = Server(binary, os.path.join(tmp, "data"), ["--no-embedded-runner"])
    s.api("POST", "/api/v1/repos", {"name": "app"})
    token = s.api("POST", "/api/v1/tokens", {"name": "r", "scopes": ["ci:runner"]})["token"]
    procs = [subprocess.Popen([binary, "runner", "--server", s.base, "--token", token, "--name", f"r{i}", "--work-dir", os.path.join(tmp, f"w{i}")],
                              stderr=subprocess.DEVNULL) for i in range(runners)]
    src = repo_with(tmp, "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo\n")
    for i in range(jobs - 1):
        git(src, "branch", f"b{i}")
    url = s.push_url("admin/app")
    git(src, "push", "-q", url, "--all")
    while True:
        first_page = s.api("GET", "/api/v1/repos/admin/app/runs?limit=100")
        allr = list(first_page["runs"])
        nxt = first_page.get("next_cursor")
        while nxt:
            p = s.api("GET", f"/api/v1/repos/admin/app/runs?limit=100&before={nxt}")
            allr += p["runs"]; nxt = p.get("next_cursor")
        if len(allr) == jobs and all(r["status"] == "completed" for r in allr):
            break
        time.sleep(0.2)
    first = min(ts(r["created_at"]) for r in allr)
    last = max(ts(r["completed_at"]) for r in allr)
    ok = sum(r["conclusion"] == "success" for r in allr)
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(timeout=30)
    s.stop(); shutil.rmtree(tmp)
    return jobs / (last - first), ok

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--jobs", type=int, default=60)
    ap.add_argument("--runners", type=int, default=4)
    a = ap.parse_args()
    created, started, sse = latency(a.bin, a.runs)
    print("| metric | p50 (ms) | p99 (ms) | samples |\n|---|---|---|---|")
    queued = [b - a for a, b in zip(created, started)]
    for name, xs in [("push -> run created", created), ("push -> job running (idle runner)", started), ("run created -> job running", queued), ("log line -> SSE client", sse)]:
        print(f"| {name} | {pct(xs, 50):.1f} | {pct(xs, 99):.1f} | {len(xs)} |")
    rate, ok = throughput(a.bin, a.jobs, a.runners)
    print(f"\nno-op jobs with {a.runners} external runners: {rate:.1f} jobs/s ({ok}/{a.jobs} succeeded)")

if __name__ == "__main__":
    main()
