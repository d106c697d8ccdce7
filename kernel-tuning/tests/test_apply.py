#!/usr/bin/env python3
"""apply/restore round trips on sysctls of a network namespace of the test's own.

Run as root: `python3 kernel-tuning/tests/test_apply.py`. The script re-runs itself under
`unshare --net`, so every value it writes belongs to a namespace that disappears with it; the
outer run then checks that the host's values did not move. Only per-namespace keys (net.core.*,
net.ipv4.tcp_*, ...) are used: fs.* and a few net.ipv4 keys are global and never touched here.
"""

import os
import subprocess
import sys
import tempfile
import json
import time
import unittest
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
KT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(KT, "lib"))
import ktune  # noqa: E402

# Per-namespace keys and values different from the defaults.
PROFILE_A = """# test profile A
net.core.somaxconn = 1234
net.ipv4.tcp_rmem = 4096   8192 65536
; a comment of the other kind
net.ipv4.ip_local_port_range = 20000 40000
net.ipv4.tcp_fin_timeout = 17
net.netfilter.no_such_key_here = 1
net.ipv4.tcp_ehash_entries = 3
"""
PROFILE_B = """net.core.somaxconn = 777
net.ipv4.tcp_max_syn_backlog = 999
"""
KEYS = ["net.core.somaxconn", "net.ipv4.tcp_rmem", "net.ipv4.ip_local_port_range",
        "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_max_syn_backlog"]


def put(path, text):
    with open(path, "w") as f:
        f.write(text)


def run(*args, user=None):
    cmd = list(args)
    if user is not None:
        cmd = ["setpriv", "--reuid", str(user), "--regid", str(user), "--clear-groups"] + cmd
    p = subprocess.run(cmd, capture_output=True, text=True)
    return p.returncode, p.stdout + p.stderr


class Parse(unittest.TestCase):
    def test_sysctl_d_format(self):
        items = ktune.parse(PROFILE_A)
        self.assertEqual(items[1], ("net.ipv4.tcp_rmem", "4096 8192 65536"))
        self.assertEqual(len(items), 6)
        self.assertEqual(ktune.parse("-net.core.somaxconn=5\nnet.core.somaxconn = 6"),
                         [("net.core.somaxconn", "6")])
        for bad in ["novalue", "= 1", "a.b =", "/etc/x = 1", "a..b = 1"]:
            with self.assertRaises(ValueError, msg=bad):
                ktune.parse(bad)
        self.assertEqual(ktune.path_of("net.ipv4.tcp_rmem"), "/proc/sys/net/ipv4/tcp_rmem")
        self.assertEqual(ktune.path_of("net/ipv4/tcp_rmem"), "/proc/sys/net/ipv4/tcp_rmem")

    def test_shipped_profiles_parse_and_comment_every_knob(self):
        for name in ["c1m-server", "c1m-loadgen", "low-memory"]:
            path = ktune.resolve_profile(name)
            with open(path) as f:
                text = f.read()
            self.assertTrue(ktune.parse(text), name)
            lines = text.splitlines()
            for i, line in enumerate(lines):
                if line.strip() and not line.startswith("#"):
                    above = lines[i - 1] if i else ""
                    # Each knob has a comment block just above it (or shares its neighbour's,
                    # for rmem/wmem pairs).
                    self.assertTrue(above.startswith("#") or "=" in above,
                                    "%s: %s has no comment" % (name, line))
            self.assertIn("Measured", text, name)


