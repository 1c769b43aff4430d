#!/usr/bin/env python3
"""Clone/fetch/push benchmark: a server under test beside C git, on the same repository, in one run.

  clone-bench.py --server PATH/TO/gitstratum --repo BARE_REPO [--runs 5] [--parallel 8] [--json OUT]

The server under test is started as `PATH serve --data-dir D --listen 127.0.0.1:PORT`, must answer /healthz,
write D/initial-admin-token, and create repositories with POST /api/v1/repos.
References: C git's `git http-backend` behind `refserver.py` (same contract, over HTTP) and `git daemon` (git://).
Every figure is a median over --runs, measured A/B interleaved; the table prints each reference's figure and
the ratio server/reference (below 1.0 means the server under test is faster).

Moved here from shared/bench (same interface) and extended for issue 17: the first full clone apart from
repeated ones (a repeated one may come from the server's pack cache), a tree:0 clone, a fetch of one new
commit, and the server under test's peak resident memory during `push --mirror` and during --parallel full
clones at once (Linux: VmHWM, reset through /proc/PID/clear_refs; the references spawn a process per request,
so they have no such figure); with --large-push-mib, a push of that many MiB of incompressible files.
"""
import argparse
import base64
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Http:
    def __init__(self, cmd, root, extra=()):
        self.data = os.path.join(root, "data")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(os.path.join(root, "server.log"), "wb")
        # The repository's own CI workflows (tokio has them) would run on the embedded runner and
        # compete for the CPU: the references run no CI, so neither does the server under test.
        # Maintenance looks every second (not every minute), so the repack a pushed repository gets
        # happens before the clones are measured, not in the middle of them.
        env = dict(os.environ, GITSTRATUM_EMBEDDED_RUNNER="false", GITSTRATUM_GIT_MAINTENANCE_SECS="1")
        self.proc = subprocess.Popen(cmd + ["serve", "--data-dir", self.data, "--listen", f"127.0.0.1:{self.port}",
                                            *extra],
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2):
                    break
            except Exception:
                if time.time() > deadline or self.proc.poll() is not None:
                    sys.exit(f"server {cmd} did not become healthy")
                time.sleep(0.2)
        self.token = open(os.path.join(self.data, "initial-admin-token")).read().strip()

    def create(self, name):
        req = urllib.request.Request(self.url + "/api/v1/repos", data=json.dumps({"name": name}).encode(),
                                     method="POST", headers={"Content-Type": "application/json",
                                                             "Authorization": "Bearer " + self.token})
        urllib.request.urlopen(req, timeout=30).read()
        return f"http://x:{self.token}@127.0.0.1:{self.port}/admin/{name}.git"

    def cpu_seconds(self):
        """User+system CPU of the server's process tree so far (Linux /proc)."""
        total = 0.0
        tick = os.sysconf("SC_CLK_TCK")
        pids = [self.proc.pid]
        try:
            out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True).stdout
            pids += [int(x) for x in out.split()]
        except Exception:
            pass
        for pid in pids:
            try:
                f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
                total += (int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])) / tick
            except Exception:
                pass
        return total

    def reset_peak(self):
        """Starts a new peak-resident-memory measurement (Linux; needs the same user)."""
        try:
            with open(f"/proc/{self.proc.pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass

    def peak_mib(self):
        try:
            for line in open(f"/proc/{self.proc.pid}/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return float("nan")

    def wait_for_full_repack(self):
        """Seconds the server's first full repack took (its log line), once it has happened."""
        deadline = time.time() + 600
        while time.time() < deadline:
            self.log.flush()
            with open(self.log.name, errors="replace") as f:
                for line in f:
                    if "git maintenance" in line and "full=true" in line:
                        m = re.search(r"took_ms=(\d+)", line)
                        return int(m.group(1)) / 1000 if m else float("nan")
            time.sleep(0.5)
        sys.exit("the server did not repack the pushed repository")

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def git(args, cwd, env, check=True):
    p = subprocess.run(["git"] + args, cwd=cwd, env=env, capture_output=True)
    if check and p.returncode != 0:
        sys.exit(f"git {' '.join(args)} failed: {p.stderr.decode()[-1500:]}")
    return p


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def pkt(line):
    data = line.encode() if isinstance(line, str) else line
    return b"%04x" % (len(data) + 4) + data


def fetch_request(wants, depth=None):
    """A protocol v2 fetch command as a client sends it (no progress, no haves). It asks for no
    `thin-pack` and no `include-tag`, unlike `git clone`, so our server's pack cache keys it apart
    from the clones measured beside it."""
    body = pkt("command=fetch\n") + pkt("agent=clone-bench\n") + pkt("object-format=sha1\n") + b"0001"
    body += pkt("ofs-delta\n") + pkt("no-progress\n")
    if depth:
        body += pkt(f"deepen {depth}\n")
    for w in wants:
        body += pkt(f"want {w}\n")
    return body + pkt("done\n") + b"0000"


def read_to_flush(f):
    """Reads pkt-lines until a flush packet (the end of a v2 response); returns the bytes read."""
    n = 0
    while True:
        head = f.read(4)
        if len(head) < 4:
            raise EOFError("response ended before its flush packet")
        size = int(head, 16)
        if size == 0:
            return n
        if size < 4:
            continue  # delimiter or response-end
        data = f.read(size - 4)
        if len(data) < size - 4:
            raise EOFError("short pkt-line")
        n += size


def raw_fetch(url, body):
    """Seconds to send one fetch request and read the whole response, without a git client: the
    server's part of a clone, apart from the client's indexing and checkout. Returns (seconds, bytes)."""
    t = time.perf_counter()
    if url.startswith("git://"):
        rest = url[len("git://"):]
        hostport, path = rest.split("/", 1)
        host, port = hostport.rsplit(":", 1)
        with socket.create_connection((host, int(port))) as s:
            f = s.makefile("rwb")
            f.write(pkt(f"git-upload-pack /{path}\0host={hostport}\0\0version=2\0"))
            f.flush()
            read_to_flush(f)  # the capability advertisement
            f.write(body)
            f.flush()
            n = read_to_flush(f)
    else:
        u = urllib.parse.urlsplit(url)
        plain = urllib.parse.urlunsplit((u.scheme, f"{u.hostname}:{u.port}", u.path, "", ""))
        auth = base64.b64encode(f"{u.username}:{u.password}".encode()).decode()
        req = urllib.request.Request(plain + "/git-upload-pack", data=body, method="POST", headers={
            "Content-Type": "application/x-git-upload-pack-request", "Git-Protocol": "version=2",
            "Accept": "application/x-git-upload-pack-result", "Authorization": "Basic " + auth})
        with urllib.request.urlopen(req, timeout=600) as r:
            n = read_to_flush(r)
    return time.perf_counter() - t, n


def pack_bytes(path):
    d = os.path.join(path, "objects", "pack") if os.path.isdir(os.path.join(path, "objects")) else \
        os.path.join(path, ".git", "objects", "pack")
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if f.endswith(".pack"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True, help="binary of the server under test")
    ap.add_argument("--repo", required=True, help="bare repository to serve")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--json")
    ap.add_argument("--large-push-mib", type=int, default=0,
                    help="also push a new repository holding this many MiB of incompressible files, "
                         "reporting its time and the server's peak resident memory")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="clone-bench-")
    home = os.path.join(tmp, "home")
    os.makedirs(home)
    env = dict(os.environ, HOME=home, GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0")
    src = os.path.abspath(a.repo)
    branch = git(["symbolic-ref", "--short", "HEAD"], src, env).stdout.decode().strip()
    servers = {}
    try:
        os.makedirs(os.path.join(tmp, "test"))
        os.makedirs(os.path.join(tmp, "ref"))
        servers["test"] = Http([os.path.abspath(a.server)], os.path.join(tmp, "test"))
        servers["http-backend"] = Http([sys.executable, os.path.join(HERE, "refserver.py")], os.path.join(tmp, "ref"))
        urls = {}
        results = {}

        def record(metric, name, value):
            results.setdefault(metric, {}).setdefault(name, []).append(value)

        for name, s in servers.items():
            urls[name] = s.create("bench")
            s.reset_peak()
            record("push --mirror (s)", name, timed(lambda: git(["push", "-q", "--mirror", urls[name]], src, env)))
            if name == "test":
                record("server peak RSS, push --mirror (MiB)", name, s.peak_mib())
                record("full repack after the push, in the background (s)", name, s.wait_for_full_repack())
        # git daemon serves the source repository itself over git://
        dport = free_port()
        droot = os.path.join(tmp, "daemon")
        os.makedirs(droot)
        os.symlink(src, os.path.join(droot, "bench.git"))
        daemon = subprocess.Popen(["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={droot}",
                                   f"--port={dport}", "--listen=127.0.0.1", droot], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(1)
        urls["git-daemon"] = f"git://127.0.0.1:{dport}/bench.git"
        names = list(urls)
        n = [0]

        def dest():
            n[0] += 1
            return os.path.join(tmp, f"c{n[0]}")

        for name in names:  # the first full clone: nothing cached yet
            dst = dest()
            record("full clone, first (s)", name, timed(lambda: git(["clone", "-q", "--bare", urls[name], dst], tmp, env)))
            shutil.rmtree(dst)
        for name in names:  # cold depth-1 clone: first request for this repository on each server
            dst = dest()
            record("depth=1 clone, first (s)", name, timed(lambda: git(["clone", "-q", "--depth=1", "--no-checkout", "-b", branch, urls[name], dst], tmp, env)))
            shutil.rmtree(dst)
        # The servers' part alone: the same depth=1 and full-clone requests sent raw, the response read
        # to its end. The first of each is a cache miss on our server (its key differs from the git
        # clients' above); the repeated ones may be cache hits. C git has no cache: each is "first".
        tip = git(["rev-parse", branch], src, env).stdout.decode().strip()
        tips = sorted(set(git(["for-each-ref", "--format=%(objectname)", "refs/heads", "refs/tags"], src, env)
                          .stdout.decode().split()))
        shallow_req, full_req = fetch_request([tip], depth=1), fetch_request(tips)
        for name in names:
            record("depth=1 server response, first (s)", name, raw_fetch(urls[name], shallow_req)[0])
            record("full clone server response, first (s)", name, raw_fetch(urls[name], full_req)[0])
        for _ in range(a.runs):
            for name in names:
                record("depth=1 server response, repeated (s)", name, raw_fetch(urls[name], shallow_req)[0])
                record("full clone server response, repeated (s)", name, raw_fetch(urls[name], full_req)[0])
        for _ in range(a.runs):
            for name in names:
                dst = dest()
                record("depth=1 clone, repeated (s)", name, timed(lambda: git(["clone", "-q", "--depth=1", "--no-checkout", "-b", branch, urls[name], dst], tmp, env)))
                record("depth=1 pack (bytes)", name, pack_bytes(dst))
                shutil.rmtree(dst)
                dst = dest()
                record("full clone, repeated (s)", name, timed(lambda: git(["clone", "-q", "--bare", urls[name], dst], tmp, env)))
                record("full pack (bytes)", name, pack_bytes(dst))
                shutil.rmtree(dst)
                dst = dest()
                record("blob:none clone (s)", name, timed(lambda: git(["clone", "-q", "--bare", "--filter=blob:none", urls[name], dst], tmp, env)))
                shutil.rmtree(dst)
                dst = dest()
                record("tree:0 clone (s)", name, timed(lambda: git(["clone", "-q", "--bare", "--filter=tree:0", urls[name], dst], tmp, env)))
                shutil.rmtree(dst)
        for name in names:
            dsts = [dest() for _ in range(a.parallel * 2)]
            cpu0 = servers[name].cpu_seconds() if name in servers else None

            def one(d):
                git(["clone", "-q", "--depth=1", "--no-checkout", "-b", branch, urls[name], d], tmp, env)

            def burst():
                threads = [threading.Thread(target=one, args=(d,)) for d in dsts[:a.parallel]]
                [t.start() for t in threads]
                [t.join() for t in threads]

            wall = timed(burst)
            record(f"{a.parallel} parallel depth=1 clones (clones/s)", name, a.parallel / wall)
            if cpu0 is not None:
                record(f"server CPU per depth=1 clone, parallel (s)", name, (servers[name].cpu_seconds() - cpu0) / a.parallel)
            for d in dsts:
                shutil.rmtree(d, ignore_errors=True)
        if "test" in servers:  # memory under parallel full clones
            s = servers["test"]
            dsts = [dest() for _ in range(a.parallel)]
            s.reset_peak()
            threads = [threading.Thread(target=lambda d=d: git(["clone", "-q", "--bare", urls["test"], d], tmp, env))
                       for d in dsts]
            [t.start() for t in threads]
            [t.join() for t in threads]
            record(f"server peak RSS, {a.parallel} parallel full clones (MiB)", "test", s.peak_mib())
            for d in dsts:
                shutil.rmtree(d, ignore_errors=True)
        # incremental fetch of one new commit
        work = dest()
        git(["clone", "-q", "-b", branch, urls["test"], work], tmp, env)
        for name in ("test", "http-backend"):
            git(["remote", "add", name, urls[name]], work, env, check=False)
        readers = {}
        for name in ("test", "http-backend"):  # clones that will fetch the new commits
            readers[name] = dest()
            git(["clone", "-q", "--bare", urls[name], readers[name]], tmp, env)
        for r in range(a.runs):  # one new commit a round: pushed to each, then fetched from each
            with open(os.path.join(work, "bench-new-file"), "w") as fh:
                fh.write(f"new {r}\n")
            git(["add", "-A"], work, env)
            git(["-c", "user.name=b", "-c", "user.email=b@e", "commit", "-qm", f"bench {r}"], work, env)
            for name in ("test", "http-backend"):
                record("push of one commit (s)", name, timed(lambda: git(["push", "-q", name, f"HEAD:{branch}"], work, env)))
            for name in ("test", "http-backend"):
                record("fetch of one commit (s)", name, timed(lambda: git(["fetch", "-q", "origin", branch], readers[name], env)))
        os.killpg(daemon.pid, signal.SIGTERM)
        if a.large_push_mib:
            large = dest()
            git(["init", "-q", "-b", "main", large], tmp, env)
            # Files of at most 512 MiB: one object may be at most 1 GiB (GitHub refuses files
            # over 100 MB).
            for part in range((a.large_push_mib + 511) // 512):
                with open(os.path.join(large, f"large-{part}.bin"), "wb") as fh:
                    for _ in range(min(512, a.large_push_mib - part * 512)):
                        fh.write(os.urandom(1 << 20))
            git(["add", "-A"], large, env)
            git(["-c", "user.name=b", "-c", "user.email=b@e", "commit", "-qm", "large"], large, env)
            git(["repack", "-adq"], large, env)  # the client packs once; each push then only sends
            for name, s in servers.items():
                url = s.create("large")
                s.reset_peak()
                record(f"push of {a.large_push_mib} MiB (s)", name,
                       timed(lambda: git(["push", "-q", url, "main"], large, env)))
                if name == "test":
                    record(f"server peak RSS, push of {a.large_push_mib} MiB (MiB)", name, s.peak_mib())
            shutil.rmtree(large)

        table = {}
        print(f"{'metric':44} {'test':>12} {'http-backend':>13} {'ratio':>7} {'git-daemon':>11} {'ratio':>7}")
        for metric, by in results.items():
            med = {k: statistics.median(v) for k, v in by.items()}
            row = {"test": med.get("test")}
            line = f"{metric:44} {med.get('test', float('nan')):12.4g}"
            for ref in ("http-backend", "git-daemon"):
                if ref in med and med.get("test") is not None:
                    ratio = med["test"] / med[ref] if med[ref] else float("nan")
                    row[ref] = med[ref]
                    row[f"ratio_vs_{ref}"] = ratio
                    line += f" {med[ref]:13.4g} {ratio:7.3f}" if ref == "http-backend" else f" {med[ref]:11.4g} {ratio:7.3f}"
                else:
                    line += f" {'-':>13} {'-':>7}" if ref == "http-backend" else f" {'-':>11} {'-':>7}"
            table[metric] = row
            print(line)
        if a.json:
            json.dump(table, open(a.json, "w"), indent=1)
    finally:
        for s in servers.values():
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
