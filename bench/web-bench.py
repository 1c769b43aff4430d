#!/usr/bin/env python3
"""Web page latency: the pages issue 19 names, each beside the JSON API call closest to it, on one
server in one run.

  web-bench.py --server PATH/TO/gitstratum --repo BARE_REPO [--requests 200] [--json OUT]

The repository is pushed (every branch and tag) to a fresh `gitstratum serve` (CI workflows it holds
are queued as runs; no runner takes them, so the runs list has rows and nothing competes for the
CPU). Then, one request at a time over a kept-alive connection, each page is fetched --requests
times as an anonymous visitor of the public repository, after a first request timed apart (it is
when a file is highlighted, then cached by content), and so is its API call. Printed: the first
request, p50 and p99 in milliseconds, the page's size in bytes, and page p99 / API p99.

Pages: the repository home; a tree (the largest directory at the default branch); the file
closest to 2,000 lines; the commit closest to 50 changed files (in the last 2,000 commits); the
runs list. API calls beside them: GET /api/v1/repos/{o}/{r} (home, tree, file, commit: the
repository read every page starts with) and GET /api/v1/repos/{o}/{r}/runs (runs list).
"""
import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import Server  # noqa: E402


def git(repo, *args):
    return subprocess.run(["git", "--git-dir", repo, *args], capture_output=True, text=True, check=True).stdout


def pick_file(repo, ref):
    """The path of the text file at `ref` whose line count is closest to 2,000."""
    best = None
    listing = git(repo, "ls-tree", "-r", "-l", ref)
    for line in listing.splitlines():
        meta, path = line.split("\t", 1)
        mode, kind, oid, size = meta.split()
        if kind != "blob" or size == "-" or not (20_000 <= int(size) <= 200_000):
            continue
        text = git(repo, "cat-file", "blob", oid)
        lines = text.count("\n")
        if best is None or abs(lines - 2000) < abs(best[1] - 2000):
            best = (path, lines)
    return best


def pick_tree(repo, ref):
    """The directory at `ref` with the most entries."""
    counts = {}
    for path in git(repo, "ls-tree", "-r", "-d", "--name-only", ref).splitlines():
        counts[path] = len(git(repo, "ls-tree", ref + ":" + path).splitlines())
    return max(counts.items(), key=lambda kv: kv[1]) if counts else ("", 0)


def pick_commit(repo, ref):
    """The commit (not a merge) among the last 2,000 whose changed-file count is closest to 50."""
    out = git(repo, "log", "--no-merges", "-n", "2000", "--format=@%H", "--name-only", ref)
    best, current, files = None, None, 0
    for line in out.splitlines() + ["@"]:
        if line.startswith("@"):
            if current and (best is None or abs(files - 50) < abs(best[1] - 50)):
                best = (current, files)
            current, files = line[1:], 0
        elif line.strip():
            files += 1
    return best


def measure(conn, path, n):
    """The first GET's milliseconds, then p50 and p99 of `n` more, and the body's size."""
    def get():
        conn.request("GET", path, headers={"Accept": "text/html,application/json"})
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            sys.exit(f"GET {path}: {r.status} {body[:300]!r}")
        return body
    t = time.perf_counter()
    size = len(get())
    first = (time.perf_counter() - t) * 1000
    times = []
    for _ in range(n):
        t = time.perf_counter()
        get()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return first, statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))], size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--repo", required=True, help="bare repository to push and browse")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--json")
    a = ap.parse_args()
    repo = os.path.abspath(a.repo)
    head = git(repo, "symbolic-ref", "--short", "HEAD").strip()
    file, lines = pick_file(repo, head)
    tree, entries = pick_tree(repo, head)
    commit, files = pick_commit(repo, head)
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(os.path.abspath(a.server), os.path.join(tmp, "data"),
                        # The anonymous rate limit (600 a minute) would refuse a benchmark's
                        # requests; it is switched off for the measurement.
                        env={"GITSTRATUM_EMBEDDED_RUNNER": "false", "GITSTRATUM_RATE_LIMIT_ANONYMOUS": "0"})
        try:
            server.api("POST", "/api/v1/repos", {"name": "bench", "private": False})
            subprocess.run(["git", "--git-dir", repo, "push", "-q", server.push_url("admin/bench"),
                            "refs/heads/*:refs/heads/*", "refs/tags/*:refs/tags/*"], check=True)
            # The runs of the pushed workflows appear as the ref log is read.
            time.sleep(3)
            host = urllib.parse.urlparse(server.base)
            conn = http.client.HTTPConnection(host.hostname, host.port, timeout=60)
            q = urllib.parse.quote
            rows = [
                ("home", "/admin/bench", "/api/v1/repos/admin/bench", ""),
                ("tree", f"/admin/bench/tree/{q(head)}/{q(tree)}", "/api/v1/repos/admin/bench", f"{entries} entries"),
                ("file", f"/admin/bench/blob/{q(head)}/{q(file)}", "/api/v1/repos/admin/bench", f"{lines} lines"),
                ("commit", f"/admin/bench/commit/{commit}", "/api/v1/repos/admin/bench", f"{files} files"),
                ("runs", "/admin/bench/actions", "/api/v1/repos/admin/bench/runs", ""),
            ]
            results = {}
            print(f"{'page':<8}{'what':<14}{'first':>9}{'p50 ms':>9}{'p99 ms':>9}{'bytes':>10}{'API p50':>9}{'API p99':>9}{'p99/API':>9}")
            for name, page, api, what in rows:
                first, p50, p99, size = measure(conn, page, a.requests)
                _, a50, a99, _ = measure(conn, api, a.requests)
                results[name] = {"path": page, "first_ms": first, "p50_ms": p50, "p99_ms": p99, "bytes": size, "api": api,
                                 "api_p50_ms": a50, "api_p99_ms": a99, "what": what}
                print(f"{name:<8}{what:<14}{first:9.2f}{p50:9.2f}{p99:9.2f}{size:10d}{a50:9.2f}{a99:9.2f}{p99 / a99:9.2f}")
            heaviest = max(results.items(), key=lambda kv: kv[1]["bytes"])
            print(f"heaviest page: {heaviest[0]} ({heaviest[1]['bytes']} bytes) plus style.css and live.js")
            if a.json:
                with open(a.json, "w") as f:
                    json.dump(results, f, indent=2)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
