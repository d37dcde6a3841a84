// runtime/sync/channel.cc — the channel algorithms behind weft::Channel<T>
// (weft/channel.h) and weft::select (weft/select.h, runtime/sync/select.cc).
//
// Actors. A channel (detail::ChanCore) has a ring of `cap` slots, a queue
// of parked receivers (recvq) and one of parked senders (sendq), and a
// spinlock over its indices and queues. A waiter — a ULT that parks or a
// foreign thread that futex-waits — is a SelectWaiter (one state word,
// chan_internal.h) with one ChanWaiter record per channel case, all on its
// stack. A plain send or recv is a select of one channel case (plus a
// deadline or a stop case).
//
// The path of a value (Go's chan.go, with the value moves taken out of
// the lock):
//   send: lock; closed -> fail. A claimable receiver in recvq -> pop it,
//         claim it (CAS on its state word), unlock, move the value into its
//         record's buffer, complete it (kDone, wake). A free ring position
//         -> reserve tail, unlock, move the value into that slot. Else queue
//         a record in sendq, unlock, park.
//   recv: lock; a reserved position -> reserve head; if a sender is parked
//         (the ring is full), claim it and reserve tail for its value;
//         unlock; move the value out of head's slot, then the sender's value
//         into tail's slot, and complete the sender. Unbuffered: a parked
//         sender -> claim it, unlock, move its value straight out of its
//         record. Else closed -> OutOfRange; else queue in recvq and park.
// So a value handed to a parked party never sits in the ring, a sender
// parked on a full channel gets its slot from the receiver that freed it
// (FIFO order kept), and an unbuffered send returns only once a receiver
// holds its value.
//
// Invariants (under the lock; a "claimable" record is one whose state word
// is kWaiting):
//   - 0 <= tail - head <= cap;
//   - a claimable record in sendq  =>  tail - head == cap (full) and open;
//   - a claimable record in recvq  =>  tail == head (empty), no claimable
//     sender, and open;
//   - closed  =>  no claimable record in either queue (close() claims them
//     all) and none is added.
// Records that are not claimable (their select was completed through
// another case, or timed out) may stay queued until their owner removes
// them; whoever pops one drops it.
//
// The ring. Each slot has a sequence number (after Vyukov's bounded
// queue, doubled so that a one-slot ring works too): seq == 2p means
// "empty, ready for the writer of position p"; 2p + 1 means "full, ready
// for the reader of position p"; the reader then stores 2(p + cap) (empty
// for the writer of the next lap). With Vyukov's p / p + 1 / p + cap, cap 1
// would make "full at p" equal "empty at p + 1". The moves run T's move
// constructor, which is user code: they run with no lock held, between the
// reservation (under the lock) and the sequence store.
//
// A position is handed out under the lock only if its slot is ready for it
// right now (its sequence number says so); otherwise the plan is kBusy: the
// caller unlocks, waits for the slot's previous party (a few ns, unless
// that party was descheduled mid-move) and plans again. So at most one
// party moves into or out of a slot at a time and nobody is ever committed
// behind another: handing out positions ahead of the slot made parties
// queue lap after lap on a one-slot ring, each waiting (spin, yield) for
// the previous one to be scheduled — a convoy that turned 0.2 s of
// timeout-heavy traffic into 35 s on a loaded 2-CPU machine.
//
// The claim handshake (why nothing is lost when a wait ends by timeout,
// stop or close at the same time as a peer arrives):
//
//   peer (under the channel's lock)        waiter at its deadline / stop cb
//   pop record r                           CAS state kWaiting -> kDone
//   CAS r.sel.state kWaiting -> kClaimed     (timeout: the waiter itself) or
//   ok: unlock; move the value;              kWaiting -> kClaimed (stop cb)
//       fired = r.index; state = kDone;    ok: nobody can claim it any more;
//       unpark / futex_wake                    the waiter removes its records
//   fails: drop r, try the next record     fails: a peer claimed it first:
//                                              wait for kDone, the operation
//                                              succeeded after all
//
// Exactly one CAS from kWaiting wins; the value moves only after a won
// claim, so a value is either moved into the waiter (which then reports
// success even if its deadline has passed) or not moved at all (the sender
// keeps it).
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <new>

