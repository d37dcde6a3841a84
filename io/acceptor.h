// io/acceptor.h — the state of an io::Acceptor (socket_ops.cc) and what the
// io_uring engine calls for it: one IORING_OP_ACCEPT with
// IORING_ACCEPT_MULTISHOT kept armed on some worker's ring.
//
// The state is on the heap and reference counted: the Acceptor holds one
// reference, an armed accept one (dropped at its final CQE, the one without
// IORING_CQE_F_MORE), a posted cancel one (dropped at the cancel's own
// CQE). So the ring's worker may reap CQEs naming it after the Acceptor is
// gone (a destructor that stopped waiting), and a cancel keyed by its
// address can never meet a new Acceptor allocated at that address.
//
// Arming: by a ULT in Acceptor::accept(), on its current worker's ring,
// before it parks (the ring is SINGLE_ISSUER; its engine is used only
// before the park, as in uring_ops.cc). `engine` records that ring: CQEs
// come only there, reaped by its worker, which hands each fd to the
// first waiter (a ULT parked anywhere: rt::unpark works from any thread)
// or queues it. A waiter that migrated after arming is woken where it is.
//
// Cancelling (the destructor; a full queue): posted to `engine` with
// Engine::post_op_cancel(tagged pointer, low bit 1), which prepares an
// IORING_OP_ASYNC_CANCEL keyed by the armed SQE's user_data at its next
// pass. io::close(fd) cancels it like any other operation on fd (it is
// counted in the engine's in_flight and fd_ops).
//
// Lock order and reentrancy: `mu` is a KLT lock held for a few loads and
// stores. The engine calls multishot_accept_cqe() while reaping, which can
// happen inside get_sqes() (a full SQ) on a ULT's KLT: so nobody takes an
// SQE, or calls anything that may reap, while holding `mu`.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>

#include "runtime/locks.h"
#include "runtime/park.h"
#include "weft/sync.h"

namespace weft::io_internal {

class UringEngine;

// A ULT parked in Acceptor::accept(), on its stack; listed in
// MultishotAccept::waiters until the engine hands it a result (then
// `done`) or it leaves (timeout, signal) and takes itself out.
struct AcceptWaiter {
  rt::UltDesc* ult = nullptr;
  bool done = false;   // guarded by mu: result is final, we are off the list
  int result = 0;      // an fd, -errno, or kRearm
};

struct alignas(8) MultishotAccept {
  explicit MultishotAccept(int f) : fd(f) {}
  // The waiter should arm the accept again (it ended without an error for
  // the waiters: a cancel of our own, or the kernel stopped it).
  static constexpr int kRearm = 1 << 30;

  const int fd;
  rt::KltMutex mu;
  // Guarded by mu:
  bool armed = false;          // an SQE is in flight whose final CQE has not come
  bool cancel_posted = false;  // a cancel of our own (full queue) is on its way
  bool closing = false;        // the Acceptor is being destroyed
  UringEngine* engine = nullptr;  // the ring it is (or was last) armed on
  std::deque<int> ready;             // accepted, not yet returned
  std::deque<AcceptWaiter*> waiters;  // oldest first
  // Not guarded:
  std::atomic<uint32_t> refs{1};   // the Acceptor's; see above
  WaitGroup idle{0};               // 1 while armed: the destructor waits on it
};

// Drops a reference; the last one closes the queued fds and frees m.
void multishot_unref(MultishotAccept* m);
// Engine side (uring_engine.cc calls these, on the owner's KLT):
// a CQE of the armed accept.
void multishot_accept_cqe(UringEngine* e, MultishotAccept* m, int res, uint32_t flags);
// The CQE of a cancel posted for m (its result does not matter).
inline void multishot_cancel_cqe(MultishotAccept* m) { multishot_unref(m); }

}  // namespace weft::io_internal
