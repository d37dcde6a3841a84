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

# --- Fuzzing the example HTTP parser (issue 9 gate) ---------------------------
# The request parser of examples/http_server.cc (examples/http_parse.h) under
# clang's libFuzzer with ASan and UBSan, for WEFT_FUZZ_SECONDS (default 60)
# after a ~10 s compile. New corpus entries accumulate in
# build-test-fuzz/corpus; a finding fails the run and leaves its input there
# as crash-*. Needs Debian's clang: apt-get install clang libclang-rt-14-dev
# (the bad-input suite against the running server and the soak are ordinary
# meson tests, run in both builds above).
tests/fuzz/run.sh build-test-fuzz "${WEFT_FUZZ_SECONDS:-60}"

echo "all tests passed in $(( $(date +%s) - start )) s"