@unittest.skipUnless(os.environ.get("KTUNE_IN_NETNS") == "1", "runs inside unshare --net")
class RoundTrip(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.state = os.path.join(self.tmp.name, "state", "saved.conf")
        self.a = os.path.join(self.tmp.name, "a.conf")
        self.b = os.path.join(self.tmp.name, "b.conf")
        os.chmod(self.tmp.name, 0o755)  # readable by the unprivileged user of one test
        put(self.a, PROFILE_A)
        put(self.b, PROFILE_B)
        self.before = {k: ktune.read(k) for k in KEYS}

    def tearDown(self):
        self.tmp.cleanup()

    def tool(self, name, *args, user=None):
        return run(os.path.join(KT, name), *args, "--state", self.state, user=user)

    def test_apply_twice_then_restore(self):
        rc, out = self.tool("apply", self.a, "--dry-run")
        self.assertEqual(rc, 0, out)
        self.assertIn("net.core.somaxconn", out)
        self.assertIn("-> 1234", out)
        self.assertEqual(ktune.read("net.core.somaxconn"), self.before["net.core.somaxconn"])
        self.assertFalse(os.path.exists(self.state), "a dry run saves nothing")

        rc, out = self.tool("apply", self.a)
        self.assertEqual(rc, 0, out)
        self.assertIn("net.netfilter.no_such_key_here           not present here", out)
        # Read-only (the size of the established hash, fixed when the namespace was made):
        # skipped with its reason, not a failure, and not saved for restore.
        self.assertRegex(out, r"net.ipv4.tcp_ehash_entries +-?\d+, read-only here")
        self.assertNotIn("FAILED", out)
        self.assertNotIn("net.ipv4.tcp_ehash_entries", dict(ktune.load_state(self.state)))
        self.assertEqual(ktune.read("net.core.somaxconn"), "1234")
        self.assertEqual(ktune.read("net.ipv4.tcp_rmem"), "4096 8192 65536")
        self.assertEqual(ktune.read("net.ipv4.ip_local_port_range"), "20000 40000")
        saved = dict(ktune.load_state(self.state))
        self.assertEqual(saved["net.core.somaxconn"], self.before["net.core.somaxconn"])

        # Idempotent: the second time nothing changes and the saved originals stay.
        rc, out = self.tool("apply", self.a)
        self.assertEqual(rc, 0, out)
        self.assertIn("nothing to change", out)
        self.assertEqual(dict(ktune.load_state(self.state)), saved)

        # Another profile over it: somaxconn's saved value is still the original one.
        rc, out = self.tool("apply", self.b)
        self.assertEqual(rc, 0, out)
        self.assertIn("1234 -> 777", out)
        saved = dict(ktune.load_state(self.state))
        self.assertEqual(saved["net.core.somaxconn"], self.before["net.core.somaxconn"])
        self.assertEqual(saved["net.ipv4.tcp_max_syn_backlog"],
                         self.before["net.ipv4.tcp_max_syn_backlog"])

        rc, out = self.tool("restore")
        self.assertEqual(rc, 0, out)
        self.assertEqual({k: ktune.read(k) for k in KEYS}, self.before)
        self.assertFalse(os.path.exists(self.state))
        rc, out = self.tool("restore")
        self.assertEqual(rc, 0, out)
        self.assertIn("nothing to restore", out)

    def test_refuses_without_root_and_writes_nothing(self):
        rc, out = self.tool("apply", self.a, user=65534)
        self.assertEqual(rc, 1, out)
        self.assertIn("needs root", out)
        self.assertEqual(ktune.read("net.core.somaxconn"), self.before["net.core.somaxconn"])
        rc, out = self.tool("restore", user=65534)
        self.assertEqual(rc, 1, out)
        # A dry run needs no root.
        rc, out = self.tool("apply", self.a, "--dry-run", user=65534)
        self.assertEqual(rc, 0, out)
        # ... and says what it would change, not that it is read-only (to a user it all is).
        self.assertIn("-> 1234", out)
        self.assertNotIn("read-only here", out)

    def test_bad_profile_exits_2(self):
        bad = os.path.join(self.tmp.name, "bad.conf")
        put(bad, "net.core.somaxconn\n")
        self.assertEqual(self.tool("apply", bad)[0], 2)
        self.assertEqual(self.tool("apply", "no-such-profile")[0], 2)

    def test_a_rejected_value_is_reported(self):
        bad = os.path.join(self.tmp.name, "rejected.conf")
        # The kernel refuses a port range whose low end is above its high end (EINVAL).
        put(bad, "net.core.somaxconn = 4321\nnet.ipv4.ip_local_port_range = 40000 20000\n")
        rc, out = self.tool("apply", bad)
        self.assertEqual(rc, 1, out)
        self.assertIn("FAILED", out)
        self.assertEqual(ktune.read("net.core.somaxconn"), "4321")
        rc, out = self.tool("restore")
        self.assertEqual(rc, 0, out)
        self.assertEqual({k: ktune.read(k) for k in KEYS}, self.before)


FAKE_SERVER = """#!/usr/bin/env python3
import time
print("edgecomet: listening on 127.0.0.1:9", flush=True)
time.sleep(60)
"""

# Writes a flood-like report; records the knob's value during the run as kernel_bytes_per_conn.
FAKE_FLOOD = """#!/usr/bin/env python3
import json, sys
args = sys.argv[1:]
if "--fail" in args:
    sys.exit(3)
if "--sleep" in args:
    import time
    time.sleep(30)
seen = int(open("/proc/sys/net/core/somaxconn").read())
fin = int(open("/proc/sys/net/ipv4/tcp_fin_timeout").read())
report = args[args.index("--json") + 1]
json.dump({"conns_established": 10, "server_pss_bytes_per_conn": 200.5 + fin,
           "kernel_bytes_per_conn": seen, "connect_rate_per_sec": 1000.0,
           "latency_us": {"count": 5, "p50": 40, "p99": 90},
           "errors": {"refused": 1, "reset": 0}, "lost": 0,
           "url": args[args.index("--url") + 1]}, open(report, "w"))
"""


@unittest.skipUnless(os.environ.get("KTUNE_IN_NETNS") == "1", "runs inside unshare --net")
class Experiment(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.server = os.path.join(self.tmp.name, "server")
        self.flood = os.path.join(self.tmp.name, "flood")
        put(self.server, FAKE_SERVER)
        put(self.flood, FAKE_FLOOD)
        os.chmod(self.server, 0o755)
        os.chmod(self.flood, 0o755)
        self.before = ktune.read("net.core.somaxconn")

    def tearDown(self):
        self.tmp.cleanup()

    def experiment(self, *flood_args, knob="net.core.somaxconn", values=("100", "2000"),
                   opts=()):
        out = os.path.join(self.tmp.name, "out")
        rc, log = run(os.path.join(KT, "experiment"), knob, *values,
                      "--out", out, "--server-bin", self.server, "--flood-bin", self.flood,
                      *opts, "--", *flood_args)
        return rc, log, out

    def test_several_knobs_current_and_per_knob_values_and_rounds(self):
        fin = ktune.read("net.ipv4.tcp_fin_timeout")
        rc, log, out = self.experiment(
            "--conns", "10", knob="net.core.somaxconn,net.ipv4.tcp_fin_timeout",
            values=("current", "300", "200 / 7"), opts=("--repeat", "2"))
        self.assertEqual(rc, 0, log)
        with open(os.path.join(out, "results.json")) as f:
            res = json.load(f)
        seen = [(r["value"], r["round"], r["summary"]["kernel_bytes_per_conn"],
                 r["summary"]["server_pss_bytes_per_conn"] - 200.5) for r in res["runs"]]
        cur = (int(self.before), int(fin))
        self.assertEqual(seen, [("current", 1) + cur, ("300", 1, 300, 300), ("200 / 7", 1, 200, 7),
                                ("current", 2) + cur, ("300", 2, 300, 300), ("200 / 7", 2, 200, 7)])
        self.assertEqual([m["rounds"] for m in res["medians"]], [2, 2, 2])
        self.assertEqual(sorted(os.listdir(out)), [
            "chart.svg", "flood-200_7-round1.json", "flood-200_7-round2.json",
            "flood-300-round1.json", "flood-300-round2.json", "flood-current-round1.json",
            "flood-current-round2.json", "results.json", "table.md"])
        self.assertEqual(ktune.read("net.core.somaxconn"), self.before)
        self.assertEqual(ktune.read("net.ipv4.tcp_fin_timeout"), fin)
        with open(os.path.join(out, "table.md")) as f:
            self.assertIn("Medians over the rounds", f.read())

    def test_a_value_per_knob_must_match_the_knobs(self):
        rc, log, _ = self.experiment("--conns", "10", knob="net.core.somaxconn",
                                     values=("1 / 2",))
        self.assertNotEqual(rc, 0, log)
        self.assertIn("one per knob", log)
        self.assertEqual(ktune.read("net.core.somaxconn"), self.before)

    def test_each_value_is_set_during_its_run_and_restored(self):
        rc, log, out = self.experiment("--conns", "10")
        self.assertEqual(rc, 0, log)
        with open(os.path.join(out, "results.json")) as f:
            res = json.load(f)
        seen = [r["summary"]["kernel_bytes_per_conn"] for r in res["runs"]]
        self.assertEqual(seen, [100, 2000], "the knob had each value during its run")
        self.assertEqual(res["runs"][0]["summary"]["errors"], 1)
        self.assertIn("ws://127.0.0.1:9/sub/experiment", res["runs"][0]["command"])
        self.assertEqual(ktune.read("net.core.somaxconn"), self.before)
        with open(os.path.join(out, "table.md")) as f:
            t = f.read()
        self.assertIn("| `100` | 10 | %s | 100 |" % (200.5 + int(ktune.read(
            "net.ipv4.tcp_fin_timeout"))), t)
        ET.parse(os.path.join(out, "chart.svg"))  # well-formed

    def test_sigterm_restores(self):
        out = os.path.join(self.tmp.name, "out")
        p = subprocess.Popen([os.path.join(KT, "experiment"), "net.core.somaxconn", "777",
                              "--out", out, "--server-bin", self.server, "--flood-bin",
                              self.flood, "--", "--sleep"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
        for _ in range(100):
            if ktune.read("net.core.somaxconn") == "777":
                break
            time.sleep(0.05)
        self.assertEqual(ktune.read("net.core.somaxconn"), "777")
        p.terminate()
        log = p.communicate(timeout=20)[0]
        self.assertEqual(p.returncode, 130, log)
        self.assertIn("interrupted", log)
        self.assertEqual(ktune.read("net.core.somaxconn"), self.before)

    def test_a_failed_run_still_restores(self):
        rc, log, _ = self.experiment("--fail")
        self.assertNotEqual(rc, 0, log)
        self.assertEqual(ktune.read("net.core.somaxconn"), self.before)


def outer():
    """Runs the suite again inside a new network namespace, then checks the host is unchanged."""
    if os.geteuid() != 0:
        print("kernel-tuning tests: need root (unshare --net)", file=sys.stderr)
        return 1
    host_before = {k: ktune.read(k) for k in KEYS}
    env = dict(os.environ, KTUNE_IN_NETNS="1")
    rc = subprocess.run(["unshare", "--net", sys.executable, os.path.abspath(__file__)],
                        env=env).returncode
    host_after = {k: ktune.read(k) for k in KEYS}
    if host_after != host_before:
        print("the host's values changed: %s -> %s" % (host_before, host_after), file=sys.stderr)
        return 1
    print("host values unchanged: %d keys" % len(KEYS))
    return rc


if __name__ == "__main__":
    if os.environ.get("KTUNE_IN_NETNS") == "1":
        prog = unittest.main(exit=False, verbosity=2)
        ok = prog.result.wasSuccessful() and not prog.result.skipped
        sys.exit(0 if ok else 1)
    sys.exit(outer())
