// runtime/sync/latch.cc — weft::Barrier, weft::Latch and weft::Once.
//
// All three keep their counters under their queue lock and release waiters
// by popping them all (wait_list.h has the wake handshake).
#include "runtime/sync/wait_list.h"
#include "sys/raw_log.h"

namespace weft {

using rt::sync::QueueLock;
using rt::sync::SyncWaiter;

namespace {
// Pops every waiter; returns them linked through next.
SyncWaiter* take_all_locked(detail::WaitQueue& q) {
  SyncWaiter* list = nullptr;
  while (SyncWaiter* w = rt::sync::pop_front(q)) {
    w->next = list;
    list = w;
  }
  return list;
}

void wake_list(SyncWaiter* w) {
  while (w != nullptr) {
    SyncWaiter* next = w->next;
    rt::sync::wake(w);
    w = next;
  }
}
}  // namespace

// --- Barrier ------------------------------------------------------------------

Barrier::Barrier(uint32_t count) : count_(count) {
  WEFT_CHECK(count >= 1, "weft::Barrier needs at least one participant");
}

Barrier::~Barrier() {
  WEFT_DCHECK(queue_.size == 0, "Barrier %p destroyed with %u waiters", static_cast<void*>(this), queue_.size);
}

bool Barrier::arrive_and_wait() {
  SyncWaiter w;
  SyncWaiter* released = nullptr;
  bool last;
  {
    QueueLock g(queue_);
    last = ++arrived_ == count_;
    if (last) {  // the last arrival releases the round
      arrived_ = 0;
      released = take_all_locked(queue_);
    } else {
      rt::sync::init_waiter(&w);
      rt::sync::push_back(queue_, &w);
    }
  }
  if (last) {
    wake_list(released);
    return true;
  }
  rt::sync::block(&w, -1);
  return false;
}

// --- Latch --------------------------------------------------------------------

Latch::~Latch() {
  WEFT_DCHECK(queue_.size == 0, "Latch %p destroyed with %u waiters", static_cast<void*>(this), queue_.size);
}

void Latch::add(uint64_t n) {
  QueueLock g(queue_);
  count_ += n;
}

void Latch::count_down(uint64_t n) {
  SyncWaiter* list = nullptr;
  {
    QueueLock g(queue_);
    WEFT_DCHECK(n <= count_, "Latch %p counted below zero (%lu - %lu)", static_cast<void*>(this),
                static_cast<unsigned long>(count_), static_cast<unsigned long>(n));
    count_ = n >= count_ ? 0 : count_ - n;
    if (count_ == 0) list = take_all_locked(queue_);
  }
  wake_list(list);
}

void Latch::wait() { wait_until_ns(-1); }

bool Latch::wait_until_ns(int64_t deadline_ns) {
  SyncWaiter w;
  {
    QueueLock g(queue_);
    if (count_ == 0) return true;
    if (deadline_ns == 0) return false;
    rt::sync::init_waiter(&w);
    rt::sync::push_back(queue_, &w);
  }
  return rt::sync::block(&w, deadline_ns) || rt::sync::cancel_wait(queue_, &w);
}

bool Latch::try_wait() const {
  QueueLock g(queue_);
  return count_ == 0;
}

// --- Once ---------------------------------------------------------------------

bool Once::begin() {
  for (;;) {
    SyncWaiter w;
    {
      QueueLock g(queue_);
      if (done_.load(std::memory_order_relaxed)) return false;
      if (!running_) {
        running_ = true;
        return true;
      }
      rt::sync::init_waiter(&w);
      rt::sync::push_back(queue_, &w);
    }
    rt::sync::block(&w, -1);  // the runner finished (or failed): look again
  }
}

void Once::finish(bool ran) {
  SyncWaiter* list;
  {
    QueueLock g(queue_);
    running_ = false;
    if (ran) done_.store(true, std::memory_order_release);
    list = take_all_locked(queue_);
  }
  wake_list(list);
}

}  // namespace weft
