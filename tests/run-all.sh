#!/bin/sh
# Builds weft and runs every test, on both KLT backends. Used by README
# command (2) and .ci/run. Exits non-zero if any build or test fails.
#
#   clone backend   debugoptimized + WEFT_DCHECK: the product's code path
#   pthread backend debugoptimized + WEFT_DCHECK: what sanitizer builds use
set -eu
cd "$(dirname "$0")/.."
jobs=$(nproc 2>/dev/null || echo 2)

run() {
  dir=$1; shift
  if [ -d "$dir" ]; then
    meson setup --reconfigure "$dir" "$@" >/dev/null
  else
    meson setup "$dir" "$@" >/dev/null
  fi
  ninja -C "$dir"
  meson test -C "$dir" --print-errorlogs --num-processes "$jobs"
}

start=$(date +%s)
run build-test-clone -Dbuildtype=debugoptimized -Ddchecks=true -Dklt_backend=clone
run build-test-pthread -Dbuildtype=debugoptimized -Ddchecks=true -Dklt_backend=pthread
echo "all tests passed in $(( $(date +%s) - start )) s"
