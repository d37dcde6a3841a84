// runtime/sync/rwlock.cc — weft::RwLock, FIFO and writer-fair.
//
// All state is guarded by the queue lock. A request is granted at once only
// if nothing is queued ahead of it (so a waiting writer blocks new readers:
// no writer starvation) and it is compatible with the holders. When the
// holders leave, grant_locked() admits from the front of the queue: one
// writer, or every reader up to the next writer (readers that queued before
// that writer go together: no reader starvation either).
#include "runtime/sync/wait_list.h"
#include "sys/raw_log.h"

namespace weft {

using rt::sync::QueueLock;
using rt::sync::SyncWaiter;

namespace {
constexpr uintptr_t kReader = 1;
constexpr uintptr_t kWriter = 2;

// Pops the waiters that may go now; links them through next into *out.
void grant_locked(detail::WaitQueue& q, uint32_t* readers, bool* writer, SyncWaiter** out) {
  if (*writer) return;
  while (SyncWaiter* w = q.head) {
    if (w->tag == kWriter) {
      if (*readers != 0) return;
      rt::sync::take_front_locked(q, out);
      *writer = true;
      return;
    }
    rt::sync::take_front_locked(q, out);
    ++*readers;
  }
}
}  // namespace

RwLock::~RwLock() {
  WEFT_DCHECK(!writer_ && readers_ == 0 && queue_.size == 0, "RwLock %p destroyed while held or waited for",
              static_cast<void*>(this));
}

void RwLock::lock() { rt::sync::wait_until_ready(queue_, -1, kWriter, [this] { return try_lock_locked(); }); }

bool RwLock::try_lock() {
  QueueLock g(queue_);
  return try_lock_locked();
}

// Granted at once only if nobody holds it and nobody queues ahead.
bool RwLock::try_lock_locked() {
  if (writer_ || readers_ != 0 || queue_.size != 0) return false;
  writer_ = true;
  return true;
}

void RwLock::unlock() {
  SyncWaiter* woken = nullptr;
  {
    QueueLock g(queue_);
    WEFT_DCHECK(writer_, "RwLock %p: unlock() without holding it exclusively", static_cast<void*>(this));
    writer_ = false;
    grant_locked(queue_, &readers_, &writer_, &woken);
  }
  rt::sync::wake_list(woken);
}

void RwLock::lock_shared() {
  rt::sync::wait_until_ready(queue_, -1, kReader, [this] { return try_lock_shared_locked(); });
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
    if (--readers_ == 0) grant_locked(queue_, &readers_, &writer_, &woken);
  }
  rt::sync::wake_list(woken);
}

}  // namespace weft
