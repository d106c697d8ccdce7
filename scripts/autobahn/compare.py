#!/usr/bin/env python3
"""Compare an Autobahn|Testsuite fuzzingclient report with the golden file.

    compare.py --report DIR [--expected PATH] [--update] [--cases PATTERNS]

Reads DIR/index.json (written by `wstest -m fuzzingclient`), reduces it to
{case_id: {"behavior": ..., "behaviorClose": ...}} for the single agent in the
report, and either

  * compares it with the expected file (default: tests/autobahn/expected-results.json)
    and exits 1 on any difference (changed, missing or unexpected case), or
  * with --update, (re)writes the expected file from the report.

--cases "1.*,2.*" (the patterns the run was given, fnmatch style) compares only the expected
cases they select; --update then replaces only those in the file and keeps the others.

Always prints a summary line to stdout, e.g.
    autobahn: 517 cases, 510 OK, 3 NON-STRICT, 4 INFORMATIONAL
Exit codes: 0 match / updated, 1 differences, 2 usage or input error.
"""

import argparse
import collections
import fnmatch
import json
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_EXPECTED = os.path.join(REPO_ROOT, "tests", "autobahn", "expected-results.json")

# Order in which behaviours are listed in the summary line.
BEHAVIOR_ORDER = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED",
                  "WRONG CODE", "UNCLEAN", "FAILED BY CLIENT", "FAILED"]
FIELDS = ("behavior", "behaviorClose")


class InputError(Exception):
    pass


def case_key(case_id):
    """Sort key so that 1.1.10 comes after 1.1.9."""
    parts = []
    for p in case_id.split("."):
        parts.append((0, int(p), "") if p.isdigit() else (1, 0, p))
    return tuple(parts)


def load_json(path, what):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise InputError("%s not found: %s" % (what, path))
    except (OSError, ValueError) as e:
        raise InputError("cannot read %s %s: %s" % (what, path, e))


def reduce_report(index):
    if not isinstance(index, dict) or not index:
        raise InputError("report index.json contains no agents")
    if len(index) != 1:
        raise InputError("report index.json has %d agents (%s), expected exactly one"
                         % (len(index), ", ".join(sorted(index))))
    (cases,) = index.values()
    return {cid: {f: res.get(f) for f in FIELDS} for cid, res in cases.items()}


def format_results(results):
    """Stable JSON: case ids in numeric order, one case per line."""
    lines = []
    for cid in sorted(results, key=case_key):
        value = json.dumps({f: results[cid].get(f) for f in FIELDS}, sort_keys=True)
        lines.append("  %s: %s" % (json.dumps(cid), value))
    return "{\n" + ",\n".join(lines) + "\n}\n"


def summary(results):
    counts = collections.Counter(r.get("behavior") for r in results.values())
    parts = ["%d cases" % len(results), "%d OK" % counts.pop("OK", 0)]
    for b in BEHAVIOR_ORDER[1:]:
        if counts.get(b):
            parts.append("%d %s" % (counts.pop(b), b))
    for b in sorted(counts, key=str):
        parts.append("%d %s" % (counts[b], b))
    return "autobahn: " + ", ".join(parts)


def fmt(value):
    if value is None:
        return "(missing)"
    return "%s / %s" % (value.get("behavior"), value.get("behaviorClose"))


def compare(expected, got):
    """Return a list of (case, expected, got) rows that differ."""
    diffs = []
    for cid in sorted(set(expected) | set(got), key=case_key):
        e, g = expected.get(cid), got.get(cid)
        if e is not None:
            e = {f: e.get(f) for f in FIELDS}
        if e != g:
            diffs.append((cid, fmt(e), fmt(g)))
    return diffs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--report", required=True,
                    help="fuzzingclient report directory (containing index.json) "
                         "or the index.json file itself")
    ap.add_argument("--expected", default=DEFAULT_EXPECTED,
                    help="golden file (default: %(default)s)")
    ap.add_argument("--update", action="store_true",
                    help="write the reduced results to the golden file instead of comparing")
    ap.add_argument("--cases", default="",
                    help="comma-separated case patterns the run was limited to (e.g. '12.*,13.*')")
    args = ap.parse_args(argv)
    patterns = [p.strip() for p in args.cases.split(",") if p.strip()]

    def selected(cid):
        return not patterns or any(fnmatch.fnmatchcase(cid, p) for p in patterns)

    index_path = args.report
    if os.path.isdir(index_path):
        index_path = os.path.join(index_path, "index.json")

    try:
        got = reduce_report(load_json(index_path, "report"))
        if args.update and patterns and os.path.exists(args.expected):
            kept = load_json(args.expected, "expected results")
            merged = {k: v for k, v in kept.items() if not selected(k)}
            merged.update(got)
            got = {k: merged[k] for k in sorted(merged, key=case_key)}
        if args.update:
            os.makedirs(os.path.dirname(os.path.abspath(args.expected)), exist_ok=True)
            tmp = args.expected + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(format_results(got))
            os.replace(tmp, args.expected)
            print(summary(got))
            print("autobahn: wrote %d cases to %s" % (len(got), args.expected))
            return 0
        expected = load_json(args.expected, "expected results")
        if not isinstance(expected, dict):
            raise InputError("expected results %s is not a JSON object" % args.expected)
        expected = {k: v for k, v in expected.items() if selected(k)}
    except InputError as e:
        print("autobahn: error: %s" % e, file=sys.stderr)
        if not args.update and "expected results" in str(e) and "not found" in str(e):
            print("autobahn: hint: generate it with `scripts/autobahn/run.sh URL --update`",
                  file=sys.stderr)
        return 2

    diffs = compare(expected, got)
    print(summary(got))
    if not diffs:
        print("autobahn: all %d cases match %s" % (len(expected), args.expected))
        return 0

    missing = sum(1 for _, _, g in diffs if g == "(missing)")
    extra = sum(1 for _, e, _ in diffs if e == "(missing)")
    w_case = max(len("case"), max(len(d[0]) for d in diffs))
    w_exp = max(len("expected"), max(len(d[1]) for d in diffs))
    print()
    print("%-*s  %-*s  %s" % (w_case, "case", w_exp, "expected", "got"))
    for cid, e, g in diffs:
        print("%-*s  %-*s  %s" % (w_case, cid, w_exp, e, g))
    print()
    print("autobahn: FAIL: %d differences (%d changed, %d missing from report, "
          "%d not in expected file) vs %s"
          % (len(diffs), len(diffs) - missing - extra, missing, extra, args.expected))
    print("autobahn: if the new behaviour is intended, re-run with --update and commit the file")
    return 1


if __name__ == "__main__":
    sys.exit(main())
