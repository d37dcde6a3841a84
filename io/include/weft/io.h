// weft/io.h — I/O that parks a ULT instead of blocking its worker.
//
// In a ULT, every operation below is submitted to the calling worker's
// io_uring (or, where io_uring is missing or forbidden, waited for through
// the worker's epoll instance) and the ULT parks until it completes; the
// worker runs other ULTs meanwhile. Called outside a ULT, every operation is
// the plain blocking system call.
//
// Results are values, never errno:
//   - byte counts and descriptors: >= 0 on success;
//   - errors: the negative errno (-ECONNREFUSED, -EPIPE, -EBADF, ...);
//   - a Deadline that passes: -ETIMEDOUT, and the operation has really been
//     cancelled (it did not and will not take effect later), except that a
//     read or write may have transferred bytes just before the deadline, in
//     which case the byte count is returned. On a thread (outside a ULT) a
//     deadline bounds the wait for readiness (poll) of reads, writes,
//     receives, sends, accepts and connects; file operations (openat,
//     fsync, statx, pread, pwrite) honour deadlines in ULTs only.
//
// Backend: io_uring by default (one ring per worker, see DESIGN.md); epoll
// when io_uring is unavailable (ENOSYS, EPERM from a seccomp profile,
// kernel.io_uring_disabled) or when the environment says WEFT_IO=epoll
// (WEFT_IO=uring forces io_uring and fails loudly if it cannot be used).
// With epoll, sockets and pipes are switched to O_NONBLOCK on first use and
// regular-file operations run as weft::blocking() calls.
//
// Closing: io::close(fd) first cancels every operation in flight on fd (on
// any worker); they complete with -ECANCELED. Using an fd in one ULT while
// another closes it is still a race, as with threads.
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "weft/runtime.h"

namespace weft::io {

// When an operation gives up: never (the default), or a point on the
// monotonic clock.
class Deadline {
 public:
  constexpr Deadline() = default;
  static constexpr Deadline none() { return Deadline(); }
  // `d` from now (a zero or negative duration means: do not wait at all).
  template <class Rep, class Period>
  static Deadline in(std::chrono::duration<Rep, Period> d) {
    return Deadline(now_ns() + std::chrono::duration_cast<std::chrono::nanoseconds>(d).count());
  }
  static Deadline at(std::chrono::steady_clock::time_point t) {
    return Deadline(std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count());
  }
  constexpr bool is_none() const { return ns_ < 0; }
  // CLOCK_MONOTONIC nanoseconds, or -1.
  constexpr int64_t ns() const { return ns_; }

 private:
  constexpr explicit Deadline(int64_t ns) : ns_(ns) {}
  static int64_t now_ns();
  int64_t ns_ = -1;
};

// --- files and generic descriptors ---------------------------------------------
// Each returns what the system call of the same name returns, as a value.
int64_t read(int fd, void* buf, size_t n, Deadline d = {});
int64_t write(int fd, const void* buf, size_t n, Deadline d = {});
int64_t pread(int fd, void* buf, size_t n, off_t offset, Deadline d = {});
int64_t pwrite(int fd, const void* buf, size_t n, off_t offset, Deadline d = {});
int64_t readv(int fd, const iovec* iov, int iovcnt, Deadline d = {});
int64_t writev(int fd, const iovec* iov, int iovcnt, Deadline d = {});
// A new descriptor (O_CLOEXEC is added) or -errno.
int openat(int dirfd, const char* path, int flags, mode_t mode = 0, Deadline d = {});
// Cancels the operations in flight on fd, then closes it. 0 or -errno.
int close(int fd);
int fsync(int fd, Deadline d = {});
int statx(int dirfd, const char* path, int flags, unsigned mask, struct statx* out, Deadline d = {});
// Waits until fd is ready for `events` (POLLIN, POLLOUT, ...): the ready
// events, or -errno / -ETIMEDOUT.
int poll(int fd, short events, Deadline d = {});

// --- sockets ------------------------------------------------------------------------
// A new socket (SOCK_CLOEXEC is added; with the epoll backend also
// SOCK_NONBLOCK) or -errno.
int socket(int domain, int type, int protocol);
int bind(int fd, const sockaddr* addr, socklen_t len);
int listen(int fd, int backlog);
// A TCP socket listening on host:port (host may be "0.0.0.0", "::",
// "127.0.0.1", or empty for any IPv4 address), with SO_REUSEADDR. port 0
// picks a free port: read it back with local_port(). fd or -errno.
int listen_tcp(std::string_view host, uint16_t port, int backlog = 1024);
// The local port of a bound socket, or -errno.
int local_port(int fd);
// A connected socket (SOCK_CLOEXEC added), or -errno.
int accept(int fd, sockaddr* addr = nullptr, socklen_t* len = nullptr, Deadline d = {});
int connect(int fd, const sockaddr* addr, socklen_t len, Deadline d = {});
// A new TCP socket connected to host:port (a numeric address, or a name
// resolved with resolve()), or -errno (-ETIMEDOUT at the deadline).
int connect_tcp(std::string_view host, uint16_t port, Deadline d = {});
// MSG_NOSIGNAL is always added to send(): a closed peer gives -EPIPE, never
// SIGPIPE.
int64_t recv(int fd, void* buf, size_t n, int flags = 0, Deadline d = {});
int64_t send(int fd, const void* buf, size_t n, int flags = 0, Deadline d = {});
// Sends all n bytes (several sends if needed): n, or -errno.
int64_t send_all(int fd, const void* buf, size_t n, Deadline d = {});
int shutdown(int fd, int how);

// --- names --------------------------------------------------------------------------
struct Address {
  sockaddr_storage storage{};
  socklen_t len = 0;
  const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&storage); }
  // "1.2.3.4:80" or "[::1]:80".
  std::string ToString() const;
};
// Resolves host:port with getaddrinfo (TCP). In a ULT the lookup runs on a
// small bounded pool of helper threads while the ULT parks. Errors:
// NotFound (no such name), Unavailable (temporary failure), Internal.
absl::StatusOr<std::vector<Address>> resolve(std::string_view host, uint16_t port);

// --- timers ---------------------------------------------------------------------------
// Parks the calling ULT for `d` (the worker's next io wait uses the timer as
// its timeout). Same as this_ult::sleep_for.
template <class Rep, class Period>
void sleep_for(std::chrono::duration<Rep, Period> d) {
  this_ult::sleep_for(d);
}

// --- introspection -------------------------------------------------------------------
// The backend the calling ULT's worker uses: "io_uring", "epoll", or "none"
// outside a ULT.
const char* backend();
// The backend new workers will use in this process ("io_uring" or "epoll"),
// and why (e.g. "io_uring_setup: EPERM (seccomp?)"), for logs and tests.
const char* default_backend();
const char* default_backend_reason();

}  // namespace weft::io
