// runtime/sync/channel.cc — detail::ChannelBase: the part of weft::Channel<T>
// that does not depend on T (closing, waiting with a deadline).
//
// Only the paths that close or are about to wait come here; a send or recv
// that finds room or a value stays inline in weft/channel.h.
#include <chrono>
#include <condition_variable>
#include <mutex>

#include "weft/channel.h"

namespace weft::detail {

void ChannelBase::close() {
  std::lock_guard<Mutex> g(mu_);
  closed_ = true;
  not_empty_.notify_all();
  not_full_.notify_all();
}

bool ChannelBase::closed() const {
  std::lock_guard<Mutex> g(mu_);
  return closed_;
}

bool ChannelBase::wait(CondVar& cv, std::unique_lock<Mutex>& g, int64_t deadline) {
  if (deadline < 0) {
    cv.wait(g);
    return true;
  }
  int64_t left = deadline - monotonic_now_ns();
  if (left <= 0) return false;
  return cv.wait_for(g, std::chrono::nanoseconds(left)) == std::cv_status::no_timeout || monotonic_now_ns() < deadline;
}

}  // namespace weft::detail
