#!/usr/bin/env python3
"""Forking a large repository, beside C git's local clone of it, in one run.

  fork-bench.py --server PATH/TO/gitstratum --repo BARE_REPO [--runs 3]

The repository is pushed (`git push --mirror`) to a fresh `gitstratum serve` (background
maintenance held off, so the packs are as pushed). Then, --runs times:
  fork    POST /api/v1/repos/admin/corpus/forks (objects, refs, HEAD) against
          `git clone --bare --local` of the same repository (hard-linked objects, refs copied:
          C git's cheapest full copy on one file system);
  bytes   the data directory's growth on disk for one fork (the object index copy, in RocksDB's
          log until it is flushed), counting a hard-linked file once, against the clone's;
  at rest the same for one more fork of the fork, measured with the server stopped (RocksDB
          flushed to its tables) before and after, log files left out.
Then the newest fork is cloned (`git clone --bare`) and checked with `git fsck` against the
parent's objects, and the parent is deleted and the fork cloned and checked again.
Ratios are ours / C git's (below 1.0: faster or smaller). Our figures include the HTTP request.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import Server  # noqa: E402


def run(*args, cwd=None):
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True).stdout.decode().strip()


def disk_bytes(*roots):
    """Bytes of blocks the files under `roots` take, each inode once (as `du` counts)."""
    seen, total = set(), 0
    for root in roots:
        for dirpath, _, files in os.walk(root):
            for name in files:
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except FileNotFoundError:
                    continue
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
    return total


def disk_bytes_matching(root, suffix):
    """Bytes of the files under `root` whose names end with `suffix`."""
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            if name.endswith(suffix):
                try:
                    total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
                except FileNotFoundError:
                    pass
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--repo", required=True, help="a bare repository")
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="fork-bench-")
    data = os.path.join(tmp, "data")
    objects = int(run("git", "count-objects", "-v", cwd=a.repo).split("in-pack: ")[1].split()[0])
    server = Server(a.server, data, env={"GITSTRATUM_GIT_MAINTENANCE_SECS": "86400"})
    try:
        server.api("POST", "/api/v1/repos", {"name": "corpus"})
        start = time.perf_counter()
        run("git", "push", "-q", "--mirror", server.push_url("admin/corpus"), cwd=a.repo)
        print(f"pushed {objects} objects in {time.perf_counter() - start:.1f} s")
        ours, theirs, our_bytes, their_bytes = [], [], [], []
        for i in range(a.runs):
            before = disk_bytes(data)
            start = time.perf_counter()
            server.api("POST", "/api/v1/repos/admin/corpus/forks", {"name": f"fork-{i}"})
            ours.append(time.perf_counter() - start)
            our_bytes.append(disk_bytes(data) - before)
            target = os.path.join(tmp, f"clone-{i}.git")
            before = disk_bytes(a.repo)
            start = time.perf_counter()
            run("git", "clone", "-q", "--bare", "--local", a.repo, target)
            theirs.append(time.perf_counter() - start)
            their_bytes.append(disk_bytes(a.repo, target) - before)
        check = os.path.join(tmp, "check.git")
        fork = f"admin/fork-{a.runs - 1}"
        run("git", "clone", "-q", "--bare", server.push_url(fork), check)
        run("git", "fsck", "--no-dangling", cwd=check)
        server.api("DELETE", "/api/v1/repos/admin/corpus")
        again = os.path.join(tmp, "again.git")
        run("git", "clone", "-q", "--bare", server.push_url(fork), again)
        run("git", "fsck", "--no-dangling", cwd=again)
        print("the fork clones whole and passes git fsck, before and after its parent is deleted")
        # At rest: the data directory of a server stopped (RocksDB flushed) with and without one
        # more fork, its log files left out.
        server.stop()
        rest = lambda: disk_bytes(data) - disk_bytes_matching(data, ".log")  # noqa: E731
        at_rest_before = rest()
        server = Server(a.server, data, env={"GITSTRATUM_GIT_MAINTENANCE_SECS": "86400"})
        server.api("POST", "/api/v1/repos/admin/" + fork.split("/")[1] + "/forks", {"name": "at-rest"})
        server.stop()
        at_rest = rest() - at_rest_before
        server = Server(a.server, data, env={"GITSTRATUM_GIT_MAINTENANCE_SECS": "86400"})
        m, r = statistics.median(ours), statistics.median(theirs)
        print(f"{'fork':<8} ours {m * 1000:8.1f} ms   git clone --local {r * 1000:8.1f} ms   ratio {m / r:5.2f}x")
        mb, rb = statistics.median(our_bytes), statistics.median(their_bytes)
        print(f"{'bytes':<8} ours {mb / 1e6:8.1f} MB   git clone --local {rb / 1e6:8.1f} MB   ratio {mb / max(rb, 1):5.2f}x"
              f"   (the repository's packs: {disk_bytes(os.path.join(a.repo, 'objects')) / 1e6:.1f} MB)")
        print(f"{'at rest':<8} ours {at_rest / 1e6:8.1f} MB for one more fork once RocksDB flushed (its log files left out)")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
