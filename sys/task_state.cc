// sys/task_state.cc — see task_state.h.
#include "sys/task_state.h"

#include <fcntl.h>
#include <sys/syscall.h>

#include "sys/raw_syscall.h"

namespace weft::sys {

char task_state(int tid) {
  char path[48] = "/proc/self/task/";
  size_t n = 16;
  char digits[12];
  int d = 0;
  unsigned v = static_cast<unsigned>(tid);
  do {
    digits[d++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  while (d > 0) path[n++] = digits[--d];
  const char tail[] = "/stat";
  for (size_t i = 0; i < sizeof tail; ++i) path[n++] = tail[i];  // with its NUL
  long fd = raw_syscall(SYS_openat, AT_FDCWD, reinterpret_cast<long>(path), O_RDONLY | O_CLOEXEC);
  if (is_error(fd)) return 0;
  char buf[256];
  long got = raw_syscall(SYS_read, fd, reinterpret_cast<long>(buf), sizeof buf - 1);
  raw_syscall(SYS_close, fd);
  if (is_error(got) || got <= 0) return 0;
  // "tid (comm) S ...": comm may hold spaces and parentheses; the state
  // follows the last ')'.
  long close_paren = -1;
  for (long i = 0; i < got; ++i)
    if (buf[i] == ')') close_paren = i;
  if (close_paren < 0 || close_paren + 2 >= got) return 0;
  return buf[close_paren + 2];
}

}  // namespace weft::sys
