#!/usr/bin/env python3
"""Git over SSH: the server under test's built-in SSH server beside OpenSSH's sshd running C git's
git-upload-pack/git-receive-pack, on the same repository, in one run.

  ssh-bench.py --server PATH/TO/gitstratum --repo BARE_REPO [--runs 5]

Needs /usr/sbin/sshd (Debian's openssh-server; it runs here as the invoking user, on a loopback
port, with a config of its own) and ssh/ssh-keygen. The repository is pushed to the server
(`git push --mirror` over SSH) and copied for sshd (`git clone --mirror --no-local`, then `git
repack -adb`: one pack with reachability bitmaps, as a C git server keeps it). The server's first
full repack is waited for, so both serve a repacked repository. Then, --runs times each,
interleaved: ls-remote, a full clone (bare), a depth=1 clone, the push of one new commit and a fetch
of it into an existing clone. Medians; ratios are ours / C git's (below 1.0: faster). Both sides
pay the same SSH client and key exchange (curve25519-sha256); sshd's per-connection cost (a
process per connection, re-executed, then a shell running git) is part of the reference, as it is
of every C git server behind OpenSSH.
"""
import argparse
import importlib.util
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))

def run(args, cwd=None, env=None):
    return subprocess.run(args, cwd=cwd, env=env, check=True, capture_output=True).stdout.decode().strip()


