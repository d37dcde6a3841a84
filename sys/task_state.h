// sys/task_state.h — what the kernel says a thread of this process is doing.
#pragma once

namespace weft::sys {

// The scheduler state of thread `tid` of this process, from
// /proc/self/task/<tid>/stat: 'R' (running or runnable), 'S' (asleep,
// interruptible: a blocking system call), 'D' (uninterruptible: disk,
// page fault), 't'/'T' (stopped), ... ; 0 if it cannot be read (the thread
// is gone). Three system calls (open, read, close) and no allocation.
char task_state(int tid);

}  // namespace weft::sys

namespace weft::sys {

// CPU time thread `tid` of this process has used, in ns (its per-thread
// CPU clock, read with clock_gettime: one system call); -1 if it cannot be
// read (the thread is gone).
long long task_cpu_ns(int tid);

}  // namespace weft::sys
