// runtime/sync/rwlock.cc — weft::RwLock, FIFO and writer-fair.
//
// All state is guarded by the queue lock. A request is granted at once only
// if nothing is queued ahead of it (so a waiting writer blocks new readers:
// no writer starvation) and it is compatible with the holders. When the
// holders leave, grant_locked() admits from the front of the queue: one
// writer, or every reader up to the next writer (readers that queued before
// that writer go together: no reader starvation either).
#include "runtime/priority.h"
#include "runtime/scheduler.h"
#include "runtime/sync/wait_list.h"
#include "sys/raw_log.h"

namespace weft {

using rt::sync::QueueLock;
using rt::sync::SyncWaiter;

namespace {
constexpr uintptr_t kReader = 1;
constexpr uintptr_t kWriter = 2;

// Pops the waiters that may go now; links them through next into *out.
// A writer granted here becomes *writer_owner.
void grant_locked(detail::WaitQueue& q, uint32_t* readers, bool* writer, std::atomic<uintptr_t>* writer_owner,
                  SyncWaiter** out) {
  if (*writer) return;
  while (SyncWaiter* w = q.head) {
    if (w->tag == kWriter) {
      if (*readers != 0) return;
      writer_owner->store(w->who, std::memory_order_relaxed);
      rt::sync::take_front_locked(q, out);
      *writer = true;
      return;
    }
    rt::sync::take_front_locked(q, out);
    ++*readers;
  }
}
rt::UltDesc* writer_ult(uintptr_t who) {
  return who == 0 || (who & 1) ? nullptr : reinterpret_cast<rt::UltDesc*>(who);
}

}  // namespace

// Priority inheritance's view of an RwLock: its writer (runtime/priority.h).
struct detail::RwLockPi {
  static rt::UltDesc* writer(const void* l) {
    return writer_ult(static_cast<const RwLock*>(l)->writer_owner_.load(std::memory_order_acquire));
  }
  // Waits (queued with `tag`) until `ready` (under the queue lock) grants
  // the lock; a ULT waiting for a ULT writer of lower priority lends it
  // its own first (runtime/priority.cc). Readers waiting behind readers
  // lend nothing: readers are not tracked.
  //
  // Timed (deadline_ns >= 0): false if the deadline passed first; the
  // waiter then leaves the queue, and since a queued writer holds back the
  // readers behind it, those that may go now are granted (grant_locked).
  template <class Ready>
  static bool wait(RwLock* l, uintptr_t tag, int64_t deadline_ns, Ready ready) {
    SyncWaiter w;
    rt::UltDesc* holder = nullptr;
    {
      QueueLock g(l->queue_);
      if (ready()) return true;
      if (deadline_ns >= 0 && rt::monotonic_ns() >= deadline_ns) return false;
      rt::sync::init_waiter(&w, tag == kWriter ? "RwLock (write)" : "RwLock (read)", l);
      w.tag = tag;
      rt::sync::push_back(l->queue_, &w);
      holder = writer_ult(l->writer_owner_.load(std::memory_order_relaxed));
    }
    bool lent = false;
    rt::UltDesc* self = writer_ult(w.who);
    if (self != nullptr && holder != nullptr && self->sched->opts.priority_inheritance) {
      rt::pi_wait(self, l, holder, &writer);
      lent = true;
    }
    bool got = rt::sync::block(&w, deadline_ns) || rt::sync::cancel_wait(l->queue_, &w);
    if (lent) rt::pi_wait_end(self);
    if (!got) {
      SyncWaiter* woken = nullptr;
      {
        QueueLock g(l->queue_);
        grant_locked(l->queue_, &l->readers_, &l->writer_, &l->writer_owner_, &woken);
      }
      rt::sync::wake_list(woken);
    }
    return got;
  }
};

RwLock::~RwLock() {
  WEFT_DCHECK(!writer_ && readers_ == 0 && queue_.size == 0, "RwLock %p destroyed while held or waited for",
              static_cast<void*>(this));
}

void RwLock::lock() { (void)lock_until(-1); }

bool RwLock::lock_until(int64_t deadline_ns) {
  return detail::RwLockPi::wait(this, kWriter, deadline_ns, [this] { return try_lock_locked(); });
}

bool RwLock::try_lock() {
  QueueLock g(queue_);
  return try_lock_locked();
}

// Granted at once only if nobody holds it and nobody queues ahead.
bool RwLock::try_lock_locked() {
  if (writer_ || readers_ != 0 || queue_.size != 0) return false;
  writer_ = true;
  writer_owner_.store(rt::sync::self_identity(), std::memory_order_relaxed);
  return true;
}

void RwLock::unlock() {
  SyncWaiter* woken = nullptr;
  rt::UltDesc* holder = nullptr;
  {
    QueueLock g(queue_);
    WEFT_DCHECK(writer_, "RwLock %p: unlock() without holding it exclusively", static_cast<void*>(this));
    holder = writer_ult(writer_owner_.load(std::memory_order_relaxed));
    writer_ = false;
    writer_owner_.store(0, std::memory_order_relaxed);
    grant_locked(queue_, &readers_, &writer_, &writer_owner_, &woken);
  }
  // A lender records its loan, fences, then reads writer_owner_; we
  // cleared writer_owner_ and fence before reading pi_count: one of the two
  // sees the other (runtime/priority.cc).
  if (holder != nullptr) {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (holder->pi_count.load(std::memory_order_relaxed) != 0) rt::pi_released(holder, this);
  }
  rt::sync::wake_list(woken);
}

void RwLock::lock_shared() { (void)lock_shared_until(-1); }

bool RwLock::lock_shared_until(int64_t deadline_ns) {
  return detail::RwLockPi::wait(this, kReader, deadline_ns, [this] { return try_lock_shared_locked(); });
}

bool RwLock::try_lock_shared() {
  QueueLock g(queue_);
  return try_lock_shared_locked();
}

// Granted at once only if no writer holds it and nobody queues ahead (a
// queued writer keeps new readers out).
bool RwLock::try_lock_shared_locked() {
  if (writer_ || queue_.size != 0) return false;
  ++readers_;
  return true;
}

void RwLock::unlock_shared() {
  SyncWaiter* woken = nullptr;
  {
    QueueLock g(queue_);
    WEFT_DCHECK(readers_ > 0, "RwLock %p: unlock_shared() without a shared hold", static_cast<void*>(this));
    if (--readers_ == 0) grant_locked(queue_, &readers_, &writer_, &writer_owner_, &woken);
  }
  rt::sync::wake_list(woken);
}

}  // namespace weft
