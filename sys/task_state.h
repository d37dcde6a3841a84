// sys/task_state.h — what the kernel says a thread of this process is doing.
#pragma once

namespace weft::sys {

// Opens thread `tid`'s /proc/self/task/<tid>/stat for task_state(): a
// close-on-exec descriptor, or -errno. The runtime opens it once per
// worker, when the worker's KLT starts, and keeps it: opening the file at
// each look would take the lowest free descriptor number for a few
// microseconds at a moment the program cannot see, and a program may count
// on open() returning the lowest free number (close(0), then open()) or on
// a full table staying full (issue 9 #8's EMFILE tests).
int task_stat_open(int tid);

// The scheduler state of thread `tid` of this process, read through `fd`
// (from task_stat_open(tid)) with one pread at offset 0 (a proc stat file
// is generated afresh at each read): 'R' (running or runnable), 'S'
// (asleep, interruptible: a blocking system call), 'D' (uninterruptible:
// disk, page fault), 't'/'T' (stopped), ... ; 0 if it cannot be read: the
// thread is gone, fd < 0, or the file is not tid's stat (the program closed
// the descriptor and the number was reused: the text must start with
// "<tid> ("). No allocation.
char task_state(int fd, int tid);

}  // namespace weft::sys

namespace weft::sys {

// CPU time thread `tid` of this process has used, in ns (its per-thread
// CPU clock, read with clock_gettime: one system call); -1 if it cannot be
// read (the thread is gone).
long long task_cpu_ns(int tid);

}  // namespace weft::sys
