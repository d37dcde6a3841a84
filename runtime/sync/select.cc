// runtime/sync/select.cc — detail::select_cases: wait until one of several
// cases (channel receive/send, deadline, stop token, default) can proceed,
// and perform exactly that one (weft/select.h; channel.cc has the channel
// side and the claim handshake).
//
// The path of a select (Go's selectgo):
//  1. Lock every distinct channel named (in address order: no deadlock
//     between selects naming the same channels in other orders).
//  2. Poll: collect the cases that can proceed now (a channel with a value,
//     room, a parked peer or closed; a deadline passed; a stop requested),
//     pick one uniformly at random and perform it: plan under the locks,
//     unlock, move the values. A channel case may turn out not ready after
//     all (its only peer was claimed through another channel meanwhile):
//     it leaves the draw and another is picked.
//  3. Nothing ready: a default case fires at once. Otherwise queue one
//     ChanWaiter per channel case, all pointing at one SelectWaiter on this
//     stack, unlock, register a std::stop_callback per stop case, and wait
//     until the state word is kDone — set by the claimer that won the
//     select (a peer, close(), a stop callback) or by this waiter itself at
//     the earliest deadline (CAS kWaiting -> kDone).
//  4. Deregister the stop callbacks (a callback running on another thread
//     is waited for), then remove the other records from their queues: they
//     can no longer be claimed, and a peer that popped one dropped it.
//
// Locks: only channel spinlocks, each held for a few loads, stores and
// CASes; never across a value move, a park, a stop callback or user code.
//
// Stop callbacks are std::stop_callback. When its callback is running on
// the thread that requested the stop, ~stop_callback waits for it by
// blocking the KLT (libstdc++'s binary semaphore), not by parking. The
// callback (StopWake: one CAS, an unpark) is weft code, which time-slice
// preemption never interrupts, so that wait is a few instructions long.
// The one residual hazard: the requester is a ULT preempted inside
// libstdc++'s request_stop, after our callback returned and before it
// releases the semaphore, and the woken waiter then runs on that ULT's
// worker (a preempted ULT resumes only there): the worker would wait for
// itself. It needs a preemption signal in a window of a few instructions;
// not seen in tests, not excluded.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <new>
#include <type_traits>
#include <stop_token>

#include "runtime/debug_info.h"
#include "runtime/park.h"
#include "runtime/scheduler.h"
#include "runtime/sync/chan_internal.h"
#include "sys/futex.h"
#include "sys/raw_log.h"
#include "weft/channel.h"

namespace weft::detail {

namespace {

// Room for n elements of T: on the stack up to N, else on the heap. The
// elements are neither constructed nor destroyed here (the callers
// construct the few they use with placement new): value-initialising a
// few hundred bytes per call cost a third of a channel handoff.
template <class T, size_t N>
class RawArray {
 public:
  explicit RawArray(size_t n) {
    if (n > N) {
      heap_.reset(static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(alignof(T)))));
      p_ = heap_.get();
    }
  }
  RawArray(const RawArray&) = delete;
  RawArray& operator=(const RawArray&) = delete;
  T& operator[](size_t i) { return p_[i]; }
  T* data() { return p_; }

 private:
  struct Free {
    void operator()(T* p) const { ::operator delete(p, std::align_val_t(alignof(T))); }
  };
  alignas(T) unsigned char inline_[N * sizeof(T)];
  std::unique_ptr<T, Free> heap_;
  T* p_ = reinterpret_cast<T*>(inline_);
};

// xorshift64* per KLT: the random pick among ready cases. Used only between
// parks (its TLS address is never kept across one; HACKING.md 4).
__thread uint64_t t_rand_state = 0;

uint32_t next_rand() {
  uint64_t x = t_rand_state;
  if (x == 0) x = (__builtin_ia32_rdtsc() ^ reinterpret_cast<uintptr_t>(&t_rand_state)) | 1;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  t_rand_state = x;
  return static_cast<uint32_t>((x * 0x2545F4914F6CDD1DULL) >> 32);
}

bool is_chan_case(const SelCase& c) { return (c.kind == SelCase::kRecv || c.kind == SelCase::kSend) && c.ch != nullptr; }

