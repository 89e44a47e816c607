#!/usr/bin/python3
"""Issue 22's egress benchmark: what the allowlist's proxy costs, side by side in one run.

Three tables, every case interleaved with the others (A, B, C, A, B, C, ...) so that the
noise of this shared machine hits them alike; medians:

1. A download of --mb MB (default 100) from a server on the host's 127.0.0.1 (sendfile),
   by curl inside upm's sandbox: directly (`"network": true`), through the proxy as plain
   HTTP, and through a CONNECT tunnel (`curl -p`); plus curl on the host, outside any
   sandbox, for reference. The time is curl's own (`%{time_total}`): the call around it
   is not counted.
2. Connection set-up: a plugin opens --connections connections one after another, each
   one GET of 1 byte and close, directly and through the proxy (plain HTTP and CONNECT);
   the median per connection and what the proxy adds (its decision, its connection to
   the host, the per-connection audit entry on another thread).
3. One whole call of a no-op plugin (/bin/true): `"network": false`, an allowlist (the
   proxy starts, nothing connects), and `"network": true`: what starting the proxy costs
   a call, and that calls without an allowlist do not pay it.

   With --baseline BIN (upm built without the egress code, e.g. from the commit before
   it), that binary's call without an allowlist runs beside them: what the egress code
   costs a call that does not use it (a larger binary, nothing else started).

    sudo bench/egress.py [--mb 100] [--runs 7] [--connections 200] [--calls 60] [--baseline BIN]
    (after `cargo build --release`)
"""
import argparse
import http.server
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UPM = os.path.join(ROOT, "target/x86_64-unknown-linux-gnu/release/upm")
CURL = "/usr/bin/curl"

CURL_PLUGIN = r"""#!/usr/bin/python3
import json, subprocess, sys
args = json.load(sys.stdin)["args"]
p = subprocess.run(["/usr/bin/curl", "-sS", "-o", "/dev/null", "-w", "%{time_total} %{size_download}",
                    *args["curl"]], capture_output=True, text=True)
seconds, size = p.stdout.split() if p.returncode == 0 else ("0", "0")
print(json.dumps({"exit": p.returncode, "stderr": p.stderr, "seconds": float(seconds), "bytes": int(size)}))
"""

