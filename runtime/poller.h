// runtime/poller.h — how an idle worker waits, and how others wake it.
//
// The scheduler knows nothing of io_uring (DESIGN.md, layers): a worker with
// nothing to run calls its Poller's wait(), and a thread that gives it work
// calls wake(). The default is a futex (FutexPoller); io/ supplies one that
// waits in io_uring_enter and reaps completions.
//
// Contract:
//  - wait(deadline_ns) is called only by the owning worker. It returns when
//    wake() has been called since the previous wait() returned (a wake that
//    comes before the wait is not lost: it makes the next wait return at
//    once), when the deadline (CLOCK_MONOTONIC ns; -1 = none) passes, or
//    spuriously. It may run ready work itself (io completions) through the
//    hooks the io layer installs.
//  - wake() may be called by any thread, any number of times, and is cheap
//    when the worker is not waiting.
//  - poll() is called by the owning worker at every scheduling pass; it must
//    not block. The default does nothing.
//  - needs_poll() is checked at every direct ULT-to-ULT switch (inline, a
//    few loads): when true the switch goes through the scheduler loop, which
//    calls poll(). It means "completions are waiting", read from the
//    poller's PollHints: a flags word someone else sets (io_uring's
//    IORING_SQ_TASKRUN) and a produced/consumed index pair that differ
//    while a ring holds entries. Requests the poller holds but has not
//    submitted do not count: they go out at the next scheduler pass, when
//    the worker has run what was runnable, so that one submission carries
//    many requests.
//
// Which Poller a runtime's workers get: FutexPoller, unless a factory was
// registered (io/ registers its io_uring/epoll poller when it is linked in).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "runtime/counter.h"

namespace weft::rt {

class Poller {
 public:
  virtual ~Poller() = default;
  virtual void wait(int64_t deadline_ns) = 0;
  virtual void wake() = 0;
  virtual void poll() {}
  // In a forked child only, on the one KLT the child has. The parent's
  // poller state (a ring, an epoll instance, an eventfd) must not be used
  // there: close the descriptors it holds without using them (a ring's
  // memory is not even mapped in the child: MADV_DONTFORK) and never touch
  // them again; the object is then only destroyed or leaked. Reads nothing
  // but the descriptor numbers: for another worker's poller, the rest of
  // the object may have been in mid-change at the fork. Async-signal-safe.
  virtual void close_after_fork() {}
  // What the poller's engine did, for WorkerStats (all 0 for FutexPoller):
  // written only by the owning worker (bump_by: load + store, no locked
  // instruction), read by anyone.
  struct Counters {
    std::atomic<uint64_t> submitted{0};  // requests handed to the kernel
    std::atomic<uint64_t> completed{0};  // completions or events taken in
    std::atomic<uint64_t> enters{0};     // system calls into the engine
  };
  const Counters& counters() const { return counters_; }
  // The object of the layer that made this poller (io/'s Engine), so that
  // the layer finds its own object from rt::caller().poller without RTTI;
  // null for FutexPoller.
  void* layer_object() const { return layer_object_; }

  bool needs_poll() const {
    return (hints_.flags != nullptr && (*hints_.flags & hints_.flags_mask) != 0) ||
           (hints_.produced != nullptr && *hints_.produced != *hints_.consumed);
  }

 protected:
  // What needs_poll() reads; set by a subclass on its owner's KLT (null
  // pointers: not used). Work is waiting when flags & flags_mask is
  // nonzero, or when the producer index differs from the consumer index.
  struct PollHints {
    const volatile uint32_t* flags = nullptr;
    uint32_t flags_mask = 0;
    const volatile uint32_t* produced = nullptr;
    const volatile uint32_t* consumed = nullptr;
  };
  PollHints hints_;
  void* layer_object_ = nullptr;
  Counters counters_;
};

// Waits on a futex word.
//
//   word: 0 = no wake pending, 1 = wake pending, 2 = waiter asleep
//
//   waker                              waiter
//   old = exchange(word, 1)            if exchange(word, 2) == 1: word = 0; return
//   if old == 2: futex_wake            futex_wait(word, 2, deadline)
//                                      exchange(word, 0)
//
// A wake before the waiter's exchange leaves 1, which the exchange sees; a
// wake after it sees 2 and issues the futex wake, which the kernel delivers
// unless the word already changed, in which case futex_wait does not sleep.
// The waiting side of this protocol on `word`: returns after a wake (at
// once if one is pending), at the deadline (CLOCK_MONOTONIC ns; -1 = none)
// or spuriously, and leaves the word 0. io/'s engines use it while they
// have no ring or epoll of their own.
void futex_word_wait(std::atomic<uint32_t>* word, int64_t deadline_ns);

class FutexPoller final : public Poller {
 public:
  void wait(int64_t deadline_ns) override;
  void wake() override;

 private:
  std::atomic<uint32_t> word_{0};
};

// Builds the poller of a worker (index -1 for bound workers). Called on the
// thread that creates the worker, not on the worker's KLT: a poller that
// needs its owner thread (an io_uring with SINGLE_ISSUER) must set itself
// up lazily, in its first wait()/poll() or owner call.
using PollerFactory = std::unique_ptr<Poller> (*)(int index, void* ctx);

// Registers the factory every Runtime created afterwards uses (io/ calls it
// from a static initialiser). Null restores FutexPoller.
void register_poller_factory(PollerFactory f, void* ctx);
PollerFactory registered_poller_factory(void** ctx);

}  // namespace weft::rt
