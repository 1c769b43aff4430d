#!/usr/bin/env python3
"""The cluster failure suite: a highly available cluster on this machine
(`scripts/cluster.sh up DIR --ha`: 3 etcd members, 3 PostgreSQL nodes under Patroni in
synchronous mode, 3 Garage nodes, 3 frontends, 2 runners; every PostgreSQL node, Garage node and
frontend a test host of its own in a network namespace, so it can be cut off the network),
clients pushing and cloning through every frontend while one thing fails, and after each scenario
the oracles:

- `ls-remote` answers the same on every frontend;
- a fresh clone from every frontend passes `git fsck --strict`;
- every acknowledged push's commit is reachable from its branch (none lost);
- the successful updates of each branch form one chain: never two from one old value;
- every acknowledged push started exactly one CI run, and no commit started two;
- the last runs' logs hold what their runner shipped.

Prints one line per scenario (operations attempted, acknowledged, failed, lost, the longest
time a client saw no success, and what the scenario measures besides) and `N passed, N failed`;
exits non-zero if any failed. Usage: scripts/failure-suite.sh [--keep DIR] [SCENARIO...]
"""
import argparse, json, os, random, re, shutil, subprocess, sys, tempfile, threading, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BRANCHES = ["main", "second"]
PUSHERS_PER_BRANCH = 2
CLONERS = 2
WORKFLOW = """on: push
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - run: echo "built ${{ github.sha }}"
"""
# A job that writes its log slowly, for the live-log scenario (started by hand, not by pushes).
LOG_LINES = 60
LOG_WORKFLOW = f"""on: workflow_dispatch
jobs:
  stream:
    runs-on: ubuntu-latest
    steps:
      - run: for i in $(seq 1 {LOG_LINES}); do echo "line $i $(date +%s.%N)"; sleep 0.25; done
"""
# The advisory lock of the CI ingestor's turn (gitstratum_platform::db::SINGLETON_CLASS, key 1).
INGESTOR_LOCK = "l.locktype = 'advisory' AND l.classid = 1735589904 AND l.objid = 1 AND l.objsubid = 2"


def run(cwd, *args, check=True, timeout=120, env=None):
    try:
        p = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, "GIT_TERMINAL_PROMPT": "0", **(env or {})})
    except subprocess.TimeoutExpired:  # an answer like any other failure (a client gives up)
        p = subprocess.CompletedProcess(args, 124, "", f"no answer within {timeout}s")
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {p.stderr.strip()}")
    return p


def git(cwd, *args, check=True, timeout=120):
    return run(cwd, "git", "-c", "user.name=suite", "-c", "user.email=suite@example.com", *args,
               check=check, timeout=timeout)


def script(name, *args, timeout=120, env=None):
    return run(ROOT, "bash", os.path.join(ROOT, "scripts", name), *args, timeout=timeout, env=env).stdout.strip()


