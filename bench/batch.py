#!/usr/bin/python3
"""Batch throughput: no-op calls per second through `upm run --jsonl [--parallel N]`,
beside one-shot `upm run` processes started in a loop.

Every call is the real thing: whitelist, schema validation, its own sandbox with every
native layer (checked on the first result), two fsync'd audit entries. The plugin is
/bin/true. The cases run interleaved, round after round, so the noise of this shared
machine hits them alike; the table shows the median rate over the rounds. bench/floor.c
(built with `cc`) runs beside them: the same namespaces and exec per call, and nothing else.

upm's peak RSS is VmHWM from /proc/PID/status, read after the last result arrived but
before stdin is closed, so it covers the whole batch. (wait4's ru_maxrss is not used: a
child's figure includes the memory of the Python process it was forked from.)

    sudo bench/batch.py [--calls 1000] [--oneshot 300] [--rounds 3]   (after `cargo build --release`)
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import floor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UPM = os.path.join(ROOT, "target/x86_64-unknown-linux-gnu/release/upm")
REQUEST = {"plugin": "True", "method": "noop", "args": {}}


def setup_config(d):
    os.chmod(d, 0o755)
    shutil.copytree(os.path.join(ROOT, "policies"), os.path.join(d, "policies"))
    shutil.copytree(os.path.join(ROOT, "schemas"), os.path.join(d, "schemas"))
    cfg = {
        "plugins": {
            "True": {"command": ["/bin/true"], "methods": {"noop": {"schema": "schemas/empty.json"}}}
        }
    }
    path = os.path.join(d, "upm_config.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path


def vm_hwm_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def check_layers(result):
    layers = result["data"]["sandbox"]["layers"]
    states = {k: v["state"] for k, v in layers.items()}
    if any(s != "enforced" for s in states.values()):
        sys.exit(f"not every layer in force: {states}")


def fdatasync_ms(d, n=50):
    """Median latency of a 500-byte append + fdatasync in `d`: what each audit entry costs."""
    path = os.path.join(d, "fsync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        os.write(fd, b"x" * 500 + b"\n")
        os.fdatasync(fd)
        ts.append((time.perf_counter() - t) * 1000.0)
    os.close(fd)
    os.unlink(path)
    return statistics.median(ts)


def run_batch(config, calls, parallel, env=None):
    """One batch of `calls` requests; returns (seconds, peak RSS kB)."""
    lines = b"".join(
        json.dumps(dict(REQUEST, request_id=f"b{i}")).encode() + b"\n" for i in range(calls)
    )
    t = time.perf_counter()
    p = subprocess.Popen([UPM, "run", "--jsonl", "--parallel", str(parallel), "--config", config],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=env)
    writer = threading.Thread(target=p.stdin.write, args=(lines,))
    writer.start()
    results = []
    for _ in range(calls):
        line = p.stdout.readline()
        if not line:
            sys.exit(f"upm --jsonl ended early: {p.stderr.read()[:500]!r}")
        results.append(line)
    hwm = vm_hwm_kb(p.pid)  # every call is done; upm is waiting for more input
    writer.join()
    p.stdin.close()
    rest = p.stdout.read()
    code = p.wait()
    seconds = time.perf_counter() - t
    if code != 0 or rest.strip():
        sys.exit(f"upm --jsonl exited {code} with extra output {rest[:200]!r}")
    docs = [json.loads(r) for r in results]
    bad = [d for d in docs if not d.get("success")]
    if bad:
        sys.exit(f"{len(bad)} calls failed, e.g. {bad[0]}")
    if len({d["request_id"] for d in docs}) != calls:
        sys.exit("request ids lost or repeated")
    check_layers(docs[0])
    return seconds, hwm


def run_oneshots(config, calls):
    req = json.dumps(REQUEST).encode()
    t = time.perf_counter()
    for _ in range(calls):
        r = subprocess.run([UPM, "run", "--config", config], input=req,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if r.returncode != 0:
            sys.exit(f"upm run failed: {r.stdout[:300]!r} {r.stderr[:300]!r}")
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=1000, help="calls per batch")
    ap.add_argument("--oneshot", type=int, default=300, help="one-shot calls per round")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: upm's full sandbox (uid switch) is what is measured")
    d = tempfile.mkdtemp(prefix="upm-bench-", dir="/tmp")
    config = setup_config(d)
    # Warm up, and check every layer on a one-shot call too.
    r = subprocess.run([UPM, "run", "--config", config], input=json.dumps(REQUEST).encode(),
                       stdout=subprocess.PIPE)
    check_layers(json.loads(r.stdout))

    load_before = " ".join(f"{x:.1f}" for x in os.getloadavg())
    parallels = [1, 2, 4]
    rates = {p: [] for p in parallels}
    hwms = {p: [] for p in parallels}
    oneshot = []
    # Diagnostic only: the same batches with the audit log on tmpfs, where fdatasync is
    # free, to show how much of a call is the two durable audit appends.
    shm_dir = tempfile.mkdtemp(prefix="upm-bench-audit-", dir="/dev/shm")
    shm_env = dict(os.environ, UPM_LOG_FILE=os.path.join(shm_dir, "entrypoint.log"))
    shm_rates = {p: [] for p in parallels}
    sync_ms = []
    # Reference: the kernel alone, the same namespaces and exec per call, nothing else.
    floor_exe = floor.build(d)
    floor_rates = {p: [] for p in parallels}
    # The same, with the kernel's share of the layers (Landlock, no_new_privs, seccomp).
    layer_rates = {p: [] for p in parallels}
    for _ in range(args.rounds):
        sync_ms.append(fdatasync_ms(d))
        for p in parallels:
            s, hwm = run_batch(config, args.calls, p)
            rates[p].append(args.calls / s)
            hwms[p].append(hwm)
            s, _ = run_batch(config, args.calls, p, env=shm_env)
            shm_rates[p].append(args.calls / s)
            if floor_exe:
                out = subprocess.run([floor_exe, "batch", str(p), str(args.calls // p)],
                                     stdout=subprocess.PIPE, check=True).stdout
                floor_rates[p].append(float(out))
                out = subprocess.run([floor_exe, "batch", str(p), str(args.calls // p), "layers"],
                                     stdout=subprocess.PIPE, check=True).stdout
                layer_rates[p].append(float(out))
        oneshot.append(args.oneshot / run_oneshots(config, args.oneshot))
    audit_lines = sum(1 for _ in open(os.path.join(d, "entrypoint.log")))
    shutil.rmtree(d, ignore_errors=True)
    shutil.rmtree(shm_dir, ignore_errors=True)

    base = statistics.median(oneshot)
    print(f"\n{args.rounds} rounds, interleaved; plugin /bin/true under every layer; "
          f"{os.cpu_count()} CPUs\n")
    print("| mode | calls per run | calls/s (median) | min – max | vs one-shot | upm peak RSS |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    def row(mode, calls, values, rss="–"):
        med = statistics.median(values)
        print(f"| {mode} | {calls} | {med:.0f} | {min(values):.0f} – {max(values):.0f} | "
              f"{med / base:.2f} | {rss} |")

    row("one-shot `upm run` in a loop", args.oneshot, oneshot)
    for p in parallels:
        row(f"`upm run --jsonl --parallel {p}`", args.calls, rates[p],
            f"{max(hwms[p]) / 1024:.1f} MB")
    for p in parallels:
        row(f"diagnostic: `--parallel {p}`, audit log on tmpfs (not durable)", args.calls,
            shm_rates[p])
    workers = lambda p: f"{p} worker{'s' if p > 1 else ''}"
    for p in parallels if floor_exe else []:
        row(f"floor: the kernel's share alone, {workers(p)} (bench/floor.c: clone into new user, "
            f"PID, network and IPC namespaces, exec /bin/true, wait)", args.calls // p * p,
            floor_rates[p])
    for p in parallels if floor_exe else []:
        row(f"floor with layers, {workers(p)} (the same, plus a Landlock ruleset per call, "
            f"no_new_privs and a 206-instruction seccomp filter)", args.calls // p * p,
            layer_rates[p])
    best = max(statistics.median(v) for v in rates.values())
    print(f"\n{audit_lines} audit entries written on disk (2 per call); append + fdatasync "
          f"on that disk during the runs: median {statistics.median(sync_ms):.2f} ms "
          f"({min(sync_ms):.2f} – {max(sync_ms):.2f}); load average before: {load_before}.")
    print(f"goal: ≥ 1,000 calls/s on 2 cores → best batch rate {best:.0f} calls/s: "
          f"{'MET' if best >= 1000 else 'NOT MET'}")
    print(f"\ncommand: sudo bench/batch.py --calls {args.calls} --oneshot {args.oneshot} "
          f"--rounds {args.rounds}")


if __name__ == "__main__":
    main()
