"""A tool the benchmarks need, from Debian's packages if it is not installed yet."""
import shutil
import subprocess


def ensure(program, package):
    """The path of `program`, installing `package` with apt-get (updating once) if needed."""
    if not shutil.which(program):
        subprocess.run(["apt-get", "install", "-y", "-qq", package], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not shutil.which(program):
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True)
    return shutil.which(program)
