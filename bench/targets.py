#!/usr/bin/python3
"""Issue 25's target table, every row measured side by side in one interleaved run.

Each round runs, interleaved call by call in a shuffled order (a call that follows one
which made a network namespace shares the CPU with that namespace's teardown, so a fixed
order favours whatever follows the cheap kinds): a one-shot `upm run` (every layer on,
two durable audit entries), bwrap's bare sandbox, bench/floor.c's one call (the kernel's
share alone: new user, PID, network and IPC namespaces, an exec, two durable lines), its
`nonet` variant and its `full` variant (also every other guarantee upm keeps, see
floor.c), and a warm `tools/call` of the same no-op through one `upm mcp` process (plain
JSON-RPC lines, one call at a time). Then, per round, a batch through `upm run --jsonl
--parallel 2` and floor batches: with the layers' kernel cost (Landlock, no_new_privs,
seccomp), with and without a per-call network namespace, and with every guarantee and
two durable lines at one fdatasync a call (4 workers all running their children, where
upm's `--parallel 2` runs 2 plugins while 2 more calls prepare); the batches in a
shuffled order too.
Latencies are medians over every call; rates, medians over the rounds. Each batch's CPU a
call (its whole process tree, user and system, from getrusage of the reaped children) is
printed too, with the CPU a call at which upm's batch, as busy as it is, would reach the
share's goal. The plugin is
/bin/true everywhere (bwrap runs it too). The machine's load is printed with the table:
on this shared machine only ratios measured in one run mean anything.

    sudo bench/targets.py [--rounds 10] [--calls 20] [--batch 400] [--upm UPM]
                                                         (after `cargo build --release`)
"""
import argparse
import datetime
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import apt
import floor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UPM = os.path.join(ROOT, "target/x86_64-unknown-linux-gnu/release/upm")
REQUEST = {"plugin": "Noop", "method": "noop", "args": {}}
TOOL = "Noop__noop"


