// runtime/log.cc — the runtime's spdlog logger, made on first use (log.h).
#include "runtime/log.h"

#include <spdlog/sinks/stdout_sinks.h>

#include <atomic>
#include <cstdlib>
#include <memory>

namespace weft::rt {

namespace {
// Never destroyed (ULTs and workers may log during static destruction).
// Replaced in a forked child: its sink's lock may be held by a thread that
// does not exist there (the old logger is leaked).
std::atomic<spdlog::logger*> the_logger{nullptr};

spdlog::logger* make_logger() {
    auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    auto* l = new spdlog::logger("weft", sink);
    l->set_pattern("[%H:%M:%S.%e] [weft] [%l] [tid %t] %v");
    l->set_level(spdlog::level::off);
    // secure_getenv: a set-user-ID program does not take its log level
    // (and so what it writes to stderr) from whoever started it.
    if (const char* v = secure_getenv("WEFT_LOG"); v != nullptr && *v != '\0') {
      l->set_level(spdlog::level::from_str(v));
    }
    return l;
}
}  // namespace

spdlog::logger& log() {
  spdlog::logger* l = the_logger.load(std::memory_order_acquire);
  if (l != nullptr) return *l;
  spdlog::logger* fresh = make_logger();
  if (the_logger.compare_exchange_strong(l, fresh, std::memory_order_acq_rel)) return *fresh;
  delete fresh;
  return *l;
}

void log_reset_after_fork() { the_logger.store(nullptr, std::memory_order_relaxed); }

}  // namespace weft::rt