// The stop callback of a stop case: claims the select for case `index`
// (if nothing else has) and wakes the waiter. Runs on the thread that
// requests the stop, or inline in the stop_callback constructor.
struct StopWake {
  SelectWaiter* sw;
  int index;
  void operator()() const noexcept {
    uint32_t s = SelectWaiter::kWaiting;
    if (sw->state.compare_exchange_strong(s, SelectWaiter::kClaimed, std::memory_order_acq_rel,
                                          std::memory_order_acquire)) {
      sw->fired = index;
      sw->closed = false;
      finish_claim(sw);
    }
  }
};
using StopCb = std::stop_callback<StopWake>;

}  // namespace

void wait_done(SelectWaiter* sw, int64_t deadline, int deadline_at, const char* what, const void* obj) {
  rt::WaitNote note(sw->ult, what, obj);
  for (int spins = 0;;) {
    uint32_t s = sw->state.load(std::memory_order_acquire);
    if (s == SelectWaiter::kDone) return;
    const bool timed = s == SelectWaiter::kWaiting && deadline >= 0;
    if (timed && rt::monotonic_ns() >= deadline) {
      if (sw->state.compare_exchange_strong(s, SelectWaiter::kDone, std::memory_order_acq_rel,
                                            std::memory_order_acquire)) {
        sw->fired = deadline_at;
        sw->closed = false;
        return;
      }
      continue;  // claimed meanwhile: wait for its kDone
    }
    if (s == SelectWaiter::kClaimed && ++spins < 100) {
      rt::cpu_relax();  // the claimer is moving a value: a few ns
      continue;
    }
    if (sw->ult != nullptr) {
      if (timed) {
        rt::park_current_until(sw->ult, deadline);
      } else {
        rt::park_current(sw->ult);
      }
    } else if (timed) {
      timespec ts{static_cast<time_t>(deadline / 1000000000LL), static_cast<long>(deadline % 1000000000LL)};
      sys::futex_wait_until(&sw->state, s, &ts);
    } else {
      sys::futex_wait(&sw->state, s);
    }
  }
}

