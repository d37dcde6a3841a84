// runtime/counter.h — statistics counters bumped without a locked
// instruction.
#pragma once

#include <atomic>

namespace weft::rt {

// Adds one with a plain load and store, not a locked add. For a counter
// with one writer (a worker's own) that is exact; where two CPUs may bump
// it at once (a sync primitive's statistics) an increment may be lost: the
// counter can under-count, never over-count, and the contended path pays
// no locked instruction. Readers on other threads load it relaxed.
template <class T>
inline void bump_by(std::atomic<T>& c, T n) {
  c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}
template <class T>
inline void bump(std::atomic<T>& c) {
  bump_by(c, T{1});
}

}  // namespace weft::rt