def alive(pid):
    """Whether process `pid` runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Cluster:
    def __init__(self, dir):
        self.dir = dir
        self.info = json.load(open(os.path.join(dir, "cluster.json")))
        self.token = self.info["admin_token"]
        self.urls = [f["url"] for f in self.info["frontends"]]

    def remote(self, i):
        return self.urls[i].replace("http://", f"http://x:{self.token}@") + "/admin/app.git"

    def request(self, i, method, path, body=None, timeout=30):
        req = urllib.request.Request(self.urls[i] + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Bearer {self.token}",
                                              "Content-Type": "application/json"})
        return urllib.request.urlopen(req, timeout=timeout)

    def api(self, i, method, path, body=None):
        with self.request(i, method, path, body) as r:
            return json.loads(r.read() or b"null")

    def text(self, i, path):
        with self.request(i, "GET", path) as r:
            return r.read().decode(errors="replace")

    def wait_healthy(self):
        """Set-up before a scenario, not measured: every Garage node sees the others healthy,
        the PostgreSQL primary streams to both replicas, and every frontend is ready — so a
        scenario does not meet what the one before it left recovering."""
        self.garage("wait-healthy")
        streaming = "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
        if not wait_until(lambda: _ask(lambda: self.sql(streaming) == "2"), 120):
            raise RuntimeError("the PostgreSQL primary did not stream to both replicas within 120s")
        for i in range(len(self.urls)):
            if not wait_until(lambda: _ask(lambda: self.request(i, "GET", "/readyz", timeout=5).status == 200), 60):
                raise RuntimeError(f"frontend {i + 1} was not ready within 60s")

    def object_node_in_use(self):
        """The Garage node (1-3) most frontends send their requests to now (their
        `gitstratum_object_storage_endpoint`; the endpoints are listed in node order)."""
        votes = {}
        for i in range(len(self.urls)):
            text = _ask(lambda: self.text(i, "/metrics")) or ""
            m = re.search(r"^gitstratum_object_storage_endpoint (\d+)", text, re.M)
            node = int(m.group(1)) + 1 if m else 1
            votes[node] = votes.get(node, 0) + 1
        return max(votes, key=votes.get)

    def net(self, what, host):
        """Cuts test host `host` (pg1, obj2, fe3, ...) off the network, or heals it."""
        return script("netns.sh", what, self.info["network"]["dir"], host)

    def host_of(self, address):
        return next((name for name, h in self.info["network"]["hosts"].items() if h["address"] == address), None)

    def sql(self, query, node=None):
        """`query`'s rows (text, one per line) on PostgreSQL node `node` (1-3), else the primary."""
        node = node or int(self.patroni("primary"))
        url = self.info["postgres"][node - 1]["url"]
        return run(ROOT, "psql", "-X", "-At", "-c", query, url, timeout=30).stdout.strip()

    def patroni(self, what, *args):
        return script("patroni.sh", what, os.path.join(self.dir, "pg"), *map(str, args))

    def garage(self, what, *n):
        return script("garage.sh", what, os.path.join(self.dir, "garage"), *map(str, n))

    def kill_frontend(self, i):
        pid = self.info["frontends"][i]["pid"]
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            return
        wait_until(lambda: not alive(pid), 10, every=0.05)

    def dead_frontends(self):
        dead = []
        for i, f in enumerate(self.info["frontends"]):
            try:
                os.kill(f["pid"], 0)
            except ProcessLookupError:
                dead.append(i)
        return dead

    def start_frontend(self, i, crash_at=None):
        """Starts frontend `i` again; with `crash_at`, it dies at that point of the first push
        that reaches it (GITSTRATUM_CRASH_AT)."""
        pid = script("cluster.sh", "start-frontend", self.dir, str(i + 1),
                     env={"GITSTRATUM_CRASH_AT": crash_at} if crash_at else None)
        self.info["frontends"][i]["pid"] = int(pid.split()[-1])

    def runs(self, i=0, every=None):
        """Every push run of admin/app, asked of frontend `i`: {(branch, head_sha): count};
        `every`, a list, gets each run (of any event) as well."""
        counts, before = {}, None
        while True:
            page = self.api(i, "GET", "/api/v1/repos/admin/app/runs?limit=100" + (f"&before={before}" if before else ""))
            for r in page["runs"]:
                if every is not None:
                    every.append(r)
                if r["event"] != "push":
                    continue
                key = (r["head_branch"], r["head_sha"])
                counts[key] = counts.get(key, 0) + 1
            before = page.get("next_cursor")
            if not before:
                return counts


