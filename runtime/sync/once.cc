// runtime/sync/once.cc — weft::Once: runs a function exactly once however
// many callers race (the slow path of Once::call).
//
// running_ is kept under the queue lock; done_ is also read without it by
// Once::call's fast path (an acquire load that pairs with finish's release
// store). When the runner finishes (or fails) it releases every waiter by
// popping them all (wait_list.h has the wake handshake); they look again.
#include "runtime/sync/wait_list.h"

namespace weft {

using rt::sync::QueueLock;
using rt::sync::SyncWaiter;

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
      rt::sync::init_waiter(&w, "Once", this);
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
    list = rt::sync::take_all_locked(queue_);
  }
  rt::sync::wake_list(list);
}

}  // namespace weft
