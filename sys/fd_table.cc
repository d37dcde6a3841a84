// sys/fd_table.cc — see fd_table.h.
#include "sys/fd_table.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/resource.h>

#include <cerrno>
#include <climits>
#include <cstring>

#include "sys/raw_syscall.h"

namespace weft::sys {

long nofile_soft_limit() {
  struct rlimit rl{};
  long r = raw_syscall(SYS_prlimit64, 0, RLIMIT_NOFILE, 0, reinterpret_cast<long>(&rl));
  if (is_error(r)) return r;
  return rl.rlim_cur > static_cast<rlim_t>(INT_MAX) ? INT_MAX : static_cast<long>(rl.rlim_cur);
}

int grow_fd_table(int slots) {
  long limit = nofile_soft_limit();
  if (limit < 0) return static_cast<int>(limit);
  if (slots < 1 || slots > limit) return -EINVAL;
  long e = raw_syscall(SYS_eventfd2, 0, EFD_CLOEXEC);
  if (is_error(e)) return static_cast<int>(e);
  long d = raw_syscall(SYS_fcntl, e, F_DUPFD_CLOEXEC, slots - 1);
  close_fd(static_cast<int>(e));
  if (is_error(d)) return static_cast<int>(d);
  close_fd(static_cast<int>(d));
  return 0;
}

long fd_table_size() {
  long fd = raw_syscall(SYS_openat, AT_FDCWD, reinterpret_cast<long>("/proc/self/status"), O_RDONLY | O_CLOEXEC);
  if (is_error(fd)) return fd;
  char buf[4096];
  long n = raw_syscall(SYS_read, fd, reinterpret_cast<long>(buf), sizeof buf - 1);
  close_fd(static_cast<int>(fd));
  if (is_error(n)) return n;
  buf[n] = '\0';
  const char* p = strstr(buf, "\nFDSize:");
  if (p == nullptr) return -ENOENT;
  p += 8;
  while (*p == ' ' || *p == '\t') ++p;
  long v = 0;
  for (; *p >= '0' && *p <= '9'; ++p) v = v * 10 + (*p - '0');
  return v;
}

}  // namespace weft::sys
