"""Sysctl profiles: parse, apply with saved old values, restore, verify.

A profile is a sysctl.d file (``key = value``, ``#`` or ``;`` comments). ``apply`` prints
old -> new for every key, saves the old values (the first time a key is changed: applying twice
keeps the original), writes the new ones and reads them back. ``restore`` writes the saved values
back and removes the state file. Values are compared as whitespace-separated words, as
/proc/sys prints multi-value knobs with tabs.

The state file (default /var/lib/edgecomet-kernel-tuning/saved.conf, or $KTUNE_STATE, or
--state) is itself a sysctl.d file: `sysctl -p` of it restores by hand.
"""

import argparse
import os
import sys

PROC = "/proc/sys"
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_STATE = "/var/lib/edgecomet-kernel-tuning/saved.conf"


def parse(text):
    """[(key, value)] of a sysctl.d text, in order; a later line for a key wins."""
    out = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("-"):
            # sysctl.d: a leading '-' means "ignore errors for this key".
            line = line[1:].lstrip()
        if "=" not in line:
            raise ValueError("line %d: expected 'key = value': %r" % (n, line))
        key, value = (x.strip() for x in line.split("=", 1))
        if not key or not value or ".." in key or key.startswith("/"):
            raise ValueError("line %d: bad key or value: %r" % (n, line))
        out[key] = " ".join(value.split())
    return list(out.items())


def path_of(key, root=PROC):
    return os.path.join(root, *key.replace("/", ".").split("."))


def read(key, root=PROC):
    """The value of `key` (words joined by one space), or None when the kernel has no such key."""
    try:
        with open(path_of(key, root)) as f:
            return " ".join(f.read().split())
    except FileNotFoundError:
        return None


def writable(key, root=PROC):
    """False for a key the kernel keeps read-only here: a sysctl that is read-only everywhere
    (net.ipv4.tcp_ehash_entries) or a global one seen from a network namespace of its own
    (net.netfilter.nf_conntrack_max outside the machine's namespace). Root included: /proc/sys
    checks the table's mode, not the caller's capabilities."""
    return os.access(path_of(key, root), os.W_OK)


def write(key, value, root=PROC):
    with open(path_of(key, root), "w") as f:
        f.write(value + "\n")


def set_checked(key, value, root=PROC, out=sys.stdout):
    """Writes `value` and reads it back; says FAILED and returns False when either fails."""
    try:
        write(key, value, root)
    except OSError as e:
        out.write("%-40s FAILED to write: %s\n" % (key, e.strerror or e))
        return False
    now = read(key, root)
    if now != value:
        out.write("%-40s FAILED: reads back %s\n" % (key, now))
        return False
    return True


def resolve_profile(name):
    if os.path.exists(name):
        return name
    p = os.path.join(HERE, "profiles", name if name.endswith(".conf") else name + ".conf")
    if os.path.exists(p):
        return p
    raise FileNotFoundError("no profile %r (nor %s)" % (name, p))


def load_state(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return parse(f.read())


def save_state(path, items, profile):
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("# Values before kernel-tuning/apply %s; kernel-tuning/restore writes them back.\n"
                % profile)
        for k, v in items:
            f.write("%s = %s\n" % (k, v))
    os.replace(tmp, path)


def apply(profile, state, dry_run=False, root=PROC, out=sys.stdout):
    """Returns the exit status: 0 applied (or nothing to do), 1 a key failed to apply."""
    with open(profile) as f:
        items = parse(f.read())
    saved = dict(load_state(state))
    plan = []
    for key, new in items:
        old = read(key, root)
        if old is None:
            out.write("%-40s not present here (a module not loaded, or a key of the machine's network"
                      " namespace only): skipped\n" % key)
            continue
        # Only root's answer means anything: to anyone else every key is read-only (and only a
        # dry run gets this far without root).
        if old != new and os.geteuid() == 0 and not writable(key, root):
            out.write("%-40s %s, read-only here: skipped (a global key seen from a network"
                      " namespace of its own is set in the machine's)\n" % (key, old))
            continue
        mark = "unchanged" if old == new else "%s -> %s" % (old, new)
        out.write("%-40s %s\n" % (key, mark))
        if old != new:
            plan.append((key, old, new))
    if dry_run:
        out.write("dry run: %d change(s), nothing written\n" % len(plan))
        return 0
    if not plan:
        out.write("nothing to change\n")
        return 0
    # Save before writing, and only originals: a key applied before keeps its first value.
    order = [k for k, _ in load_state(state)]
    for key, old, _ in plan:
        if key not in saved:
            saved[key] = old
            order.append(key)
    save_state(state, [(k, saved[k]) for k in order], profile)
    failed = 0
    for key, _, new in plan:
        if not set_checked(key, new, root, out):
            failed += 1
    out.write("applied %d change(s)%s; old values saved in %s (kernel-tuning/restore)\n"
              % (len(plan) - failed, ", %d FAILED" % failed if failed else "", state))
    return 1 if failed else 0


def restore(state, dry_run=False, root=PROC, out=sys.stdout):
    items = load_state(state)
    if not items:
        out.write("nothing saved in %s: nothing to restore\n" % state)
        return 0
    failed = 0
    for key, old in items:
        now = read(key, root)
        if now is None:
            out.write("%-40s not present any more: skipped\n" % key)
            continue
        out.write("%-40s %s\n" % (key, "unchanged" if now == old else "%s -> %s" % (now, old)))
        if dry_run or now == old:
            continue
        if not set_checked(key, old, root, out):
            failed += 1
    if dry_run:
        out.write("dry run: nothing written\n")
        return 0
    if failed:
        out.write("%d key(s) not restored; %s kept\n" % (failed, state))
        return 1
    os.remove(state)
    out.write("restored %d key(s); %s removed\n" % (len(items), state))
    return 0


def need_root(what):
    if os.geteuid() != 0:
        sys.stderr.write("kernel-tuning/%s: needs root to write /proc/sys (try --dry-run)\n" % what)
        return False
    return True


def main_apply(argv=None):
    ap = argparse.ArgumentParser(
        prog="kernel-tuning/apply",
        description="Apply a sysctl profile: print old -> new, save the old values for "
                    "kernel-tuning/restore, write, read back.")
    ap.add_argument("profile", help="a profile name (kernel-tuning/profiles/NAME.conf) or a path")
    ap.add_argument("--dry-run", action="store_true", help="print old -> new, write nothing")
    ap.add_argument("--state", default=os.environ.get("KTUNE_STATE", DEFAULT_STATE),
                    help="where the old values are kept (default %(default)s)")
    a = ap.parse_args(argv)
    try:
        profile = resolve_profile(a.profile)
        with open(profile) as f:
            parse(f.read())
    except (OSError, ValueError) as e:
        sys.stderr.write("kernel-tuning/apply: %s\n" % e)
        return 2
    if not a.dry_run and not need_root("apply"):
        return 1
    return apply(profile, a.state, a.dry_run)


def main_restore(argv=None):
    ap = argparse.ArgumentParser(
        prog="kernel-tuning/restore",
        description="Write back the values kernel-tuning/apply saved, then forget them.")
    ap.add_argument("--dry-run", action="store_true", help="print what would change")
    ap.add_argument("--state", default=os.environ.get("KTUNE_STATE", DEFAULT_STATE),
                    help="where the old values are kept (default %(default)s)")
    a = ap.parse_args(argv)
    if not a.dry_run and not need_root("restore"):
        return 1
    return restore(a.state, a.dry_run)
