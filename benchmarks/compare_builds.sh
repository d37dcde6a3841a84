#!/bin/sh
# benchmarks/compare_builds.sh — before/after for a change: runs the same
# benchmarks from two build directories in one run, interleaved (the order
# alternates every round), and prints each figure's median per build with
# the ratio new/old.
#
# usage: benchmarks/compare_builds.sh OLD_BUILD NEW_BUILD [ROUNDS] [--no-echo]
#
# Figures (weft's median of each program's own rounds, from its table):
#   runtime_bench --quick   yield; spawn+join on 1 and 2 workers
#   sync_bench --quick      Mutex uncontended and contended; CondVar and
#                           Channel ping-pong on 1 and 2 workers
#   echo_bench --quick      weft 1 worker and weft (uring), C=50: req/s, p99
# ROUNDS (default 3) runs of each program per build; the printed value is
# the median over them. Lower is better for ns and us, higher for Mops/s
# and req/s. Machines here are shared: the load average is printed at the
# start and end; compare only figures from one run of this script.
set -eu

if [ $# -lt 2 ]; then
  echo "usage: $0 OLD_BUILD NEW_BUILD [ROUNDS] [--no-echo]" >&2
  exit 2
fi
old=$1
new=$2
rounds=${3:-3}
echo_too=1
for a in "$@"; do [ "$a" = "--no-echo" ] && echo_too=0; done
for b in "$old" "$new"; do
  for p in runtime_bench sync_bench echo_bench; do
    [ -x "$b/benchmarks/$p" ] || { echo "$0: $b/benchmarks/$p missing (build it first)" >&2; exit 2; }
  done
done

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# Appends "label<TAB>figure (unit)<TAB>weft median" for every table row of
# file $2 that starts with one of the |-separated names in $3 (a name may be
# followed by a single space: the columns are fixed-width).
pick() {
  awk -v l="$1" -v names="$3" '
    BEGIN { n = split(names, nm, "|") }
    { for (i = 1; i <= n; i++) if (index($0, nm[i]) == 1) {
        split(substr($0, length(nm[i]) + 1), f, " ")
        if (f[2] ~ /^[0-9.]+$/) printf "%s\t%s (%s)\t%s\n", l, nm[i], f[1], f[2]
      } }' "$2" >> "$out/all"
}

# Appends "label<TAB>figure<TAB>value" lines for one run of each program.
run_one() {
  label=$1
  dir=$2
  "$dir/benchmarks/runtime_bench" --quick > "$out/rt" 2>&1
  pick "$label" "$out/rt" "yield, 1 worker|spawn+join, 1 worker|spawn+join, 2 workers"
  "$dir/benchmarks/sync_bench" --quick > "$out/sy" 2>&1
  pick "$label" "$out/sy" "Mutex lock+unlock, in a ULT|Mutex, 2 ULTs, 2 wkrs|Mutex, 64 ULTs, 2 wkrs|\
Mutex, 1000 ULTs, 2 wkrs|CondVar ping-pong, 1 wkr|CondVar ping-pong, 2 wkrs|Channel(1) ping-pong, 1 wkr|\
Channel(1) ping-pong, 2 wkrs"
  if [ "$echo_too" = 1 ]; then
    "$dir/benchmarks/echo_bench" --quick --servers uring1,uring --conns 50 > "$out/ec" 2>/dev/null
    awk -v l="$label" '
      # "weft 1 worker" is three fields, "weft (uring)" two: then C,
      # req/s median, req/s min, p50, p99.
      /^weft 1 worker +50 / { printf "%s\techo, weft 1 worker, C=50 (req/s)\t%s\n%s\techo, weft 1 worker, C=50 (p99 us)\t%s\n", l, $5, l, $8 }
      /^weft \(uring\) +50 / { printf "%s\techo, weft (uring), C=50 (req/s)\t%s\n%s\techo, weft (uring), C=50 (p99 us)\t%s\n", l, $4, l, $7 }' \
      "$out/ec" >> "$out/all"
  fi
}

echo "compare_builds: old=$old new=$new, $rounds rounds, interleaved"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
: > "$out/all"
r=1
while [ "$r" -le "$rounds" ]; do
  if [ $((r % 2)) -eq 1 ]; then
    run_one old "$old"; run_one new "$new"
  else
    run_one new "$new"; run_one old "$old"
  fi
  echo "round $r/$rounds done" >&2
  r=$((r + 1))
done
echo "load average at end:   $(cut -d' ' -f1-3 /proc/loadavg)"
echo

# Median per (figure, build), then one row per figure.
sort -t "$(printf '\t')" -k2,2 -k1,1 -k3,3g "$out/all" | awk -F '\t' '
  function flush() {
    if (key == "") return
    m = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    med[key] = m
    if (!(fig in seen)) { seen[fig] = 1; order[++nf] = fig }
    n = 0
  }
  { k = $2 SUBSEP $1; if (k != key) { flush(); key = k; fig = $2 }; v[++n] = $3 }
  END {
    flush()
    printf "%-46s %12s %12s %9s\n", "figure (weft median of medians)", "old", "new", "new/old"
    for (i = 1; i <= nf; i++) {
      f = order[i]; o = med[f SUBSEP "old"]; w = med[f SUBSEP "new"]
      printf "%-46s %12.4g %12.4g %8.3fx\n", f, o, w, (o != 0 ? w / o : 0)
    }
  }'