int select_cases(SelCase* cases, int n) noexcept {
  // Channels to lock (distinct, address order), the default case and the
  // earliest deadline.
  RawArray<ChanCore*, 8> chans(static_cast<size_t>(n));
  int nchans = 0, default_at = -1, deadline_at = -1, nstops = 0;
  int64_t deadline = -1;
  for (int i = 0; i < n; ++i) {
    SelCase& c = cases[i];
    c.closed = false;
    if (is_chan_case(c)) {
      chans[nchans++] = c.ch;
    } else if (c.kind == SelCase::kDefault) {
      WEFT_DCHECK(default_at < 0, "select: more than one default case");
      default_at = i;
    } else if (c.kind == SelCase::kDeadline && c.deadline >= 0 && c.deadline != kForeverNs) {
      if (deadline_at < 0 || c.deadline < deadline) {
        deadline = c.deadline;
        deadline_at = i;
      }
    } else if (c.kind == SelCase::kStop && c.stop != nullptr && c.stop->stop_possible()) {
      ++nstops;
    }
  }
  if (nchans > 1) {
    std::sort(chans.data(), chans.data() + nchans);
    nchans = static_cast<int>(std::unique(chans.data(), chans.data() + nchans) - chans.data());
  }
  auto lock_all = [&] {
    for (int i = 0; i < nchans; ++i) ChanImpl::lock(chans[i]);
  };
  auto unlock_all = [&] {
    for (int i = nchans - 1; i >= 0; --i) ChanImpl::unlock(chans[i]);
  };

  // Allocated (for many cases) before any lock is taken: no malloc under a
  // spinlock.
  RawArray<int, 8> ready(static_cast<size_t>(n));
  RawArray<ChanWaiter, 4> recs(static_cast<size_t>(n));  // constructed only if we wait
  static_assert(std::is_trivially_destructible_v<ChanWaiter>);

  // 2. Poll, under every lock.
  lock_all();
  for (bool again = true; again;) {
    again = false;
    int k = 0;
    const int64_t now = deadline_at >= 0 ? rt::monotonic_ns() : 0;
    for (int i = 0; i < n; ++i) {
      SelCase& c = cases[i];
      bool r = false;
      switch (c.kind) {
        case SelCase::kRecv:
          r = c.ch != nullptr && ChanImpl::recv_ready(c.ch);
          break;
        case SelCase::kSend:
          r = c.ch != nullptr && ChanImpl::send_ready(c.ch);
          break;
        case SelCase::kDeadline:
          r = c.deadline >= 0 && c.deadline != kForeverNs && now >= c.deadline;
          break;
        case SelCase::kStop:
          r = c.stop != nullptr && c.stop->stop_requested();
          break;
        default:
          break;
      }
      if (r) ready[k++] = i;
    }
    while (k > 0) {
      const int pick = k == 1 ? 0 : static_cast<int>(next_rand() % static_cast<uint32_t>(k));
      const int i = ready[pick];
      SelCase& c = cases[i];
      if (is_chan_case(c)) {
        Plan p = c.kind == SelCase::kRecv ? ChanImpl::plan_recv(c.ch) : ChanImpl::plan_send(c.ch);
        if (p.kind == Plan::kBusy) {
          // Its ring slot is mid-move (channel.cc, "The ring"): wait for
          // it with no lock held, then poll everything again.
          unlock_all();
          ChanImpl::wait_busy(p);
          lock_all();
          again = true;
          break;
        }
        if (p.kind == Plan::kNotReady) {
          ready[pick] = ready[--k];  // its peer went elsewhere: draw again
          continue;
        }
        unlock_all();
        ChanImpl::execute(c.ch, p, c.val, &c.closed);
        return i;
      }
      unlock_all();
      return i;
    }
  }
  if (default_at >= 0) {
    unlock_all();
    return default_at;
  }

  // 3. Queue on every channel and wait.
  SelectWaiter sw;
  sw.ult = rt::current_ult();
  for (int i = 0; i < n; ++i) {
    SelCase& c = cases[i];
    if (!is_chan_case(c)) continue;
    ::new (&recs[i]) ChanWaiter;
    recs[i].sel = &sw;
    recs[i].val = c.val;
    recs[i].index = i;
    ChanImpl::enqueue(c.ch, &recs[i], c.kind == SelCase::kSend);
  }
  unlock_all();
  {
    // Stop callbacks: registered after the records are queued (a callback
    // that runs inline now simply claims the select).
    RawArray<StopCb, 2> cbs(static_cast<size_t>(std::max(nstops, 1)));
    int ncb = 0;
    for (int i = 0; i < n; ++i) {
      SelCase& c = cases[i];
      if (c.kind == SelCase::kStop && c.stop != nullptr && c.stop->stop_possible())
        ::new (&cbs[ncb++]) StopCb(*c.stop, StopWake{&sw, i});
    }
    // The wait note: a select of one channel (a send or receive with a
    // stop token or deadline) names that channel.
    const char* what = "select";
    const void* obj = nullptr;
    if (nchans == 1) {
      for (int i = 0; i < n; ++i) {
        if (is_chan_case(cases[i])) {
          what = cases[i].kind == SelCase::kSend ? "Channel send" : "Channel receive";
          obj = cases[i].ch;
        }
      }
    }
    wait_done(&sw, deadline, deadline_at, what, obj);
    // The callbacks' destructors wait for a callback running elsewhere
    // (it may still be in finish_claim's unpark).
    for (int i = 0; i < ncb; ++i) cbs[i].~StopCb();
  }

  // 4. Take the records of the other cases out of their queues. The fired
  // case's record was popped by its claimer, which may have finished with
  // its channel already: that record is not touched.
  const int fired = sw.fired;
  WEFT_DCHECK(fired >= 0 && fired < n, "select: fired case %d of %d", fired, n);
  for (int i = 0; i < n; ++i) {
    SelCase& c = cases[i];
    if (i == fired || !is_chan_case(c)) continue;
    ChanImpl::dequeue(c.ch, &recs[i], c.kind == SelCase::kSend);
  }
  cases[fired].closed = sw.closed;
  return fired;
}

}  // namespace weft::detail
