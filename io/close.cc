// io/close.cc — io::close: cancels the operations in flight on fd on every
// engine before the number is freed (the "Closing" protocol).
//
// Closing. io::close(fd) must cancel the operations in flight on fd on
// every engine, and fd's number must not be freed while any of them could
// still act on it: an SQE that a ULT prepared on another worker's ring and
// that this worker has not submitted yet names fd by number, which the
// kernel resolves only at submission; an epoll waiter retries its call on
// the number when woken. Each engine is served by its own KLT only (the
// ring is SINGLE_ISSUER), so:
//
//  - the calling KLT's own engine (a ULT's worker, or the worker whose ULT
//    is inside a weft::blocking() region here: that KLT is still the
//    ring's owner, and a handoff never moves an engine) cancels on the
//    spot: Engine::cancel_now. Posting to it and waiting would wait for
//    ourselves (issue 9 #4: a close inside weft::blocking() hung);
//  - every other engine with operations in flight gets a CloseRequest
//    (engine.h) and cancels at its next scheduler pass, acknowledging
//    after its cancel (whose SQE follows any SQE for fd it still had
//    queued). We wait for the acknowledgements for at most kCloseWaitNs.
//    An engine that does not answer in time is one whose KLT is busy: a
//    ULT that does not yield, or a long weft::blocking() region (its ring
//    is then served by nobody until the region ends). Waiting for it could
//    last forever; closing anyway could let its queued SQE act on a new
//    file that reuses the number. So the close is handed over: this call
//    returns 0, fd stays open (its number taken, naming the same file)
//    and the last engine to acknowledge closes it (close_request_ack).
//    The operations still end with -ECANCELED (or their own result if
//    they completed first); they just end after close returned.
//
// Then the close itself goes through the caller's backend (through the
// ring in a ULT on an io_uring worker, else the plain system call).
#include <fcntl.h>

#include <cerrno>
#include <chrono>

#include "io/backend.h"
#include "io/engine.h"
#include "io/ops_common.h"
#include "weft/io.h"

namespace weft::io {

using io_internal::CloseRequest;
using io_internal::Engine;

// kCloseWaitNs is long enough that an engine whose worker is merely
// running other ULTs (it reaches a scheduler pass within microseconds, a
// few milliseconds when the machine is overloaded) answers in time, so
// the documented behaviour (cancelled before close returns) is the normal
// one, and short enough that a closer is never held for long by a busy
// worker. A closer in a ULT parks meanwhile; on a thread it blocks.
constexpr int64_t kCloseWaitNs = 50 * 1000 * 1000;

namespace {

// Cancels what every engine has in flight on fd (see "Closing"). True if
// fd may be closed now; false if an engine that did not answer in time
// will close it.
bool cancel_everywhere(int fd) {
  auto* req = new CloseRequest(fd);
  uint32_t posted = 0;
  {
    // Keeps a ULT on this worker until cancel_now has run (nothing here
    // parks, but own_engine() must stay the engine of the KLT we run on).
    Pin pin;
    Engine* own = io_internal::own_engine();
    io_internal::for_each_busy_engine([&](Engine* e) {
      if (e == own) return;
      // Count the engine before posting: the count must not reach zero
      // while we still post (CloseRequest's state word).
      req->state.fetch_add(1, std::memory_order_relaxed);
      req->acked.add(1);
      io_internal::close_request_ref(req);
      e->post_cancel(req);
      ++posted;
    });
    if (own != nullptr && own->in_flight.load(std::memory_order_acquire) > 0) own->cancel_now(fd);
  }
  bool close_now = true;
  if (posted != 0 && !req->acked.wait_for(std::chrono::nanoseconds(kCloseWaitNs))) {
    // Not every engine answered. Hand the close over, unless the last one
    // answered just now (the count is zero) or fd is not open at all
    // (nothing of ours to keep: then no engine may close the number,
    // and neither do we; the leftover acknowledgements just count down).
    if (io_internal::sys(SYS_fcntl, fd, F_GETFD) >= 0) {
      uint32_t prev = req->state.fetch_or(CloseRequest::kAbandoned, std::memory_order_acq_rel);
      close_now = (prev & ~CloseRequest::kAbandoned) == 0;
    }
  }
  io_internal::close_request_unref(req);
  return close_now;
}

}  // namespace

int close(int fd) {
  if (fd < 0) return -EBADF;
  if (io_internal::fd_maybe_busy(fd) && !cancel_everywhere(fd)) return 0;  // an engine closes it (see "Closing")
  // Chosen after the cancel, which may park: the ULT may run on another
  // worker now.
  io_internal::Route r = io_internal::route_for_caller();
  return r.backend->close(r, fd);
}

}  // namespace weft::io