class Load:
    """Pushers (two per branch, racing) and cloners, each going round the frontends; every
    operation logged with its start, end, frontend and answer."""

    def __init__(self, cluster, tmp):
        self.c, self.tmp = cluster, tmp
        self.ops, self.lock, self.stop_flag = [], threading.Lock(), threading.Event()
        self.threads = []

    def record(self, **op):
        with self.lock:
            self.ops.append(op)

    def snapshot(self):
        with self.lock:
            return list(self.ops)

    def succeeded(self, kind, after):
        """Whether an operation of `kind` that started after `after` has succeeded."""
        return any(o["op"] == kind and o["ok"] and o["start"] > after for o in self.snapshot())

    def pusher(self, n, branch):
        work = os.path.join(self.tmp, f"pusher-{n}")
        if not os.path.isdir(work):
            git(self.tmp, "clone", "-q", self.c.remote(0), work)
        k = random.randrange(len(self.c.urls))
        seq = 0
        while not self.stop_flag.is_set():
            f = k % len(self.c.urls)
            k += 1
            start = time.monotonic()
            fetched = git(work, "fetch", "-q", self.c.remote(f), f"+refs/heads/{branch}:refs/remotes/base/{branch}",
                          check=False, timeout=60)
            if fetched.returncode != 0:
                self.record(op="fetch", client=f"pusher-{n}", frontend=f, start=start, end=time.monotonic(),
                            ok=False, answer=fetched.stderr.strip()[-300:])
                time.sleep(0.2)
                continue
            self.record(op="fetch", client=f"pusher-{n}", frontend=f, start=start, end=time.monotonic(), ok=True)
            old = git(work, "rev-parse", f"refs/remotes/base/{branch}").stdout.strip()
            git(work, "reset", "-q", "--hard", old)
            seq += 1
            with open(os.path.join(work, f"pusher-{n}.txt"), "w") as fh:
                fh.write(f"{n} {seq} {time.time()}\n")
            git(work, "add", "-A")
            git(work, "commit", "-q", "-m", f"pusher {n} push {seq}")
            new = git(work, "rev-parse", "HEAD").stdout.strip()
            start = time.monotonic()
            pushed = git(work, "push", "-q", "--porcelain", self.c.remote(f), f"HEAD:refs/heads/{branch}",
                         check=False, timeout=120)
            answer = (pushed.stdout + pushed.stderr).strip()
            # Losing a race to another pusher is a correct answer, not an outage.
            raced = pushed.returncode != 0 and any(
                s in answer for s in ("changed since it was read", "[rejected]", "fetch first", "non-fast-forward",
                                      "the remote contains work"))
            answer = answer[-300:]
            self.record(op="push", client=f"pusher-{n}", frontend=f, start=start, end=time.monotonic(),
                        ok=pushed.returncode == 0, raced=raced, ref=branch, old=old, new=new, answer=answer)

    def cloner(self, n):
        k = n
        while not self.stop_flag.is_set():
            f = k % len(self.c.urls)
            k += 1
            dst = os.path.join(self.tmp, f"clone-{n}")
            shutil.rmtree(dst, ignore_errors=True)
            start = time.monotonic()
            p = git(self.tmp, "clone", "-q", "--depth=1", "--no-checkout", self.c.remote(f), dst, check=False, timeout=120)
            self.record(op="clone", client=f"cloner-{n}", frontend=f, start=start, end=time.monotonic(),
                        ok=p.returncode == 0, answer=p.stderr.strip()[-300:])

    def start(self):
        n = 0
        for branch in BRANCHES:
            for _ in range(PUSHERS_PER_BRANCH):
                self.threads.append(threading.Thread(target=self.pusher, args=(n, branch), daemon=True))
                n += 1
        for i in range(CLONERS):
            self.threads.append(threading.Thread(target=self.cloner, args=(i,), daemon=True))
        for t in self.threads:
            t.start()

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(timeout=180)
        ops, self.ops, self.threads = self.ops, [], []
        self.stop_flag.clear()
        return ops


def longest_unavailability(ops):
    """The longest time a client went from the start of a failed operation to the end of its
    next successful one of the same kind (a pusher's fetches do not hide its failing pushes)."""
    worst = 0.0
    by_client = {}
    for op in sorted(ops, key=lambda o: o["start"]):
        by_client.setdefault((op["client"], op["op"]), []).append(op)
    for client_ops in by_client.values():
        failing_since = None
        for op in client_ops:
            answered = op["ok"] or op.get("raced")
            if not answered and failing_since is None:
                failing_since = op["start"]
            elif answered and failing_since is not None:
                worst = max(worst, op["end"] - failing_since)
                failing_since = None
        if failing_since is not None:
            worst = max(worst, client_ops[-1]["end"] - failing_since)
    return worst


