#!/usr/bin/python3
"""Output capture: a sandboxed plugin prints 1 GiB as fast as it can; upm keeps
stdout + stderr up to the method's `output_bytes` cap, then kills the plugin and
answers `limit_exceeded` / limit "output" with the kept bytes in the result.

For each cap it reports:
- capture throughput: bytes kept / upm's `data.usage.wall_ms` (spawn to plugin reaped),
  and the same with the writer's start-up subtracted (a run printing nothing);
- the whole call seen from outside: start of `upm run` to the first byte of its result
  (capture + building the result) and to its exit (plus sending the result to us);
- upm's peak RSS: VmHWM from /proc/PID/status, read once upm has started writing its
  result (all of it is built by then, so the peak is behind it) and before we read it.
  (wait4's ru_maxrss is not used: a child's figure includes the memory of the Python
  process it was forked from, which here holds earlier results.)

To tell where capture time goes, the same writer also runs outside upm, into plain
readers: one discarding 64 KiB reads (the raw pipe), and one keeping every byte
in memory with upm's 64 KiB pipe and reads, then with a 1 MiB pipe and 1 MiB reads.

    sudo bench/output.py [--runs 3]   (after `cargo build --release`)
"""
import argparse
import fcntl
import json
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UPM = os.path.join(ROOT, "target/x86_64-unknown-linux-gnu/release/upm")
MiB = 1 << 20
TOTAL = 1 << 30
CAPS = [64 * MiB, 512 * MiB]

# The plugin: writes `total` bytes of "a" to fd 1 in `chunk`-byte writes.
WRITER = """#!/usr/bin/python3
import json, os, sys
a = json.load(sys.stdin)["args"] if len(sys.argv) < 2 else {"total": int(sys.argv[1]), "chunk": int(sys.argv[2])}
buf = memoryview(b"a" * a["chunk"])
left = a["total"]
while left > 0:
    n = os.write(1, buf[:min(left, len(buf))])
    left -= n
"""

# A plain reader for the baselines: reads stdin with the given pipe size and read size,
# keeping everything in one preallocated buffer (as upm's Vec does) or discarding it.
READER = """import fcntl, os, sys, time
pipe, chunk, keep, total = (int(x) for x in sys.argv[1:5])
if pipe:
    fcntl.fcntl(0, 1031, pipe)  # F_SETPIPE_SZ
store = bytearray(total if keep else chunk)
mv = memoryview(store)
got = 0
t = time.perf_counter()
while True:
    dst = mv[got:got + chunk] if keep else mv[:chunk]
    n = os.readv(0, [dst])
    if n == 0:
        break
    got += n
print(got, time.perf_counter() - t)
"""


def setup(d):
    os.chmod(d, 0o755)
    shutil.copytree(os.path.join(ROOT, "policies"), os.path.join(d, "policies"))
    writer = os.path.join(d, "writer.py")
    with open(writer, "w") as f:
        f.write(WRITER)
    os.chmod(writer, 0o755)
    plugins = {}
    for cap in CAPS + [TOTAL * 2]:
        plugins[f"Flood{cap // MiB}"] = {
            "command": [writer],
            "allowed_methods": ["flood"],
            "sandbox": {"limits": {"output_bytes": cap, "timeout_ms": 120000}},
        }
    path = os.path.join(d, "upm_config.json")
    with open(path, "w") as f:
        json.dump({"require_schemas": False, "plugins": plugins}, f)
    return path, writer


