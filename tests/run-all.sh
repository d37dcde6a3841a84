#!/bin/sh
# Builds weft and runs every test; used by README command (2) and .ci/run.
# Exits non-zero if any build or test fails.
#
#   clone backend    debugoptimized + WEFT_DCHECK: the product's code path
#   pthread backend  debugoptimized + WEFT_DCHECK: what sanitizer builds use
#   ThreadSanitizer  pthread backend; the synchronisation tests (the other
#                    suites replace malloc or trap SIGSEGV themselves, which
#                    TSan's runtime does not tolerate)
# The io tests run once with io_uring and once with epoll in each build.
set -eu
cd "$(dirname "$0")/.."
jobs=$(nproc 2>/dev/null || echo 2)

run() {
  dir=$1; suites=$2; shift 2
  if [ -d "$dir" ]; then
    meson setup --reconfigure "$dir" "$@" >/dev/null
  else
    meson setup "$dir" "$@" >/dev/null
  fi
  ninja -C "$dir"
  # shellcheck disable=SC2086
  meson test -C "$dir" --print-errorlogs --num-processes "$jobs" $suites
}

start=$(date +%s)
run build-test-clone "" -Dbuildtype=debugoptimized -Ddchecks=true -Dklt_backend=clone
run build-test-pthread "" -Dbuildtype=debugoptimized -Ddchecks=true -Dklt_backend=pthread
run build-test-tsan "--suite sync" -Dbuildtype=debugoptimized -Ddchecks=true -Dklt_backend=pthread \
  -Db_sanitize=thread -Db_lundef=false -Dbenchmarks=false -Dexamples=false
echo "all tests passed in $(( $(date +%s) - start )) s"
