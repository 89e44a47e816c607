#!/usr/bin/python3
"""Issue 23's benchmark: what reporting the sandbox's denials costs, side by side with a
build that does not report them (main before issue 23, built in another directory).

Cases, each run by both binaries, interleaved (base, this, base, this, ...) so that the
noise of this shared machine hits them alike:

- a call with no denials: plugin /bin/true, every native layer on, audited;
- a call whose plugin makes N refused system calls (memfd_create, which upm's rules answer
  ENOSYS): the base build's kernel answers them in the filter, this build's supervisor
  answers each through seccomp user notification; the difference over N is a denied
  syscall's extra cost;
- with --audit: the kernel's audit turned on for the run (and put back after): the call
  with no denials again (this build then reads the audit and waits for its queue at the
  end), and N refused file opens (Landlock), which this build logs and reads.

    sudo bench/denials.py --baseline /tmp/upm-main/target/x86_64-unknown-linux-gnu/release/upm \\
        [--runs 100] [--denied 2000] [--audit]

Build the baseline first, e.g. `git clone -q . /tmp/upm-main && cd /tmp/upm-main &&
git checkout -q <main without issue 23> && cargo build --release`, and this build with
`cargo build --release`.
"""
import argparse
import fcntl
import json
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UPM = os.path.join(ROOT, "target/x86_64-unknown-linux-gnu/release/upm")

DENY = r"""#!/usr/bin/python3
import json, os, sys
req = json.loads(sys.stdin.read())
n, what = req["args"]["n"], req["method"]
for _ in range(n):
    try:
        if what == "syscalls":
            os.memfd_create("x")
        else:
            open("/etc/hostname").close()
    except OSError:
        pass
print("{}")
"""


