"""Builds bench/floor.c (what the kernel alone charges for a call's unavoidable parts)
for bench/call.py and bench/batch.py, which run it beside upm."""
import os
import shutil
import subprocess
import sys

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "floor.c")


def build(d):
    """Compiles the floor program into directory `d`; returns its path, or None (saying
    so on stderr) when there is no C compiler or static libc to build it with."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        print("no C compiler: the floor row is left out", file=sys.stderr)
        return None
    exe = os.path.join(d, "floor")
    r = subprocess.run([cc, "-O2", "-static", "-pthread", "-o", exe, SOURCE],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        print(f"floor.c did not build, the floor row is left out:\n{r.stdout.decode()}",
              file=sys.stderr)
        return None
    return exe
