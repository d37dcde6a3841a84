// hook/fd.cc — open, open64, openat, openat64, close, fsync, fdatasync,
// getaddrinfo on a ULT.
//
// open/openat go through weft::io::openat (io_uring's OPENAT: a FIFO that
// waits for its other end, a slow file system, parks the ULT). weft::io
// adds O_CLOEXEC to every descriptor it opens; when the caller did not ask
// for it, it is cleared right after (F_SETFD) — so a fork+exec on another
// thread in that instant is the one way the new descriptor is not
// inherited.
// close goes through weft::io::close, which first cancels the weft::io
// operations in flight on fd (other ULTs' reads, polls: they end with
// ECANCELED) and then closes it (weft/io.h, "Closing").
// fsync and fdatasync go through weft::io::fsync (a full fsync in both
// cases: fdatasync's guarantee is part of it).
// getaddrinfo runs glibc's own inside weft::blocking(): the worker runs it,
// and when it takes longer than Options::blocking_handoff (a DNS query),
// the monitor hands the worker's other ULTs to a spare kernel thread.
#include <fcntl.h>
#include <netdb.h>
#include <unistd.h>

#include <cstdarg>

#include "hook/hook_internal.h"

namespace weft::hook_internal {
namespace {

HOOK_DECLARE_NEXT(open);
HOOK_DECLARE_NEXT(open64);
HOOK_DECLARE_NEXT(openat);
HOOK_DECLARE_NEXT(openat64);
HOOK_DECLARE_NEXT(close);
HOOK_DECLARE_NEXT(fsync);
HOOK_DECLARE_NEXT(fdatasync);
HOOK_DECLARE_NEXT(getaddrinfo);

__attribute__((constructor)) void resolve_fd() {
  (void)HOOK_NEXT(open);
  (void)HOOK_NEXT(open64);
  (void)HOOK_NEXT(openat);
  (void)HOOK_NEXT(openat64);
  (void)HOOK_NEXT(close);
  (void)HOOK_NEXT(fsync);
  (void)HOOK_NEXT(fdatasync);
  (void)HOOK_NEXT(getaddrinfo);
}

inline bool takes_mode(int flags) { return (flags & O_CREAT) != 0 || (flags & O_TMPFILE) == O_TMPFILE; }

long open_on_ult(int dirfd, const char* path, int flags, mode_t mode) {
  int fd = weft::io::openat(dirfd, path, flags, mode);
  if (fd < 0) return fd;
  if (!(flags & O_CLOEXEC)) sys(SYS_fcntl, fd, F_SETFD, 0);
  forget_fd(fd);
  return fd;
}

}  // namespace
}  // namespace weft::hook_internal

using namespace weft::hook_internal;

extern "C" {

WEFT_HOOK_EXPORT int open(const char* path, int flags, ...) {
  mode_t mode = 0;
  if (takes_mode(flags)) {
    va_list ap;
    va_start(ap, flags);
    mode = va_arg(ap, mode_t);
    va_end(ap);
  }
  if (!on_ult()) return HOOK_NEXT(open)(path, flags, mode);
  return static_cast<int>(from_result(open_on_ult(AT_FDCWD, path, flags, mode)));
}

WEFT_HOOK_EXPORT int open64(const char* path, int flags, ...) {
  mode_t mode = 0;
  if (takes_mode(flags)) {
    va_list ap;
    va_start(ap, flags);
    mode = va_arg(ap, mode_t);
    va_end(ap);
  }
  if (!on_ult()) return HOOK_NEXT(open64)(path, flags, mode);
  return static_cast<int>(from_result(open_on_ult(AT_FDCWD, path, flags | O_LARGEFILE, mode)));
}

WEFT_HOOK_EXPORT int openat(int dirfd, const char* path, int flags, ...) {
  mode_t mode = 0;
  if (takes_mode(flags)) {
    va_list ap;
    va_start(ap, flags);
    mode = va_arg(ap, mode_t);
    va_end(ap);
  }
  if (!on_ult()) return HOOK_NEXT(openat)(dirfd, path, flags, mode);
  return static_cast<int>(from_result(open_on_ult(dirfd, path, flags, mode)));
}

WEFT_HOOK_EXPORT int openat64(int dirfd, const char* path, int flags, ...) {
  mode_t mode = 0;
  if (takes_mode(flags)) {
    va_list ap;
    va_start(ap, flags);
    mode = va_arg(ap, mode_t);
    va_end(ap);
  }
  if (!on_ult()) return HOOK_NEXT(openat64)(dirfd, path, flags, mode);
  return static_cast<int>(from_result(open_on_ult(dirfd, path, flags | O_LARGEFILE, mode)));
}

WEFT_HOOK_EXPORT int close(int fd) {
  forget_fd(fd);
  if (!on_ult()) return HOOK_NEXT(close)(fd);
  return static_cast<int>(from_result(weft::io::close(fd)));
}

WEFT_HOOK_EXPORT int fsync(int fd) {
  if (!on_ult()) return HOOK_NEXT(fsync)(fd);
  return static_cast<int>(from_result(weft::io::fsync(fd)));
}

WEFT_HOOK_EXPORT int fdatasync(int fd) {
  if (!on_ult()) return HOOK_NEXT(fdatasync)(fd);
  return static_cast<int>(from_result(weft::io::fsync(fd)));
}

WEFT_HOOK_EXPORT int getaddrinfo(const char* node, const char* service, const struct addrinfo* hints,
                                 struct addrinfo** res) {
  if (!on_ult()) return HOOK_NEXT(getaddrinfo)(node, service, hints, res);
  auto next = HOOK_NEXT(getaddrinfo);
  return weft::blocking([&] { return next(node, service, hints, res); });
}

}  // extern "C"
