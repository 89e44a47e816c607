#!/usr/bin/python3
"""What a static glibc program pays at start-up on this machine, beside a static musl one.

upm is one static glibc binary per call, so its start-up is part of every one-shot call.
This builds two programs that do nothing (`int main(void) { return 0; }`), one with `cc
-static` (glibc) and one with `musl-gcc -static` (Debian's musl-tools, installed if
missing), runs them interleaved from this process, and prints medians. It also times the
`cpuid` instruction, which glibc's start-up runs many times to detect CPU features and
cache sizes (musl's does not): under a hypervisor each one traps.

    sudo bench/startup.py [--runs 300]
"""
import argparse
import os
import statistics
import subprocess
import tempfile
import time

import apt

NOP = "int main(void) { return 0; }\n"
CPUID = r"""
#include <cpuid.h>
#include <stdio.h>
#include <time.h>
int main(void) {
    unsigned a, b, c, d;
    struct timespec s, e;
    clock_gettime(CLOCK_MONOTONIC, &s);
    for (int i = 0; i < 1000; i++) __cpuid_count(0x8000001D, i & 3, a, b, c, d);
    clock_gettime(CLOCK_MONOTONIC, &e);
    printf("%.2f\n", ((e.tv_sec - s.tv_sec) * 1e9 + (e.tv_nsec - s.tv_nsec)) / 1000 / 1000.0);
    return (int)(a & 0);
}
"""


def build(d, compiler, src, name, extra=()):
    c = os.path.join(d, name + ".c")
    with open(c, "w") as f:
        f.write(src)
    out = os.path.join(d, name)
    subprocess.run([compiler, "-O2", *extra, c, "-o", out], check=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        cases = {
            "static glibc, empty main (cc -static)": [build(d, "cc", NOP, "glibc", ["-static"])],
            "static musl, empty main (musl-gcc -static)": [build(d, apt.ensure("musl-gcc", "musl-tools"), NOP, "musl", ["-static"])],
            "/bin/true (dynamic glibc)": ["/bin/true"],
        }
        cpuid = build(d, "cc", CPUID, "cpuid")
        times = {k: [] for k in cases}
        for _ in range(args.runs):
            for k, argv in cases.items():
                t = time.perf_counter()
                subprocess.run(argv, check=True)
                times[k].append((time.perf_counter() - t) * 1000.0)
        cpuid_us = float(subprocess.run([cpuid], check=True, capture_output=True, text=True).stdout)
    print(f"\n{args.runs} runs each, interleaved, started from Python; times in ms\n")
    print("| program | median | p90 |")
    print("| --- | ---: | ---: |")
    for k, v in times.items():
        v.sort()
        print(f"| {k} | {statistics.median(v):.3f} | {v[int(len(v) * 0.9)]:.3f} |")
    print(f"\none cpuid instruction: {cpuid_us:.2f} µs")
    print("\ncommand: sudo bench/startup.py")


if __name__ == "__main__":
    main()
