#!/usr/bin/env python3
"""What a per-call grant costs a one-shot call (docs/grants.md).

The example's no-op plugin (upm-texttools noop: every sandbox layer on, audited) called
through `upm run`, with args that grant nothing, one read grant (a file), one write grant
(a directory: upm opens it, the init clones and attaches a mount), and one of each.
Interleaved in rounds, so that the machine's noise falls on every row alike; medians of
wall time and of CPU time (upm's, its init's and the plugin's, as wait4 reports them).

    cargo build --release
    sudo python3 bench/grants.py [--rounds 10] [--calls 20]
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UPM = os.path.join(REPO, "target/x86_64-unknown-linux-gnu/release/upm")
PLUGIN = os.path.join(REPO, "target/x86_64-unknown-linux-gnu/release/upm-texttools")


def setup(d):
    roots = os.path.join(d, "roots")
    os.makedirs(os.path.join(roots, "proj"))
    with open(os.path.join(roots, "proj", "a.txt"), "w") as f:
        f.write("alpha")
    os.makedirs(os.path.join(d, "schemas"))
    schema = {"type": "object", "properties": {
        "r": {"type": "string", "x-upm-grant": "read"},
        "w": {"type": "string", "x-upm-grant": "write"}}, "additionalProperties": False}
    with open(os.path.join(d, "schemas", "noop.json"), "w") as f:
        json.dump(schema, f)
    config = {"plugins": {"T": {"command": [PLUGIN],
                                "methods": {"noop": {"schema": "schemas/noop.json"}},
                                "grants_within": [roots]}}}
    path = os.path.join(d, "upm_config.json")
    with open(path, "w") as f:
        json.dump(config, f)
    return path, roots


def call(config, args):
    req = json.dumps({"plugin": "T", "method": "noop", "args": args}).encode()
    t = time.perf_counter()
    p = subprocess.Popen([UPM, "run", "--config", config], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE)
    p.stdin.write(req)
    p.stdin.close()
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    ms = (time.perf_counter() - t) * 1000.0
    assert status == 0, out
    return ms, (usage.ru_utime + usage.ru_stime) * 1000.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--calls", type=int, default=20)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(dir="/tmp") as d:
        os.chmod(d, 0o755)
        config, roots = setup(d)
        a_txt = os.path.join(roots, "proj", "a.txt")
        proj = os.path.join(roots, "proj")
        rows = [("no grant", {}), ("a read grant (file)", {"r": a_txt}),
                ("a write grant (directory)", {"w": proj}),
                ("one of each", {"r": a_txt, "w": proj})]
        wall = {name: [] for name, _ in rows}
        cpu = {name: [] for name, _ in rows}
        for name, args in rows:
            call(config, args)  # warm up
        for _ in range(a.rounds):
            for name, args in rows:
                for _ in range(a.calls):
                    w, c = call(config, args)
                    wall[name].append(w)
                    cpu[name].append(c)
        base_w = statistics.median(wall["no grant"])
        base_c = statistics.median(cpu["no grant"])
        print(f"{datetime.date.today()}, load {os.getloadavg()[0]:.1f}, "
              f"{a.rounds} rounds x {a.calls} calls per row")
        print("| args | wall ms (median) | vs no grant | CPU ms (median) | vs no grant |")
        print("| --- | --- | --- | --- | --- |")
        for name, _ in rows:
            w, c = statistics.median(wall[name]), statistics.median(cpu[name])
            print(f"| {name} | {w:.2f} | {w / base_w:.2f} x | {c:.2f} | {c / base_c:.2f} x |")


if __name__ == "__main__":
    main()
