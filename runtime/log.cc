#include "runtime/log.h"

#include <spdlog/sinks/stdout_sinks.h>

#include <cstdlib>
#include <memory>

namespace weft::rt {

spdlog::logger& log() {
  static spdlog::logger* logger = [] {
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
  }();
  return *logger;
}

}  // namespace weft::rt
