// sys/stack.cc — mapping, guarding, decommitting and caching stacks (stack.h).
#include "sys/stack.h"

#include <signal.h>
#include <sys/auxv.h>
#include <sys/mman.h>

#include <atomic>
#include <cerrno>

#include "sys/raw_syscall.h"

namespace weft::sys {
namespace {

constexpr int kMadvGuardInstall = 102;  // Linux 6.13, not yet in Debian 12's headers
constexpr size_t kMaxStack = size_t{1} << 40;

// 0: not probed; otherwise a GuardKind. Probing races are benign: every
// prober reaches the same answer.
std::atomic<uint8_t> guard_mechanism{0};

std::atomic<int> fail_mmaps{0};  // stack_test_fail_next_mmaps

long do_mmap(size_t len) {
  for (int n = fail_mmaps.load(std::memory_order_relaxed); n > 0;) {
    if (fail_mmaps.compare_exchange_weak(n, n - 1, std::memory_order_relaxed)) return -ENOMEM;
  }
  return raw_syscall(SYS_mmap, 0, static_cast<long>(len), PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
}

int install_guard(char* base, size_t guard, GuardKind* kind, const char** what) {
  auto known = static_cast<GuardKind>(guard_mechanism.load(std::memory_order_relaxed));
  if (known != GuardKind::kMprotect) {
    long r = raw_syscall(SYS_madvise, reinterpret_cast<long>(base), static_cast<long>(guard),
                         kMadvGuardInstall);
    if (r == 0) {
      guard_mechanism.store(static_cast<uint8_t>(GuardKind::kMadvise), std::memory_order_relaxed);
      *kind = GuardKind::kMadvise;
      return 0;
    }
    if (r != -EINVAL) {
      if (what) *what = "madvise(MADV_GUARD_INSTALL) failed on a fresh stack mapping";
      return static_cast<int>(r);
    }
    guard_mechanism.store(static_cast<uint8_t>(GuardKind::kMprotect), std::memory_order_relaxed);
  }
  long r = raw_syscall(SYS_mprotect, reinterpret_cast<long>(base), static_cast<long>(guard), PROT_NONE);
  if (r == 0) {
    *kind = GuardKind::kMprotect;
    return 0;
  }
  if (what) {
    *what = r == -ENOMEM
                ? "cannot install a stack guard page: mprotect guards split mappings and the "
                  "process has reached vm.max_map_count (this kernel lacks "
                  "MADV_GUARD_INSTALL, Linux 6.13+); raise vm.max_map_count or use fewer stacks"
                : "mprotect of a stack guard page failed";
  }
  return static_cast<int>(r);
}

}  // namespace

size_t page_size() {
  static const size_t ps = static_cast<size_t>(getauxval(AT_PAGESZ));
  return ps;
}

size_t round_to_pages(size_t n) {
  size_t ps = page_size();
  return (n + ps - 1) & ~(ps - 1);
}

int stack_allocate(size_t size, size_t guard, Stack* out, const char** what) {
  if (size == 0 || size > kMaxStack || guard > kMaxStack) {
    if (what) *what = "stack size is zero or larger than 1 TiB";
    return -EINVAL;
  }
  size = round_to_pages(size);
  guard = round_to_pages(guard);
  long m = do_mmap(size + guard);
  if (is_error(m)) {
    if (what) *what = "mmap of a stack failed (out of address space or memory)";
    return static_cast<int>(m);
  }
  Stack s;
  s.base = reinterpret_cast<char*>(m);
  s.map_size = size + guard;
  s.guard_size = guard;
  if (guard > 0) {
    int r = install_guard(s.base, guard, &s.guard, what);
    if (r != 0) {
      raw_syscall(SYS_munmap, m, static_cast<long>(s.map_size));
      return r;
    }
  }
  *out = s;
  return 0;
}

int stack_release(Stack* s) {
  if (s->base == nullptr) return 0;
  long r = raw_syscall(SYS_munmap, reinterpret_cast<long>(s->base), static_cast<long>(s->map_size));
  if (r != 0) {
    // Keep the mapping (and its guard) but give its memory back.
    raw_syscall(SYS_madvise, reinterpret_cast<long>(s->lo()), static_cast<long>(s->size()), MADV_DONTNEED);
    return static_cast<int>(r);
  }
  *s = Stack{};
  return 0;
}

int stack_decommit(const Stack& s, size_t keep) {
  keep = round_to_pages(keep);
  if (keep >= s.size()) return 0;
  // MADV_DONTNEED keeps MADV_GUARD_INSTALL guards; the guard is not in range anyway.
  return static_cast<int>(raw_syscall(SYS_madvise, reinterpret_cast<long>(s.lo()),
                                      static_cast<long>(s.size() - keep), MADV_DONTNEED));
}

GuardKind stack_guard_mechanism() {
  auto known = static_cast<GuardKind>(guard_mechanism.load(std::memory_order_relaxed));
  if (known != GuardKind::kNone) return known;
  Stack probe;
  if (stack_allocate(page_size(), page_size(), &probe) != 0) return GuardKind::kNone;
  GuardKind k = probe.guard;
  (void)stack_release(&probe);
  return k;
}

void stack_test_fail_next_mmaps(int n) { fail_mmaps.store(n, std::memory_order_relaxed); }

bool stack_test_mmap_failures_pending() { return fail_mmaps.load(std::memory_order_relaxed) > 0; }

void stack_test_force_mprotect_guards() {
  guard_mechanism.store(static_cast<uint8_t>(GuardKind::kMprotect), std::memory_order_relaxed);
}

size_t altstack_size(size_t size) {
  size_t min = getauxval(AT_MINSIGSTKSZ);
  if (min < static_cast<size_t>(MINSIGSTKSZ)) min = MINSIGSTKSZ;
  if (size < 4 * min) size = 4 * min;
  return round_to_pages(size);
}

int altstack_allocate(size_t size, AltStack* out) {
  return stack_allocate(altstack_size(size), page_size(), &out->stack);
}

int altstack_install(const AltStack& a) {
  stack_t ss{};
  ss.ss_sp = a.stack.lo();
  ss.ss_size = a.stack.size();
  ss.ss_flags = 0;
  return static_cast<int>(raw_syscall(SYS_sigaltstack, reinterpret_cast<long>(&ss), 0));
}

int altstack_uninstall() {
  stack_t ss{};
  ss.ss_flags = SS_DISABLE;
  return static_cast<int>(raw_syscall(SYS_sigaltstack, reinterpret_cast<long>(&ss), 0));
}

int altstack_release(AltStack* a) { return stack_release(&a->stack); }

}  // namespace weft::sys
