#!/bin/sh
# tests/fuzz/run.sh — builds the libFuzzer target for the example HTTP
# parser (examples/http_parse.h) with clang, ASan and UBSan, and fuzzes it
# for a bounded time. Exits non-zero on any finding (the crashing input is
# left in OUT_DIR as crash-*, with the sanitizer report on stderr).
#
#   tests/fuzz/run.sh OUT_DIR [SECONDS]      (default 60 s)
#
# Needs Debian's clang and its runtime libraries:
#   apt-get install clang libclang-rt-14-dev
set -eu
cd "$(dirname "$0")/../.."
out=${1:?usage: tests/fuzz/run.sh OUT_DIR [SECONDS]}
seconds=${2:-60}
cxx=${CLANGXX:-clang++}
if ! command -v "$cxx" >/dev/null 2>&1; then
  echo "tests/fuzz/run.sh: $cxx not found (apt-get install clang libclang-rt-14-dev)" >&2
  exit 1
fi
mkdir -p "$out/corpus"
"$cxx" -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
  -iquote . tests/fuzz/http_parse_fuzz.cc -o "$out/http_parse_fuzz"
# New interesting inputs go to $out/corpus (kept between runs); the seeds
# in tests/fuzz/http_corpus are only read.
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
"$out/http_parse_fuzz" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
  -dict=tests/fuzz/http.dict -artifact_prefix="$out/" -print_final_stats=1 \
  "$out/corpus" tests/fuzz/http_corpus
