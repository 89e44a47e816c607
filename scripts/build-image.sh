#!/usr/bin/env bash
# Builds the upm image with no registry: a base root file system made from this
# machine's own python3, shell and libraries (imported with `podman import`),
# then the top-level Dockerfile on top of it.
#
#   scripts/build-image.sh [IMAGE]        default IMAGE: localhost/upm:latest
#
# Needs: cargo, python3 (/usr/bin/python3), podman (as root: apt-get install podman runc),
# or with UPM_IMAGE_ENGINE=docker a docker daemon (apt-get install docker.io) instead.
# UPM_IMAGE_BASE names the base to build (default localhost/upm-base:latest);
# UPM_SKIP_CARGO=1 reuses the binaries as they are; UPM_BIN_DIR says where they are
# (default target/x86_64-unknown-linux-gnu/release, relative to the repository).
set -euo pipefail
cd "$(dirname "$0")/.."

image=${1:-localhost/upm:latest}
base=${UPM_IMAGE_BASE:-localhost/upm-base:latest}
case ${UPM_IMAGE_ENGINE:-podman} in
  podman)
    engine=(podman)
    # crun, podman's usual default, refuses hybrid cgroup hosts; runc works wherever podman does.
    if command -v runc >/dev/null; then engine+=(--runtime "$(command -v runc)"); fi
    # podman never pulls the base: it is the one imported below.
    build_opts=(--pull=never)
    id_format='{{.Digest}}'
    ;;
  docker)
    engine=(docker)
    # docker build pulls a base only when it is not present (without --pull).
    build_opts=()
    # A locally built image has no registry digest: its ID (sha256 of its config) instead.
    id_format='{{.Id}}'
    ;;
  *) echo "build-image: UPM_IMAGE_ENGINE must be podman or docker" >&2; exit 2 ;;
esac

bin_dir=${UPM_BIN_DIR:-target/x86_64-unknown-linux-gnu/release}
if [ "${UPM_SKIP_CARGO:-0}" != 1 ]; then
  cargo build --release --locked --bins
fi
for f in "$bin_dir/upm" "$bin_dir/upm-egress" "$bin_dir/upm-texttools" /usr/bin/python3; do
  [ -x "$f" ] || { echo "build-image: $f is missing" >&2; exit 1; }
done

root=$(mktemp -d)
ctx=$(mktemp -d)
trap 'rm -rf "$root" "$ctx"' EXIT

# The build context: a copy of what the Dockerfile COPYs, writable by its owner only and
# readable by all. COPY keeps the source's modes, and upm refuses a plugin file writable by
# group or others: a checkout made under umask 002 (or a `git archive` export) would give
# an image whose every Python plugin call fails.
cp Dockerfile .dockerignore "$ctx/"
cp -R image schemas policies plugins "$ctx/"
mkdir -p "$ctx/$bin_dir"
cp "$bin_dir/upm" "$bin_dir/upm-egress" "$bin_dir/upm-texttools" "$ctx/$bin_dir/"
chmod -R go-w,a+rX "$ctx"

# The same merged-/usr layout as the host, so library paths resolve the same way.
for d in bin sbin lib lib64; do
  if [ -L "/$d" ]; then
    mkdir -p "$root/$(readlink "/$d")"
    ln -s "$(readlink "/$d")" "$root/$d"
  fi
done

# add PATH: the file it resolves to, plus the name itself as a symlink to it.
add() {
  local p=$1 real
  real=$(readlink -f "$p")
  [ -e "$root$real" ] || { mkdir -p "$root$(dirname "$real")"; cp -a "$real" "$root$real"; }
  if [ "$real" != "$p" ] && [ ! -e "$root$p" ] && [ ! -L "$root$p" ]; then
    mkdir -p "$root$(dirname "$p")"
    ln -s "$real" "$root$p"
  fi
}
# deps FILE: the shared libraries the loader would map for it (none for a static one).
deps() { { ldd "$1" 2>/dev/null || true; } | { grep -o '/[^ ]*' || true; }; }
add_elf() {
  add "$1"
  deps "$1" | while read -r lib; do add "$lib"; done
}

py=$(readlink -f /usr/bin/python3)
pyver=$(basename "$py")
for f in /usr/bin/python3 /bin/sh /usr/bin/cat /usr/bin/env; do add_elf "$f"; done
# upm and the texttools plugin come in through the Dockerfile; their libraries come from here.
for f in "$bin_dir/upm" "$bin_dir/upm-egress" "$bin_dir/upm-texttools"; do
  deps "$f" | while read -r lib; do add "$lib"; done
done
mkdir -p "$root/usr/lib/$pyver"
tar -C "/usr/lib/$pyver" \
  --exclude=test --exclude=tests --exclude=__pycache__ --exclude=idlelib --exclude=tkinter \
  --exclude=turtledemo --exclude=ensurepip --exclude=lib2to3 --exclude=dist-packages -cf - . |
  tar -C "$root/usr/lib/$pyver" -xf -
for so in "$root/usr/lib/$pyver"/lib-dynload/*.so; do
  deps "$so" | while read -r lib; do add "$lib"; done
done

mkdir -p "$root/tmp" "$root/etc" "$root/proc" "$root/dev" "$root/sys"
chmod 1777 "$root/tmp"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\nupm:x:10001:10001:upm:/nonexistent:/usr/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\nupm:x:10001:\n' >"$root/etc/group"

tar --numeric-owner -C "$root" -cf - . | "${engine[@]}" import - "$base" >/dev/null
"${engine[@]}" build "${build_opts[@]}" --build-arg "BASE=$base" --build-arg "BIN_DIR=$bin_dir" -t "$image" -f "$ctx/Dockerfile" "$ctx" >&2
"${engine[@]}" image inspect --format "$id_format" "$image"