def oracles(c, tmp, ops, all_pushes):
    """What must hold after a scenario; returns (problems, lost count)."""
    problems = []
    listings = set()
    for i in range(len(c.urls)):
        listings.add(git(tmp, "ls-remote", c.remote(i)).stdout)
    if len(listings) != 1:
        problems.append("ls-remote differs between frontends")
    check = os.path.join(tmp, "check-0")
    for i in range(len(c.urls)):
        dst = os.path.join(tmp, f"check-{i}")
        shutil.rmtree(dst, ignore_errors=True)
        git(tmp, "clone", "-q", "--mirror", c.remote(i), dst)
        fsck = git(dst, "fsck", "--strict", "--no-dangling", check=False)
        if fsck.returncode != 0:
            problems.append(f"fsck --strict fails on a clone from frontend {i + 1}: {fsck.stderr.strip()[-200:]}")
    lost = 0
    for p in all_pushes:
        if p["ok"] and git(check, "merge-base", "--is-ancestor", p["new"], f"refs/heads/{p['ref']}", check=False).returncode != 0:
            lost += 1
    if lost:
        problems.append(f"{lost} acknowledged pushes lost")
    for branch in BRANCHES:
        olds = [p["old"] for p in all_pushes if p["ok"] and p["ref"] == branch]
        if len(olds) != len(set(olds)):
            problems.append(f"two pushes to {branch} succeeded from one old value")
    # Exactly one run per acknowledged push (the ingestor may take a moment to read the last ones).
    acknowledged = {(p["ref"], p["new"]) for p in all_pushes if p["ok"]}
    deadline = time.monotonic() + 60
    while True:
        runs = c.runs()
        missing = [push for push in acknowledged if runs.get(push, 0) == 0]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(1)
    if missing:
        problems.append(f"{len(missing)} acknowledged pushes started no run")
    twice = [push for push, n in runs.items() if n > 1]
    if twice:
        problems.append(f"{len(twice)} pushes started more than one run: {twice[:3]}")
    problems += shipped_logs_readable(c)
    return problems, lost


def shipped_logs_readable(c, newest=5):
    """The newest completed push runs' logs, read through every frontend, hold the line their
    runner shipped (`built <sha>`)."""
    every = []
    c.runs(every=every)
    done = [r for r in every if r.get("status") == "completed" and r.get("event") == "push"][:newest]
    problems = []
    for r in done:
        jobs = c.api(0, "GET", f"/api/v1/runs/{r['id']}")["jobs"]
        for i in range(len(c.urls)):
            log = "".join(c.text(i, f"/api/v1/jobs/{j['id']}/logs") for j in jobs)
            if f"built {r['head_sha']}" not in log:
                problems.append(f"run {r['id']}: the log read through frontend {i + 1} lacks what its runner shipped")
    return problems


# Scenarios: each gets the cluster and the running load, makes one thing fail and heals it, and
# returns what it measured, which kinds of client operation may fail meanwhile, and a check of its
# own over the operations (a list of problems).

EVERYTHING = {"push", "fetch", "clone"}


def no_check(ops):
    return []


def down_for(seconds, kill, start, settle=2):
    """Runs `kill`, waits `seconds`, runs `start`, waits `settle`; returns when the kill was
    complete and when the start began."""
    kill()
    killed = time.monotonic()
    time.sleep(seconds)
    restarted = time.monotonic()
    start()
    time.sleep(settle)
    return killed, restarted


def pg_primary_killed(c, load):
    time.sleep(4)
    primary = c.patroni("primary")
    killed = time.monotonic()
    c.patroni("kill-node", primary)
    promoted = c.patroni("primary")
    failover = time.monotonic() - killed
    time.sleep(8)
    c.patroni("start-node", primary)
    return f"pg{primary} killed, pg{promoted} promoted after {failover:.1f}s", EVERYTHING, no_check


def object_node_killed(c, load):
    # The node the frontends talk to now.
    time.sleep(4)
    n = c.object_node_in_use()
    down_for(10, lambda: c.garage("kill-node", n), lambda: c.garage("start-node", n))
    return f"object node {n} (the one the frontends used) killed for 10s", set(), no_check


