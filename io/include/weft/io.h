// weft/io.h — I/O that parks a ULT instead of blocking its worker.
//
// In a ULT, every operation below is submitted to the calling worker's
// io_uring (or, where io_uring is missing or forbidden, waited for through
// the worker's epoll instance) and the ULT parks until it completes; the
// worker runs other ULTs meanwhile. Called outside a ULT, every operation is
// the plain blocking system call.
//
// Results are values, never errno:
//   - byte counts and descriptors: >= 0 on success; a byte count may be
//     short, as with the system calls: one call moves at most 0x7ffff000
//     bytes (the kernel's MAX_RW_COUNT: INT_MAX rounded down to a page),
//     larger lengths are clamped to that on every backend;
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
// kernel.io_uring_disabled) or when the (secure) environment says
// WEFT_IO=epoll (WEFT_IO=uring forces io_uring and fails loudly if it
// cannot be used). A failure of the process's io_uring probe for lack of
// resources (EMFILE, ENOMEM, ...) does not count as "unavailable".
//
// With epoll, weft never changes the O_NONBLOCK flag of a descriptor it
// did not create (the open file description is shared with other
// processes and dups): reads and writes of pipes, sockets and character
// devices are tried with per-call flags (RWF_NOWAIT, MSG_DONTWAIT), and on
// EAGAIN the ULT parks until epoll reports the fd ready; where the kernel
// refuses RWF_NOWAIT for a file (ttys, ptys) the call waits for readiness
// and then runs as a weft::blocking() call, as does accept() on a listener
// in blocking mode. Regular files, block devices and directories run as
// weft::blocking() calls. Sockets weft creates there (socket(), accept(),
// listen_tcp(), connect_tcp() in a ULT) are made non-blocking. The one exception:
// connect() with a deadline on a blocking-mode socket sets O_NONBLOCK for
// the duration of the call and restores it (on every backend but
// io_uring; nothing else can bound a blocking connect).
//
// Engine setup: each worker sets up its ring (or epoll instance) itself,
// at its first idle wait or io. If that fails (EMFILE, ENOMEM, ...) the
// failure is logged to stderr, the worker's io runs as plain blocking
// calls (as weft::blocking() regions: the worker may be handed off; see
// backend(), which then says "blocking"), and setup is tried again at the
// worker's next io or idle wait once a backoff has passed (1 ms, doubling
// up to 1 s); success after failures is logged too. A worker is never
// degraded for good by a transient shortage.
//
// Closing: io::close(fd) first cancels every operation in flight on fd (on
// any worker); they complete with -ECANCELED (or with their own result if
// they completed first). See close() for how long it waits for that.
// Using an fd in one ULT while another closes it is still a race, as with
// threads.
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
#include <type_traits>
#include <vector>

#include "absl/status/statusor.h"
#include "weft/runtime.h"

namespace weft::io {

// When an operation gives up: never (none(), the default), or a point on
// the monotonic clock (CLOCK_MONOTONIC, which is std::chrono::steady_clock).
//
// "None" is a flag, not a special time: no arithmetic on a duration can
// turn a real deadline into "never". Conversions saturate:
//   - in(d) with d <= 0 (however large its magnitude, e.g. -100 years) is a
//     deadline that has already passed: the operation does not wait (it
//     still completes if it can without waiting, as with a zero timeout);
//   - in(d) with d too large for int64 nanoseconds from now (hours::max(),
//     seconds::max(), ...) is the farthest representable point, about 292
//     years after boot: in effect never, but not none();
//   - at(t) with t before the clock's epoch is a passed deadline.
// A floating-point duration that is NaN counts as "do not wait".
class Deadline {
 public:
  constexpr Deadline() = default;
  static constexpr Deadline none() { return Deadline(); }
  // `d` from now.
  template <class Rep, class Period>
  static Deadline in(std::chrono::duration<Rep, Period> d) {
    return after_ns(saturating_ns(d));
  }
  static Deadline at(std::chrono::steady_clock::time_point t) {
    int64_t ns = saturating_ns(t.time_since_epoch());
    return Deadline(ns < 0 ? 0 : ns);
  }
  // A point on another clock (system_clock, a user clock): converted to
  // CLOCK_MONOTONIC once, now, as std::this_thread::sleep_until does (a
  // later change of that clock, e.g. the wall clock stepped by NTP, does
  // not move the deadline).
  template <class Clock, class Duration>
  static Deadline at(std::chrono::time_point<Clock, Duration> t) {
    if constexpr (std::is_same_v<Clock, std::chrono::steady_clock>) {
      return at(std::chrono::time_point_cast<std::chrono::steady_clock::duration>(t));
    } else {
      return in(t - Clock::now());
    }
  }
  constexpr bool is_none() const { return none_; }
  // CLOCK_MONOTONIC nanoseconds (>= 0), or -1 for none().
  constexpr int64_t ns() const { return none_ ? -1 : ns_; }

