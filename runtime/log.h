// runtime/log.h — diagnostics through spdlog.
//
// Silent by default; WEFT_LOG=debug (or trace, info, warn, error) turns the
// logger on, writing to stderr. Use only where a KLT may block briefly
// (spdlog takes locks and allocates): never in a signal handler, an atfork
// child or the switch path — use sys::raw_logf there.
#pragma once

#include <spdlog/spdlog.h>

namespace weft::rt {

// The runtime's logger ("weft"), created on first use.
spdlog::logger& log();

// In a forked child (runtime/fork.cc): the next log() makes a new logger.
void log_reset_after_fork();

}  // namespace weft::rt
