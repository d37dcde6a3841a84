#!/bin/sh
# Builds and runs the example consumers of examples/consumers/ against weft
# as a user gets it (issue 16, packaging), and fails if any step fails or a
# program prints the wrong thing:
#
#   1. relocated: `meson install --destdir` into a temporary tree, then the
#      CMake consumer with CMAKE_PREFIX_PATH pointing there (weftConfig.cmake
#      finds its files relative to itself, and Abseil through
#      find_dependency), run with LD_LIBRARY_PATH.
#   2. default prefix (/usr/local), the way README.md says to install:
#      `meson install` then `ldconfig`, and then, with no PKG_CONFIG_PATH,
#      CMAKE_PREFIX_PATH, rpath or LD_LIBRARY_PATH: the pkg-config consumer
#      (its Makefile: `c++ -std=c++20 app.cc $(pkg-config --cflags --libs
#      weft)`, and weft-hook), the CMake consumer, and the meson consumer
#      with weft found through pkg-config. Each program must run; the
#      pkg-config and CMake ones (and libweft.so, libweft-hook.so) must
#      have no RPATH/RUNPATH (CMake's build-tree RPATH is turned off, as it
#      is for an installed program; meson's own RUNPATH for external
#      libraries stays).
#   3. the meson consumer with weft as a subproject (--force-fallback-for):
#      configured, its dependency must come from the subproject, weft's
#      tests/benchmarks/examples must not be among its targets, and app.cc
#      must compile with the subproject's flags. Building weft itself as a
#      subproject takes about 3 minutes on 2 cores, so linking and running
#      that consumer happens only with WEFT_CONSUMERS_SUBPROJECT_BUILD=1.
#
# Step 2 must not leave weft in the machine's /usr/local: as root with
# unshare(1) it runs in a private mount namespace where /usr/local is an
# overlay on a tmpfs and /etc/ld.so.cache a private copy, so the install
# and the ldconfig vanish when the step ends (and two runs at once do not
# meet). Without a namespace it installs to the real /usr/local only when
# CI=true (a throwaway machine) and removes every installed file and reruns
# ldconfig afterwards; otherwise it is skipped, and the script says so.
#
#   tests/consumers.sh [BUILDDIR]
# BUILDDIR: a configured weft build (run-all.sh passes build-test-clone);
# default build-consumers, set up (library only, release) when missing.
set -eu
cd "$(dirname "$0")/.."
src=$(pwd)

if [ "${1:-}" = "--default-prefix-step" ]; then
  # Step 2, in the caller's environment (a private namespace or CI).
  build=$2; work=$3
  mode=${4:-namespace}
else
  build=${1:-build-consumers}
  mode=""
fi

fail() { echo "consumers.sh: FAIL: $*" >&2; exit 1; }

# Runs a consumer program and checks that its output line is the expected
# one (each program also checks its own result and exits non-zero if wrong).
expect_run() {
  prog=$1; want=$2
  out=$("$prog") || fail "$prog exited with $? (output: $out)"
  case "$out" in
    *"$want"*) echo "  $prog: $out" ;;
    *) fail "$prog printed '$out', expected '$want'" ;;
  esac
}
app_line="10 ULTs, sum of squares 285"
hook_line="weft-hook active: yes, 4 ULTs slept in usleep(): 0 failed"

no_rpath() {
  for f in "$@"; do
    if readelf -d "$f" | grep -Eq 'RPATH|RUNPATH'; then
      fail "$f has an RPATH/RUNPATH: $(readelf -d "$f" | grep -E 'RPATH|RUNPATH')"
    fi
  done
}

cmake_consumer() {
  dir=$1; shift
  cmake -S "$src/examples/consumers/cmake" -B "$dir" -DCMAKE_BUILD_TYPE=Release "$@" >"$dir.log" 2>&1 \
    || { cat "$dir.log"; fail "cmake configure of examples/consumers/cmake"; }
  cmake --build "$dir" >>"$dir.log" 2>&1 || { cat "$dir.log"; fail "cmake build of examples/consumers/cmake"; }
}

