#!/usr/bin/env python3
"""Samples one edgecomet process every --interval seconds into a JSONL file (bench/soak/run.sh).

Each line: t (seconds since --t0, the floods' start), the server's RSS, its high-water mark,
PSS and anonymous memory (/proc/PID/status, /proc/PID/smaps_rollup), open files (the size
stat(2) gives /proc/PID/fd: the count, without listing the directory, which would give every
socket a proc inode and dentry), threads, CPU seconds so far, the TCP sockets of this network
namespace (/proc/net/sockstat: inuse, orphan, tw, alloc; mem is pages over the whole machine)
and /stats (`total` and `hub`, or null when it did not answer within 5 s).

Runs until SIGTERM/SIGINT or until the process is gone (--once: one sample).
"""

import argparse
import json
import os
import signal
import sys
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")


def status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
                v = v.split()
                out[k] = int(v[0]) * (1024 if len(v) > 1 else 1)
    return out


def pss(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return None


def cpu_secs(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat(5); here index 11 and 12 after the ")".
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def sockstat():
    out = {}
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                v = line.split()[1:]
                out = {v[i]: int(v[i + 1]) for i in range(0, len(v) - 1, 2)}
    return out


def stats(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            j = json.load(r)
        return {"total": j.get("total"), "hub": j.get("hub")}
    except Exception as e:  # noqa: BLE001 - a missed sample is recorded, not fatal
        return {"error": str(e)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--url", required=True, help="the server's /stats URL")
    ap.add_argument("--out", required=True)
    ap.add_argument("--interval", type=float, default=10.0)
    ap.add_argument("--t0", type=float, default=None, help="epoch seconds t is counted from")
    ap.add_argument("--once", action="store_true", help="one sample, then exit")
    a = ap.parse_args()
    t0 = a.t0 if a.t0 is not None else time.time()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    nxt = time.monotonic()
    with open(a.out, "a", buffering=1) as out:
        while not stop:
            now = time.time()
            try:
                s = status(a.pid)
                row = {
                    "t": round(now - t0, 2),
                    "wall": round(now, 2),
                    "rss": s.get("VmRSS"),
                    "hwm": s.get("VmHWM"),
                    "rss_anon": s.get("RssAnon"),
                    "pss": pss(a.pid),
                    "fds": os.stat(f"/proc/{a.pid}/fd").st_size,
                    "threads": s.get("Threads"),
                    "cpu_secs": cpu_secs(a.pid),
                    "tcp": sockstat(),
                }
            except (FileNotFoundError, ProcessLookupError):
                print("sampler: the server is gone", file=sys.stderr)
                return 1
            row.update(stats(a.url))
            out.write(json.dumps(row, separators=(",", ":")) + "\n")
            if a.once:
                break
            nxt += a.interval
            while not stop and time.monotonic() < nxt:
                time.sleep(min(0.2, max(0.0, nxt - time.monotonic())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
