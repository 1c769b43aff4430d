#!/usr/bin/env python3
"""Cluster mode beside single-node mode, on one repository, in one run.

    python3 bench/cluster-bench.py --bin $CARGO_TARGET_DIR/release/gitstratum --repo BARE_REPO \
        [--runs 3] [--clones 24] [--parallel 6]

Starts a single-node server (embedded RocksDB and SQLite) and a cluster (`scripts/cluster.sh`:
PostgreSQL, three Garage nodes, three frontends), pushes the repository (`push --mirror`) to
each, and prints medians with the cluster's ratio to single-node mode:
- a push of one commit (the push latency: verify, upload, list, refs in PostgreSQL);
- depth=1 and full clones through a cold frontend (its cache empty: it takes every pack from
  object storage first) and through a warm one, beside the same clones of the single node;
- the throughput of parallel depth=1 clones spread over 1, 2 and 3 frontends (the scaling
  curve; on one machine the frontends share its cores, so this shows the overhead of spreading,
  not the gain of more machines).
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import Server, git  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(fn):
    start = time.monotonic()
    fn()
    return time.monotonic() - start


def url(base, token, repo="admin/app"):
    return base.replace("http://", f"http://x:{token}@") + f"/{repo}.git"


def api(base, token, method, path, body=None):
    import urllib.request
    req = urllib.request.Request(base + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        text = r.read().decode()
        return json.loads(text) if text.startswith(("{", "[")) else text


def create_repo(base, token):
    api(base, token, "POST", "/api/v1/repos", {"name": "app"})


def clone(tmp, remote, *args):
    dst = tempfile.mkdtemp(dir=tmp)
    git(tmp, "clone", "-q", "--bare", *args, remote, dst)
    subprocess.run(["rm", "-rf", dst], check=True)


def one_commit_push(tmp, remote, n):
    work = os.path.join(tmp, f"push-{n}-{time.monotonic_ns()}")
    git(tmp, "clone", "-q", "--depth=1", remote, work)
    with open(os.path.join(work, f"bench-{time.monotonic_ns()}.txt"), "w") as f:
        f.write("one more\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "bench")
    t = timed(lambda: git(work, "push", "-q", "origin", "HEAD"))
    subprocess.run(["rm", "-rf", work], check=True)
    return t


def throughput(tmp, remotes, clones, parallel):
    start = time.monotonic()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(lambda i: clone(tmp, remotes[i % len(remotes)], "--depth=1"), range(clones)))
    return clones / (time.monotonic() - start)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", required=True)
    p.add_argument("--repo", required=True, help="a bare repository to serve")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--clones", type=int, default=24)
    p.add_argument("--parallel", type=int, default=6)
    a = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="cluster-bench-")
    rows = []

    single = Server(a.bin, os.path.join(tmp, "single"), extra=["--no-embedded-runner"])
    cluster_dir = os.path.join(tmp, "cluster")
    env = dict(os.environ, GITSTRATUM_BIN=a.bin, GITSTRATUM_CLUSTER_LOG_LEVEL="warn")
    subprocess.run(["bash", os.path.join(ROOT, "scripts/cluster.sh"), "up", cluster_dir], check=True, env=env)
    try:
        info = json.load(open(os.path.join(cluster_dir, "cluster.json")))
        fronts = [f["url"] for f in info["frontends"]]
        ctoken = info["admin_token"]
        create_repo(single.base, single.token)
        create_repo(fronts[0], ctoken)
        s_url = url(single.base, single.token)
        c_urls = [url(f, ctoken) for f in fronts]

        s_mirror = timed(lambda: git(a.repo, "push", "-q", "--mirror", s_url))
        c_mirror = timed(lambda: git(a.repo, "push", "-q", "--mirror", c_urls[0]))
        rows.append(("push --mirror (first)", s_mirror, c_mirror))

        # Cold frontends: two has never served the repository (depth=1 first), three neither
        # (full clone first).
        s_d1 = timed(lambda: clone(tmp, s_url, "--depth=1"))
        c_d1 = timed(lambda: clone(tmp, c_urls[1], "--depth=1"))
        rows.append(("depth=1 clone, cold frontend", s_d1, c_d1))
        s_full = timed(lambda: clone(tmp, s_url))
        c_full = timed(lambda: clone(tmp, c_urls[2]))
        rows.append(("full clone, cold frontend", s_full, c_full))

        def median(fn):
            return statistics.median(fn() for _ in range(a.runs))

        rows.append(("depth=1 clone, warm",
                     median(lambda: timed(lambda: clone(tmp, s_url, "--depth=1"))),
                     median(lambda: timed(lambda: clone(tmp, c_urls[1], "--depth=1")))))
        rows.append(("full clone, warm",
                     median(lambda: timed(lambda: clone(tmp, s_url))),
                     median(lambda: timed(lambda: clone(tmp, c_urls[2])))))
        n = iter(range(10_000))
        rows.append(("push of one commit",
                     median(lambda: one_commit_push(tmp, s_url, next(n))),
                     median(lambda: one_commit_push(tmp, c_urls[0], next(n)))))

        # Every frontend warm before the curve.
        for u in c_urls:
            clone(tmp, u, "--depth=1")
        single_tp = throughput(tmp, [s_url], a.clones, a.parallel)
        curve = [(k, throughput(tmp, c_urls[:k], a.clones, a.parallel)) for k in (1, 2, 3)]
    finally:
        single.stop()
        subprocess.run(["bash", os.path.join(ROOT, "scripts/cluster.sh"), "down", cluster_dir], env=env)

    print(f"{'operation':<34} {'single-node':>12} {'cluster':>10} {'ratio':>7}")
    for name, s, c in rows:
        print(f"{name:<34} {s:>11.3f}s {c:>9.3f}s {c / s:>6.2f}x")
    print(f"\nparallel depth=1 clones ({a.clones}, {a.parallel} at once): single-node {single_tp:.2f}/s")
    for k, tp in curve:
        print(f"  {k} frontend{'s' if k > 1 else ' '}: {tp:.2f} clones/s ({tp / single_tp:.2f}x single-node, "
              f"{tp / curve[0][1]:.2f}x one frontend)")


if __name__ == "__main__":
    main()
