#!/usr/bin/env python3
"""Forking a large repository, beside C git's local clone of it, in one run.

  fork-bench.py --server PATH/TO/gitstratum --repo BARE_REPO [--runs 3]

The repository is pushed (`git push --mirror`) to a fresh `gitstratum serve` (background
maintenance held off, so the packs are as pushed; no pack cache). Then, --runs times:
  fork    POST /api/v1/repos/admin/corpus/forks (objects, refs, HEAD) against
          `git clone --bare --local` of the same repository (hard-linked objects, refs copied:
          C git's cheapest full copy on one file system);
  at rest the data directory's growth on disk for one fork (made first), counting a hard-linked
          file once, measured with the server stopped and its store opened once more (RocksDB
          flushed to its tables) before and after, RocksDB's log files (write-ahead,
          informational and its metadata's) left out, against the clone's growth.
Then the newest fork is cloned (`git clone --bare`) and checked with `git fsck` against the
parent's objects; full clones of the first fork and of the parent are timed, alternating (clone:
fork / parent); and the parent is deleted and the fork cloned and checked again.
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


# Background maintenance held off (the packs stay as pushed); no pack cache (every clone timed
# reads the store).
ENV = {"GITSTRATUM_GIT_MAINTENANCE_SECS": "86400", "GITSTRATUM_PACK_CACHE_MB": "0"}


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


def log_bytes(root):
    """Bytes of RocksDB's logs under `root`: write-ahead (`*.log`), informational (`LOG*`) and
    of its own metadata (`MANIFEST-*`, preallocated 4 MiB at a time, a new one at each open;
    `OPTIONS-*`), whatever the data."""
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            if name.endswith(".log") or name.startswith(("LOG", "MANIFEST-", "OPTIONS-")):
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
    server = Server(a.server, data, env=ENV)
    try:
        server.api("POST", "/api/v1/repos", {"name": "corpus"})
        start = time.perf_counter()
        run("git", "push", "-q", "--mirror", server.push_url("admin/corpus"), cwd=a.repo)
        print(f"pushed {objects} objects in {time.perf_counter() - start:.1f} s")
        # At rest: the data directory with and without one fork, logs left out, measured
        # first (later deletions leave RocksDB compactions that blur the difference). Opening
        # the store flushes what its write-ahead log holds into tables: a restart after each
        # stop, so both sides of the difference are flushed.
        def settle():
            server.stop()
            Server(a.server, data, env=ENV).stop()
        settle()
        rest = lambda: disk_bytes(data) - log_bytes(data)  # noqa: E731
        at_rest_before = rest()
        server = Server(a.server, data, env=ENV)
        server.api("POST", "/api/v1/repos/admin/corpus/forks", {"name": "at-rest"})
        settle()
        at_rest = rest() - at_rest_before
        server = Server(a.server, data, env=ENV)
        ours, theirs, their_bytes = [], [], []
        for i in range(a.runs):
            start = time.perf_counter()
            server.api("POST", "/api/v1/repos/admin/corpus/forks", {"name": f"fork-{i}"})
            ours.append(time.perf_counter() - start)
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
        # A full clone of a fork (its objects read through the shared packs' indexes) beside one of
        # its parent (through its own object index), alternating.
        clone_times = {"corpus": [], "fork-0": []}
        for i in range(a.runs):
            for name in clone_times:
                target = os.path.join(tmp, f"timed-{name}-{i}.git")
                start = time.perf_counter()
                run("git", "clone", "-q", "--bare", server.push_url(f"admin/{name}"), target)
                clone_times[name].append(time.perf_counter() - start)
                subprocess.run(["rm", "-rf", target], check=True)
        server.api("DELETE", "/api/v1/repos/admin/corpus")
        again = os.path.join(tmp, "again.git")
        run("git", "clone", "-q", "--bare", server.push_url(fork), again)
        run("git", "fsck", "--no-dangling", cwd=again)
        print("the fork clones whole and passes git fsck, before and after its parent is deleted")
        m, r = statistics.median(ours), statistics.median(theirs)
        print(f"{'fork':<8} ours {m * 1000:8.1f} ms   git clone --local {r * 1000:8.1f} ms   ratio {m / r:5.2f}x")
        rb = statistics.median(their_bytes)
        print(f"{'at rest':<8} ours {at_rest / 1e6:8.1f} MB   git clone --local {rb / 1e6:8.1f} MB   ratio {at_rest / max(rb, 1):5.2f}x"
              f"   (the repository's packs: {disk_bytes(os.path.join(a.repo, 'objects')) / 1e6:.1f} MB)")
        cp, cf = statistics.median(clone_times["corpus"]), statistics.median(clone_times["fork-0"])
        print(f"{'clone':<8} fork {cf * 1000:8.1f} ms   its parent {cp * 1000:8.1f} ms   ratio {cf / cp:5.2f}x"
              f"   (a full clone; the first fork clone includes reading the shared packs' indexes)")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