CONNECT_PLUGIN = r"""#!/usr/bin/python3
import json, socket, sys, time
args = json.load(sys.stdin)["args"]
port, n, how = args["port"], args["n"], args["how"]
times = []
for _ in range(n):
    t = time.perf_counter()
    if how == "direct":
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /small HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    elif how == "http":
        s = socket.create_connection(("127.0.0.1", 3128))
        s.sendall(f"GET http://127.0.0.1:{port}/small HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    else:
        s = socket.create_connection(("127.0.0.1", 3128))
        s.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(4096)
        s.sendall(b"GET /small HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    if not data.endswith(b"x"):
        sys.exit(f"unexpected answer: {data[:200]!r}")
    times.append((time.perf_counter() - t) * 1000.0)
print(json.dumps(times))
"""


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    big = None

    def do_GET(self):
        if self.path == "/big":
            size = os.path.getsize(self.big)
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.send_header("Connection", "close")
            self.end_headers()
            with open(self.big, "rb") as f:
                self.connection.sendfile(f)
        else:
            self.send_response(200)
            self.send_header("Content-Length", "1")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"x")
        self.close_connection = True

    def log_message(self, *a):
        pass


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def call(config, plugin, method, args, upm=UPM):
    req = json.dumps({"plugin": plugin, "method": method, "args": args}).encode()
    t = time.perf_counter()
    r = subprocess.run([upm, "run", "--config", config], input=req, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    ms = (time.perf_counter() - t) * 1000.0
    out = json.loads(r.stdout)
    if not out.get("success"):
        sys.exit(f"{plugin}.{method} failed: {r.stdout[:2000]!r}")
    return out["data"].get("result"), ms


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--connections", type=int, default=200)
    ap.add_argument("--calls", type=int, default=60)
    ap.add_argument("--baseline", help="another upm binary: its call without an allowlist runs beside")
    ap.add_argument("--tables", default="1,2,3", help="which tables to run (default all: 1,2,3)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: upm's full sandbox (uid switch) is what is measured")
    if not os.path.exists(UPM):
        sys.exit(f"build first: cargo build --release ({UPM} is missing)")

    d = tempfile.mkdtemp(prefix="upm-bench-egress-", dir="/tmp")
    os.chmod(d, 0o755)
    try:
        run(d, args)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def run(d, args):
    big = os.path.join(d, "big")
    with open(big, "wb") as f:
        f.truncate(args.mb << 20)
    Handler.big = big
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()

    shutil.copytree(os.path.join(ROOT, "policies"), os.path.join(d, "policies"))
    for name, text in [("curl.py", CURL_PLUGIN), ("connect.py", CONNECT_PLUGIN)]:
        p = os.path.join(d, name)
        with open(p, "w") as f:
            f.write(text)
        os.chmod(p, 0o755)
    allow = {"allow": [f"127.0.0.1:{port}"]}
    limits = {"timeout_ms": 600000, "cpu_seconds": 600}

    def plugins(network):
        return {
            "curl": {"command": ["./curl.py"], "allowed_methods": ["get"]},
            "connect": {"command": ["./connect.py"], "allowed_methods": ["loop"]},
            "noop": {"command": ["/bin/true"], "allowed_methods": ["noop"]},
        }

    configs = {}
    for name, network in [("none", False), ("allow", allow), ("host", True)]:
        cfg = {"require_schemas": False,
               "sandbox": {"network": network, "limits": limits},
               "plugins": plugins(network)}
        path = os.path.join(d, f"upm_config_{name}.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        configs[name] = path

    url = f"http://127.0.0.1:{port}/big"
    print(f"# egress benchmark, {time.strftime('%Y-%m-%d %H:%M %Z')}, {os.uname().release}, "
          f"{os.cpu_count()} CPUs; upm {UPM}")

    tables = set(args.tables.split(","))
    if "1" in tables:
        download(args, configs, url)
    if "2" in tables:
        setup(args, configs, port)
    if "3" in tables:
        one_call(args, configs)
    server.shutdown()


def download(args, configs, url):
    cases = [
        ("curl on the host, no sandbox", None),
        ("upm, direct (\"network\": true)", ("host", [url])),
        ("upm, through the proxy: plain HTTP", ("allow", [url])),
        ("upm, through the proxy: CONNECT tunnel (curl -p)", ("allow", ["-p", url])),
    ]
    seconds = {name: [] for name, _ in cases}
    for _ in range(args.runs):
        for name, case in cases:
            if case is None:
                r = subprocess.run([CURL, "-sS", "--noproxy", "*", "-o", "/dev/null", "-w",
                                    "%{time_total}", url], capture_output=True, text=True, check=True)
                seconds[name].append(float(r.stdout))
            else:
                config, curl = case
                result, _ = call(configs[config], "curl", "get", {"curl": curl})
                if result["exit"] != 0 or result["bytes"] != args.mb << 20:
                    sys.exit(f"{name}: {result}")
                seconds[name].append(result["seconds"])
    base = median(seconds[cases[1][0]])
    print(f"\n## {args.mb} MB download ({args.runs} runs each, interleaved; curl's own time)\n")
    print("| how | median s | MB/s | × direct in the sandbox |")
    print("| --- | ---: | ---: | ---: |")
    for name, _ in cases:
        m = median(seconds[name])
        print(f"| {name} | {m:.3f} | {args.mb / m:,.0f} | {m / base:.2f} |")



def setup(args, configs, port):
    hows = [("direct (\"network\": true)", "host", "direct"),
            ("through the proxy: plain HTTP", "allow", "http"),
            ("through the proxy: CONNECT", "allow", "connect")]
    per = {name: [] for name, _, _ in hows}
    rounds = 3
    for _ in range(rounds):
        for name, config, how in hows:
            result, _ = call(configs[config], "connect", "loop",
                             {"port": port, "n": args.connections // rounds, "how": how})
            per[name].extend(result)
    direct = median(per[hows[0][0]])
    print(f"\n## Connection set-up ({len(per[hows[0][0]])} connections each, one after another; "
          "each a 1-byte GET and close)\n")
    print("| how | median ms per connection | p90 ms | added by the proxy, ms |")
    print("| --- | ---: | ---: | ---: |")
    for name, _, _ in hows:
        xs = sorted(per[name])
        m = median(xs)
        p90 = xs[int(len(xs) * 0.9)]
        print(f"| {name} | {m:.3f} | {p90:.3f} | {m - direct:+.3f} |")



def one_call(args, configs):
    kinds = [("\"network\": false (no proxy)", "none", UPM),
             ("an allowlist (the proxy starts; nothing connects)", "allow", UPM),
             ("\"network\": true", "host", UPM)]
    if args.baseline:
        kinds.append((f"\"network\": false, {args.baseline} (without the egress code)", "none",
                      args.baseline))
    ms = {name: [] for name, _, _ in kinds}
    for _ in range(args.calls):
        for name, config, upm in kinds:
            _, t = call(configs[config], "noop", "noop", {}, upm)
            ms[name].append(t)
    none = median(ms[kinds[0][0]])
    print(f"\n## One call of a no-op plugin ({args.calls} calls each, interleaved)\n")
    print("| network | median ms | p90 ms | × no network |")
    print("| --- | ---: | ---: | ---: |")
    for name, _, _ in kinds:
        xs = sorted(ms[name])
        m = median(xs)
        print(f"| {name} | {m:.2f} | {xs[int(len(xs) * 0.9)]:.2f} | {m / none:.2f} |")


if __name__ == "__main__":
    main()
