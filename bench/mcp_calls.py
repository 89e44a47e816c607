#!/usr/bin/env python3
"""What a tool call through `upm mcp` costs, beside the same call through `upm run`.

A no-op tool (the example config's TextTools.noop: upm's own tiny executable plugin,
every sandbox layer on, audited) called:
- one-shot: `upm run` started once per call (what a parent process pays today);
- through `upm mcp` with the official MCP Python SDK's client (one session, one call at
  a time: what an agent's MCP client pays), and with plain JSON-RPC lines written by this
  script (the server's share, without the SDK's);
then calls/s with 2 calls in flight: the SDK client, plain lines, `upm run --jsonl
--parallel 2`, and two one-shot `upm run` loops side by side. Everything interleaved in
rounds, so that the machine's noise falls on every row alike. With `--baseline UPM`, a
second `upm` binary (say, one built from before `upm mcp` existed) is timed one-shot
beside this one: what `upm mcp` costs `upm run`'s start-up. (Copy both binaries the same way,
e.g. `cp` to /tmp, and pass `--upm` too: a file the linker wrote in place can sit in the page
cache in smaller pieces than a copied one, and take more page faults at every start.)

    cargo build --release
    sudo target/mcp-clients/venv/bin/python bench/mcp_calls.py [--rounds 10] [--calls 20] [--upm UPM] [--baseline UPM]

(Not named mcp.py: the script would shadow the SDK's package.) It needs the SDK: `.ci/run` installs it into target/mcp-clients/venv.
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import anyio
from mcp import Client
from mcp.client.stdio import StdioServerParameters

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UPM = os.path.join(REPO, "target/x86_64-unknown-linux-gnu/release/upm")
CONFIG = os.path.join(REPO, "upm_config.json")
TOOL = "TextTools__noop"
REQUEST = json.dumps({"plugin": "TextTools", "method": "noop", "args": {}}).encode()


CPU = {}


def one_shot(upm, env, record=False):
    """Wall ms of one `upm run`; its CPU time (upm's, its sandbox init's and its plugin's,
    as wait4 reports them: less noisy than the wall clock on a shared machine) goes to CPU
    when `record`."""
    t = time.perf_counter()
    p = subprocess.Popen([upm, "run", "--config", CONFIG], stdin=subprocess.PIPE,
                         stdout=subprocess.DEVNULL, env=env)
    p.stdin.write(REQUEST)
    p.stdin.close()
    _, status, usage = os.wait4(p.pid, 0)
    ms = (time.perf_counter() - t) * 1000.0
    assert status == 0, status
    if record:
        CPU.setdefault(upm, []).append((usage.ru_utime + usage.ru_stime) * 1000.0)
    return ms


class Lines:
    """`upm mcp` spoken to in plain JSON-RPC lines, from threads."""

    def __init__(self, env):
        self.p = subprocess.Popen([UPM, "mcp", "--config", CONFIG, "--parallel", "2"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self.lock = threading.Lock()
        self.waiting = {}
        self.next_id = 0
        threading.Thread(target=self.read, daemon=True).start()
        self.call_raw("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                     "clientInfo": {"name": "bench", "version": "1"}})
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def send(self, msg):
        with self.lock:
            self.p.stdin.write(json.dumps(msg).encode() + b"\n")
            self.p.stdin.flush()

    def read(self):
        for line in self.p.stdout:
            msg = json.loads(line)
            slot = self.waiting.pop(msg["id"])
            slot[1] = msg
            slot[0].set()

    def call_raw(self, method, params):
        with self.lock:
            self.next_id += 1
            i = self.next_id
        slot = [threading.Event(), None]
        self.waiting[i] = slot
        self.send({"jsonrpc": "2.0", "id": i, "method": method, "params": params})
        slot[0].wait()
        return slot[1]

    def call(self):
        t = time.perf_counter()
        r = self.call_raw("tools/call", {"name": TOOL, "arguments": {}})
        ms = (time.perf_counter() - t) * 1000.0
        assert r["result"]["isError"] is False, r
        return ms

    def close(self):
        self.p.stdin.close()
        self.p.wait()


def rate(n, seconds):
    return n / seconds


def in_pairs(n, f):
    """Calls/s of `n` calls, 2 at a time, `f` one call (blocking)."""
    def loop():
        for _ in range(n // 2):
            f()
    t = time.perf_counter()
    threads = [threading.Thread(target=loop) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return rate(n // 2 * 2, time.perf_counter() - t)


def batch(env, n):
    data = b"\n".join([REQUEST] * n) + b"\n"
    t = time.perf_counter()
    out = subprocess.run([UPM, "run", "--jsonl", "--parallel", "2", "--config", CONFIG],
                         input=data, env=env, capture_output=True, check=True)
    secs = time.perf_counter() - t
    assert out.stdout.count(b'"success":true') == n
    return rate(n, secs)


async def main_async(args):
    log = tempfile.NamedTemporaryFile(prefix="upm-bench-mcp-", suffix=".log", delete=False).name
    os.unlink(log)
    env = dict(os.environ, UPM_LOG_FILE=log)
    env.pop("UPM_CONFIG_PATH", None)
    lat = {k: [] for k in ["run", "baseline", "sdk", "lines"]}
    thr = {k: [] for k in ["sdk2", "lines2", "jsonl2", "run2"]}
    server = StdioServerParameters(command=UPM, args=["mcp", "--config", CONFIG, "--parallel", "2"],
                                   env={"UPM_LOG_FILE": log})
    lines = Lines(env)
    async with Client(server) as client:
        await client.list_tools()

        async def sdk_call():
            t = time.perf_counter()
            r = await client.call_tool(TOOL, {})
            assert not r.is_error, r
            return (time.perf_counter() - t) * 1000.0

        # warm-up: page cache, the sessions' first calls
        for _ in range(5):
            one_shot(UPM, env)
            await sdk_call()
            lines.call()
        for r in range(args.rounds):
            for _ in range(args.calls):
                lat["run"].append(one_shot(UPM, env, True))
                if args.baseline:
                    lat["baseline"].append(one_shot(args.baseline, env, True))
                lat["sdk"].append(await sdk_call())
                lat["lines"].append(lines.call())
            n = args.calls * 4
            t = time.perf_counter()
            async with anyio.create_task_group() as tg:
                async def worker():
                    for _ in range(n // 2):
                        await sdk_call()
                tg.start_soon(worker)
                tg.start_soon(worker)
            thr["sdk2"].append(rate(n, time.perf_counter() - t))
            thr["lines2"].append(in_pairs(n, lines.call))
            thr["jsonl2"].append(batch(env, n))
            thr["run2"].append(in_pairs(n, lambda: one_shot(UPM, env)))
            print(f"round {r + 1}/{args.rounds}", file=sys.stderr)
    lines.close()
    os.unlink(log)

    def row(name, v, cpu=None):
        v = sorted(v)
        c = f"{statistics.median(cpu):.2f}" if cpu else ""
        return f"| {name} | {statistics.median(v):.2f} | {v[int(len(v) * 0.9)]:.2f} | {c} |"

    date = datetime.date.today().isoformat()
    n = args.rounds * args.calls
    print(f"\n{date}: a no-op tool call (TextTools.noop), {n} calls each, interleaved in {args.rounds} rounds\n")
    print("| how | median ms | p90 ms | CPU ms (median) |")
    print("| --- | ---: | ---: | ---: |")
    print(row("`upm run`, one process per call", lat["run"], CPU.get(UPM)))
    if args.baseline:
        print(row(f"`upm run`, baseline binary ({args.baseline})", lat["baseline"], CPU.get(args.baseline)))
    print(row("`upm mcp`, MCP Python SDK client (`call_tool`)", lat["sdk"]))
    print(row("`upm mcp`, plain JSON-RPC lines", lat["lines"]))
    print(f"\ncalls/s with 2 in flight ({args.calls * 4} calls a round; median of {args.rounds} rounds, min–max)\n")
    print("| how | calls/s |")
    print("| --- | ---: |")
    for k, name in [("sdk2", "`upm mcp`, MCP Python SDK client, 2 tasks"),
                    ("lines2", "`upm mcp`, plain JSON-RPC lines, 2 threads"),
                    ("jsonl2", "`upm run --jsonl --parallel 2`"),
                    ("run2", "`upm run`, 2 one-shot loops side by side")]:
        v = thr[k]
        print(f"| {name} | {statistics.median(v):.0f} ({min(v):.0f}–{max(v):.0f}) |")
    cmd = "sudo target/mcp-clients/venv/bin/python bench/mcp_calls.py " + " ".join(sys.argv[1:])
    print(f"\ncommand: {cmd.strip()}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--upm", help="the upm binary to measure (default: the release build)")
    ap.add_argument("--baseline", help="another upm binary to time one-shot beside this one")
    args = ap.parse_args()
    global UPM
    UPM = args.upm or UPM
    anyio.run(main_async, args)


if __name__ == "__main__":
    main()
