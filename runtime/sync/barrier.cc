// runtime/sync/barrier.cc — weft::Barrier: a reusable rendezvous of a fixed
// number of participants.
//
// The arrival count is kept under the queue lock; the last arrival of a
// round resets it and releases the others by popping them all (wait_list.h
// has the wake handshake).
#include "runtime/sync/wait_list.h"
#include "sys/raw_log.h"

namespace weft {

using rt::sync::QueueLock;
using rt::sync::SyncWaiter;

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
      released = rt::sync::take_all_locked(queue_);
    } else {
      rt::sync::init_waiter(&w, "Barrier", this);
      rt::sync::push_back(queue_, &w);
    }
  }
  if (last) {
    rt::sync::wake_list(released);
    return true;
  }
  rt::sync::block(&w, -1);
  return false;
}

}  // namespace weft
