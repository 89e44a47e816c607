#!/usr/bin/env bash
# Runs upm's coverage-guided fuzz targets (cargo-fuzz, libFuzzer with AddressSanitizer),
# one at a time, each for a set time. Not part of CI; see docs/fuzzing.md.
#
#   scripts/fuzz.sh                     every target, 600 s each
#   scripts/fuzz.sh TARGET [SECONDS]    one target (request, config, seccomp_profile, audit_log)
#   scripts/fuzz.sh all SECONDS         every target, SECONDS each
#
# The corpus grows in fuzz/corpus/TARGET (kept between runs, not committed), seeded from
# fuzz/seeds/TARGET and the repository's own examples, config and profiles. A crash is
# saved in fuzz/artifacts/TARGET/ and stops that target; the script then exits 1.
# Installs cargo-fuzz with cargo if it is missing. cargo-fuzz needs nightly-only rustc
# flags (-Zsanitizer): on a stable toolchain, RUSTC_BOOTSTRAP=1 allows them.
# UPM_FUZZ_JOBS=N runs N workers per target (default 1: the machine is shared).
set -euo pipefail
cd "$(dirname "$0")/.."

targets=(request config seccomp_profile audit_log)
what=${1:-all}
seconds=${2:-600}
case "$what" in
  all) ;;
  request | config | seccomp_profile | audit_log) targets=("$what") ;;
  *) echo "usage: scripts/fuzz.sh [all|${targets[*]// /|}] [SECONDS]" >&2; exit 2 ;;
esac
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "fuzz: SECONDS must be a number" >&2; exit 2; }

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
case "$(rustc -V)" in *nightly*) ;; *) export RUSTC_BOOTSTRAP=1 ;; esac

# Seeds: the committed ones, plus what the repository already has of each format.
seed() {
  local target=$1; shift
  mkdir -p "fuzz/corpus/$target"
  cp -n "fuzz/seeds/$target"/* "$@" "fuzz/corpus/$target/" 2>/dev/null || true
}
seed request examples/*.json
seed config upm_config.json
seed seccomp_profile policies/*.json tests/fixtures/seccomp/*.json
seed audit_log

(cd fuzz && cargo fuzz build -O)
jobs=${UPM_FUZZ_JOBS:-1}
parallel=()
[ "$jobs" -gt 1 ] && parallel=(-jobs="$jobs" -workers="$jobs")
status=0
for t in "${targets[@]}"; do
  echo "== fuzz $t for ${seconds}s ($(date -u +%FT%TZ))"
  # -timeout: one input taking 10 s is a finding (a hang); -rss_limit_mb: so is 2 GiB.
  if ! (cd fuzz && nice cargo fuzz run -O "$t" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        ${parallel[@]+"${parallel[@]}"}); then
    echo "== fuzz $t: FOUND something, see fuzz/artifacts/$t/" >&2
    status=1
  fi
  rm -rf /dev/shm/upm-fuzz-*-[0-9]* "${TMPDIR:-/tmp}"/upm-fuzz-*-[0-9]*
done
exit "$status"
