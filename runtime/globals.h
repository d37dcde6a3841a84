// runtime/globals.h — every piece of process-wide runtime state, in one place.
//
// weft keeps little global state, and all of it is reachable from here so
// that the fork support can find and reset it in a child (DESIGN.md, Fork):
//
//   Globals::table      the ULT descriptor table (ult_table.cc)
//   Globals::death_row  released descriptors with stacks (death_row.h)
//   Globals::runtimes   every started Scheduler (fork.cc walks them)
//   Globals::next_local_key   UltLocal keys
//
// State that is per thread rather than per process: the current worker
// (t_worker, scheduler.cc) and foreign threads' UltLocal values. State owned
// by sys/: the raw-KLT heritage pool (sys/tls.cc) and the SIGSEGV handler
// weft chained in front of (overflow.cc).
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "runtime/death_row.h"
#include "runtime/locks.h"

namespace weft::rt {

struct UltDesc;
struct Scheduler;

struct Globals {
  struct Table {
    static constexpr uint32_t kChunkBits = 12;
    static constexpr uint32_t kChunkSize = 1u << kChunkBits;  // descriptors per chunk
    static constexpr uint32_t kMaxChunks = 4096;              // 16,777,216 descriptors
    // chunks[i] once non-null never changes and is never freed, so a lookup
    // may read any descriptor at any time without a lock.
    std::atomic<UltDesc*> chunks[kMaxChunks] = {};
    KltMutex lock;                 // guards free_list and next_index
    UltDesc* free_list = nullptr;
    uint32_t next_index = 0;       // descriptors created so far
    std::atomic<uint32_t> created{0};
  } table;

  DeathRow death_row;

  // Every runtime from the start of Scheduler::start() to the end of its
  // shutdown(): the runtimes a fork must take the locks of and rebuild.
  KltMutex runtimes_lock;
  std::vector<Scheduler*> runtimes;

  std::atomic<uint32_t> next_local_key{1};
};

// The process's Globals, created on first use and never destroyed (ULTs and
// handles may outlive static destructors).
Globals& globals();

}  // namespace weft::rt
