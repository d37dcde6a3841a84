// Tests for sys/stack.h: layout and rounding, guards that fault, lazily
// committed memory, many stacks within vm.max_map_count, decommit, the
// mprotect fallback and per-thread signal stacks.
#include "sys/stack.h"

#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "sys/context.h"
#include "sys/raw_syscall.h"
#include "tests/sanitizers.h"

namespace weft::sys {
namespace {

constexpr size_t kKiB = 1024, kMiB = 1024 * 1024;

// ---------------------------------------------------------------------------
// Helpers. The /proc readers use raw read(2) and fixed buffers, so that they
// also work in a child that has used up vm.max_map_count (where malloc may
// fail).

// Reads a small /proc file into `buf`; returns its length or -1.
ssize_t ReadProc(const char* path, char* buf, size_t n) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  size_t len = 0;
  for (;;) {
    ssize_t r = read(fd, buf + len, n - 1 - len);
    if (r <= 0) break;
    len += static_cast<size_t>(r);
    if (len == n - 1) break;
  }
  close(fd);
  buf[len] = '\0';
  return static_cast<ssize_t>(len);
}

// Resident set size in bytes (/proc/self/statm, second field).
size_t RssBytes() {
  char buf[256];
  if (ReadProc("/proc/self/statm", buf, sizeof buf) <= 0) return 0;
  unsigned long size = 0, resident = 0;
  if (sscanf(buf, "%lu %lu", &size, &resident) != 2) return 0;
  return resident * page_size();
}

// A "Name:   N kB" field of /proc/self/status, in bytes.
size_t StatusKb(const char* name) {
  static char buf[8192];
  if (ReadProc("/proc/self/status", buf, sizeof buf) <= 0) return 0;
  const char* p = strstr(buf, name);
  if (p == nullptr) return 0;
  return strtoul(p + strlen(name) + 1, nullptr, 10) * kKiB;
}

// Number of mappings (lines of /proc/self/maps).
long CountMaps() {
  int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  static char buf[1 << 16];
  long lines = 0;
  ssize_t r;
  while ((r = read(fd, buf, sizeof buf)) > 0)
    for (ssize_t i = 0; i < r; ++i) lines += buf[i] == '\n';
  close(fd);
  return lines;
}

long MaxMapCount() {
  char buf[64];
  if (ReadProc("/proc/sys/vm/max_map_count", buf, sizeof buf) <= 0) return -1;
  return strtol(buf, nullptr, 10);
}

// Pages of [p, p+len) resident in memory, or -1 if part of the range is not
// mapped (mincore fails with ENOMEM).
long ResidentPages(const void* p, size_t len) {
  size_t pages = (len + page_size() - 1) / page_size();
  std::vector<unsigned char> vec(pages);
  if (mincore(const_cast<void*>(p), len, vec.data()) != 0) return -1;
  long n = 0;
  for (unsigned char v : vec) n += v & 1;
  return n;
}

// Death-test children fault on purpose; they should not write core files,
// and must die of the SIGSEGV itself, not of a sanitizer's report of it.
void NoCoreDump() {
  rlimit rl{0, 0};
  setrlimit(RLIMIT_CORE, &rl);
  UseDefaultSegvAction();
}

// Writes one byte at `p` (a guard address): the process must die of SIGSEGV.
[[noreturn]] void TouchAndSurvive(char* p) {
  NoCoreDump();
  *reinterpret_cast<volatile char*>(p) = 1;
  fprintf(stderr, "wrote to %p and survived\n", static_cast<void*>(p));
  _exit(0);
}

// Bit 58 of a /proc/self/pagemap entry: "pte is a guard region" (Linux 6.14+).
constexpr uint64_t kPagemapGuard = uint64_t{1} << 58;

// The pagemap entry of the page containing `p`, or 0 on error.
uint64_t PagemapEntry(int fd, const void* p) {
  uint64_t e = 0;
  off_t off = static_cast<off_t>(reinterpret_cast<uintptr_t>(p) / page_size() * sizeof e);
  if (pread(fd, &e, sizeof e, off) != static_cast<ssize_t>(sizeof e)) return 0;
  return e;
}

// ---------------------------------------------------------------------------
// Layout and rounding.

// Sizes and guards are rounded up to whole pages; base/lo/hi/size/in_guard/
// contains agree with each other; the usable range starts zeroed and is
// readable and writable.
TEST(StackAllocate, RoundsToPagesAndLayoutIsConsistent) {
  const size_t ps = page_size();
  EXPECT_EQ(ps, static_cast<size_t>(sysconf(_SC_PAGESIZE)));
  EXPECT_EQ(round_to_pages(0), 0u);
  EXPECT_EQ(round_to_pages(1), ps);
  EXPECT_EQ(round_to_pages(ps), ps);
  EXPECT_EQ(round_to_pages(ps + 1), 2 * ps);

  const size_t sizes[] = {1, ps - 1, ps, ps + 1, 16 * kKiB, 16 * kKiB + 1, kMiB};
  const size_t guards[] = {0, 1, ps, 2 * ps + 1};
  for (size_t size : sizes) {
    for (size_t guard : guards) {
      SCOPED_TRACE(testing::Message() << "size " << size << ", guard " << guard);
      Stack s;
      const char* what = nullptr;
      ASSERT_EQ(stack_allocate(size, guard, &s, &what), 0) << (what ? what : "");
      const size_t want_size = (size + ps - 1) / ps * ps;
      const size_t want_guard = (guard + ps - 1) / ps * ps;
      EXPECT_EQ(reinterpret_cast<uintptr_t>(s.base) % ps, 0u);
      EXPECT_EQ(s.size(), want_size);
      EXPECT_EQ(s.guard_size, want_guard);
      EXPECT_EQ(s.map_size, want_size + want_guard);
      EXPECT_EQ(s.lo(), s.base + want_guard);
      EXPECT_EQ(s.hi(), s.base + s.map_size);
      EXPECT_EQ(static_cast<size_t>(s.hi() - s.lo()), s.size());
      EXPECT_EQ(s.guard, guard == 0 ? GuardKind::kNone : stack_guard_mechanism());
      EXPECT_EQ(s.in_guard(s.base), guard != 0);
      EXPECT_EQ(s.in_guard(s.lo() - 1), guard != 0);
      EXPECT_FALSE(s.in_guard(s.lo()));
      EXPECT_FALSE(s.in_guard(s.base - 1));
      EXPECT_TRUE(s.contains(s.base));
      EXPECT_TRUE(s.contains(s.hi() - 1));
      EXPECT_FALSE(s.contains(s.hi()));
      EXPECT_FALSE(s.contains(s.base - 1));
      // The whole usable range: zero at first, then holds what is written.
      volatile char* lo = s.lo();
      bool zero = true;
      for (size_t i = 0; i < s.size(); i += 64) zero &= lo[i] == 0;
      EXPECT_TRUE(zero);
      for (size_t i = 0; i < s.size(); ++i) lo[i] = static_cast<char>(i * 7 + 3);
      bool same = true;
      for (size_t i = 0; i < s.size(); ++i) same &= lo[i] == static_cast<char>(i * 7 + 3);
      EXPECT_TRUE(same);
      stack_release(&s);
    }
  }
}

// Size 0 and absurd sizes are refused with -EINVAL and a reason; the output
// is left alone and errno is not touched.
TEST(StackAllocate, RejectsZeroAndAbsurdSizes) {
  Stack s;
  s.base = reinterpret_cast<char*>(0x1234);  // a sentinel: must stay untouched
  const char* what = nullptr;
  errno = 12345;
  EXPECT_EQ(stack_allocate(0, page_size(), &s, &what), -EINVAL);
  EXPECT_EQ(errno, 12345);
  EXPECT_NE(what, nullptr);
  EXPECT_EQ(s.base, reinterpret_cast<char*>(0x1234));
  EXPECT_EQ(stack_allocate(size_t{1} << 41, page_size(), &s, nullptr), -EINVAL);
  EXPECT_EQ(stack_allocate(page_size(), size_t{1} << 41, &s, nullptr), -EINVAL);
  EXPECT_EQ(stack_allocate(~size_t{0}, 0, &s, nullptr), -EINVAL);
  EXPECT_EQ(errno, 12345);
  EXPECT_EQ(s.base, reinterpret_cast<char*>(0x1234));
}

// Release unmaps the whole mapping (guard included), clears the Stack, and a
// second release is a no-op.
TEST(StackAllocate, ReleaseUnmapsEverythingAndIsIdempotent) {
  Stack s;
  ASSERT_EQ(stack_allocate(64 * kKiB, 2 * page_size(), &s), 0);
  s.lo()[0] = 1;
  char* base = s.base;
  size_t len = s.map_size;
  EXPECT_GE(ResidentPages(base, len), 1);
  errno = 12345;
  stack_release(&s);
  EXPECT_EQ(errno, 12345);
  EXPECT_EQ(ResidentPages(base, len), -1) << "still mapped after stack_release";
  EXPECT_EQ(s.base, nullptr);
  EXPECT_EQ(s.map_size, 0u);
  EXPECT_EQ(s.guard_size, 0u);
  EXPECT_EQ(s.guard, GuardKind::kNone);
  stack_release(&s);  // no-op
  EXPECT_EQ(s.base, nullptr);
}

// ---------------------------------------------------------------------------
// Guards.

// Writing one byte just below lo(), or anywhere in a larger guard, kills the
// process with SIGSEGV.
TEST(StackGuardDeathTest, TouchingTheGuardFaults) {
  Stack s;
  ASSERT_EQ(stack_allocate(16 * kKiB, page_size(), &s), 0);
  ASSERT_NE(s.guard, GuardKind::kNone);
  EXPECT_EXIT(TouchAndSurvive(s.lo() - 1), testing::KilledBySignal(SIGSEGV), "");
  EXPECT_EXIT(TouchAndSurvive(s.base), testing::KilledBySignal(SIGSEGV), "");
  s.lo()[0] = 1;  // the byte just above is an ordinary stack byte
  stack_release(&s);

  Stack big;
  ASSERT_EQ(stack_allocate(16 * kKiB, 3 * page_size(), &big), 0);
  EXPECT_EXIT(TouchAndSurvive(big.base), testing::KilledBySignal(SIGSEGV), "");
  EXPECT_EXIT(TouchAndSurvive(big.base + page_size() + 5), testing::KilledBySignal(SIGSEGV), "");
  EXPECT_EXIT(TouchAndSurvive(big.lo() - 1), testing::KilledBySignal(SIGSEGV), "");
  stack_release(&big);
}

// Recursion `levels` deep with 1 KiB frames: every byte of every frame is
// written, so the first write below a stack lands in its (4 KiB) guard.
[[gnu::noipa]] int Recurse(int depth, int levels) {
  volatile char frame[1024];
  for (size_t i = 0; i < sizeof frame; ++i) frame[i] = static_cast<char>(depth);
  if (depth >= levels) return 0;
  return Recurse(depth + 1, levels) + frame[depth % sizeof frame];
}

struct OverflowCtx {
  Context main, ctx;
  Stack stack;
};

// About 48 KiB of frames: three times a 16 KiB stack.
constexpr int kOverflowLevels = 48;

void OverflowEntry(void*, void* arg) {
  context_entered();
  auto* o = static_cast<OverflowCtx*>(arg);
  Recurse(0, kOverflowLevels);
  context_exit_to(&o->ctx, &o->main, nullptr);
}

// Allocates a 16 KiB guarded stack with 64 KiB of writable memory mapped
// right below it, so that without a working guard a 48 KiB recursion would
// run on into that memory and return normally.
void AllocateStackAboveLandingZone(Stack* s) {
  constexpr size_t kLanding = 64 * kKiB;
  for (int attempt = 0; attempt < 16; ++attempt) {
    if (stack_allocate(16 * kKiB, page_size(), s) != 0) _exit(2);
    void* want = s->base - kLanding;
    void* got = mmap(want, kLanding, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (got == want) return;
    if (got != MAP_FAILED) munmap(got, kLanding);
    // Something else lives below this stack: keep it (so the next one lands
    // elsewhere) and try again.
  }
  _exit(3);
}

// Runs a context on a 16 KiB guarded stack that recurses 48 KiB deep.
void OverflowAContextStack() {
  NoCoreDump();
  OverflowCtx o;
  AllocateStackAboveLandingZone(&o.stack);
  context_init_native(&o.main);
  context_init(&o.ctx, o.stack.lo(), o.stack.size(), &OverflowEntry, &o);
  context_switch(&o.main, &o.ctx, nullptr);
  fprintf(stderr, "recursion returned\n");
  _exit(0);
}

// A context that overflows its 16 KiB guarded stack dies of SIGSEGV at the
// guard; it does not run on into the writable memory below.
TEST(StackGuardDeathTest, OverflowingAContextStackFaults) {
  EXPECT_EXIT(OverflowAContextStack(), testing::KilledBySignal(SIGSEGV), "");
}

// ---------------------------------------------------------------------------
// Many stacks.

// 200,000 guarded 16 KiB stacks exist at once, although with mprotect guards
// (two mappings per stack) they would need far more than vm.max_map_count
// mappings; the map count stays small, only touched pages are committed, and
// the guard of every stack is installed (pagemap reports a guard on each,
// and the first, a middle and the last one fault). Releasing them gives the
// memory and the mappings back.
TEST(StackManyDeathTest, TwoHundredThousandGuardedStacksCommitOnlyWhatIsTouched) {
  if (stack_guard_mechanism() != GuardKind::kMadvise)
    GTEST_SKIP() << "this kernel lacks MADV_GUARD_INSTALL (Linux 6.13+): guards would be "
                    "mprotect'ed, two mappings per stack, and 200,000 stacks cannot fit in "
                    "vm.max_map_count";
  constexpr size_t kStacks = 200'000, kSize = 16 * kKiB, kTouched = 20'000;
  const size_t ps = page_size();
  const long max_maps = MaxMapCount();
  ASSERT_GT(max_maps, 0);
  ASSERT_GT(static_cast<long>(kStacks), max_maps / 2)
      << "vm.max_map_count is so large that mprotect guards would also fit; the test "
         "would not show that guards cost no mappings";

  std::vector<Stack> stacks(kStacks);  // allocated and touched before the baseline
  const size_t rss0 = RssBytes();
  const long maps0 = CountMaps();
  const size_t pte0 = StatusKb("VmPTE:");

  size_t wrong_kind = 0;
  for (size_t i = 0; i < kStacks; ++i) {
    const char* what = nullptr;
    int r = stack_allocate(kSize, ps, &stacks[i], &what);
    ASSERT_EQ(r, 0) << "stack " << i << ": " << (what ? what : "");
    wrong_kind += stacks[i].guard != GuardKind::kMadvise;
  }
  EXPECT_EQ(wrong_kind, 0u);
  const size_t rss1 = RssBytes();
  const long maps1 = CountMaps();
  const size_t pte1 = StatusKb("VmPTE:");

  for (size_t i = 0; i < kTouched; ++i) stacks[i].hi()[-1] = 1;  // one page each
  const size_t rss2 = RssBytes();

  // Every guard is in place: pagemap marks guard pages (Linux 6.14+), if
  // this kernel reports them (checked on the first stack, which must then
  // have the bit on its guard and not on its stack).
  int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(pm, 0);
  bool pagemap_reports_guards = (PagemapEntry(pm, stacks[0].base) & kPagemapGuard) != 0;
  size_t missing_guards = 0, guard_bit_on_stack = 0;
  if (pagemap_reports_guards) {
    for (const Stack& s : stacks) {
      missing_guards += (PagemapEntry(pm, s.base) & kPagemapGuard) == 0;
      guard_bit_on_stack += (PagemapEntry(pm, s.hi() - 1) & kPagemapGuard) != 0;
    }
  }
  close(pm);
  EXPECT_EQ(missing_guards, 0u);
  EXPECT_EQ(guard_bit_on_stack, 0u);

  // The guards fault (the death-test child is a fork, so it has the same
  // mappings; this also shows that guards survive fork).
  EXPECT_EXIT(TouchAndSurvive(stacks[kStacks - 1].lo() - 1), testing::KilledBySignal(SIGSEGV), "");
  EXPECT_EXIT(TouchAndSurvive(stacks[kStacks / 2].lo() - 1), testing::KilledBySignal(SIGSEGV), "");
  EXPECT_EXIT(TouchAndSurvive(stacks[0].lo() - 1), testing::KilledBySignal(SIGSEGV), "");

  for (Stack& s : stacks) stack_release(&s);
  const size_t rss3 = RssBytes();
  const long maps3 = CountMaps();

  const double mib = static_cast<double>(kMiB);
  const double alloc_delta = (static_cast<double>(rss1) - static_cast<double>(rss0)) / mib;
  const double touch_delta = (static_cast<double>(rss2) - static_cast<double>(rss1)) / mib;
  const double expected_touch = static_cast<double>(kTouched * ps) / mib;
  const double release_delta = (static_cast<double>(rss3) - static_cast<double>(rss0)) / mib;
  printf("  vm.max_map_count %ld; maps: %ld before, %ld with %zu stacks, %ld after release\n",
         max_maps, maps0, maps1, kStacks, maps3);
  printf("  RSS: %+.1f MiB after allocating, %+.1f MiB after touching one page of %zu "
         "stacks (expected %.1f), %+.1f MiB after release vs. before\n",
         alloc_delta, touch_delta, kTouched, expected_touch, release_delta);
  printf("  page tables (VmPTE): %+.1f MiB for the guards; pagemap guard check: %s\n",
         (static_cast<double>(pte1) - static_cast<double>(pte0)) / mib,
         pagemap_reports_guards ? "all guards present" : "not reported by this kernel");
  RecordProperty("maps_with_stacks", std::to_string(maps1));
  RecordProperty("rss_alloc_delta_kib", std::to_string((static_cast<long>(rss1) - static_cast<long>(rss0)) / 1024));
  RecordProperty("rss_touch_delta_kib", std::to_string((static_cast<long>(rss2) - static_cast<long>(rss1)) / 1024));

  EXPECT_LT(maps1 - maps0, 1000) << "guard pages should not split mappings";
  EXPECT_LT(maps1, max_maps / 4);
  EXPECT_LT(alloc_delta, 32.0) << "allocation should commit nothing but page tables";
  EXPECT_GE(touch_delta, expected_touch * 0.95);
  // Not under TSan: its shadow memory (several bytes per byte touched, kept
  // after munmap) doubles the RSS a touch costs and stays after release.
  if (!kUnderTsan) {
    EXPECT_LE(touch_delta, expected_touch * 1.10 + 2.0);
    EXPECT_LT(release_delta, 8.0);
  }
  EXPECT_LT(maps3 - maps0, 10);
}

// stack_release must never silently forget a mapping that still holds
// memory. Stacks allocated one after another merge into one kernel mapping;
// releasing every other one splits it, and past vm.max_map_count munmap
// fails with ENOMEM. Whatever stack_release does then, afterwards each
// released stack must be unmapped, or hold no committed page, or still be
// described by its Stack (so the caller can retry or reuse it).
TEST(StackRelease, ReleasingOutOfOrderNeverLeaksCommittedMemory) {
  if (stack_guard_mechanism() != GuardKind::kMadvise)
    GTEST_SKIP() << "needs MADV_GUARD_INSTALL (Linux 6.13+) to allocate 200,000 guarded stacks";
  constexpr size_t kStacks = 200'000, kSize = 16 * kKiB;
  std::vector<Stack> stacks(kStacks), copy;
  for (size_t i = 0; i < kStacks; ++i) ASSERT_EQ(stack_allocate(kSize, page_size(), &stacks[i]), 0);
  // Commit one page in every tenth of the stacks that will be released.
  for (size_t i = 0; i < kStacks; i += 20) stacks[i].hi()[-1] = 1;
  copy = stacks;
  const long max_maps = MaxMapCount();

  for (size_t i = 0; i < kStacks; i += 2) stack_release(&stacks[i]);
  const long maps_after = CountMaps();
  size_t leaked = 0, still_mapped = 0;
  for (size_t i = 0; i < kStacks; i += 2) {
    long resident = ResidentPages(copy[i].base, copy[i].map_size);
    if (resident == -1) continue;  // unmapped: fine
    ++still_mapped;
    if (resident > 0 && stacks[i].base == nullptr) ++leaked;
  }
  printf("  released %zu of %zu stacks (every other one): maps %ld (limit %ld); "
         "%zu released stacks still mapped; %zu of the %zu touched ones still committed "
         "and forgotten\n",
         kStacks / 2, kStacks, maps_after, max_maps, still_mapped, leaked, kStacks / 20);
  EXPECT_EQ(leaked, 0u) << "stack_release ignored a failed munmap (ENOMEM at vm.max_map_count) "
                           "and cleared the Stack: its committed pages are leaked";

  // Clean up, also what stack_release left behind: once the odd stacks are
  // gone the holes merge back and munmap succeeds.
  for (size_t i = 1; i < kStacks; i += 2) stack_release(&stacks[i]);
  for (size_t i = 0; i < kStacks; i += 2) {
    if (stacks[i].base != nullptr) stack_release(&stacks[i]);
    if (ResidentPages(copy[i].base, copy[i].map_size) != -1) munmap(copy[i].base, copy[i].map_size);
  }
  size_t remaining = 0;
  for (size_t i = 0; i < kStacks; ++i) remaining += ResidentPages(copy[i].base, copy[i].map_size) != -1;
  EXPECT_EQ(remaining, 0u);
}

// ---------------------------------------------------------------------------
// Decommit.

// stack_decommit gives the committed pages of the usable range back, except
// the topmost `keep` bytes (rounded up to pages), whose contents stay; the
// decommitted part reads as zero and can be written again; RSS drops
// accordingly; keep >= size changes nothing.
TEST(StackDecommit, GivesPagesBackKeepsTheTopAndStaysUsable) {
  const size_t ps = page_size();
  constexpr size_t kSize = 8 * kMiB, kKeep = 64 * kKiB;
  Stack s;
  ASSERT_EQ(stack_allocate(kSize, ps, &s), 0);
  const size_t pages = s.size() / ps;
  for (size_t i = 0; i < s.size(); i += ps) s.lo()[i] = static_cast<char>(1 + i / ps % 200);
  ASSERT_EQ(ResidentPages(s.lo(), s.size()), static_cast<long>(pages));

  // keep >= size: nothing to do.
  errno = 12345;
  EXPECT_EQ(stack_decommit(s, s.size()), 0);
  EXPECT_EQ(stack_decommit(s, s.size() + 1), 0);
  EXPECT_EQ(errno, 12345);
  EXPECT_EQ(ResidentPages(s.lo(), s.size()), static_cast<long>(pages));

  const size_t rss_before = RssBytes();
  EXPECT_EQ(stack_decommit(s, kKeep), 0);
  EXPECT_EQ(errno, 12345);
  const size_t rss_after = RssBytes();
  const size_t kept_pages = kKeep / ps;
  EXPECT_EQ(ResidentPages(s.lo(), s.size() - kKeep), 0);
  EXPECT_EQ(ResidentPages(s.hi() - kKeep, kKeep), static_cast<long>(kept_pages));
  const double dropped = (static_cast<double>(rss_before) - static_cast<double>(rss_after)) / kMiB;
  const double expected = static_cast<double>(s.size() - kKeep) / kMiB;
  printf("  decommit of %.2f MiB: RSS dropped by %.2f MiB\n", expected, dropped);
  EXPECT_GE(dropped, expected - 1.0);
  EXPECT_LE(dropped, expected + 1.0);

  bool kept_intact = true, zeroed = true;
  for (size_t i = s.size() - kKeep; i < s.size(); i += ps)
    kept_intact &= s.lo()[i] == static_cast<char>(1 + i / ps % 200);
  for (size_t i = 0; i < s.size() - kKeep; i += ps) zeroed &= s.lo()[i] == 0;
  EXPECT_TRUE(kept_intact);
  EXPECT_TRUE(zeroed);

  // Usable again.
  for (size_t i = 0; i < s.size(); i += ps) s.lo()[i] = static_cast<char>(7 + i / ps % 100);
  bool rewritten = true;
  for (size_t i = 0; i < s.size(); i += ps) rewritten &= s.lo()[i] == static_cast<char>(7 + i / ps % 100);
  EXPECT_TRUE(rewritten);
  EXPECT_EQ(ResidentPages(s.lo(), s.size()), static_cast<long>(pages));

  // keep is rounded up to a page: keep = 1 keeps the top page.
  EXPECT_EQ(stack_decommit(s, 1), 0);
  EXPECT_EQ(ResidentPages(s.lo(), s.size()), 1);
  EXPECT_EQ(ResidentPages(s.hi() - ps, ps), 1);
  stack_release(&s);
}

// The guard is still in place after a decommit.
TEST(StackDecommitDeathTest, GuardSurvivesDecommit) {
  Stack s;
  ASSERT_EQ(stack_allocate(64 * kKiB, page_size(), &s), 0);
  memset(s.lo(), 1, s.size());
  ASSERT_EQ(stack_decommit(s, 0), 0);
  EXPECT_EXIT(TouchAndSurvive(s.lo() - 1), testing::KilledBySignal(SIGSEGV), "");
  s.lo()[0] = 1;
  stack_release(&s);
}

// ---------------------------------------------------------------------------
// The mprotect fallback.

// Makes madvise(..., MADV_GUARD_INSTALL) fail with EINVAL in this process, as
// it does on kernels before 6.13 (an unknown advice); all else is allowed.
bool EmulateKernelWithoutGuardInstall() {
  constexpr int kMadvGuardInstall = 102;
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_madvise, 0, 3),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, args[2])),  // low half
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kMadvGuardInstall, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EINVAL),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog prog{static_cast<unsigned short>(sizeof filter / sizeof filter[0]), filter};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return false;
  if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) return false;
  // Check the emulation itself.
  void* p = mmap(nullptr, page_size(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  long r = raw_syscall(SYS_madvise, reinterpret_cast<long>(p), static_cast<long>(page_size()),
                       kMadvGuardInstall);
  munmap(p, page_size());
  return r == -EINVAL;
}

#define CHILD_CHECK(cond, ...)                        \
  do {                                                \
    if (!(cond)) {                                    \
      fprintf(stderr, "check failed: %s: ", #cond);   \
      fprintf(stderr, __VA_ARGS__);                   \
      fprintf(stderr, "\n");                          \
      _exit(1);                                       \
    }                                                 \
  } while (0)

// In a child process that sees a kernel without MADV_GUARD_INSTALL: stacks
// get mprotect guards (which fault), and once the mappings they split reach
// vm.max_map_count, stack_allocate fails with -ENOMEM and a message naming
// vm.max_map_count, leaving no half-made stack mapped.
void MprotectFallbackChild() {
  NoCoreDump();
  CHILD_CHECK(EmulateKernelWithoutGuardInstall(), "cannot install the seccomp filter");
  const long max_maps = MaxMapCount();
  static Stack stacks[200'000];
  size_t n = 0;
  int r = 0;
  const char* what = nullptr;
  for (; n < sizeof stacks / sizeof stacks[0]; ++n) {
    r = stack_allocate(16 * kKiB, page_size(), &stacks[n], &what);
    if (r != 0) break;
    CHILD_CHECK(stacks[n].guard == GuardKind::kMprotect, "stack %zu has guard kind %d", n,
                static_cast<int>(stacks[n].guard));
  }
  CHILD_CHECK(r == -ENOMEM, "stack_allocate returned %d after %zu stacks", r, n);
  CHILD_CHECK(what != nullptr && strstr(what, "vm.max_map_count") != nullptr,
              "the message does not name vm.max_map_count: %s", what ? what : "(null)");
  CHILD_CHECK(n <= static_cast<size_t>(max_maps / 2) && n > static_cast<size_t>(max_maps / 2) - 2000,
              "%zu stacks with mprotect guards under vm.max_map_count %ld", n, max_maps);
  // Failed allocations leave nothing mapped: further attempts fail the same
  // way and the map count does not move.
  const long maps_at_limit = CountMaps();
  for (int i = 0; i < 3; ++i) {
    Stack extra;
    int again = stack_allocate(16 * kKiB, page_size(), &extra, nullptr);
    CHILD_CHECK(again == -ENOMEM, "attempt %d after the limit returned %d", i, again);
  }
  CHILD_CHECK(CountMaps() == maps_at_limit, "failed allocations left mappings behind: %ld -> %ld",
              maps_at_limit, CountMaps());
  CHILD_CHECK(stack_guard_mechanism() == GuardKind::kMprotect, "mechanism %d",
              static_cast<int>(stack_guard_mechanism()));
  // The mprotect guards fault: touch the last stack's guard in a grandchild.
  pid_t pid = fork();
  if (pid == 0) TouchAndSurvive(stacks[n - 1].lo() - 1);
  int status = 0;
  CHILD_CHECK(pid > 0 && waitpid(pid, &status, 0) == pid, "fork/waitpid");
  CHILD_CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV, "guard did not fault: %#x",
              status);
  fprintf(stderr, "mprotect fallback ok: %zu stacks, then -ENOMEM: %s\n", n, what);
  _exit(0);
}

TEST(StackMprotectFallbackDeathTest, GuardsFaultAndTheMapCountLimitIsReportedClearly) {
  EXPECT_EXIT(MprotectFallbackChild(), testing::ExitedWithCode(0), "mprotect fallback ok");
}

// ---------------------------------------------------------------------------
// Signal stacks.

// The handlers below locate themselves by their frame address, not by the
// address of a local: under ASan's detect_stack_use_after_return a local
// lives on a heap "fake stack".
uintptr_t g_handler_frame = 0;
void RecordFrame(int) {
  g_handler_frame = reinterpret_cast<uintptr_t>(__builtin_frame_address(0));
}

// altstack_allocate maps a guarded stack of at least the requested size and
// 4x the kernel's minimum; install makes it the thread's signal stack (a
// SA_ONSTACK handler runs on it); uninstall disables it; release unmaps it.
TEST(AltStack, AllocateInstallUninstallRelease) {
  std::thread([] {
    const size_t min = std::max<size_t>(getauxval(AT_MINSIGSTKSZ), MINSIGSTKSZ);
    AltStack small;
    ASSERT_EQ(altstack_allocate(1, &small), 0);
    EXPECT_GE(small.stack.size(), 4 * min);
    EXPECT_NE(small.stack.guard, GuardKind::kNone);
    altstack_release(&small);
    EXPECT_EQ(small.stack.base, nullptr);

    AltStack a;
    ASSERT_EQ(altstack_allocate(256 * kKiB, &a), 0);
    EXPECT_GE(a.stack.size(), 256 * kKiB);
    EXPECT_NE(a.stack.guard, GuardKind::kNone);

    errno = 12345;
    ASSERT_EQ(altstack_install(a), 0);
    EXPECT_EQ(errno, 12345);
    stack_t cur{};
    ASSERT_EQ(sigaltstack(nullptr, &cur), 0);
    EXPECT_EQ(cur.ss_sp, a.stack.lo());
    EXPECT_EQ(cur.ss_size, a.stack.size());
    EXPECT_EQ(cur.ss_flags, 0);

    struct sigaction sa {}, old {};
    sa.sa_handler = &RecordFrame;
    sa.sa_flags = SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    ASSERT_EQ(sigaction(SIGUSR2, &sa, &old), 0);
    g_handler_frame = 0;
    ASSERT_EQ(tgkill(getpid(), gettid(), SIGUSR2), 0);  // delivered before tgkill returns
    // Not under TSan: it defers an asynchronous signal and runs the handler
    // later from its own code on the normal stack.
    if (!kUnderTsan) {
      EXPECT_TRUE(a.stack.contains(reinterpret_cast<void*>(g_handler_frame)))
          << "handler ran at " << reinterpret_cast<void*>(g_handler_frame);
    }

    errno = 12345;
    EXPECT_EQ(altstack_uninstall(), 0);
    EXPECT_EQ(errno, 12345);
    ASSERT_EQ(sigaltstack(nullptr, &cur), 0);
    EXPECT_EQ(cur.ss_flags, SS_DISABLE);
    g_handler_frame = 0;
    ASSERT_EQ(tgkill(getpid(), gettid(), SIGUSR2), 0);
    EXPECT_FALSE(a.stack.contains(reinterpret_cast<void*>(g_handler_frame)));
    sigaction(SIGUSR2, &old, nullptr);

    char* base = a.stack.base;
    size_t len = a.stack.map_size;
    altstack_release(&a);
    EXPECT_EQ(ResidentPages(base, len), -1);
  }).join();
}

// State for the SIGSEGV handler of the overflow tests.
uintptr_t g_alt_lo, g_alt_hi;      // the signal stack
uintptr_t g_guard_lo, g_guard_hi;  // where the fault must be (0, 0: not checked)

void OnOverflow(int, siginfo_t* si, void*) {
  auto at = reinterpret_cast<uintptr_t>(__builtin_frame_address(0));  // see RecordFrame
  if (at < g_alt_lo || at >= g_alt_hi) {
    fprintf(stderr, "handler runs at %#lx, not on the signal stack [%#lx, %#lx)\n", at, g_alt_lo,
            g_alt_hi);
    _exit(43);
  }
  auto addr = reinterpret_cast<uintptr_t>(si->si_addr);
  if (g_guard_hi != 0 && (addr < g_guard_lo || addr >= g_guard_hi)) {
    fprintf(stderr, "fault at %#lx, not in the guard [%#lx, %#lx)\n", addr, g_guard_lo, g_guard_hi);
    _exit(44);
  }
  _exit(42);
}

// Gives the calling thread a signal stack and the SA_ONSTACK SIGSEGV handler.
void InstallOverflowHandler(AltStack* alt) {
  if (altstack_allocate(64 * kKiB, alt) != 0 || altstack_install(*alt) != 0) _exit(2);
  g_alt_lo = reinterpret_cast<uintptr_t>(alt->stack.lo());
  g_alt_hi = reinterpret_cast<uintptr_t>(alt->stack.hi());
  struct sigaction sa {};
  sa.sa_sigaction = &OnOverflow;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGSEGV, &sa, nullptr) != 0) _exit(2);
}