# --- step 2 (runs inside the namespace, or as CI's fallback) -----------------
if [ "$mode" != "" ]; then
  lib=/usr/local/lib/x86_64-linux-gnu
  meson install -C "$build" --no-rebuild >"$work/install.log" 2>&1 \
    || { cat "$work/install.log"; fail "meson install to /usr/local"; }
  [ -f "$lib/libweft.so" ] || fail "libweft.so is not in $lib (meson's libdir changed?)"
  # The dynamic loader finds /usr/local/lib/x86_64-linux-gnu (listed in
  # /etc/ld.so.conf.d/x86_64-linux-gnu.conf on Debian 12) only through its
  # cache: ldconfig after an install, as README.md says.
  if [ "$mode" = namespace ]; then
    # /etc/ld.so.cache is a private copy bind-mounted over the real one:
    # ldconfig writes a new file and renames it, which a mount point
    # refuses, so write it aside and copy it in.
    ldconfig -C "$work/ld.so.cache.new"
    cat "$work/ld.so.cache.new" >/etc/ld.so.cache
  else
    ldconfig
  fi
  ldconfig -p | grep -q "libweft.so .*$lib/libweft.so" || fail "ldconfig does not list $lib/libweft.so"

  echo "consumers: pkg-config consumer (default prefix, no rpath, no LD_LIBRARY_PATH)"
  unset PKG_CONFIG_PATH LD_LIBRARY_PATH CMAKE_PREFIX_PATH 2>/dev/null || true
  pkg-config --exists weft weft-hook || fail "pkg-config does not find weft and weft-hook in its default path"
  # Requires: only what the public headers need.
  req=$(pkg-config --print-requires weft | tr '\n' ' ')
  [ "$req" = "absl_status absl_statusor " ] || fail "weft.pc Requires is '$req', expected absl_status absl_statusor"
  pkg-config --print-requires-private weft | grep -q '^liburing' || fail "liburing is not in weft.pc Requires.private"
  pkg-config --print-requires-private weft | grep -q '^spdlog' || fail "spdlog is not in weft.pc Requires.private"
  if pkg-config --libs weft | grep -Eq -- '-luring|-lspdlog|-lfmt'; then
    fail "pkg-config --libs weft links a private dependency: $(pkg-config --libs weft)"
  fi
  pkg-config --static --libs weft | grep -q -- '-luring' || fail "pkg-config --static --libs weft lacks -luring"
  pc=$work/pkgconfig
  mkdir -p "$pc"
  cp "$src"/examples/consumers/pkgconfig/* "$pc"/
  make -C "$pc" >"$work/pkgconfig.log" 2>&1 || { cat "$work/pkgconfig.log"; fail "make in examples/consumers/pkgconfig"; }
  no_rpath "$pc/app" "$pc/hook_app" "$lib/libweft.so" "$lib/libweft-hook.so"
  readelf -d "$pc/app" | grep -q 'NEEDED.*\[libweft.so\]' || fail "app does not link libweft.so"
  readelf -d "$pc/hook_app" | grep -q 'NEEDED.*\[libweft-hook.so\]' || fail "hook_app does not link libweft-hook.so"
  expect_run "$pc/app" "$app_line"
  expect_run "$pc/hook_app" "$hook_line"

  echo "consumers: CMake consumer (find_package(weft) from the default prefix)"
  # CMake gives programs in its build tree an RPATH to the directories of
  # the imported libraries it links that are not the compiler's own
  # (/usr/local/lib/x86_64-linux-gnu is not), and drops it at install:
  # without that build-tree RPATH, as an installed program is, it must run.
  cmake_consumer "$work/cmake-default" -DCMAKE_SKIP_BUILD_RPATH=ON
  grep -q "weft_DIR:PATH=$lib/cmake/weft" "$work/cmake-default/CMakeCache.txt" \
    || fail "find_package(weft) did not use $lib/cmake/weft: $(grep weft_DIR "$work/cmake-default/CMakeCache.txt")"
  no_rpath "$work/cmake-default/app" "$work/cmake-default/hook_app"
  expect_run "$work/cmake-default/app" "$app_line"
  expect_run "$work/cmake-default/hook_app" "$hook_line"

  echo "consumers: meson consumer (dependency('weft') found through pkg-config)"
  meson setup "$work/meson-system" "$src/examples/consumers/meson" --buildtype=release \
    >"$work/meson-system.log" 2>&1 || { cat "$work/meson-system.log"; fail "meson setup of examples/consumers/meson"; }
  grep -Eq "Run-time dependency weft found: YES 0\.1" "$work/meson-system.log" \
    || { cat "$work/meson-system.log"; fail "the meson consumer did not find the installed weft through pkg-config"; }
  ninja -C "$work/meson-system" >>"$work/meson-system.log" 2>&1 || { cat "$work/meson-system.log"; fail "ninja in the meson consumer"; }
  # (No RPATH check here: meson gives a program a RUNPATH to each directory
  # of an external dependency's -L that is not the compiler's own, as
  # /usr/local/lib/x86_64-linux-gnu is not, and keeps it at install.)
  expect_run "$work/meson-system/app" "$app_line"
  expect_run "$work/meson-system/hook_app" "$hook_line"
  exit 0
fi

# --- the build to install ----------------------------------------------------
start=$(date +%s)
# Each consumer directory has its own copy of the two programs (a user
# copies one directory); the copies must not drift apart.
for f in app.cc hook_app.cc; do
  for d in cmake meson; do
    cmp -s "examples/consumers/pkgconfig/$f" "examples/consumers/$d/$f" \
      || fail "examples/consumers/$d/$f differs from examples/consumers/pkgconfig/$f"
  done
done
if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" -Dbuildtype=release -Dtests=false -Dbenchmarks=false -Dexamples=false >/dev/null
fi
ninja -C "$build" libweft.so libweft.a hook/libweft-hook.so >/dev/null
[ -f "$build/meson-private/weft.pc" ] || fail "$build has no weft.pc"
work=$(mktemp -d /tmp/weft-consumers.XXXXXX)
cleanup() { rm -rf "$work"; }
trap cleanup EXIT INT TERM

# --- step 1: relocated install, CMake consumer ---------------------------------
echo "consumers: CMake consumer (weft installed under a temporary DESTDIR)"
stage=$work/stage
DESTDIR=$stage meson install -C "$build" --no-rebuild >"$work/destdir.log" 2>&1 \
  || { cat "$work/destdir.log"; fail "meson install --destdir"; }
prefix=$stage/usr/local
slib=$prefix/lib/x86_64-linux-gnu
for f in "$slib/libweft.so" "$slib/libweft.a" "$slib/libweft-hook.so" "$slib/pkgconfig/weft.pc" \
         "$slib/pkgconfig/weft-hook.pc" "$slib/cmake/weft/weftConfig.cmake" \
         "$slib/cmake/weft/weftConfigVersion.cmake" "$prefix/include/weft/weft.h" "$prefix/include/weft/hook.h"; do
  [ -f "$f" ] || fail "not installed: ${f#"$stage"}"
done
cmake_consumer "$work/cmake-staged" "-DCMAKE_PREFIX_PATH=$prefix"
grep -q "weft_DIR:PATH=$slib/cmake/weft" "$work/cmake-staged/CMakeCache.txt" \
  || fail "find_package(weft) did not use the staged weftConfig.cmake"
# The target's link line brings Abseil's status libraries (the headers' own
# dependency) and nothing of weft's private ones.
grep -q 'libweft.so' "$work/cmake-staged/CMakeFiles/app.dir/link.txt" || fail "app's link line lacks libweft.so"
grep -q 'absl_status' "$work/cmake-staged/CMakeFiles/app.dir/link.txt" || fail "app's link line lacks Abseil's status library"
if grep -Eq 'uring|spdlog' "$work/cmake-staged/CMakeFiles/app.dir/link.txt"; then
  fail "app's link line has weft's private dependencies: $(cat "$work/cmake-staged/CMakeFiles/app.dir/link.txt")"
fi
grep -q -- '-fstack-clash-protection' "$work/cmake-staged/CMakeFiles/app.dir/flags.make" || fail "weft::weft does not add -fstack-clash-protection"
# The version file is read: weft 0.1.x satisfies find_package(weft 0.1)
# (the consumer's) and not find_package(weft 0.2).
mkdir -p "$work/badversion"
cat >"$work/badversion/CMakeLists.txt" <<'EOF2'
cmake_minimum_required(VERSION 3.16)
project(badversion LANGUAGES CXX)
find_package(weft 0.2 REQUIRED)
EOF2
if cmake -S "$work/badversion" -B "$work/badversion/build" "-DCMAKE_PREFIX_PATH=$prefix" >"$work/badversion.log" 2>&1; then
  fail "find_package(weft 0.2) accepted weft 0.1"
fi
grep -q 'with requested version "0.2"' "$work/badversion.log" || { cat "$work/badversion.log"; fail "find_package(weft 0.2) failed for another reason than the version"; }
(
  LD_LIBRARY_PATH=$slib
  export LD_LIBRARY_PATH
  expect_run "$work/cmake-staged/app" "$app_line"
  expect_run "$work/cmake-staged/hook_app" "$hook_line"
)

# --- step 2: default prefix ---------------------------------------------------
# WEFT_CONSUMERS_NO_NAMESPACE=1 takes the CI branch (to test it).
if [ "$(id -u)" = 0 ] && [ "${WEFT_CONSUMERS_NO_NAMESPACE:-0}" != 1 ] &&
   unshare --mount --propagation private true 2>/dev/null; then
  # shellcheck disable=SC2016
  unshare --mount --propagation private sh -c '
    set -eu
    work=$1; src=$2; build=$3
    mkdir -p "$work/ns"
    mount -t tmpfs weft-consumers "$work/ns"
    mkdir -p "$work/ns/upper" "$work/ns/work"
    mount -t overlay overlay -o "lowerdir=/usr/local,upperdir=$work/ns/upper,workdir=$work/ns/work" /usr/local
    cp /etc/ld.so.cache "$work/ns/ld.so.cache"
    mount --bind "$work/ns/ld.so.cache" /etc/ld.so.cache
    exec sh "$src/tests/consumers.sh" --default-prefix-step "$build" "$work" namespace
  ' sh "$work" "$src" "$build" || fail "default-prefix step (in a private mount namespace)"
elif [ "${CI:-}" = true ] && [ "$(id -u)" = 0 ]; then
  echo "consumers: no private mount namespace; CI: installing to the real /usr/local, removed afterwards"
  status=0
  sh "$src/tests/consumers.sh" --default-prefix-step "$build" "$work" real || status=$?
  # meson-logs/install-log.txt lists every file the install wrote, then
  # the directories it made (deepest first): remove the files, then the
  # directories that are left empty.
  installed=$(grep -v '^#' "$build/meson-logs/install-log.txt")
  for f in $installed; do [ -d "$f" ] || rm -f "$f"; done
  for f in $installed; do [ ! -d "$f" ] || rmdir "$f" 2>/dev/null || true; done
  ldconfig
  for f in $installed; do [ ! -e "$f" ] || fail "left installed after the clean-up: $f"; done
  if ldconfig -p | grep -q libweft; then fail "libweft is still in the loader's cache after the clean-up"; fi
  [ "$status" = 0 ] || fail "default-prefix step"
else
  echo "consumers: SKIPPED the default-prefix step (needs root and unshare(1), or CI=true as root)"
fi

# --- step 3: meson consumer, weft as a subproject -------------------------------
echo "consumers: meson consumer (weft as a subproject)"
sub=$work/meson-subproject
# examples/consumers/meson/subprojects/weft is a symbolic link to this
# tree (git keeps it, so a clean clone has it too).
meson setup "$sub" "$src/examples/consumers/meson" --buildtype=release --force-fallback-for=weft,weft-hook \
  >"$sub.log" 2>&1 || { cat "$sub.log"; fail "meson setup of examples/consumers/meson with weft as a subproject"; }
grep -Eq "Dependency weft found: YES 0\.1\.[0-9]+ \(overridden\)" "$sub.log" \
  || { cat "$sub.log"; fail "dependency('weft') did not come from weft's override_dependency"; }
grep -Eq "Dependency weft-hook found: YES 0\.1\.[0-9]+ \(overridden\)" "$sub.log" \
  || { cat "$sub.log"; fail "dependency('weft-hook') did not come from weft's override_dependency"; }
targets=$(meson introspect --targets "$sub" | python3 -c 'import json,sys; print(" ".join(sorted(t["name"] for t in json.load(sys.stdin))))')
case " $targets " in
  *" app "*) ;;
  *) fail "the consumer's targets lack app: $targets" ;;
esac
for t in $targets; do
  case "$t" in
    app|hook_app|weft|weft-hook) ;;
    *) fail "weft as a subproject builds '$t' (tests, benchmarks and examples must be off): $targets" ;;
  esac
done
# Compiling app.cc needs only the dependency's include paths and flags.
ninja -C "$sub" app.p/app.cc.o >>"$sub.log" 2>&1 || { cat "$sub.log"; fail "app.cc does not compile against weft as a subproject"; }
python3 - "$sub" <<'EOF' || fail "app.cc is not compiled with -fstack-clash-protection from weft's dependency"
import json, sys
cmds = json.load(open(sys.argv[1] + "/compile_commands.json"))
app = [c for c in cmds if c["file"].endswith("app.cc") and "hook_app" not in c["file"]]
sys.exit(0 if app and "-fstack-clash-protection" in app[0]["command"] else 1)
EOF
if [ "${WEFT_CONSUMERS_SUBPROJECT_BUILD:-0}" = 1 ]; then
  ninja -C "$sub" >>"$sub.log" 2>&1 || { tail -50 "$sub.log"; fail "ninja in the meson consumer (weft as a subproject)"; }
  expect_run "$sub/app" "$app_line"
  expect_run "$sub/hook_app" "$hook_line"
else
  echo "  (not linked: WEFT_CONSUMERS_SUBPROJECT_BUILD=1 builds weft in it and runs app and hook_app)"
fi

echo "consumers: all passed in $(( $(date +%s) - start )) s"
