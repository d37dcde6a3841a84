// runtime/stats_text.cc — RuntimeStats in the Prometheus text format
// (weft/runtime.h: prometheus_text).
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "weft/runtime.h"

namespace weft {

namespace {

bool valid_metric_prefix(std::string_view p) {
  if (p.empty()) return false;
  for (size_t i = 0; i < p.size(); ++i) {
    char c = p[i];
    bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!letter && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

// Appends one metric family: its HELP and TYPE lines, then its samples
// (each "<name>{labels} value" line written by `samples`).
class Writer {
 public:
  explicit Writer(std::string_view prefix) : prefix_(prefix.data(), prefix.size()) {}

  // A family with one unlabelled sample.
  template <class V>
  void one(const char* name, const char* type, const char* help, V value) {
    head(name, type, help);
    absl::StrAppend(&out_, prefix_, "_", name, " ", value, "\n");
  }
  // A family with one sample per worker, value(w) each.
  template <class F>
  void per_worker(const RuntimeStats& s, const char* name, const char* type, const char* help, F value) {
    head(name, type, help);
    for (const WorkerStats& w : s.workers)
      absl::StrAppend(&out_, prefix_, "_", name, "{worker=\"", w.index, "\"} ", value(w), "\n");
  }
  void head(const char* name, const char* type, const char* help) {
    absl::StrAppend(&out_, "# HELP ", prefix_, "_", name, " ", help, "\n# TYPE ", prefix_, "_", name, " ", type, "\n");
  }
  std::string& out() { return out_; }
  const std::string& prefix() const { return prefix_; }

 private:
  std::string prefix_;
  std::string out_;
};

// ns as decimal seconds with all nine digits (a double printed by StrCat
// keeps six significant digits: a counter would stop moving after days).
std::string seconds(int64_t ns) {
  if (ns < 0) ns = 0;
  char buf[32];
  snprintf(buf, sizeof buf, "%lld.%09lld", static_cast<long long>(ns / 1000000000), static_cast<long long>(ns % 1000000000));
  return buf;
}

}  // namespace

std::string prometheus_text(const RuntimeStats& s, std::string_view prefix) {
  Writer w(valid_metric_prefix(prefix) ? prefix : std::string_view("weft"));
  // Process-wide.
  w.one("ults_spawned_total", "counter", "ULTs spawned.", s.spawned);
  w.one("ults_exited_total", "counter", "ULTs whose function returned.", s.exited);
  w.one("ults_live", "gauge", "ULTs spawned and not yet exited.", s.live);
  w.head("ults", "gauge", "ULTs by state now (one racy pass over the ULT table).");
  for (auto [state, n] : {std::pair<const char*, uint64_t>{"running", s.ults_running},
                          {"runnable", s.ults_runnable},
                          {"parked", s.ults_parked},
                          {"exited_unjoined", s.ults_exited_unjoined}})
    absl::StrAppend(&w.out(), w.prefix(), "_ults{state=\"", state, "\"} ", n, "\n");
  w.one("global_queued", "gauge", "ULTs in the shared run queues.", s.global_queued);
  w.one("bound_threads", "gauge", "Kernel threads running a bound ULT.", s.bound_threads);
  w.one("descriptors_reaped_total", "counter", "ULT descriptors recycled.", s.reaped);
  w.one("descriptors_cached", "gauge", "ULT descriptors with a stack ready for reuse.", s.cached);
  w.one("stacks_mapped_total", "counter", "ULT stacks mapped.", s.stacks_mapped);
  w.one("stacks_unmapped_total", "counter", "ULT stacks given back.", s.stacks_unmapped);
  w.one("handoffs_total", "counter", "Workers replaced while blocked in weft::blocking().", s.handoffs);
  w.one("kernel_block_handoffs_total", "counter", "Workers replaced while asleep in the kernel outside a region.",
        s.kernel_block_handoffs);
  w.one("hog_rescues_total", "counter", "Times queued ULTs were taken from a worker whose ULT ran too long.",
        s.hog_rescues);
  w.one("timers_pending", "gauge", "Timed waits pending.", s.timers_pending);
  w.one("timers_fired_by_monitor_total", "counter", "Timers fired by the monitor for a busy worker.",
        s.timers_fired_by_monitor);
  // The lateness buckets as a histogram (cumulative, upper bounds in s).
  w.head("timer_lateness_seconds", "histogram", "How late timers fired.");
  static constexpr const char* kLe[] = {"1e-05", "0.0001", "0.001", "0.01", "0.1", "+Inf"};
  uint64_t cumulative = 0;
  for (size_t b = 0; b < s.timer_lateness.size(); ++b) {
    cumulative += s.timer_lateness[b];
    absl::StrAppend(&w.out(), w.prefix(), "_timer_lateness_seconds_bucket{le=\"", kLe[b], "\"} ", cumulative, "\n");
  }
  absl::StrAppend(&w.out(), w.prefix(), "_timer_lateness_seconds_count ", cumulative, "\n");
  w.one("preemptions_requested_total", "counter", "Time-slice preemption signals sent.", s.preemptions_requested);
  w.one("preemptions_taken_total", "counter", "Preemptions that switched the ULT out.", s.preemptions_taken);
  w.one("preemptions_deferred_total", "counter", "Preemption signals that found the ULT where it may not switch.",
        s.preemptions_deferred);
  w.one("priority_preemptions_total", "counter", "Preemptions asked for a runnable high-priority ULT.",
        s.priority_preemptions);
  w.one("priority_boosts_total", "counter", "ULTs raised by priority inheritance.", s.priority_boosts);
  w.one("background_starvation_runs_total", "counter", "Background ULTs run because they waited past their bound.",
        s.background_starvation_runs);
  // Per worker.
  w.per_worker(s, "worker_active", "gauge", "1 if the worker runs ULTs at the current concurrency level.",
               [](const WorkerStats& x) { return x.active ? 1 : 0; });
  w.per_worker(s, "worker_queued", "gauge", "ULTs waiting in the worker's queues.",
               [](const WorkerStats& x) { return x.queued; });
  w.per_worker(s, "worker_switches_total", "counter", "Context switches into ULTs.",
               [](const WorkerStats& x) { return x.switches; });
  w.per_worker(s, "worker_steals_total", "counter", "ULTs taken from another worker's queue.",
               [](const WorkerStats& x) { return x.steals; });
  w.per_worker(s, "worker_parks_total", "counter", "ULTs that parked on this worker.",
               [](const WorkerStats& x) { return x.parks; });
  w.per_worker(s, "worker_sleeps_total", "counter", "Times the worker went to sleep, idle.",
               [](const WorkerStats& x) { return x.sleeps; });
  w.per_worker(s, "worker_spawned_total", "counter", "ULTs spawned by ULTs running here.",
               [](const WorkerStats& x) { return x.spawned; });
  w.per_worker(s, "worker_idle_seconds_total", "counter", "Time asleep with nothing to run.",
               [](const WorkerStats& x) { return seconds(x.idle_ns); });
  w.per_worker(s, "worker_blocking_seconds_total", "counter", "Time inside ended weft::blocking() regions.",
               [](const WorkerStats& x) { return seconds(x.blocking_ns); });
  w.per_worker(s, "worker_busy_seconds_total", "counter", "Time running ULTs and the scheduler loop.",
               [](const WorkerStats& x) { return seconds(x.busy_ns); });
  w.per_worker(s, "worker_io_submitted_total", "counter", "io requests the worker's engine submitted.",
               [](const WorkerStats& x) { return x.io_submitted; });
  w.per_worker(s, "worker_io_completed_total", "counter", "io completions or events the worker's engine took in.",
               [](const WorkerStats& x) { return x.io_completed; });
  w.per_worker(s, "worker_io_enters_total", "counter", "System calls into the worker's io engine.",
               [](const WorkerStats& x) { return x.io_enters; });
  return std::move(w.out());
}

}  // namespace weft