void OverflowContextOnThreadWithAltStack() {
  NoCoreDump();
  std::thread([] {
    AltStack alt;
    InstallOverflowHandler(&alt);
    OverflowCtx o;
    AllocateStackAboveLandingZone(&o.stack);
    g_guard_lo = reinterpret_cast<uintptr_t>(o.stack.base);
    g_guard_hi = reinterpret_cast<uintptr_t>(o.stack.lo());
    context_init_native(&o.main);
    context_init(&o.ctx, o.stack.lo(), o.stack.size(), &OverflowEntry, &o);
    context_switch(&o.main, &o.ctx, nullptr);
  }).join();
  _exit(0);
}

// A thread running a context that overflows its guarded stack gets SIGSEGV
// for an address in that stack's guard, and the SA_ONSTACK handler runs on
// the thread's signal stack (it exits with 42 when both hold).
TEST(AltStackDeathTest, ContextStackOverflowIsHandledOnTheSignalStack) {
  EXPECT_EXIT(OverflowContextOnThreadWithAltStack(), testing::ExitedWithCode(42), "");
}

void* OverflowOwnStack(void*) {
  AltStack alt;
  InstallOverflowHandler(&alt);
  pthread_attr_t attr;
  void* lo = nullptr;
  size_t size = 0, guard = 0;
  if (pthread_getattr_np(pthread_self(), &attr) != 0) _exit(2);
  pthread_attr_getstack(&attr, &lo, &size);
  pthread_attr_getguardsize(&attr, &guard);
  pthread_attr_destroy(&attr);
  g_guard_lo = reinterpret_cast<uintptr_t>(lo) - guard;  // glibc's guard is below the stack
  g_guard_hi = reinterpret_cast<uintptr_t>(lo);
  Recurse(0, 1'000'000);  // far beyond the 128 KiB stack
  return nullptr;
}

void OverflowThreadStackWithAltStack() {
  NoCoreDump();
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 128 * kKiB);
  pthread_t t;
  if (pthread_create(&t, &attr, &OverflowOwnStack, nullptr) != 0) _exit(2);
  pthread_join(t, nullptr);
  _exit(0);
}

// The same for a thread that overflows its own (glibc) stack: the handler
// runs on the signal stack installed with altstack_install.
TEST(AltStackDeathTest, ThreadStackOverflowIsHandledOnTheSignalStack) {
  EXPECT_EXIT(OverflowThreadStackWithAltStack(), testing::ExitedWithCode(42), "");
}

}  // namespace
}  // namespace weft::sys
