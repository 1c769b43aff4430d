#!/usr/bin/env python3
"""Runs a public CI test corpus of workflows against a real `gitstratum serve` and compares each
run's outcome with the corpus's expectation.

The corpus is nektos/act's `pkg/runner/testdata` (not vendored here): `runner_test.go` lists each
workflow folder with the event and the error act expects (none: every job succeeds), which act's
authors check against GitHub. Each `push` case is pushed to its own repository on a fresh server
with the embedded runner; the case agrees when the runs conclude `success` exactly when no error is
expected. Cases that need what this installation does not run yet (containers, services, Docker or
JavaScript or composite actions) are reported apart, by what the workflow files mention.

    python3 bench/act-parity.py --bin target/debug/gitstratum --corpus PATH/TO/act/pkg/runner/testdata
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

BUILTIN = ("actions/checkout@", "actions/upload-artifact@", "actions/download-artifact@", "actions/cache@")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(base, token, method, path, body=None):
    req = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode() if body else None)
    req.add_header("Authorization", f"Bearer {token}")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def cases(corpus):
    test = open(os.path.join(corpus, "..", "runner_test.go"), encoding="utf-8").read()
    table = test[test.index("func TestRunEvent(") :]
    table = table[table.index("tables := []TestJobFileInfo{") :]
    table = table[: table.index("\n\t}\n")]
    seen = set()
    for m in re.finditer(r'^\s*\{workdir, "([^"]+)", "([^"]+)", "([^"]*)",', table, re.M):
        name, event, err = m.groups()
        if event == "push" and name not in seen:
            seen.add(name)
            yield name, err


def needs_more(folder):
    """What in the folder's workflows this installation does not run yet, if anything."""
    text = ""
    for root, _, files in os.walk(folder):
        for f in files:
            if f.endswith((".yml", ".yaml")):
                text += open(os.path.join(root, f), encoding="utf-8", errors="replace").read()
    for pattern, why in [
        (r"^\s*container:", "container"),
        (r"^\s*services:", "services"),
        (r"uses:\s*docker://", "docker action"),
        (r"using:\s*['\"]?(docker|node\d+|composite)", "action.yml"),
        (r"^\s*uses:\s*\./\.github/workflows|^\s*uses:\s*[\w.-]+/[\w.-]+/\.github/workflows", "reusable workflow"),
    ]:
        if re.search(pattern, text, re.M):
            return why
    for m in re.finditer(r"uses:\s*['\"]?([^\s'\"#]+)", text):
        if not m.group(1).startswith(BUILTIN):
            return "action " + m.group(1)
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--only")
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--verbose", action="store_true", help="print the failed jobs' messages and logs")
    args = ap.parse_args()
    data = tempfile.mkdtemp(prefix="act-parity-")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, GITSTRATUM_RATE_LIMIT_PER_CLIENT="0")
    server = subprocess.Popen(
        [args.bin, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(data, "server.log"), "w"), env=env,
    )
    try:
        token_file = os.path.join(data, "initial-admin-token")
        for _ in range(300):
            if os.path.exists(token_file):
                break
            time.sleep(0.1)
        token = open(token_file).read().strip()
        rows, agree, counted = [], {"runs here": [0, 0], "needs more": [0, 0]}, 0
        for i, (name, err) in enumerate(cases(args.corpus)):
            if args.only and args.only not in name:
                continue
            folder = os.path.join(args.corpus, name)
            if not os.path.isdir(folder):
                continue
            repo = f"case{i}"
            api(base, token, "POST", "/api/v1/repos", {"name": repo})
            work = tempfile.mkdtemp(prefix="act-case-")
            shutil.copytree(folder, work, dirs_exist_ok=True)
            wf = os.path.join(work, ".github", "workflows")
            os.makedirs(wf, exist_ok=True)
            for f in os.listdir(work):
                if f.endswith((".yml", ".yaml")) and os.path.isfile(os.path.join(work, f)) and f != "action.yml":
                    shutil.copy(os.path.join(work, f), os.path.join(wf, f))
            git = lambda *a: subprocess.run(["git", "-C", work, *a], check=True, capture_output=True)
            git("init", "-q", "-b", "main")
            git("add", "-A")
            git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", name)
            git("push", "-q", f"http://x:{token}@127.0.0.1:{port}/admin/{repo}.git", "main")
            deadline, runs = time.time() + args.timeout, []
            while time.time() < deadline:
                _, page = api(base, token, "GET", f"/api/v1/repos/admin/{repo}/runs")
                runs = page.get("runs", []) if isinstance(page, dict) else []
                if runs and all(r["status"] == "completed" for r in runs):
                    break
                time.sleep(0.5)
            if runs and all(r["status"] == "completed" for r in runs):
                ok = all(r["conclusion"] == "success" for r in runs)
                got = "success" if ok else "failure: " + ", ".join(f"{r['path']} {r['conclusion']}" for r in runs)
            else:
                ok, got = None, "no run" if not runs else "did not finish"
            want_ok = err == ""
            same = ok == want_ok
            group = "needs more" if needs_more(folder) else "runs here"
            agree[group][0] += same
            agree[group][1] += 1
            rows.append(f"{'ok  ' if same else 'DIFF'} [{group}] {name}: expected {'success' if want_ok else 'an error (' + err + ')'}; got {got}")
            if args.verbose and not same:
                for run in runs:
                    _, detail = api(base, token, "GET", f"/api/v1/runs/{run['id']}")
                    if detail.get("message"):
                        rows.append(f"       run: {detail['message']}")
                    for job in detail.get("jobs", []):
                        if job.get("conclusion") not in ("failure", "timed_out"):
                            continue
                        rows.append(f"       job {job['name']}: {job.get('message') or ''}")
                        req = urllib.request.Request(f"{base}/api/v1/jobs/{job['id']}/logs")
                        req.add_header("Authorization", f"Bearer {token}")
                        try:
                            log = urllib.request.urlopen(req, timeout=30).read().decode(errors="replace")
                        except urllib.error.HTTPError:
                            log = ""
                        rows.extend("         | " + line for line in log.splitlines()[-12:])
            shutil.rmtree(work, ignore_errors=True)
        print("\n".join(rows))
        for group, (a, n) in agree.items():
            print(f"{group}: {a}/{n} agree")
        total = sum(a for a, _ in agree.values()), sum(n for _, n in agree.values())
        print(f"all push cases: {total[0]}/{total[1]} agree")
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