 private:
  constexpr explicit Deadline(int64_t ns) : ns_(ns), none_(false) {}
  static int64_t now_ns();
  // now + rel, saturated to [now, INT64_MAX] (rel <= 0: now).
  static Deadline after_ns(int64_t rel);
  // d in nanoseconds, saturated to [INT64_MIN, INT64_MAX]; NaN is 0.
  template <class Rep, class Period>
  static int64_t saturating_ns(std::chrono::duration<Rep, Period> d) {
    static_assert(std::is_arithmetic_v<Rep>, "Deadline::in takes arithmetic durations");
    // The value in nanoseconds, computed in long double to check the range
    // first (an exact int64 conversion of hours::max() would overflow).
    long double v = static_cast<long double>(d.count()) * Period::num * 1e9L / Period::den;
    if (v != v) return 0;  // NaN
    constexpr long double kLimit = 9.2e18L;  // just under INT64_MAX (9.22e18)
    if (v >= kLimit) return INT64_MAX;
    if (v <= -kLimit) return INT64_MIN;
    return std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
  }
  int64_t ns_ = 0;
  bool none_ = true;
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
// Cancels the operations in flight on fd, then closes it. 0 or -errno
// (-EBADF: fd is not open).
//
// Operations in flight on the calling kernel thread's own worker (the
// caller's worker, also when close is called inside a weft::blocking()
// region) are cancelled on the spot. Other workers cancel theirs at their
// next scheduler pass; close waits for them for at most 50 ms. A worker
// that does not answer in that time is busy (a ULT that does not yield,
// or a long weft::blocking() region): then close returns 0 at once and
// that worker finishes the job when it next schedules — it cancels its
// operations on fd (they end with -ECANCELED after close returned) and
// then closes fd. Until then fd stays open: its number is not reused, so
// no operation ever acts on a file that later got the same number; an
// error of that deferred close (EIO on some file systems) is not
// reported. Waiting parks a ULT; on a thread it blocks.
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
// resolved with resolve(host, port, d)), or -errno: -ETIMEDOUT when the
// deadline passes (during the name lookup or the connect), -EHOSTUNREACH
// for a name that does not exist, -EAGAIN when the lookup failed
// temporarily or could not be queued (resolve()'s Unavailable,
// ResourceExhausted, Internal), or what connect() returns.
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
// Resolves host:port with getaddrinfo (TCP).
//
// In a ULT, and on a thread that gives a deadline, the lookup runs on a
// small pool of helper threads (at most kResolveMaxHelpers lookups at
// once, at most kResolveMaxQueued more waiting for a helper) while the ULT
// parks (a thread blocks). On a thread without a deadline it runs inline.
// At the deadline the caller gets DeadlineExceeded at once; a lookup a
// helper had already started finishes in the background and its result is
// dropped. Thread- and ULT-safe.
//
// Errors: NotFound (no such name), Unavailable (temporary failure,
// EAI_AGAIN), DeadlineExceeded (no answer by `d`), ResourceExhausted
// (kResolveMaxQueued lookups already wait, or no helper runs and none
// could be started), Internal (other getaddrinfo failures).
inline constexpr size_t kResolveMaxHelpers = 4;
inline constexpr size_t kResolveMaxQueued = 256;
absl::StatusOr<std::vector<Address>> resolve(std::string_view host, uint16_t port);
absl::StatusOr<std::vector<Address>> resolve(std::string_view host, uint16_t port, Deadline d);

// --- timers ---------------------------------------------------------------------------
// Parks the calling ULT for `d` (the worker's next io wait uses the timer as
// its timeout). Same as this_ult::sleep_for.
template <class Rep, class Period>
void sleep_for(std::chrono::duration<Rep, Period> d) {
  this_ult::sleep_for(d);
}

// --- introspection -------------------------------------------------------------------
// The backend the calling ULT's worker uses: "io_uring", "epoll",
// "blocking" while that worker's ring or epoll instance cannot be set up
// (see "Engine setup" above; calling backend() may retry the setup), or
// "none" outside a ULT.
const char* backend();
// The backend new workers will use in this process ("io_uring" or "epoll"),
// and why (e.g. "io_uring_setup: EPERM (seccomp?)"), for logs and tests.
const char* default_backend();
const char* default_backend_reason();

}  // namespace weft::io
