// runtime/sync/condvar.cc — weft::CondVar.
//
// A waiter queues itself under the queue lock *before* it releases the
// user's lock, so a notify issued by anyone who takes the user's lock after
// the waiter released it finds the waiter in the queue (wait_list.h has the
// wake handshake). notify_* only pop and wake: there are no spurious
// wake-ups.
#include "runtime/sync/wait_list.h"
#include "sys/raw_log.h"

namespace weft {

using rt::sync::QueueLock;
using rt::sync::SyncWaiter;

CondVar::~CondVar() {
  WEFT_DCHECK(queue_.size == 0, "CondVar %p destroyed with %u waiters", static_cast<void*>(this), queue_.size);
}

bool CondVar::wait_impl(void* lock, int64_t deadline_ns, void (*unlock)(void*), void (*relock)(void*),
                        const std::stop_token* stop) {
  SyncWaiter w;
  rt::sync::init_waiter(&w, "CondVar", this);
  {
    QueueLock g(queue_);
    rt::sync::push_back(queue_, &w);
  }
  unlock(lock);
  bool notified = rt::sync::block(&w, deadline_ns, stop) || rt::sync::cancel_wait(queue_, &w);
  relock(lock);
  return notified;
}

void CondVar::notify_one() {
  SyncWaiter* w;
  {
    QueueLock g(queue_);
    w = rt::sync::pop_front(queue_);
  }
  if (w != nullptr) rt::sync::wake(w);
}

void CondVar::notify_all() {
  SyncWaiter* list = nullptr;
  {
    QueueLock g(queue_);
    list = queue_.head;
    for (SyncWaiter* w = list; w != nullptr; w = w->next) w->queued = false;
    queue_.head = queue_.tail = nullptr;
    queue_.size = 0;
  }
  rt::sync::wake_list(list);  // in queue order
}

}  // namespace weft
