// runtime/death_row.h — where released ULT descriptors wait to be reused.
//
// The seed's death row: a ULT that has exited is not freed at once. When it
// has been joined or detached (runtime/ult_life.cc, release()), its
// descriptor — with its stack — goes to the releasing worker's LocalCache if
// the stack has that worker's default size, from which the next spawn on
// that worker takes it without a lock and without mmap. Otherwise, and when
// a LocalCache overflows, it goes to the process-wide DeathRow, sorted by
// stack size; spawns from foreign threads and empty LocalCaches take from
// there. The reaper (each runtime's monitor KLT, runtime/monitor.cc) bounds
// the DeathRow and gives memory back. The bound follows demand: at every
// reap it becomes twice the demand since the previous reap — descriptors
// taken from here plus stacks newly mapped because none was cached — (at
// least kMinCap, at most kMaxCap), and what exceeds it is unmapped;
// so a program that spawns waves of 10,000 ULTs keeps about that many
// stacks, and one whose churn stops keeps few. When nothing was spawned or
// released for a whole reap interval the cache is trimmed to kIdleKeep and
// the stacks kept are decommitted but for their top page.
//
// The DeathRow is process-wide, not per runtime, so that releasing a ULT
// never needs its runtime: a handle may be joined after the runtime that ran
// the ULT is gone.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "runtime/intrusive_queue.h"
#include "runtime/locks.h"

namespace weft::rt {

struct UltDesc;

// Owner-only LIFO of descriptors whose stacks have the worker's default size.
struct LocalCache {
  static constexpr uint32_t kCap = 64;
  IntrusiveQueue<UltDesc> list;  // LIFO: push_front/pop_front
};

class DeathRow {
 public:
  static constexpr uint64_t kMinCap = 1024;       // descriptors with stacks kept at least
  static constexpr uint64_t kMaxCap = 1 << 18;    // ... and at most
  static constexpr uint64_t kIdleKeep = 64;       // kept once the process is idle
  static constexpr int kClasses = 8;           // distinct stack sizes kept

  // A descriptor whose stack has `size` usable bytes, or null.
  UltDesc* take(size_t size);
  // Moves up to `n` such descriptors to the back of *out; returns how many.
  uint32_t take_batch(size_t size, uint32_t n, IntrusiveQueue<UltDesc>* out);
  // Takes every descriptor of *list (stacks of `size`). Beyond the cap their
  // stacks are unmapped and the descriptors returned to the table at once.
  void put(IntrusiveQueue<UltDesc>* list, size_t size);
  // Unmaps the stack of a retired descriptor (generation 0, ult.h); the
  // descriptor itself is never reused (ult_table::free drops it).
  void retire(UltDesc* u);
  // The reaper. When `idle` (nothing taken or put since the previous call),
  // trims to kIdleKeep and decommits the rest. Returns descriptors recycled.
  uint64_t reap();
  uint64_t cached() const { return count_.load(std::memory_order_relaxed); }
  uint64_t unmapped() const { return unmapped_.load(std::memory_order_relaxed); }
  uint64_t mapped() const { return mapped_.load(std::memory_order_relaxed); }
  void count_mapped() { mapped_.fetch_add(1, std::memory_order_relaxed); }

  // Fork (runtime/fork.cc): the lock is taken before fork and released in
  // the parent; in the child it is reset, and fork_child_for_each calls
  // fn on every cached descriptor (the lists were consistent at the fork,
  // as the lock was held).
  void fork_prepare() { lock_.lock(); }
  void fork_parent() { lock_.unlock(); }
  bool lock_free() {  // for tests: try-locks and releases
    if (!lock_.try_lock()) return false;
    lock_.unlock();
    return true;
  }
  void fork_child_for_each(void (*fn)(UltDesc*, void*), void* ctx);

 private:
  struct Class {
    size_t size = 0;
    IntrusiveQueue<UltDesc> list;  // LIFO
  };
  void unmap_list(IntrusiveQueue<UltDesc>* list);  // called without the lock

  KltMutex lock_;
  Class classes_[kClasses];
  uint64_t activity_ = 0;       // takes and puts, guarded by lock_
  uint64_t reaped_activity_ = ~uint64_t{0};
  uint64_t taken_ = 0;          // descriptors taken since the last reap, guarded by lock_
  uint64_t cap_ = kMinCap;      // guarded by lock_
  uint64_t mapped_at_reap_ = 0; // guarded by lock_
  bool decommitted_ = false;
  IntrusiveQueue<UltDesc> stuck_;  // stacks munmap refused (vm.max_map_count); retried by reap()
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> unmapped_{0};
  std::atomic<uint64_t> mapped_{0};
};

// The process-wide death row (Globals::death_row).
DeathRow& death_row();

}  // namespace weft::rt
