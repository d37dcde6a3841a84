// weft/channel.h — weft::Channel<T>: a multi-producer multi-consumer
// channel for ULTs and threads, buffered (capacity > 0) or unbuffered
// (capacity 0: every send meets a receive, as in Go).
//
// The rules of weft/sync.h hold here too: a ULT that waits parks (its
// worker runs other ULTs), a foreign thread blocks on a futex; waiters are
// served in FIFO order; timeouts take any std::chrono duration or time
// point; a std::stop_token ends a wait with Cancelled. A Channel cannot be
// copied or moved. weft/select.h waits on several channels at once.
//
// How it works (runtime/sync/channel.cc has the full design): a value goes
// straight from a sender to a parked receiver (the sender moves it into the
// receiver's waiter record and wakes it), and a sender parked on a full
// channel has its value taken by the receiver that frees a slot. The
// buffer is a ring; a small spinlock guards the ring's indices and the two
// waiter queues, never a value: T's move constructor always runs outside
// it. The part that does not depend on T is detail::ChanCore, compiled once.
//
// Lifetime: a Channel may be destroyed once no call on it (and no select
// naming it) is in progress. A send or recv completed by the other side
// never touches the channel again after it was handed its value, so the
// owner of a channel may destroy it as soon as its own send/recv/close
// returned, even if the peer it completed has not run yet.
//
// Values: T must be move-constructible; the moves happen inside weft's
// noexcept functions, so a T whose move constructor throws terminates the
// program. Values still buffered when the channel is destroyed are
// destroyed with it.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <new>
#include <optional>
#include <stop_token>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "weft/sync.h"
#include "weft/time.h"

namespace weft {

namespace detail {

// How the T-independent code moves and destroys a Channel<T>'s values.
struct ValueOps {
  void (*move_construct)(void* dst, void* src) noexcept;  // new (dst) T(std::move(*(T*)src))
  void (*destroy)(void* p) noexcept;                      // ((T*)p)->~T()
  size_t size;
  size_t align;
};

template <class T>
void value_move(void* dst, void* src) noexcept {
  ::new (dst) T(std::move(*static_cast<T*>(src)));
}
template <class T>
void value_destroy(void* p) noexcept {
  static_cast<T*>(p)->~T();
}
template <class T>
inline constexpr ValueOps kValueOps = {&value_move<T>, &value_destroy<T>, sizeof(T), alignof(T)};

struct ChanWaiter;  // a waiter's record, on its stack (runtime/sync/chan_internal.h)
struct ChanImpl;    // the channel algorithms (runtime/sync/channel.cc)

// A FIFO of waiter records (intrusive, doubly linked). Internal.
struct ChanQueue {
  ChanWaiter* head = nullptr;
  ChanWaiter* tail = nullptr;
};

// The part of every Channel<T> that does not depend on T
// (runtime/sync/channel.cc). Internal; use Channel.
class ChanCore : Pinned {
 public:
  ChanCore(size_t capacity, const ValueOps* ops);
  // Destroys the values still buffered. Debug builds abort if anybody
  // still waits on the channel.
  ~ChanCore();

  void close();
  bool closed() const;
  size_t size() const;
  size_t capacity() const { return cap_; }

  // Result of one channel operation (send_op / recv_op).
  enum Result : int { kOk, kClosed, kTimedOut, kWouldBlock, kCancelled };
  // Sends the T at `value` (moved from only on kOk). deadline_ns: -1 none,
  // 0 do not wait (kWouldBlock), else CLOCK_MONOTONIC ns. stop: may be null.
  Result send_op(void* value, int64_t deadline_ns, const std::stop_token* stop) noexcept;
  // Receives into `storage` (raw, sizeof(T), constructed only on kOk).
  Result recv_op(void* storage, int64_t deadline_ns, const std::stop_token* stop) noexcept;