#include "runtime/locks.h"
#include "runtime/park.h"
#include "runtime/scheduler.h"
#include "runtime/sync/chan_internal.h"
#include "sys/futex.h"
#include "sys/raw_log.h"
#include "sys/spin.h"
#include "weft/channel.h"
#include "weft/runtime.h"

namespace weft::detail {

namespace {

constexpr size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

std::atomic<uint64_t>* seq_at(unsigned char* slots, size_t stride, size_t cap, uint64_t pos) {
  return std::launder(reinterpret_cast<std::atomic<uint64_t>*>(slots + (pos % cap) * stride));
}

// Waits until *seq == want: the party one lap ahead or behind is moving a
// value in or out of this slot right now (a T move, usually nanoseconds).
void wait_seq(std::atomic<uint64_t>* seq, uint64_t want) {
  for (int spins = 0; seq->load(std::memory_order_acquire) != want; ++spins) {
    if (spins < 64) {
      rt::cpu_relax();
    } else {
      // The other party may be a ULT of this worker (preempted, or parked
      // inside T's move constructor): let it run.
      weft::this_ult::yield();
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------
// ChanCore: construction, close, size

ChanCore::ChanCore(size_t capacity, const ValueOps* ops) : cap_(capacity), ops_(ops) {
  if (cap_ == 0) return;
  const size_t align = std::max<size_t>(ops_->align, alignof(std::atomic<uint64_t>));
  value_off_ = round_up(sizeof(std::atomic<uint64_t>), ops_->align);
  stride_ = round_up(value_off_ + ops_->size, align);
  if (cap_ > SIZE_MAX / stride_) throw std::bad_alloc();
  slots_ = static_cast<unsigned char*>(::operator new(cap_ * stride_, std::align_val_t(align)));
  for (size_t i = 0; i < cap_; ++i) ::new (slots_ + i * stride_) std::atomic<uint64_t>(2 * i);
}

ChanCore::~ChanCore() {
  WEFT_DCHECK(recvq_.head == nullptr && sendq_.head == nullptr,
              "weft::Channel %p destroyed while a send, recv or select still waits on it", static_cast<void*>(this));
  if (slots_ == nullptr) return;
  for (uint64_t p = head_; p != tail_; ++p) {
    WEFT_DCHECK(seq_at(slots_, stride_, cap_, p)->load(std::memory_order_acquire) == 2 * p + 1,
                "weft::Channel %p destroyed while a value moves in or out", static_cast<void*>(this));
    ops_->destroy(slots_ + (p % cap_) * stride_ + value_off_);
  }
  const size_t align = std::max<size_t>(ops_->align, alignof(std::atomic<uint64_t>));
  ::operator delete(slots_, std::align_val_t(align));
}

void ChanCore::close() {
  ChanWaiter* claimed = nullptr;  // popped and claimed, linked through next
  ChanImpl::lock(this);
  if (!closed_) {
    closed_ = true;
    for (ChanQueue* q : {&recvq_, &sendq_}) {
      while (ChanWaiter* w = ChanImpl::pop_claimable(*q)) {
        w->next = claimed;
        claimed = w;
      }
    }
  }
  ChanImpl::unlock(this);
  // Outside the lock: each completion reads next before the record can go.
  while (claimed != nullptr) {
    ChanWaiter* next = claimed->next;
    ChanImpl::complete(claimed, /*closed=*/true);
    claimed = next;
  }
}

bool ChanCore::closed() const {
  auto* self = const_cast<ChanCore*>(this);
  ChanImpl::lock(self);
  bool c = closed_;
  ChanImpl::unlock(self);
  return c;
}

size_t ChanCore::size() const {
  auto* self = const_cast<ChanCore*>(this);
  ChanImpl::lock(self);
  size_t n = static_cast<size_t>(tail_ - head_);
  ChanImpl::unlock(self);
  return n;
}

// ---------------------------------------------------------------------------
// The single-channel operations: a select of one channel case, plus a
// deadline case and a stop case when asked for.

namespace {
// The common case — one channel, at most a deadline, no stop token — without
// select's general machinery (the same steps as select_cases for one case).
// deadline_ns: -1 none, 0 do not wait, else CLOCK_MONOTONIC ns; `expired`
// (a deadline already past) does not wait either but reports kTimedOut.
ChanCore::Result one_op_fast(ChanCore* c, bool send, void* val, int64_t deadline_ns, bool expired) {
  ChanImpl::lock(c);
  Plan p = send ? ChanImpl::plan_send(c) : ChanImpl::plan_recv(c);
  while (p.kind == Plan::kBusy) {
    ChanImpl::unlock(c);
    ChanImpl::wait_busy(p);
    ChanImpl::lock(c);
    p = send ? ChanImpl::plan_send(c) : ChanImpl::plan_recv(c);
  }
  if (p.kind != Plan::kNotReady) {
    ChanImpl::unlock(c);
    bool closed = false;
    ChanImpl::execute(c, p, val, &closed);
    return closed ? ChanCore::kClosed : ChanCore::kOk;
  }
  if (deadline_ns == 0 || expired) {
    ChanImpl::unlock(c);
    return expired ? ChanCore::kTimedOut : ChanCore::kWouldBlock;
  }
  SelectWaiter sw;
  sw.ult = rt::current_ult();
  ChanWaiter rec;
  rec.sel = &sw;
  rec.val = val;
  rec.index = 0;
  ChanImpl::enqueue(c, &rec, send);
  ChanImpl::unlock(c);
  wait_done(&sw, deadline_ns, 1, send ? "Channel send" : "Channel receive", c);
  if (sw.fired == 0) return sw.closed ? ChanCore::kClosed : ChanCore::kOk;
  ChanImpl::dequeue(c, &rec, send);  // timed out: nobody claimed us
  return ChanCore::kTimedOut;
}

ChanCore::Result one_op(ChanCore* c, SelCase::Kind kind, void* val, int64_t deadline_ns, const std::stop_token* stop) {
  if (stop == nullptr || !stop->stop_possible()) {
    if (deadline_ns == kForeverNs) deadline_ns = -1;
    const bool expired = deadline_ns > 0 && deadline_ns <= monotonic_now_ns();  // try once
    return one_op_fast(c, kind == SelCase::kSend, val, deadline_ns, expired);
  }
  SelCase cases[3];
  int n = 0;
  cases[n].kind = kind;
  cases[n].ch = c;
  cases[n].val = val;
  ++n;
  int deadline_at = -1, stop_at = -1;
  // A deadline already past makes the call non-blocking, as try_*: a value
  // or a peer there now wins (a select would draw between it and the
  // expired deadline).
  const bool expired = deadline_ns == 0 || (deadline_ns > 0 && deadline_ns <= monotonic_now_ns());
  if (expired) {
    deadline_at = n;
    cases[n++].kind = SelCase::kDefault;
  } else if (deadline_ns > 0 && deadline_ns != kForeverNs) {
    deadline_at = n;
    cases[n].kind = SelCase::kDeadline;
    cases[n++].deadline = deadline_ns;
  }
  if (stop != nullptr && stop->stop_possible()) {
    stop_at = n;
    cases[n].kind = SelCase::kStop;
    cases[n++].stop = stop;
  }
  int fired = select_cases(cases, n);
  if (fired == 0) return cases[0].closed ? ChanCore::kClosed : ChanCore::kOk;
  if (fired == deadline_at) return deadline_ns == 0 ? ChanCore::kWouldBlock : ChanCore::kTimedOut;
  WEFT_DCHECK(fired == stop_at, "channel op: case %d fired of %d", fired, n);
  return ChanCore::kCancelled;
}
}  // namespace

ChanCore::Result ChanCore::send_op(void* value, int64_t deadline_ns, const std::stop_token* stop) noexcept {
  return one_op(this, SelCase::kSend, value, deadline_ns, stop);
}

ChanCore::Result ChanCore::recv_op(void* storage, int64_t deadline_ns, const std::stop_token* stop) noexcept {
  return one_op(this, SelCase::kRecv, storage, deadline_ns, stop);
}

// ---------------------------------------------------------------------------
// ChanImpl

void ChanImpl::lock(ChanCore* c) {
  sys::locks_held_add(1);  // before the acquire, as QueueLock (wait_list.h)
  sys::spin_acquire<256>(c->lock_);
}

void ChanImpl::unlock(ChanCore* c) {
  sys::spin_release(c->lock_);
  sys::locks_held_add(static_cast<uint32_t>(-1));
}

void ChanImpl::push_back(ChanQueue& q, ChanWaiter* w) {
  WEFT_DCHECK(!w->queued, "channel waiter %p queued twice", static_cast<void*>(w));
  w->prev = q.tail;
  w->next = nullptr;
  if (q.tail) q.tail->next = w; else q.head = w;
  q.tail = w;
  w->queued = true;
}

bool ChanImpl::remove(ChanQueue& q, ChanWaiter* w) {
  if (!w->queued) return false;
  if (w->prev) w->prev->next = w->next; else q.head = w->next;
  if (w->next) w->next->prev = w->prev; else q.tail = w->prev;
  w->prev = w->next = nullptr;
  w->queued = false;
  return true;
}

ChanWaiter* ChanImpl::pop_claimable(ChanQueue& q) {
  while (ChanWaiter* w = q.head) {
    remove(q, w);
    uint32_t s = SelectWaiter::kWaiting;
    if (w->sel->state.compare_exchange_strong(s, SelectWaiter::kClaimed, std::memory_order_acq_rel,
                                              std::memory_order_acquire))
      return w;
    // Completed through another case, or timed out: its owner removes its
    // other records itself and finds this one gone.
  }
  return nullptr;
}

bool ChanImpl::has_waiter(ChanQueue& q) {
  while (ChanWaiter* w = q.head) {
    if (w->sel->state.load(std::memory_order_acquire) == SelectWaiter::kWaiting) return true;
    remove(q, w);
  }
  return false;
}

Plan ChanImpl::plan_recv(ChanCore* c) {
  Plan p;
  if (c->tail_ != c->head_) {
    std::atomic<uint64_t>* seq = seq_at(c->slots_, c->stride_, c->cap_, c->head_);
    if (uint64_t s = seq->load(std::memory_order_acquire); s != 2 * c->head_ + 1) {
      p.kind = Plan::kBusy;  // its writer is still moving the value in
      p.seq = seq;
      p.seen = s;
      return p;
    }
    p.kind = Plan::kRecvSlot;
    p.pos = c->head_++;
    if (ChanWaiter* s = pop_claimable(c->sendq_)) {
      WEFT_DCHECK(c->tail_ - c->head_ == c->cap_ - 1, "channel %p: sender parked on a ring that was not full",
                  static_cast<void*>(c));
      p.kind = Plan::kRecvSlotPull;
      p.wpos = c->tail_++;
      p.peer = s;
    }
    return p;
  }
  if (ChanWaiter* s = pop_claimable(c->sendq_)) {
    p.kind = Plan::kRecvDirect;
    p.peer = s;
    return p;
  }
  if (c->closed_) p.kind = Plan::kRecvClosed;
  return p;
}

Plan ChanImpl::plan_send(ChanCore* c) {
  Plan p;
  if (c->closed_) {
    p.kind = Plan::kSendClosed;
    return p;
  }
  if (ChanWaiter* r = pop_claimable(c->recvq_)) {
    WEFT_DCHECK(c->tail_ == c->head_, "channel %p: receiver parked on a non-empty ring", static_cast<void*>(c));
    p.kind = Plan::kSendDirect;
    p.peer = r;
    return p;
  }
  if (c->tail_ - c->head_ < c->cap_) {
    std::atomic<uint64_t>* seq = seq_at(c->slots_, c->stride_, c->cap_, c->tail_);
    if (uint64_t s = seq->load(std::memory_order_acquire); s != 2 * c->tail_) {
      p.kind = Plan::kBusy;  // the previous lap's reader is still moving out
      p.seq = seq;
      p.seen = s;
      return p;
    }
    p.kind = Plan::kSendSlot;
    p.pos = c->tail_++;
  }
  return p;
}

void ChanImpl::wait_busy(const Plan& p) {
  for (int spins = 0; p.seq->load(std::memory_order_acquire) == p.seen; ++spins) {
    if (spins < 64) {
      rt::cpu_relax();
    } else {
      weft::this_ult::yield();  // the mover may be a ULT of this worker
    }
  }
}

void ChanImpl::execute(ChanCore* c, const Plan& p, void* val, bool* closed) noexcept {
  const ValueOps* ops = c->ops_;
  auto slot_value = [c](uint64_t pos) { return c->slots_ + (pos % c->cap_) * c->stride_ + c->value_off_; };
  auto read_slot = [&](uint64_t pos, void* dst) {
    std::atomic<uint64_t>* seq = seq_at(c->slots_, c->stride_, c->cap_, pos);
    wait_seq(seq, 2 * pos + 1);
    void* v = slot_value(pos);
    ops->move_construct(dst, v);
    ops->destroy(v);
    seq->store(2 * (pos + c->cap_), std::memory_order_release);
  };
  auto write_slot = [&](uint64_t pos, void* src) {
    std::atomic<uint64_t>* seq = seq_at(c->slots_, c->stride_, c->cap_, pos);
    wait_seq(seq, 2 * pos);
    ops->move_construct(slot_value(pos), src);
    seq->store(2 * pos + 1, std::memory_order_release);
  };
  switch (p.kind) {
    case Plan::kRecvSlot:
      read_slot(p.pos, val);
      break;
    case Plan::kRecvSlotPull:
      read_slot(p.pos, val);
      write_slot(p.wpos, p.peer->val);
      complete(p.peer, false);
      break;
    case Plan::kRecvDirect:
      ops->move_construct(val, p.peer->val);
      complete(p.peer, false);
      break;
    case Plan::kSendDirect:
      ops->move_construct(p.peer->val, val);
      complete(p.peer, false);
      break;
    case Plan::kSendSlot:
      write_slot(p.pos, val);
      break;
    case Plan::kRecvClosed:
    case Plan::kSendClosed:
      *closed = true;
      break;
    case Plan::kNotReady:
    case Plan::kBusy:
      WEFT_DCHECK(false, "channel %p: executing a plan that is not ready", static_cast<void*>(c));
      break;
  }
}

void ChanImpl::dequeue(ChanCore* c, ChanWaiter* w, bool send) {
  lock(c);
  remove(send ? c->sendq_ : c->recvq_, w);
  unlock(c);
}

void ChanImpl::complete(ChanWaiter* w, bool closed) noexcept {
  SelectWaiter* s = w->sel;
  s->fired = w->index;
  s->closed = closed;
  finish_claim(s);
}

void finish_claim(SelectWaiter* s) noexcept {
  WEFT_DCHECK(s->state.load(std::memory_order_relaxed) == SelectWaiter::kClaimed, "finishing unclaimed waiter %p (state %u)",
              static_cast<void*>(s), s->state.load(std::memory_order_relaxed));
  rt::UltDesc* u = s->ult;  // before kDone: the record may vanish after it
  s->state.store(SelectWaiter::kDone, std::memory_order_release);
  if (u != nullptr) {
    rt::unpark(u);
  } else {
    sys::futex_wake(&s->state, 1);
  }
}

}  // namespace weft::detail
