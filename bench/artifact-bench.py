#!/usr/bin/env python3
"""Artifact throughput against a real `gitstratum serve` (embedded runner), beside a reference.

    python3 bench/artifact-bench.py --bin $CARGO_TARGET_DIR/release/gitstratum [--mib 256] [--repeat 3]

A job generates MIB MiB of files (half random bytes, half text) and uploads them with
actions/upload-artifact; a second job downloads them with actions/download-artifact; then this
script downloads the artifact's zip from the API. The runner logs how long each took.

The reference, in the same run on the same machine and the same files: `tar | zstd -3` (what an
upload must at least do: read and compress), `zstd -d | tar -x` (what a download must at least do),
and decoding the compressed file (what serving a download must at least do). Ratios over 1 are
our overhead: the archive's checks, the chunked transfer over HTTP, the server's second reading
of the archive, durable writes. Absolute numbers depend on this machine; compare the ratios."""
import argparse, json, os, re, shutil, statistics, subprocess, sys, tempfile, time, urllib.request

from benchlib import Server, git

GENERATE = r'''
import os, random
random.seed(7)
mib = int(os.environ["MIB"])
os.makedirs("data/text", exist_ok=True)
os.makedirs("data/bin", exist_ok=True)
files = max(2, mib // 4)
each = mib * 1024 * 1024 // files
for i in range(files):
    if i % 2:
        open(f"data/bin/{i}.bin", "wb").write(random.randbytes(each))
    else:
        line = b"".join(b"line %d of file %d: some build output, more or less repetitive\n" % (n, i) for n in range(64))
        open(f"data/text/{i}.txt", "wb").write((line * (each // len(line) + 1))[:each])
'''

WORKFLOW = """on: push
jobs:
  up:
    runs-on: ubuntu-latest
    steps:
      - shell: python
        env:
          MIB: "{mib}"
        run: |
{generate}
      - uses: actions/upload-artifact@v4
        with:
          name: data
          path: data
  down:
    needs: up
    runs-on: ubuntu-latest
    steps:
      - uses: actions/download-artifact@v4
        with:
          name: data
          path: got
"""


def timed(cmd, cwd):
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, shell=True, check=True)
    return time.perf_counter() - t0


def reference(tmp, mib):
    """The same files, compressed and extracted by tar and zstd: (pack s, unpack s, decode s, bytes)."""
    work = os.path.join(tmp, "ref")
    os.makedirs(work)
    subprocess.run([sys.executable, "-c", GENERATE], cwd=work, env=dict(os.environ, MIB=str(mib)), check=True)
    pack = timed("tar -cf - data | zstd -3 -q -T1 -o data.tar.zst", work)
    os.makedirs(os.path.join(work, "out"))
    unpack = timed("zstd -d -q -c data.tar.zst | tar -xf - -C out", work)
    decode = timed("zstd -d -q -c data.tar.zst > /dev/null", work)
    size = os.path.getsize(os.path.join(work, "data.tar.zst"))
    shutil.rmtree(work)
    return pack, unpack, decode, size


def ours(binary, tmp, mib):
    """(upload s, download s, zip download s, zip bytes, stored bytes) through the server."""
    s = Server(binary, os.path.join(tmp, "data"), env={"GITSTRATUM_RUNNER_MEMORY_MB": "8192"})
    try:
        s.api("POST", "/api/v1/repos", {"name": "app"})
        src = os.path.join(tmp, "src")
        os.makedirs(os.path.join(src, ".github/workflows"))
        generate = "\n".join("          " + line for line in GENERATE.strip().splitlines())
        open(os.path.join(src, ".github/workflows/ci.yml"), "w").write(WORKFLOW.format(mib=mib, generate=generate))
        git(src, "init", "-q", "-b", "main"); git(src, "add", "-A"); git(src, "commit", "-q", "-m", "ci")
        git(src, "push", "-q", s.push_url("admin/app"), "main")
        run = None
        while run is None or run["status"] != "completed":
            time.sleep(0.2)
            runs = s.api("GET", "/api/v1/repos/admin/app/runs")["runs"]
            run = s.api("GET", f"/api/v1/runs/{runs[0]['id']}") if runs else None
        if run["conclusion"] != "success":
            raise SystemExit(f"the run failed: {json.dumps(run, indent=1)}")
        logs = [s.api("GET", f"/api/v1/jobs/{job['id']}/logs") for job in run["jobs"]]
        m = re.search(r"uploaded .* in ([0-9.]+) s \(packing ([0-9.]+) s\)", logs[0])
        up, packing = float(m.group(1)), float(m.group(2))
        down = float(re.search(r"downloaded to .* in ([0-9.]+) s", logs[1]).group(1))
        artifact = s.api("GET", f"/api/v1/runs/{run['id']}/artifacts")["artifacts"][0]
        t0 = time.perf_counter()
        size = 0
        with urllib.request.urlopen(s.request("GET", f"/api/v1/artifacts/{artifact['id']}/download")) as r:
            while chunk := r.read(1 << 20):
                size += len(chunk)
        zip_s = time.perf_counter() - t0
        return up, down, zip_s, size, artifact["stored_bytes"], packing
    finally:
        s.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    if not shutil.which("zstd"):
        raise SystemExit("the reference needs the zstd command (apt-get install zstd)")
    rows = []
    for _ in range(a.repeat):
        tmp = tempfile.mkdtemp()
        try:
            rows.append((reference(tmp, a.mib), ours(a.bin, tmp, a.mib)))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    med = lambda xs: statistics.median(xs)
    pack, unpack, decode = (med([r[0][i] for r in rows]) for i in range(3))
    up, down, zip_s = (med([r[1][i] for r in rows]) for i in range(3))
    ref_size, stored, zip_bytes = rows[-1][0][3], rows[-1][1][4], rows[-1][1][3]
    packing = med([r[1][5] for r in rows])
    mb = a.mib
    print(f"{a.mib} MiB of files (half random, half text), median of {a.repeat} runs")
    print(f"{'':28}{'ours':>10}{'reference':>12}{'ratio':>8}")
    print(f"{'upload (pack+send+check)':28}{up:>9.2f}s{pack:>11.2f}s{up / pack:>8.2f}   reference: tar | zstd -3")
    print(f"{'  of which packing':28}{packing:>9.2f}s{pack:>11.2f}s{packing / pack:>8.2f}   reference: tar | zstd -3")
    print(f"{'download (fetch+extract)':28}{down:>9.2f}s{unpack:>11.2f}s{down / unpack:>8.2f}   reference: zstd -d | tar -x")
    print(f"{'zip download (API)':28}{zip_s:>9.2f}s{decode:>11.2f}s{zip_s / decode:>8.2f}   reference: zstd -d > /dev/null")
    print(f"upload {mb / up:.0f} MiB/s, download {mb / down:.0f} MiB/s, zip {zip_bytes / zip_s / 2**20:.0f} MiB/s;"
          f" stored {stored / 2**20:.1f} MiB (tar.zst {ref_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