def load_clone_bench():
    """clone-bench.py, for its server wrapper and helpers (its file name is no module name)."""
    spec = importlib.util.spec_from_file_location("clone_bench", os.path.join(HERE, "clone-bench.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


clone_bench = load_clone_bench()
free_port, timed = clone_bench.free_port, clone_bench.timed


def api(server, method, path, body):
    req = urllib.request.Request(server.url + path, method=method, data=json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {server.token}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")


class Sshd:
    """OpenSSH's sshd on a loopback port, accepting `key` for the invoking user."""

    def __init__(self, root, public_key):
        self.port = free_port()
        host_key = os.path.join(root, "host_key")
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", host_key])
        keys = os.path.join(root, "authorized_keys")
        shutil.copy(public_key, keys)
        config = os.path.join(root, "sshd_config")
        with open(config, "w") as f:
            f.write(f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nAuthorizedKeysFile {keys}\n"
                    f"StrictModes no\nUsePAM no\nPasswordAuthentication no\nPermitRootLogin prohibit-password\n"
                    f"PidFile {root}/sshd.pid\n")
        os.makedirs("/run/sshd", exist_ok=True)
        self.proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-f", config, "-E", os.path.join(root, "sshd.log")],
                                     start_new_session=True)
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    sys.exit("sshd did not start")
                time.sleep(0.1)

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--repo", required=True)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="ssh-bench-")
    home = os.path.join(tmp, "home")
    os.makedirs(home)
    key = os.path.join(tmp, "id_ed25519")
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key])
    # One key exchange for both (OpenSSH would pick sntrup761x25519 with sshd, which the server
    # under test does not offer).
    ssh = (f"ssh -i {key} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no "
           f"-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o KexAlgorithms=curve25519-sha256")
    env = dict(os.environ, HOME=home, GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0", GIT_SSH_COMMAND=ssh,
               GIT_AUTHOR_NAME="B", GIT_AUTHOR_EMAIL="b@example.com", GIT_COMMITTER_NAME="B",
               GIT_COMMITTER_EMAIL="b@example.com")
    src = os.path.abspath(a.repo)
    ours = sshd = None
    try:
        os.makedirs(os.path.join(tmp, "ours"))
        ssh_port = free_port()
        # Maintenance every second and no CI, as in clone-bench; SSH on a port of its own.
        ours = clone_bench.Http([os.path.abspath(a.server)], os.path.join(tmp, "ours"),
                                       extra=["--ssh-listen", f"127.0.0.1:{ssh_port}"])
        with open(key + ".pub") as f:
            api(ours, "POST", "/api/v1/user/keys", {"key": f.read().strip()})
        api(ours, "POST", "/api/v1/repos", {"name": "bench"})
        os.makedirs(os.path.join(tmp, "sshd"))
        sshd = Sshd(os.path.join(tmp, "sshd"), key + ".pub")
        ref_repo = os.path.join(tmp, "ref.git")
        user = run(["id", "-un"])
        urls = {
            "ours": f"ssh://git@127.0.0.1:{ssh_port}/admin/bench.git",
            "C git": f"ssh://{user}@127.0.0.1:{sshd.port}{ref_repo}",
        }
        push_s = timed(lambda: run(["git", "push", "-q", "--mirror", urls["ours"]], cwd=src, env=env))
        run(["git", "clone", "-q", "--mirror", "--no-local", src, ref_repo], env=env)
        run(["git", "repack", "-adbq"], cwd=ref_repo, env=env)
        repack_s = ours.wait_for_full_repack()
        print(f"push --mirror over SSH to the server: {push_s:.2f} s; its full repack after: {repack_s:.1f} s",
              flush=True)

        results = {}
        names = list(urls)

        def measure(metric, fn):
            for name in names:
                results.setdefault(metric, {}).setdefault(name, []).append(fn(name))

        work = os.path.join(tmp, "work")
        os.makedirs(work)
        # One working clone per side, for pushes and fetches.
        clones = {}
        for name in names:
            clones[name] = os.path.join(work, f"clone-{names.index(name)}")
            run(["git", "clone", "-q", urls[name], clones[name]], env=env)
        # A second clone per side that fetches what the first pushes.
        fetchers = {}
        for name in names:
            fetchers[name] = os.path.join(work, f"fetcher-{names.index(name)}")
            run(["git", "clone", "-q", "--depth=50", urls[name], fetchers[name]], env=env)

        hosts = {"ours": ["-p", str(ssh_port), "git@127.0.0.1"], "C git": ["-p", str(sshd.port), f"{user}@127.0.0.1"]}

        def sign_in(n):
            # What any command pays first: the connection, key exchange and sign-in (ours answers a
            # shell request with its greeting, sshd runs `true`).
            command = ["-T"] if n == "ours" else ["true"]
            return timed(lambda: subprocess.run(ssh.split() + hosts[n] + command, capture_output=True))

        for i in range(a.runs):
            measure("connect and sign in", sign_in)
            measure("ls-remote", lambda n: timed(lambda: run(["git", "ls-remote", urls[n]], env=env)))

            def clone(n, *flags):
                dest = os.path.join(work, f"c-{names.index(n)}-{i}-{len(flags)}")
                t = timed(lambda: run(["git", "clone", "-q", *flags, urls[n], dest], env=env))
                shutil.rmtree(dest)
                return t

            measure("full clone (bare)", lambda n: clone(n, "--bare"))
            measure("depth=1 clone", lambda n: clone(n, "--depth=1", "--no-checkout"))

            def push_one(n):
                path = os.path.join(clones[n], f"bench-{i}.txt")
                with open(path, "w") as f:
                    f.write(f"{i}\n" * 100)
                run(["git", "add", "-A"], cwd=clones[n], env=env)
                run(["git", "commit", "-q", "-m", f"bench {i}"], cwd=clones[n], env=env)
                return timed(lambda: run(["git", "push", "-q", "origin", "HEAD"], cwd=clones[n], env=env))

            measure("push of one commit", push_one)
            measure("fetch of one commit", lambda n: timed(lambda: run(["git", "fetch", "-q", "origin"],
                                                                         cwd=fetchers[n], env=env)))
        print(f"\nrepository: {src}; {a.runs} runs; medians in seconds; ratio = ours / C git (OpenSSH sshd "
              f"+ git-upload-pack/receive-pack)")
        print(f"{'operation':<24} {'ours':>9} {'C git':>9} {'ratio':>7}")
        for metric, by in results.items():
            o, r = statistics.median(by["ours"]), statistics.median(by["C git"])
            print(f"{metric:<24} {o:>9.3f} {r:>9.3f} {o / r:>6.2f}x")
    finally:
        for s in (ours, sshd):
            if s:
                s.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
