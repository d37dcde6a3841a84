// runtime/monitor.cc — the monitor KLT: one per runtime, runs no ULTs.
//
// Every tick it settles deferred notifies: a worker that queued work
// without waking an idle worker (scheduler.cc, "Deferred notify") and has
// not switched since gets an idle worker woken for it. Every kReapEvery it
// runs the reaper: the process-wide death row trims itself and, once
// nothing has been spawned or released since the last reap, gives the
// cached stacks' memory back (death_row.h). The tick is kBusyTick while any
// worker is awake and kIdleTick when all sleep. Later issues hang the
// blocking-region handoff and preemption requests here.
#include <ctime>
#include <vector>

#include "runtime/death_row.h"
#include "runtime/log.h"
#include "runtime/scheduler.h"
#include "sys/futex.h"

namespace weft::rt {
namespace {
constexpr long kBusyTickNs = 1000 * 1000;          // 1 ms
constexpr long kIdleTickNs = 100 * 1000 * 1000;    // 100 ms
constexpr int64_t kReapEveryNs = 100 * 1000 * 1000;

// A worker that has work queued and has not switched since the last tick
// while others sleep: wake one of them (deferred notify's backstop).
void settle_stalled(Scheduler* s, std::vector<uint64_t>* last_switches) {
  int n = s->active.load(std::memory_order_acquire);
  if (static_cast<int>(last_switches->size()) < n) last_switches->resize(static_cast<size_t>(n), 0);
  for (int i = 0; i < n; ++i) {
    Worker* w = s->workers[static_cast<size_t>(i)].get();
    uint64_t sw = w->switches.load(std::memory_order_relaxed) + w->sleeps.load(std::memory_order_relaxed);
    bool stalled = sw == (*last_switches)[static_cast<size_t>(i)];
    (*last_switches)[static_cast<size_t>(i)] = sw;
    if (stalled && (!w->deque.empty_approx() || w->run_next.load(std::memory_order_relaxed) != nullptr))
      s->notify_work();
  }
}
}  // namespace

void monitor_main(void* arg) {
  auto* s = static_cast<Scheduler*>(arg);
  std::vector<uint64_t> last_switches;
  int64_t next_reap = monotonic_ns() + kReapEveryNs;
  while (s->monitor_word.load(std::memory_order_acquire) == 0) {
    bool all_idle = s->npidle.load(std::memory_order_relaxed) >= s->active.load(std::memory_order_relaxed);
    timespec tick{0, all_idle ? kIdleTickNs : kBusyTickNs};
    sys::futex_wait_for(&s->monitor_word, 0, &tick);
    settle_stalled(s, &last_switches);
    if (monotonic_ns() >= next_reap) {
      next_reap = monotonic_ns() + kReapEveryNs;
      uint64_t n = death_row().reap();
      if (n != 0) {
        s->monitor_reaped.fetch_add(n, std::memory_order_relaxed);
        log().debug("reaper: recycled {} idle ULT descriptors", n);
      }
    }
  }
}

}  // namespace weft::rt
