#!/usr/bin/python3
"""What checking every schema of the config costs one call (issue 19: an invalid config runs
nothing, so each call checks all of its schema files, not only the called method's).

Runs `upm run` on two configs, interleaved: one method with one schema, and the same plus N
methods with a schema file each (copies of schemas/text.json), and prints medians, p90 and the
difference per schema in a table.

    sudo bench/schemas.py [--runs 200] [--schemas 30]      (after `cargo build --release`)
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UPM = os.path.join(ROOT, "target/x86_64-unknown-linux-gnu/release/upm")
REQUEST = b'{"plugin": "Noop", "method": "noop", "args": {}}'


def write_configs(d, n):
    os.chmod(d, 0o755)
    shutil.copytree(os.path.join(ROOT, "policies"), os.path.join(d, "policies"))
    os.mkdir(os.path.join(d, "schemas"))
    shutil.copy(os.path.join(ROOT, "schemas/empty.json"), os.path.join(d, "schemas"))
    for i in range(n):
        shutil.copy(os.path.join(ROOT, "schemas/text.json"), os.path.join(d, f"schemas/t{i}.json"))
    one = {"noop": {"schema": "schemas/empty.json"}}
    many = dict(one, **{f"m{i}": {"schema": f"schemas/t{i}.json"} for i in range(n)})
    paths = []
    for name, methods in (("one", one), ("many", many)):
        path = os.path.join(d, f"{name}.json")
        with open(path, "w") as f:
            json.dump({"plugins": {"Noop": {"command": ["/bin/true"], "methods": methods}}}, f)
        paths.append(path)
    return paths


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--schemas", type=int, default=30)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(dir="/tmp") as d:
        one, many = write_configs(d, a.schemas)
        times = {one: [], many: []}
        for _ in range(a.runs):
            for c in times:
                t = time.perf_counter()
                r = subprocess.run([UPM, "run", "--config", c], input=REQUEST, capture_output=True)
                times[c].append((time.perf_counter() - t) * 1000.0)
                if r.returncode != 0:
                    raise SystemExit(f"upm failed: {r.stdout!r} {r.stderr!r}")
        med = {c: statistics.median(v) for c, v in times.items()}
        p90 = {c: sorted(v)[int(len(v) * 0.9)] for c, v in times.items()}
        print(f"| config ({a.runs} one-shot calls each, interleaved) | median ms | p90 ms |")
        print("| --- | ---: | ---: |")
        print(f"| 1 method, 1 schema | {med[one]:.2f} | {p90[one]:.2f} |")
        print(f"| + {a.schemas} methods, a schema file each | {med[many]:.2f} | {p90[many]:.2f} |")
        per = (med[many] - med[one]) * 1000.0 / a.schemas
        print(f"\nper extra schema: {per:.0f} µs (median difference / {a.schemas})")


if __name__ == "__main__":
    main()
