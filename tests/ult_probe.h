// tests/ult_probe.h — white-box looks at threads and ULTs, for tests that
// must prove a waiter is really waiting (not "sleep, then expect nothing").
#pragma once

#include <fstream>
#include <string>

#include "runtime/ult.h"
#include "weft/runtime.h"

// The system call the thread `tid` of this process is blocked in, or -1
// (running, or unreadable).
inline long BlockedSyscall(int tid) {
  std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/syscall");
  std::string first;
  if (!(f >> first) || first == "running") return -1;
  try {
    return std::stol(first);
  } catch (...) {
    return -1;
  }
}

// Whether the ULT `id` is parked (its descriptor's state).
inline bool Parked(weft::UltId id) {
  weft::rt::UltDesc* u = weft::rt::ult_table::lookup(id.value());
  return u != nullptr && u->generation.load() == id.generation() &&
         (u->state.load() & weft::rt::ult_state::kStateMask) == weft::rt::ult_state::kParked;
}