def setup(d):
    os.chmod(d, 0o755)
    shutil.copytree(os.path.join(ROOT, "policies"), os.path.join(d, "policies"))
    with open(os.path.join(d, "deny.py"), "w") as f:
        f.write(DENY)
    os.chmod(os.path.join(d, "deny.py"), 0o755)
    cfg = {
        "require_schemas": False,
        "sandbox": {"limits": {"timeout_ms": 60000, "cpu_seconds": 60}},
        "plugins": {
            "Noop": {"command": ["/bin/true"], "allowed_methods": ["noop"]},
            "Deny": {"command": ["./deny.py"], "allowed_methods": ["syscalls", "files"]},
        },
    }
    path = os.path.join(d, "upm_config.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path


def timed(argv, stdin):
    t = time.perf_counter()
    r = subprocess.run(argv, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return (time.perf_counter() - t) * 1000.0, r


# ---- the kernel's audit (for --audit): AUDIT_GET / AUDIT_SET over netlink ----

def audit_request(ty, payload=b""):
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 9)  # NETLINK_AUDIT
    s.sendto(struct.pack("=IHHII", 16 + len(payload), ty, 1 | 4, 1, 0) + payload, (0, 0))
    while True:
        d = s.recv(65536)
        _, t, _, _, _ = struct.unpack("=IHHII", d[:16])
        if t == 1000:  # AUDIT_GET's answer
            return struct.unpack("=11I", d[16:16 + 44])
        if t == 2:  # NLMSG_ERROR (0 is the ack)
            err = struct.unpack("=i", d[16:20])[0]
            if err:
                sys.exit(f"audit request {ty}: errno {-err}")
            if ty != 1000:
                return None


def audit_enabled():
    return audit_request(1000)[1]


def audit_set(enabled):
    audit_request(1001, struct.pack("=11I", 1, enabled, *([0] * 9)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", required=True, help="upm built without issue 23")
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--denied", type=int, default=2000, help="refused calls per call")
    ap.add_argument("--audit", action="store_true", help="also with the kernel's audit on")
    ap.add_argument("--upm", default=UPM, help="this build (default: the tree's release build)")
    args = ap.parse_args()
    upm = args.upm
    if os.geteuid() != 0:
        sys.exit("run as root: upm's full sandbox (uid switch) is what is measured")
    d = tempfile.mkdtemp(prefix="upm-bench-denials-", dir="/tmp")
    config = setup(d)
    binaries = [("base", args.baseline), ("this", upm)]

    def req(method, **a):
        plugin = "Noop" if method == "noop" else "Deny"
        return json.dumps({"plugin": plugin, "method": method, "args": a}).encode()

    n = args.denied
    cases = [
        ("a call with no denials (/bin/true)", req("noop"), 1),
        (f"{n} refused syscalls (memfd_create, ENOSYS)", req("syscalls", n=n), n),
    ]
    audit_cases = [
        ("audit on: a call with no denials (/bin/true)", req("noop"), 1),
        (f"audit on: {n} refused opens (Landlock, fs.read_file)", req("files", n=n), n),
    ]

    # Check once that this build reports what the base build does not.
    _, r = timed([upm, "run", "--config", config], req("syscalls", n=3))
    out = json.loads(r.stdout)
    memfd = [x for x in out["data"].get("denials", []) if x["what"] == "memfd_create"]
    if not memfd or memfd[0]["count"] != 3:
        sys.exit(f"this build did not report the denials: {out['data']}")
    _, r = timed([args.baseline, "run", "--config", config], req("syscalls", n=3))
    if "denials" in json.loads(r.stdout)["data"]:
        sys.exit("the baseline reports denials: it is not a build without issue 23")

    def measure(cases, runs):
        samples = {(c[0], b): [] for c in cases for b, _ in binaries}
        for _ in range(runs):
            for name, stdin, _ in cases:
                for b, exe in binaries:
                    ms, r = timed([exe, "run", "--config", config], stdin)
                    if r.returncode != 0:
                        sys.exit(f"{name} ({b}) failed: {r.stdout[:400]!r}")
                    samples[(name, b)].append(ms)
        return samples

    rows = []
    samples = measure(cases[:1], args.runs)
    samples.update(measure(cases[1:], max(10, args.runs // 5)))
    rows.extend((c, samples) for c in cases)
    audited = None
    if args.audit:
        # The lock tests/denials.rs holds while it sets the audit: neither sees the
        # other's state.
        lock = open("/tmp/upm-tests-audit-state.lock", "a")
        fcntl.flock(lock, fcntl.LOCK_EX)
        before = audit_enabled()
        try:
            if before == 0:
                audit_set(1)
            audited = measure(audit_cases[:1], args.runs)
            audited.update(measure(audit_cases[1:], max(10, args.runs // 5)))
            # What this build saw with the audit on, for the record.
            _, r = timed([upm, "run", "--config", config], req("files", n=3))
            seen = json.loads(r.stdout)["data"].get("denials", [])
        finally:
            if before == 0:
                audit_set(0)
            lock.close()
        rows.extend((c, audited) for c in audit_cases)
        if not any(x["layer"] == "landlock" for x in seen):
            print("warning: with the audit on, this build reported no Landlock denial", file=sys.stderr)
    shutil.rmtree(d, ignore_errors=True)

    print(f"\ntimes in ms (median, p90); interleaved; {args.runs} runs of the no-denial calls, "
          f"{max(10, args.runs // 5)} of the others\n")
    def p90(xs):
        return statistics.quantiles(xs, n=10)[-1]

    print("| case | base median (p90) | this median (p90) | this / base | extra per denial |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for (name, _, per), s in rows:
        b, t = s[(name, "base")], s[(name, "this")]
        base, this = statistics.median(b), statistics.median(t)
        extra = "" if per == 1 else f"{(this - base) * 1000.0 / per:.1f} µs"
        print(f"| {name} | {base:.2f} ({p90(b):.2f}) | {this:.2f} ({p90(t):.2f}) "
              f"| {this / base:.3f} | {extra} |")
    print(f"\nbaseline: {args.baseline}\ncommand: sudo bench/denials.py --baseline BASE --runs "
          f"{args.runs} --denied {n}{' --audit' if args.audit else ''}")


if __name__ == "__main__":
    main()
