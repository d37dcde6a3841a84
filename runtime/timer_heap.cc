// runtime/timer_heap.cc — the intrusive timer heap (design and invariants
// in timer_heap.h).
#include "runtime/timer_heap.h"

#include "runtime/log.h"
#include "runtime/ult.h"

namespace weft::rt {

void TimerHeap::place(size_t i, UltDesc* u) {
  heap_[i] = u;
  u->timer.pos = static_cast<int32_t>(i);
}

void TimerHeap::sift_up(size_t i) {
  UltDesc* u = heap_[i];
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (heap_[parent]->timer.deadline <= u->timer.deadline) break;
    place(i, heap_[parent]);
    i = parent;
  }
  place(i, u);
}

void TimerHeap::sift_down(size_t i) {
  UltDesc* u = heap_[i];
  const size_t n = heap_.size();
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= n) break;
    if (c + 1 < n && heap_[c + 1]->timer.deadline < heap_[c]->timer.deadline) ++c;
    if (heap_[c]->timer.deadline >= u->timer.deadline) break;
    place(i, heap_[c]);
    i = c;
  }
  place(i, u);
}

void TimerHeap::remove_at(size_t i) {
  UltDesc* gone = heap_[i];
  gone->timer.pos = -1;
  UltDesc* last = heap_.back();
  heap_.pop_back();
  if (i == heap_.size()) return;  // it was the last one
  place(i, last);
  if (i > 0 && heap_[(i - 1) / 2]->timer.deadline > last->timer.deadline) {
    sift_up(i);
  } else {
    sift_down(i);
  }
}

void TimerHeap::publish_earliest() {
  earliest_.store(heap_.empty() ? -1 : heap_[0]->timer.deadline, std::memory_order_release);
}

void TimerHeap::add(UltDesc* u, int64_t deadline) {
  WEFT_DCHECK(deadline >= 0, "timer deadline %lld is negative", static_cast<long long>(deadline));
  LockGuard<KltMutex> g(lock_);
  WEFT_DCHECK(u->timer.pos < 0, "ULT %u added to a timer heap twice", u->index);
  u->timer.heap = this;
  u->timer.deadline = deadline;
  heap_.push_back(u);
  sift_up(heap_.size() - 1);
  publish_earliest();
}

bool TimerHeap::cancel(UltDesc* u) {
  LockGuard<KltMutex> g(lock_);
  WEFT_DCHECK(u->timer.heap == this, "ULT %u cancelled on another worker's timer heap", u->index);
  int32_t p = u->timer.pos;
  if (p < 0) return false;  // a firer took it
  WEFT_DCHECK(static_cast<size_t>(p) < heap_.size() && heap_[static_cast<size_t>(p)] == u,
              "timer heap position of ULT %u is stale", u->index);
  remove_at(static_cast<size_t>(p));
  publish_earliest();
  return true;
}

size_t TimerHeap::take_due(int64_t now, Fired* out, size_t max) {
  int64_t e = earliest();
  if (e < 0 || e > now) return 0;
  LockGuard<KltMutex> g(lock_);
  size_t n = 0;
  while (n < max && !heap_.empty() && heap_[0]->timer.deadline <= now) {
    UltDesc* u = heap_[0];
    out[n++] = Fired{u, now - u->timer.deadline};
    remove_at(0);
  }
  publish_earliest();
  return n;
}

size_t TimerHeap::size() {
  LockGuard<KltMutex> g(lock_);
  return heap_.size();
}

void TimerHeap::reset_after_fork() {
  // The entries' ULTs do not exist in the child (their descriptors get
  // timer.pos reset when reused, UltDesc::clear_life); the vector may have
  // been mid-change in another thread at the fork: only forget its size.
  lock_.reset_after_fork();
  heap_.clear();
  publish_earliest();
}

}  // namespace weft::rt
