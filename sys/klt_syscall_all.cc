// sys/klt_syscall_all.cc — one system call run on every registered KLT
// (klt.h, klt_syscall_all_locked): what glibc's SIGSETXID broadcast does
// for the threads glibc made, for the ones weft made with raw clone.
//
// One request at a time (the caller holds the registry lock, which
// serialises callers too). The handshake:
//
//   caller (registry lock held)             each target KLT (signal handler)
//   fill `req`; generation++                 g = generation
//   current = &req; pending = targets       if current && the signal came from
//   tgkill(target, kAllKltsSignal) each        this process by tgkill (SI_TKILL)
//   futex-wait until done (timeout)            && this KLT has not run g yet:
//                                              ran = g; r = syscall(req)
//                                              r != 0: record the failure
//                                              if --pending == 0: done = 1, wake
//   current = null
//
// A target that is still starting (it was cloned with every signal
// blocked) or leaving (it waits for the registry lock with its user mask,
// klt.h) takes the signal as soon as it unblocks it; a target that blocks
// the signal itself never answers, and the caller reports -ETIMEDOUT for
// it. The handler makes one raw system call and touches no lock: it is
// async-signal-safe (runtime/HACKING.md, "Signal handlers").
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <mutex>
#include <vector>

#include "sys/futex.h"
#include "sys/klt.h"
#include "sys/raw_syscall.h"
#include "sys/signal_chain.h"

namespace weft::sys {
namespace {

struct Request {
  long nr = 0;
  long args[6] = {};
  std::atomic<int> pending{0};
  std::atomic<int> failed{0};
  std::atomic<int> failed_tid{0};
  std::atomic<long> failed_result{0};
  std::atomic<uint32_t> done{0};  // futex word: 1 once pending reached 0
  // Who answered (so that a KLT that did not can be named): `acked` has room
  // for every target; each handler takes a slot.
  int* acked = nullptr;
  int capacity = 0;
  std::atomic<int> nacked{0};
};

std::atomic<Request*> current{nullptr};
std::atomic<uint64_t> generation{0};
// The request generation this KLT has run (a signal sent twice runs once).
thread_local uint64_t ran_generation __attribute__((tls_model("initial-exec"))) = 0;
struct sigaction previous;

void handler(int sig, siginfo_t* si, void* uctx) {
  Request* rq = current.load(std::memory_order_acquire);
  if (rq != nullptr && si->si_code == SI_TKILL && si->si_pid == getpid()) {
    uint64_t g = generation.load(std::memory_order_acquire);
    if (ran_generation != g) {
      ran_generation = g;
      long r = raw_syscall(rq->nr, rq->args[0], rq->args[1], rq->args[2], rq->args[3], rq->args[4], rq->args[5]);
      if (r != 0) {
        int zero = 0;
        if (rq->failed_tid.compare_exchange_strong(zero, gettid(), std::memory_order_acq_rel))
          rq->failed_result.store(r, std::memory_order_relaxed);
        rq->failed.fetch_add(1, std::memory_order_acq_rel);
      }
      int slot = rq->nacked.fetch_add(1, std::memory_order_acq_rel);
      if (slot < rq->capacity) rq->acked[slot] = gettid();
      if (rq->pending.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        rq->done.store(1, std::memory_order_release);
        futex_wake(&rq->done, 1);
      }
    }
    return;
  }
  // Not weft's: the application's handler, if it had one before weft's.
  (void)call_previous_handler(previous, sig, si, uctx);
}

void install_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    install_handler_before(kAllKltsSignal, handler, SA_RESTART | SA_ONSTACK, /*block_all=*/true, &previous);
  });
}

struct Target {
  int self;
  int pid;
  int count;
  int failed_tid;
  long failed_result;
};

// The one request (the registry lock serialises callers). Static, not on
// the caller's stack: a handler that read `current` just before a timed-out
// caller cleared it may still touch it afterwards.
Request the_request;

}  // namespace

