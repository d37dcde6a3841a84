// runtime/monitor.cc — the monitor KLT: one per runtime, runs no ULTs.
//
// Today it is the reaper: every kTick it lets the process-wide death row
// trim itself and, once nothing has been spawned or released for a tick,
// give the cached stacks' memory back (death_row.h). Later issues hang the
// blocking-region handoff and preemption requests here.
#include <ctime>

#include "runtime/death_row.h"
#include "runtime/log.h"
#include "runtime/scheduler.h"
#include "sys/futex.h"

namespace weft::rt {
namespace {
constexpr long kTickNs = 100 * 1000 * 1000;  // 100 ms
}  // namespace

void monitor_main(void* arg) {
  auto* s = static_cast<Scheduler*>(arg);
  while (s->monitor_word.load(std::memory_order_acquire) == 0) {
    timespec tick{0, kTickNs};
    sys::futex_wait_for(&s->monitor_word, 0, &tick);
    uint64_t n = death_row().reap();
    if (n != 0) {
      s->monitor_reaped.fetch_add(n, std::memory_order_relaxed);
      log().debug("reaper: recycled {} idle ULT descriptors", n);
    }
  }
}

}  // namespace weft::rt