def two_object_nodes_down(c, load):
    time.sleep(4)
    killed, restarted = down_for(
        15, lambda: (c.garage("kill-node", 2), c.garage("kill-node", 3)),
        lambda: (c.garage("start-node", 2), c.garage("start-node", 3)), settle=0)
    # Back once a push gets through again (the nodes take some seconds to rejoin).
    wait_until(lambda: load.succeeded("push", after=restarted), 90)
    back = time.monotonic() - restarted
    time.sleep(2)

    def while_down(o):
        return o["start"] > killed + 1 and o["end"] < restarted
    during = [o for o in load.snapshot() if o["op"] == "clone" and while_down(o)]
    served = sum(1 for o in during if o["ok"])

    def check(ops):
        problems = []
        down = [o for o in ops if o["op"] == "push" and o["ok"] and while_down(o)]
        if down:
            problems.append(f"{len(down)} pushes acknowledged while two of three object nodes were down")
            for o in down[:3]:
                problems.append(f"  frontend {o['frontend'] + 1}, {o['start'] - killed:.1f}s to {o['end'] - killed:.1f}s "
                                f"after the kill: {o['old'][:10]} -> {o['new'][:10]}")
        if not any(o["op"] == "push" and o["ok"] and o["start"] > restarted for o in ops):
            problems.append("no push got through once the object nodes were back")
        return problems
    # Pushes are refused while the nodes are down; a clone fails through a frontend that lacks the
    # newest packs (another frontend took the push) and is served by one that has them.
    return (f"object nodes 2 and 3 killed for 15s: {served} of {len(during)} clones meanwhile served, "
            f"pushes again {back:.1f}s after they returned"), EVERYTHING, check


def etcd_leader_killed(c, load):
    time.sleep(3)
    leader = c.patroni("etcd-leader")
    down_for(10, lambda: c.patroni("kill-etcd", leader), lambda: c.patroni("start-etcd", leader))
    return f"the etcd leader (member {leader}) SIGKILLed for 10s", set(), no_check


def frontend_killed(c, load):
    time.sleep(4)
    down_for(3, lambda: c.kill_frontend(1), lambda: c.start_frontend(1), settle=5)
    return "frontend 2 SIGKILLed under load, restarted after 3s", EVERYTHING, no_check


# The points of a push a frontend can die at (gitstratum_frontend's and cluster mode's crash points):
# the pack spooled but not checked; checked but not stored; uploaded to object storage but not
# listed; listed but the refs not moved; the refs moved but the client not told.
PUSH_POINTS = ["receive:after-spool", "receive:before-store", "cluster:after-upload", "cluster:after-listing",
               "receive:before-refs", "receive:after-refs"]


def frontend_crashes_at_each_push_point(c, load):
    """Frontend 2 dies, as a SIGKILL would leave it, at each point of a push in turn (the first
    push through it that gets there), under load, and is started again after each."""
    time.sleep(2)
    for point in PUSH_POINTS:
        c.kill_frontend(1)
        c.start_frontend(1, crash_at=point)
        pid = c.info["frontends"][1]["pid"]
        if not wait_until(lambda: not alive(pid), 60, every=0.1):
            raise RuntimeError(f"no push through frontend 2 reached {point} within 60s")
        c.start_frontend(1)
        time.sleep(1)
    time.sleep(2)
    return f"frontend 2 died at each of {len(PUSH_POINTS)} points of a push ({', '.join(PUSH_POINTS)})", \
        EVERYTHING, no_check


def latency_curve(ops, cut, healed, kinds=("push", "clone")):
    """Each kind's answered operations' median and longest latency before `cut`, between `cut`
    and `healed`, and after."""
    parts = []
    for kind in kinds:
        phases = []
        for name, keep in (("before", lambda o: o["start"] < cut), ("during", lambda o: cut <= o["start"] < healed),
                           ("after", lambda o: o["start"] >= healed)):
            took = sorted(o["end"] - o["start"] for o in ops if o["op"] == kind and (o["ok"] or o.get("raced")) and keep(o))
            phases.append(f"{name} {took[len(took) // 2]:.1f}/{took[-1]:.1f}" if took else f"{name} -")
        parts.append(f"{kind} median/longest s: " + ", ".join(phases))
    return "; ".join(parts)


