#!/usr/bin/python3
"""Writes link/text-order.txt: upm's functions in the order a one-shot call first enters them.

build.rs hands the list to the linker, which lays those functions out first and together,
so a one-shot call faults in a fraction of the text it touched before (docs/performance.md,
run 8). The list comes from the release binary itself: a uprobe on every function of its
text, one real call on a no-op config, the first hit of each in order. glibc's string
functions are added by name at the end: their AVX-512/EVEX code cannot be single-stepped
by a uprobe (a call hung), and which variant runs depends on the CPU anyway.

    sudo bench/text_order.py [--upm BINARY]      record the list anew (about 8 minutes here)
    bench/text_order.py --check [--upm BINARY]   how many listed names the binary still has
    bench/text_order.py --rebase [--upm BINARY]  carry the list over to the binary's names

upm is built with v0 symbol names (.cargo/config.toml), which name a function by its path
and its generic arguments, not by a hash of the item, so editing the code keeps the names
of what it does not touch. Each name still holds its crate's disambiguator, which changes
with the crate's version or dependencies: `--rebase` maps each listed name to the
binary's functions of the same name without it, in seconds and without root. Neither
sees a function the list lacks: code written since the list was recorded is laid out
wherever the linker puts it, a page fault each (17 of them a call before run 10's
recording, docs/performance.md). A stale list costs speed, never correctness; record it
anew when the code a call runs has changed.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UPM = os.path.join(ROOT, "target/x86_64-unknown-linux-gnu/release/upm")
OUT = os.path.join(ROOT, "link/text-order.txt")
TRACING = "/sys/kernel/tracing"
GROUP = "upm_order"
# glibc's multi-arch string functions, as named in its libc.a.
STRING_VARIANT = re.compile(r"^__(mem|str|stp|rawmem|wmem|wcs|bcmp)\w*_(avx|evex|s?sse|erms)")


def functions(binary):
    """(file offset, name) of every function in the binary's .text, one name per address."""
    sections = subprocess.run(["readelf", "-SW", binary], capture_output=True, text=True,
                              check=True).stdout
    for line in sections.splitlines():
        f = line.replace("[ ", "[").split()
        if ".text" in f:
            i = f.index(".text")
            addr, off, size = int(f[i + 2], 16), int(f[i + 3], 16), int(f[i + 4], 16)
            break
    else:
        sys.exit(f"{binary}: no .text section")
    by_addr = {}
    nm = subprocess.run(["nm", "-S", "--defined-only", binary], capture_output=True, text=True,
                        check=True).stdout
    for line in nm.splitlines():
        p = line.split()
        if len(p) == 4 and p[2] in "Tt" and int(p[1], 16) > 0:
            a = int(p[0], 16)
            if addr <= a < addr + size:
                by_addr.setdefault(a, p[3])
    return [(a - addr + off, name) for a, name in sorted(by_addr.items())]


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def define(lines):
    """Adds (or with "-:" removes) uprobe events; tracefs takes one definition a write."""
    fd = os.open(os.path.join(TRACING, "uprobe_events"), os.O_WRONLY | os.O_APPEND)
    try:
        for line in lines:
            os.write(fd, line.encode())
    finally:
        os.close(fd)


