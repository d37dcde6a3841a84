// runtime/sync/semaphore.cc — weft::Semaphore: permits handed out FIFO.
//
// release() gives permits to queued waiters first (the waiter owns its
// permit when woken: no barging, no lost permit if it timed out at the same
// moment — cancel_wait then takes the wake-up and the permit with it), and
// only the rest go to the count.
#include "runtime/sync/wait_list.h"
#include "sys/raw_log.h"

namespace weft {

using rt::sync::QueueLock;
using rt::sync::SyncWaiter;

Semaphore::~Semaphore() {
  WEFT_DCHECK(queue_.size == 0, "Semaphore %p destroyed with %u waiters", static_cast<void*>(this), queue_.size);
}

void Semaphore::acquire() { acquire_until(-1); }

bool Semaphore::try_acquire() { return acquire_until(0); }

bool Semaphore::acquire_until(int64_t deadline_ns, const std::stop_token* stop) {
  return rt::sync::wait_until_ready(
      queue_, deadline_ns, 0,
      [this] {
        if (count_ > 0 && queue_.size == 0) {  // FIFO: no barging past waiters
          --count_;
          return true;
        }
        return false;
      },
      stop);
}

absl::Status Semaphore::acquire(std::stop_token stop) {
  if (stop.stop_requested()) return absl::CancelledError("stop requested before Semaphore::acquire");
  if (acquire_until(-1, &stop)) return absl::OkStatus();
  return absl::CancelledError("stop requested while waiting for a Semaphore permit");
}

void Semaphore::release(uint64_t n) {
  SyncWaiter* woken = nullptr;  // popped waiters, linked through next
  {
    QueueLock g(queue_);
    while (n > 0 && rt::sync::take_front_locked(queue_, &woken) != nullptr) --n;
    count_ += n;
  }
  rt::sync::wake_list(woken);
}

uint64_t Semaphore::available() const {
  QueueLock g(const_cast<detail::WaitQueue&>(queue_));
  return count_;
}

}  // namespace weft
