#!/usr/bin/python3
"""Issue 7's one-call benchmark: upm's full call vs bubblewrap's bare sandbox vs a bare exec.

Runs the three commands interleaved (A, B, C, A, B, C, ...) so that the noise of this
shared machine hits them alike, and prints medians, p90 and the ratios in a table.
upm's call is the real thing: config load, whitelist, schema validation, every native
layer on, durable audit (two fsync'd entries), plugin = /bin/true (a tiny no-op executable).
Beside them runs bench/floor.c (built with `cc`): only what the kernel charges for the parts
of a call nothing can skip — two durable lines, a clone into new namespaces, an exec.

    sudo bench/call.py [--runs 200]      (after `cargo build --release`; installs bwrap if missing)
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import apt
import floor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UPM = os.path.join(ROOT, "target/x86_64-unknown-linux-gnu/release/upm")
# The tiny no-op plugin: the same program bwrap runs. It ignores its stdin and prints
# nothing, which upm's protocol reads as result `null`.
NOOP = "/bin/true"


def setup_config(d):
    os.chmod(d, 0o755)
    shutil.copytree(os.path.join(ROOT, "policies"), os.path.join(d, "policies"))
    shutil.copytree(os.path.join(ROOT, "schemas"), os.path.join(d, "schemas"))
    cfg = {
        "plugins": {
            "Noop": {"command": [NOOP], "methods": {"noop": {"schema": "schemas/empty.json"}}}
        }
    }
    path = os.path.join(d, "upm_config.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    # The same, with each call's private directory on tmpfs (an operator's choice).
    tmpfs = dict(cfg, workdir_root="/dev/shm")
    with open(os.path.join(d, "upm_config_tmpfs.json"), "w") as f:
        json.dump(tmpfs, f)
    return path


def timed(argv, stdin):
    t = time.perf_counter()
    r = subprocess.run(argv, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return (time.perf_counter() - t) * 1000.0, r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: upm's full sandbox (uid switch) is what is measured")
    bwrap = apt.ensure("bwrap", "bubblewrap")
    if not os.path.exists("/usr/bin/time"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "time"], check=True)
    d = tempfile.mkdtemp(prefix="upm-bench-", dir="/tmp")
    config = setup_config(d)
    request = b'{"plugin": "Noop", "method": "noop", "args": {}}'
    cases = [
        ("upm run (full sandbox, audited)", [UPM, "run", "--config", config], request),
        ("bwrap --ro-bind / / --unshare-all --die-with-parent /bin/true",
         [bwrap, "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "/bin/true"], b""),
        ("bare exec of the no-op plugin (/bin/true)", [NOOP], b'{"method": "noop"}'),
    ]
    floor_exe = floor.build(d)
    if floor_exe:
        cases.append(("floor: only the kernel's share of a call (bench/floor.c: two durable "
                      "lines, a clone into new user, PID, network and IPC namespaces, exec)",
                      [floor_exe, "call", os.path.join(d, "floor.log")], b""))
    if os.path.isdir("/dev/shm"):
        cases.append(("upm run, private directory on tmpfs (workdir_root: /dev/shm)",
                      [UPM, "run", "--config", config.replace("upm_config.json",
                                                              "upm_config_tmpfs.json")],
                      request))
    # Warm up, and check that upm really ran with every layer in force.
    _, r = timed(cases[0][1], request)
    out = json.loads(r.stdout)
    if not out.get("success"):
        sys.exit(f"upm call failed: {out}")
    layers = out["data"]["sandbox"]["layers"]
    states = {k: v["state"] for k, v in layers.items()}
    if any(s != "enforced" for s in states.values()):
        sys.exit(f"not every layer in force: {states}")
    samples = {name: [] for name, _, _ in cases}
    for _ in range(args.runs):
        for name, argv, stdin in cases:
            ms, r = timed(argv, stdin)
            if r.returncode != 0:
                sys.exit(f"{name} failed: {r.stderr[:300]!r}")
            samples[name].append(ms)
    # upm's own peak RSS for one call. A child's ru_maxrss includes what it had before
    # exec (a fork of this Python process), so measure through GNU time, a small exec'ing
    # parent: the figure is max(time, upm, and upm's children), all small.
    timed_run = subprocess.run(["/usr/bin/time", "-f", "%M", UPM, "run", "--config", config],
                               input=request, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    upm_rss_kb = int(timed_run.stderr.decode().strip().splitlines()[-1])
    shutil.rmtree(d, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in samples.items()}
    bw = med[cases[1][0]]
    print(f"\n{args.runs} runs each, interleaved; times in ms\n")
    print("| command | median | p90 | ratio to bwrap |")
    print("| --- | ---: | ---: | ---: |")
    for name, _, _ in cases:
        v = sorted(samples[name])
        p90 = v[int(len(v) * 0.9) - 1]
        print(f"| {name} | {med[name]:.2f} | {p90:.2f} | {med[name] / bw:.2f} |")
    print(f"\nupm's peak RSS for one call (GNU time: max of upm and its children): {upm_rss_kb / 1024:.1f} MB")
    print(f"goal: upm ≤ 0.6 × bwrap → {'MET' if med[cases[0][0]] <= 0.6 * bw else 'NOT MET'}; "
          f"peak RSS ≤ 10 MB → {'MET' if upm_rss_kb <= 10 * 1024 else 'NOT MET'}")
    print("\ncommand: sudo bench/call.py --runs", args.runs)


if __name__ == "__main__":
    main()