def setup_config(d):
    os.chmod(d, 0o755)
    shutil.copytree(os.path.join(ROOT, "schemas"), os.path.join(d, "schemas"))
    cfg = {"plugins": {"Noop": {"command": ["/bin/true"],
                                "methods": {"noop": {"schema": "schemas/empty.json"}}}}}
    path = os.path.join(d, "upm_config.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path


def timed(argv, stdin=b""):
    t = time.perf_counter()
    r = subprocess.run(argv, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ms = (time.perf_counter() - t) * 1000.0
    if r.returncode != 0:
        sys.exit(f"{argv[0]} failed ({r.returncode}): {r.stdout[:300]!r} {r.stderr[:300]!r}")
    return ms, r


def all_enforced(result, want_net):
    layers = result["data"]["sandbox"]["layers"]
    states = {k: v["state"] for k, v in layers.items()}
    if any(s != "enforced" for s in states.values()):
        sys.exit(f"not every layer in force: {states}")
    kind = layers["network"]["detail"]["namespace"]["kind"]
    if kind != want_net:
        sys.exit(f"network namespace {kind}, expected {want_net}")


class Mcp:
    """One `upm mcp`, spoken to in plain JSON-RPC lines, one call at a time."""

    def __init__(self, config, env=None):
        self.p = subprocess.Popen([UPM, "mcp", "--config", config], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, env=env)
        self.n = 0
        self.request("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                    "clientInfo": {"name": "bench", "version": "1"}})
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def send(self, msg):
        self.p.stdin.write(json.dumps(msg).encode() + b"\n")
        self.p.stdin.flush()

    def request(self, method, params):
        self.n += 1
        self.send({"jsonrpc": "2.0", "id": self.n, "method": method, "params": params})
        msg = json.loads(self.p.stdout.readline())
        assert msg.get("id") == self.n, msg
        return msg

    def call(self):
        t = time.perf_counter()
        r = self.request("tools/call", {"name": TOOL, "arguments": {}})
        ms = (time.perf_counter() - t) * 1000.0
        if r["result"]["isError"]:
            sys.exit(f"upm mcp call failed: {r}")
        return ms, r

    def close(self):
        self.p.stdin.close()
        self.p.wait()


def run_batch(config, calls, env=None, upm=None):
    lines = b"".join(json.dumps(dict(REQUEST, request_id=f"b{i}")).encode() + b"\n"
                     for i in range(calls))
    t = time.perf_counter()
    p = subprocess.Popen([upm or UPM, "run", "--jsonl", "--parallel", "2", "--config", config],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=env)
    writer = threading.Thread(target=p.stdin.write, args=(lines,))
    writer.start()
    results = [p.stdout.readline() for _ in range(calls)]
    secs = time.perf_counter() - t
    writer.join()
    p.stdin.close()
    p.wait()
    docs = [json.loads(r) for r in results if r]
    if len(docs) != calls or not all(d.get("success") for d in docs):
        sys.exit(f"batch failed: {results[:1]!r} {p.stderr.read()[:300]!r}")
    if upm is None:
        all_enforced(docs[0], "shared")
    return calls / secs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--calls", type=int, default=20, help="one-shot calls of each kind a round")
    ap.add_argument("--batch", type=int, default=400, help="calls per batch")
    ap.add_argument("--upm", help="the upm binary to measure (default: the release build)")
    ap.add_argument("--baseline", help="another upm binary (say, main's) run beside it: "
                    "one-shot calls and batches, interleaved")
    args = ap.parse_args()
    if args.batch < 4:
        sys.exit("--batch: at least 4 calls (the full floor's 4 workers)")
    global UPM
    UPM = args.upm or UPM
    if os.geteuid() != 0:
        sys.exit("run as root: upm's full sandbox (uid switch) is what is measured")
    bwrap = apt.ensure("bwrap", "bubblewrap")
    if not os.path.exists("/usr/bin/time"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "time"], check=True)
    d = tempfile.mkdtemp(prefix="upm-bench-", dir="/tmp")
    config = setup_config(d)
    floor_exe = floor.build(d)
    if not floor_exe:
        sys.exit("the floor program is needed for this table")
    flog = os.path.join(d, "floor.log")
    request = json.dumps(REQUEST).encode()
    one = {
        "upm": [UPM, "run", "--config", config],
        "bwrap": [bwrap, "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "/bin/true"],
        "floor": [floor_exe, "call", flog],
        "floor_nonet": [floor_exe, "call", flog, "nonet"],
        "floor_full": [floor_exe, "call", flog, "full"],
    }
    if args.baseline:
        one["baseline"] = [args.baseline, "run", "--config", config]
    # Warm up, and check that every layer is on where it is measured.
    _, r = timed(one["upm"], request)
    all_enforced(json.loads(r.stdout), "own")
    # Diagnostic rows: the same with the audit log on tmpfs, where fdatasync is free, to
    # tell upm's own work from the disk's latency (not durable: not a result).
    shm = tempfile.mkdtemp(prefix="upm-bench-audit-", dir="/dev/shm")
    shm_env = dict(os.environ, UPM_LOG_FILE=os.path.join(shm, "entrypoint.log"))
    mcp = Mcp(config)
    mcp_shm = Mcp(config, shm_env)
    for _ in range(3):
        mcp.call()
        mcp_shm.call()
    load_before = os.getloadavg()
    lat = {k: [] for k in list(one) + ["mcp", "mcp_shm"]}
    rates = {"batch": [], "batch_shm": [], "floor_layers_nonet": [], "floor_layers": [],
             "floor_full_nonet": []}
    if args.baseline:
        rates["baseline_batch"] = []
    cpu = {k: [] for k in rates}
    each = args.batch // 2
    # upm's `--parallel 2` has 4 workers, 2 running plugins while 2 prepare; the full
    # floor's 4 all run theirs, more than upm may (a floor above, not below, upm's).
    floors = {"floor_layers_nonet": ["2", str(each), "layers", "nonet"],
              "floor_layers": ["2", str(each), "layers"],
              "floor_full_nonet": ["4", str(args.batch // 4), flog, "full", "durable", "nonet"]}
    batches = ["batch", "batch_shm"] + list(floors) + (["baseline_batch"] if args.baseline else [])
    order = random.Random(25)
    kinds = list(one) + ["mcp", "mcp_shm"]
    for rnd in range(args.rounds):
        for _ in range(args.calls):
            order.shuffle(kinds)
            for k in kinds:
                if k == "mcp":
                    lat[k].append(mcp.call()[0])
                elif k == "mcp_shm":
                    lat[k].append(mcp_shm.call()[0])
                else:
                    ms, _ = timed(one[k], request if k in ("upm", "baseline") else b"")
                    lat[k].append(ms)
        # The batches in a shuffled order too (those with a per-call network namespace
        # leave its teardown to the next).
        order.shuffle(batches)
        for k in batches:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            if k == "batch":
                rates[k].append(run_batch(config, args.batch))
            elif k == "batch_shm":
                rates[k].append(run_batch(config, args.batch, shm_env))
            elif k == "baseline_batch":
                rates[k].append(run_batch(config, args.batch, upm=args.baseline))
            else:
                out = subprocess.run([floor_exe, "batch"] + floors[k], stdout=subprocess.PIPE,
                                     check=True).stdout
                rates[k].append(float(out))
            # The CPU of the batch's whole tree (each process is reaped by its parent,
            # the last by us), user and system, a call.
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            cpu[k].append(used * 1000.0 / args.batch)
        print(f"round {rnd + 1}/{args.rounds}", file=sys.stderr)
    load_after = os.getloadavg()
    mcp.close()
    mcp_shm.close()
    shutil.rmtree(shm, ignore_errors=True)
    rss = subprocess.run(["/usr/bin/time", "-f", "%M"] + one["upm"], input=request,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    rss_kb = int(rss.stderr.decode().strip().splitlines()[-1])
    shutil.rmtree(d, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in lat.items()}
    rate = {k: statistics.median(v) for k, v in rates.items()}
    ratio = med["upm"] / med["bwrap"]
    own = med["upm"] - med["floor"]
    share = rate["batch"] / rate["floor_layers_nonet"]
    mcp_over = med["mcp"] - med["floor_nonet"]
    verdict = lambda ok: "met" if ok else "NOT met"
    load = lambda l: " ".join(f"{x:.1f}" for x in l)
    n = args.rounds * args.calls
    print(f"\n{datetime.date.today().isoformat()}: {n} calls of each one-call kind and "
          f"{args.rounds} batches of {args.batch}, interleaved in {args.rounds} rounds; "
          f"{os.cpu_count()} CPUs; load average before {load(load_before)}, after "
          f"{load(load_after)}\n")
    print("| what | measured | goal | |")
    print("| --- | ---: | ---: | --- |")
    print(f"| one call, every layer, audited, vs `bwrap --unshare-all` | {ratio:.2f} × "
          f"({med['upm']:.2f} vs {med['bwrap']:.2f} ms) | ≤ 1.0 × | {verdict(ratio <= 1.0)} |")
    print(f"| upm's own share of a call (upm − floor) | {own:.2f} ms (floor {med['floor']:.2f} ms) "
          f"| ≤ 1.0 ms | {verdict(own <= 1.0)} |")
    print(f"| batch, no-op calls, `--parallel 2`, every layer | {rate['batch']:.0f} calls/s "
          f"| ≥ 1,000 | {verdict(rate['batch'] >= 1000)} |")
    print(f"| the same, as a share of the floor without a per-call network namespace | "
          f"{share:.2f} ({rate['floor_layers_nonet']:.0f} calls/s; with one: "
          f"{rate['floor_layers']:.0f}) | ≥ 0.6 | {verdict(share >= 0.6)} |")
    print(f"| `upm mcp`, warm tools/call of a no-op, p50 | {med['mcp']:.2f} ms, floor + "
          f"{mcp_over:.2f} ms (floor without a per-call network namespace "
          f"{med['floor_nonet']:.2f} ms; with one {med['floor']:.2f}) | within 1 ms of the "
          f"floor's call | {verdict(mcp_over <= 1.0)} |")
    print(f"| diagnostic: the floor with every guarantee upm keeps (layers, mount namespace, "
          f"read-only view, tmpfs home, id maps, credentials, limits), one call | "
          f"{med['floor_full']:.2f} ms: the floor + {med['floor_full'] - med['floor']:.2f} ms "
          f"(upm − it: {med['upm'] - med['floor_full']:.2f} ms) | | |")
    print(f"| diagnostic: the same in a batch, two durable lines at one fdatasync a call, 4 "
          f"workers, no per-call network namespace | {rate['floor_full_nonet']:.0f} calls/s: "
          f"{rate['floor_full_nonet'] / rate['floor_layers_nonet']:.2f} of the layers floor "
          f"without a per-call network namespace (upm's batch: "
          f"{rate['batch'] / rate['floor_full_nonet']:.2f} of it) | | |")
    # What the batch's goal leaves upm: the CPU a call at which upm's batch, as busy as it
    # is now (CPUs used = rate × CPU a call), would run at the goal's rate, against the
    # CPU the full floor's kernel work alone takes a call.
    c = {k: statistics.median(v) for k, v in cpu.items()}
    busy = rate["batch"] * c["batch"] / 1000.0
    allowed = busy * 1000.0 / (0.6 * rate["floor_layers_nonet"])
    print(f"| diagnostic: CPU a call in a batch (its whole tree, getrusage), ms | layers floor "
          f"{c['floor_layers_nonet']:.2f}, full floor {c['floor_full_nonet']:.2f}, upm "
          f"{c['batch']:.2f} ({busy:.2f} CPUs busy); at that, the share's goal needs upm "
          f"≤ {allowed:.2f}: {allowed - c['floor_full_nonet']:+.2f} over the full floor | | |")
    print(f"| peak RSS, one call (GNU time) | {rss_kb / 1024:.1f} MB | ≤ 10 MB | "
          f"{verdict(rss_kb <= 10 * 1024)} |")
    print(f"| diagnostic: the batch with the audit log on tmpfs (not durable) | "
          f"{rate['batch_shm']:.0f} calls/s, {rate['batch_shm'] / rate['floor_layers_nonet']:.2f} "
          f"of the floor | | |")
    print(f"| diagnostic: `upm mcp` with the audit log on tmpfs (not durable) | "
          f"{med['mcp_shm']:.2f} ms | | |")
    if args.baseline:
        print(f"| baseline ({args.baseline}): one call vs bwrap; batch `--parallel 2` | "
              f"{med['baseline'] / med['bwrap']:.2f} × ({med['baseline']:.2f} ms); "
              f"{rate['baseline_batch']:.0f} calls/s | | |")
    print("\nmedians, ms: " + ", ".join(f"{k} {v:.2f}" for k, v in med.items()))
    print("rates, calls/s (min–max over rounds): " + ", ".join(
        f"{k} {rate[k]:.0f} ({min(v):.0f}–{max(v):.0f})" for k, v in rates.items()))
    print("CPU a call in the batches, ms (min–max over rounds): " + ", ".join(
        f"{k} {statistics.median(v):.2f} ({min(v):.2f}–{max(v):.2f})" for k, v in cpu.items()))
    print("\ncommand: sudo bench/targets.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