def vm_hwm_kb(pid):
    """None once the process has exited (a zombie has no memory left to report)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


def strip_text(out):
    """The result without the (huge, all-"a") stdout text; returns (doc, text length)."""
    key = b'"stdout":{"text":"'
    i = out.find(key)
    if i < 0:
        return json.loads(out), 0
    i += len(key)
    j = out.find(b'"', i)
    return json.loads(out[:i] + out[j:]), j - i


def upm_call(config, plugin, total, chunk=MiB):
    req = json.dumps({"plugin": plugin, "method": "flood",
                      "args": {"total": total, "chunk": chunk}}).encode()
    t = time.perf_counter()
    p = subprocess.Popen([UPM, "run", "--config", config], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdin.write(req)
    p.stdin.close()
    select.select([p.stdout], [], [])
    first = time.perf_counter() - t
    hwm = vm_hwm_kb(p.pid)
    out = p.stdout.read()
    p.wait()
    total_s = time.perf_counter() - t
    doc, kept = strip_text(out)
    layers = doc["data"].get("sandbox", {}).get("layers", {})
    states = {k: v["state"] for k, v in layers.items()}
    if not states or any(s != "enforced" for s in states.values()):
        sys.exit(f"not every layer in force: {states} {doc['data'].get('error')}")
    return {
        "doc": doc,
        "kept": kept,
        "wall_s": doc["data"]["usage"]["wall_ms"] / 1000.0,
        "first_s": first,
        "total_s": total_s,
        "hwm_kb": hwm,
    }


def baseline(writer, pipe, chunk, keep, total):
    """The writer into a plain reader (no sandbox); returns bytes/s of the reader."""
    w = subprocess.Popen(["/usr/bin/python3", writer, str(total), str(MiB)], stdout=subprocess.PIPE)
    r = subprocess.run(["/usr/bin/python3", "-c", READER, str(pipe), str(chunk), str(int(keep)),
                        str(total)], stdin=w.stdout, stdout=subprocess.PIPE, check=True)
    w.stdout.close()
    w.wait()
    got, secs = r.stdout.split()
    return int(got) / float(secs)


def gbps(bytes_, secs):
    return bytes_ / secs / 1e9 if secs > 0 else float("inf")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: upm's full sandbox (uid switch) is what is measured")
    d = tempfile.mkdtemp(prefix="upm-bench-", dir="/tmp")
    config, writer = setup(d)
    load_before = " ".join(f"{x:.1f}" for x in os.getloadavg())

    empty, per_cap = [], {cap: [] for cap in CAPS}
    base = {k: [] for k in ("pipe", "keep64k", "keep1m")}
    for _ in range(args.runs):
        r = upm_call(config, f"Flood{TOTAL * 2 // MiB}", 0)
        if not r["doc"]["success"]:
            sys.exit(f"empty run failed: {r['doc']}")
        empty.append(r["wall_s"])
        for cap in CAPS:
            r = upm_call(config, f"Flood{cap // MiB}", TOTAL)
            data = r["doc"]["data"]
            if data.get("code") != "limit_exceeded" or data.get("limit") != "output":
                sys.exit(f"cap {cap}: expected limit output, got {data.get('code')} {data.get('error')}")
            if r["kept"] != cap:
                sys.exit(f"cap {cap}: kept {r['kept']} bytes")
            per_cap[cap].append(r)
        base["pipe"].append(baseline(writer, 0, 64 * 1024, False, TOTAL))
        base["keep64k"].append(baseline(writer, 0, 64 * 1024, True, 512 * MiB))
        base["keep1m"].append(baseline(writer, MiB, MiB, True, 512 * MiB))
    shutil.rmtree(d, ignore_errors=True)

    startup = statistics.median(empty)
    med = statistics.median
    print(f"\n{args.runs} runs each, interleaved; the plugin (/usr/bin/python3, 1 MiB writes) "
          f"prints 1 GiB under every sandbox layer; GB = 10^9 bytes; load average before: "
          f"{load_before}\n")
    print("| output_bytes cap | kept | upm wall_ms | capture GB/s | GB/s without writer start-up "
          "| to first result byte | to exit | upm peak RSS | RSS − cap |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    verdicts = []
    for cap in CAPS:
        rs = per_cap[cap]
        wall = med([r["wall_s"] for r in rs])
        hwm = max(r["hwm_kb"] for r in rs) * 1024
        rate = gbps(cap, wall)
        net = gbps(cap, wall - startup)
        print(f"| {cap // MiB} MiB | {rs[0]['kept'] / MiB:.0f} MiB | {wall * 1000:.0f} ms | "
              f"{rate:.2f} | {net:.2f} | {med([r['first_s'] for r in rs]) * 1000:.0f} ms | "
              f"{med([r['total_s'] for r in rs]) * 1000:.0f} ms | {hwm / MiB:.0f} MiB | "
              f"{(hwm - cap) / MiB:+.0f} MiB |")
        verdicts.append((cap, hwm <= cap + 10 * MiB, net >= 1.0))
    print(f"\nwriter start-up (the same plugin printing nothing, upm wall_ms): {startup * 1000:.0f} ms")
    print("\nthe same writer without upm, into a plain reader (no sandbox):\n")
    print("| reader | GB/s (median) |")
    print("| --- | ---: |")
    print(f"| 64 KiB pipe, 64 KiB reads, discard | {med(base['pipe']) / 1e9:.2f} |")
    print(f"| 64 KiB pipe, 64 KiB reads, keep 512 MiB in memory | {med(base['keep64k']) / 1e9:.2f} |")
    print(f"| 1 MiB pipe, 1 MiB reads, keep 512 MiB in memory | {med(base['keep1m']) / 1e9:.2f} |")
    print()
    for cap, mem_ok, rate_ok in verdicts:
        print(f"cap {cap // MiB} MiB: peak RSS ≤ cap + 10 MB → {'MET' if mem_ok else 'NOT MET'}; "
              f"capture ≥ 1 GB/s → {'MET' if rate_ok else 'NOT MET'}")
    print(f"\ncommand: sudo bench/output.py --runs {args.runs}")


if __name__ == "__main__":
    main()
