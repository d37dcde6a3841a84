// runtime/preempt.h — time-slice preemption (issue 13). The design comment
// is at the top of preempt.cc.
#pragma once

#include <cstdint>

namespace weft::rt {

struct Scheduler;
struct Worker;
struct UltDesc;

namespace preempt {

// Once per process, when a runtime with a time slice starts (and again
// from the monitor when objects were loaded or unloaded since): the table
// of code in which a ULT may be switched out. Not async-signal-safe.
void prepare();
void refresh_if_changed();

// Whether the instruction at `pc` is in code where a ULT may be switched
// out: the program's and its own libraries' code, not weft's, not the C
// or C++ runtime's, not the dynamic loader's, not weft's dependencies'.
// Unknown code (JIT, not yet in the table) is not. Async-signal-safe: a
// binary search in the published table.
bool pc_preemptible(uintptr_t pc);

// The monitor: worker w has run one ULT since its switch count was `seen`
// for longer than the slice; ask its KLT to switch it out (the doorbell).
void request(Scheduler* s, Worker* w, uint64_t seen);

// A high-priority ULT waits and w runs a lower one (Scheduler::
// preempt_for_priority): ask w's KLT now, if it is on a CPU. True if the
// doorbell was sent.
bool request_now(Scheduler* s, Worker* w);

// On w's own KLT: a request stands for the ULT running now (a request
// made for an earlier ULT is moot and is dropped here).
bool pending(Worker* w);

// On w's own KLT, in the doorbell handler or at a safe point: whether u,
// interrupted at `pc`, may be switched out now. Counts a deferral when not.
bool may_switch_out(Worker* w, UltDesc* u, uintptr_t pc, bool on_ult_stack);

// At a safe point that is not a handler (the interposed unlock of the last
// KLT lock u held): takes a pending request if the code that called us,
// at `ret`, may be switched out.
void at_safe_point(uintptr_t ret);

}  // namespace preempt

// Switches the running ULT `self` out for a time-slice preemption (its
// worker's scheduler loop then serves the global queue first and queues it
// behind its worker's yielders); it resumes on the same worker.
// scheduler.cc.
void preempt_current(UltDesc* self);

}  // namespace weft::rt
