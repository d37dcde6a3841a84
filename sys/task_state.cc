// sys/task_state.cc — see task_state.h.
#include "sys/task_state.h"

#include <fcntl.h>
#include <sys/syscall.h>
#include <time.h>

#include "sys/raw_syscall.h"

namespace weft::sys {

namespace {

// Writes the decimal digits of v at out; returns how many.
size_t put_decimal(char* out, unsigned v) {
  char digits[12];
  size_t d = 0;
  do {
    digits[d++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  for (size_t i = 0; i < d; ++i) out[i] = digits[d - 1 - i];
  return d;
}

}  // namespace

int task_stat_open(int tid) {
  char path[48] = "/proc/self/task/";
  size_t n = 16;
  n += put_decimal(path + n, static_cast<unsigned>(tid));
  const char tail[] = "/stat";
  for (size_t i = 0; i < sizeof tail; ++i) path[n++] = tail[i];  // with its NUL
  long fd = raw_syscall(SYS_openat, AT_FDCWD, reinterpret_cast<long>(path), O_RDONLY | O_CLOEXEC);
  return static_cast<int>(fd);  // a descriptor or -errno
}

char task_state(int fd, int tid) {
  if (fd < 0 || tid <= 0) return 0;
  char buf[256];
  long got = raw_syscall(SYS_pread64, fd, reinterpret_cast<long>(buf), sizeof buf - 1, 0);
  if (is_error(got) || got <= 0) return 0;
  // "tid (comm) S ...": the file must be tid's; comm may hold spaces and
  // parentheses, so the state follows the last ')'.
  char want[16];
  size_t w = put_decimal(want, static_cast<unsigned>(tid));
  want[w++] = ' ';
  want[w++] = '(';
  if (static_cast<size_t>(got) < w) return 0;
  for (size_t i = 0; i < w; ++i)
    if (buf[i] != want[i]) return 0;
  long close_paren = -1;
  for (long i = 0; i < got; ++i)
    if (buf[i] == ')') close_paren = i;
  if (close_paren < 0 || close_paren + 2 >= got) return 0;
  return buf[close_paren + 2];
}

}  // namespace weft::sys

namespace weft::sys {

long long task_cpu_ns(int tid) {
  // The kernel's per-thread CPU clock id (MAKE_THREAD_CPUCLOCK(tid,
  // CPUCLOCK_SCHED) in include/linux/posix-timers.h): any thread of the
  // calling process may read another's.
  const long clock = (~static_cast<long>(tid) << 3) | 4 /* per thread */ | 2 /* CPUCLOCK_SCHED */;
  struct timespec ts;
  long r = raw_syscall(SYS_clock_gettime, clock, reinterpret_cast<long>(&ts));
  if (is_error(r)) return -1;
  return static_cast<long long>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

}  // namespace weft::sys
