// sys/fd_table.h — the size of the process's descriptor table.
//
// Linux grows a process's table of open files by doubling (64, 256, 512,
// 1024, ... slots) when a descriptor needs a number beyond it. In a
// process with more than one thread, each growth waits for an RCU grace
// period (expand_fdtable calls synchronize_rcu when the table is shared),
// and every thread that opens a descriptor meanwhile waits for it too:
// 10-33 ms measured here, on both workers of a runtime whose ULTs opened
// connections. Grown while only one thread exists, it costs microseconds.
// The kernel never shrinks a process's table; a fork child's copy is sized
// to fit the descriptors open at the fork. No policy here: runtime/ decides
// how far and when.
#pragma once

namespace weft::sys {

// The process's soft RLIMIT_NOFILE (the lowest descriptor number open()
// may not return), at most 2^31-1; -errno if it cannot be read.
long nofile_soft_limit();

// Grows the descriptor table to hold at least numbers 0..slots-1
// (slots >= 1). It duplicates a temporary eventfd to the lowest free
// number >= slots-1 and closes both, so no number stays taken; for those
// few microseconds the eventfd holds the lowest free number, as any open()
// would. Returns 0 or -errno (-EINVAL: slots < 1, or slots above the soft
// RLIMIT_NOFILE, which fcntl refuses; -EMFILE, -ENOMEM, -ENFILE from the
// kernel).
int grow_fd_table(int slots);

}  // namespace weft::sys
