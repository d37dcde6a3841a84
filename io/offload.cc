// io/offload.cc — the helper-thread pool that runs blocking calls while the
// calling ULT parks (the contract is in offload.h).
//
// The queue is a FIFO of Jobs that live on the waiting ULTs' stacks (a ULT
// never leaves offload() before its job is done, so a queued job is always
// alive). Handshake, under `mu`:
//
//   ULT (offload)                           helper
//   push job; if no helper is idle and      wait on cv while the queue is empty
//   fewer than kMaxHelpers run: start one   pop job; unlock; run it with the
//   signal cv; unlock                         caller's mask; job.done.count_down()
//   job.done.wait()  (parks the ULT)         (the job may vanish after that)
//
// Idle helpers wait with a timeout and exit when it passes with the queue
// still empty; `idle` and `running` change only under `mu`, so a push never
// counts on a helper that is leaving.
#include "io/offload.h"
#include "io/leaked.h"

#include <pthread.h>
#include <signal.h>

#include <cerrno>
#include <condition_variable>
#include <deque>
#include <mutex>

#include "runtime/log.h"
#include "weft/runtime.h"
#include "weft/sync.h"

namespace weft::io_internal {
namespace {

struct Job {
  absl::FunctionRef<void()> fn;
  sigset_t mask;
  int err = 0;  // errno as fn left it, for the caller
  WaitGroup done{1};
};

struct Pool {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Job*> queue;
  int running = 0;  // helpers alive
  int idle = 0;     // helpers waiting for a job
};

// Never destroyed (helpers outlive static destructors); dropped in a forked
// child, where its threads do not exist (the old one is leaked there).
std::atomic<Pool*> the_pool{nullptr};

Pool& pool() { return leaked_instance(the_pool); }

void* helper_main(void* arg) {
  auto* p = static_cast<Pool*>(arg);
  std::unique_lock<std::mutex> g(p->mu);
  for (;;) {
    ++p->idle;
    bool got = p->cv.wait_for(g, kIdleExit, [p] { return !p->queue.empty(); });
    --p->idle;
    if (!got) break;
    Job* j = p->queue.front();
    p->queue.pop_front();
    g.unlock();
    pthread_sigmask(SIG_SETMASK, &j->mask, nullptr);
    errno = 0;
    j->fn();
    j->err = errno;
    j->done.count_down();  // j may be gone after this
    g.lock();
  }
  --p->running;
  return nullptr;
}

// Starts a helper; caller holds p.mu. False if the thread could not start.
bool start_helper(Pool* p) {
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 256 * 1024);
  // Helpers take no signals of their own between jobs.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_t t;
  int r = pthread_create(&t, &attr, helper_main, p);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  pthread_attr_destroy(&attr);
  if (r != 0) return false;
  ++p->running;
  return true;
}

}  // namespace

void offload(absl::FunctionRef<void()> fn) {
  if (!this_ult::in_ult()) {
    fn();
    return;
  }
  Job job{fn, {}};
  pthread_sigmask(SIG_BLOCK, nullptr, &job.mask);
  Pool& p = pool();
  bool queued = false;
  {
    std::lock_guard<std::mutex> g(p.mu);
    if (p.idle > static_cast<int>(p.queue.size()) || p.running >= kMaxHelpers || start_helper(&p) ||
        p.running > 0) {
      p.queue.push_back(&job);
      p.cv.notify_one();
      queued = true;
    }
  }
  if (!queued) {
    // No helper at all, and none can be started: run it here, as a
    // blocking region (never twice: a queued job runs on a helper only).
    rt::log().warn("offload: cannot start a helper thread; running the call on the worker");
    weft::blocking([&] { fn(); });
    return;
  }
  job.done.wait();
  errno = job.err;
}

void offload_fork_prepare() { pool().mu.lock(); }
void offload_fork_parent() { pool().mu.unlock(); }
namespace {
std::atomic<Pool*> abandoned_pool{nullptr};  // the parent's, in a forked child (leaked.h)
}  // namespace
void offload_fork_child() { abandon_instance(the_pool, abandoned_pool); }

int offload_helpers() {
  Pool& p = pool();
  std::lock_guard<std::mutex> g(p.mu);
  return p.running;
}

}  // namespace weft::io_internal
