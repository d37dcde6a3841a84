// weft/debug.h — seeing inside a running weft program: a dump of every ULT.
//
// weft::dump_ults(fd) writes, for every ULT of the process (all runtimes),
// its id, name, state — running on which worker, runnable, parked and on
// what (a Mutex and who holds it, a CondVar, a channel, a sleep, an
// operation on an fd, a join...), or exited and not yet joined — its
// priority, and a symbolized backtrace, without stopping the program:
//
//   ULT 3.1 "conn-17" parked: recv fd 9 (priority normal)
//     #0 0x55d0c0a1b2c3 weft::io_internal::...
//     #1 0x55d0c0a0f00d handle_connection()
//
// A Mutex wait cycle (a deadlock among ULTs) is reported after the list.
// Backtraces: of the calling ULT or thread, and of every switched-out ULT
// (parked or runnable), taken from a copy of its stack, so the ULT is never
// touched; not of ULTs running on another worker at that moment (their
// line says where). Names come from the ELF symbol tables (functions of a
// stripped program print as addresses: addr2line turns them into lines).
// Not available under AddressSanitizer or ThreadSanitizer, whose runtimes
// cannot follow the stack copy: the lines then carry the state only.
//
// The same dump on a signal, and when a runtime hangs (Options::hang_dump):
//   WEFT_DUMP_SIGNAL=SIGQUIT (or a number) in the environment of a program
//     makes each Runtime created while no other one holds that signal own
//     it through a weft::SignalSet (weft/signal.h): on that signal the dump
//     goes to stderr and the program goes on. The signal is weft's while
//     the runtime lives (no handler of the program runs for it).
//   WEFT_HANG_DUMP=SECONDS in the environment sets Options::hang_dump for
//     every runtime that leaves it 0.
// Both run on a thread of their own, so a runtime whose workers are all
// stuck still dumps. A forked child's runtime has neither (that thread
// stays in the parent).
#pragma once

#include "absl/status/status.h"

namespace weft {

// Writes the dump to `fd` (write(2), retried on EINTR and short writes).
// InvalidArgument for a negative fd; the errno text of a failed write.
// Any thread or ULT may call it; it takes no lock a ULT may hold, and
// allocates (not for signal handlers).
absl::Status dump_ults(int fd);

}  // namespace weft