 private:
  friend struct ChanImpl;
  // The ring: cap_ slots of stride_ bytes, each an atomic sequence number
  // (uint64_t) and, value_off_ bytes in, room for one T. Positions grow
  // forever (uint64_t); position p lives in slot p % cap_.
  //
  // lock_ (a spinlock word, sys::spin_acquire) guards closed_, head_,
  // tail_ and both queues — never a value. tail_ - head_ is the number of
  // positions reserved (values stored, being stored, or being taken out),
  // at most cap_. Senders reserve tail_, receivers head_, under lock_ and
  // only when the slot's sequence number says it is ready for them; the
  // value moves happen after the unlock (runtime/sync/channel.cc, "The
  // ring").
  std::atomic<uint32_t> lock_{0};
  bool closed_ = false;
  const size_t cap_;
  const ValueOps* const ops_;
  size_t value_off_ = 0, stride_ = 0;
  unsigned char* slots_ = nullptr;
  uint64_t head_ = 0, tail_ = 0;
  ChanQueue recvq_;  // parked receivers (only while the ring is empty)
  ChanQueue sendq_;  // parked senders (only while the ring is full)
};

// One case of a select, type-erased (weft/select.h builds them). Internal.
struct SelCase {
  enum Kind : uint8_t {
    kRecv,      // receive from ch into val (raw storage for a T)
    kSend,      // send the T at val (moved from only if this case fires)
    kDeadline,  // fires at `deadline` (CLOCK_MONOTONIC ns)
    kStop,      // fires when *stop has its stop requested
    kNever,     // never fires (a null channel, a stopped timer)
    kDefault,   // fires if nothing else is ready now
  };
  Kind kind = kNever;
  bool closed = false;  // out: the case fired because the channel is closed
  ChanCore* ch = nullptr;
  void* val = nullptr;
  int64_t deadline = -1;
  const std::stop_token* stop = nullptr;
};

// Waits until one case can proceed and performs it (runtime/sync/select.cc):
// returns its index. Ready cases are chosen uniformly at random; with a
// kDefault case and nothing ready, returns the default's index at once.
// With no case that can ever fire, parks forever.
int select_cases(SelCase* cases, int n) noexcept;

}  // namespace detail

// A multi-producer multi-consumer channel of T.
//
// capacity > 0: up to `capacity` values are buffered; send() waits while
// the channel is full, recv() while it is empty.
// capacity 0: unbuffered, with rendezvous semantics: send() returns only
// once a receiver has taken the value (recv() or a select's receive case),
// and recv() waits for a sender. (Before issue 14, 0 meant 1.)
//
// close() wakes every waiter: sends fail from then on (FailedPrecondition,
// the value is not consumed), and receivers get the values still buffered,
// then OutOfRange("channel closed"). Nothing is ever lost or duplicated: a
// value is either received exactly once or left with its sender (failed
// send), also when waits time out or are cancelled concurrently.
//
// Every call may be made from any ULT or thread concurrently with any other.
template <class T>
class Channel : detail::Pinned {
  static_assert(std::is_move_constructible_v<T>, "Channel<T> needs a move-constructible T");
  static_assert(!std::is_reference_v<T> && !std::is_const_v<T>, "Channel<T> holds plain values");

 public:
  using value_type = T;

  // A channel that buffers up to `capacity` values; 0 makes it unbuffered.
  // The buffer is allocated here (capacity slots of about sizeof(T) + 8
  // bytes); std::bad_alloc if that fails.
  explicit Channel(size_t capacity) : core_(capacity, &detail::kValueOps<T>) {}

  // --- sending ---------------------------------------------------------
  // Sends a value, waiting while the channel is full (unbuffered: until a
  // receiver takes it). FailedPrecondition("channel closed") if the channel
  // is or gets closed first; then `value` is left untouched. Cost: no
  // system call when it need not wait; a handoff to a parked receiver is
  // one move and one unpark.
  absl::Status send(T&& value) { return send_status(&value, -1, nullptr); }
  // As above with a copy of `value` (made before anything else).
  absl::Status send(const T& value) {
    T copy(value);
    return send_status(&copy, -1, nullptr);
  }
  // As send(), and Cancelled("channel send cancelled") if `stop` has (or
  // gets) its stop requested before the value was taken; `value` is then
  // left untouched. Works for ULTs and foreign threads.
  absl::Status send(T&& value, std::stop_token stop) { return send_status(&value, -1, &stop); }
  absl::Status send(const T& value, std::stop_token stop) {
    T copy(value);
    return send_status(&copy, -1, &stop);
  }
  // As send(), but DeadlineExceeded("channel send timed out") after `d`
  // (value untouched). Timeouts are honoured within a few milliseconds.
  template <class Rep, class Period>
  absl::Status send_for(T&& value, const std::chrono::duration<Rep, Period>& d) {
    return send_status(&value, detail::to_deadline(d), nullptr);
  }
  template <class Rep, class Period>
  absl::Status send_for(const T& value, const std::chrono::duration<Rep, Period>& d) {
    T copy(value);
    return send_status(&copy, detail::to_deadline(d), nullptr);
  }
  // As send_for, until a time point of any clock.
  template <class Clock, class Duration>
  absl::Status send_until(T&& value, const std::chrono::time_point<Clock, Duration>& t) {
    return send_status(&value, detail::to_deadline(t), nullptr);
  }
  // Sends only if that needs no wait: a buffer slot is free or (unbuffered)
  // a receiver is parked. Unavailable("channel full") otherwise,
  // FailedPrecondition if closed; `value` untouched on error. Never blocks.
  absl::Status try_send(T&& value) { return send_status(&value, 0, nullptr); }
  // As above for an lvalue, which is never modified: the value sent is a
  // copy, made before the attempt (a copy must not run under the channel's
  // lock), so a failed try_send costs one copy of T.
  absl::Status try_send(const T& value) {
    T copy(value);
    return send_status(&copy, 0, nullptr);
  }

