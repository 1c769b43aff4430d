#!/usr/bin/env python3
"""Job set-up cost of actions: a job using three actions of other repositories beside the same job
with `run:` steps only, on a runner whose action cache is cold, then warm.

    python3 bench/actions-bench.py --bin $CARGO_TARGET_DIR/release/gitstratum [--runs 5]

Three action repositories (two composite actions, one JavaScript action, each echoing one line)
are pushed to a fresh server with its embedded runner. Each run has two jobs, one after the other:
`plain` (three `run:` steps echoing a line, then a timed step) and `actions` (the three actions,
then the timed step). The figure is the time from the job being seen running (API polled every
2 ms) to its timed step's wall clock (`date +%s%N`), so it holds checkout of nothing, the
actions' resolution, download, unpacking and their (trivial) runs. The first run's `actions` job
is the cold figure (nothing cached on the runner); later runs are warm. Prints medians in ms and
the ratio actions/plain."""
import argparse, os, re, statistics, sys, tempfile, time

from benchlib import Server, git

ACTIONS = {
    "act-one": "name: One\nruns:\n  using: composite\n  steps:\n    - run: echo one\n      shell: bash\n",
    "act-two": "name: Two\nruns:\n  using: node20\n  main: index.js\n",
    "act-three": "name: Three\ninputs:\n  word: {default: three}\nruns:\n  using: composite\n  steps:\n    - run: echo ${{ inputs.word }}\n      shell: sh\n",
}

WORKFLOW = """on: push
jobs:
  plain:
    runs-on: ubuntu-latest
    steps:
      - run: echo one
      - run: echo two
      - run: echo three
      - run: echo "T=$(date +%s%N)"
  actions:
    needs: plain
    runs-on: ubuntu-latest
    steps:
      - uses: admin/act-one@v1
      - uses: admin/act-two@v1
      - uses: admin/act-three@v1
      - run: echo "T=$(date +%s%N)"
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="actions-bench-")
    s = Server(a.bin, os.path.join(tmp, "data"))
    try:
        for name, action in ACTIONS.items():
            s.api("POST", "/api/v1/repos", {"name": name})
            d = os.path.join(tmp, name)
            os.makedirs(d)
            open(os.path.join(d, "action.yml"), "w").write(action)
            if name == "act-two":
                open(os.path.join(d, "index.js"), "w").write("console.log('two');\n")
            git(d, "init", "-q", "-b", "main"); git(d, "add", "-A"); git(d, "commit", "-qm", "v1"); git(d, "tag", "v1")
            git(d, "push", "-q", s.push_url(f"admin/{name}"), "main", "v1")
        s.api("POST", "/api/v1/repos", {"name": "app"})
        src = os.path.join(tmp, "app")
        os.makedirs(os.path.join(src, ".github/workflows"))
        open(os.path.join(src, ".github/workflows/ci.yml"), "w").write(WORKFLOW)
        git(src, "init", "-q", "-b", "main")
        figures = {"plain": [], "actions": []}
        cold = None
        for i in range(a.runs):
            open(os.path.join(src, "n"), "w").write(str(i))
            git(src, "add", "-A"); git(src, "commit", "-qm", str(i))
            git(src, "push", "-q", s.push_url("admin/app"), "main")
            while len(s.api("GET", "/api/v1/repos/admin/app/runs?limit=100")["runs"]) < i + 1:
                time.sleep(0.005)
            run = s.api("GET", "/api/v1/repos/admin/app/runs?limit=100")["runs"][0]
            seen = {}
            while True:
                d = s.api("GET", f"/api/v1/runs/{run['id']}")
                now = time.time()
                for job in d["jobs"]:
                    if job["status"] != "queued" and job["key"] not in seen:
                        seen[job["key"]] = now
                if d["status"] == "completed":
                    break
                time.sleep(0.002)
            if d["conclusion"] != "success":
                sys.exit(f"run {run['id']} ended {d['conclusion']}: {d}")
            for job in d["jobs"]:
                log = s.api("GET", f"/api/v1/jobs/{job['id']}/logs")
                m = re.search(r"T=(\d+)", log)
                ms = (int(m.group(1)) / 1e9 - seen[job["key"]]) * 1000
                if job["key"] == "actions" and cold is None:
                    cold = ms
                else:
                    figures[job["key"]].append(ms)
        plain = statistics.median(figures["plain"])
        warm = statistics.median(figures["actions"]) if figures["actions"] else float("nan")
        print(f"{'job start -> first run: step after':44} {'ms':>8} {'vs plain':>9}")
        print(f"{'run: steps only (median)':44} {plain:8.0f} {1.0:9.2f}")
        print(f"{'three actions, cold runner cache':44} {cold:8.0f} {cold / plain:9.2f}")
        print(f"{'three actions, warm runner cache (median)':44} {warm:8.0f} {warm / plain:9.2f}")
    finally:
        s.stop()


if __name__ == "__main__":
    main()
