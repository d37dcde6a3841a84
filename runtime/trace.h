// runtime/trace.h — the event trace (Options::trace_file, WEFT_TRACE): what
// each kernel thread of a runtime did, recorded into rings in memory while
// the runtime runs and written as Chrome/Perfetto trace JSON when it stops
// (trace.cc).
//
// Cost. Off (the default), every event site is one load of a pointer the
// site already has at hand (Worker::trace, or Scheduler::tracer for the
// sites that have no worker; io/'s sites load g_tracers, the process's
// count of tracers) and a branch that is not taken: no other work, no
// clock read. On, an event is a timestamp (rdtsc where the TSC is
// invariant, else CLOCK_MONOTONIC), one fetch_add that reserves a slot, and
// a 48-byte store.
//
// Rings. Each pool worker has its own ring (its KLT, and signal handlers on
// that KLT, are its only writers); every other thread of the runtime (the
// monitor, bound workers, the signal thread, foreign threads that spawn or
// unpark) writes to one shared ring. A writer reserves slot `next++`
// (fetch_add, so a signal handler that interrupts a write on the same KLT,
// or two threads on the shared ring, never take the same slot) and fills
// it. A full ring overwrites its oldest events: the trace keeps the newest
// Options::trace_events per ring. Invariant: the rings are read only after
// every thread that writes them has been joined (the end of
// Scheduler::shutdown_locked) or, for foreign threads, after the runtime
// has no live ULT; a foreign thread that still calls into the stopped
// runtime cannot (spawns fail at the gate).
//
// Signal handlers and the switch path (HACKING.md): Ring::put only reads
// the clock, does one fetch_add and plain stores; it allocates nothing and
// takes no lock. The rings are allocated when the runtime starts (the
// shared one) and when a pool worker is launched.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace weft::rt {

struct Scheduler;
struct UltDesc;

namespace trace {

// What happened. The fields of Event each kind uses are listed beside it.
enum Kind : uint16_t {
  kRun = 1,        // `ult` starts or resumes running on this KLT
  kLoop,           // the KLT's scheduler loop runs (the ULT before it stopped)
  kIdle,           // the KLT goes to sleep (no work)
  kWake,           // the KLT woke up
  kSpawn,          // `ult` was spawned; a, b: its name's first 16 bytes
  kPark,           // `ult` parked; a: const char* what (static), b: object, c: fd or -1
  kUnpark,         // `ult` was made runnable; a: the waker's ULT id, 0 if none
  kSteal,          // `ult` was stolen; a: the victim's slot
  kPreempt,        // `ult` was preempted (time slice or priority)
  kExit,           // `ult` exited
  kBlockBegin,     // `ult` entered a weft::blocking region
  kBlockEnd,       // and left it
  kHandoff,        // a blocking region's slot a moved from KLT b to KLT c
  kKernelHandoff,  // the same for a KLT found asleep in the kernel
  kHogRescue,      // b ULTs were taken from the queue of slot a (its ULT ran long)
  kIoSubmit,       // `ult` submitted io; a: const char* op (static), b: fd, c: bytes or 0
  kIoDone,         // `ult`'s io finished; a: op, b: fd, c: result (negative: -errno)
};

// One event. `ult` is a ULT id value (generation << 32 | index), 0 for none.
struct Event {
  uint64_t t;  // raw clock (Tracer::to_ns)
  uint64_t ult;
  uint64_t a, b;
  int64_t c;
  int32_t tid;  // the KLT that recorded it
  uint16_t kind;
  uint16_t pad;
};
static_assert(sizeof(Event) == 48);

// Tracers alive in the process: the io layer's sites test this (one load)
// before they call io_event, which looks up the runtime's ring.
inline std::atomic<int> g_tracers{0};
inline bool any() { return __builtin_expect(g_tracers.load(std::memory_order_relaxed) != 0, 0); }

// An io event (kIoSubmit or kIoDone) of ULT `self`, in its runtime's trace
// if that runtime traces: `op` has static storage, `v` is the byte count
// (submit) or the result (done). Called by io/ after trace::any().
void io_event(UltDesc* self, Kind kind, const char* op, int fd, int64_t v);

// An io operation's two events: kIoSubmit when made (if any runtime
// traces), kIoDone with *result when it goes out of scope, on whichever
// worker the ULT then runs. For io/'s park-until-done paths.
class IoSpan {
 public:
  IoSpan(UltDesc* self, const char* op, int fd, int64_t bytes, const int32_t* result)
      : self_(any() ? self : nullptr), op_(op), fd_(fd), result_(result) {
    if (self_ != nullptr) io_event(self_, kIoSubmit, op, fd, bytes);
  }
  ~IoSpan() {
    if (self_ != nullptr) io_event(self_, kIoDone, op_, fd_, *result_);
  }
  IoSpan(const IoSpan&) = delete;
  IoSpan& operator=(const IoSpan&) = delete;

