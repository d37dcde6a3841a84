// runtime/sync/wait_group.cc — weft::WaitGroup (alias Latch): a counter that
// counts up and down, and releases its waiters when it reaches zero.
//
// The count is kept under the queue lock; the count_down that reaches zero
// releases every waiter by popping them all (wait_list.h has the wake
// handshake).
#include "runtime/sync/wait_list.h"
#include "sys/raw_log.h"

namespace weft {

using rt::sync::QueueLock;
using rt::sync::SyncWaiter;

WaitGroup::~WaitGroup() {
  WEFT_DCHECK(queue_.size == 0, "WaitGroup %p destroyed with %u waiters", static_cast<void*>(this), queue_.size);
}

void WaitGroup::add(uint64_t n) {
  QueueLock g(queue_);
  count_ += n;
}

void WaitGroup::count_down(uint64_t n) {
  SyncWaiter* list = nullptr;
  {
    QueueLock g(queue_);
    WEFT_DCHECK(n <= count_, "WaitGroup %p counted below zero (%lu - %lu)", static_cast<void*>(this),
                static_cast<unsigned long>(count_), static_cast<unsigned long>(n));
    count_ = n >= count_ ? 0 : count_ - n;
    if (count_ == 0) list = rt::sync::take_all_locked(queue_);
  }
  rt::sync::wake_list(list);
}

void WaitGroup::wait() { wait_until_ns(-1); }

bool WaitGroup::wait_until_ns(int64_t deadline_ns) {
  return rt::sync::wait_until_ready(queue_, deadline_ns, 0, [this] { return count_ == 0; });
}

bool WaitGroup::try_wait() const {
  QueueLock g(queue_);
  return count_ == 0;
}

}  // namespace weft