def record(binary, funcs):
    """The names of `funcs` in the order one real call of `binary` first enters them.

    The probes go on a private copy: a uprobe fires in every process running the file
    it is set on (another run of the release binary would add its own hits), and setting
    thousands of them leaves the file's page cache split into small pages, which made
    later calls of that very file 0.3 ms slower here."""
    if not os.path.isdir(os.path.join(TRACING, "events")):
        subprocess.run(["mount", "-t", "tracefs", "nodev", TRACING], check=True)
    inst = os.path.join(TRACING, "instances", GROUP)
    clear(inst)  # what an interrupted run left
    probed = [(i, off) for i, (off, name) in enumerate(funcs) if not STRING_VARIANT.match(name)]
    d = tempfile.mkdtemp(prefix="upm-order-", dir="/tmp")
    try:
        os.chmod(d, 0o755)
        copy = os.path.join(d, "upm")
        shutil.copy(binary, copy)
        shutil.copytree(os.path.join(ROOT, "schemas"), os.path.join(d, "schemas"))
        config = os.path.join(d, "upm_config.json")
        with open(config, "w") as f:
            json.dump({"plugins": {"Noop": {"command": ["/bin/true"], "methods": {
                "noop": {"schema": "schemas/empty.json"}}}}}, f)
        define(f"p:{GROUP}/f{i} {copy}:0x{off:x}\n" for i, off in probed)
        os.mkdir(inst)
        write(os.path.join(inst, "options", "overwrite"), "0")  # drop the newest, never the first
        write(os.path.join(inst, "buffer_size_kb"), "65536")
        write(os.path.join(inst, "events", GROUP, "enable"), "1")
        # The config named relative to the working directory, as callers often do: the
        # call then also runs what makes it absolute (an absolute one skips that).
        r = subprocess.run([copy, "run", "--config", os.path.basename(config)], cwd=d,
                           capture_output=True,
                           input=b'{"plugin":"Noop","method":"noop","args":{}}', timeout=1200)
        write(os.path.join(inst, "events", GROUP, "enable"), "0")
        if r.returncode != 0:
            sys.exit(f"the recorded call failed ({r.returncode}): {r.stdout[:300]!r}")
        with open(os.path.join(inst, "trace")) as f:
            trace = f.read()
        stats = ""
        for cpu in os.listdir(os.path.join(inst, "per_cpu")):
            with open(os.path.join(inst, "per_cpu", cpu, "stats")) as f:
                stats += f.read()
    finally:
        clear(inst)
        shutil.rmtree(d, ignore_errors=True)
    if re.search(r"^(overrun|dropped events): [1-9]", stats, re.M):
        sys.exit("the trace buffer overflowed: events were lost")
    seen, order = set(), []
    for m in re.finditer(r" f(\d+): \(", trace):
        i = int(m.group(1))
        if i not in seen:
            seen.add(i)
            order.append(funcs[i][1])
    if not order:
        sys.exit("the trace recorded nothing")
    return order


def clear(inst):
    """Removes this script's tracefs instance and its probes, if there are any."""
    try:
        os.rmdir(inst)
    except FileNotFoundError:
        pass
    try:
        define([f"-:{GROUP}/\n"])  # the whole group at once
    except OSError:
        pass  # no such group


# What changes in a name when nothing about the function did: a legacy name's hash, a v0
# name's crate disambiguators and back-references (offsets into the name), LLVM's suffixes.
HASH = re.compile(r"17h[0-9a-f]{16}E|(?<=C)s[0-9A-Za-z]*_|(?<=B)[0-9A-Za-z]*_|\.llvm\.\d+$|\.\d+$")


def rebase(listed, names):
    """`listed` carried over to `names`: each name as it is, or else every function whose
    name is the same without its hash (generic instances share one), in the list's order."""
    by_stem = {}
    for n in sorted(names):
        by_stem.setdefault(HASH.sub("", n), []).append(n)
    out, seen = [], set()
    for n in listed:
        for m in [n] if n in names else by_stem.get(HASH.sub("", n), []):
            if m not in seen:
                seen.add(m)
                out.append(m)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--upm", default=UPM, help="the release binary (default: %(default)s)")
    ap.add_argument("--check", action="store_true", help="only say how current the list is")
    ap.add_argument("--rebase", action="store_true", help="carry the list over to --upm's names")
    args = ap.parse_args()
    funcs = functions(args.upm)
    names = {name for _, name in funcs}
    if args.check or args.rebase:
        with open(OUT) as f:
            listed = [line.strip() for line in f if line.strip()]
        have = sum(1 for n in listed if n in names)
        print(f"{have} of {len(listed)} listed functions are in {args.upm}")
        if args.rebase:
            out = rebase(listed, names)
            write(OUT, "".join(n + "\n" for n in out))
            print(f"rebased: {len(out)} functions of {args.upm} listed")
        return
    if os.geteuid() != 0:
        sys.exit("run as root: uprobes are set through tracefs")
    order = record(os.path.abspath(args.upm), funcs)
    strings = sorted(n for n in names if STRING_VARIANT.match(n))
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    write(OUT, "".join(n + "\n" for n in order + strings))
    print(f"{len(order)} functions entered by one call, {len(strings)} string functions: {OUT}")


if __name__ == "__main__":
    main()
