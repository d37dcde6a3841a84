// sys/stack.h — guarded, lazily committed stacks, and per-KLT signal stacks.
//
// A Stack is one anonymous private mapping (MAP_NORESERVE: nothing is
// committed until touched) laid out as
//
//     base                      base+guard_size                base+map_size
//     | guard (no access)       | usable stack, grows down  <--|
//
// The guard is the seed's "red zone": running off the bottom of the stack
// faults instead of overwriting a neighbour. It is installed with
// madvise(MADV_GUARD_INSTALL) where the kernel has it (Linux 6.13+), which
// adds no mapping, so a million guarded stacks fit in vm.max_map_count; else
// with mprotect(PROT_NONE), which splits the mapping and stops near 32,000
// stacks under the default limit. When the mprotect budget is spent,
// stack_allocate fails with -ENOMEM and says so in `*what`; it never hands out
// a stack without the guard that was asked for.
//
// All functions are thread-safe and return 0 or -errno; none touches errno.
#pragma once

#include <cstddef>
#include <cstdint>

namespace weft::sys {

// How a stack's guard region was installed.
enum class GuardKind : uint8_t { kNone, kMadvise, kMprotect };

struct Stack {
  char* base = nullptr;    // lowest address of the mapping (start of the guard)
  size_t map_size = 0;     // whole mapping, guard included
  size_t guard_size = 0;   // bytes of guard at `base`
  GuardKind guard = GuardKind::kNone;

  char* lo() const { return base + guard_size; }   // lowest usable byte
  char* hi() const { return base + map_size; }     // one past the highest byte: the initial sp
  size_t size() const { return map_size - guard_size; }
  bool in_guard(const void* p) const {
    auto* c = static_cast<const char*>(p);
    return c >= base && c < base + guard_size;
  }
  bool contains(const void* p) const {
    auto* c = static_cast<const char*>(p);
    return c >= base && c < base + map_size;
  }
};

// The page size (queried once).
size_t page_size();

// Rounds `n` up to a whole number of pages.
size_t round_to_pages(size_t n);

// Maps a stack of at least `size` usable bytes (rounded up to pages) with
// `guard` bytes of guard below it (rounded up to pages; 0 means no guard).
// On success returns 0 and fills `*out`. Errors: -EINVAL (size 0 or
// absurdly large), -ENOMEM (no address space, or the mapping budget for
// mprotect guards is spent; `*what` says which). `what` may be null.
int stack_allocate(size_t size, size_t guard, Stack* out, const char** what = nullptr);

// Unmaps a stack (guard included) and clears `*s`; idempotent. Returns 0,
// or -errno if munmap failed — which happens when releasing a stack from the
// middle of a larger mapping would split it beyond vm.max_map_count: then
// the stack's pages are given back (MADV_DONTNEED), `*s` is left intact and
// the stack stays usable, and the caller should keep it (to reuse or to
// release again later) rather than lose it.
int stack_release(Stack* s);

// Gives the committed pages of the usable range back to the kernel except
// the topmost `keep` bytes; the guard stays. For caching idle stacks.
int stack_decommit(const Stack& s, size_t keep);

// Which guard mechanism new stacks get on this kernel (probed on first use).
GuardKind stack_guard_mechanism();

// Fault injection for tests (tests/runtime_fault_test.cc): the next `n`
// stack mappings (stack_allocate, altstack_allocate; any thread) fail as if
// mmap had returned ENOMEM. 0 turns it off.
void stack_test_fail_next_mmaps(int n);
// True while injected mmap failures are pending (caches of stacks are then
// bypassed, so that the failure reaches the caller).
bool stack_test_mmap_failures_pending();

// For tests: make new stacks use mprotect guards, as on a kernel without
// MADV_GUARD_INSTALL (so vm.max_map_count limits them).
void stack_test_force_mprotect_guards();

// A signal stack for one KLT (sigaltstack(2)), so that a handler can run
// when the thread's own stack is exhausted (a stack overflow report).
struct AltStack {
  Stack stack;
};

// The usable size altstack_allocate(size) gives: `size`, raised to four
// times the kernel's minimum signal stack, rounded to pages.
size_t altstack_size(size_t size);

// Maps a guarded signal stack of altstack_size(size) bytes with a one-page
// guard. Does not install it.
int altstack_allocate(size_t size, AltStack* out);

// Installs `a` as the calling thread's signal stack. Returns 0 or -errno.
int altstack_install(const AltStack& a);

// Disables the calling thread's signal stack (it must not be running on it).
int altstack_uninstall();

// Unmaps a signal stack that no thread has installed (see stack_release).
int altstack_release(AltStack* a);

}  // namespace weft::sys
