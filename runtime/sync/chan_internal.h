// runtime/sync/chan_internal.h — what channel.cc (the channel algorithms),
// select.cc (waiting on several cases) and timer.cc share: the waiter
// records and the channel operations split into "decide under the lock"
// and "move the values after it". Design: runtime/sync/channel.cc.
#pragma once

#include <atomic>
#include <cstdint>

#include "sys/raw_log.h"
#include "weft/channel.h"

namespace weft::rt {
struct UltDesc;
}

namespace weft::detail {

// One waiting select (a plain send or recv is a select of one or a few
// cases), on the waiter's stack. Its state word decides, by CAS, which one
// event completes the wait — a peer's channel operation, close(), a stop
// callback, or the waiter's own deadline:
//
//   kWaiting --CAS by a claimer--> kClaimed --store by it--> kDone
//   kWaiting --CAS by the waiter at its deadline------------> kDone
//
// A claimer is whoever won the CAS: a peer (under the lock of the channel
// whose queue held the waiter's record), close() (likewise), or a stop
// callback (no lock). Between its CAS and its store of kDone the claimer
// owns `fired`, `closed` and the claimed record's value buffer; the waiter
// must not return meanwhile (its stack holds them). After the store the
// claimer touches only the ULT it read before (`ult`, unpark) or the state
// word's address (futex_wake, harmless if the stack was reused): never the
// record. The waiter reads `fired`/`closed` and the value after loading
// kDone (acquire), and afterwards removes its other records from their
// queues itself (they are no longer claimable: a peer that pops one drops
// it).
struct SelectWaiter {
  static constexpr uint32_t kWaiting = 0;  // parked or about to park; claimable
  static constexpr uint32_t kClaimed = 1;  // a claimer is completing the wait
  static constexpr uint32_t kDone = 2;     // completed; `fired` says by what

  std::atomic<uint32_t> state{kWaiting};  // also the futex word of a thread
  rt::UltDesc* ult = nullptr;             // the parked ULT; null for a thread
  int fired = -1;                         // the case that completed the wait
  bool closed = false;                    // ... because its channel is closed
};

// One channel case of a waiting select: a record in that channel's recvq
// or sendq (guarded by the channel's lock), on the waiter's stack.
struct ChanWaiter {
  ChanWaiter* prev = nullptr;  // queue links, guarded by the channel's lock
  ChanWaiter* next = nullptr;  // (also links a claimer's private list once popped)
  bool queued = false;         // in the queue; written under the lock
  SelectWaiter* sel = nullptr;
  void* val = nullptr;  // send: the T to move from; recv: storage for a T
  int index = -1;       // the case's index in the select
};

// A decision taken under a channel's lock, carried out after it.
struct Plan {
  enum Kind : uint8_t {
    kNotReady,
    kBusy,          // the ring slot to use is still being moved into or out of
                    // by the party of the previous lap: wait until *seq is no
                    // longer `seen` (wait_busy), then plan again. Nothing was
                    // reserved. (Not "until *seq == the value we need": others
                    // may use the slot meanwhile and move it past that value.)
    kRecvSlot,      // take the value at ring position pos
    kRecvSlotPull,  // ... then move parked sender peer's value into position wpos
    kRecvDirect,    // move parked sender peer's value (unbuffered)
    kRecvClosed,    // closed and drained
    kSendDirect,    // move our value into parked receiver peer
    kSendSlot,      // move our value into ring position pos
    kSendClosed,    // closed: the value stays with us
  };
  Kind kind = kNotReady;
  uint64_t pos = 0, wpos = 0;
  ChanWaiter* peer = nullptr;  // claimed (kClaimed) by us under the lock
  std::atomic<uint64_t>* seq = nullptr;  // kBusy
  uint64_t seen = 0;                     // kBusy: the slot's sequence number then
};

struct ChanImpl {
  // The channel's spinlock (counted in sys::t_locks_held like every weft
  // lock). Under it: a few loads, stores and CASes; never a value move,
  // never user code, never a park.
  static void lock(ChanCore* c);
  static void unlock(ChanCore* c);

  // Queue operations; the caller holds the lock.
  static void push_back(ChanQueue& q, ChanWaiter* w);
  static bool remove(ChanQueue& q, ChanWaiter* w);  // false if not queued (popped)
  // Pops records until one is claimed (CAS kWaiting -> kClaimed); records
  // whose select is already claimed or done are dropped on the way.
  static ChanWaiter* pop_claimable(ChanQueue& q);
  // Drops stale records at the head; true if a claimable one is left
  // (it may still be claimed elsewhere before we CAS it).
  static bool has_waiter(ChanQueue& q);

  // Readiness (lock held): would recv/send proceed without waiting?
  static bool recv_ready(ChanCore* c) { return c->tail_ != c->head_ || has_waiter(c->sendq_) || c->closed_; }
  static bool send_ready(ChanCore* c) {
    return c->closed_ || has_waiter(c->recvq_) || c->tail_ - c->head_ < c->cap_;
  }
  // Decides a recv/send (lock held): reserves ring positions and claims a
  // peer. kNotReady and kBusy change nothing.
  static Plan plan_recv(ChanCore* c);
  static Plan plan_send(ChanCore* c);
  // After kBusy, with no lock held: waits (spin, then yield) until the
  // slot's party of the previous lap is done with it.
  static void wait_busy(const Plan& p);
  // Carries a plan out (lock NOT held): the value moves, then completes
  // the claimed peer. `val` is our case's value/storage; `closed` is set
  // for kRecvClosed/kSendClosed.
  static void execute(ChanCore* c, const Plan& p, void* val, bool* closed) noexcept;
  // Queues w as a receiver / sender (lock held), after a plan said
  // kNotReady: the channel is open, and a sender waits only on a full ring,
  // a receiver only on an empty one (channel.cc, "Invariants").
  static void enqueue(ChanCore* c, ChanWaiter* w, bool send) {
    WEFT_DCHECK(!c->closed_, "channel %p: waiter queued on a closed channel", static_cast<void*>(c));
    WEFT_DCHECK(send ? c->tail_ - c->head_ == c->cap_ : c->tail_ == c->head_,
                "channel %p: %s queued with %llu of %zu positions reserved", static_cast<void*>(c),
                send ? "sender" : "receiver", static_cast<unsigned long long>(c->tail_ - c->head_), c->cap_);
    push_back(send ? c->sendq_ : c->recvq_, w);
  }
  // Removes w from c's queues if it is still there (takes the lock).
  static void dequeue(ChanCore* c, ChanWaiter* w, bool send);

  // Ends a claimed wait: records the fired case, stores kDone, wakes.
  static void complete(ChanWaiter* w, bool closed) noexcept;
};

// Wakes the waiter of a claimed SelectWaiter after `fired`/`closed` were
// written (see SelectWaiter).
void finish_claim(SelectWaiter* s) noexcept;

// The waiting half (runtime/sync/select.cc): waits until sw is kDone; at
// `deadline` (CLOCK_MONOTONIC ns, -1 none) completes it itself with case
// `deadline_at` unless a claimer got there first (then it waits for that
// claimer's kDone). A ULT parks, a thread futex-waits on sw->state.
// `what`/`obj`: the ULT's wait note while it parks (runtime/debug_info.h).
void wait_done(SelectWaiter* sw, int64_t deadline, int deadline_at, const char* what = "select", const void* obj = nullptr);

}  // namespace weft::detail
