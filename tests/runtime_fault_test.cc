// tests/runtime_fault_test.cc — fault injection (issue 9 "Fault injection"
// gates, the sys/ pieces): stack mmap failure during spawn, and
// vm.max_map_count reached with mprotect guards. Each expects a clear
// ResourceExhausted from spawn, nothing leaked, and a runtime that still
// works afterwards. (clone3 refused with EPERM: tests/sys_klt_test.cc.)
#include <dirent.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <weft/weft.h>

#include "runtime/ult.h"
#include "tests/sanitizers.h"
#include "sys/stack.h"

namespace {

int ThreadCount() {
  int n = 0;
  if (DIR* d = opendir("/proc/self/task")) {
    while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
    closedir(d);
  }
  return n;
}

// Mappings of exactly `bytes` bytes in /proc/self/maps.
long CountMapsOfSize(size_t bytes) {
  FILE* f = fopen("/proc/self/maps", "re");
  if (f == nullptr) return -1;
  long n = 0;
  unsigned long lo = 0, hi = 0;
  char line[512];
  while (fgets(line, sizeof line, f) != nullptr) {
    if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && hi - lo == bytes) ++n;
  }
  fclose(f);
  return n;
}

// A stack mmap that fails during spawn makes that spawn return
// ResourceExhausted naming the cause; the descriptor goes back to the table
// (1000 failed spawns grow it by at most one), no mapping is left behind,
// and the next spawn works. The same for a bound ULT, whose kernel thread's
// stack cannot be mapped: no thread is left behind.
TEST(FaultInjection, StackMmapFailureDuringSpawn) {
  weft::Runtime rt(weft::Options{.workers = 2});
  ASSERT_TRUE(rt.status().ok());
  // A size nothing else caches, different in every run (--gtest_repeat).
  static size_t run = 0;
  const size_t kOddStack = (3 + 2 * run++) * 64 * 1024;
  ASSERT_TRUE(rt.spawn([] {}, weft::SpawnOptions{.stack_size = kOddStack}).join().ok());
  const uint64_t mapped = rt.stats().stacks_mapped;
  const uint64_t table = weft::rt::ult_table::size();
  const size_t failing_map = kOddStack + 4096 + weft::Options{}.guard_size;  // stack + guard
  const long maps = CountMapsOfSize(failing_map);
  for (int i = 0; i < 1000; ++i) {
    weft::sys::stack_test_fail_next_mmaps(1);
    // A size no descriptor in the caches has: the spawn must map.
    weft::Ult u = rt.spawn([] {}, weft::SpawnOptions{.stack_size = kOddStack + 4096});
    weft::sys::stack_test_fail_next_mmaps(0);
    ASSERT_FALSE(u.status().ok()) << "spawn " << i << " succeeded although its stack mmap failed";
    ASSERT_TRUE(absl::IsResourceExhausted(u.status())) << u.status();
    ASSERT_NE(u.status().message().find("mmap"), absl::string_view::npos) << u.status();
    ASSERT_FALSE(u.joinable());
  }
  EXPECT_LE(weft::rt::ult_table::size(), table + 1) << "failed spawns leaked descriptors";
  EXPECT_EQ(rt.stats().stacks_mapped, mapped);
  EXPECT_EQ(CountMapsOfSize(failing_map), maps) << "failed spawns left stack mappings behind";
  EXPECT_TRUE(rt.spawn([] {}, weft::SpawnOptions{.stack_size = kOddStack + 4096}).join().ok());

  const int threads = ThreadCount();
  for (int i = 0; i < 20; ++i) {
    weft::sys::stack_test_fail_next_mmaps(1);
    weft::Ult u = rt.spawn([] {}, weft::SpawnOptions{.bound = true});
    weft::sys::stack_test_fail_next_mmaps(0);
    ASSERT_TRUE(absl::IsResourceExhausted(u.status())) << u.status();
  }
  EXPECT_EQ(rt.stats().bound_threads, 0);
  EXPECT_EQ(ThreadCount(), threads) << "failed bound spawns left kernel threads behind";
  EXPECT_TRUE(rt.spawn([] {}, weft::SpawnOptions{.bound = true}).join().ok());
  EXPECT_EQ(rt.stats().live, 0u);
}

// With mprotect guards (a kernel without MADV_GUARD_INSTALL), reaching
// vm.max_map_count makes spawn fail with ResourceExhausted and a message
// naming vm.max_map_count; once mappings are freed the runtime works. In a
// child process, which fills its own map count (the sysctl is system-wide:
// lowering it would hurt other processes).
[[noreturn]] void MapCountChild() {
  alarm(120);
  weft::sys::stack_test_force_mprotect_guards();
  weft::Runtime rt(weft::Options{.workers = 1});
  if (!rt.status().ok()) {
    fprintf(stderr, "runtime: %s\n", std::string(rt.status().message()).c_str());
    _exit(2);
  }
  if (!rt.spawn([] {}).join().ok()) _exit(3);
  // Fill the map count with one-page mappings that cannot merge
  // (alternating protections).
  static void* maps[1 << 17];
  size_t n = 0;
  for (; n < sizeof maps / sizeof maps[0]; ++n) {
    void* p = mmap(nullptr, 4096, n % 2 ? PROT_READ : PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) break;
    maps[n] = p;
  }
  if (errno != ENOMEM || n < 1000) {
    fprintf(stderr, "could not fill the map count: %zu mappings, %s\n", n, strerror(errno));
    _exit(4);
  }
  // One slot free: the stack's mmap fits, its guard's mprotect split does not.
  munmap(maps[--n], 4096);
  constexpr size_t kOdd = 5 * 64 * 1024;
  weft::Ult u = rt.spawn([] {}, weft::SpawnOptions{.stack_size = kOdd});
  std::string msg(u.status().message());
  if (u.status().ok() || !absl::IsResourceExhausted(u.status()) || msg.find("vm.max_map_count") == std::string::npos) {
    fprintf(stderr, "spawn at the map-count limit: %s\n", u.status().ToString().c_str());
    _exit(5);
  }
  for (int i = 0; i < 200; ++i) munmap(maps[--n], 4096);
  absl::Status s = rt.spawn([] {}, weft::SpawnOptions{.stack_size = kOdd}).join();
  if (!s.ok()) {
    fprintf(stderr, "spawn after freeing mappings: %s\n", s.ToString().c_str());
    _exit(6);
  }
  fprintf(stderr, "map count ok: %s\n", msg.c_str());
  _exit(0);
}

TEST(FaultInjectionDeathTest, MapCountReachedWithMprotectGuards) {
  WEFT_SKIP_UNDER_ASAN("ASan's own allocator maps memory (and its shadow) as it goes; at the mapping limit it "
                       "aborts with \"allocator is out of memory\" before weft's spawn can fail cleanly");
  WEFT_SKIP_UNDER_TSAN("TSan's allocator maps memory (and shadow) as it goes; at the mapping limit it aborts "
                       "with \"allocator is out of memory\" before weft's spawn can fail cleanly");
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(MapCountChild(), ::testing::ExitedWithCode(0), "map count ok: .*vm.max_map_count");
}

}  // namespace