  // --- receiving -------------------------------------------------------
  // Receives the oldest value, waiting while the channel is empty and open.
  // OutOfRange("channel closed") once it is closed and drained.
  absl::StatusOr<T> recv() { return recv_status(-1, nullptr); }
  // As recv(), and Cancelled("channel recv cancelled") if `stop` has (or
  // gets) its stop requested while waiting. A value taken is always
  // returned (never dropped); when a value is available and the stop was
  // already requested, either outcome may be reported (as a select of both).
  // The same holds for send(value, stop).
  absl::StatusOr<T> recv(std::stop_token stop) { return recv_status(-1, &stop); }
  // As recv(), but DeadlineExceeded("channel recv timed out") after `d`.
  template <class Rep, class Period>
  absl::StatusOr<T> recv_for(const std::chrono::duration<Rep, Period>& d) {
    return recv_status(detail::to_deadline(d), nullptr);
  }
  template <class Clock, class Duration>
  absl::StatusOr<T> recv_until(const std::chrono::time_point<Clock, Duration>& t) {
    return recv_status(detail::to_deadline(t), nullptr);
  }
  // Receives only if a value is there now (buffered, or a parked sender's).
  // Unavailable("channel empty") if none and open; OutOfRange if closed
  // and drained. Never blocks.
  absl::StatusOr<T> try_recv() { return recv_status(0, nullptr); }

  // --- state -------------------------------------------------------------
  // Closes the channel and wakes every waiter (see above). Idempotent.
  // Values still buffered stay receivable.
  void close() { core_.close(); }
  // True once close() was called.
  bool closed() const { return core_.closed(); }
  // Values buffered now, counting those being moved in or out (a hint if
  // others send or receive). Always 0 for an unbuffered channel.
  size_t size() const { return core_.size(); }
  // The capacity given at construction (0: unbuffered).
  size_t capacity() const { return core_.capacity(); }

  // --- iteration ---------------------------------------------------------
  // An input range over the values received until the channel is closed
  // and drained: `for (T v : ch) ...` or `for (T& v : ch.range())`. Each
  // step is a recv() (it waits); the range ends at OutOfRange. Several
  // loops may drain one channel at once (each value goes to one of them).
  class iterator {
   public:
    using value_type = T;
    using difference_type = std::ptrdiff_t;
    using reference = T&;
    using iterator_concept = std::input_iterator_tag;
    iterator() = default;
    T& operator*() const { return *cur_; }
    T* operator->() const { return &*cur_; }
    iterator& operator++() {
      next();
      return *this;
    }
    void operator++(int) { next(); }
    friend bool operator==(const iterator& it, std::default_sentinel_t) { return !it.cur_.has_value(); }

   private:
    friend class Channel;
    explicit iterator(Channel* ch) : ch_(ch) { next(); }
    void next() {
      cur_.reset();
      absl::StatusOr<T> r = ch_->recv();
      if (r.ok()) cur_.emplace(std::move(*r));
    }
    Channel* ch_ = nullptr;
    mutable std::optional<T> cur_;
  };
  iterator begin() { return iterator(this); }
  std::default_sentinel_t end() { return {}; }
  struct Range {
    Channel* ch;
    iterator begin() { return ch->begin(); }
    std::default_sentinel_t end() { return {}; }
  };
  Range range() { return Range{this}; }

 private:
  // For weft/select.h (found by argument-dependent lookup).
  friend detail::ChanCore* detail_core(Channel& c) { return &c.core_; }

  absl::Status send_status(T* value, int64_t deadline, const std::stop_token* stop) {
    switch (core_.send_op(value, deadline, stop)) {
      case detail::ChanCore::kOk:
        return absl::OkStatus();
      case detail::ChanCore::kClosed:
        return absl::FailedPreconditionError("channel closed");
      case detail::ChanCore::kTimedOut:
        return absl::DeadlineExceededError("channel send timed out");
      case detail::ChanCore::kWouldBlock:
        return absl::UnavailableError("channel full");
      default:
        return absl::CancelledError("channel send cancelled");
    }
  }
  absl::StatusOr<T> recv_status(int64_t deadline, const std::stop_token* stop) {
    alignas(T) unsigned char buf[sizeof(T)];
    switch (core_.recv_op(buf, deadline, stop)) {
      case detail::ChanCore::kOk: {
        T* p = std::launder(reinterpret_cast<T*>(buf));
        absl::StatusOr<T> r(std::move(*p));
        p->~T();
        return r;
      }
      case detail::ChanCore::kClosed:
        return absl::OutOfRangeError("channel closed");
      case detail::ChanCore::kTimedOut:
        return absl::DeadlineExceededError("channel recv timed out");
      case detail::ChanCore::kWouldBlock:
        return absl::UnavailableError("channel empty");
      default:
        return absl::CancelledError("channel recv cancelled");
    }
  }

  detail::ChanCore core_;
};

}  // namespace weft
