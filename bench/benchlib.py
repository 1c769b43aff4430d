"""What the benchmarks share: a real `gitstratum serve` on a free port, its API, and git."""
import json, os, re, signal, subprocess, threading, urllib.request


class Server:
    """`gitstratum serve` on 127.0.0.1:0 with a fresh data directory; `extra` flags, `env` added
    to an environment cleared of GITSTRATUM_ settings."""

    def __init__(self, binary, data, extra=(), env=None):
        environment = {k: v for k, v in os.environ.items() if not k.startswith("GITSTRATUM_")}
        environment.update(env or {})
        self.proc = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", data, *extra],
                                     stderr=subprocess.PIPE, text=True, env=environment)
        self.base = None
        for line in self.proc.stderr:
            m = re.search(r"listening on (http://[0-9.:]+)", line)
            if m:
                self.base = m.group(1)
                break
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()
        self.token = open(os.path.join(data, "initial-admin-token")).read().strip()

    def request(self, method, path, body=None, token=None):
        return urllib.request.Request(self.base + path, method=method,
                                      data=json.dumps(body).encode() if body is not None else None,
                                      headers={"Authorization": f"Bearer {token or self.token}",
                                               "Content-Type": "application/json"})

    def api(self, method, path, body=None, token=None):
        with urllib.request.urlopen(self.request(method, path, body, token)) as r:
            text = r.read().decode()
            return json.loads(text) if text.startswith(("{", "[")) else text

    def push_url(self, repo):
        return self.base.replace("http://", f"http://x:{self.token}@") + f"/{repo}.git"

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


def git(cwd, *args):
    env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@x", GIT_COMMITTER_NAME="b",
               GIT_COMMITTER_EMAIL="b@x", GIT_CONFIG_NOSYSTEM="1")
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)
