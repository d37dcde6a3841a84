// sys/fd_table.cc — see fd_table.h.
#include "sys/fd_table.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/resource.h>

#include <cerrno>
#include <climits>

#include "sys/raw_syscall.h"

namespace weft::sys {

long nofile_soft_limit() {
  struct rlimit rl{};
  long r = raw_syscall(SYS_prlimit64, 0, RLIMIT_NOFILE, 0, reinterpret_cast<long>(&rl));
  if (is_error(r)) return r;
  return rl.rlim_cur > static_cast<rlim_t>(INT_MAX) ? INT_MAX : static_cast<long>(rl.rlim_cur);
}

int grow_fd_table(int slots) {
  if (slots < 1) return -EINVAL;
  long e = raw_syscall(SYS_eventfd2, 0, EFD_CLOEXEC);
  if (is_error(e)) return static_cast<int>(e);
  long d = raw_syscall(SYS_fcntl, e, F_DUPFD_CLOEXEC, slots - 1);
  close_fd(static_cast<int>(e));
  if (is_error(d)) return static_cast<int>(d);
  close_fd(static_cast<int>(d));
  return 0;
}

}  // namespace weft::sys