 private:
  UltDesc* self_;
  const char* op_;
  int fd_;
  const int32_t* result_;
};

// The clock of the events: the TSC where it is invariant (checked once per
// process from /proc/cpuinfo's constant_tsc and nonstop_tsc), else
// CLOCK_MONOTONIC in ns.
uint64_t now();

// One ring of events, `capacity` (a power of two) slots.
class Ring {
 public:
  // per_klt: a pool worker's ring (its events carry Ring::tid); else the
  // shared ring (each event carries the calling KLT's tid).
  Ring(uint32_t capacity, bool per_klt);
  bool per_klt() const { return per_klt_; }
  // Records one event (see the top of this file: any thread, also a signal
  // handler; lock-free).
  void put(Kind kind, uint64_t ult = 0, uint64_t a = 0, uint64_t b = 0, int64_t c = 0) {
    uint64_t i = next_.fetch_add(1, std::memory_order_relaxed);
    Event& e = ev_[i & mask_];
    e.t = now();
    e.ult = ult;
    e.a = a;
    e.b = b;
    e.c = c;
    int32_t own = tid.load(std::memory_order_relaxed);
    e.tid = own != 0 ? own : calling_tid();
    e.kind = kind;
  }
  // The events kept, oldest first, and how many older ones were overwritten.
  // Only while no thread writes (the invariant at the top of the file).
  std::vector<Event> snapshot(uint64_t* lost) const;

  // The worker's tid, once its KLT has started (0 before): its events carry it.
  std::atomic<int32_t> tid{0};

 private:
  static int32_t calling_tid();
  std::atomic<uint64_t> next_{0};
  uint64_t mask_;
  bool per_klt_;
  std::unique_ptr<Event[]> ev_;
};

// The trace of one runtime: its rings, its clock's calibration and where it
// is written.
class Tracer {
 public:
  // `path` is created (truncated) at once so that a bad path fails the
  // runtime's start; `events` per ring, rounded up to a power of two.
  static absl::StatusOr<std::unique_ptr<Tracer>> create(std::string path, uint32_t events);

  // A new ring for a pool worker (kept until the Tracer is destroyed).
  Ring* new_worker_ring();
  // The ring of every other thread.
  Ring* shared() { return &shared_; }
  // Writes every ring as Chrome trace JSON to the path given to create(),
  // naming ULTs from the descriptor table where no spawn event in the
  // rings names them. Only after the runtime has stopped (the invariant
  // above); in a forked child it does nothing (the file is the parent's).
  absl::Status write();

  const std::string& path() const { return path_; }
  ~Tracer() { g_tracers.fetch_sub(1, std::memory_order_relaxed); }

 private:
  Tracer(std::string path, uint32_t events);
  double ns_per_tick() const;
  std::string path_;
  uint32_t events_;
  int pid_;
  uint64_t t0_raw_, t0_ns_;  // calibration: now() and CLOCK_MONOTONIC at the start
  Ring shared_;
  std::mutex rings_lock_;  // guards rings_ (new_worker_ring runs on start/set_concurrency paths)
  std::vector<std::unique_ptr<Ring>> rings_;
};

}  // namespace trace

}  // namespace weft::rt