def wait_until(what, seconds, every=0.5):
    """Calls `what` until it answers something true (returned) or `seconds` pass (None)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(every)
    return None


def pg_primary_partitioned(c, load):
    time.sleep(4)
    old = int(c.patroni("primary"))
    cut = time.monotonic()
    c.net("partition", f"pg{old}")
    # Cut off from etcd, the old primary cannot keep its leader key; the majority side promotes
    # the synchronous standby. (`primary` answers the first node whose /primary says 200; the cut
    # node's does not answer at all.)
    new = int(c.patroni("primary"))
    failover = time.monotonic() - cut
    time.sleep(6)
    c.net("heal", f"pg{old}")
    healed = time.monotonic()

    # The old primary rejoins as a replica of the new one (rewound if it wrote alone meanwhile).
    def rejoined():
        return c.sql("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'", node=new) == "2" \
            and c.sql("SELECT pg_is_in_recovery()", node=old) == "t"
    back = wait_until(lambda: _ask(rejoined), 120)
    rejoin = time.monotonic() - healed

    def check(ops):
        return [] if back else [f"pg{old} had not rejoined as a replica of pg{new} 120s after the partition healed"]
    return (lambda ops: f"pg{old} partitioned for {healed - cut:.0f}s, pg{new} promoted after {failover:.1f}s; pg{old} a "
            f"replica again {rejoin:.1f}s after the heal; {latency_curve(ops, cut, healed)}"), EVERYTHING, check


def _ask(what):
    """`what()`, or False when it raises (a node that does not answer yet)."""
    try:
        return what()
    except Exception:
        return False


def object_node_partitioned(c, load):
    # The node the frontends talk to now, silently: nothing it was sent is answered or refused,
    # so only timeouts move the frontends on.
    time.sleep(4)
    n = c.object_node_in_use()
    # Healed, the node is connected to the others again at once (Garage alone took over a minute).
    cut, healed = down_for(15, lambda: c.net("partition", f"obj{n}"),
                           lambda: (c.net("heal", f"obj{n}"), c.garage("reconnect")), settle=4)
    return (lambda ops: f"object node {n} (the one the frontends used) partitioned for 15s; "
            f"{latency_curve(ops, cut, healed)}"), set(), no_check


def singleton_holder_partitioned(c, load):
    """The frontend holding the CI ingestor's turn (a PostgreSQL advisory lock, held for a tick)
    cut off mid-tick: PostgreSQL ends its silent session (the keepalives every session asks for),
    the turn is free again, another frontend ingests; no push is ingested twice."""
    time.sleep(3)
    query = ("SELECT host(a.client_addr) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
             f"WHERE {INGESTOR_LOCK} AND l.granted")
    primary = int(c.patroni("primary"))
    holding = lambda: c.host_of(c.sql(query, node=primary))  # noqa: E731
    for attempt in range(1, 31):
        holder = wait_until(holding, 30, every=0.02)
        if holder is None:
            raise RuntimeError("no frontend was seen holding the ingestor's turn in 30s")
        cut = time.monotonic()
        c.net("partition", holder)
        if holding() == holder:  # caught mid-tick: it cannot release the turn now
            break
        c.net("heal", holder)
        time.sleep(1)
    else:
        raise RuntimeError("never caught a frontend holding the ingestor's turn as it was cut off (30 tries)")
    freed = wait_until(lambda: holding() != holder, 45, every=0.2)
    released = time.monotonic() - cut
    others = [i for i in range(len(c.urls)) if f"fe{i + 1}" != holder]
    # A push of its own through another frontend (the pushers may all be waiting on the cut one).
    probe = os.path.join(load.tmp, "singleton-probe")
    if not os.path.isdir(probe):
        git(load.tmp, "clone", "-q", c.remote(others[0]), probe)
    git(probe, "commit", "-q", "--allow-empty", "-m", f"probe {time.time()}")
    sha = git(probe, "rev-parse", "HEAD").stdout.strip()
    git(probe, "push", "-q", "-f", c.remote(others[0]), "HEAD:refs/heads/probe")
    took = wait_until(lambda: ("probe", sha) in (_ask(lambda: c.runs(i=others[0])) or {}), 45, every=0.5)
    ingested = time.monotonic() - cut
    c.net("heal", holder)
    healed = time.monotonic() - cut
    time.sleep(4)

    def check(ops):
        problems = []
        if not freed:
            problems.append(f"PostgreSQL still held {holder}'s turn 45s after it was cut off")
        if not took:
            problems.append(f"no other frontend ingested a push while {holder} was cut off")
        return problems
    return (f"{holder} cut off mid-tick holding the ingestor's turn (try {attempt}), healed after {healed:.0f}s: "
            f"its session ended and the turn free after {released:.1f}s, a push ingested by another frontend "
            f"after {ingested:.1f}s"), EVERYTHING, check


def live_log_listeners_dropped(c, load):
    """The live-log fan-out (PostgreSQL NOTIFY to each frontend's listener connection) and every
    other listener connection ended by PostgreSQL, again and again, while a job writes its log and
    a reader follows it through every frontend: each reader gets every line, once and in order."""
    run = c.api(0, "POST", "/api/v1/repos/admin/app/workflows/logs.yml/dispatches", {"ref": "main"})["run_id"]
    job = wait_until(lambda: next((j for j in c.api(0, "GET", f"/api/v1/runs/{run}")["jobs"]
                                   if j.get("status") == "in_progress"), None), 180)
    if not job:
        raise RuntimeError(f"the log job of run {run} did not start within 180s")
    readers = [{"lines": [], "ended": False, "error": None} for _ in c.urls]

    def follow(i):
        r = readers[i]
        try:
            with c.request(i, "GET", f"/api/v1/jobs/{job['id']}/logs/stream", timeout=120) as stream:
                event = None
                for raw in stream:
                    line = raw.decode(errors="replace").rstrip("\n")
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:") and event == "log":
                        r["lines"].append((time.time(), line[5:].lstrip(" ")))
                    elif line.startswith("data:") and event == "end":
                        r["ended"] = True
                        return
        except Exception as e:
            r["error"] = str(e)
    threads = [threading.Thread(target=follow, args=(i,), daemon=True) for i in range(len(c.urls))]
    for t in threads:
        t.start()
    ended = 0
    for _ in range(6):
        time.sleep(2)
        ended += int(c.sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                           "WHERE application_name = 'gitstratum listener'") or 0)
    for t in threads:
        t.join(timeout=120)
    # Every frontend listens again (two channels each).
    relisten = wait_until(lambda: c.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'gitstratum listener'")
                          == str(2 * len(c.urls)), 30)
    shipped = re.compile(r"line (\d+) (\d+\.\d+)$")
    final = [m.group(0) for m in map(shipped.search, c.text(0, f"/api/v1/jobs/{job['id']}/logs").splitlines()) if m]
    lag = 0.0
    for r in readers:
        for arrived, text in r["lines"]:
            m = shipped.search(text)
            if m:
                lag = max(lag, arrived - float(m.group(2)))

    def check(ops):
        problems = []
        if len(final) != LOG_LINES:
            problems.append(f"the stored log has {len(final)} of the {LOG_LINES} lines the runner shipped")
        for i, r in enumerate(readers):
            got = [m.group(0) for m in (shipped.search(text) for _, text in r["lines"]) if m]
            if r["error"] or not r["ended"]:
                problems.append(f"the reader through frontend {i + 1} did not get to the end: {r['error'] or 'no end event'}")
            if got != final:
                missing = [line.split()[1] for line in final if line not in got]
                problems.append(f"the reader through frontend {i + 1} got {len(got)} lines, not the {len(final)} stored "
                                f"ones in order (missing lines {', '.join(missing) or 'none'})")
        if not relisten:
            problems.append("the frontends' listener connections did not all come back within 30s")
        return problems
    return (f"{ended} listener connections ended by PostgreSQL in 12s while a job wrote {LOG_LINES} lines; "
            f"longest line lag to a live reader {lag:.1f}s"), set(), check


SCENARIOS = [pg_primary_killed, pg_primary_partitioned, object_node_killed, object_node_partitioned,
             two_object_nodes_down, etcd_leader_killed, frontend_killed, frontend_crashes_at_each_push_point,
             singleton_holder_partitioned, live_log_listeners_dropped]


def unanswering_frontends(dir):
    """The frontends of the cluster in `dir` whose /readyz does not answer, with their logs' ends."""
    info = json.load(open(os.path.join(dir, "cluster.json")))
    silent = []
    for i, f in enumerate(info["frontends"]):
        try:
            urllib.request.urlopen(f["url"] + "/readyz", timeout=10).close()
        except OSError:
            log = os.path.join(dir, f"frontend{i + 1}.log")
            tail = open(log, errors="replace").read().splitlines()[-8:] if os.path.exists(log) else []
            silent.append((i, " | ".join(tail)))
    return silent


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keep", help="bring the cluster up in DIR and leave it there")
    ap.add_argument("scenarios", nargs="*")
    args = ap.parse_args()
    chosen = [s for s in SCENARIOS if not args.scenarios or s.__name__ in args.scenarios]
    tmp = tempfile.mkdtemp(prefix="gst-failure-suite-")
    os.chmod(tmp, 0o755)  # PostgreSQL runs as its own user and must reach its directories
    dir = args.keep or os.path.join(tmp, "cluster")
    started = time.monotonic()
    # Bringing the cluster up is set-up, not a scenario: if a frontend does not answer right after
    # `cluster.sh up` (seen twice in about fifteen runs, cause not found yet), say so with its log
    # and bring the whole cluster up once more.
    for attempt in (1, 2):
        script("cluster.sh", "up", dir, "--ha", timeout=600)
        silent = unanswering_frontends(dir)
        if not silent or attempt == 2:
            break
        for i, tail in silent:
            print(f"set-up: frontend {i + 1} does not answer after cluster.sh up; its log ends: {tail}", flush=True)
        script("cluster.sh", "down", dir, timeout=300)
        shutil.rmtree(dir, ignore_errors=True)
    print(f"cluster up in {time.monotonic() - started:.0f}s ({dir})", flush=True)
    passed = failed = 0
    try:
        c = Cluster(dir)
        c.api(0, "POST", "/api/v1/repos", {"name": "app"})
        seed = os.path.join(tmp, "seed")
        os.makedirs(os.path.join(seed, ".github", "workflows"))
        git(seed, "init", "-q", "-b", "main")
        with open(os.path.join(seed, ".github", "workflows", "ci.yml"), "w") as fh:
            fh.write(WORKFLOW)
        with open(os.path.join(seed, ".github", "workflows", "logs.yml"), "w") as fh:
            fh.write(LOG_WORKFLOW)
        git(seed, "add", "-A")
        git(seed, "commit", "-q", "-m", "seed")
        for branch in BRANCHES:
            git(seed, "push", "-q", c.remote(0), f"HEAD:refs/heads/{branch}")
        all_pushes = []
        load = Load(c, tmp)
        for scenario in chosen:
            began = time.monotonic()
            try:
                c.wait_healthy()
                load.start()
                measured, may_fail, check = scenario(c, load)
            except Exception as e:  # reported as the scenario's failure; the others still run
                broke = f"the scenario broke: {e}"
                measured, may_fail, check = broke, EVERYTHING, lambda ops, broke=broke: [broke]
            finally:
                ops = load.stop()
            if callable(measured):  # a measure over every operation, the late-finishing ones too
                measured = measured(ops)
            if args.keep:
                with open(os.path.join(dir, f"ops-{scenario.__name__}.json"), "w") as fh:
                    json.dump(ops, fh)
            pushes = [o for o in ops if o["op"] == "push"]
            all_pushes += pushes
            dead = c.dead_frontends()
            try:
                problems, lost = oracles(c, tmp, ops, all_pushes)
            except Exception as e:  # an oracle that cannot even ask: the scenario failed
                problems, lost = [f"the oracles could not run: {e}"], 0
            for i in dead:
                log = os.path.join(dir, f"frontend{i + 1}.log")
                tail = open(log, errors="replace").read().splitlines()[-5:] if os.path.exists(log) else []
                problems.append(f"frontend {i + 1} died: " + " | ".join(tail))
            failed_ops = [o for o in ops if not o["ok"] and not o.get("raced")]
            raced = sum(1 for o in ops if o.get("raced"))
            problems += check(ops)
            forbidden = [o for o in failed_ops if o["op"] not in may_fail]
            if forbidden:
                problems.append(f"{len(forbidden)} client operations failed")
                for o in {o["op"] + o.get("answer", "")[:200]: o for o in forbidden}.values():
                    problems.append(f"  {o['op']} through frontend {o['frontend'] + 1}: {' '.join(o.get('answer', '').split())[:240]}")
            acknowledged = sum(1 for o in ops if o["ok"])
            verdict = "ok" if not problems else "FAILED"
            print(f"{verdict:6} {scenario.__name__}: {len(ops)} operations ({len(pushes)} pushes), "
                  f"{acknowledged} acknowledged, {raced} lost a race, {len(failed_ops)} failed, {lost} lost; longest unavailability "
                  f"{longest_unavailability(ops):.1f}s; {measured}; {time.monotonic() - began:.0f}s", flush=True)
            for p in problems:
                print(f"       {p}", flush=True)
            if problems:
                failed += 1
            else:
                passed += 1
    finally:
        if not args.keep:
            script("cluster.sh", "down", dir, timeout=300)
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"{passed} passed, {failed} failed ({time.monotonic() - started:.0f}s)")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
