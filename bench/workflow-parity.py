#!/usr/bin/env python3
"""Compares `gitstratum-workflow`'s verdicts with GitHub's workflow parser on its published test files.

The corpus is `workflow-parser/testdata/reader/*.yml` of github.com/actions/languageservices (not
vendored here): each file holds test options, the workflow, any reusable workflows it calls, and
the reference's expected result (the parsed workflow, or its errors). This prints, per file,
whether we accept what GitHub accepts and reject what it rejects, then the agreement ratio.

    python3 bench/workflow-parity.py --corpus PATH/TO/testdata/reader [--verbose]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile


def split_docs(text):
    return re.split(r"\r?\n---\r?\n", text)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--only", help="a substring of the file names to run")
    args = ap.parse_args()

    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in sorted(os.listdir(args.corpus)):
            if not name.endswith((".yml", ".yaml")) or (args.only and args.only not in name):
                continue
            docs = split_docs(open(os.path.join(args.corpus, name), encoding="utf-8").read())
            if len(docs) < 3:
                continue
            expected = json.loads(docs[-1])
            path = os.path.join(tmp, name)
            with open(path, "w", encoding="utf-8") as f:
                f.write(docs[1])
            cases.append((name, path, expected, docs[0]))
        out = subprocess.run(
            ["cargo", "run", "-q", "--release", "-p", "gitstratum-workflow", "--example", "validate_json", "--"]
            + [c[1] for c in cases],
            check=True, capture_output=True, text=True,
        ).stdout
    ours = {os.path.basename(json.loads(l)["file"]): json.loads(l) for l in out.splitlines()}
    agree = 0
    rows = []
    # Files whose verdict depends on the reusable workflows they call (checked against the callee
    # by GitHub) are counted apart: this parser reads one file at a time.
    calls = {"agree": 0, "total": 0}
    for name, _, expected, options in cases:
        want_ok = "errors" not in expected
        got = ours[name]
        same = got["ok"] == want_ok
        agree += same
        if "reusable" in name:
            calls["total"] += 1
            calls["agree"] += same
        if not same or args.verbose:
            want = "accept" if want_ok else "reject: " + "; ".join(e["Message"] for e in expected["errors"])[:300]
            have = "accept" if got["ok"] else "reject: " + "; ".join(got["errors"])[:300]
            rows.append(f"{'ok  ' if same else 'DIFF'} {name}\n     github: {want}\n     ours:   {have}")
    print("\n".join(rows))
    single = len(cases) - calls["total"]
    single_agree = agree - calls["agree"]
    print(f"single-file workflows: {single_agree}/{single} = {single_agree / max(1, single):.3f}")
    print(f"calls to reusable workflows: {calls['agree']}/{calls['total']}")
    print(f"agreement: {agree}/{len(cases)} = {agree / max(1, len(cases)):.3f}")


if __name__ == "__main__":
    sys.exit(main())
