#!/usr/bin/env python3
"""Pull request mergeability and merge beside C git, on the same commits, in one run.

  merge-bench.py --server PATH/TO/gitstratum --repo BARE_REPO [--files 100] [--runs 5]

From the tip of the repository's default branch it makes --runs pull request branches, each one
commit changing --files files (a line in the middle of each, disjoint sets), and one commit on the
default branch changing other files and, in a fifth of each branch's files, their first line (so
those files need a line merge, as in a real pull request whose base moved on). Everything is pushed
to a fresh `gitstratum serve`.

Rows (medians over --runs, each pull request once, ours and C git's interleaved):
  mergeability   opening the pull request (POST /pulls: both tips, the merge base, the tree merge,
                 the test merge commit and refs/pull/N/merge written) against
                 `git merge-tree --write-tree BASE HEAD`;
  mergeability again  closing and reopening it (PATCH, the same computation) against the same;
  merge          PUT /pulls/N/merge (merge commit, base branch moved) against
                 `git merge-tree --write-tree` + `git commit-tree` + `git update-ref` in a clone,
                 the same merges in the same order; the two final trees must be equal.
Ratios are ours / C git's (below 1.0: faster). Our figures include the HTTP request.
"""
import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import Server  # noqa: E402

ENV = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@x", GIT_COMMITTER_NAME="b",
           GIT_COMMITTER_EMAIL="b@x", GIT_CONFIG_NOSYSTEM="1")


def git(cwd, *args, stdin=None):
    out = subprocess.run(["git", *args], cwd=cwd, env=ENV, check=True, capture_output=True, input=stdin)
    return out.stdout.decode().strip()


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def edit(path, index, text):
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        lines = f.readlines()
    lines[index] = text + "\n"
    with open(path, "w", encoding="utf-8", errors="surrogateescape") as f:
        f.writelines(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--repo", required=True, help="a bare repository")
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="merge-bench-")
    work = os.path.join(tmp, "work")
    git(tmp, "clone", "-q", a.repo, work)
    branch = git(work, "symbolic-ref", "--short", "HEAD")
    base = git(work, "rev-parse", "HEAD")
    # Text files of at least 20 lines: an edit in the middle and one at the top stay apart.
    candidates = []
    for name in git(work, "ls-files").splitlines():
        path = os.path.join(work, name)
        try:
            with open(path, encoding="utf-8") as f:
                if sum(1 for _ in f) >= 20:
                    candidates.append(name)
        except (UnicodeDecodeError, OSError):
            continue
    rng = random.Random(7)
    rng.shuffle(candidates)
    need = a.files * a.runs + a.files
    if len(candidates) < need:
        sys.exit(f"the repository has {len(candidates)} text files of 20 lines or more; {need} are needed")
    sets = [candidates[i * a.files:(i + 1) * a.files] for i in range(a.runs)]
    only_base = candidates[a.runs * a.files:need]
    for i, files in enumerate(sets):
        git(work, "checkout", "-q", "-B", f"pr-{i}", base)
        for name in files:
            path = os.path.join(work, name)
            with open(path, encoding="utf-8") as f:
                middle = sum(1 for _ in f) // 2
            edit(path, middle, f"// changed by pull request {i}")
        git(work, "commit", "-q", "-am", f"pull request {i}: {a.files} files")
    git(work, "checkout", "-q", branch)
    for name in only_base + [n for files in sets for n in files[: a.files // 5]]:
        edit(os.path.join(work, name), 0, "// changed on the base branch")
    git(work, "commit", "-q", "-am", "the base moves on")
    print(f"{a.runs} pull requests of {a.files} changed files each; the base changed {len(only_base)} other "
          f"files and the first line of {a.files // 5} of each pull request's", flush=True)

    # No CI (the references run none) and no background repack of the pushed corpus while measuring
    # (it would compete for the CPU): the merges read the packs as pushed.
    server = Server(a.server, os.path.join(tmp, "data"),
                    env={"GITSTRATUM_EMBEDDED_RUNNER": "false", "GITSTRATUM_GIT_MAINTENANCE_SECS": "86400"})
    try:
        server.api("POST", "/api/v1/repos", {"name": "corpus"})
        url = server.push_url("admin/corpus")
        git(a.repo, "push", "-q", "--mirror", url)
        git(work, "push", "-q", "-f", url, branch, *[f"pr-{i}" for i in range(a.runs)])
        # C git's side: a clone with the same branches, merged the same way.
        ref = os.path.join(tmp, "reference")
        git(tmp, "clone", "-q", "--bare", work, ref)

        rows = {"mergeability": ([], []), "mergeability again": ([], []), "merge": ([], [])}

        def reference_mergeability(i):
            return timed(lambda: git(ref, "merge-tree", "--write-tree", branch, f"pr-{i}"))[0]

        for i in range(a.runs):
            t, pr = timed(lambda: server.api("POST", "/api/v1/repos/admin/corpus/pulls",
                                             {"title": f"pr {i}", "head": f"pr-{i}", "base": branch}))
            assert pr["mergeable"] is True, pr
            rows["mergeability"][0].append(t)
            rows["mergeability"][1].append(reference_mergeability(i))
            n = pr["number"]
            server.api("PATCH", f"/api/v1/repos/admin/corpus/pulls/{n}", {"state": "closed"})
            t, pr = timed(lambda: server.api("PATCH", f"/api/v1/repos/admin/corpus/pulls/{n}", {"state": "open"}))
            assert pr["mergeable"] is True, pr
            rows["mergeability again"][0].append(t)
            rows["mergeability again"][1].append(reference_mergeability(i))
        for i in range(a.runs):
            n = i + 1
            t, merged = timed(lambda: server.api("PUT", f"/api/v1/repos/admin/corpus/pulls/{n}/merge",
                                                 {"merge_method": "merge"}))
            rows["merge"][0].append(t)

            def reference_merge():
                old = git(ref, "rev-parse", branch)
                tree = git(ref, "merge-tree", "--write-tree", branch, f"pr-{i}")
                new = git(ref, "commit-tree", "-p", branch, "-p", f"pr-{i}", "-m", f"merge {i}", tree)
                git(ref, "update-ref", f"refs/heads/{branch}", new, old)
            rows["merge"][1].append(timed(reference_merge)[0])
        ours = git(tmp, "ls-remote", url, f"refs/heads/{branch}").split()[0]
        check = os.path.join(tmp, "check")
        git(tmp, "clone", "-q", "--bare", url, check)
        same = git(check, "rev-parse", f"{ours}^{{tree}}") == git(ref, "rev-parse", f"{branch}^{{tree}}")
        print(f"final {branch} tree equal to C git's: {same}")
        if not same:
            sys.exit("the merges differ from C git's")
        print(f"{'operation':<22}{'gitstratum':>12}{'C git':>12}{'ratio':>8}")
        for name, (mine, theirs) in rows.items():
            m, r = statistics.median(mine), statistics.median(theirs)
            print(f"{name:<22}{m * 1000:>10.1f}ms{r * 1000:>10.1f}ms{m / r:>8.2f}")
    finally:
        try:
            server.stop()
        except subprocess.TimeoutExpired:
            # A background repack of the pushed corpus may still be running: not measured here.
            server.proc.kill()
            server.proc.wait()


if __name__ == "__main__":
    main()