int klt_syscall_all_locked(long nr, const long (&args)[6], int timeout_ms, KltSyscallFailure* f) {
  *f = KltSyscallFailure{};
  if (klt_glibc_knows_threads()) return 0;
  install_handler();
  Target t{gettid(), getpid(), 0, 0, 0};
  klt_for_each_locked(
      [](const KltInfo& k, void* arg) {
        auto* t = static_cast<Target*>(arg);
        if (k.tid != t->self) ++t->count;
      },
      &t);
  if (t.count == 0) return 0;
  // pending is set before any target can run its handler.
  Request& rq = the_request;
  std::vector<int> acked(static_cast<size_t>(t.count), 0);
  rq.acked = acked.data();
  rq.capacity = t.count;
  rq.nacked.store(0, std::memory_order_relaxed);
  rq.nr = nr;
  memcpy(rq.args, args, sizeof rq.args);
  rq.pending.store(t.count, std::memory_order_relaxed);
  rq.failed.store(0, std::memory_order_relaxed);
  rq.failed_tid.store(0, std::memory_order_relaxed);
  rq.failed_result.store(0, std::memory_order_relaxed);
  rq.done.store(0, std::memory_order_relaxed);
  generation.fetch_add(1, std::memory_order_acq_rel);
  current.store(&rq, std::memory_order_release);
  klt_for_each_locked(
      [](const KltInfo& k, void* arg) {
        auto* t = static_cast<Target*>(arg);
        if (k.tid == t->self) return;
        // A registered KLT exists (klt.h), so tgkill cannot fail with
        // ESRCH; any error is reported as that KLT's failure.
        int r = tgkill(t->pid, k.tid, kAllKltsSignal);
        if (r != 0 && t->failed_tid == 0) {
          t->failed_tid = k.tid;
          t->failed_result = r;
        }
      },
      &t);
  timespec deadline;
  clock_gettime(CLOCK_MONOTONIC, &deadline);
  deadline.tv_sec += timeout_ms / 1000;
  deadline.tv_nsec += (timeout_ms % 1000) * 1000000L;
  if (deadline.tv_nsec >= 1000000000L) {
    deadline.tv_sec += 1;
    deadline.tv_nsec -= 1000000000L;
  }
  while (rq.done.load(std::memory_order_acquire) == 0) {
    if (futex_wait_until(&rq.done, 0, &deadline) == -ETIMEDOUT) break;
  }
  current.store(nullptr, std::memory_order_release);
  int left = rq.pending.load(std::memory_order_acquire);
  if (left > 0) {
    // Name one KLT that did not answer; a late handler must no longer
    // write into `acked`, which dies with this frame.
    rq.capacity = 0;
    struct Find {
      Target* t;
      const std::vector<int>* acked;
      int missing;
    } find{&t, &acked, 0};
    klt_for_each_locked(
        [](const KltInfo& k, void* arg) {
          auto* fd = static_cast<Find*>(arg);
          if (k.tid == fd->t->self || fd->missing != 0) return;
          if (std::find(fd->acked->begin(), fd->acked->end(), k.tid) == fd->acked->end()) fd->missing = k.tid;
        },
        &find);
    f->failed = left;
    f->tid = find.missing;
    f->result = -ETIMEDOUT;
    return -1;
  }
  int failed = rq.failed.load(std::memory_order_acquire);
  if (failed == 0 && t.failed_tid == 0) return 0;
  f->failed = failed + (t.failed_tid != 0 ? 1 : 0);
  if (int tid = rq.failed_tid.load(std::memory_order_acquire); tid != 0) {
    f->tid = tid;
    f->result = rq.failed_result.load(std::memory_order_relaxed);
  } else if (t.failed_tid != 0) {
    f->tid = t.failed_tid;
    f->result = t.failed_result;
  }
  return -1;
}

}  // namespace weft::sys
