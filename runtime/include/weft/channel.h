// weft/channel.h — weft::Channel<T>: a bounded multi-producer multi-consumer
// channel for ULTs and threads.
//
// Built on weft::Mutex and weft::CondVar, so the rules of weft/sync.h hold
// here too: a ULT that waits parks (its worker runs other ULTs), a foreign
// thread blocks; waiters are served in FIFO order; timeouts take any
// std::chrono duration. A Channel cannot be copied or moved.
//
// The part that does not depend on T (closing, waiting with a deadline) is
// detail::ChannelBase, compiled once in runtime/sync/channel.cc; what runs on
// every send and recv (the buffer) stays inline here.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "weft/sync.h"
#include "weft/time.h"

namespace weft {

namespace detail {

// The part of every Channel<T> that does not depend on T
// (runtime/sync/channel.cc). Internal; use Channel.
class ChannelBase : Pinned {
 public:
  void close();
  bool closed() const;
  size_t capacity() const { return capacity_; }

 protected:
  explicit ChannelBase(size_t capacity) : capacity_(capacity == 0 ? 1 : capacity) {}
  ~ChannelBase() = default;

  // Waits on `cv` (releasing `g` meanwhile) until notified (true) or the
  // deadline passes (false). deadline: -1 none, else monotonic ns (never 0:
  // the callers do not wait then).
  static bool wait(CondVar& cv, std::unique_lock<Mutex>& g, int64_t deadline);

  const size_t capacity_;
  mutable Mutex mu_;
  CondVar not_empty_, not_full_;
  bool closed_ = false;  // guarded by mu_
};

}  // namespace detail

// A bounded multi-producer multi-consumer channel.
//
// send() waits while the channel is full; recv() waits while it is empty.
// close() wakes every waiter: sends fail from then on (the value is not
// consumed), and receivers get the values still buffered, then
// OutOfRange("channel closed"). Nothing is ever lost or duplicated.
template <class T>
class Channel : private detail::ChannelBase {
 public:
  // `capacity` values can be buffered; 0 is treated as 1.
  explicit Channel(size_t capacity) : ChannelBase(capacity) {}

  // Sends a value, waiting while the channel is full. On error (closed)
  // `value` is left untouched.
  absl::Status send(T&& value) { return send_until(std::move(value), -1); }
  absl::Status send(const T& value) {
    T copy(value);
    return send_until(std::move(copy), -1);
  }
  // As send(), but gives up with DeadlineExceeded after `d`.
  template <class Rep, class Period>
  absl::Status send_for(T&& value, const std::chrono::duration<Rep, Period>& d) {
    return send_until(std::move(value), detail::to_deadline(d));
  }
  // Sends only if there is room now: Unavailable if full.
  absl::Status try_send(T&& value) { return send_until(std::move(value), 0); }

  // Receives the oldest value, waiting while the channel is empty and open.
  // OutOfRange once it is closed and drained.
  absl::StatusOr<T> recv() { return recv_until(-1); }
  // As recv(), but DeadlineExceeded after `d`.
  template <class Rep, class Period>
  absl::StatusOr<T> recv_for(const std::chrono::duration<Rep, Period>& d) {
    return recv_until(detail::to_deadline(d));
  }
  // Receives only if a value is buffered now: Unavailable if empty and open.
  absl::StatusOr<T> try_recv() { return recv_until(0); }

  // Closes the channel and wakes every waiter. Idempotent.
  // (Members of Channel itself, not using-declarations of the private
  // base, so that &Channel<T>::close names a member of Channel.)
  void close() { ChannelBase::close(); }
  // True once close() was called.
  bool closed() const { return ChannelBase::closed(); }
  // Values buffered now (a hint if others send or receive).
  size_t size() const {
    std::lock_guard<Mutex> g(mu_);
    return buf_.size();
  }
  // The most values that can be buffered (at least 1).
  size_t capacity() const { return ChannelBase::capacity(); }

 private:
  // deadline: -1 none, 0 do not wait, else monotonic ns.
  absl::Status send_until(T&& value, int64_t deadline) {
    std::unique_lock<Mutex> g(mu_);
    while (!closed_ && buf_.size() >= capacity_) {
      if (deadline == 0) return absl::UnavailableError("channel full");
      if (!wait(not_full_, g, deadline)) return absl::DeadlineExceededError("channel send timed out");
    }
    if (closed_) return absl::FailedPreconditionError("channel closed");
    buf_.push_back(std::move(value));
    not_empty_.notify_one();
    return absl::OkStatus();
  }
  absl::StatusOr<T> recv_until(int64_t deadline) {
    std::unique_lock<Mutex> g(mu_);
    while (!closed_ && buf_.empty()) {
      if (deadline == 0) return absl::UnavailableError("channel empty");
      if (!wait(not_empty_, g, deadline)) return absl::DeadlineExceededError("channel recv timed out");
    }
    if (buf_.empty()) return absl::OutOfRangeError("channel closed");
    T v = std::move(buf_.front());
    buf_.pop_front();
    not_full_.notify_one();
    return v;
  }
  std::deque<T> buf_;  // guarded by mu_
};

}  // namespace weft
